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

from noisecraft.io import read_csv

__all__ = ["DATA_DIR", "RTData", "load_cavanagh", "load_roitman", "prepare", "read_trials"]

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


@dataclass
class RTData:
    """Validated trials: rt (s), response (1 = upper), condition index into ``levels``."""

    rt: np.ndarray
    response: np.ndarray
    cond: np.ndarray
    levels: np.ndarray
    condition_name: str | None
    rows: np.ndarray  # original row labels, for messages
    n_dropped: int = 0

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


def prepare(
    df: pd.DataFrame,
    rt: str = "rt",
    response: str = "response",
    condition: str | None = None,
    *,
    rt_min: float | None = None,
    rt_max: float | None = None,
    method: str = "ml",
    min_trials: int | None = None,
) -> RTData:
    """Validate and filter trials; bad values raise ValueError naming the rows (0-based row labels)."""
    for col in (rt, response) + ((condition,) if condition else ()):
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
    resp_raw = df[response]
    if resp_raw.dtype == bool:
        resp = resp_raw.to_numpy().astype(float)
    else:
        resp = pd.to_numeric(resp_raw, errors="coerce").to_numpy(dtype=float)
    badr = ~np.isin(resp, (0.0, 1.0))
    if badr.any():
        vals = sorted({str(x) for x in resp_raw[badr]})[:5]
        raise ValueError(
            f"{response!r} has values {vals} at rows {_rows(df.index, badr)}; expected 0/1 "
            "(1 = upper boundary, e.g. correct)"
        )
    keep = np.ones(r.size, dtype=bool)
    if rt_min is not None:
        keep &= r > rt_min
    if rt_max is not None:
        keep &= r < rt_max
    if condition:
        cvals = df[condition].to_numpy()
        levels, cond = np.unique(cvals[keep], return_inverse=True)
    else:
        levels, cond = np.array([0]), np.zeros(int(keep.sum()), dtype=int)
    need = MIN_TRIALS.get(method, 1) if min_trials is None else min_trials
    counts = np.bincount(cond, minlength=len(levels))
    for k, cnt in enumerate(counts):
        if cnt < need:
            mask = np.zeros(r.size, dtype=bool)
            mask[np.flatnonzero(keep)[cond == k]] = True
            raise ValueError(
                f"condition {condition}={levels[k]} has {cnt} trials (rows {_rows(df.index, mask)}); "
                f"method {method!r} needs at least {need} per condition"
            )
    return RTData(
        rt=r[keep],
        response=resp[keep].astype(int),
        cond=cond.astype(int),
        levels=levels,
        condition_name=condition,
        rows=df.index.to_numpy()[keep],
        n_dropped=int((~keep).sum()),
    )
