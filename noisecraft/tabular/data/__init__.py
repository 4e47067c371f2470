"""Example tables shipped with the package (see PROVENANCE.md) and the fixed evaluation split.

The split is the one PROVENANCE.md names: 80/20 with random_state=0, stratified on a categorical target.
`noisecraft tabular fit` trains on the 80% part and `noisecraft tabular eval` tests on the 20% part of
the same CSV, so the synthetic table never saw a test row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLES: dict[str, str] = {"penguins": "species", "titanic": "survived"}
#: the longest table held whole: a longer file is streamed (noisecraft.tabular.stream) and split row by row
MAX_MEMORY_ROWS = 100_000
_HERE = Path(__file__).resolve().parent


def example_path(name: str) -> Path:
    """Path of an example CSV: 'penguins' or 'titanic'."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example table {name!r}; expected one of {sorted(EXAMPLES)}")
    return _HERE / f"{name}.csv"


def load_example(name: str) -> pd.DataFrame:
    """An example table as a DataFrame (titanic without `alive`, which re-spells the target `survived`)."""
    frame = pd.read_csv(example_path(name))
    return frame.drop(columns=["alive"]) if name == "titanic" else frame


def is_classification(series: pd.Series, max_classes: int = 20) -> bool:
    """A target is a class label when it holds strings or booleans, or integers with few distinct values."""
    if pd.api.types.is_float_dtype(series):
        observed = series.dropna()
        return bool(len(observed)) and bool((observed % 1 == 0).all()) and observed.nunique() <= max_classes
    if pd.api.types.is_integer_dtype(series):
        return series.nunique() <= max_classes
    return True


def split_table(frame: pd.DataFrame, target: str | None = None, test_size: float = 0.2,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): a seeded split, stratified on `target` when it is a class label with >= 2 rows per class;
    a table longer than MAX_MEMORY_ROWS is split row by row (`row_split`), as a streamed file is."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be in (0, 1), got {test_size}")
    if len(frame) < 2:
        raise ValueError(f"cannot split a table of {len(frame)} row(s); expected at least 2")
    stratify = None
    if target is not None:
        if target not in frame.columns:
            raise ValueError(f"target column {target!r} is not in the table; columns are {list(frame.columns)}")
        labels = frame[target].astype(str)
        if is_classification(frame[target]) and labels.value_counts().min() >= 2:
            stratify = labels
    if len(frame) > MAX_MEMORY_ROWS:  # the rule a streamed file is split by, chunk after chunk
        test = row_split(np.random.default_rng(seed), len(frame), test_size)
        return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def row_split(rng: np.random.Generator, n: int, test_size: float) -> np.ndarray:
    """Which of the next n rows are test rows: each independently with probability `test_size` (the split of
    tables longer than MAX_MEMORY_ROWS; drawn chunk by chunk it gives the same rows)."""
    return rng.random(n) < test_size
