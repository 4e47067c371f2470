"""The schema of a table: each column's kind, categories, range, integer-ness and missingness.

Column kinds follow TabDDPM's split of a table into a Gaussian part and a discrete part (Kotelnikov et
al. 2023, sec. 3): ``numeric`` columns are diffused as real numbers, ``categorical`` columns (strings,
booleans, integers with few distinct values) as categories, and a ``constant`` column (one value, never
missing) is not modelled at all. Types are inferred from the data and can be overridden per column. The
schema is saved as JSON beside the model, so sampling never needs the training data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from noisecraft.io import is_parquet, read_csv, read_parquet

Kind = Literal["numeric", "categorical", "constant"]
KINDS: tuple[str, ...] = ("numeric", "categorical", "constant")
#: the value kind of a column as it leaves `sample`: what pandas dtype the output column gets
ValueType = Literal["float", "int", "bool", "str"]


class ColumnSpec(BaseModel):
    """One column: its kind, the type of its values, and what the model must reproduce."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Kind
    value_type: ValueType
    #: categorical: the observed categories (JSON values), in a fixed order; constant: the one value
    categories: list[Any] = Field(default_factory=list)
    #: numeric: the observed range, respected on output
    min: float | None = None
    max: float | None = None
    missing_rate: float = 0.0

    @property
    def has_missing(self) -> bool:
        return self.missing_rate > 0


class TableSchema(BaseModel):
    """The columns of a table in order, and the target column if one was named."""

    model_config = ConfigDict(extra="forbid")

    columns: list[ColumnSpec]
    target: str | None = None
    n_rows: int = 0

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"no column {name!r} in the schema; columns are {self.names}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def of_kind(self, kind: Kind) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind == kind]

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> TableSchema:
        return cls.model_validate(json.loads(text))


def _python(value: Any) -> Any:
    """A numpy scalar as the plain JSON value it stands for."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _value_type(series: pd.Series) -> ValueType:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        observed = series.dropna()
        if len(observed) and np.all(np.mod(observed.to_numpy(), 1.0) == 0):
            return "int"  # an integer column that pandas read as float because of missing values
        return "float"
    if series.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all() and series.notna().any():
        return "bool"  # object column of True/False with NaN
    return "str"


def infer_kind(series: pd.Series, max_categories: int = 10) -> Kind:
    """numeric for real numbers and many-valued integers; categorical for strings, booleans and integers
    with at most `max_categories` distinct values; constant for one value and no missing entries."""
    observed = series.dropna()
    distinct = observed.nunique()
    if distinct <= 1 and len(observed) == len(series):
        return "constant"
    value_type = _value_type(series)
    if value_type in ("str", "bool"):
        return "categorical"
    if value_type == "int" and distinct <= max_categories:
        return "categorical"
    if distinct <= 1:
        return "categorical"  # one value plus missing entries: the missingness is what varies
    return "numeric"


def lattice_columns(frame: pd.DataFrame, schema: TableSchema, max_levels: int, min_rows_per_level: float,
                    exclude: Any = ()) -> list[str]:
    """The numeric columns (the target and `exclude` aside) whose values sit on at most `max_levels` levels,
    each seen `min_rows_per_level` times on average: depths in steps of 0.1 %, years, counts. The model draws
    such a column as a category of its observed values (TabDDPM's discrete part, Kotelnikov et al. 2023,
    sec. 3): one softmax over the levels given the rest of the row, in place of a density learned through a
    quantile transform that must put its mass on the levels (docs/tabular.md, "The model")."""
    out = []
    for spec in schema.columns:
        if spec.kind != "numeric" or spec.name == schema.target or spec.name in exclude:
            continue
        observed = frame[spec.name].dropna()
        levels = observed.nunique()
        if 1 < levels <= max_levels and len(observed) >= min_rows_per_level * levels:
            out.append(spec.name)
    return out


def infer_schema(
    frame: pd.DataFrame,
    target: str | None = None,
    types: dict[str, str] | None = None,
    max_categories: int = 10,
) -> TableSchema:
    """The schema of `frame`; `types` overrides the inferred kind of named columns."""
    check_table(frame, target)
    types = dict(types or {})
    unknown = set(types) - set(frame.columns)
    if unknown:
        raise ValueError(f"type override for unknown column(s) {sorted(unknown)}; columns are {list(frame.columns)}")
    columns = []
    for name in frame.columns:
        series = frame[name]
        kind = types.get(name) or infer_kind(series, max_categories)
        if kind not in KINDS:
            raise ValueError(f"column {name!r}: kind must be one of {KINDS}, got {kind!r}")
        value_type = _value_type(series)
        observed = series.dropna()
        spec = ColumnSpec(name=str(name), kind=kind, value_type=value_type,
                          missing_rate=float(series.isna().mean()))
        if kind == "numeric":
            if value_type in ("str", "bool"):
                raise ValueError(f"column {name!r} holds {value_type} values, so it cannot be numeric; "
                                 "expected numbers (override it as 'categorical')")
            if observed.empty:
                raise ValueError(f"column {name!r} has no observed values; expected at least one number")
            spec.min, spec.max = float(observed.min()), float(observed.max())
        elif kind == "categorical":
            values = sorted({_python(v) for v in observed}, key=lambda v: (str(type(v)), v))
            if not values and not spec.has_missing:
                raise ValueError(f"column {name!r} has no values; expected at least one category")
            spec.categories = values
        else:
            if observed.nunique() > 1 or spec.has_missing:
                raise ValueError(f"column {name!r} cannot be constant: it has {observed.nunique()} distinct values "
                                 f"and missing rate {spec.missing_rate:.3g}; expected one value, never missing")
            spec.categories = [_python(observed.iloc[0])]
        columns.append(spec)
    return TableSchema(columns=columns, target=target, n_rows=len(frame))


def check_table(frame: pd.DataFrame, target: str | None = None) -> None:
    """Reject what no model can be fitted on, before any work: no rows, no columns, a missing target, an
    inf in a numeric column."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.shape[1] == 0:
        raise ValueError("the table has no columns; expected at least one")
    if frame.shape[0] == 0:
        raise ValueError(f"the table has no rows (columns {list(frame.columns)}); expected at least one row")
    if frame.columns.duplicated().any():
        dup = list(frame.columns[frame.columns.duplicated()])
        raise ValueError(f"the table has duplicate column names {dup}; expected unique names")
    if target is not None and target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the table; columns are {list(frame.columns)}")
    _check_no_inf(frame)


def _check_no_inf(frame: pd.DataFrame) -> None:
    """An inf in a numeric column has no place on a quantile transform and would come back as NaN: an error
    naming the column and the row (the frame's index label: the data row below the header for a CSV)."""
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_float_dtype(column):
            continue
        bad = np.isinf(column.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {name!r} holds {column.iloc[first]} in row {frame.index[first]} "
                             f"({int(bad.sum())} such cells); expected finite numbers: drop those rows or leave "
                             "the cells empty (missing)")


def read_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame from a CSV or Parquet path (or the frame itself), with errors that name the file and the problem
    (noisecraft.io)."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    if is_parquet(source):
        return read_parquet(source)
    return read_csv(source)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
