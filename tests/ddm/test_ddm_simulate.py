"""Simulated RTs against the exact density (KS), and sampler bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from noisecraft.ddm import Lapse, cdf, prob_upper, simulate

FULL = {"v": 1.2, "a": 1.4, "z": 0.45, "t0": 0.3, "sv": 0.5, "sz": 0.1, "st0": 0.1}
NO_SV = dict(FULL, sv=0.0)


@pytest.mark.parametrize(
    "method, n, PARAMS, kw",
    [
        ("exact", 4000, FULL, {}),
        ("euler", 3000, NO_SV, {"dt": 5e-4}),
    ],
)
def test_simulated_rts_match_the_density(method, n, PARAMS, kw):
    df = simulate(n, **PARAMS, method=method, seed=11, **kw)
    pu = float(prob_upper(PARAMS["v"], PARAMS["a"], PARAMS["z"], PARAMS["sv"], PARAMS["sz"]))
    k = int(df.response.sum())
    assert stats.binomtest(k, n, pu).pvalue > 1e-3
    for r, p in ((1, pu), (0, 1 - pu)):
        x = df.rt[df.response == r].to_numpy()
        # the model's conditional CDF on a fine grid (it is smooth), interpolated
        grid = np.linspace(PARAMS["t0"], x.max() + 0.01, 120)
        F = cdf(grid, r, **PARAMS) / p
        ks = stats.kstest(x, lambda q, grid=grid, F=F: np.interp(q, grid, F))
        assert ks.pvalue > 1e-3, (method, r, ks)


def test_exact_sampler_without_variability():
    df = simulate(3000, v=-0.8, a=2.0, z=0.6, t0=0.2, seed=5)
    for r in (0, 1):
        x = np.sort(df.rt[df.response == r].to_numpy())
        p = float(prob_upper(-0.8, 2.0, 0.6)) if r else 1 - float(prob_upper(-0.8, 2.0, 0.6))
        F = cdf(x, r, -0.8, 2.0, 0.6, 0.2) / p
        assert stats.kstest(x, lambda q, x=x, F=F: np.interp(q, x, F)).pvalue > 1e-3


def test_seeded_and_contaminated():
    a = simulate(500, 1.0, 1.0, t0=0.2, seed=3)
    b = simulate(500, 1.0, 1.0, t0=0.2, seed=3)
    assert a.equals(b)
    c = simulate(4000, 1.0, 1.0, t0=0.2, lapse=Lapse(0.1, 0.0, 3.0), seed=4)
    frac = c.contaminant.mean()
    assert abs(frac - 0.1) < 0.02
    cont = c[c.contaminant]
    assert cont.rt.between(0, 3).all() and abs(cont.response.mean() - 0.5) < 0.08
    assert (c.rt[~c.contaminant] > 0.2).all()


def test_per_trial_parameters_and_errors():
    v = np.r_[np.full(200, 3.0), np.full(200, -3.0)]
    df = simulate(400, v, 1.5, seed=0)
    assert df.response[:200].mean() > 0.95 and df.response[200:].mean() < 0.05
    with pytest.raises(ValueError, match="method='rk4'"):
        simulate(10, 1.0, 1.0, method="rk4")
    with pytest.raises(ValueError, match="boundary separation"):
        simulate(10, 1.0, -1.0)
