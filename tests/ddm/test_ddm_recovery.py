"""The recovery study runs and its summaries mean what they say."""

from __future__ import annotations

import numpy as np

from noisecraft.ddm.recovery import run_recovery, summarize


def test_small_recovery_study():
    res = run_recovery(n_trials=300, n_datasets=6, contamination=0.0, methods=("ml", "ez"), seed=3)
    assert len(res) == 6 * 2 * 3
    summ = summarize(res).set_index(["method", "param"])
    # ML on 300 clean trials recovers drift and non-decision time closely.
    assert summ.loc[("ml", "v"), "r"] > 0.9
    assert summ.loc[("ml", "t0"), "r"] > 0.95
    assert summ.loc[("ml", "t0"), "rmse"] < 0.03
    # bias and RMSE are what they claim to be
    g = res[(res.method == "ml") & (res.param == "a")]
    err = g.estimate - g.true
    assert np.isclose(summ.loc[("ml", "a"), "bias"], err.mean())
    assert np.isclose(summ.loc[("ml", "a"), "rmse"], np.sqrt((err**2).mean()))
