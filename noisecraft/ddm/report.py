"""The ``compare`` report: ML, quantile chi-square and EZ side by side on one data set.

Writes ``report.md`` and three figures:

* ``rt_histograms.png``: RT histograms per condition and response, scaled as defective
  densities, with each method's fitted density (Navarro & Fuss 2009).
* ``quantile_probability.png``: the .1/.3/.5/.7/.9 RT quantiles of each response against
  its probability per condition (the quantile-probability plot of Ratcliff & McKoon
  2008, Neural Comput. 20:873), data as points, models as lines.
* ``recovery.png``: a small recovery study around the ML estimates: parameters drawn
  within +-30 % of them, data sets simulated with the same design and trial counts, and
  refitted by every method (true against estimated).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from noisecraft.ddm.data import RTData, prepare
from noisecraft.ddm.density import Lapse, cdf, pdf
from noisecraft.ddm.fit import QUANTILES, FitResult, fit
from noisecraft.ddm.simulate import simulate
from noisecraft.ddm.spec import ModelSpec, _fmt
from noisecraft.io import save_figure, write_csv_atomic, write_text_atomic

__all__ = ["compare"]

METHODS = ("ml", "chisq", "ez")
COLORS = {"ml": "C0", "chisq": "C1", "ez": "C2"}


def _model_args(res: FitResult, k: int) -> tuple[tuple, dict]:
    pc = res.per_condition().iloc[k]
    args = tuple(float(pc[p]) for p in ("v", "a", "z", "t0", "sv", "sz", "st0"))
    lapse = Lapse(float(pc["lapse"]), *res.lapse_range) if pc["lapse"] > 0 else None
    return args, {"s": res.spec.s, "lapse": lapse}


def _valid(res: FitResult) -> bool:
    return bool(np.all(np.isfinite(res.theta)))


def _model_quantiles(res: FitResult, k: int, r: int, t_hi: float) -> tuple[float, np.ndarray]:
    args, kw = _model_args(res, k)
    grid = np.linspace(0.0, t_hi, 800)
    F = cdf(grid, r, *args, **kw)
    p = float(cdf(1e4, r, *args, **kw))
    if p <= 1e-9:
        return p, np.full(len(QUANTILES), np.nan)
    return p, np.interp(np.asarray(QUANTILES) * p, F, grid)


def _plot_histograms(data: RTData, fits: dict[str, FitResult], path: Path) -> None:
    import matplotlib.pyplot as plt

    m = len(data.levels)
    fig, axes = plt.subplots(2, m, figsize=(2.6 * m + 1, 5), squeeze=False, sharex=True)
    t_hi = float(np.quantile(data.rt, 0.995))
    grid = np.linspace(0.0, t_hi, 400)
    for k, lev in enumerate(data.levels):
        rt, resp = data.subset(k)
        for row, r in enumerate((1, 0)):
            ax = axes[row, k]
            x = rt[resp == r]
            bins = np.linspace(0, t_hi, 31)
            h, e = np.histogram(x, bins)
            ax.bar(
                e[:-1],
                h / (rt.size * np.diff(e)),
                width=np.diff(e),
                align="edge",
                color="0.8",
                edgecolor="0.6",
                lw=0.3,
            )
            for name, res in fits.items():
                if not _valid(res):
                    continue
                args, kw = _model_args(res, k)
                ax.plot(grid, pdf(grid, r, *args, **kw), color=COLORS[name], lw=1.2, label=name)
            ax.set_title(
                f"{data.condition_name or 'condition'}={lev}, {'upper' if r else 'lower'}",
                fontsize=8,
            )
            if k == 0:
                ax.set_ylabel("defective density (1/s)")
            if row == 1:
                ax.set_xlabel("RT (s)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _plot_qp(data: RTData, fits: dict[str, FitResult], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    t_hi = float(data.rt.max()) * 1.5
    for k in range(len(data.levels)):
        rt, resp = data.subset(k)
        for r in (0, 1):
            x = rt[resp == r]
            if x.size >= 5:
                ax.plot(np.full(5, x.size / rt.size), np.quantile(x, QUANTILES), "ko", ms=3)
    for name, res in fits.items():
        if not _valid(res):
            continue
        pts = []
        for k in range(len(data.levels)):
            for r in (0, 1):
                p, q = _model_quantiles(res, k, r, t_hi)
                pts.append((p, q))
        pts.sort(key=lambda z: z[0])
        P = np.array([p for p, _ in pts])
        Q = np.array([q for _, q in pts])
        for j in range(len(QUANTILES)):
            ax.plot(P, Q[:, j], "-", color=COLORS[name], lw=1, label=name if j == 0 else None)
    ax.set_xlabel("response probability")
    ax.set_ylabel("RT quantile (s): .1 .3 .5 .7 .9")
    ax.set_title("quantile-probability plot (points: data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _recovery(data: RTData, spec: ModelSpec, ml: FitResult, n_sets: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    counts = np.bincount(data.cond, minlength=len(data.levels))
    for i in range(n_sets):
        theta = ml.theta * rng.uniform(0.7, 1.3, ml.theta.size)
        theta = np.clip(theta, ml.design.lower, ml.design.upper)
        vals = ml.design.values(theta)
        parts = []
        for k, lev in enumerate(data.levels):
            lapse = (
                Lapse(float(vals["lapse"][k]), *ml.lapse_range) if vals["lapse"][k] > 0 else None
            )
            d = simulate(
                int(counts[k]),
                *(float(vals[p][k]) for p in ("v", "a", "z", "t0", "sv", "sz", "st0")),
                s=spec.s,
                lapse=lapse,
                seed=rng,
            )
            parts.append(d)
        df = pd.concat(parts, ignore_index=True)
        # the simulated trials keep the data's cells (every factor, the stimulus signs): fit them as prepared data
        sim = replace(data, rt=df["rt"].to_numpy(float), response=df["response"].to_numpy(int),
                      cond=np.repeat(np.arange(len(data.levels)), counts), rows=np.arange(len(df)), n_dropped=0)
        for m in METHODS:
            try:
                res = fit(sim, spec=spec, method=m, se=False, n_starts=2, seed=i)
                est = res.theta
            except ValueError:
                est = np.full(theta.size, np.nan)
            for name, t, e in zip(ml.names, theta, est):
                rows.append({"dataset": i, "method": m, "param": name, "true": t, "estimate": e})
    return pd.DataFrame(rows)


def _plot_recovery(rec: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    params = list(dict.fromkeys(rec["param"]))
    fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3.2), squeeze=False)
    for ax, p in zip(axes[0], params):
        g = rec[rec.param == p]
        for m in METHODS:
            h = g[g.method == m]
            ax.plot(h["true"], h["estimate"], "o", ms=3, color=COLORS[m], label=m, alpha=0.8)
        lo, hi = (
            np.nanmin(g[["true", "estimate"]].to_numpy()),
            np.nanmax(g[["true", "estimate"]].to_numpy()),
        )
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("true")
    axes[0, 0].set_ylabel("estimate")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [
            format(x, floatfmt) if isinstance(x, (float, np.floating)) else str(x) for x in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    rt: str = "rt",
    response: str = "response",
    condition: str | None = None,
    spec: ModelSpec | str | None = None,
    rt_min: float | None = None,
    rt_max: float | None = None,
    coding: str = "accuracy",
    stimulus: str | None = None,
    upper=None,
    stimulus_upper=None,
    n_recovery: int = 20,
    seed: int = 0,
    title: str = "DDM fit: ML vs quantile chi-square vs EZ",
) -> Path:
    """Fit by every method, write report.md and the figures into out_dir; returns the report path."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec.load(spec) if isinstance(spec, str) else (spec or ModelSpec())
    spec.check_columns(df.columns)
    data = prepare(df, rt, response, condition, columns=spec.columns(), coding=coding, stimulus=stimulus,
                   upper=upper, stimulus_upper=stimulus_upper, rt_min=rt_min, rt_max=rt_max, method="chisq")
    fits: dict[str, FitResult] = {m: fit(data, spec=spec, method=m, seed=seed) for m in METHODS}

    # Every method scored by the same two yardsticks: the full likelihood and the chi-square.
    from noisecraft.ddm.fit import _chisq_objective, _Problem, _QuantileBins

    prob = _Problem(data, spec, fits["ml"].lapse_range)
    chi = _chisq_objective(prob, _QuantileBins(data), "chisq")
    params = pd.DataFrame({"parameter": fits["ml"].names})
    for m, r in fits.items():
        params[m] = r.theta
        if r.se is not None:
            params[f"{m} se"] = r.se
    stats_rows = []
    for m, r in fits.items():
        stats_rows.append(
            {
                "method": m,
                "NLL": r.nll,
                "AIC": r.aic,
                "BIC": r.bic,
                "chi-square": chi(r.theta) if _valid(r) else np.nan,
                "time (s)": r.time_s,
                "converged": r.converged,
            }
        )
    stats = pd.DataFrame(stats_rows)

    _plot_histograms(data, fits, out / "rt_histograms.png")
    _plot_qp(data, fits, out / "quantile_probability.png")
    t = time.perf_counter()
    rec = _recovery(data, spec, fits["ml"], n_recovery, seed) if n_recovery > 0 else None
    t_rec = time.perf_counter() - t
    if rec is not None:
        _plot_recovery(rec, out / "recovery.png")
        write_csv_atomic(rec, out / "recovery.csv")

    lines = [
        f"# {title}",
        "",
        (
            f"Data: {data.n} trials ({data.n_dropped} dropped by the RT window), "
            + (f"cells over `{data.condition_name}` ({coding} coding): {', '.join(_fmt(x) for x in data.levels)}."
             if data.condition_name else f"one cell ({coding} coding).")
        ),
        f"Spec: `{spec}`; contaminant range {fits['ml'].lapse_range}.",
        "",
        "## Estimates",
        "",
        _md_table(params),
        "",
        "## Fit statistics (each method's estimates scored by the full likelihood and the chi-square)",
        "",
        _md_table(stats),
        "",
    ]
    ezt = fits["ez"].ez_per_condition
    if ezt is not None:
        lines += ["## EZ per condition (before mapping onto the spec)", "", _md_table(ezt), ""]
    lines += [
        "## Plots",
        "",
        "![RT histograms](rt_histograms.png)",
        "",
        "![Quantile-probability plot](quantile_probability.png)",
        "",
    ]
    if rec is not None:
        summ = []
        for (m, p), g in rec.groupby(["method", "param"], sort=False):
            ok = np.isfinite(g.estimate)
            r = np.corrcoef(g.true[ok], g.estimate[ok])[0, 1] if ok.sum() > 2 else np.nan
            summ.append(
                {
                    "method": m,
                    "param": p,
                    "r": r,
                    "bias": float(np.mean(g.estimate[ok] - g.true[ok])),
                    "rmse": float(np.sqrt(np.mean((g.estimate[ok] - g.true[ok]) ** 2))),
                }
            )
        lines += [
            f"## Recovery around the ML estimates ({n_recovery} simulated data sets, {t_rec:.1f} s)",
            "",
            _md_table(pd.DataFrame(summ)),
            "",
            "![Recovery](recovery.png)",
            "",
        ]
    lines += [
        (
            "Methods: maximum likelihood with the exact density (Navarro & Fuss 2009); quantile "
            "chi-square (Ratcliff & Tuerlinckx 2002); EZ-diffusion (Wagenmakers et al. 2007)."
        ),
        "",
    ]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
