"""Wiener first-passage-time density, its log and CDF, and the full Ratcliff model.

The decision process is a Wiener process with drift ``v`` and diffusion coefficient
``s`` that starts at ``z * a`` between an absorbing lower boundary at 0 and an upper
boundary at ``a``; the response time is the first-passage time plus a non-decision
time ``t0``. Responses are coded 1 = upper boundary, 0 = lower boundary.

* Density: Navarro & Fuss (2009), "Fast and accurate calculations for first-passage
  times in Wiener diffusion models", J. Math. Psych. 53:222-230. The small-time series
  and the large-time series are each truncated by their error bounds and the series
  that needs fewer terms is chosen per point, as in their algorithm.
* Across-trial drift variability ``sv`` in closed form (the normal mixture over v
  integrates analytically; e.g. Blurton, Kesselmeier & Gondan 2017, J. Math. Psych.
  76:7); starting-point variability ``sz`` (uniform, width ``sz`` in units of ``a``) and
  non-decision-time variability ``st0`` (uniform on ``[t0, t0 + st0]``) by Gauss
  quadrature. Without ``sv`` the ``st0`` density is the exact difference quotient of the
  CDF, so it stays normalised; with ``sv`` it is a composite Gauss-Legendre rule over the
  window of decision times, graded towards 0 (:func:`_window_rule`).
* CDF: small-time series in normal CDFs (the image series integrated term by term;
  Blurton, Kesselmeier & Gondan 2012, J. Math. Psych. 56:470) and the large-time
  eigenfunction series; ``sv`` in the CDF by Gauss-Hermite quadrature.
* Gradients: the basic model (v, a, z, t0, sv) in closed form (:func:`logpdf_and_grad`); the
  full model's likelihood and gradient for fitting come from a grid of decision times
  (:mod:`noisecraft.ddm.grid`).
* Contaminants: a :class:`Lapse` mixture with an explicit probability.

Units: ``s = 1`` by default. Ratcliff's convention ``s = 0.1`` is available through
the ``s`` argument; ``v``, ``a`` and ``sv`` are then on that scale (the model with
``(v, a, sv, s)`` equals the model with ``(v/s, a/s, sv/s, 1)``), ``z`` and ``sz``
are relative and times are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_ndtr, logsumexp

__all__ = [
    "Lapse",
    "cdf",
    "logpdf",
    "pdf",
    "prob_upper",
    "wiener_cdf",
    "wiener_logpdf",
]

_LOG_2PI = np.log(2.0 * np.pi)
_TINY = 1e-300
# Boundary in u = t / a^2 between the small-time and large-time CDF series.
_U_SPLIT_CDF = 1.0


@dataclass(frozen=True)
class Lapse:
    """Contaminant trials: with probability ``p`` the RT is uniform on ``[lo, hi]`` and the
    response is upper with probability ``p_upper`` (as in Ratcliff & Tuerlinckx 2002)."""

    p: float
    lo: float = 0.0
    hi: float = 2.0
    p_upper: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"lapse probability p={self.p!r}; expected 0 <= p < 1")
        if not self.hi > self.lo:
            raise ValueError(f"lapse range [{self.lo}, {self.hi}]; expected hi > lo")
        if not 0.0 <= self.p_upper <= 1.0:
            raise ValueError(f"lapse p_upper={self.p_upper!r}; expected a probability")

    def density(self, rt: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """Contaminant density at (rt, response), including its probability ``p``."""
        inside = (rt >= self.lo) & (rt <= self.hi)
        share = np.where(upper, self.p_upper, 1.0 - self.p_upper)
        return np.where(inside, self.p * share / (self.hi - self.lo), 0.0)

    def cdf(self, rt: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """Defective contaminant CDF P(RT <= rt, response), including ``p``."""
        frac = np.clip((rt - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        share = np.where(upper, self.p_upper, 1.0 - self.p_upper)
        return self.p * share * frac


# ----------------------------------------------------------------------------- helpers


def _flat(*args: ArrayLike) -> tuple[tuple[int, ...], list[np.ndarray]]:
    arrs = np.broadcast_arrays(*[np.asarray(x, dtype=float) for x in args])
    shape = arrs[0].shape
    return shape, [np.ascontiguousarray(x).ravel() for x in arrs]


def _check_params(a: np.ndarray, z: np.ndarray, sv: np.ndarray, sz: np.ndarray) -> None:
    if np.any(~(a > 0)):
        raise ValueError(f"boundary separation a={float(a[~(a > 0)][0]):g}; expected a > 0")
    if np.any(~((z > 0) & (z < 1))):
        raise ValueError(
            f"relative start z={float(z[~((z > 0) & (z < 1))][0]):g}; expected 0 < z < 1"
        )
    if np.any(sv < 0):
        raise ValueError(f"drift variability sv={float(sv[sv < 0][0]):g}; expected sv >= 0")
    bad = (sz < 0) | (z - sz / 2 <= 0) | (z + sz / 2 >= 1)
    if np.any(bad):
        raise ValueError(
            f"start-point variability sz={float(sz[bad][0]):g} with z={float(z[bad][0]):g}; "
            "expected 0 <= sz and z +- sz/2 inside (0, 1)"
        )


def _nf_terms_small(u: np.ndarray, eps: float) -> np.ndarray:
    """Terms needed by the small-time series for error < eps, Navarro & Fuss (2009) small-time bound."""
    c = 2.0 * np.sqrt(2.0 * np.pi * u) * eps
    with np.errstate(divide="ignore", invalid="ignore"):
        ks = 2.0 + np.sqrt(np.maximum(-2.0 * u * np.log(c), 0.0))
    ks = np.where(c < 1.0, np.maximum(ks, np.sqrt(u) + 1.0), 2.0)
    return ks


def _nf_terms_large(u: np.ndarray, eps: float) -> np.ndarray:
    """Terms needed by the large-time series for error < eps, Navarro & Fuss (2009) large-time bound."""
    c = np.pi * u * eps
    floor = 1.0 / (np.pi * np.sqrt(u))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sqrt(np.maximum(-2.0 * np.log(c) / (np.pi**2 * u), 0.0))
    return np.where(c < 1.0, np.maximum(kl, floor), floor)


def _log_g_small(u: np.ndarray, w: np.ndarray, n_terms: int) -> np.ndarray:
    """log f(u | 0, 1, w), small-time series of Navarro & Fuss (2009).

    The k = 0 factor exp(-w^2 / 2u) is pulled out of the sum so that it never underflows.
    """
    k = np.arange(-n_terms, n_terms + 1, dtype=float)
    d = w[:, None] + 2.0 * k
    s = np.sum(d * np.exp(-2.0 * k * (k + w[:, None]) / u[:, None]), axis=1)
    return -0.5 * _LOG_2PI - 1.5 * np.log(u) - w**2 / (2.0 * u) + np.log(np.maximum(s, _TINY))


def _log_g_large(u: np.ndarray, w: np.ndarray, n_terms: int) -> np.ndarray:
    """log f(u | 0, 1, w), large-time series of Navarro & Fuss (2009) (k = 1 factor pulled out)."""
    k = np.arange(1, n_terms + 1, dtype=float)
    s = np.sum(
        k * np.exp(-(k**2 - 1.0) * np.pi**2 * u[:, None] / 2.0) * np.sin(k * np.pi * w[:, None]),
        axis=1,
    )
    return np.log(np.pi) - np.pi**2 * u / 2.0 + np.log(np.maximum(s, _TINY))


def _log_g(u: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """log f(u | 0, 1, w), choosing per point the series with fewer terms (Navarro & Fuss 2009)."""
    out = np.empty_like(u)
    ks = _nf_terms_small(u, eps)
    kl = _nf_terms_large(u, eps)
    small = ks < kl
    if np.any(small):
        n_small = int(np.ceil((ks[small].max() - 1.0) / 2.0)) + 1
        out[small] = _log_g_small(u[small], w[small], n_small)
    large = ~small
    if np.any(large):
        n_large = int(np.ceil(kl[large].max()))
        out[large] = _log_g_large(u[large], w[large], n_large)
    return out


def _log_lower_density(
    t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray, sv: np.ndarray, eps: float
) -> np.ndarray:
    """log density of hitting 0 at decision time t > 0, unit noise; sv in closed form (Blurton et al. 2017)."""
    u = t / a**2
    log_g = _log_g(u, w, eps)
    one = 1.0 + sv**2 * t
    expo = (sv**2 * a**2 * w**2 - 2.0 * a * v * w - v**2 * t) / (2.0 * one)
    return -2.0 * np.log(a) + log_g - 0.5 * np.log(one) + expo


def _reflect(upper: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-boundary quantities are lower-boundary ones with v -> -v, w -> 1 - w."""
    return np.where(upper, -v, v), np.where(upper, 1.0 - w, w)


# --------------------------------------------------------------------- Wiener (no t0)


def wiener_logpdf(
    t: ArrayLike,
    response: ArrayLike,
    v: ArrayLike,
    a: ArrayLike,
    z: ArrayLike = 0.5,
    sv: ArrayLike = 0.0,
    *,
    eps: float = 1e-12,
) -> np.ndarray:
    """log of the defective first-passage density at decision time t (unit noise), Navarro & Fuss (2009)."""
    shape, (t, r, v, a, z, sv) = _flat(t, response, v, a, z, sv)
    _check_params(a, z, sv, np.zeros_like(a))
    upper = r > 0.5
    vv, ww = _reflect(upper, v, z)
    out = np.full(t.shape, -np.inf)
    ok = t > 0
    if np.any(ok):
        out[ok] = _log_lower_density(t[ok], vv[ok], a[ok], ww[ok], sv[ok], eps)
    return out.reshape(shape)


def _prob_lower_unit(v: np.ndarray, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P(hit 0 first) for unit noise: (e^{-2vaw} - e^{-2va}) / (1 - e^{-2va}) (gambler's ruin for a Wiener process, Cox & Miller 1965)."""
    x = 2.0 * v * a
    xa = np.abs(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.expm1(-xa * (1.0 - w)) / np.expm1(-xa)  # both exponents <= 0: no overflow
    return np.where(x == 0, 1.0 - w, np.where(x > 0, np.exp(-xa * w) * ratio, ratio))


def _cdf_lower_small(t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P(T <= t, lower), image series in normal CDFs (Blurton et al. 2012); for t/a^2 <~ 1.

    Terms k = -n..n with n from t/a^2 (truncation error below e^-40); trials are taken in groups of equal n, so
    that the fast ones do not pay for the slowest one's terms.
    """
    n_terms = np.ceil((np.sqrt(2.0 * 40.0 * t / a**2) + 1.0) / 2.0).astype(int) + 1
    levels = np.unique(n_terms)
    if levels.size == 1:
        return _cdf_lower_small_terms(t, v, a, w, int(levels[0]))
    out = np.empty_like(t)
    for n in levels:
        i = np.flatnonzero(n_terms == n)
        out[i] = _cdf_lower_small_terms(t[i], v[i], a[i], w[i], int(n))
    return out


def _cdf_lower_small_terms(t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """The image series of :func:`_cdf_lower_small` with its terms k = -n..n."""
    k = np.arange(-n, n + 1, dtype=float)
    d = a[:, None] * (w[:, None] + 2.0 * k)
    sgn = np.sign(d)
    ad = np.abs(d)
    vp = v[:, None] * sgn
    tt = t[:, None]
    st = np.sqrt(tt)
    l1 = log_ndtr(-(ad + vp * tt) / st)
    l2 = -2.0 * vp * ad + log_ndtr((vp * tt - ad) / st)
    log_term = 2.0 * k * a[:, None] * v[:, None] + np.logaddexp(l1, l2)
    return np.sum(sgn * np.exp(log_term), axis=1)


def _surv_lower_large(t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P(T > t, lower) from the eigenfunction series (the large-time density series integrated); for t/a^2 >~ 1."""
    u_min = float(np.min(t / a**2))
    n = int(np.ceil(np.sqrt(2.0 * 40.0 / (np.pi**2 * u_min)))) + 2
    k = np.arange(1, n + 1, dtype=float)
    lam = v[:, None] ** 2 / 2.0 + k**2 * np.pi**2 / (2.0 * a[:, None] ** 2)
    log_mag = (
        np.log(np.pi)
        - 2.0 * np.log(a[:, None])
        - v[:, None] * a[:, None] * w[:, None]
        - lam * t[:, None]
        - np.log(lam)
        + np.log(k)
    )
    return np.sum(np.sin(k * np.pi * w[:, None]) * np.exp(log_mag), axis=1)


def _cdf_surv_lower(
    t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(P(T <= t, lower), P(T > t, lower)) for unit noise, no variability; each from its accurate series."""
    p = _prob_lower_unit(v, a, w)
    F = np.zeros_like(t)
    S = p.copy()
    pos = t > 0
    u = np.where(pos, t / a**2, 0.0)
    small = pos & (u < _U_SPLIT_CDF)
    large = pos & ~small
    if np.any(small):
        F[small] = np.clip(_cdf_lower_small(t[small], v[small], a[small], w[small]), 0.0, p[small])
        S[small] = p[small] - F[small]
    if np.any(large):
        S[large] = np.clip(_surv_lower_large(t[large], v[large], a[large], w[large]), 0.0, p[large])
        F[large] = p[large] - S[large]
    return F, S


def wiener_cdf(
    t: ArrayLike, response: ArrayLike, v: ArrayLike, a: ArrayLike, z: ArrayLike = 0.5
) -> np.ndarray:
    """Defective CDF P(T <= t, response) of the decision time (unit noise), Blurton et al. (2012)."""
    shape, (t, r, v, a, z) = _flat(t, response, v, a, z)
    _check_params(a, z, np.zeros_like(a), np.zeros_like(a))
    vv, ww = _reflect(r > 0.5, v, z)
    return _cdf_surv_lower(t, vv, a, ww)[0].reshape(shape)


# --------------------------------------------------------------- variability by quadrature

# Quadrature nodes: Gauss-Hermite over v (CDF only; the density has sv in closed form),
# Gauss-Legendre over the sz and st0 ranges. Chosen so that every density integrates to
# 1 within 1e-8 (tests/ddm/test_ddm_density.py); the st0 CDF with sv uses fewer nodes
# (its error, ~1e-8, is far below what a quantile fit can see). The st0 window of the density
# with sv: _ST_PANELS panels of _ST_NODES Gauss-Legendre nodes, uniform in s^(1/_ST_POWER)
# (within 5e-7 of adaptive quadrature where a start point lies within 0.03 of a boundary).
_N_SV, _N_SZ = 24, 8
_SZ_SPREAD, _SZ_PANELS = 10.0, 4
_ST_PANELS, _ST_NODES, _ST_POWER = 7, 7, 4.0
_N_SV_PROB = 128
_N_ST_CDF, _N_ST_CDF_SV = 32, 16


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays made read-only (cached nodes and weights are shared by every caller)."""
    for x in arrays:
        x.flags.writeable = False
    return arrays


@cache
def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights of the mean under N(0, 1) (computed once per n: read-only)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return _frozen(x, w / np.sqrt(2.0 * np.pi))


@cache
def _gl(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights of the mean over [-1, 1] (computed once per n: read-only)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return _frozen(x, w / 2.0)


@cache
def _composite_gl(panels: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the mean over [-1, 1] of `panels` equal panels, each with n Gauss-Legendre nodes."""
    xq, wq = _gl(n)
    x = (-1.0 + (np.arange(panels)[:, None] + (xq[None, :] + 1.0) / 2.0) * (2.0 / panels)).ravel()
    return _frozen(x, np.tile(wq / panels, panels))


def _cdf_surv_var(
    t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray, sv: np.ndarray, sz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lower-boundary (CDF, survival) averaged over v ~ N(v, sv^2) (Gauss-Hermite) and w ~ U(w +- sz/2) (Gauss-Legendre)."""
    xs, ws = _gh(_N_SV) if np.any(sv > 0) else (np.zeros(1), np.ones(1))
    xz, wz = _gl(_N_SZ) if np.any(sz > 0) else (np.zeros(1), np.ones(1))
    xv = np.repeat(xs, xz.size)
    xw = np.tile(xz, xs.size)
    wt = np.repeat(ws, xz.size) * np.tile(wz, xs.size)
    n = t.size
    F = np.zeros(n)
    S = np.zeros(n)
    # Nodes are processed in chunks so memory stays bounded while the series stay vectorised.
    step = max(1, int(2e5 // max(n, 1)))
    for j in range(0, xv.size, step):
        m = min(step, xv.size - j)
        f, sv_ = _cdf_surv_lower(
            np.tile(t, m),
            (v[None, :] + sv[None, :] * xv[j : j + m, None]).ravel(),
            np.tile(a, m),
            (w[None, :] + sz[None, :] / 2.0 * xw[j : j + m, None]).ravel(),
        )
        F += wt[j : j + m] @ f.reshape(m, n)
        S += wt[j : j + m] @ sv_.reshape(m, n)
    return F, S


def _log_lower_density_var(
    t: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    w: np.ndarray,
    sv: np.ndarray,
    sz: np.ndarray,
    eps: float,
) -> np.ndarray:
    """log lower density with sv in closed form and sz by Gauss-Legendre over the start point.

    At small decision times g changes by orders of magnitude across the start-point range (log g ~ -(a w)^2 / 2t):
    where log g spans more than _SZ_SPREAD over the nodes, the points are taken again by _SZ_PANELS panels of the
    same rule (an edge of the range within 0.01 of a boundary and t of a few ms: 1.4e-3 in log density with one
    rule, 1e-7 with four panels).
    """
    if not np.any(sz > 0):
        return _log_lower_density(t, v, a, w, sv, eps)
    lp, wz = _start_point_nodes(t, v, a, w, sv, sz, eps, 1)
    with np.errstate(invalid="ignore"):
        spread = lp.max(axis=0) - lp.min(axis=0)
    out = logsumexp(lp + np.log(wz)[:, None], axis=0)
    steep = np.flatnonzero(~(spread <= _SZ_SPREAD) & np.isfinite(out))
    if steep.size:
        lp, wz = _start_point_nodes(t[steep], v[steep], a[steep], w[steep], sv[steep], sz[steep], eps, _SZ_PANELS)
        out[steep] = logsumexp(lp + np.log(wz)[:, None], axis=0)
    return out


def _start_point_nodes(t: np.ndarray, v: np.ndarray, a: np.ndarray, w: np.ndarray, sv: np.ndarray, sz: np.ndarray,
                       eps: float, panels: int) -> tuple[np.ndarray, np.ndarray]:
    """log g at the nodes of `panels` Gauss-Legendre panels over w +- sz/2, (nodes, n), and the nodes' weights."""
    xz, wz = _composite_gl(panels, _N_SZ)
    m = xz.size
    wn = (w[None, :] + sz[None, :] / 2.0 * xz[:, None]).ravel()
    rep = lambda x: np.tile(x, m)
    return _log_lower_density(rep(t), rep(v), rep(a), wn, rep(sv), eps).reshape(m, -1), wz


def _window_rule(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights (each (_ST_PANELS * _ST_NODES, n)) for int_lo^hi g(s) ds with 0 <= lo < hi.

    Composite Gauss-Legendre, uniform in y = s^(1/p) (ds = p y^(p-1) dy): where a window reaches s = 0 and a start
    point lies near a boundary, g rises like exp(-c/s) to a peak at s ~ c, which the graded panels resolve and one
    rule over the window does not (Gauss-Legendre with 24 nodes was off by 1.5e-2 in log density there).
    """
    p = _ST_POWER
    x, wx = _composite_gl(_ST_PANELS, _ST_NODES)
    y_lo, y_hi = lo ** (1.0 / p), hi ** (1.0 / p)
    y = y_lo[None, :] + (y_hi - y_lo)[None, :] * (x[:, None] + 1.0) / 2.0  # (nodes, n)
    with np.errstate(divide="ignore"):
        log_w = np.log(wx)[:, None] + np.log(y_hi - y_lo)[None, :] + np.log(p) + (p - 1.0) * np.log(y)
    return y**p, log_w


# ------------------------------------------------------------------------ full model


def logpdf(
    rt: ArrayLike,
    response: ArrayLike,
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
    eps: float = 1e-12,
) -> np.ndarray:
    """log density of (rt, response) under the Ratcliff model (v, a, z, t0, sv, sz, st0), Navarro & Fuss (2009)."""
    shape, (rt, r, v, a, z, t0, sv, sz, st0) = _flat(rt, response, v, a, z, t0, sv, sz, st0)
    if not s > 0:
        raise ValueError(f"noise scale s={s!r}; expected s > 0")
    v, a, sv = v / s, a / s, sv / s
    _check_params(a, z, sv, sz)
    if np.any(st0 < 0) or np.any(t0 < 0):
        raise ValueError("non-decision time t0 and its range st0 must be >= 0")
    upper = r > 0.5
    vv, ww = _reflect(upper, v, z)
    out = np.full(rt.shape, -np.inf)
    plain = st0 <= 1e-9
    t = rt - t0
    ok = plain & (t > 0)
    if np.any(ok):
        out[ok] = _log_lower_density_var(t[ok], vv[ok], a[ok], ww[ok], sv[ok], sz[ok], eps)
    # st0 without sv: f(t) = [F(t - t0) - F(t - t0 - st0)] / st0, exactly; the difference
    # is taken from the survival series where both points are in the large-time regime,
    # so the far right tail keeps its relative precision.
    ok = ~plain & (t > 0) & (sv == 0)
    if np.any(ok):
        i = np.flatnonzero(ok)
        t1, t2 = t[i], t[i] - st0[i]
        F1, S1 = _cdf_surv_var(t1, vv[i], a[i], ww[i], sv[i], sz[i])
        F2, S2 = _cdf_surv_var(np.maximum(t2, 0.0), vv[i], a[i], ww[i], sv[i], sz[i])
        diff = np.where(t2 > _U_SPLIT_CDF * a[i] ** 2, S2 - S1, F1 - F2)
        out[i] = np.log(np.maximum(diff, _TINY)) - np.log(st0[i])
    # st0 with sv: the closed-form sv density integrated over the window [max(t - st0, 0), t]
    # of decision times by a composite rule graded towards s = 0 (_window_rule).
    ok = ~plain & (t > 0) & (sv > 0)
    if np.any(ok):
        i = np.flatnonzero(ok)
        nodes, log_w = _window_rule(np.maximum(t[i] - st0[i], 0.0), t[i])
        m = nodes.shape[0]
        tile = lambda x: np.tile(x[i], m)
        lp = _log_lower_density_var(nodes.ravel(), tile(vv), tile(a), tile(ww), tile(sv), tile(sz), eps).reshape(m, -1)
        out[i] = logsumexp(lp + log_w, axis=0) - np.log(st0[i])
    if lapse is not None and lapse.p > 0:
        contaminant = lapse.density(rt, upper)
        with np.errstate(divide="ignore"):
            out = np.logaddexp(np.log1p(-lapse.p) + out, np.log(contaminant))
    return out.reshape(shape)


def pdf(rt: ArrayLike, response: ArrayLike, *args: ArrayLike, **kwargs) -> np.ndarray:
    """Density of (rt, response); see :func:`logpdf`."""
    return np.exp(logpdf(rt, response, *args, **kwargs))


def cdf(
    rt: ArrayLike,
    response: ArrayLike,
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
) -> np.ndarray:
    """Defective CDF P(RT <= rt, response) of the Ratcliff model, Blurton et al. (2012) with quadrature for sv, sz, st0."""
    shape, (rt, r, v, a, z, t0, sv, sz, st0) = _flat(rt, response, v, a, z, t0, sv, sz, st0)
    v, a, sv = v / s, a / s, sv / s
    _check_params(a, z, sv, sz)
    upper = r > 0.5
    vv, ww = _reflect(upper, v, z)
    t = rt - t0
    out = np.zeros(rt.shape)
    plain = st0 <= 1e-9
    if np.any(plain):
        out[plain] = _cdf_surv_var(
            np.maximum(t[plain], 0.0), vv[plain], a[plain], ww[plain], sv[plain], sz[plain]
        )[0]
    if np.any(~plain):
        # st0: average of F(t - t0 - tau) over tau ~ U[0, st0], Gauss-Legendre on the part
        # of [0, st0] where the integrand is non-zero (keeps the integrand smooth).
        i = np.flatnonzero(~plain)
        xq, wq = _gl(_N_ST_CDF_SV if np.any(sv[i] > 0) else _N_ST_CDF)
        hi = np.clip(t[i], 0.0, st0[i])
        m = xq.size
        tau = hi[None, :] / 2.0 * (1.0 + xq[:, None])
        tile = lambda x: np.tile(x[i], m)
        Fq = _cdf_surv_var(
            (t[i][None, :] - tau).ravel(), tile(vv), tile(a), tile(ww), tile(sv), tile(sz)
        )[0].reshape(m, -1)
        acc = wq @ Fq
        out[i] = acc * hi / st0[i]
    if lapse is not None and lapse.p > 0:
        out = (1.0 - lapse.p) * out + lapse.cdf(rt, upper)
    return out.reshape(shape)


def prob_upper(
    v: ArrayLike,
    a: ArrayLike,
    z: ArrayLike = 0.5,
    sv: ArrayLike = 0.0,
    sz: ArrayLike = 0.0,
    *,
    s: float = 1.0,
) -> np.ndarray:
    """P(upper response) = (1 - e^{-2vaz/s^2}) / (1 - e^{-2va/s^2}) (gambler's ruin for a Wiener process, Cox & Miller 1965); sv, sz by quadrature."""
    shape, (v, a, z, sv, sz) = _flat(v, a, z, sv, sz)
    v, a, sv = v / s, a / s, sv / s
    _check_params(a, z, sv, sz)
    xs, ws = _gh(_N_SV_PROB) if np.any(sv > 0) else (np.zeros(1), np.ones(1))
    xz, wz = _gl(_N_SZ) if np.any(sz > 0) else (np.zeros(1), np.ones(1))
    vq = v[None, None, :] + sv[None, None, :] * xs[:, None, None]
    zq = z[None, None, :] + sz[None, None, :] / 2.0 * xz[None, :, None]
    p = _prob_lower_unit(-vq, a[None, None, :], 1.0 - zq)
    return np.einsum("i,j,ijn->n", ws, wz, p).reshape(shape)


# ----------------------------------------------------------- gradient of the basic model


#: points from which grouping them by their number of series terms saves more than its per-group overhead
_GROUP_FROM = 20_000


def _g_derivs(
    u: np.ndarray, w: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log g, d log g / du, d log g / dw) for f(u | 0, 1, w), Navarro & Fuss (2009) series differentiated term by term.

    Each point takes the series with fewer terms. A large array (the full model's quadrature) is evaluated in
    groups of equal term count, so that points needing few terms do not pay for the group's maximum.
    """
    out = np.empty((3, u.size))
    ks, kl = _nf_terms_small(u, eps), _nf_terms_large(u, eps)
    small = ks < kl
    terms = np.where(small, np.ceil((ks - 1.0) / 2.0) + 1.0, np.ceil(kl)).astype(int)
    for series, mask in ((_small_time_derivs, small), (_large_time_derivs, ~small)):
        count = int(np.count_nonzero(mask))
        if not count:
            continue
        if u.size < _GROUP_FROM:
            sel = slice(None) if count == u.size else mask  # views, not copies, when one series serves every point
            out[:, sel] = series(u[sel], w[sel], int(terms[sel].max()))
            continue
        for n in np.unique(terms[mask]):
            sel = mask & (terms == n)
            out[:, sel] = series(u[sel], w[sel], int(n))
    return out[0], out[1], out[2]


def _small_time_derivs(u: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """(log g, d/du, d/dw) stacked, from the small-time series with k = -n..n (Navarro & Fuss 2009)."""
    k = np.arange(-n, n + 1, dtype=float)
    inv_u = 1.0 / u
    d = w[:, None] + 2.0 * k
    e = np.exp((-2.0 * k) * (k + w[:, None]) * inv_u[:, None])
    de = d * e
    S = np.maximum(de.sum(axis=1), _TINY)
    d2e = d * de
    return np.stack([
        -0.5 * _LOG_2PI + 1.5 * np.log(inv_u) - w * w * (0.5 * inv_u) + np.log(S),
        inv_u * (-1.5 + np.einsum("ij,ij->i", d2e, d) * (0.5 * inv_u) / S),
        (e.sum(axis=1) - d2e.sum(axis=1) * inv_u) / S,
    ])


def _large_time_derivs(u: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """(log g, d/du, d/dw) stacked, from the large-time series with k = 1..n (Navarro & Fuss 2009)."""
    k = np.arange(1, n + 1, dtype=float)
    L = k * np.exp((-0.5 * np.pi**2) * (k * k - 1.0) * u[:, None])
    phase = (np.pi * k) * w[:, None]
    Ls = L * np.sin(phase)
    S = np.maximum(Ls.sum(axis=1), _TINY)
    return np.stack([
        np.log(np.pi) - np.pi**2 * u / 2.0 + np.log(S),
        -(Ls @ (k * k)) * (np.pi**2 / 2.0) / S,
        (np.cos(phase) * L) @ k * np.pi / S,
    ])


def logpdf_and_grad(
    rt: np.ndarray,
    upper: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    z: np.ndarray,
    t0: np.ndarray,
    sv: np.ndarray | float = 0.0,
    *,
    s: float = 1.0,
    lapse_p: np.ndarray | float = 0.0,
    lapse_density: np.ndarray | float = 0.0,
    eps: float = 1e-12,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """log density of the model (v, a, z, t0, sv) plus a lapse mixture, and its partials per trial.

    The partials follow from differentiating the Navarro & Fuss (2009) density with the
    drift mixed over N(v, sv^2) in closed form: with D = 1 + sv^2 t and
    E = sv^2 a^2 w'^2 - 2 a v' w' - v'^2 t,
    log f = -2 log a + log g(t/a^2, w') - log(D)/2 + E/(2D), where v' = -v, w' = 1 - z
    for upper responses. ``lapse_density`` is the contaminant density per unit probability
    (e.g. 0.5 / (hi - lo) inside the range); returned keys: v, a, z, t0, sv, lapse.
    All inputs are 1-D arrays of one length (no broadcasting, no validation: internal use).
    """
    n = rt.size
    vu, au = v / s, a / s
    svu = np.broadcast_to(np.asarray(sv, dtype=float), (n,)) / s
    sign = 1.0 - 2.0 * upper
    vp = sign * vu
    wp = z + upper * (1.0 - 2.0 * z)
    t = rt - t0
    ok = t > 0
    ll = np.full(n, -np.inf)
    dv, da, dz, dt, dsv = np.zeros((5, n))
    if np.any(ok):
        sel = slice(None) if ok.all() else ok  # a view, not a copy, in the usual case
        to, ao, vo, wo, so, sg = t[sel], au[sel], vp[sel], wp[sel], svu[sel], sign[sel]
        a2 = ao * ao
        lg, gu, gw = _g_derivs(to / a2, wo, eps)
        if np.any(so):
            s2 = so * so
            D = 1.0 + s2 * to
            E = s2 * a2 * wo * wo - 2.0 * ao * vo * wo - vo * vo * to
            ll[sel] = -2.0 * np.log(ao) + lg - 0.5 * np.log(D) + E / (2.0 * D)
            dv[sel] = sg * (-(ao * wo + vo * to) / D) / s
            da[sel] = (-2.0 / ao - 2.0 * to * gu / (a2 * ao) + (s2 * ao * wo * wo - vo * wo) / D) / s
            dz[sel] = sg * (gw + (s2 * a2 * wo - ao * vo) / D)
            dt[sel] = gu / a2 - (s2 + vo * vo) / (2.0 * D) - E * s2 / (2.0 * D * D)
            dsv[sel] = (so * (a2 * wo * wo - to) / D - E * so * to / (D * D)) / s
        else:  # sv = 0: D = 1 and E = -2 a v' w' - v'^2 t, so the sv terms drop out (d/dsv is 0 there)
            ll[sel] = -2.0 * np.log(ao) + lg - ao * vo * wo - 0.5 * vo * vo * to
            dv[sel] = sg * (-(ao * wo + vo * to)) / s
            da[sel] = (-2.0 / ao - 2.0 * to * gu / (a2 * ao) - vo * wo) / s
            dz[sel] = sg * (gw - ao * vo)
            dt[sel] = gu / a2 - 0.5 * vo * vo
    grads = {"v": dv, "a": da, "z": dz, "t0": -dt, "sv": dsv}
    return _mix_lapse(ll, grads, lapse_p, lapse_density)


def _mix_lapse(
    ll: np.ndarray, grads: dict[str, np.ndarray], lapse_p, lapse_density
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """log((1 - p) f + p c) and its partials from log f and d log f (adds the key "lapse")."""
    n = ll.size
    grads = {**grads, "lapse": np.zeros(n)}
    p = np.broadcast_to(np.asarray(lapse_p, dtype=float), (n,))
    if np.any(p > 0):
        c = np.broadcast_to(np.asarray(lapse_density, dtype=float), (n,))
        with np.errstate(divide="ignore"):
            mix = np.logaddexp(np.log1p(-p) + ll, np.log(p * c))
        r = np.exp(np.log1p(-p) + ll - mix)
        for key in grads:
            if key != "lapse":
                grads[key] = r * grads[key]
        with np.errstate(invalid="ignore"):
            grads["lapse"] = np.where(np.isfinite(mix), (c - np.exp(ll)) / np.exp(mix), 0.0)
        ll = mix
    return ll, grads
