"""Sampling time grids optimised for one model and one solver at a fixed number of evaluations (NFE).

- GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling", ICML, Alg. 1): run
  a teacher on a fine log-SNR grid from a batch of prior samples, price every jump of the fine grid as the error
  of the solver's step from the teacher's state against the teacher, and pick the path of exactly `steps`
  jumps by dynamic programming. A one-step solver's jump i -> j is priced alone (the paper's DP). A
  second-order multistep solver (dpm++2m, unipc; dpm++3m as 2M) is priced with its history: the jump j -> k
  given the point i before, with the solver's own update from X_j using the teacher's x0_hat at j and i, and
  the DP runs over pairs of last points (O(steps n^3); the n^3 costs are exact quadratic forms in the Gram
  matrix of the teacher's states and x0_hats, so no network call). The ends: the fine points nearest the
  default grid's, unless `t_max` / `t_min` fix them. Errors are measured as RMS norms and carried to the end
  point with the factor s / sqrt(alpha^2 s^2 + sigma^2), exact for Gaussian data of variance s^2 (the PF-ODE
  contracts an error made at high noise), and summed (triangle inequality).
- Align Your Steps (Sabour et al. 2024, eq. 6-8 and Alg. 1): minimise the Girsanov bound on KL(true reverse
  SDE || the SDE with x0_hat frozen at each interval's start), KLUB = sum_i int sigma~^-3 E||D(x~_s, s) -
  D(x~_{s_i}, s_i)||^2 d sigma~ in the scaled variable x~ = x / alpha, estimated from data x0 on the true
  forward path (x~_{s_i} = x0 + s_i eps, x~_s drawn from the Brownian bridge), by coordinate-wise search of
  each interior time between its neighbours; the grid is then used by any solver (the paper's use with ODE
  solvers). Endpoints: the default grid's, unless given.
- "fd" (noisecraft's, the default method): coordinate descent (pattern search in log-SNR, every point, both ends
  included) on the Frechet distance (the W2 distance between Gaussian fits; diagonal covariances above 256
  coordinates) between the solver's end points on the grid and the fine teacher's end points from the same
  noise, started from the GITS grid and from the default grid, the better kept. It prices a multistep solver's
  history (and corrector) exactly, and unlike a per-sample end-point error (which an early stop at a blurred
  posterior mean E[x0 | x_t] minimises) it penalises a shrunken spread. Its objective fits first and second
  moments, which is also what the oracles' within-mode Gaussian W2 scores; digits-FD (a classifier's
  features, not the pixels it fits) is the check that it generalises. Measured in benchmarks/optimize_grid.py.

Every method reports the same measured errors: the RMS end-point error and the Frechet distance against the
fine teacher, beside the default grid's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64
from noisecraft.core.timesteps import uniform_log_snr, validate_times
from noisecraft.metrics.distribution import gaussian_w2
from noisecraft.solvers._steps import exponential_taylor_step, point
from noisecraft.solvers.dpm import multistep
from noisecraft.solvers.driver import CountingDenoise, sample, solve
from noisecraft.solvers.registry import SolverSpec, check_options, get_solver

METHODS = ("gits", "ays", "fd")
FULL_COVARIANCE_MAX = 256  # coordinates; above, the Frechet distance uses diagonal covariances
PAIR_POINTS = 61  # fine points the pair DP uses at most (its costs grow as n^3)
TEACHER_SOLVER = "dpm++2s"  # one step per interval and second order, so its states can be chained interval by interval


@dataclass
class GridInfo:
    """What an optimisation found: the grid, its steps and NFE, its RMS end-point error and Frechet distance
    against the fine teacher and the default grid's (same noise), and the objective after each iteration."""

    method: str
    solver: str
    steps: int
    nfe: int
    times: Tensor
    error: float
    default_error: float
    fd: float
    default_fd: float
    history: list[float] = field(default_factory=list)


@dataclass
class TeacherPath:
    """A fine solve from prior noise z: the fine times, the state and x0_hat at each, and the end point x0."""

    z: Tensor
    times: Tensor
    states: list[Tensor]
    x0_hats: list[Tensor]
    x0: Tensor


# -- checks ----------------------------------------------------------------------------------------
def steps_for_nfe(solver: str, nfe: int, options: dict | None = None) -> int:
    """Grid intervals that spend at most `nfe` evaluations, the final clean estimate included."""
    per_step = get_solver(solver).evaluations_per_step(options)
    if per_step == 0:
        raise ValueError(f"solver {solver!r} is adaptive (it picks its own steps); a grid needs a fixed-step solver")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < per_step + 1:
        raise ValueError(f"`nfe` must be an integer >= {per_step + 1} for solver {solver!r} "
                         f"({per_step} evaluation(s) a step + 1 final), got {nfe!r}")
    return (nfe - 1) // per_step


def check_data(data: Any, shape: tuple[int, ...] | None) -> Tensor:
    """Data samples x0 as a tensor (n >= 2, *shape), finite."""
    if not isinstance(data, Tensor):
        raise ValueError(f"`data` must be a tensor of samples (n, *shape), got {type(data).__name__}")  # noqa: TRY004 (user input, one error type at the boundary)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"`data` must have shape (n >= 2, *sample_shape), got {tuple(data.shape)}")
    if shape is not None and tuple(data.shape[1:]) != tuple(shape):
        raise ValueError(f"`data` samples have shape {tuple(data.shape[1:])}; the model's samples have shape {tuple(shape)}")
    if not torch.isfinite(data).all():
        raise ValueError(f"`data` holds {int((~torch.isfinite(data)).sum())} non-finite values (NaN or inf); expected finite numbers")
    return data


def _check_range(schedule: Schedule, t_min: float | None, t_max: float | None) -> tuple[float, float]:
    lo = schedule.t_min if t_min is None else float(t_min)
    hi = schedule.t_max if t_max is None else float(t_max)
    if not schedule.t_min <= lo < hi <= schedule.t_max:
        raise ValueError(f"need {schedule.t_min} <= `t_min` < `t_max` <= {schedule.t_max}, got t_min={lo}, t_max={hi}")
    return lo, hi


# -- shared pieces ---------------------------------------------------------------------------------
def default_times(schedule: Schedule, solver: str, steps: int) -> Tensor:
    """The grid `sample` uses when given none (whatever rule chooses it), read from a free dry run."""
    def zero(x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    return sample(zero, schedule, solver, steps, shape=(1, 1), dtype=FLOAT64, return_info=True)[1].times


def _log_snr(schedule: Schedule, t: float | Tensor) -> Tensor:
    return schedule.log_snr(torch.as_tensor(t, dtype=FLOAT64))


def _times_from_log_snr(schedule: Schedule, lam: Tensor, ends: tuple[float, float] | None = None) -> Tensor:
    times = schedule.t_from_log_snr(lam.to(FLOAT64)).to(FLOAT64).clamp(schedule.t_min, schedule.t_max)
    if ends is not None:
        times[0], times[-1] = ends
    return times


def rms(x: Tensor, y: Tensor) -> float:
    """Root mean square difference per coordinate."""
    return float(((x.to(FLOAT64) - y.to(FLOAT64)) ** 2).mean().sqrt())


def teacher_solve(denoise: Callable, schedule: Schedule, z: Tensor, times: Tensor) -> TeacherPath:
    """The teacher (DPM-Solver++(2S), chained interval by interval) on a fine grid from x_T = sigma(t_0) z."""
    step = get_solver(TEACHER_SOLVER)
    x = float(schedule.sigma(float(times[0]))) * z
    states, x0_hats = [], []
    for i in range(len(times)):
        states.append(x)
        x0_hats.append(denoise(x, float(times[i])))
        if i + 1 < len(times):
            x = step.fn(denoise, schedule, x, times[i:i + 2], None, **step.options)
    return TeacherPath(z, times, states, x0_hats, x0_hats[-1])


def endpoints(denoise: Callable, schedule: Schedule, solver: str, times: Tensor, teacher: TeacherPath,
              options: dict) -> Tensor:
    """The solver's end points on `times` from the teacher's noise z (x_T = sigma(t_0) z, as `sample` draws)."""
    x_T = float(schedule.sigma(float(times[0]))) * teacher.z
    return solve(denoise, schedule, x_T, times, solver, **options)[0]


def frechet(x: Tensor, y: Tensor) -> float:
    """W2 between Gaussian fits of two sample sets (Frechet distance); diagonal covariances in high dimension."""
    x, y = x.reshape(x.shape[0], -1).to(FLOAT64), y.reshape(y.shape[0], -1).to(FLOAT64)
    if x.shape[1] <= FULL_COVARIANCE_MAX:
        return gaussian_w2(x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1), y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1))
    return float((((x.mean(0) - y.mean(0)) ** 2).sum() + ((x.std(0) - y.std(0)) ** 2).sum()).sqrt())


def propagation(schedule: Schedule, times: Tensor, data_var: float) -> Tensor:
    """s / sqrt(alpha^2 s^2 + sigma^2): how an error in x_t reaches x_0 along the PF-ODE of Gaussian data of
    variance s^2 (in x~ = x / alpha the flow scales x~ - mean by s / sqrt(s^2 + sigma~^2))."""
    alpha, sigma = schedule.alpha(times).to(FLOAT64), schedule.sigma(times).to(FLOAT64)
    s = math.sqrt(max(data_var, 1e-12))
    return s / torch.sqrt(alpha**2 * s**2 + sigma**2)


# -- GITS ------------------------------------------------------------------------------------------
class _TeacherCache:
    """denoise that returns the teacher's x0_hat for the teacher's own state at its own time (no evaluation)."""

    def __init__(self, denoise: Callable, teacher: TeacherPath) -> None:
        self.denoise, self.teacher = denoise, teacher
        self.index = {float(t): i for i, t in enumerate(teacher.times)}

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        i = self.index.get(float(t) if not isinstance(t, Tensor) else float(t.reshape(-1)[0]))
        if i is not None and x is self.teacher.states[i]:
            return self.teacher.x0_hats[i]
        return self.denoise(x, t)


def _mean_norm(x: Tensor) -> float:
    """sqrt(E||x||^2) over the batch: the unit of every GITS cost (the pair costs are exact quadratic forms in it)."""
    return float((x.reshape(x.shape[0], -1).to(FLOAT64) ** 2).sum(dim=1).mean().sqrt())


def gits_costs(denoise: Callable, schedule: Schedule, spec: SolverSpec, teacher: TeacherPath, options: dict,
               max_jump: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(jump costs C[i, j], start costs S[i], end costs E[j]), each the mean norm of an error carried to x_0.

    C[i, j]: one solver step from the teacher at t_i to t_j against the teacher at t_j (Chen et al. 2024, eq. 9);
    S[i]: the prior draw sigma(t_i) z against the teacher at t_i; E[j]: x0_hat at t_j against the teacher's end."""
    cached, times, n = _TeacherCache(denoise, teacher), teacher.times, len(teacher.times)
    data_var = float(teacher.x0.to(FLOAT64).var(dim=0).mean())
    carry = propagation(schedule, times, data_var)
    costs = torch.full((n, n), math.inf, dtype=FLOAT64)
    for i in range(n - 1):
        for j in range(i + 1, n if max_jump is None else min(n, i + 1 + max_jump)):
            x_j = spec.fn(cached, schedule, teacher.states[i], times[[i, j]], None, **{**spec.options, **options})
            costs[i, j] = _mean_norm(x_j - teacher.states[j]) * float(carry[j])
    sigmas = schedule.sigma(times).to(FLOAT64)
    start = torch.tensor([_mean_norm(float(sigmas[i]) * teacher.z - teacher.states[i]) * float(carry[i])
                          for i in range(n)], dtype=FLOAT64)
    end = torch.tensor([_mean_norm(x0 - teacher.x0) for x0 in teacher.x0_hats], dtype=FLOAT64)
    return costs, start, end


def gits_path(costs: Tensor, start: Tensor, end: Tensor, steps: int) -> tuple[list[int], float]:
    """The increasing index path with exactly `steps` jumps minimising S[i_0] + sum C[i_k, i_k+1] + E[i_N]
    (dynamic programming over the number of jumps taken, Chen et al. 2024, Alg. 1), and its cost."""
    n = costs.shape[0]
    if not 1 <= steps <= n - 1:
        raise ValueError(f"`steps` must be between 1 and {n - 1} (the fine grid's intervals), got {steps}")
    value, back = start.clone(), []
    for _ in range(steps):
        total = value[:, None] + costs  # total[i, j]: reach i, then jump to j
        value, arg = total.min(dim=0)
        back.append(arg)
    last = int(torch.argmin(value + end))
    best = float(value[last] + end[last])
    if not math.isfinite(best):
        raise ValueError(f"no path of {steps} jumps: raise `fine_steps` or `max_jump`")
    path = [last]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1], best


def gits(denoise: Callable, schedule: Schedule, spec: SolverSpec, teacher: TeacherPath, steps: int, options: dict,
         ends: tuple[float, float], max_jump: int | None = None, history: bool = True) -> tuple[Tensor, list[float]]:
    """The GITS grid on the teacher's fine times from the fine point nearest ends[0] to the one nearest ends[1]
    (t_max, t_min), and [its DP cost]. A second-order multistep solver is priced with its history
    (`gits_history_costs`, DP over pairs, on at most PAIR_POINTS of the fine points) unless history=False."""
    if history and history_order(spec, options):
        keep = torch.linspace(0, len(teacher.times) - 1, min(len(teacher.times), PAIR_POINTS)).round().long().unique()
        teacher = TeacherPath(teacher.z, teacher.times[keep], [teacher.states[i] for i in keep],
                              [teacher.x0_hats[i] for i in keep], teacher.x0)
        costs = gits_history_costs(schedule, teacher, max_jump)
        start, end = _pin_ends(schedule, teacher.times, costs["start"], costs["end"], ends)
        path, best = gits_pair_path(start, costs["first"], costs["pair"], end, steps)
    else:
        costs, start, end = gits_costs(denoise, schedule, spec, teacher, options, max_jump)
        start, end = _pin_ends(schedule, teacher.times, start, end, ends)
        path, best = gits_path(costs, start, end, steps)
    return teacher.times[path].clone(), [best]


def _pin_ends(schedule: Schedule, times: Tensor, start: Tensor, end: Tensor, ends: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Allow the path to start only at the fine point nearest ends[0] and end only at the one nearest ends[1] (in
    log-SNR). Left free, the DP stops early: x0_hat at a large t, a blurred posterior mean, has a small per-sample
    error but the wrong spread (measured in docs/benchmarks/optimize_grid.md)."""
    lam = _log_snr(schedule, times)
    first = int(torch.argmin((lam - _log_snr(schedule, ends[0])).abs()))
    last = int(torch.argmin((lam - _log_snr(schedule, ends[1])).abs()))
    index = torch.arange(len(times))
    return (torch.where(index == first, start, math.inf).to(FLOAT64),
            torch.where(index == last, end, math.inf).to(FLOAT64))


# -- GITS with the multistep history ---------------------------------------------------------------
def history_order(spec: SolverSpec, options: dict) -> int:
    """Points of x0_hat history a step of `spec` uses beyond its own (1 for DPM-Solver++(2M) and UniPC here; 0:
    a one-step solver, priced by `gits_costs`). Third-order multistep is priced with two points of history."""
    merged = {**spec.options, **options}
    return 1 if spec.fn is multistep and int(merged.get("order", 1)) >= 2 else 0


def _gram(teacher: TeacherPath) -> Tensor:
    """G[p, q] = E_batch <v_p, v_q> over the basis v = (teacher states X_0..X_n-1, x0_hats D_0..D_n-1)."""
    flat = torch.stack([v.reshape(v.shape[0], -1).to(FLOAT64) for v in teacher.states + teacher.x0_hats], dim=1)
    return torch.einsum("bpf,bqf->pq", flat, flat) / flat.shape[0]


def _jump(points: list, j: int, k: int, before: list[int]) -> tuple[list[float], list[int]]:
    """The solver's own update from the teacher's state X_j to t_k with history D_j, D_before as coefficients on
    the basis (X_j, D_j, D_before..., X_k), X_k subtracted: exponential_taylor_step, the arithmetic `multistep`
    runs, applied to one-hot vectors (it is linear in them)."""
    used = [j, *before]
    basis = torch.eye(1 + len(used), dtype=FLOAT64)
    x_k = exponential_taylor_step(basis[0], points[j], points[k], [(points[m].eta, basis[1 + a]) for a, m in enumerate(used)])
    return [*x_k.tolist(), -1.0], [j] + [len(points) + m for m in used] + [k]


def _quadratic_cost(gram: Tensor, coefficients: list[list[float]], indices: list[list[int]]) -> Tensor:
    """sqrt(c^T G c) for each jump: the RMS norm of its error, from the Gram matrix (no tensor work per jump)."""
    c, idx = torch.tensor(coefficients, dtype=FLOAT64), torch.tensor(indices)
    g = gram[idx[:, :, None], idx[:, None, :]]
    return torch.einsum("ta,tab,tb->t", c, g, c).clamp_min(0.0).sqrt()


def gits_history_costs(schedule: Schedule, teacher: TeacherPath, max_jump: int | None = None) -> dict[str, Tensor]:
    """Costs of a second-order multistep solver's jumps given the point before (the DP of Chen et al. 2024 with
    the history of DPM-Solver++(2M), Lu et al. 2022b Alg. 2):

    first[i, j]: the first-order warm-up step i -> j from X_i; pair[i, j, k]: the step j -> k from X_j with the
    teacher's D_j, D_i; start[i], end[k]: as in `gits_costs`. Each is the RMS norm of the error at the jump's end
    against the teacher, carried to x_0 as there, computed exactly from the Gram matrix of the teacher's states
    and x0_hats. UniPC is priced by its predictor: pricing its corrector at the teacher's D_k (the only price free
    of n^3 network evaluations) ignores the predictor error fed through the network, and the DP then takes
    one huge jump (measured worse, docs/benchmarks/optimize_grid.md)."""
    times, n = teacher.times, len(teacher.times)
    points = [point(schedule, float(t)) for t in times]
    carry = propagation(schedule, times, float(teacher.x0.to(FLOAT64).var(dim=0).mean()))
    gram, reach = _gram(teacher), n if max_jump is None else max_jump

    def table(jumps: list[tuple[int, ...]]) -> Tensor:
        rows = [_jump(points, jump[-2], jump[-1], list(jump[:-2])) for jump in jumps]
        cost = torch.full((n,) * len(jumps[0]), math.inf, dtype=FLOAT64)
        at = tuple(torch.tensor(axis) for axis in zip(*jumps, strict=True))
        cost[at] = _quadratic_cost(gram, [r[0] for r in rows], [r[1] for r in rows]) * carry[at[-1]]
        return cost

    pairs = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + reach))]
    triples = [(i, j, k) for i, j in pairs for k in range(j + 1, min(n, j + 1 + reach))]
    sigmas = schedule.sigma(times).to(FLOAT64)
    start = [_mean_norm(float(sigmas[i]) * teacher.z - teacher.states[i]) * float(carry[i]) for i in range(n)]
    end = [_mean_norm(x0 - teacher.x0) for x0 in teacher.x0_hats]
    return {"first": table(pairs), "pair": table(triples) if triples else torch.full((n, n, n), math.inf, dtype=FLOAT64),
            "start": torch.tensor(start, dtype=FLOAT64), "end": torch.tensor(end, dtype=FLOAT64)}


def gits_pair_path(start: Tensor, first: Tensor, pair: Tensor, end: Tensor, steps: int) -> tuple[list[int], float]:
    """The increasing path of exactly `steps` jumps minimising S[i_0] + F[i_0, i_1] + sum P[i_m-1, i_m, i_m+1]
    + E[i_N]: dynamic programming over the last two points (what a second-order multistep step depends on),
    O(steps n^3)."""
    n = start.shape[0]
    if not 1 <= steps <= n - 1:
        raise ValueError(f"`steps` must be between 1 and {n - 1} (the fine grid's intervals), got {steps}")
    index = torch.arange(n)
    up = index[:, None] < index[None, :]  # only increasing paths, whatever the tables hold below the diagonal
    first = torch.where(up, first, math.inf)
    pair = torch.where(up[:, :, None] & up[None, :, :], pair, math.inf)
    value, back = start[:, None] + first, []  # value[i, j]: the cheapest path whose last two points are i, j
    for _ in range(steps - 1):
        value, arg = (value[:, :, None] + pair).min(dim=0)
        back.append(arg)
    total = value + end[None, :]
    flat = int(torch.argmin(total))
    best = float(total.reshape(-1)[flat])
    if not math.isfinite(best):
        raise ValueError(f"no path of {steps} jumps: raise `fine_steps` or `max_jump`")
    path = [flat // n, flat % n]
    for arg in reversed(back):
        path.insert(0, int(arg[path[0], path[1]]))
    return path, best


# -- Align Your Steps ------------------------------------------------------------------------------
class KLUB:
    """Monte-Carlo estimate of the KL upper bound of one interval (Sabour et al. 2024, eq. 8), a deterministic
    function of (t_start, t_end): fixed data x0, noise eps, bridge noises and quadrature nodes (common random
    numbers), so that a coordinate search compares grids on the same draws."""

    def __init__(self, denoise: Callable, schedule: Schedule, x0: Tensor, nodes: int, generator: torch.Generator) -> None:
        self.denoise, self.schedule, self.x0 = denoise, schedule, x0
        self.eps = torch.randn(x0.shape, generator=generator, dtype=FLOAT64).to(x0.dtype)
        self.bridge = [torch.randn(x0.shape, generator=generator, dtype=FLOAT64).to(x0.dtype) for _ in range(nodes)]
        self.u = (torch.arange(nodes, dtype=FLOAT64) + 0.5) / nodes
        self._start: dict[float, Tensor] = {}

    def _D(self, x_tilde: Tensor, sigma_tilde: float) -> Tensor:
        """The denoiser in x~ = x / alpha: D(x~, sigma~) = x0_hat(alpha x~, t(sigma~))."""
        t = float(self.schedule.t_from_log_snr(torch.tensor(-2.0 * math.log(sigma_tilde), dtype=FLOAT64)))
        return self.denoise(float(self.schedule.alpha(t)) * x_tilde, t)

    def _at_start(self, sigma_a: float) -> Tensor:
        if sigma_a not in self._start:
            self._start[sigma_a] = self._D(self.x0 + sigma_a * self.eps, sigma_a)
        return self._start[sigma_a]

    def __call__(self, t_start: float, t_end: float) -> float:
        """int_{s_end}^{s_start} s^-3 E||D(x~_s, s) - D(x~_start, s_start)||^2 ds (midpoint rule in log s)."""
        sigma_a, sigma_b = float(self.schedule.sigma_tilde(t_start)), float(self.schedule.sigma_tilde(t_end))
        d_a, x_a = self._at_start(sigma_a), self.x0 + sigma_a * self.eps
        log_a, log_b, total = math.log(sigma_a), math.log(sigma_b), 0.0
        for u, z in zip(self.u.tolist(), self.bridge):
            s = math.exp(log_b + u * (log_a - log_b))
            r = (s / sigma_a) ** 2  # Brownian bridge between x0 (variance 0) and x~_a (variance sigma_a^2)
            x_s = self.x0 + r * (x_a - self.x0) + s * math.sqrt(1.0 - r) * z
            gap = (self._D(x_s, s) - d_a).reshape(len(self.x0), -1).to(FLOAT64)
            total += float((gap**2).sum(dim=1).mean()) / s**2
        return total * (log_a - log_b) / len(self.u)


def ays(klub: KLUB, times: Tensor, candidates: int = 8, sweeps: int = 6, tol: float = 1e-3) -> tuple[Tensor, list[float]]:
    """Coordinate-wise KLUB minimisation (Sabour et al. 2024, Alg. 1): each interior t_i in turn moves to the best
    of `candidates` times between its neighbours (uniform in log sigma~, the current one kept), until a sweep
    gains less than `tol` (relative); returns the grid and the total KLUB before and after each sweep."""
    times = times.clone()
    parts = [klub(float(a), float(b)) for a, b in itertools.pairwise(times)]
    history = [sum(parts)]
    for _ in range(sweeps):
        for i in range(1, len(times) - 1):
            best = (parts[i - 1] + parts[i], float(times[i]), parts[i - 1], parts[i])
            for t in _between(klub.schedule, float(times[i - 1]), float(times[i + 1]), candidates):
                left, right = klub(float(times[i - 1]), t), klub(t, float(times[i + 1]))
                if left + right < best[0]:
                    best = (left + right, t, left, right)
            times[i], parts[i - 1], parts[i] = best[1], best[2], best[3]
        history.append(sum(parts))
        if history[-2] - history[-1] <= tol * abs(history[-2]):
            break
    return times, history


def _between(schedule: Schedule, t_hi: float, t_lo: float, count: int) -> list[float]:
    """`count` times strictly between t_lo < t_hi, uniform in log-SNR."""
    lam = torch.linspace(float(_log_snr(schedule, t_hi)), float(_log_snr(schedule, t_lo)), count + 2, dtype=FLOAT64)[1:-1]
    times = schedule.t_from_log_snr(lam).to(FLOAT64).tolist()
    return [t for t in times if t_lo < t < t_hi]


# -- coordinate descent on the teacher's distribution ----------------------------------------------
def coordinate_search(objective: Callable[[Tensor], float], schedule: Schedule, times: Tensor, sweeps: int = 12,
             step: float = 0.5, fixed_start: bool = False, fixed_end: bool = False) -> tuple[Tensor, list[float]]:
    """Pattern search in log-SNR on objective(times): each point in turn tries +-step inside its neighbours (the
    ends inside the schedule's range) and keeps the better grid; a sweep without a gain halves the step."""
    lam = _log_snr(schedule, times).clone()
    lo, hi = float(_log_snr(schedule, schedule.t_max)), float(_log_snr(schedule, schedule.t_min))
    current = objective(times)
    history = [current]
    movable = range(1 if fixed_start else 0, len(lam) - (1 if fixed_end else 0))
    for _ in range(sweeps):
        improved = False
        for k in movable:
            left = float(lam[k - 1]) if k > 0 else lo
            right = float(lam[k + 1]) if k + 1 < len(lam) else hi
            margin = 1e-3 * (right - left)
            for value in (float(lam[k]) - step, float(lam[k]) + step):
                if not left + margin < value < right - margin:
                    continue
                trial = lam.clone()
                trial[k] = value
                score = objective(_times_from_log_snr(schedule, trial))
                if score < current:
                    lam, current, improved = trial, score, True
        history.append(current)
        step = step if improved else step / 2
    times = _times_from_log_snr(schedule, lam)
    return validate_times(schedule, times), history


# -- the entry point -------------------------------------------------------------------------------
def _prior_noise(shape: tuple[int, ...], batch: int, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    return torch.randn((batch, *shape), generator=generator, dtype=FLOAT64).to(dtype)


def optimize_grid(
    denoise: Callable,
    schedule: Schedule,
    nfe: int = 5,
    solver: str = "dpm++2m",
    data: Tensor | None = None,
    method: str = "fd",
    shape: tuple[int, ...] | None = None,
    batch: int = 256,
    fine_steps: int = 120,
    t_min: float | None = None,
    t_max: float | None = None,
    seed: int = 0,
    max_jump: int | None = None,
    history: bool = True,
    return_info: bool = False,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, GridInfo]:
    """A time grid for `solver` at `nfe` evaluations (final clean estimate included), optimised for `denoise`.

    method: "fd" (the default: coordinate descent on the Frechet distance to the teacher's end points, started
    at GITS and at the default grid; best on both oracles and on digits, docs/benchmarks/optimize_grid.md),
    "gits" (DP over a fine teacher, Chen et al. 2024; a second-order multistep solver priced with its history
    unless history=False) or "ays" (KLUB, Sabour et al. 2024; needs `data`, samples x0 of shape (n, *shape)). 
    `shape` is one sample's shape (taken from `data` when given). t_min / t_max fix the grid's ends; left None,
    GITS takes the fine points nearest the default grid's ends, AYS keeps the default grid's and fd moves them
    inside the schedule's range. Returns a strictly decreasing float64 tensor that `sample(..., grid=times)` accepts; with
    return_info, also a GridInfo with its measured RMS end-point error against the teacher and the default's.
    """
    spec, steps = get_solver(solver), steps_for_nfe(solver, nfe, options)
    check_options(solver, options)
    if method not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; expected one of {list(METHODS)}")
    if method != "ays" and spec.stochastic:
        raise ValueError(f"method {method!r} follows a deterministic trajectory; solver {solver!r} is stochastic (use method 'ays')")
    if method == "ays" and data is None:
        raise ValueError("method 'ays' estimates its KL bound from data samples: pass `data`, a tensor (n, *sample_shape)")
    if data is not None:
        data = check_data(data, shape)
        shape = tuple(data.shape[1:])
    if shape is None:
        raise ValueError("pass `shape`, one sample's shape such as (2,), or `data`")
    for name, value in (("batch", batch), ("fine_steps", fine_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"`{name}` must be an integer >= 2, got {value!r}")
    if fine_steps < steps:
        raise ValueError(f"`fine_steps` ({fine_steps}) must be at least the grid's steps ({steps})")
    lo, hi = _check_range(schedule, t_min, t_max)
    dtype = dtype or (data.dtype if data is not None else torch.float64)
    generator = torch.Generator().manual_seed(int(seed))
    counted = CountingDenoise(denoise)
    teacher = teacher_solve(counted, schedule, _prior_noise(shape, batch, dtype, generator),
                            uniform_log_snr(schedule, fine_steps, lo, hi))

    def ends(times: Tensor) -> Tensor:
        return endpoints(denoise, schedule, solver, times, teacher, options)

    default = default_times(schedule, solver, steps)
    fixed = {"fixed_start": t_max is not None, "fixed_end": t_min is not None}
    if method == "ays":
        start = default if t_min is None and t_max is None else uniform_log_snr(
            schedule, steps, lo if t_min is not None else float(default[-1]), hi if t_max is not None else float(default[0]))
        x0 = data[torch.randperm(len(data), generator=generator)[:batch]]
        times, trace = ays(KLUB(counted, schedule, x0, 8, generator), start)
    else:
        times, trace = gits(counted, schedule, spec, teacher, steps, options, (hi if t_max is not None else float(default[0]),
                             lo if t_min is not None else float(default[-1])), max_jump, history)
    if method == "fd":
        searches = [coordinate_search(lambda g: frechet(ends(g), teacher.x0), schedule, begin, **fixed)
                    for begin in (times, default) if _inside(begin, lo, hi, **fixed)]
        times, trace = min(searches, key=lambda found: found[1][-1])
    times = validate_times(schedule, times)
    if not return_info:
        return times
    mine, theirs = ends(times), ends(default)
    return times, GridInfo(method, solver, steps, spec.nfe(steps, options), times, rms(mine, teacher.x0),
                           rms(theirs, teacher.x0), frechet(mine, teacher.x0), frechet(theirs, teacher.x0), trace)


def _inside(times: Tensor, lo: float, hi: float, fixed_start: bool, fixed_end: bool) -> bool:
    """Whether a starting grid honours the fixed ends (the default grid need not)."""
    return (not fixed_start or abs(float(times[0]) - hi) < 1e-12) and (not fixed_end or abs(float(times[-1]) - lo) < 1e-12)


__all__ = [
    "KLUB",
    "METHODS",
    "GridInfo",
    "TeacherPath",
    "ays",
    "check_data",
    "coordinate_search",
    "default_times",
    "endpoints",
    "frechet",
    "gits",
    "gits_costs",
    "gits_history_costs",
    "gits_pair_path",
    "gits_path",
    "history_order",
    "optimize_grid",
    "steps_for_nfe",
    "teacher_solve",
]
