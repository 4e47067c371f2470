"""Fitting the DDM: full-distribution maximum likelihood, quantile chi-square / G^2, and EZ.

* ``method="ml"``: minimise the negative log-likelihood of every trial under the exact
  density (Navarro & Fuss 2009) with L-BFGS-B and an analytic gradient (closed form when
  sz = st0 = 0; with sz or st0 free, of the likelihood on a grid of decision times per cell
  and response, :mod:`noisecraft.ddm.grid`, the NLL then reported under the exact density),
  from several starts: EZ-diffusion (Wagenmakers et al. 2007), a default, and the best
  point of a scrambled Sobol design over the parameter box, which doubles as a global
  check. Standard errors come from the inverse Hessian; AIC = 2k + 2 NLL,
  BIC = k ln n + 2 NLL.
* ``method="chisq"``: Ratcliff & Tuerlinckx (2002), Psychon. Bull. Rev. 9:438: per
  condition and response, bins at the .1/.3/.5/.7/.9 quantiles of the observed RTs
  (only the median when a response has fewer than 11 trials, one bin when it has none);
  the statistic is sum N (o - p)^2 / p or G^2 = 2 sum N o log(o / p).
* ``method="ez"``: EZ per condition, mapped onto the spec (shared -> trial-weighted mean,
  linear/affine -> least squares over conditions).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeResult, minimize
from scipy.stats import qmc

from noisecraft.ddm.data import RTData, prepare
from noisecraft.ddm.density import cdf, logpdf, logpdf_and_grad
from noisecraft.ddm.design import Design
from noisecraft.ddm.ez import ez_from_data
from noisecraft.ddm.grid import DecisionGrid
from noisecraft.ddm.spec import PARAMS, ModelSpec, _fmt

__all__ = ["QUANTILES", "FitResult", "fit", "fit_participants", "negloglik"]

QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
_PENALTY = 1e10
# Series truncation at the full model's grid nodes (the reported NLL uses logpdf's 1e-12): fewer
# terms per node, far below the grid's own error.
_EPS_FIT = 1e-10
# The fitting objective keeps z +- sz/2 this far inside (0, 1), twice Design.valid's margin, and penalises the
# excess by _KAPPA * excess^2: at an optimum pressed against the range the excess (gradient / 2 kappa) stays
# below the difference of margins, so the returned parameters are admissible.
_Z_MARGIN = 2e-3
_KAPPA = 1e6


def _trial_loglik(rt: np.ndarray, response: np.ndarray, tv: dict, s: float, lapse_density: np.ndarray | float) -> np.ndarray:
    """Per-trial log-likelihood of the Ratcliff model mixed with a lapse of probability tv["lapse"]:
    log((1 - p) f(rt, response) + p * lapse_density)."""
    ll = logpdf(rt, response, tv["v"], tv["a"], tv["z"], tv["t0"], tv["sv"], tv["sz"], tv["st0"], s=s)
    p = tv["lapse"]
    if np.any(p > 0):
        with np.errstate(divide="ignore"):
            ll = np.logaddexp(np.log1p(-p) + ll, np.log(p * lapse_density))
    return ll


@dataclass
class FitResult:
    """A fitted model: estimates, uncertainty, fit statistics and how the optimiser got there."""

    method: str
    spec: ModelSpec
    design: Design
    theta: np.ndarray
    se: np.ndarray | None
    nll: float
    n: int
    statistic: float | None = None
    statistic_name: str | None = None
    starts: list[float] = field(default_factory=list)
    converged: bool = True
    time_s: float = 0.0
    lapse_range: tuple[float, float] = (0.0, 2.0)
    ez_per_condition: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None

    @property
    def names(self) -> list[str]:
        return self.design.names

    @property
    def k(self) -> int:
        return len(self.theta)

    @property
    def params(self) -> dict[str, float]:
        return dict(zip(self.names, map(float, self.theta)))

    @property
    def aic(self) -> float:
        return 2 * self.k + 2 * self.nll

    @property
    def bic(self) -> float:
        return self.k * np.log(self.n) + 2 * self.nll

    def per_condition(self) -> pd.DataFrame:
        """Values of every model parameter in every condition (cell), with the cell's columns when there are several."""
        vals = self.design.values(self.theta)
        df = pd.DataFrame({p: vals[p] for p in PARAMS})
        if self.cells is not None and self.cells.shape[1] > 1:
            df = pd.concat([self.cells.reset_index(drop=True), df], axis=1)
        df.insert(0, "condition", self.design.levels)
        return df

    def table(self) -> pd.DataFrame:
        se = self.se if self.se is not None else np.full(self.k, np.nan)
        at = np.isclose(self.theta, self.design.lower, atol=1e-6) | np.isclose(
            self.theta, self.design.upper, atol=1e-6
        )
        return pd.DataFrame(
            {"parameter": self.names, "estimate": self.theta, "se": se, "at_bound": at}
        )

    def summary(self) -> str:
        lines = [
            f"method={self.method}  spec: {self.spec}",
            self.table().to_string(index=False, float_format=lambda x: f"{x:.4f}"),
        ]
        stat = f"  {self.statistic_name}={self.statistic:.3f}" if self.statistic is not None else ""
        lines.append(
            f"n={self.n}  k={self.k}  NLL={self.nll:.3f}  AIC={self.aic:.2f}  BIC={self.bic:.2f}{stat}"
            f"  converged={self.converged}  time={self.time_s:.3f}s"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _blas_one_thread():
    """L-BFGS-B's small BLAS calls slow down ~10x when OpenBLAS threads contend for cores."""
    try:
        controller = _blas_controller()
    except ImportError:  # optional: scikit-learn brings it
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller():
    """The BLAS libraries loaded in this process, found once (finding them cost 1.5 ms per fit)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# --------------------------------------------------------------------------- problem


class CellLikelihood:
    """Per-trial log-likelihood of trials grouped in cells, and the per-cell sums of its partials.

    The basic model (sz = st0 = 0) in closed form (:func:`~noisecraft.ddm.density.logpdf_and_grad`); the full
    model from a grid of decision times per cell and response (:class:`~noisecraft.ddm.grid.DecisionGrid`).
    """

    def __init__(self, rt: np.ndarray, upper: np.ndarray, cell: np.ndarray, n_cells: int, lapse_c: np.ndarray,
                 s: float, basic: bool):
        # Trials with the same cell, response and RT have the same likelihood: recorded RTs are discrete (Roitman's
        # 6,149 trials hold 1,065 distinct RTs, Cavanagh's 3,988 hold 772), so each distinct row is evaluated once
        # and its partials weighted by its count.
        _, first, self.inverse, count = np.unique(np.stack([cell, upper, rt]).astype(float), axis=1,
                                                     return_index=True, return_inverse=True, return_counts=True)
        self.inverse = self.inverse.ravel()
        self.rt, self.upper, self.cell, self.lapse_c = rt[first], upper[first], cell[first], lapse_c[first]
        self.count, self.n_cells, self.s = count.astype(float), n_cells, s
        self.grid = None if basic else DecisionGrid(self.rt, self.upper, self.cell, n_cells, count=self.count)

    def __call__(self, vals: dict[str, np.ndarray], grad: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(per-trial log-likelihood, {parameter: per-cell sum of its partial}) at per-cell values ``vals``; the
        grid skips the partials when ``grad`` is False."""
        lapse_p = vals["lapse"][self.cell]
        if self.grid is not None:
            ll, g = self.grid.loglik_grad(vals, lapse_p, self.lapse_c, s=self.s, eps=_EPS_FIT, grad=grad)
            return ll[self.inverse], g
        tv = {p: vals[p][self.cell] for p in ("v", "a", "z", "t0", "sv")}
        ll, g = logpdf_and_grad(self.rt, self.upper, tv["v"], tv["a"], tv["z"], tv["t0"], tv["sv"], s=self.s,
                                lapse_p=lapse_p, lapse_density=self.lapse_c)
        return ll[self.inverse], {p: np.bincount(self.cell, weights=x * self.count, minlength=self.n_cells)
                                  for p, x in g.items()}


def _fit_start_range(vals: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Cells whose start-point range z +- sz/2 leaves (0, 1) (with a margin) get sz shrunk to fit.

    Returns the repaired values, the excess sz - room per cell (0 where it fits) and d room / d z. The fitting
    objective adds a quadratic penalty on the excess: unlike a jump to a constant, it stays continuous, so a
    line search that overshoots the range backs off smoothly (L-BFGS-B's box cannot hold this constraint).
    """
    z, sz = vals["z"], vals["sz"]
    room = 2.0 * (np.minimum(z, 1.0 - z) - _Z_MARGIN)
    over = np.maximum(sz - room, 0.0)
    if not np.any(over > 0):
        return vals, over, np.zeros_like(z)
    return {**vals, "sz": np.minimum(sz, room)}, over, np.where(z < 0.5, 2.0, -2.0)


class _Problem:
    """Data + design: per-trial parameters, the likelihood and its gradient."""

    def __init__(self, data: RTData, spec: ModelSpec, lapse_range: tuple[float, float]):
        self.data = data
        self.spec = spec
        self.upper = data.response == 1
        self.lapse_range = lapse_range
        lo, hi = lapse_range
        self.lapse_c = np.where((data.rt >= lo) & (data.rt <= hi), 0.5 / (hi - lo), 0.0)
        lapse_possible = not (
            spec.rules["lapse"].kind == "fixed" and spec.rules["lapse"].value == 0
        )
        m = len(data.levels)
        mins = np.array([data.rt[data.cond == k].min() for k in range(m)])
        # t0 stays below each cell's fastest RT, unless a lapse term can explain faster trials.
        t0_cap = np.full(m, float(np.median(data.rt))) if lapse_possible else mins - 1e-4
        self.design = Design.build(spec, data, np.maximum(t0_cap, 1e-3))
        self.basic = spec.is_basic
        self.likelihood = CellLikelihood(data.rt, self.upper, data.cond, m, self.lapse_c, spec.s, self.basic)

    def trial_values(
        self, theta: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        vals = self.design.values(theta)
        return vals, {p: vals[p][self.data.cond] for p in PARAMS}

    def loglik_trials(self, theta: np.ndarray) -> np.ndarray:
        """Per-trial log-likelihood under :func:`logpdf`, formed once per distinct (cell, response, RT) row."""
        vals = self.design.values(theta)
        if self.design.valid(vals) > 0:
            return np.full(self.data.n, -np.inf)
        rows = self.likelihood
        tv = {p: vals[p][rows.cell] for p in PARAMS}
        return _trial_loglik(rows.rt, rows.upper.astype(int), tv, self.spec.s, rows.lapse_c)[rows.inverse]

    def nll(self, theta: np.ndarray) -> float:
        return self.nll_grad(theta, grad=False)[0]

    def exact_nll(self, theta: np.ndarray) -> float:
        """NLL under :func:`logpdf` (the fitting objective of the full model is its likelihood on a grid)."""
        return self.nll(theta) if self.basic else -float(np.sum(self.loglik_trials(theta)))

    def loglik_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """log L(theta) and its gradient; -inf (gradient 0) outside the admissible region."""
        vals = self.design.values(theta)
        if self.design.valid(vals) > 0:
            return -np.inf, np.zeros_like(theta)
        ll, g = self.likelihood(vals)
        total = float(np.sum(ll))
        if not np.isfinite(total):
            return -np.inf, np.zeros_like(theta)
        return total, self._chain(g)

    def _chain(self, g: dict[str, np.ndarray]) -> np.ndarray:
        """The gradient in theta from per-cell partials."""
        grad = np.zeros(len(self.design.names))
        for p, g_cell in g.items():
            sl = self.design.slices[p]
            if sl.stop > sl.start:
                grad[sl] = self.design.chain(p, g_cell)
        return grad

    def nll_grad(self, theta: np.ndarray, grad: bool = True) -> tuple[float, np.ndarray]:
        """The fitting objective: -log L and its gradient (None when ``grad`` is False). A start-point range
        z +- sz/2 outside (0, 1) is shrunk to fit and its excess penalised (:func:`_fit_start_range`); other
        inadmissible values get a large finite penalty."""
        vals = self.design.values(theta)
        vals, over, droom = _fit_start_range(vals)
        bad = self.design.valid(vals)
        if bad > 0:
            return _PENALTY * (1.0 + bad), np.zeros_like(theta)
        ll, g = self.likelihood(vals, grad)
        total = float(np.sum(ll)) - _KAPPA * float(np.sum(over**2))
        if not np.isfinite(total):
            return _PENALTY, np.zeros_like(theta)
        if not grad:
            return -total, None
        if np.any(over > 0):  # sz = room(z) where shrunk: its partial moves to z; then the penalty
            shrunk = over > 0
            g = {**g, "z": g["z"] + np.where(shrunk, g["sz"] * droom, 0.0) + 2.0 * _KAPPA * over * droom,
                 "sz": np.where(shrunk, 0.0, g["sz"]) - 2.0 * _KAPPA * over}
        return -total, -self._chain(g)

    def nll_many(self, thetas: np.ndarray) -> np.ndarray:
        """NLL at many parameter vectors in one vectorised density call (for the Sobol check)."""
        if not self.basic:  # the full model's grid already costs little per trial
            return np.array([self.nll(th) for th in thetas])
        n = self.data.n
        out = np.full(len(thetas), _PENALTY)
        ok, cols = [], {p: [] for p in PARAMS}
        for j, th in enumerate(thetas):
            vals, tv = self.trial_values(th)
            if self.design.valid(vals) == 0:
                ok.append(j)
                for p in PARAMS:
                    cols[p].append(tv[p])
        if not ok:
            return out
        J = len(ok)
        tv = {p: np.concatenate(cols[p]) for p in PARAMS}
        rt = np.tile(self.data.rt, J)
        resp = np.tile(self.data.response, J)
        ll = _trial_loglik(rt, resp, tv, self.spec.s, np.tile(self.lapse_c, J))
        vals = -ll.reshape(J, n).sum(1)
        out[ok] = np.where(np.isfinite(vals), vals, _PENALTY)
        return out


def negloglik(
    data: RTData,
    spec: ModelSpec,
    params: dict[str, float],
    lapse_range: tuple[float, float] | None = None,
) -> float:
    """Negative log-likelihood of validated data at named parameters (names as in FitResult.names)."""
    prob = _Problem(data, spec, lapse_range or (0.0, float(data.rt.max())))
    theta = np.array([params[n] for n in prob.design.names])
    return -float(np.sum(prob.loglik_trials(theta)))


# ---------------------------------------------------------------------------- starts


def _ez_theta(prob: _Problem) -> tuple[np.ndarray, pd.DataFrame]:
    """Start values from EZ per cell, mapped onto the spec by weighted least squares (Design.project).

    Under stimulus coding a cell whose stimulus belongs to the lower boundary is scored with the
    responses flipped, so its EZ drift is the drift towards the correct response, as X_v theta_v is.
    """
    d, s = prob.data, prob.spec.s
    rows = []
    for k, lev in enumerate(d.levels):
        rt, resp = d.subset(k)
        correct = resp if d.sign[k] > 0 else 1 - resp
        row = {"condition": lev, "v": np.nan, "a": np.nan, "t0": np.nan, "pc": float(np.mean(correct)),
               "n": rt.size, "note": ""}
        try:
            e = ez_from_data(rt, correct, s=s)
            row.update({"v": e.v, "a": e.a, "t0": e.t0, "pc": e.pc, "note": e.note})
        except ValueError as err:
            row["note"] = str(err)
        rows.append(row)
    table = pd.DataFrame(rows)
    defaults = {
        "v": 1.0 * s,
        "a": 1.0 * s,
        "z": 0.5,
        "t0": 0.2,
        "sv": 0.3 * s,
        "sz": 0.1,
        "st0": 0.05,
        "lapse": 0.02,
    }
    theta = np.zeros(len(prob.design.names))
    w = table["n"].to_numpy(float)
    for p in PARAMS:
        x = table[p].to_numpy(float) if p in ("v", "a", "t0") else np.full(len(table), defaults[p])
        if not np.isfinite(x).any():
            x = np.full(len(table), defaults[p])
        theta[prob.design.slices[p]] = prob.design.project(p, x, w)
    return theta, table


def _default_theta(prob: _Problem) -> np.ndarray:
    s = prob.spec.s
    base = {
        "v": 1.0 * s,
        "a": 1.0 * s,
        "z": 0.5,
        "t0": 0.0,
        "sv": 0.5 * s,
        "sz": 0.1,
        "st0": 0.1,
        "lapse": 0.02,
    }
    theta = np.zeros(len(prob.design.names))
    m = len(prob.data.levels)
    w = np.bincount(prob.data.cond, minlength=m).astype(float)
    for p in PARAMS:
        theta[prob.design.slices[p]] = prob.design.project(p, np.full(m, base[p]), w)
    sl = prob.design.slices["t0"]
    theta[sl] = 0.5 * prob.design.upper[sl]
    return theta


def _no_lapse_start(prob: _Problem, seed: int) -> tuple[np.ndarray, bool]:
    """The optimum of the nested model without contaminants, lapse just inside its box: a start.

    The mixture's likelihood surface has a second basin (large lapse, late t0) that the other
    starts can fall into although the nested model, a point of the box, fits better.
    """
    nested = _Problem(prob.data, replace(prob.spec, rules={**prob.spec.rules, "lapse": 0.0}), prob.lapse_range)
    inner = _solve(nested, "ml", 2, False, "chisq", seed, time.perf_counter())
    theta = _default_theta(prob)
    index = {name: i for i, name in enumerate(prob.design.names)}
    for name, value in zip(inner.names, inner.theta):
        theta[index[name]] = value
    return _clip(prob, theta), inner.converged


def _basic_starts(prob: _Problem, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Two starts for the full model from the optimum of the nested model without sz and st0 (closed form, cheap):
    a narrow and a wide start-point range (sz at 0.2 and 0.6 of its room) and non-decision range (st0 at 0.1 and
    0.5 of the nested t0, t0 moved down by half of it). The full optimum is near the nested one, and the two
    straddle the trade-off of sz and st0 with the other parameters, where its local optima lie. Also returns the
    nested optimum itself as a point of the full model (sz = st0 = 0): no fit of the full model may end above it."""
    rules = {**prob.spec.rules, "sz": 0.0, "st0": 0.0}
    nested = _Problem(prob.data, replace(prob.spec, rules=rules), prob.lapse_range)
    inner = _solve(nested, "ml", 1, False, "chisq", seed, time.perf_counter(), global_check=False)
    vals = nested.design.values(inner.theta)
    vals["v"] = vals["v"] * nested.design.sign  # project() takes the drift towards the correct response
    w = np.bincount(prob.data.cond, minlength=len(prob.data.levels)).astype(float)
    room = 2.0 * np.minimum(vals["z"], 1.0 - vals["z"])

    def point(share_sz: float, share_st0: float) -> np.ndarray:
        cell = {**vals, "sz": share_sz * room, "st0": share_st0 * vals["t0"], "t0": vals["t0"] * (1 - share_st0 / 2)}
        theta = np.zeros(len(prob.design.names))
        for p in PARAMS:
            theta[prob.design.slices[p]] = prob.design.project(p, cell[p], w)
        return theta

    nested_point = np.clip(point(0.0, 0.0), prob.design.lower, prob.design.upper)
    return [_clip(prob, point(0.2, 0.1)), _clip(prob, point(0.6, 0.5))], nested_point


def _clip(prob: _Problem, theta: np.ndarray) -> np.ndarray:
    lo, hi = prob.design.lower, prob.design.upper
    span = hi - lo
    return np.clip(np.nan_to_num(theta, nan=0.0), lo + 1e-3 * span, hi - 1e-3 * span)


def _sobol_points(prob: _Problem, objective, seed: int, n_points: int = 16, many=None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A scrambled Sobol design over the parameter box, best first: (points, clipped into the box; values)."""
    k = len(prob.design.names)
    sob = qmc.Sobol(k, scramble=True, seed=seed).random(n_points)
    pts = prob.design.lower + sob * (prob.design.upper - prob.design.lower)
    vals = many(pts) if many is not None else np.array([objective(p) for p in pts])
    order = np.argsort(vals, kind="stable")
    return np.array([_clip(prob, p) for p in pts[order]]), np.asarray(vals, dtype=float)[order]


def _sobol(prob: _Problem, objective, seed: int, n_points: int = 16, many=None):
    """Best point of a scrambled Sobol design over the parameter box: a start and a global check."""
    pts, vals = _sobol_points(prob, objective, seed, n_points, many)
    return pts[0], float(vals[0])


def _hessian(grad, x: np.ndarray) -> np.ndarray:
    """Central differences of the gradient, symmetrised: the Hessian at x."""
    k = x.size
    h = 1e-4 * np.maximum(1.0, np.abs(x))
    H = np.zeros((k, k))
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        H[i] = (grad(x + e) - grad(x - e)) / (2 * h[i])
    return 0.5 * (H + H.T)


class _Agrees(Exception):
    """Raised inside an objective to stop a checking start: it has come within reach of the best start."""

    def __init__(self, x: np.ndarray, fun: float):
        super().__init__()
        self.x, self.fun = x, fun


def _run_until_agreement(fun, x0: np.ndarray, bounds, options: dict, target: float,
                         scale: np.ndarray | None = None) -> OptimizeResult:
    """L-BFGS-B on ``fun`` (value, gradient) from ``x0``, stopped once the objective falls below ``target``.

    A start after the first only tests agreement with the best one so far: once it is within ``target`` it agrees,
    and the steps that would polish it further are spent for nothing (if it goes below the best, it is polished
    as the best below). With ``scale`` D the search runs in u = theta / D (Nocedal & Wright 2006, sec. 2.2:
    scaling): with D from the curvature at the best start, a unit step means about one standard error in every
    parameter, where L-BFGS-B's first steps otherwise treat a boundary and a non-decision time alike.
    """
    D = np.ones(x0.size) if scale is None else scale

    def watched(u: np.ndarray):
        theta = u * D
        value, grad = fun(theta)
        if value < target:
            raise _Agrees(theta.copy(), float(value))
        return value, grad * D

    try:
        res = minimize(watched, x0 / D, jac=True, method="L-BFGS-B", bounds=[(lo / d, hi / d) for (lo, hi), d
                                                                               in zip(bounds, D)], options=options)
        res.x = res.x * D
        return res
    except _Agrees as stop:
        return OptimizeResult(x=stop.x, fun=stop.fun, success=True, message="within reach of the best start")


def _inner_hessian(prob: _Problem, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ML objective's Hessian (central differences of its gradient) over the parameters not on a bound: (their
    indices, H). Parameters on a bound (e.g. a lapse probability at 0) are left out: the likelihood is not locally
    quadratic there, and difference steps would leave the box."""
    h = 1e-4 * np.maximum(1.0, np.abs(x))
    inner = np.flatnonzero((x - 2 * h > prob.design.lower) & (x + 2 * h < prob.design.upper))
    if not inner.size:
        return inner, np.zeros((0, 0))

    def full(sub: np.ndarray) -> np.ndarray:
        th = x.copy()
        th[inner] = sub
        return th

    return inner, _hessian(lambda sub: prob.nll_grad(full(sub))[1][inner], x[inner])


def _curvature_scale(k: int, inner: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Per parameter 1 / sqrt(H_ii) (the standard error were the others fixed); 1 where H_ii is not positive."""
    d = np.ones(k)
    diag = np.diag(H)
    d[inner[diag > 0]] = 1.0 / np.sqrt(diag[diag > 0])
    return d


def _standard_errors(H: np.ndarray) -> np.ndarray:
    try:
        cov = np.linalg.inv(H)
        d = np.diag(cov)
        return np.where(d > 0, np.sqrt(np.abs(d)), np.nan)
    except np.linalg.LinAlgError:
        return np.full(H.shape[0], np.nan)


# ------------------------------------------------------------------------ chi-square


class _QuantileBins:
    """Observed quantile bins per condition and response (Ratcliff & Tuerlinckx 2002)."""

    def __init__(self, data: RTData, quantiles=QUANTILES):
        self.edges_rt, self.edges_resp, self.edges_cond = [], [], []
        self.groups = []  # (cond, resp, index into edge arrays, observed proportions)
        q = np.asarray(quantiles)
        for k in range(len(data.levels)):
            rt, resp = data.subset(k)
            N = rt.size
            for r in (0, 1):
                x = rt[resp == r]
                if x.size >= 11:
                    qs, probs = np.quantile(x, q), np.diff(np.concatenate([[0], q, [1]]))
                elif x.size >= 1:
                    qs, probs = np.array([np.median(x)]), np.array([0.5, 0.5])
                else:
                    qs, probs = np.zeros(0), np.array([1.0])
                start = len(self.edges_rt)
                self.edges_rt += list(qs)
                self.edges_resp += [r] * qs.size
                self.edges_cond += [k] * qs.size
                self.groups.append((k, r, slice(start, start + qs.size), probs * x.size / N, N))
        self.edges_rt = np.array(self.edges_rt)
        self.edges_resp = np.array(self.edges_resp, dtype=int)
        self.edges_cond = np.array(self.edges_cond, dtype=int)


def _predicted(prob: _Problem, bins: _QuantileBins, theta: np.ndarray):
    vals = prob.design.values(theta)
    m = len(prob.data.levels)
    rts = np.concatenate([bins.edges_rt, np.full(2 * m, 1e4)])
    resp = np.concatenate([bins.edges_resp, np.tile([0, 1], m)])
    cond = np.concatenate([bins.edges_cond, np.repeat(np.arange(m), 2)])
    F = cdf(
        rts,
        resp,
        vals["v"][cond],
        vals["a"][cond],
        vals["z"][cond],
        vals["t0"][cond],
        vals["sv"][cond],
        vals["sz"][cond],
        vals["st0"][cond],
        s=prob.spec.s,
    )
    p = vals["lapse"][cond]
    lo, hi = prob.lapse_range
    F = (1 - p) * F + p * 0.5 * np.clip((rts - lo) / (hi - lo), 0, 1)
    ne = bins.edges_rt.size
    return F[:ne], F[ne:].reshape(m, 2)


def _chisq_objective(prob: _Problem, bins: _QuantileBins, statistic: str):
    def f(theta: np.ndarray) -> float:
        vals = prob.design.values(theta)
        bad = prob.design.valid(vals)
        if bad > 0:
            return _PENALTY * (1.0 + bad)
        Fe, Ptot = _predicted(prob, bins, theta)
        total = 0.0
        for k, r, sl, obs, N in bins.groups:
            cum = np.concatenate([[0.0], Fe[sl], [Ptot[k, r]]])
            pred = np.maximum(np.diff(cum), 1e-10)
            if statistic == "g2":
                o = obs[obs > 0]
                total += 2 * N * float(np.sum(o * np.log(o / pred[obs > 0])))
            else:
                total += N * float(np.sum((obs - pred) ** 2 / pred))
        return total if np.isfinite(total) else _PENALTY

    return f


# ------------------------------------------------------------------------------- fit


def fit(
    data: pd.DataFrame | RTData,
    *,
    rt: str = "rt",
    response: str = "response",
    condition: str | None = None,
    spec: ModelSpec | str | dict | None = None,
    method: str = "ml",
    rt_min: float | None = None,
    rt_max: float | None = None,
    n_starts: int = 3,
    se: bool = True,
    statistic: str = "chisq",
    seed: int = 0,
    coding: str = "accuracy",
    stimulus: str | None = None,
    upper=None,
    stimulus_upper=None,
) -> FitResult:
    """Fit the DDM by maximum likelihood ("ml"), quantile chi-square/G^2 ("chisq", Ratcliff & Tuerlinckx 2002) or EZ ("ez").

    ``condition`` is the column of ``p=rule`` specs; ``p ~ columns`` rules name their own columns.
    ``coding="stimulus"`` with ``stimulus=<column>`` fits stimulus-coded responses (see
    :func:`~noisecraft.ddm.data.prepare` for ``upper`` and ``stimulus_upper``).
    At most ``n_starts`` local fits run: from the EZ estimate, the best point of a Sobol design, a default, then
    the design's next-best points; they stop once two agree (``converged`` needs that), and a start after the first
    stops once it comes within 0.005 of the best one's NLL. With sz or st0 free the first two start from the nested
    model's optimum (sz = st0 = 0), and the global check is that nested optimum (no design unless a fourth start needs
    it). When ``converged`` is False because the starts disagree, more starts may settle it.
    """
    with _blas_one_thread():
        t_start = time.perf_counter()
        spec = _spec(spec)
        _check_method(method, statistic)
        _check_starts(n_starts)
        options = {"rt": rt, "response": response, "condition": condition, "rt_min": rt_min,
                   "rt_max": rt_max, "coding": coding, "stimulus": stimulus, "upper": upper,
                   "stimulus_upper": stimulus_upper}
        prob = _setup(data, spec, method, options)
        return _solve(prob, method, n_starts, se, statistic, seed, t_start)


_DATA_OPTIONS = ("rt", "response", "condition", "rt_min", "rt_max", "coding", "stimulus", "upper",
                 "stimulus_upper")
_SOLVE_OPTIONS = ("method", "n_starts", "se", "statistic", "seed")


def _spec(spec: ModelSpec | str | dict | None) -> ModelSpec:
    if spec is None:
        return ModelSpec()
    if isinstance(spec, str):
        return ModelSpec.load(spec)
    if isinstance(spec, dict):
        return ModelSpec.from_dict(spec)
    return spec


def _check_method(method: str, statistic: str) -> None:
    if method not in ("ml", "chisq", "ez"):
        raise ValueError(f"method={method!r}; expected 'ml', 'chisq' or 'ez'")
    if statistic not in ("chisq", "g2"):
        raise ValueError(f"statistic={statistic!r}; expected 'chisq' or 'g2'")


def _setup(data: pd.DataFrame | RTData, spec: ModelSpec, method: str, options: dict) -> _Problem:
    """Validated data and design: every check on the input, before any fitting work."""
    if not isinstance(data, RTData):
        spec.check_columns(data.columns)
        data = prepare(data, columns=spec.columns(), method=method, **options)
    lapse_range = spec.lapse_range or (0.0, float(data.rt.max()))
    return _Problem(data, spec, lapse_range)


def _check_starts(n_starts) -> None:
    if isinstance(n_starts, bool) or not isinstance(n_starts, (int, np.integer)) or n_starts < 1:
        raise ValueError(f"n_starts must be a whole number >= 1, got {n_starts!r}")


def fit_defaults() -> dict:
    """:func:`fit`'s keyword options and their defaults (data options and solver options)."""
    return {k: q.default for k, q in inspect.signature(fit).parameters.items()
            if q.kind is q.KEYWORD_ONLY and k != "spec"}


def fit_participants(
    data: pd.DataFrame,
    spec: ModelSpec | str | dict | None = None,
    *,
    by: str = "subj_idx",
    **options,
) -> pd.DataFrame:
    """One fit per value of column ``by`` (e.g. per participant), as :func:`fit` with ``options``.

    Every participant's data and design are checked before the first fit (a bad one raises a
    ValueError naming it). Returns a long table, one row per participant and parameter: ``by``,
    parameter, estimate, se, at_bound, then per fit n (trials), k, nll, aic, bic, converged, time_s.
    """
    defaults = fit_defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"fit_participants got unknown option(s) {unknown}; expected some of {sorted(defaults)}")
    if by not in data.columns:
        raise ValueError(f"by={by!r} is not a column of the data; columns are {list(data.columns)}")
    missing = data[by].isna().to_numpy()
    if missing.any():
        raise ValueError(f"column {by!r} has missing values at rows {list(data.index[missing][:10])}")
    options = {**defaults, **options}
    solve = {k: options[k] for k in _SOLVE_OPTIONS}
    opts = {k: options[k] for k in _DATA_OPTIONS}
    spec = _spec(spec)
    _check_method(solve["method"], solve["statistic"])
    _check_starts(solve["n_starts"])
    spec.check_columns(data.columns)
    problems = []
    for label, group in data.groupby(by, sort=True):
        try:
            problems.append((label, _setup(group, spec, solve["method"], opts)))
        except ValueError as err:
            raise ValueError(f"{by}={_fmt(label)}: {err}") from None
    rows = []
    with _blas_one_thread():
        for label, prob in problems:
            res = _solve(prob, **solve, t_start=time.perf_counter())
            per_fit = {"n": res.n, "k": res.k, "nll": res.nll, "aic": res.aic, "bic": res.bic,
                       "converged": res.converged, "time_s": res.time_s}
            for _, row in res.table().iterrows():
                rows.append({by: label, **row.to_dict(), **per_fit})
    return pd.DataFrame(rows)


def _solve(
    prob: _Problem, method: str, n_starts: int, se: bool, statistic: str, seed: int, t_start: float,
    global_check: bool = True,
) -> FitResult:
    """Minimise the objective of ``method`` from several starts; standard errors for ML. Without ``global_check``
    (a nested fit that only seeds starts) the Sobol design is evaluated only if a start needs it, and
    ``converged`` says only whether the starts agree."""
    data, spec, lapse_range = prob.data, prob.spec, prob.lapse_range
    if method == "ez":
        theta, table = _ez_theta(prob)
        theta = _clip(prob, theta) if np.all(np.isfinite(theta)) else theta
        nll = -float(np.sum(prob.loglik_trials(theta)))
        return FitResult(
            "ez",
            spec,
            prob.design,
            theta,
            None,
            nll,
            data.n,
            converged=True,
            time_s=time.perf_counter() - t_start,
            lapse_range=lapse_range,
            ez_per_condition=table,
            cells=data.cells,
        )

    bounds = list(zip(prob.design.lower, prob.design.upper))
    if method == "ml":
        objective = prob.nll
        jac, fun = True, prob.nll_grad
    else:
        bins = _QuantileBins(data)
        objective = _chisq_objective(prob, bins, statistic)
        jac, fun = False, objective

    # Starts in order: (for the full model two from the nested basic model's optimum,) EZ, (the nested no-lapse
    # optimum,) the Sobol best, a default, then the next Sobol points; stop after two that agree (the a/t0
    # bimodality of real data shows up as disagreeing starts). Converged also needs the end at or below a global
    # check: the Sobol design's best point; for the full model the nested model's optimum instead, a point of the
    # full model found cheaply (the design, costly on the grid, is then evaluated only if a start needs it). At
    # sz = st0 = 0 the grid interpolates log g where windows integrate g: that check allows for the grid's error
    # (at most 4e-7 per trial on the test sets; 1e-6 allowed).
    starts, best_global, nested_check = [_clip(prob, _ez_theta(prob)[0])], np.inf, np.inf
    full_ml = method == "ml" and not prob.basic
    if full_ml:  # the full model: first from the nested basic model's optimum
        basic, nested_point = _basic_starts(prob, seed)
        starts = basic + starts
        nested_check = objective(nested_point) + 1e-6 * data.n
    if len(starts) < n_starts or (global_check and not full_ml):
        sobol, sobol_values = _sobol_points(prob, objective, seed, max(16, n_starts),
                                            many=prob.nll_many if method == "ml" else None)
        starts += [sobol[0], _clip(prob, _default_theta(prob)), *sobol[1:]]
        best_global = min(best_global, float(sobol_values[0]))
    starts = starts[:n_starts]
    nested_ok = False  # a start from a converged fit of the nested model counts as two agreeing starts
    if method == "ml" and prob.spec.rules["lapse"].kind != "fixed":
        x_nested, nested_ok = _no_lapse_start(prob, seed)
        starts.insert(1, x_nested)
    tight = {"maxiter": 1000, "ftol": 1e-11, "gtol": 1e-6}
    # Starts after the first only test agreement (to 0.01 in the objective): with ML they stop once within 0.005 of
    # the best (else at a looser tolerance for the closed form); if one of them is the best, it is polished at the
    # tight one below.
    check = {**tight, "ftol": 1e-7, "gtol": 1e-3} if prob.basic else tight
    results, finals = [], []
    hess, scale = None, None  # the Hessian at the first start's end (x, inner, H), when the SEs will need one
    for x0 in starts:
        if results and method == "ml":  # a checking start: stops once it agrees with the best
            if se and hess is None:  # its diagonal scales the checking starts; it gives the SEs if that end stays best
                hess = (results[0].x.copy(), *_inner_hessian(prob, results[0].x))
                scale = _curvature_scale(x0.size, *hess[1:])
            res = _run_until_agreement(fun, x0, bounds, check, min(finals) + 0.005, scale)
        else:
            res = minimize(fun, x0, jac=jac, method="L-BFGS-B", bounds=bounds, options=check if results else tight)
        results.append(res)
        finals.append(float(res.fun))
        f = sorted(finals)
        if len(f) >= 2 and f[1] - f[0] < 0.01 and len(results) >= min(2, n_starts):
            break
    i_best = int(np.argmin(finals))
    if i_best > 0:
        pol = minimize(fun, results[i_best].x, jac=jac, method="L-BFGS-B", bounds=bounds, options=tight)
        if pol.fun <= results[i_best].fun:
            results[i_best], finals[i_best] = pol, float(pol.fun)
    x, fval = results[i_best].x, finals[i_best]
    nested_best = nested_ok and len(results) > 1 and abs(finals[1] - fval) < 0.05
    if method == "chisq":
        # The binned statistic has flat directions; a simplex polish is cheap here.
        pol = minimize(
            objective,
            x,
            method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 40 * x.size},
        )
        xp = np.clip(pol.x, prob.design.lower, prob.design.upper)
        if objective(xp) < fval:
            x, fval = xp, float(objective(xp))
    agree = nested_best or sum(abs(f - fval) < 0.05 for f in finals) >= min(2, len(finals))
    converged = bool(fval <= min(best_global + 1e-6, nested_check) and agree)

    se_vec = None
    if se and method == "ml":
        inner, H = hess[1:] if hess is not None and np.array_equal(hess[0], x) else _inner_hessian(prob, x)
        se_vec = np.full(x.size, np.nan)
        if inner.size:
            se_vec[inner] = _standard_errors(H)
    nll = prob.exact_nll(x) if method == "ml" else -float(np.sum(prob.loglik_trials(x)))
    return FitResult(
        method,
        spec,
        prob.design,
        x,
        se_vec,
        nll,
        data.n,
        statistic=None if method == "ml" else fval,
        statistic_name=None if method == "ml" else statistic,
        starts=finals,
        converged=converged,
        time_s=time.perf_counter() - t_start,
        lapse_range=lapse_range,
        cells=data.cells,
    )
