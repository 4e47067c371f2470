"""The design of a DDM fit: every parameter's value in every cell of the data, as a linear map of theta.

A cell is one combination of the columns that the fit's condition, the spec's rules and the
stimulus name (:func:`noisecraft.ddm.data.prepare`). For each parameter p of a
:class:`~noisecraft.ddm.spec.ModelSpec`

    p_cell = X_p @ theta_p        (the fixed value instead, for a fixed rule)

with X_p a (cells x k_p) design matrix: a column of ones (shared); indicators of the levels of
p's column(s) (free: one value per level or combination, as HDDM's ``depends_on``, Wiecki,
Sofer & Frank 2013); the numeric column c (linear); [1, c] (affine); or these times indicators
(one slope, or intercept and slope, per level); or [1, c times indicators] (affine(c):x, one intercept and a
slope per level). Under stimulus coding the drift is negated in the
cells whose stimulus belongs to the lower boundary, ``v_cell = sign_cell * X_v @ theta_v``, so v
is the drift towards the correct response and z a response bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisecraft.ddm.data import RTData
from noisecraft.ddm.spec import BOUNDS, PARAMS, ModelSpec, Rule, _fmt

__all__ = ["Design"]


@dataclass
class Design:
    """The map theta -> per-cell parameter values that a spec and the data's cells define."""

    spec: ModelSpec
    levels: np.ndarray  # a label per cell (the condition value with one column)
    names: list[str]
    slices: dict[str, slice]
    lower: np.ndarray
    upper: np.ndarray
    X: dict[str, np.ndarray]  # per parameter, cells x k_p (v without the stimulus sign)
    sign: np.ndarray  # per cell: +1, or -1 where the stimulus belongs to the lower boundary
    kinds: list[str] | None = None  # per entry of theta: level, intercept or slope

    @classmethod
    def build(cls, spec: ModelSpec, data: RTData, t0_cap: np.ndarray) -> Design:
        """The design of ``spec`` on ``data``'s cells; ``t0_cap`` is the largest admissible t0 per cell.

        Raises ValueError naming the rule and column when a free rule's column has one level, a
        linear/affine column is not numeric, or a slope is not identified by the data.
        """
        names: list[str] = []
        slices: dict[str, slice] = {}
        lo: list[float] = []
        hi: list[float] = []
        X: dict[str, np.ndarray] = {}
        all_kinds: list[str] = []
        for p in PARAMS:
            Xp, kinds, labels, cs = _matrix(p, spec.rules[p], data)
            all_kinds += kinds
            b_lo, b_hi = BOUNDS[p]
            if p in ("v", "a", "sv"):
                b_lo, b_hi = b_lo * spec.s, b_hi * spec.s
            for j, kind in enumerate(kinds):
                if kind == "slope":
                    rule = spec.rules[p]  # a slope beside a shared intercept is bounded as a linear one
                    lo_j, hi_j = _slope_bounds("linear" if rule.shared_intercept else rule.kind, b_lo, b_hi, cs[j])
                else:
                    lo_j, hi_j = b_lo, b_hi
                    if p == "t0":  # t0 below the fastest RT of every cell it applies to
                        member = Xp[:, j] != 0 if kind == "level" else np.ones(len(Xp), bool)
                        hi_j = float(np.min(t0_cap[member]))
                lo.append(lo_j)
                hi.append(hi_j)
            slices[p] = slice(len(names), len(names) + len(labels))
            names += labels
            X[p] = Xp
        return cls(spec, np.asarray(data.levels), names, slices, np.array(lo), np.array(hi), X,
                   np.asarray(data.sign, dtype=float), all_kinds)

    def matrix(self, p: str) -> np.ndarray:
        """(cells x k_p) matrix mapping theta_p to p's value in each cell (the stimulus sign included)."""
        return self.X[p] * self.sign[:, None] if p == "v" else self.X[p]

    def values(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Per-cell values of every parameter (arrays of length len(levels))."""
        m = len(self.levels)
        out = {}
        for p in PARAMS:
            rule = self.spec.rules[p]
            if rule.kind == "fixed":
                out[p] = np.full(m, rule.value)
            else:
                out[p] = self.X[p] @ theta[self.slices[p]]
        out["v"] = out["v"] * self.sign
        return out

    def chain(self, p: str, g_cell: np.ndarray) -> np.ndarray:
        """d/dtheta_p of a function from its per-cell derivative g_cell with respect to p."""
        return self.X[p].T @ (g_cell * self.sign if p == "v" else g_cell)

    def project(self, p: str, x_cell: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """theta_p whose cell values best match x_cell (weighted least squares, NaN cells skipped; for starts).

        x_cell for v is the drift towards the correct response (the stimulus sign is not applied).
        """
        X = self.X[p]
        ok = np.isfinite(x_cell)
        th = np.zeros(X.shape[1])
        if X.shape[1] == 0 or not ok.any():
            return th
        sw = np.sqrt(weights[ok])
        th = np.linalg.lstsq(X[ok] * sw[:, None], x_cell[ok] * sw, rcond=None)[0]
        seen = np.any(X[ok] != 0, axis=0)
        th[~seen] = th[seen].mean() if seen.any() else 0.0
        return th

    def valid(self, vals: dict[str, np.ndarray]) -> float:
        """0 when every per-cell value is admissible, else a positive distance (used as a penalty)."""
        z, sz = vals["z"], vals["sz"]
        excess = np.concatenate([
            *(-vals[p] for p in ("a", "sv", "sz", "st0", "lapse", "t0")),
            1e-3 - vals["a"], vals["lapse"] - 0.99, sz / 2 - z + 1e-3, z + sz / 2 - 1 + 1e-3,
        ])
        return float(np.maximum(excess, 0.0).sum())


def _text(p: str, rule: Rule) -> str:
    """How a rule reads in a message."""
    return f"rule {p} ~ {rule.formula_text()}" if rule.is_formula else f"rule {p}={rule.kind}"


def _groups(p: str, rule: Rule, data: RTData, columns: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """(group index per cell, a label per group) over the combinations of ``columns``; each needs two levels."""
    cells = data.cells
    for col in columns:
        if col not in cells.columns:
            raise ValueError(
                f"{_text(p, rule)} names column {col!r}, which the prepared data lacks; prepare it with "
                f"columns={list(columns)}"
            )
        levels = cells[col].unique()
        if rule.kind == "free" and len(levels) < 2:
            raise ValueError(
                f"{_text(p, rule)}: column {col!r} has one level ({_fmt(levels[0])}); a free parameter "
                f"needs at least two (write {p}=shared)"
            )
    if not columns:
        return np.zeros(len(cells), dtype=int), ["0"]
    g = cells.groupby(list(columns), sort=True)
    keys = g.size().index.to_frame(index=False)
    labels = [",".join(_fmt(x) for x in row) for row in keys.itertuples(index=False)]
    return g.ngroup().to_numpy(), labels


def _numeric(p: str, rule: Rule, data: RTData, column: str | None) -> np.ndarray:
    """The numeric column of a linear/affine rule, per cell."""
    if column is None:
        raise ValueError(
            f"{_text(p, rule)} is one of the linear/affine rules; expected a condition column "
            f"(condition=...) or a rule {p} ~ {rule.kind}(column)"
        )
    if column not in data.cells.columns:
        raise ValueError(
            f"{_text(p, rule)} names column {column!r}, which the prepared data lacks; prepare it with "
            f"columns=[{column!r}]"
        )
    try:
        return data.cells[column].to_numpy(dtype=float)
    except (TypeError, ValueError):
        values = [_fmt(x) for x in data.cells[column].unique()[:5]]
        raise ValueError(
            f"{_text(p, rule)}: column {column!r} is not numeric (values {values}); linear/affine "
            "need a numeric column"
        ) from None


def _matrix(p: str, rule: Rule, data: RTData) -> tuple[np.ndarray, list[str], list[str], list]:
    """(X_p, the kind of each column: level / intercept / slope, the names of theta_p, and for each
    slope column the numeric column's values in the cells it applies to)."""
    m = len(data.cells)
    if rule.kind == "fixed":
        return np.zeros((m, 0)), [], [], []
    if rule.kind == "shared":
        return np.ones((m, 1)), ["level"], [p], [None]
    legacy = data.condition_column
    if rule.kind == "free":
        cols = rule.factors if rule.is_formula else ((legacy,) if legacy else ())
        idx, labels = _groups(p, rule, data, cols)
        names = [f"{p}[{x}]" for x in labels]
        return np.eye(len(labels))[idx], ["level"] * len(labels), names, [None] * len(labels)
    c = _numeric(p, rule, data, rule.column if rule.is_formula else legacy)
    factors = rule.factors or ()
    idx, labels = _groups(p, rule, data, factors)
    ind = np.eye(len(labels))[idx]
    tag = [f"[{x}]" for x in labels] if factors else [""]
    for k, label in enumerate(tag):
        ck = c[idx == k]
        where = f" where {','.join(factors)}={label[1:-1]}" if factors else ""
        if rule.kind == "linear" and not np.any(ck != 0):
            raise ValueError(f"{_text(p, rule)}: column {rule.column or legacy!r} is 0 in every cell{where}; "
                             "the slope is not identified")
        if rule.kind == "affine" and not rule.shared_intercept and len(np.unique(ck)) < 2:
            raise ValueError(f"{_text(p, rule)}: column {rule.column or legacy!r} has one value{where}; "
                             "an intercept and a slope need at least two")
    slope = ind * c[:, None]
    cs = [c[idx == k] for k in range(len(tag))]
    if rule.kind == "linear":
        return slope, ["slope"] * len(tag), [f"{p}_slope{t}" for t in tag], cs
    if rule.shared_intercept:  # p = intercept + slope_k c in the cells of level k
        X = np.hstack([np.ones((m, 1)), slope])
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise ValueError(f"{_text(p, rule)}: the intercept and the {len(tag)} slopes are not identified by "
                             f"the values of {rule.column!r} in the cells (each level needs a nonzero value, "
                             "and two distinct values overall)")
        return X, ["intercept"] + ["slope"] * len(tag), [f"{p}_intercept"] + [f"{p}_slope{t}" for t in tag], [None, *cs]
    X = np.hstack([ind, slope])
    kinds = ["intercept"] * len(tag) + ["slope"] * len(tag)
    names = [f"{p}_intercept{t}" for t in tag] + [f"{p}_slope{t}" for t in tag]
    return X, kinds, names, [None] * len(tag) + cs


def _slope_bounds(kind: str, b_lo: float, b_hi: float, c: np.ndarray) -> tuple[float, float]:
    """Slope bounds that keep p within its box over the column's range (as wide as that allows)."""
    if kind == "linear":
        cmax = float(np.max(np.abs(c))) or 1.0
        b = max(abs(b_lo), abs(b_hi))
        return -b / cmax, b / cmax
    span = float(np.ptp(c)) or 1.0
    return -(b_hi - b_lo) / span, (b_hi - b_lo) / span
