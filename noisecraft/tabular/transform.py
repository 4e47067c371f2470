"""Between a table and the model's space: normal scores for numbers, integer tokens for categories.

Numeric columns go through a quantile transform to standard normal scores, as in TabDDPM (Kotelnikov et
al. 2023, sec. 4: scikit-learn's QuantileTransformer), written here as two interpolations so that it is
stored as plain numbers in JSON. The inverse interpolates back between the observed quantiles, so every
generated value lies in the observed [min, max]; integer columns are rounded back to integers.

Missing values are learned, not dropped: a categorical column gets one more category for "missing"; a
numeric column with missing entries gets a two-category indicator token ("present", "missing"), diffused
with the other categories, and its value slot is filled with the median score 0 where missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict
from scipy.special import ndtr, ndtri
from torch import Tensor

from noisecraft.tabular.schema import ColumnSpec, TableSchema, is_missing


class QuantileNormal(BaseModel):
    """x -> Phi^{-1}(F_n(x)) with F_n the empirical CDF interpolated between `quantiles`, and its inverse."""

    model_config = ConfigDict(extra="forbid")

    quantiles: list[float]
    #: F_n is clipped to [clip, 1 - clip] so the extreme observations map to finite scores; `fit` sets it to
    #: half an observation's probability, 1 / (2 n) (n = 1000: +-3.3)
    clip: float = 1e-3

    @classmethod
    def fit(cls, values: np.ndarray, n_quantiles: int = 1000) -> QuantileNormal:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            raise ValueError("cannot fit a quantile transform on no observed values; expected at least one number")
        k = int(min(n_quantiles, values.size))
        return cls(quantiles=np.quantile(values, np.linspace(0.0, 1.0, max(k, 2))).tolist(),
                   clip=0.5 / values.size)

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(self.quantiles)
        return q, np.linspace(0.0, 1.0, q.size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normal scores of x (NaN stays NaN)."""
        q, p = self._grid()
        x = np.asarray(x, dtype=np.float64)
        # average the interpolation from below and from above, so a value repeated across several
        # quantiles (ties, integer columns) maps to the middle of its probability mass
        u = 0.5 * (np.interp(x, q, p) - np.interp(-x, -q[::-1], -p[::-1]))
        return ndtri(np.clip(u, self.clip, 1.0 - self.clip))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Values from normal scores; always inside [quantiles[0], quantiles[-1]] = observed [min, max]."""
        q, p = self._grid()
        return np.interp(ndtr(np.asarray(z, dtype=np.float64)), p, q)


@dataclass(frozen=True)
class TokenColumn:
    """One discrete column of the model: a categorical column, or the missingness of a numeric one."""

    name: str
    size: int  # number of categories, missing included
    source: str  # the table column it encodes
    role: str  # "categories" or "missing"


class TableCodec:
    """DataFrame <-> (x_num float (n, d_num), tokens long (n, d_tok)) for a schema and its transforms."""

    MISSING = "missing"

    def __init__(self, schema: TableSchema, transforms: dict[str, QuantileNormal]) -> None:
        self.schema = schema
        self.numeric = schema.of_kind("numeric")
        self.categorical = schema.of_kind("categorical")
        missing = [c for c in self.numeric if c.name not in transforms]
        if missing:
            raise ValueError(f"no quantile transform for numeric column(s) {[c.name for c in missing]}")
        self.transforms = transforms
        tokens = [TokenColumn(c.name, len(c.categories) + int(c.has_missing), c.name, "categories")
                  for c in self.categorical]
        tokens += [TokenColumn(f"{c.name}:missing", 2, c.name, self.MISSING) for c in self.numeric if c.has_missing]
        self.tokens = tokens

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: TableSchema, n_quantiles: int = 1000) -> TableCodec:
        transforms = {c.name: QuantileNormal.fit(_numbers(frame[c.name], c.name), n_quantiles)
                      for c in schema.of_kind("numeric")}
        return cls(schema, transforms)

    @property
    def num_dim(self) -> int:
        return len(self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        return [t.size for t in self.tokens]

    def token_index(self, column: str) -> int:
        """Position of a categorical column among the token columns."""
        for i, t in enumerate(self.tokens):
            if t.role == "categories" and t.source == column:
                return i
        raise KeyError(f"column {column!r} is not a categorical column of this model; "
                       f"categorical columns are {[c.name for c in self.categorical]}")

    def category_code(self, column: str, value: Any) -> int:
        """The token of `value` in a categorical column; missing values map to the missing category."""
        spec = self.schema.column(column)
        if is_missing(value):
            if not spec.has_missing:
                raise ValueError(f"column {column!r} was never missing in the training data; expected one of "
                                 f"{spec.categories}")
            return len(spec.categories)
        lookup = {_key(v): i for i, v in enumerate(spec.categories)}
        code = lookup.get(_key(value))
        if code is None:
            raise ValueError(f"column {column!r} has no category {value!r}; expected one of {spec.categories}")
        return code

    def encode_numeric(self, column: str, values: np.ndarray) -> np.ndarray:
        return self.transforms[column].forward(values)

    # -- table -> model ---------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame) -> tuple[Tensor, Tensor]:
        missing = [c for c in self.schema.names if c not in frame.columns]
        if missing:
            raise ValueError(f"the table lacks column(s) {missing} of the model's schema")
        n = len(frame)
        x_num = np.zeros((n, self.num_dim))
        for j, c in enumerate(self.numeric):
            z = self.transforms[c.name].forward(_numbers(frame[c.name], c.name))
            x_num[:, j] = np.nan_to_num(z, nan=0.0)
        tokens = np.zeros((n, len(self.tokens)), dtype=np.int64)
        for j, t in enumerate(self.tokens):
            col = frame[t.source]
            if t.role == self.MISSING:
                tokens[:, j] = col.isna().to_numpy().astype(np.int64)
            else:
                codes = {_key(v): i for i, v in enumerate(self.schema.column(t.source).categories)}
                n_cat = len(codes)
                tokens[:, j] = [n_cat if is_missing(v) else codes.get(_key(v), -1) for v in col.tolist()]
                bad = tokens[:, j] < 0
                if bad.any():
                    raise ValueError(f"column {t.source!r} holds value {col[bad].iloc[0]!r} that the schema does not "
                                     f"know; expected one of {self.schema.column(t.source).categories}")
        return torch.as_tensor(x_num, dtype=torch.float32), torch.as_tensor(tokens)

    # -- model -> table ---------------------------------------------------------------------------
    def decode(self, x_num: Tensor, tokens: Tensor) -> pd.DataFrame:
        x_num = x_num.detach().cpu().double().numpy()
        tokens = tokens.detach().cpu().numpy()
        n = tokens.shape[0] if tokens.ndim == 2 and tokens.shape[1] else x_num.shape[0]
        missing_of = {t.source: tokens[:, j] == 1 for j, t in enumerate(self.tokens) if t.role == self.MISSING}
        out: dict[str, pd.Series] = {}
        for j, c in enumerate(self.numeric):
            values = self.transforms[c.name].inverse(x_num[:, j])
            if c.value_type == "int":
                values = np.clip(np.round(values), c.min, c.max)
            mask = missing_of.get(c.name)
            out[c.name] = _typed(values, c, mask)
        for j, t in enumerate(self.tokens):
            if t.role != "categories":
                continue
            c = self.schema.column(t.source)
            cats = np.asarray(c.categories + [None], dtype=object)
            out[c.name] = _typed(cats[tokens[:, j]], c, tokens[:, j] == len(c.categories))
        for c in self.schema.of_kind("constant"):
            out[c.name] = _typed(np.full(n, c.categories[0], dtype=object), c, None)
        return pd.DataFrame({name: out[name] for name in self.schema.names}, index=pd.RangeIndex(n))


def _key(value: Any) -> tuple[str, Any]:
    """A lookup key that keeps True apart from 1 and '1' apart from 1, but matches 1 with 1.0."""
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return ("num", float(value))
    return ("str", str(value))


def _numbers(series: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()].iloc[0]
        raise ValueError(f"numeric column {name!r} holds {bad!r}; expected numbers") from None


def _typed(values: np.ndarray, spec: ColumnSpec, missing: np.ndarray | None) -> pd.Series:
    """A column with the dtype its values had in the training table (nullable when values are missing)."""
    has_missing = missing is not None and bool(np.any(missing))
    if spec.value_type == "float":
        arr = np.asarray(values, dtype=np.float64).copy()
        if has_missing:
            arr[missing] = np.nan
        return pd.Series(arr)
    if spec.value_type == "int":
        s = pd.Series(pd.array(np.where(has_missing and missing, 0, values).astype(np.float64).round().astype(np.int64),
                               dtype="Int64"))
        if has_missing:
            s[missing] = pd.NA
            return s
        return s.astype(np.int64)
    if spec.value_type == "bool":
        obj = np.asarray(values, dtype=object)
        if has_missing:
            return pd.Series([None if m else bool(v) for v, m in zip(obj, missing)], dtype=object)
        return pd.Series(obj.astype(bool))
    obj = np.asarray(values, dtype=object).copy()
    if has_missing:
        obj[missing] = None
    return pd.Series(obj, dtype=object)
