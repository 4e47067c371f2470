"""Response-time data: the two shipped datasets and validation of user data.

Shipped (see ``noisecraft/ddm/data/PROVENANCE.md`` for sources, licences and citations):

* ``roitman_rts.csv``: Roitman & Shadlen (2002), J. Neurosci. 22:9475, two monkeys,
  random-dot motion, 6 coherences (as processed by Shinn, Lam & Murray 2020, eLife).
* ``cavanagh_theta_nn.csv``: Cavanagh et al. (2011), Nat. Neurosci. 14:1462, 14 DBS
  patients (as distributed with HDDM, Wiecki, Sofer & Frank 2013).
"""

from __future__ import annotations

import operator
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from noisecraft.ddm.spec import _fmt
from noisecraft.io import read_csv

__all__ = ["CODINGS", "DATA_DIR", "RTData", "load_cavanagh", "load_roitman", "prepare", "read_trials"]

DATA_DIR = Path(__file__).resolve().parent / "data"
# Fewest trials per condition each method can work with.
MIN_TRIALS = {"ml": 1, "chisq": 20, "ez": 10}


def load_roitman(
    monkey: int | None = None, rt_range: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Roitman & Shadlen (2002) trials: monkey, rt (s), coh, correct, trgchoice; optionally one monkey and an RT window."""
    df = pd.read_csv(DATA_DIR / "roitman_rts.csv")
    if monkey is not None:
        if monkey not in (1, 2):
            raise ValueError(f"monkey={monkey!r}; expected 1 or 2")
        df = df[df["monkey"] == monkey]
    if rt_range is not None:
        df = df[(df["rt"] > rt_range[0]) & (df["rt"] < rt_range[1])]
    return df.reset_index(drop=True)


def load_cavanagh() -> pd.DataFrame:
    """Cavanagh et al. (2011) trials: subj_idx, stim, rt (s), response (1 = better option), theta, dbs, conf."""
    return pd.read_csv(DATA_DIR / "cavanagh_theta_nn.csv")


_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt,
            ">": operator.gt}


def _value(text: str) -> float | str:
    """A clause's right-hand side: a quoted string, a number, or a bare word taken as text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return float(text)
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text):
        raise ValueError(f"`where` value {text!r} is not a number, a word or a quoted string; clauses are joined "
                         "by 'and' only")
    return text


def select_rows(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The rows meeting every clause of ``where``: ``column OP value`` joined by ``and`` (OP one of == != < <=
    > >=), e.g. ``"monkey == 1 and coh >= 0.128"``. The text is parsed, never evaluated."""
    keep = pd.Series(True, index=df.index)
    for clause in re.split(r"\s+and\s+", where.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.match(clause)
        if m is None:
            raise ValueError(f"`where` clause {clause!r} is not 'column OP value' (OP one of == != < <= > >=), "
                             "clauses joined by 'and'")
        column, op, value = m[1], m[2], _value(m[3])
        if column not in df.columns:
            raise ValueError(f"`where` names column {column!r}, which is not in the data; columns are "
                             f"{list(df.columns)}")
        try:
            keep &= _COMPARE[op](df[column], value)
        except TypeError:
            raise ValueError(f"`where` compares column {column!r} ({df[column].dtype}) with {value!r}; "
                             "expected a value of the column's type") from None
    return df[keep]


def read_trials(data: str | Path, where: str | None = None) -> pd.DataFrame:
    """Trials from a shipped data set ('roitman' or 'cavanagh') or a CSV path, then the rows meeting ``where``
    (`select_rows`), e.g. ``"monkey == 1 and coh >= 0.128"``."""
    if data == "roitman":
        df = load_roitman()
    elif data == "cavanagh":
        df = load_cavanagh()
    else:
        p = Path(data)
        if not p.exists():
            raise ValueError(
                f"data file {str(data)!r} not found; expected a CSV path or 'roitman'/'cavanagh'"
            )
        df = read_csv(p)
    if where:
        df = select_rows(df, where)
    return df


CODINGS = ("accuracy", "stimulus")


@dataclass
class RTData:
    """Validated trials: rt (s), response (1 = upper), cell index into ``levels``.

    A cell is one combination of the condition column, the columns a spec names and the
    stimulus column; ``cells`` holds one row per cell with those columns, ``levels`` a label per
    cell (the raw value with one column). ``sign`` is +1 per cell, or under stimulus coding
    -1 in the cells whose stimulus belongs to the lower boundary (the drift points there).
    """

    rt: np.ndarray
    response: np.ndarray
    cond: np.ndarray
    levels: np.ndarray
    condition_name: str | None
    rows: np.ndarray  # original row labels, for messages
    n_dropped: int = 0
    cells: pd.DataFrame | None = None
    sign: np.ndarray | None = None
    condition_column: str | None = None
    coding: str = "accuracy"

    def __post_init__(self) -> None:
        m = len(self.levels)
        if self.cells is None:  # built by hand from one condition column, as before cells existed
            name = self.condition_name
            self.cells = pd.DataFrame({name: self.levels}) if name else pd.DataFrame(index=range(m))
            self.condition_column = name
        if self.sign is None:
            self.sign = np.ones(m)

    @property
    def n(self) -> int:
        return int(self.rt.size)

    def subset(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.cond == k
        return self.rt[m], self.response[m]


def _rows(labels: pd.Index, mask: np.ndarray, limit: int = 10) -> str:
    bad = list(labels[mask])
    more = f" ... ({len(bad)} in all)" if len(bad) > limit else ""
    return ", ".join(str(x) for x in bad[:limit]) + more


def _matches(col: pd.Series, value) -> np.ndarray:
    """col == value, with value possibly given as text (the CLI) for a numeric or boolean column."""
    if pd.api.types.is_numeric_dtype(col):
        try:
            return col.to_numpy(dtype=float) == float(value)
        except (TypeError, ValueError):
            return np.zeros(len(col), dtype=bool)
    return col.astype(str).to_numpy() == str(value)


def _responses(df: pd.DataFrame, response: str, upper) -> np.ndarray:
    """The response column as 1 (upper boundary) / 0 (lower): 0/1 values, or ``upper`` against one other value."""
    raw = df[response]
    if upper is None:
        if raw.dtype == bool:
            resp = raw.to_numpy().astype(float)
        else:
            resp = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        badr = ~np.isin(resp, (0.0, 1.0))
        if badr.any():
            vals = sorted({str(x) for x in raw[badr]})[:5]
            raise ValueError(
                f"{response!r} has values {vals} at rows {_rows(df.index, badr)}; expected 0/1 "
                "(1 = upper boundary, e.g. correct), or name the upper response with upper="
            )
        return resp
    missing = raw.isna().to_numpy()
    if missing.any():
        raise ValueError(f"{response!r} has missing values at rows {_rows(df.index, missing)}")
    is_up = _matches(raw, upper)
    values = sorted({str(x) for x in raw})
    if not is_up.any():
        raise ValueError(
            f"upper={upper!r} is not a value of {response!r} (values {values[:5]}); expected the "
            "response at the upper boundary"
        )
    if len({str(x) for x in raw[~is_up]}) > 1:
        raise ValueError(
            f"{response!r} has values {values[:5]}; expected two responses, {upper!r} (upper) and one other"
        )
    return is_up.astype(float)


def _stimulus_sign(sub: pd.DataFrame, stimulus: str, stimulus_upper) -> np.ndarray:
    """+1 on trials whose stimulus belongs to the upper boundary, -1 on the others (two stimuli)."""
    col = sub[stimulus]
    values = sorted({str(x) for x in col})
    up = _matches(col, stimulus_upper)
    if not up.any():
        raise ValueError(
            f"stimulus column {stimulus!r} has no trial with stimulus_upper={stimulus_upper!r} (values "
            f"{values[:5]}); expected the stimulus whose correct response is the upper boundary"
        )
    if len({str(x) for x in col[~up]}) > 1:
        raise ValueError(
            f"stimulus column {stimulus!r} has values {values[:5]}; stimulus coding expects two stimuli, "
            f"{stimulus_upper!r} (upper boundary) and one other"
        )
    return np.where(up, 1.0, -1.0)


def _cells(sub: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(one row per combination of ``columns``, sorted; the cell of each trial; a label per cell)."""
    if not columns:
        return pd.DataFrame(index=range(1)), np.zeros(len(sub), dtype=int), np.array([0])
    groups = sub.groupby(columns, sort=True)
    cond = groups.ngroup().to_numpy()
    cells = groups.size().index.to_frame(index=False)[columns]
    if len(columns) == 1:
        return cells, cond, cells[columns[0]].to_numpy()
    labels = [",".join(_fmt(x) for x in row) for row in cells.itertuples(index=False)]
    return cells, cond, np.array(labels, dtype=object)


def prepare(
    df: pd.DataFrame,
    rt: str = "rt",
    response: str = "response",
    condition: str | None = None,
    *,
    columns: tuple[str, ...] | list[str] = (),
    coding: str = "accuracy",
    stimulus: str | None = None,
    upper=None,
    stimulus_upper=None,
    rt_min: float | None = None,
    rt_max: float | None = None,
    method: str = "ml",
    min_trials: int | None = None,
) -> RTData:
    """Validate and filter trials; bad values raise ValueError naming the rows (0-based row labels).

    Cells are the combinations of ``condition``, ``columns`` (those a spec names) and, with
    ``coding="stimulus"``, the ``stimulus`` column. ``upper`` names the response value at the upper
    boundary (default: the column is 0/1 with 1 = upper). Accuracy coding: upper = correct.
    Stimulus coding (upper = one response, e.g. "right"): ``stimulus_upper`` (default ``upper``, or 1)
    is the stimulus whose correct response is the upper boundary; the drift is +v for it and -v for
    the other stimulus, and z is a response bias.
    """
    if coding not in CODINGS:
        raise ValueError(f"coding={coding!r}; expected 'accuracy' or 'stimulus'")
    if coding == "stimulus" and not stimulus:
        raise ValueError(
            "coding='stimulus' needs stimulus=<column> naming the stimulus shown on each trial"
        )
    if coding == "accuracy" and stimulus:
        raise ValueError(
            f"stimulus={stimulus!r} is used only with coding='stimulus'; accuracy coding takes 1 = correct"
        )
    cell_columns = list(dict.fromkeys(c for c in (condition, *columns, stimulus) if c))
    for col in (rt, response, *cell_columns):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in data; columns are {list(df.columns)}")
    r = pd.to_numeric(df[rt], errors="coerce").to_numpy(dtype=float)
    nan = ~np.isfinite(r)
    if nan.any():
        raise ValueError(
            f"{rt!r} has missing/non-numeric RTs at rows {_rows(df.index, nan)}; expected finite RTs in seconds"
        )
    neg = r <= 0
    if neg.any():
        raise ValueError(
            f"{rt!r} has non-positive RTs at rows {_rows(df.index, neg)} (e.g. {r[neg][0]:g}); expected RTs > 0 in seconds"
        )
    if np.median(r) > 20:
        warnings.warn(
            f"median {rt!r} is {np.median(r):g}: RTs look like milliseconds; the DDM expects seconds",
            stacklevel=2,
        )
    resp = _responses(df, response, upper)
    keep = np.ones(r.size, dtype=bool)
    if rt_min is not None:
        keep &= r > rt_min
    if rt_max is not None:
        keep &= r < rt_max
    if not keep.any():
        raise ValueError(f"no trials left with {rt_min!r} < {rt!r} < {rt_max!r}; {r.size} trials before the filter")
    sub = df[keep]
    for col in cell_columns:
        missing = sub[col].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"column {col!r} has missing values at rows {_rows(sub.index, missing)}; expected a level on every trial"
            )
    cells, cond, levels = _cells(sub, cell_columns)
    sign = np.ones(len(cells))
    if coding == "stimulus":
        trial_sign = _stimulus_sign(sub, stimulus, stimulus_upper if stimulus_upper is not None else
                                    (upper if upper is not None else 1))
        sign[cond] = trial_sign
    need = MIN_TRIALS.get(method, 1) if min_trials is None else min_trials
    counts = np.bincount(cond, minlength=len(levels))
    for k, cnt in enumerate(counts):
        if cnt < need:
            mask = np.zeros(r.size, dtype=bool)
            mask[np.flatnonzero(keep)[cond == k]] = True
            if len(cell_columns) == 1:
                where, per = f"condition {cell_columns[0]}={levels[k]}", "condition"
            else:
                cell = ", ".join(f"{c}={_fmt(cells[c].iloc[k])}" for c in cell_columns)
                where, per = (f"cell {cell}", "cell") if cell_columns else ("the data", "fit")
            raise ValueError(
                f"{where} has {cnt} trials (rows {_rows(df.index, mask)}); "
                f"method {method!r} needs at least {need} per {per}"
            )
    return RTData(
        rt=r[keep],
        response=resp[keep].astype(int),
        cond=cond.astype(int),
        levels=levels,
        condition_name="*".join(cell_columns) if cell_columns else None,
        rows=df.index.to_numpy()[keep],
        n_dropped=int((~keep).sum()),
        cells=cells,
        sign=sign,
        condition_column=condition,
        coding=coding,
    )
