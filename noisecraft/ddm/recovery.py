"""Parameter recovery: simulate from known parameters, fit with each method, compare.

The design follows the usual recovery study of the DDM literature (e.g. Ratcliff &
Tuerlinckx 2002; van Ravenzwaaij & Oberauer 2009, J. Math. Psych. 53:463; Lerche, Voss &
Nagler 2017, Behav. Res. Methods 49:513): true (v, a, t0) drawn uniformly over a
plausible range, z = 1/2, data sets of n trials, optionally a fraction of contaminant
trials (uniform RT on [0, 3] s, random response). Summaries per method and parameter:
Pearson r, bias (mean of estimate - true) and RMSE.

Methods: ``ml`` (no lapse term), ``ml+lapse`` (a free lapse probability, uniform on
[0, max rt]), ``chisq`` (quantile chi-square) and ``ez``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from noisecraft.ddm.density import Lapse
from noisecraft.ddm.fit import fit
from noisecraft.ddm.simulate import simulate
from noisecraft.ddm.spec import ModelSpec

__all__ = ["METHODS", "RANGES", "run_recovery", "summarize"]

RANGES = {"v": (0.5, 3.5), "a": (0.8, 2.2), "t0": (0.2, 0.5)}
METHODS = ("ml", "ml+lapse", "chisq", "ez")
CONTAMINANT_RANGE = (0.0, 3.0)  # contaminant RTs are uniform here (s)


def _fit_one(df: pd.DataFrame, method: str, seed: int) -> dict[str, float]:
    base = "v=shared, a=shared, t0=shared, z=0.5"
    if method == "ml+lapse":
        spec = ModelSpec.parse(base + ", lapse=shared")
        res = fit(df, response="response", spec=spec, method="ml", se=False, seed=seed)
    else:
        res = fit(
            df,
            response="response",
            spec=ModelSpec.parse(base),
            method=method,
            se=False,
            seed=seed,
            n_starts=2,
        )
    return {k: res.params[k] for k in ("v", "a", "t0")}


def run_recovery(
    n_trials: int = 100,
    n_datasets: int = 50,
    contamination: float = 0.0,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (dataset, method, param, true, estimate) of a recovery study."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_datasets):
        true = {k: rng.uniform(*r) for k, r in RANGES.items()}
        lapse = Lapse(contamination, *CONTAMINANT_RANGE) if contamination > 0 else None
        df = simulate(n_trials, true["v"], true["a"], 0.5, true["t0"], lapse=lapse, seed=rng)
        for m in methods:
            try:
                est = _fit_one(df, m, seed=i)
            except ValueError:  # e.g. EZ with fewer than 2 correct responses
                est = dict.fromkeys(true, np.nan)
            for k, value in true.items():
                rows.append(
                    {
                        "dataset": i,
                        "method": m,
                        "param": k,
                        "true": value,
                        "estimate": est[k],
                        "n_trials": n_trials,
                        "contamination": contamination,
                    }
                )
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Pearson r, bias and RMSE per method and parameter (failed fits dropped and counted)."""
    out = []
    for (m, p), g in results.groupby(["method", "param"], sort=False):
        ok = np.isfinite(g["estimate"])
        e, t = g["estimate"][ok].to_numpy(), g["true"][ok].to_numpy()
        r = float(np.corrcoef(t, e)[0, 1]) if ok.sum() > 2 else np.nan
        out.append(
            {
                "method": m,
                "param": p,
                "r": r,
                "bias": float(np.mean(e - t)),
                "rmse": float(np.sqrt(np.mean((e - t) ** 2))),
                "failed": int((~ok).sum()),
            }
        )
    return pd.DataFrame(out)
