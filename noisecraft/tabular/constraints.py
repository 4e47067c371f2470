"""Exact constraints between columns, held in every sampled row by the model's parameterization, not by
rejection: fixed combinations (and so functional dependencies) and inequalities.

- **Fixed combinations.** A group of categorical columns is modelled as one categorical column whose
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

`detect_constraints` finds them in a table: functional dependencies between categorical columns (each
determinant value seen on average at least `min_support` times, so chance dependencies of rare values do not
count) grouped by union, and inequalities between numeric columns with no missing values that hold in every
row while their ranges overlap (otherwise the ranges already imply them). Each column is in at most one
inequality. Declared constraints are checked against the data before any work.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from noisecraft.tabular.schema import TableSchema, _python, is_missing
from noisecraft.tabular.transform import _key, _typed

#: a group with more observed combinations than this is not merged (its token would be too wide to learn)
MAX_COMBINATIONS = 500


class Constraints(BaseModel):
    """Declared or detected constraints, and what fitting learned about them (the allowed combinations)."""

    model_config = ConfigDict(extra="forbid")

    #: groups of categorical columns held to their observed combinations
    combinations: list[list[str]] = Field(default_factory=list)
    #: (low, high) pairs of numeric columns: low <= high in every row
    inequalities: list[tuple[str, str]] = Field(default_factory=list)
    #: functional dependencies (determinant, dependent) the groups hold, for the report
    dependencies: list[tuple[str, str]] = Field(default_factory=list)

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
        out += [f"combinations of ({', '.join(g)})" for g in self.combinations]
        out += [f"{lo} <= {hi}" for lo, hi in self.inequalities]
        return out


def group_name(group: list[str]) -> str:
    return " & ".join(group)


def _labels(series: pd.Series) -> pd.Series:
    return series.map(lambda v: json.dumps(None if is_missing(v) else _python(v), default=str))


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
    groups = _union(deps)
    groups = [g for g in groups if _n_combinations(frame, g) <= MAX_COMBINATIONS]
    kept = {c for g in groups for c in g}
    deps = [(a, b) for a, b in deps if a in kept and b in kept]
    return Constraints(combinations=groups, inequalities=_inequalities(frame, schema), dependencies=deps)


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


def _inequalities(frame: pd.DataFrame, schema: TableSchema) -> list[tuple[str, str]]:
    nums = [c.name for c in schema.columns if c.kind == "numeric" and not c.has_missing]
    used: set[str] = set()
    out = []
    for a in nums:
        for b in nums:
            if a == b or a in used or b in used:
                continue
            x, y = frame[a].to_numpy(float), frame[b].to_numpy(float)
            if np.all(x <= y) and x.max() > y.min():
                out.append((a, b))
                used.update((a, b))
    return out


def check_constraints(constraints: Constraints, schema: TableSchema, frame: pd.DataFrame) -> None:
    """Declared constraints must name columns of the right kinds, not overlap, and hold in the data."""
    seen: set[str] = set()
    for group in constraints.combinations:
        for c in group:
            if c not in schema.names or schema.column(c).kind != "categorical":
                raise ValueError(f"constraint combinations of {group}: {c!r} is not a categorical column; "
                                 f"categorical columns are {[s.name for s in schema.of_kind('categorical')]}")
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
    parts = [frame[c].map(lambda v: None if is_missing(v) else _python(v)) for c in group]
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
    deps = [d for d in detected.dependencies if set(d) <= grouped]
    return Constraints(combinations=declared.combinations + groups, inequalities=declared.inequalities + ineqs,
                       dependencies=declared.dependencies + deps)


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
