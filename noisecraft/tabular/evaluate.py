"""How good and how private a synthetic table is, each number beside the same number for real held-out rows.

For a real train/test split and a synthetic table fitted on the train part:

- utility, "train on synthetic, test on real" (TSTR; Esteban et al. 2017, used by TabDDPM, Kotelnikov et
  al. 2023, sec. 5): scikit-learn's HistGradientBoosting trained on the synthetic rows and scored on the
  real test rows (macro-F1 and accuracy, or R^2), beside the same model trained on the real train rows;
- fidelity: per-column Kolmogorov-Smirnov distance (numbers) and total-variation distance (categories, a
  missing value counting as a category), the mean absolute difference of the pairwise association matrix
  (Spearman for number-number, Cramer's V for category-category, the correlation ratio for
  number-category), and the detection ROC-AUC of a gradient-boosted classifier telling real from
  synthetic (0.5 is ideal), all against the train rows; the reference is the real test table measured the
  same way;
- privacy: distance to the closest train record (DCR) of each synthetic row, beside that of each real
  test row (a generator that memorises sits closer to the train rows than fresh real data does; Zhao et
  al. 2021, CTAB-GAN, sec. 4.3), and the share of exact copies of train rows, beside the test set's own;
- attacks (noisecraft.tabular.attacks): membership-inference ROC-AUCs of a distance attack, DOMIAS and,
  given a generator to refit, a shadow-model attack, beside the same attacks against fresh real rows; and
  attribute inference of a chosen sensitive column on members beside non-members;
- the privacy record of a differentially private model (its epsilon and delta), when one is given.

`evaluate_files` is what `noisecraft tabular eval` runs: the real CSV split as `fit_table` split it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from noisecraft.tabular.data import split_table
from noisecraft.tabular.schema import TableSchema, check_table, infer_schema, read_table


@dataclass
class Metric:
    """One row of the report: the synthetic table's value and the real test table's reference value."""

    group: str
    name: str
    synthetic: float
    reference: float
    ideal: str  # what "good" means: "higher", "lower", "0.5", ">= reference"


@dataclass
class EvalReport:
    metrics: list[Metric]
    per_column: pd.DataFrame = field(repr=False)
    target: str | None = None
    task: str | None = None
    #: the model's differential-privacy record (PrivacyRecord as a dict), None when not fitted with DP
    privacy: dict | None = None

    def value(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"no metric {name!r}; metrics are {[m.name for m in self.metrics]}")

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(m) for m in self.metrics])

    def format_table(self) -> str:
        lines = [f"{'group':<9} {'metric':<34} {'synthetic':>10} {'real test':>10}  ideal",
                 "-" * 76]
        for m in self.metrics:
            lines.append(f"{m.group:<9} {m.name:<34} {m.synthetic:>10.4f} {m.reference:>10.4f}  {m.ideal}")
        if self.privacy is not None:
            p = self.privacy
            sources = "/".join(sorted(set(p["preprocessing"].values()))) or "none"
            lines.append(f"differential privacy: epsilon {p['epsilon']:.4g} spent (target {p['target_epsilon']:.4g}), "
                         f"delta {p['delta']:.3g}, {p['accountant']} accountant; preprocessing {sources}")
        else:
            lines.append("differential privacy: none (the model was not fitted with --dp-epsilon)")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"target": self.target, "task": self.task, "metrics": [asdict(m) for m in self.metrics],
                           "per_column": self.per_column.to_dict(orient="records"), "privacy": self.privacy},
                          indent=1, default=float)


# -- encodings -----------------------------------------------------------------------------------
def column_kinds(schema: TableSchema) -> tuple[list[str], list[str]]:
    numeric = [c.name for c in schema.columns if c.kind == "numeric"]
    categorical = [c.name for c in schema.columns if c.kind == "categorical"]
    return numeric, categorical


def category_labels(series: pd.Series) -> pd.Series:
    """Category labels as strings, a missing value as its own label."""
    return series.map(lambda v: "<missing>" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


#: the most category labels a column keeps in the evaluation's features; rarer labels share OTHER.
#: HistGradientBoosting takes at most 255 categories a feature, and one-hot distances stay bounded in width.
MAX_LEVELS = 255
OTHER = "<other>"


def feature_levels(frames: list[pd.DataFrame], column: str) -> list[str]:
    """The column's labels over `frames`, sorted; past MAX_LEVELS, the MAX_LEVELS - 1 most frequent and OTHER."""
    counts = pd.concat([category_labels(f[column]) for f in frames]).value_counts()
    if len(counts) <= MAX_LEVELS:
        return sorted(counts.index)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties broken by label: deterministic
    return sorted(label for label, _ in ranked[:MAX_LEVELS - 1]) + [OTHER]


def feature_labels(frame: pd.DataFrame, column: str, levels: list[str]) -> pd.Series:
    """The column's labels, those outside `levels` as OTHER when `levels` holds it."""
    labels = category_labels(frame[column])
    return labels.where(labels.isin(levels), OTHER) if levels and levels[-1] == OTHER else labels


def ordinal_features(frames: list[pd.DataFrame], numeric: list[str], categorical: list[str]) -> list[np.ndarray]:
    """Numbers as floats (NaN kept, HistGradientBoosting handles it) then categories as shared integer codes
    (at most MAX_LEVELS a column)."""
    levels = {c: feature_levels(frames, c) for c in categorical}
    out = []
    for f in frames:
        cols = [pd.to_numeric(f[c], errors="coerce").to_numpy(dtype=float) for c in numeric]
        cols += [pd.Categorical(feature_labels(f, c, levels[c]), categories=levels[c]).codes.astype(float)
                 for c in categorical]
        out.append(np.stack(cols, 1) if cols else np.zeros((len(f), 0)))
    return out


def distance_features(frames: list[pd.DataFrame], reference: pd.DataFrame, numeric: list[str],
                      categorical: list[str]) -> list[np.ndarray]:
    """Rows for nearest-neighbour distances: numbers scaled to [0, 1] by the reference's range (a missing number
    is 0 with a missing flag of 1), categories one-hot (the reference's MAX_LEVELS - 1 most frequent labels and
    OTHER when it has more); so one column differs by at most 1 (Gower-like)."""
    # a missing flag for a numeric column where any of the tables misses it, so all get the same features
    flagged = {c for c in numeric if any(pd.to_numeric(f[c], errors="coerce").isna().any() for f in [reference, *frames])}
    out = []
    for f in frames:
        cols = []
        for c in numeric:
            ref = pd.to_numeric(reference[c], errors="coerce")
            lo, hi = float(ref.min()), float(ref.max())
            x = (pd.to_numeric(f[c], errors="coerce").to_numpy(dtype=float) - lo) / (hi - lo if hi > lo else 1.0)
            if c in flagged:
                cols.append(np.isnan(x).astype(float))
            cols.append(np.nan_to_num(x, nan=0.0))
        for c in categorical:
            levels = feature_levels([reference], c)
            labels = feature_labels(f, c, levels).to_numpy()
            cols.extend((labels == level).astype(float) for level in levels)
        out.append(np.stack(cols, 1) if cols else np.zeros((len(f), 0)))
    return out


# -- utility -------------------------------------------------------------------------------------
def _fit_score(train: pd.DataFrame, test: pd.DataFrame, target: str, numeric: list[str], categorical: list[str],
               classification: bool, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    feats_num = [c for c in numeric if c != target]
    feats_cat = [c for c in categorical if c != target]
    x_train, x_test = ordinal_features([train, test], feats_num, feats_cat)
    is_cat = np.array([False] * len(feats_num) + [True] * len(feats_cat), dtype=bool)
    if classification:
        y_train, y_test = category_labels(train[target]).to_numpy(), category_labels(test[target]).to_numpy()
        if len(set(y_train)) < 2:  # a synthetic table with one class: the model can only predict it
            pred = np.full(len(y_test), y_train[0] if len(y_train) else "")
        else:
            model = HistGradientBoostingClassifier(categorical_features=is_cat if is_cat.any() else None,
                                                   random_state=seed)
            pred = model.fit(x_train, y_train).predict(x_test)
        return {"macro_f1": float(f1_score(y_test, pred, average="macro")),
                "accuracy": float(accuracy_score(y_test, pred))}
    y_train = pd.to_numeric(train[target], errors="coerce").to_numpy(dtype=float)
    y_test = pd.to_numeric(test[target], errors="coerce").to_numpy(dtype=float)
    keep_train, keep_test = ~np.isnan(y_train), ~np.isnan(y_test)
    model = HistGradientBoostingRegressor(categorical_features=is_cat if is_cat.any() else None, random_state=seed)
    model.fit(x_train[keep_train], y_train[keep_train])
    return {"r2": float(r2_score(y_test[keep_test], model.predict(x_test[keep_test])))}


# -- fidelity ------------------------------------------------------------------------------------
def marginal_distances(real: pd.DataFrame, other: pd.DataFrame, numeric: list[str],
                       categorical: list[str]) -> dict[str, float]:
    """KS distance per numeric column (observed values), total variation per categorical column."""
    out = {}
    for c in numeric:
        a = pd.to_numeric(real[c], errors="coerce").dropna()
        b = pd.to_numeric(other[c], errors="coerce").dropna()
        out[c] = float(ks_2samp(a, b).statistic) if len(a) and len(b) else 1.0
    for c in categorical:
        p = category_labels(real[c]).value_counts(normalize=True)
        q = category_labels(other[c]).value_counts(normalize=True)
        out[c] = float(0.5 * p.subtract(q, fill_value=0.0).abs().sum())
    return out


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    table = pd.crosstab(a, b).to_numpy(dtype=float)
    n = table.sum()
    if n == 0 or min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1.0)).sum())
    return math.sqrt(chi2 / (n * (min(table.shape) - 1)))


def _correlation_ratio(categories: pd.Series, values: pd.Series) -> float:
    keep = values.notna()
    values, categories = values[keep].astype(float), categories[keep]
    if len(values) < 2 or values.var() == 0:
        return 0.0
    means = values.groupby(categories).transform("mean")
    return math.sqrt(float(((means - values.mean()) ** 2).sum() / ((values - values.mean()) ** 2).sum()))


def association_matrix(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Pairwise association in [0, 1] (Spearman |rho|, Cramer's V, correlation ratio), columns in given order."""
    names = numeric + categorical
    labels = {c: category_labels(frame[c]) for c in categorical}
    values = {c: pd.to_numeric(frame[c], errors="coerce") for c in numeric}
    mat = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            if a in values and b in values:
                constant = values[a].nunique() < 2 or values[b].nunique() < 2  # rho undefined: no association
                rho = 0.0 if constant else values[a].corr(values[b], method="spearman")
                v = 0.0 if rho is None or np.isnan(rho) else abs(float(rho))
            elif a in labels and b in labels:
                v = _cramers_v(labels[a], labels[b])
            else:
                cat, num = (labels[a], values[b]) if a in labels else (labels[b], values[a])
                v = _correlation_ratio(cat, num)
            mat[i, j] = mat[j, i] = v
    return pd.DataFrame(mat, index=names, columns=names)


def association_difference(real: pd.DataFrame, other: pd.DataFrame, numeric: list[str],
                           categorical: list[str]) -> float:
    """Mean |A_other - A_real| over the pairs of distinct columns."""
    k = len(numeric) + len(categorical)
    if k < 2:
        return 0.0
    diff = (association_matrix(real, numeric, categorical) - association_matrix(other, numeric, categorical)).abs()
    return float(diff.to_numpy()[np.triu_indices(k, 1)].mean())


def detection_auc(real: pd.DataFrame, other: pd.DataFrame, numeric: list[str], categorical: list[str],
                  seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC-AUC of a gradient-boosted classifier telling `real` rows from `other` rows, on equal
    numbers of each (the larger table subsampled); 0.5 means indistinguishable."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(real), len(other))
    rng = np.random.default_rng(seed)
    a = real.iloc[rng.choice(len(real), n, replace=False)]
    b = other.iloc[rng.choice(len(other), n, replace=False)]
    x_a, x_b = ordinal_features([a, b], numeric, categorical)
    x = np.concatenate([x_a, x_b])
    y = np.r_[np.zeros(n), np.ones(n)]
    is_cat = np.array([False] * len(numeric) + [True] * len(categorical), dtype=bool)
    model = HistGradientBoostingClassifier(categorical_features=is_cat if is_cat.any() else None,
                                           max_iter=100, random_state=seed)
    cv = StratifiedKFold(n_splits=min(folds, n), shuffle=True, random_state=seed)
    return float(cross_val_score(model, x, y, cv=cv, scoring="roc_auc").mean())


# -- privacy -------------------------------------------------------------------------------------
def closest_distances(train: pd.DataFrame, other: pd.DataFrame, numeric: list[str],
                      categorical: list[str]) -> np.ndarray:
    """Euclidean distance from each row of `other` to its closest row of `train` (see `distance_features`)."""
    from sklearn.neighbors import NearestNeighbors

    x_train, x_other = distance_features([train, other], train, numeric, categorical)
    nn = NearestNeighbors(n_neighbors=1).fit(x_train)
    return nn.kneighbors(x_other)[0][:, 0]


def row_keys(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.Series:
    """One string per row of its exact values (numbers as floats, a missing value as a label), for exact matches."""
    parts = [pd.to_numeric(frame[c], errors="coerce").astype(float).map(repr) for c in numeric]
    parts += [category_labels(frame[c]) for c in categorical]
    if not parts:
        return pd.Series([""] * len(frame), index=frame.index)
    return pd.concat(parts, axis=1).agg("\x1f".join, axis=1)


def exact_copy_rate(train: pd.DataFrame, other: pd.DataFrame, numeric: list[str], categorical: list[str]) -> float:
    """Share of `other`'s rows equal in every column to some row of `train`."""
    seen = set(row_keys(train, numeric, categorical))
    return float(row_keys(other, numeric, categorical).isin(seen).mean())


# -- all of it -----------------------------------------------------------------------------------
def evaluate(train: pd.DataFrame, test: pd.DataFrame, synthetic: pd.DataFrame, target: str | None = None,
             schema: TableSchema | None = None, seed: int = 0, attacks: bool = True, sensitive: str | None = None,
             fit_sample: Callable[[pd.DataFrame, int], pd.DataFrame] | None = None,
             privacy: dict | None = None) -> EvalReport:
    """Utility, fidelity, privacy and attacks of `synthetic` (fitted on `train`), each beside a reference.

    `attacks` runs the membership attacks (the shadow attack only with `fit_sample`, the generator to refit)
    when `test` has at least 30 rows; `sensitive` names the column of the attribute-inference attack;
    `privacy` is the model's DP record, reported as is."""
    schema = schema or infer_schema(train, target)
    missing = [c for c in schema.names if c not in synthetic.columns or c not in test.columns]
    if missing:
        raise ValueError(f"column(s) {missing} of the real table are missing from the synthetic or test table")
    if target is not None and target not in schema.names:
        raise ValueError(f"target column {target!r} is not in the table; columns are {schema.names}")
    numeric, categorical = column_kinds(schema)
    metrics: list[Metric] = []
    task = None
    if target is not None:
        classification = schema.column(target).kind != "numeric"
        task = "classification" if classification else "regression"
        synth_scores = _fit_score(synthetic, test, target, numeric, categorical, classification, seed)
        real_scores = _fit_score(train, test, target, numeric, categorical, classification, seed)
        for key, value in synth_scores.items():
            metrics.append(Metric("utility", f"{key} (train-on-synthetic)", value, real_scores[key], ">= 0.95 x reference"))

    dist_synth = marginal_distances(train, synthetic, numeric, categorical)
    dist_test = marginal_distances(train, test, numeric, categorical)
    per_column = pd.DataFrame({"column": list(dist_synth), "kind": ["numeric"] * len(numeric) + ["categorical"] * len(categorical),
                               "metric": ["KS"] * len(numeric) + ["TV"] * len(categorical),
                               "synthetic": list(dist_synth.values()), "real_test": [dist_test[c] for c in dist_synth]})
    if numeric:
        metrics.append(Metric("fidelity", "mean KS (numeric)", float(np.mean([dist_synth[c] for c in numeric])),
                              float(np.mean([dist_test[c] for c in numeric])), "lower"))
    if categorical:
        metrics.append(Metric("fidelity", "mean TV (categorical)", float(np.mean([dist_synth[c] for c in categorical])),
                              float(np.mean([dist_test[c] for c in categorical])), "lower"))
    if len(numeric) + len(categorical) >= 2:
        metrics.append(Metric("fidelity", "association difference", association_difference(train, synthetic, numeric, categorical),
                              association_difference(train, test, numeric, categorical), "lower"))
    if numeric or categorical:
        metrics.append(Metric("fidelity", "detection ROC-AUC", detection_auc(train, synthetic, numeric, categorical, seed),
                              detection_auc(train, test, numeric, categorical, seed), "0.5"))
        dcr_synth = closest_distances(train, synthetic, numeric, categorical)
        dcr_test = closest_distances(train, test, numeric, categorical)
        metrics.append(Metric("privacy", "median DCR to train", float(np.median(dcr_synth)), float(np.median(dcr_test)),
                              ">= reference"))
        metrics.append(Metric("privacy", "5th-percentile DCR to train", float(np.quantile(dcr_synth, 0.05)),
                              float(np.quantile(dcr_test, 0.05)), ">= reference"))
        metrics.append(Metric("privacy", "exact-copy rate", exact_copy_rate(train, synthetic, numeric, categorical),
                              exact_copy_rate(train, test, numeric, categorical), "<= reference"))
    if sensitive is not None and sensitive not in schema.names:
        raise ValueError(f"sensitive column {sensitive!r} is not in the table; columns are {schema.names}")
    if (attacks or sensitive) and (numeric or categorical) and len(test) >= 30:
        from noisecraft.tabular.attacks import attribute_attack, membership_attacks

        if attacks:
            for r in membership_attacks(train, test, synthetic, numeric, categorical, fit_sample, seed=seed):
                metrics.append(Metric("attack", r.name, r.synthetic, r.reference, "0.5 (reference: fresh real rows)"))
        if sensitive is not None:
            r = attribute_attack(train, test, synthetic, sensitive, numeric, categorical, seed=seed)
            metrics.append(Metric("attack", r.name, r.synthetic, r.reference, "<= reference (non-members)"))
    return EvalReport(metrics, per_column, target, task, privacy)


@dataclass
class TableEvaluation:
    """What `evaluate_files` read and measured: the real train and test rows, the synthetic rows, the
    train part's schema and the report."""

    train: pd.DataFrame
    test: pd.DataFrame
    synthetic: pd.DataFrame
    schema: TableSchema
    report: EvalReport


def evaluate_files(real: str | Path | pd.DataFrame, synthetic: str | Path | pd.DataFrame, target: str | None = None,
                   test: str | Path | pd.DataFrame | None = None, test_size: float = 0.2, drop: Sequence[str] = (),
                   seed: int = 0, attacks: bool = True, sensitive: str | None = None,
                   fit_sample: Callable[[pd.DataFrame, int], pd.DataFrame] | None = None,
                   privacy: dict | None = None) -> TableEvaluation:
    """Evaluate a synthetic table against the real one it was fitted on, as `noisecraft tabular eval` does.

    The real table is split into train and test rows as `fit_table` split it (`test_size`, the fixed seed
    of `split_table`), or used whole as the train part when a separate `test` table is given. The `drop`
    columns are left out of every table where present. CSV paths or DataFrames. `attacks`, `sensitive`,
    `fit_sample` and `privacy` are `evaluate`'s.
    """
    drop = [drop] if isinstance(drop, str) else list(drop)
    frame = read_table(real).drop(columns=drop, errors="ignore")
    synth = read_table(synthetic).drop(columns=drop, errors="ignore")
    check_table(frame, target)
    check_table(synth, target)
    if test is not None:
        train, test_frame = frame, read_table(test).drop(columns=drop, errors="ignore")
    else:
        train, test_frame = split_table(frame, target, test_size)
    schema = infer_schema(train, target)
    report = evaluate(train, test_frame, synth, target, schema, seed, attacks, sensitive, fit_sample, privacy)
    return TableEvaluation(train, test_frame, synth, schema, report)
