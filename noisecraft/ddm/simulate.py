"""Simulating the Ratcliff diffusion model: response times and choices.

Two samplers, both vectorised over trials and seeded:

* ``method="exact"`` (default): the choice is drawn from P(upper) (Cox & Miller 1965)
  and the decision time by inverting the conditional first-passage CDF (Blurton,
  Kesselmeier & Gondan 2012) with bisection, so the draws are exact up to floating point.
* ``method="euler"``: an independent check. Euler steps of the Wiener process with a
  Brownian-bridge crossing test at both boundaries; the bridge law does not depend on
  the drift, so a crossing inside a step is caught with its exact probability
  exp(-2 (b - x_0)(b - x_1) / (s^2 dt)) (e.g. Glasserman 2004, Monte Carlo Methods in
  Financial Engineering). The crossing time is placed mid-step (error <= dt / 2).

Across-trial variability: v ~ N(v, sv^2), z ~ U(z +- sz/2), t0 ~ U(t0, t0 + st0).
Contaminant trials (``lapse``) replace the trial by a uniform RT with a random response.
``simulate_conditions`` stacks one simulated block per condition value c, drift v * c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from noisecraft.ddm.density import Lapse, _cdf_surv_lower, _check_params, _prob_lower_unit

__all__ = ["simulate", "simulate_conditions"]


def _decision_times_exact(
    rng: np.random.Generator, v: np.ndarray, a: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (choice, decision time) by inverse-CDF sampling; unit noise."""
    n = v.size
    p_lower = _prob_lower_unit(v, a, w)
    upper = rng.random(n) >= p_lower
    vv = np.where(upper, -v, v)
    ww = np.where(upper, 1.0 - w, w)
    p_resp = np.where(upper, 1.0 - p_lower, p_lower)
    target = rng.random(n) * p_resp
    hi = 2.0 * a**2
    for _ in range(200):  # grow the bracket until F(hi) >= target for every trial
        below = _cdf_surv_lower(hi, vv, a, ww)[0] < target
        if not np.any(below):
            break
        hi = np.where(below, 2.0 * hi, hi)
    lo = np.zeros(n)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _cdf_surv_lower(mid, vv, a, ww)[0] < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return upper, 0.5 * (lo + hi)


def _decision_times_euler(
    rng: np.random.Generator,
    v: np.ndarray,
    a: np.ndarray,
    w: np.ndarray,
    dt: float,
    max_time: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(choice, decision time) from Euler steps with a Brownian-bridge crossing test; unit noise."""
    n = v.size
    x = w * a
    upper = np.zeros(n, dtype=bool)
    times = np.full(n, np.nan)
    active = np.arange(n)
    sq = np.sqrt(dt)
    step = 0
    while active.size and step * dt < max_time:
        x0 = x[active]
        x1 = x0 + v[active] * dt + sq * rng.standard_normal(active.size)
        aa = a[active]
        hit_up = x1 >= aa
        hit_lo = x1 <= 0.0
        inside = ~(hit_up | hit_lo)
        # Bridge crossings of a boundary between two inside points.
        u = rng.random(active.size)
        p_up = np.exp(-2.0 * (aa - x0) * (aa - x1) / dt)
        p_lo = np.exp(-2.0 * x0 * x1 / dt)
        bridge_up = inside & (u < p_up)
        bridge_lo = inside & ~bridge_up & (u >= p_up) & (u < p_up + p_lo)
        up = hit_up | bridge_up
        done = up | hit_lo | bridge_lo
        idx = active[done]
        upper[idx] = up[done]
        times[idx] = (step + 0.5) * dt
        x[active] = x1
        active = active[~done]
        step += 1
    return upper, times


def simulate(
    n: int,
    v: ArrayLike,
    a: ArrayLike,
    z: ArrayLike = 0.5,
    t0: ArrayLike = 0.0,
    sv: ArrayLike = 0.0,
    sz: ArrayLike = 0.0,
    st0: ArrayLike = 0.0,
    *,
    s: float = 1.0,
    lapse: Lapse | None = None,
    method: str = "exact",
    dt: float = 1e-4,
    max_time: float = 50.0,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Draw n trials of (rt, response) from the Ratcliff model; parameters are scalars or length-n arrays.

    Returns a DataFrame with columns ``rt`` (s), ``response`` (1 = upper, 0 = lower) and
    ``contaminant`` (True for lapse trials). Trials of the Euler sampler still undecided at
    ``max_time`` get rt = NaN.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"number of trials n={n!r}; expected a positive integer")
    if method not in ("exact", "euler"):
        raise ValueError(f"method={method!r}; expected 'exact' or 'euler'")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    arrs = np.broadcast_arrays(*[np.asarray(x, dtype=float) for x in (v, a, z, t0, sv, sz, st0)])
    v, a, z, t0, sv, sz, st0 = [np.broadcast_to(x, (n,)).astype(float) for x in arrs]
    _check_params(a / s, z, sv / s, sz)
    if np.any(t0 < 0) or np.any(st0 < 0):
        raise ValueError("non-decision time t0 and its range st0 must be >= 0")
    vi = (v + sv * rng.standard_normal(n)) / s
    wi = z + sz * (rng.random(n) - 0.5)
    ti = t0 + st0 * rng.random(n)
    if method == "exact":
        upper, dec = _decision_times_exact(rng, vi, a / s, wi)
    else:
        upper, dec = _decision_times_euler(rng, vi, a / s, wi, dt, max_time)
    rt = ti + dec
    contaminant = np.zeros(n, dtype=bool)
    if lapse is not None and lapse.p > 0:
        contaminant = rng.random(n) < lapse.p
        k = int(contaminant.sum())
        rt[contaminant] = rng.uniform(lapse.lo, lapse.hi, k)
        upper[contaminant] = rng.random(k) < lapse.p_upper
    return pd.DataFrame({"rt": rt, "response": upper.astype(int), "contaminant": contaminant})


def simulate_conditions(
    n: int,
    v: float,
    a: float,
    z: float = 0.5,
    t0: float = 0.0,
    sv: float = 0.0,
    sz: float = 0.0,
    st0: float = 0.0,
    *,
    s: float = 1.0,
    conditions: Sequence[float] | None = None,
    lapse: float = 0.0,
    lapse_range: tuple[float, float] = (0.0, 2.0),
    method: str = "exact",
    seed: int = 0,
) -> pd.DataFrame:
    """n trials per condition value c with drift v * c (one block of n with drift v when ``conditions`` is None).

    Block i is drawn with seed ``seed + 1000 * i``. Columns: ``rt``, ``response``, ``condition``
    (only with ``conditions``) and ``contaminant``; ``lapse`` > 0 mixes in contaminants uniform on
    ``lapse_range`` (lo, hi) in s.
    """
    if conditions is not None:
        levels: list[float | None] = [float(c) for c in conditions]
        if not levels or not all(math.isfinite(c) for c in levels):
            raise ValueError(
                f"conditions={list(conditions)!r}; expected one or more finite numbers, or None"
            )
    else:
        levels = [None]
    if len(lapse_range) != 2:
        raise ValueError(f"lapse_range={tuple(lapse_range)!r}; expected a pair (lo, hi)")
    lo, hi = (float(x) for x in lapse_range)
    lap = Lapse(lapse, lo, hi) if lapse > 0 else None
    parts = []
    for i, c in enumerate(levels):
        d = simulate(
            n,
            v * (c if c is not None else 1.0),
            a,
            z,
            t0,
            sv,
            sz,
            st0,
            s=s,
            lapse=lap,
            method=method,
            seed=seed + 1000 * i,
        )
        if c is not None:
            d.insert(2, "condition", c)
        parts.append(d)
    return pd.concat(parts, ignore_index=True)
