"""EZ-diffusion: drift, boundary and non-decision time from three summary statistics.

Wagenmakers, van der Maas & Grasman (2007), "An EZ-diffusion model for response time
and accuracy", Psychonomic Bulletin & Review 14:3-22. Inputs are the
proportion correct Pc, the variance VRT and the mean MRT of the correct RTs; z = 1/2
and no across-trial variability are assumed.

Edge corrections (as they suggest): Pc = 1 is replaced by 1 - 1/(2n) and
Pc = 0 by 1/(2n), n being the number of trials. At Pc = 1/2 the formulas are 0/0; the
exact limit v -> 0 is used instead: a = s (24 VRT)^(1/4) (the variance of the exit time
of a driftless walk started mid-way is a^4 / (24 s^4)) and MDT = a^2 / (4 s^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["EZResult", "ez", "ez_from_data"]


@dataclass(frozen=True)
class EZResult:
    """EZ estimates and the statistics they came from (``pc_used`` after the edge correction)."""

    v: float
    a: float
    t0: float
    pc: float
    pc_used: float
    vrt: float
    mrt: float
    n: int | None
    note: str = ""


def ez(pc: float, vrt: float, mrt: float, *, n: int | None = None, s: float = 1.0) -> EZResult:
    """EZ-diffusion estimates (v, a, t0), the EZ equations of Wagenmakers et al. (2007)."""
    if not 0.0 <= pc <= 1.0:
        raise ValueError(f"proportion correct pc={pc!r}; expected 0 <= pc <= 1")
    if not (np.isfinite(vrt) and vrt > 0):
        raise ValueError(
            f"variance of correct RTs vrt={vrt!r}; expected > 0 (at least 2 distinct correct RTs)"
        )
    if not np.isfinite(mrt):
        raise ValueError(f"mean correct RT mrt={mrt!r}; expected a finite number")
    note = ""
    p = float(pc)
    if p in (0.0, 1.0):
        if n is None:
            raise ValueError(f"pc={pc} needs the number of trials n for the edge correction")
        p = 1.0 / (2 * n) if p == 0.0 else 1.0 - 1.0 / (2 * n)
        note = f"edge correction: pc {pc:g} -> {p:.6g}"
    if p == 0.5:
        a = s * (24.0 * vrt) ** 0.25
        return EZResult(
            0.0, a, mrt - a**2 / (4.0 * s**2), pc, p, vrt, mrt, n, "pc = 0.5: v -> 0 limit"
        )
    s2 = s * s
    L = np.log(p / (1.0 - p))
    x = L * (L * p * p - L * p + p - 0.5) / vrt
    v = np.sign(p - 0.5) * s * x**0.25
    a = s2 * L / v
    y = -v * a / s2
    mdt = (a / (2.0 * v)) * (1.0 - np.exp(y)) / (1.0 + np.exp(y))
    return EZResult(float(v), float(a), float(mrt - mdt), pc, p, vrt, mrt, n, note)


def ez_from_data(rt: ArrayLike, correct: ArrayLike, *, s: float = 1.0) -> EZResult:
    """EZ estimates from raw trials: Pc, and VRT, MRT of the correct RTs (Wagenmakers et al. 2007)."""
    rt = np.asarray(rt, dtype=float)
    correct = np.asarray(correct) > 0.5
    n = rt.size
    if correct.sum() < 2:
        raise ValueError(f"EZ needs at least 2 correct trials; got {int(correct.sum())} of {n}")
    rc = rt[correct]
    return ez(float(correct.mean()), float(np.var(rc, ddof=1)), float(rc.mean()), n=n, s=s)
