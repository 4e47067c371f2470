"""The full Ratcliff model's density by adaptive quadrature: slow, for checking the fast rules.

f(t) = (1/sz) int_{z-sz/2}^{z+sz/2} (1/st0) int_0^{min(st0, d)} g_sv(d - tau | w) dtau dw,   d = t - t0,

with g_sv the decision-time density with across-trial drift variability in closed form (Navarro & Fuss 2009;
Ratcliff & Tuerlinckx 2002 for the uniform start point and non-decision time). Both integrals are
``scipy.integrate.quad`` to a relative tolerance of 1e-11: about 0.1 s a point, the accuracy of the series.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import quad

from noisecraft.ddm.density import wiener_logpdf

__all__ = ["logpdf_quadrature"]

_QUAD = {"epsabs": 1e-15, "epsrel": 1e-11, "limit": 200}


def logpdf_quadrature(rt: ArrayLike, response: ArrayLike, v: float, a: float, z: float = 0.5, t0: float = 0.0,
                      sv: float = 0.0, sz: float = 0.0, st0: float = 0.0, *, s: float = 1.0) -> np.ndarray:
    """log density of each (rt, response) under one parameter set, by adaptive quadrature (see the module)."""
    rt, response = np.broadcast_arrays(np.asarray(rt, dtype=float), np.asarray(response))
    v, a, sv = v / s, a / s, sv / s
    out = np.empty(rt.shape)
    for i, (t, r) in enumerate(zip(rt.ravel(), response.ravel())):
        with np.errstate(divide="ignore"):
            out.flat[i] = np.log(_density(float(t) - t0, int(r), v, a, z, sv, sz, st0))
    return out


def _density(d: float, response: int, v: float, a: float, z: float, sv: float, sz: float, st0: float) -> float:
    if d <= 0:
        return 0.0
    g = lambda s, w: float(np.exp(wiener_logpdf(s, response, v, a, w, sv)))
    if st0 > 0:
        over_tau = lambda w: quad(lambda tau: g(d - tau, w), 0.0, min(st0, d), **_QUAD)[0] / st0
    else:
        over_tau = lambda w: g(d, w)
    if sz > 0:
        return quad(over_tau, z - sz / 2, z + sz / 2, **_QUAD)[0] / sz
    return over_tau(z)
