"""PyDDM (Shinn, Lam & Murray 2020) as a test-only reference for the density, when installed."""

from __future__ import annotations

import numpy as np
import pytest

from noisecraft.ddm import pdf

pyddm = pytest.importorskip("pyddm")


@pytest.mark.parametrize("v, B, t0", [(1.0, 0.6, 0.3), (-2.0, 0.9, 0.1)])
def test_density_matches_pyddm_analytical_solution(v, B, t0):
    # PyDDM's boundaries are at +-B with the start in the middle: a = 2B, z = 1/2.
    m = pyddm.gddm(drift=v, bound=B, nondecision=t0, mixture_coef=0, dt=0.001, dx=0.001, T_dur=3)
    sol = m.solve_analytical()
    t = m.t_domain()
    for choice, r in (("correct", 1), ("error", 0)):
        np.testing.assert_allclose(sol.pdf(choice), pdf(t, r, v, 2 * B, 0.5, t0), atol=1e-9)
