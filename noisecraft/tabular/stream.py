"""Tables larger than memory: a CSV or Parquet file read in chunks, summarised, and encoded to disk.

`TabularDiffusion.fit` and `fit_table` read a file of at most `MAX_MEMORY_ROWS` rows whole, as they read a
DataFrame. A longer file is never held whole (`TabularDiffusion._prepare_stream` in noisecraft.tabular.model):

1. one pass keeps a uniform sample of `MAX_MEMORY_ROWS` rows: the rows with the smallest seeded random keys
   (bottom-k sampling, Cohen & Kaplan 2007). The schema is inferred, the constraints are proposed and
   the quantile transforms are fitted on it;
2. a second pass (`summarise`) completes the schema over every row (categories, missing rates, ranges,
   value types) and keeps only the proposed constraints that hold in every row;
3. a third pass (`encode_to_disk`) encodes each chunk into memory-mapped arrays, from which training
   draws its batches.

Memory is bounded by the sample and one chunk, whatever the table's length (plus the mapped pages of the
encoded rows, which the system can drop).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

import noisecraft.tabular.data as table_data
from noisecraft.io import csv_errors, is_parquet, parquet_file
from noisecraft.tabular.constraints import (
    MAX_COMBINATIONS,
    MIN_SHARE,
    Constraints,
    _edges,
    _union,
    combination_labels,
    determinant,
    group_name,
    modal_share,
    to_model_frame,
)
from noisecraft.tabular.data import row_split
from noisecraft.tabular.schema import ColumnSpec, TableSchema, _python, check_table
from noisecraft.tabular.transform import TableCodec, _key

#: rows read at a time
CHUNK_ROWS = 50_000

def count_rows(path: str | Path) -> int:
    """Rows in a CSV (one pass over the first column) or Parquet file (its footer)."""
    path = _existing(path)
    if is_parquet(path):
        return int(parquet_file(path).metadata.num_rows)
    return sum(len(chunk) for chunk in _csv_chunks(path, CHUNK_ROWS, usecols=[0]))


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {'Parquet' if is_parquet(path) else 'CSV'} file: {str(path)!r}")
    return path


def _csv_chunks(path: Path, chunk_rows: int, usecols: list[int] | None = None) -> Iterator[pd.DataFrame]:
    with csv_errors(path):
        yield from pd.read_csv(path, chunksize=chunk_rows, usecols=usecols)


def read_chunks(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file's rows, `chunk_rows` at a time, each chunk indexed by its rows' positions in the file."""
    path = _existing(path)
    raw = (b.to_pandas() for b in parquet_file(path).iter_batches(chunk_rows)) if is_parquet(path) \
        else _csv_chunks(path, chunk_rows)
    start = 0
    for chunk in raw:
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        start += len(chunk)
        yield chunk


def as_source(data: Any) -> TableSource | None:
    """The file to stream, or None when the table is read whole: a DataFrame, or a file of at most MAX_MEMORY_ROWS
    rows."""
    if isinstance(data, TableSource):
        return data
    if isinstance(data, pd.DataFrame):
        return None
    return TableSource(Path(data)) if count_rows(data) > table_data.MAX_MEMORY_ROWS else None


@dataclass
class TableSource:
    """A table file as chunks of rows, without the `drop` columns; `part` keeps the train or the test rows of
    the row-by-row split (`split_table` for tables longer than MAX_MEMORY_ROWS), "all" every row."""

    path: Path
    drop: Sequence[str] = ()
    part: Literal["all", "train", "test"] = "all"
    test_size: float = 0.2
    seed: int = 0
    chunk_rows: int | None = None  # None: CHUNK_ROWS
    #: the most rows of the file held in one DataFrame so far (the sample included); for tests of the bound
    peak_rows: int = field(default=0, init=False)
    #: samples drawn, by (k, seed, target): `fit_table` returns the one the fit drew without a second pass
    _samples: dict = field(default_factory=dict, init=False, repr=False)

    def chunks(self) -> Iterator[pd.DataFrame]:
        rng = np.random.default_rng(self.seed)
        for i, chunk in enumerate(read_chunks(self.path, self.chunk_rows or CHUNK_ROWS)):
            if i == 0:
                unknown = [c for c in self.drop if c not in chunk.columns]
                if unknown:
                    raise ValueError(f"`drop` names column(s) {unknown} that are not in {str(self.path)!r}; "
                                     f"columns are {list(chunk.columns)}")
            chunk = chunk.drop(columns=list(self.drop))
            if self.part != "all":
                test = row_split(rng, len(chunk), self.test_size)
                chunk = chunk[test if self.part == "test" else ~test]
            if len(chunk):
                yield chunk

    def sample(self, k: int, seed: int, target: str | None = None) -> tuple[pd.DataFrame, int]:
        """(a uniform sample of k rows in file order, the number of rows): bottom-k of seeded uniform keys."""
        if (k, seed, target) not in self._samples:
            self._samples[(k, seed, target)] = self._draw_sample(k, seed, target)
        return self._samples[(k, seed, target)]

    def _draw_sample(self, k: int, seed: int, target: str | None) -> tuple[pd.DataFrame, int]:
        rng = np.random.default_rng([seed, 0x5A])
        kept: pd.DataFrame | None = None
        keys = np.zeros(0)
        n = 0
        for chunk in self.chunks():
            check_table(chunk, target)
            n += len(chunk)
            both = chunk if kept is None else pd.concat([kept, chunk])
            keys = np.concatenate([keys, rng.random(len(chunk))])
            self.peak_rows = max(self.peak_rows, len(both))
            if len(both) > k:
                order = np.argpartition(keys, k)[:k]
                both, keys = both.iloc[order], keys[order]
            kept = both
        if kept is None:
            raise ValueError(f"{str(self.path)!r} has no rows; expected at least one")
        return kept.sort_index(), n


# -- pass 2: the whole table's statistics ------------------------------------------------------------
@dataclass
class _Column:
    missing: int = 0
    low: float = np.inf
    high: float = -np.inf
    fractional: bool = False
    #: the values seen (a numeric column's only while it is a candidate on levels; None once past the cap)
    values: dict[tuple[str, Any], Any] | None = field(default_factory=dict)


@dataclass
class Summary:
    """What a pass over every row found: per column, per proposed inequality and per proposed group."""

    n: int = 0
    columns: dict[str, _Column] = field(default_factory=dict)
    #: per proposed inequality (lo, hi): (the smallest and largest gap hi - lo); a negative low: broken
    gaps: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: per proposed group: the combinations seen (JSON labels) and their row counts, None once past
    #: MAX_COMBINATIONS
    combos: dict[str, dict[str, int] | None] = field(default_factory=dict)


def summarise(source: TableSource, schema: TableSchema, proposed: Constraints, levels: dict[str, int] | None = None
              ) -> Summary:
    """One pass over every row of `source`: exact category lists, missing counts, ranges, the gaps of the
    proposed inequalities and the combinations of the proposed groups; the values of the numeric columns in
    `levels` (name: at most how many) while they stay under their cap."""
    levels = levels or {}
    out = Summary(columns={c.name: _Column() for c in schema.columns},
                  gaps={pair: [np.inf, -np.inf] for pair in proposed.inequalities},
                  combos={json.dumps(g): {} for g in proposed.combinations})
    for chunk in source.chunks():
        check_table(chunk, schema.target)
        missing = [c for c in schema.names if c not in chunk.columns]
        if missing:
            raise ValueError(f"{str(source.path)!r}: rows from {chunk.index[0]} lack column(s) {missing}")
        out.n += len(chunk)
        for spec in schema.columns:
            _update_column(out.columns[spec.name], spec, chunk[spec.name], levels.get(spec.name, 0))
        for (lo, hi), span in out.gaps.items():
            gap = pd.to_numeric(chunk[hi]).to_numpy(float) - pd.to_numeric(chunk[lo]).to_numpy(float)
            span[0], span[1] = min(span[0], float(np.nanmin(gap))), max(span[1], float(np.nanmax(gap)))
        for name, seen in out.combos.items():
            if seen is not None:
                for label, count in combination_labels(chunk, json.loads(name)).value_counts().items():
                    seen[label] = seen.get(label, 0) + int(count)
                if len(seen) > MAX_COMBINATIONS:
                    out.combos[name] = None
    return out


def _update_column(col: _Column, spec: ColumnSpec, series: pd.Series, max_levels: int = 0) -> None:
    observed = series.dropna()
    col.missing += len(series) - len(observed)
    if spec.kind == "numeric":
        values = pd.to_numeric(observed).to_numpy(float)
        if values.size:
            col.low, col.high = min(col.low, float(values.min())), max(col.high, float(values.max()))
            col.fractional |= bool(np.any(np.mod(values, 1.0) != 0))
        if not max_levels or col.values is None:
            return
        _collect(col.values, observed)
        if len(col.values) > max_levels:
            col.values = None
    else:
        _collect(col.values, observed)


def _collect(values: dict[tuple[str, Any], Any], observed: pd.Series) -> None:
    """Add the distinct values of `observed` to `values`, keyed so that 1 and 1.0 meet and True and 1 do not."""
    for v in observed.unique():
        values.setdefault(_key(v), _python(v))


def holding(proposed: Constraints, declared: Constraints, summary: Summary, schema: TableSchema) -> Constraints:
    """The proposed constraints that hold in every row; a declared one that does not is an error. A dependency
    of a numeric column (noisecraft.tabular.constraints._numeric_dependencies) is exact when it holds in every
    row, approximate when in at least MIN_SHARE of them, as measured over every row."""
    ineqs = []
    for pair in proposed.inequalities:
        if summary.gaps[pair][0] >= 0:
            ineqs.append(pair)
        elif pair in declared.inequalities:
            raise ValueError(f"constraint {pair[0]} <= {pair[1]} does not hold in the data: the smallest "
                             f"{pair[1]} - {pair[0]} is {summary.gaps[pair][0]:g}")
    for group in declared.combinations:
        if _combinations(summary, proposed, group) is None:
            raise ValueError(f"constraint combinations of {group}: more than {MAX_COMBINATIONS} combinations in "
                             f"{summary.n} rows; expected at most {MAX_COMBINATIONS} in a streamed table")
    deps, approximate = [], []
    for a, b in proposed.dependencies + proposed.approximate:
        combos = _combinations(summary, proposed, [*determinant(a), b])
        share = 0.0 if not combos else _share(combos)
        if share == 1.0:
            deps.append((a, b))
        elif (a, b) in declared.dependencies:
            raise ValueError(f"constraint {a} -> {b} does not hold in the data: a value of {a!r} occurs with "
                             f"two values of {b!r}")
        elif share >= MIN_SHARE and schema.column(b).kind == "numeric":
            approximate.append((a, b))
    detected = [g for g in _union(_edges([d for d in deps if d not in declared.dependencies] + approximate))
                if _combinations(summary, proposed, g) is not None]
    return Constraints(combinations=declared.combinations + detected, inequalities=ineqs, dependencies=deps,
                       approximate=approximate)


def _share(combos: dict[str, int]) -> float:
    """`modal_share` of counted combinations: the dependent is each label's last value, the determinant the
    values before it; 1.0 when the determinant determines it."""
    rows = [json.loads(label) for label in combos]
    key = pd.factorize(np.array([json.dumps(r[:-1]) for r in rows], dtype=object))[0]
    values = pd.factorize(np.array([json.dumps(r[-1]) for r in rows], dtype=object))[0]
    return modal_share(key, values, np.fromiter(combos.values(), float, len(combos)))


def _combinations(summary: Summary, proposed: Constraints, group: list[str]) -> dict[str, int] | None:
    """The combinations of `group` seen in every row and their counts: those of the proposed group holding it,
    projected; None when they were not kept (past MAX_COMBINATIONS)."""
    parent = next(g for g in proposed.combinations if set(group) <= set(g))
    combos = summary.combos[json.dumps(parent)]
    if combos is None:
        return None
    idx = [parent.index(c) for c in group]
    projected: dict[str, int] = {}
    for label, count in combos.items():
        key = json.dumps([json.loads(label)[i] for i in idx])
        projected[key] = projected.get(key, 0) + count
    return projected if len(projected) <= MAX_COMBINATIONS else None


def complete(schema: TableSchema, summary: Summary, constraints: Constraints, proposed: Constraints,
             model: bool) -> TableSchema:
    """`schema` (inferred on the sample) with every row's statistics: categories, ranges, missing rates.

    With `model`, `schema` is the model table's (noisecraft.tabular.constraints.to_model_frame): a group's
    column lists every combination seen and an inequality's `high` column ranges over every gap.
    """
    groups = {group_name(g): g for g in constraints.combinations} if model else {}
    gaps = {hi: summary.gaps[(lo, hi)] for lo, hi in constraints.inequalities} if model else {}
    columns = []
    for spec in schema.columns:
        if spec.name in groups:
            labels = sorted(_combinations(summary, proposed, groups[spec.name]))
            columns.append(spec.model_copy(update={"categories": labels, "missing_rate": 0.0}))
            continue
        col = summary.columns[spec.name]
        spec = spec.model_copy(update={"missing_rate": col.missing / max(summary.n, 1)})
        if spec.kind == "categorical" and col.values is None:  # on levels in the sample, not in every row
            spec = spec.model_copy(update={"kind": "numeric", "categories": []})
        if spec.kind == "numeric":
            low, high = gaps.get(spec.name, (col.low, col.high))
            spec = spec.model_copy(update={"min": low, "max": high,
                                           "value_type": "float" if col.fractional else spec.value_type})
        else:
            values = sorted(col.values.values(), key=lambda v: (str(type(v)), v))
            kind = "constant" if len(values) == 1 and not col.missing else "categorical"
            spec = spec.model_copy(update={"categories": values, "kind": kind})
        columns.append(spec)
    return TableSchema(columns=columns, target=schema.target, n_rows=summary.n)


# -- pass 3: the encoded table on disk ---------------------------------------------------------------
def encode_to_disk(source: TableSource, constraints: Constraints, codec: TableCodec, n: int,
                   folder: Path) -> tuple[Tensor, Tensor]:
    """(x_num, tokens) of every row, as tensors over memory-mapped .npy files in `folder`."""
    x_num = np.lib.format.open_memmap(folder / "x_num.npy", mode="w+", dtype=np.float32, shape=(n, codec.num_dim))
    # tokens as int32 (half of int64's pages; training widens each batch): no column has 2**31 categories
    tokens = np.lib.format.open_memmap(folder / "tokens.npy", mode="w+", dtype=np.int32,
                                       shape=(n, len(codec.tokens)))
    row = 0
    for chunk in source.chunks():
        x, t = codec.encode(to_model_frame(chunk, constraints))
        x_num[row:row + len(chunk)] = x.numpy()
        tokens[row:row + len(chunk)] = t.numpy()
        row += len(chunk)
    if row != n:
        raise ValueError(f"{str(source.path)!r} changed while it was read: {row} rows now, {n} before")
    x_num.flush()
    tokens.flush()
    return torch.from_numpy(x_num), torch.from_numpy(tokens)
