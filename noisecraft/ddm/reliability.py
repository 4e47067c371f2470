"""How much to trust a DDM fit: bootstrap intervals, split-half reliability, starting-value sensitivity.

* :func:`bootstrap`: nonparametric bootstrap (Efron & Tibshirani 1993, ch. 13), trials resampled
  with replacement within each design cell (stratified, so every cell keeps its trial count),
  percentile confidence intervals and the bootstrap standard error beside the inverse-Hessian one.
* :func:`split_half`: per participant, the trials of each cell split into odd and even positions in
  trial order (or at random within each cell), both halves fitted; per parameter the Pearson
  correlation across participants and the Spearman-Brown reliability of the whole, 2r / (1 + r)
  (Spearman 1910; Brown 1910). With a ``session`` column of two levels: test-retest correlation.
* :func:`start_sensitivity`: one L-BFGS-B run from each of many uniform random starts in the
  parameter box, no multi-start; the spread of the estimates and the NLL each reached, beside the
  default multi-start :func:`~noisecraft.ddm.fit.fit` (Lerche, Voss & Nagler 2017 on estimation
  problems of the DDM; starting values can move boundary separation a).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from noisecraft.ddm.data import RTData, prepare
from noisecraft.ddm.fit import _clip, _setup, _spec, fit, fit_participants
from noisecraft.ddm.spec import ModelSpec

__all__ = ["SplitHalf", "StartSensitivity", "bootstrap", "long_table", "markdown", "split_half", "start_sensitivity"]

# Options of fit() that bootstrap/start_sensitivity pass on (everything but spec and seed).
_FIT_OPTIONS = {k: q.default for k, q in inspect.signature(fit).parameters.items()
                if q.kind is q.KEYWORD_ONLY and k not in ("spec", "seed")}
_DATA_KEYS = ("rt", "response", "condition", "rt_min", "rt_max", "coding", "stimulus", "upper",
              "stimulus_upper", "method")
_WORSE_NLL = 0.01  # a start "lands worse" when its NLL exceeds the best by more (fit's agreement tolerance)


def _options(fit_options: dict, where: str) -> dict:
    """fit()'s keyword options with defaults filled in; unknown names raise naming them."""
    unknown = sorted(set(fit_options) - set(_FIT_OPTIONS))
    if unknown:
        raise ValueError(f"{where} got unknown fit option(s) {unknown}; expected some of {sorted(_FIT_OPTIONS)}")
    return {**_FIT_OPTIONS, **fit_options}


def _prepare(data: pd.DataFrame, spec: ModelSpec, opts: dict) -> RTData:
    """Validated trials (all checks of fit, before any work)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame of trials, got {type(data).__name__}")
    spec.check_columns(data.columns)
    return prepare(data, columns=spec.columns(), **{k: opts[k] for k in _DATA_KEYS})


def _check_by(data: pd.DataFrame, by: str | None, what: str = "by") -> None:
    if by is not None and by not in data.columns:
        raise ValueError(f"{what}={by!r} is not a column of the data; columns are {list(data.columns)}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}; expected an integer >= 1")
    return int(value)


def _groups(data: pd.DataFrame, by: str | None) -> list[tuple[object, pd.DataFrame]]:
    return [(None, data)] if by is None else list(data.groupby(by, sort=True))


# ---------------------------------------------------------------------------- bootstrap


def _resample(data: RTData, rng: np.random.Generator) -> RTData:
    """Trials drawn with replacement within each cell (stratified bootstrap; cell sizes kept)."""
    idx = np.concatenate([rng.choice(np.flatnonzero(data.cond == k), size=int(np.sum(data.cond == k)))
                          for k in range(len(data.levels))])
    return dataclasses.replace(data, rt=data.rt[idx], response=data.response[idx], cond=data.cond[idx],
                               rows=data.rows[idx])


def _bootstrap_one(data: RTData, spec: ModelSpec, n_boot: int, level: float, seed: int, opts: dict) -> pd.DataFrame:
    """Percentile interval (Efron & Tibshirani 1993, eq. 13.5) and bootstrap SE of every parameter."""
    solve = {"method": opts["method"], "n_starts": opts["n_starts"], "statistic": opts["statistic"]}
    full = fit(data, spec=spec, se=opts["se"], seed=seed, **solve)
    rng = np.random.default_rng(seed)
    draws = np.array([fit(_resample(data, rng), spec=spec, se=False, seed=seed + 1 + b, **solve).theta
                      for b in range(n_boot)])
    alpha = (1 - level) / 2
    table = full.table().drop(columns="at_bound")
    table["se_boot"] = draws.std(axis=0, ddof=1) if n_boot > 1 else np.nan
    table["ci_low"] = np.quantile(draws, alpha, axis=0)
    table["ci_high"] = np.quantile(draws, 1 - alpha, axis=0)
    table["n_boot"] = n_boot
    return table


def bootstrap(
    data: pd.DataFrame,
    spec: ModelSpec | str | dict | None = None,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    by: str | None = None,
    seed: int = 0,
    **fit_options,
) -> pd.DataFrame:
    """Stratified nonparametric bootstrap of :func:`~noisecraft.ddm.fit.fit` (Efron & Tibshirani 1993).

    Trials are resampled with replacement within each design cell; each of ``n_boot`` resamples is
    refitted with ``fit_options``. Returns one row per (``by`` group and) parameter: estimate (the fit
    to all the data), se (inverse Hessian), se_boot, ci_low, ci_high (percentile interval at
    ``level``), n_boot. BCa is not offered: its jackknife needs one more fit per trial.
    Deterministic given ``seed``.
    """
    n_boot = _positive_int(n_boot, "n_boot")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a confidence level in (0, 1), e.g. 0.95")
    opts = _options(fit_options, "bootstrap")
    spec = _spec(spec)
    _check_by(data, by)
    prepared = [(label, _prepare(g, spec, opts)) for label, g in _groups(data, by)]
    parts = []
    for label, d in prepared:
        table = _bootstrap_one(d, spec, n_boot, level, seed, opts)
        if by is not None:
            table.insert(0, by, label)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- split-half


@dataclass
class SplitHalf:
    """Split-half (or session) reliability: ``table`` per parameter, ``estimates`` per participant and half."""

    table: pd.DataFrame
    estimates: pd.DataFrame
    split: str


def _cell_columns(spec: ModelSpec, opts: dict) -> list[str]:
    cols = [opts["condition"], *spec.columns(), opts["stimulus"] if opts["coding"] == "stimulus" else None]
    return list(dict.fromkeys(c for c in cols if c))


def _halves(data: pd.DataFrame, keys: list[str], split: str, seed: int) -> np.ndarray:
    """Half (0/1) of each trial: alternating positions within each participant x cell, in trial
    order ("odd-even") or in a random order drawn from ``seed`` ("random")."""
    order = np.arange(len(data))
    if split == "random":
        order = np.random.default_rng(seed).permutation(len(data))
    shuffled = data.iloc[order]
    pos = shuffled.groupby(keys, sort=False).cumcount().to_numpy() % 2
    half = np.empty(len(data), dtype=int)
    half[order] = pos
    return half


def _spearman_brown(r: np.ndarray | float) -> np.ndarray | float:
    """Reliability of the whole test from the correlation of its two halves: 2r / (1 + r)."""
    return 2 * r / (1 + r)


def split_half(
    data: pd.DataFrame,
    spec: ModelSpec | str | dict | None = None,
    *,
    by: str = "subj_idx",
    split: str = "odd-even",
    session: str | None = None,
    seed: int = 0,
    **fit_options,
) -> SplitHalf:
    """Split-half reliability of each parameter across participants (column ``by``).

    ``split="odd-even"`` (default, the usual choice): within each participant and design cell, trials
    at odd and at even positions in file order form the halves, so both halves see every cell and
    any drift over the session is shared. ``split="random"``: the same alternation over a random
    order (``seed``). ``session=<column>`` with two levels fits each session instead (test-retest;
    no Spearman-Brown step). Table: parameter, n (participants), r (Pearson across participants
    between halves), reliability (Spearman-Brown 2r/(1+r), or r for sessions).
    """
    if split not in ("odd-even", "random"):
        raise ValueError(f"split={split!r}; expected 'odd-even' or 'random'")
    opts = _options(fit_options, "split_half")
    spec = _spec(spec)
    _check_by(data, by)
    _check_by(data, session, "session")
    if by is None:
        raise ValueError("split_half needs by=<participant column>: reliability is a correlation across participants")
    n_groups = data[by].nunique()
    if n_groups < 3:
        raise ValueError(f"by={by!r} has {n_groups} participant(s); split-half reliability needs at least 3")
    if session is not None:
        levels = sorted(data[session].dropna().unique())
        if len(levels) != 2:
            raise ValueError(f"session={session!r} has levels {levels}; expected exactly two sessions")
        half = (data[session] == levels[1]).to_numpy().astype(int)
        label = f"{session}: {levels[0]} vs {levels[1]}"
    else:
        half = _halves(data, [by, *_cell_columns(spec, opts)], split, seed)
        label = split
    parts = [data[half == h] for h in (0, 1)]
    for h, part in enumerate(parts):  # every check on both halves before the first fit
        for name, g in _groups(part, by):
            try:
                _prepare(g, spec, opts)
            except ValueError as err:
                raise ValueError(f"{by}={name} half {h + 1}: {err}") from None
    solve = {k: v for k, v in opts.items() if k != "se"}
    est = []
    for h, part in enumerate(parts):
        t = fit_participants(part, spec, by=by, se=False, seed=seed, **solve)
        est.append(t.assign(half=h + 1)[[by, "half", "parameter", "estimate", "n", "nll"]])
    estimates = pd.concat(est, ignore_index=True)
    wide = estimates.pivot_table(index=[by, "parameter"], columns="half", values="estimate").dropna()
    rows = []
    for p, g in wide.groupby("parameter", sort=False):
        x, y = g[1].to_numpy(), g[2].to_numpy()
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) >= 3 and x.std() > 0 and y.std() > 0 else np.nan
        rows.append({"parameter": p, "n": len(x), "r": r,
                     "reliability": r if session is not None else float(_spearman_brown(r))})
    order = list(dict.fromkeys(estimates["parameter"]))
    table = pd.DataFrame(rows).set_index("parameter").loc[order].reset_index()
    return SplitHalf(table, estimates, label)


# -------------------------------------------------------------------- starting values


@dataclass
class StartSensitivity:
    """Single-start fits from random starts (``runs``), their spread per parameter (``table``), and per
    fit (``fits``) the multi-start NLL, the best single-start NLL and the share of starts that fell short."""

    runs: pd.DataFrame
    table: pd.DataFrame
    fits: pd.DataFrame

    def summary(self) -> str:
        f = self.fits
        n = int(f["n_starts"].sum())
        worse = float((f["share_worse"] * f["n_starts"]).sum()) / n
        beaten = int((f["nll_best_single"] < f["nll_multistart"] - _WORSE_NLL).sum())
        return (f"{n} single starts over {len(f)} fit(s): {100 * worse:.1f}% ended more than {_WORSE_NLL} NLL "
                f"above the best found; a single start beat the multi-start fit by more than {_WORSE_NLL} "
                f"in {beaten} of {len(f)} fit(s)")


def _single_start(prob, x0: np.ndarray):
    """One L-BFGS-B run from x0 on the ML objective, with fit's bounds and tolerances."""
    bounds = list(zip(prob.design.lower, prob.design.upper))
    return minimize(prob.nll_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                    options={"maxiter": 1000, "ftol": 1e-11, "gtol": 1e-6})


def _starts_one(data: RTData, spec: ModelSpec, n_starts: int, seed: int, multi_starts: int):
    """Runs, per-parameter spread and fit summary for one data set."""
    prob = _setup(data, spec, "ml", {})
    multi = fit(data, spec=spec, se=False, seed=seed, n_starts=multi_starts)
    ez_only = fit(data, spec=spec, se=False, seed=seed, n_starts=1)
    lo, hi = prob.design.lower, prob.design.upper
    starts = np.random.default_rng(seed).uniform(lo, hi, size=(n_starts, lo.size))
    names = prob.design.names
    rows = []
    for i, x0 in enumerate(starts):
        x0 = _clip(prob, x0)
        res = _single_start(prob, x0)
        row = {"start": i, **{f"start_{n}": float(v) for n, v in zip(names, x0)}}
        row.update({n: float(v) for n, v in zip(names, res.x)})
        row["nll"] = float(res.fun)
        rows.append(row)
    runs = pd.DataFrame(rows)
    best = min(float(runs["nll"].min()), multi.nll)
    runs["gap"] = runs["nll"] - multi.nll
    runs["worse"] = runs["nll"] - best > _WORSE_NLL
    worse = runs[runs["worse"]]
    table = pd.DataFrame({
        "parameter": names,
        "multistart": multi.theta,
        "median": [runs[n].median() for n in names],
        "sd": [runs[n].std(ddof=1) if n_starts > 1 else np.nan for n in names],
        "min": [runs[n].min() for n in names],
        "max": [runs[n].max() for n in names],
        "max_abs_dev": [float(np.max(np.abs(runs[n] - t))) for n, t in zip(names, multi.theta)],
        "median_abs_dev_worse": [float(np.median(np.abs(worse[n] - t))) if len(worse) else 0.0
                                 for n, t in zip(names, multi.theta)],
    })
    fits = {"n_starts": n_starts, "nll_multistart": multi.nll, "nll_best_single": float(runs["nll"].min()),
            "share_worse": float(runs["worse"].mean()), "multistart_starts_run": len(multi.starts),
            "multistart_converged": multi.converged, "nll_ez_start": ez_only.nll,
            "a_multistart": multi.params.get("a", np.nan), "a_ez_start": ez_only.params.get("a", np.nan)}
    return runs, table, fits


def start_sensitivity(
    data: pd.DataFrame,
    spec: ModelSpec | str | dict | None = None,
    *,
    n_starts: int = 50,
    by: str | None = None,
    seed: int = 0,
    **fit_options,
) -> StartSensitivity:
    """Fit by ML from ``n_starts`` uniform random points in the parameter box, one local run each.

    ``runs``: one row per start (start and final value of every parameter, nll, gap to the
    multi-start NLL, worse = more than 0.01 above the best NLL found). ``table`` per parameter: the
    multi-start estimate, the median, sd, min and max over the single starts, the largest distance
    of a single-start estimate from the multi-start one, and the median distance among the worse
    starts. ``fits``: NLLs and the share of worse starts, and the fit from the EZ start alone
    (``n_starts=1``) beside the multi-start one. The multi-start fit is
    :func:`~noisecraft.ddm.fit.fit` with ``n_starts`` of ``fit_options`` (EZ, Sobol-best and default
    starts, stopping when two agree). With ``by``, one study per group.
    """
    n_starts = _positive_int(n_starts, "n_starts")
    opts = _options(fit_options, "start_sensitivity")
    if opts["method"] != "ml":
        raise ValueError(f"method={opts['method']!r}; start_sensitivity studies the ML fit, expected 'ml'")
    spec = _spec(spec)
    _check_by(data, by)
    prepared = [(label, _prepare(g, spec, opts)) for label, g in _groups(data, by)]
    parts = {"runs": [], "table": [], "fits": []}
    for label, d in prepared:
        runs, table, fits = _starts_one(d, spec, n_starts, seed, opts["n_starts"])
        fits = pd.DataFrame([fits])
        for key, df in (("runs", runs), ("table", table), ("fits", fits)):
            if by is not None:
                df.insert(0, by, label)
            parts[key].append(df)
    return StartSensitivity(*(pd.concat(parts[k], ignore_index=True) for k in ("runs", "table", "fits")))


# ------------------------------------------------------------------------------ report


def markdown(
    boot: pd.DataFrame | None = None,
    halves: SplitHalf | None = None,
    starts: StartSensitivity | None = None,
) -> str:
    """The results as markdown sections (tables formatted as in the compare report)."""
    from noisecraft.ddm.report import _md_table

    out = ["# DDM reliability report", ""]
    if boot is not None:
        out += ["## Bootstrap confidence intervals", "", _md_table(boot), ""]
    if halves is not None:
        out += [f"## Split-half reliability ({halves.split})", "", _md_table(halves.table), ""]
    if starts is not None:
        out += ["## Starting values", "", starts.summary(), "", _md_table(starts.fits), "",
                _md_table(starts.table), ""]
    return "\n".join(out)


def long_table(
    boot: pd.DataFrame | None = None,
    halves: SplitHalf | None = None,
    starts: StartSensitivity | None = None,
) -> pd.DataFrame:
    """All result tables stacked into one, a ``table`` column naming the source (for a CSV)."""
    parts = [("bootstrap", boot), ("split_half", halves.table if halves else None),
             ("start_fits", starts.fits if starts else None), ("start_spread", starts.table if starts else None)]
    return pd.concat([df.assign(table=name) for name, df in parts if df is not None], ignore_index=True)
