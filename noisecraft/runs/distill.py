"""Distillation of a diffusion model into a student that samples in 1-4 network evaluations.

Two methods here, each a replacement of the diffusion loss inside the one training loop (noisecraft.runs.loop,
driven through noisecraft.runs.train.DiffusionStep), and a third for one evaluation:

- consistency distillation (Song et al. 2023, "Consistency Models", Alg. 2) with the choices of Song &
  Dhariwal 2023 ("Improved Techniques for Training Consistency Models") that carry over to distillation:
  pseudo-Huber distance with c = 0.00054 sqrt(d), discretisation curriculum N(k) doubling from s0 to s1,
  levels drawn from the discretised lognormal (P_mean -1.1, P_std 2.0), weight 1 / (sigma_{n+1} - sigma_n),
  and no EMA target: the target network is the student itself under stop-gradient. The teacher's step
  from sigma_{n+1} to sigma_n is one step of a noisecraft solver (Heun by default, as in Song et al.) on the
  teacher's denoiser. The student samples with multistep consistency sampling (noisecraft.solvers.consistency).
- progressive distillation (Salimans & Ho 2022, Alg. 2): rounds that halve the step count from the teacher's
  DDIM on a grid of steps * 2^R intervals; each student starts from the previous one (the teacher's weights
  for the first), regresses in x0-space onto the x that two teacher DDIM steps reach from z_t, with the
  truncated-SNR weight max(alpha^2 / sigma^2, 1); it samples with DDIM.
- regression onto the teacher's ODE ends (Luhman & Luhman 2021), 1 evaluation only: noisecraft.runs.regress,
  which `distill(method="regression")` calls (it trains on reflow's coupling rather than in this loop).

Noise levels are the schedule's sigma~ = sigma / alpha (Karras et al. 2022), so the same code serves VP, VE,
EDM and flow schedules. The student keeps the teacher's network, loss parameterisation and schedule, so it is
an ordinary run directory (config.yaml, checkpoints/, metrics.jsonl) that `load_run` and `noisecraft sample`
use unchanged: its config's `sample` section holds its solver and grid, `distill` its teacher and method.

Step count: `steps` K is the student's network evaluations per sample. A progressive student's grid is the K
noisiest times of the teacher's named grid with K intervals, t_0 = t_max > ... > t_{K-1}: K - 1 solver steps and
the driver's final clean estimate x0_hat(x, t_{K-1}), the last interval's jump to the clean end (K = 1:
x0_hat(x_T, t_max)). A consistency student, when the teacher's sampler leaves t_max open (consistency_times),
starts where noisecraft's few-step samplers start, the step-aware sigma~ = max(25, K^1.25)
(noisecraft.core.timesteps.step_aware_range), because its level distribution trains the top of the range least,
and its last jump starts at sigma~ = 0.5 (LAST_SIGMA_TILDE), where re-noising still washes out earlier errors.

Boundary condition: the student keeps the teacher's parameterisation, whose c_skip(sigma_min) is 1 only up to
sigma_min^2 / sigma_data^2 (EDM: 1 - 1.6e-5); the boundary f(x, sigma_min) = x / alpha is imposed exactly in
the target of the first interval instead, where Alg. 2 would evaluate f there. Song et al.'s own c_skip, c_out
(shifted by sigma_min so that the boundary holds exactly) differ from EDM's by O(sigma_min / sigma) and measured
no better on the ring oracle (docs/benchmarks/distill.md), so the student keeps the teacher's.

Random draws: batch, noise and label dropout come from DiffusionStep (pure functions of (seed, step)); the
noise levels from the stream (seed + LEVEL_SEED, step). Distillation is not resumable: it writes its final
checkpoint (consistency also every train.checkpoint_every steps) and refuses a directory that holds one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.core.bounds import clipped
from noisecraft.core.noise import stream_generator
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64, expand_like
from noisecraft.core.timesteps import make_grid, step_aware_range
from noisecraft.data import Dataset
from noisecraft.runs.checkpoint import check_new_run_dir, checkpoints, training_seconds
from noisecraft.runs.config import DistillConfig, RunConfig, TrainConfig
from noisecraft.runs.ema import EMA
from noisecraft.runs.latent import training_data
from noisecraft.runs.lock import run_lock
from noisecraft.runs.loop import Loop, LoopState, make_optimizer
from noisecraft.runs.threads import use_threads
from noisecraft.runs.train import (
    DiffusionStep,
    _fresh_dir_removed_on_failure,
    _mixed_precision,
    _saver,
    _write_run_files,
)
from noisecraft.solvers.ancestral import ddim
from noisecraft.solvers.config import SolverConfig
from noisecraft.solvers.driver import final_step
from noisecraft.solvers.registry import get_solver
from noisecraft.validation import check_field

METHODS: tuple[str, ...] = ("consistency", "progressive", "regression")
#: offset of the seed whose streams draw the noise levels (apart from DiffusionStep's streams of `seed`)
LEVEL_SEED = 7919
#: Song & Dhariwal 2023, sec. 3.5: the discretised lognormal over sigma and the pseudo-Huber constant per sqrt(d)
P_MEAN, P_STD, HUBER_C = -1.1, 2.0, 0.00054
#: Karras et al. 2022's rho for the consistency levels (Song et al. 2023, sec. 6)
RHO = 7.0
#: the default distillation budget is at most this many times the teacher's training time (issue 17)
BUDGET_FACTOR = 2.0
#: sigma~ where a consistency student's last jump starts at K >= 2: EDM's sigma_data (Karras et al. 2022, Table 1),
#: the spread of unit-scale data (consistency_times)
LAST_SIGMA_TILDE = 0.5

DenoiseFn = Callable[..., Tensor]


# -- the teacher --------------------------------------------------------------------------------------------
@dataclass
class Teacher:
    """A model to distil: its denoiser x0_hat(x, t[, cond]) on `schedule`, and the run config the student
    takes (network, loss parameterisation, data, sampling bounds). `weights` initialise the student (a run's
    EMA weights); None starts a fresh network. `module` is the network behind `denoise`, if any (frozen and
    moved to the training device)."""

    denoise: DenoiseFn
    schedule: Schedule
    config: RunConfig
    weights: dict[str, Tensor] | None = None
    module: nn.Module | None = None
    source: str = "a denoiser function"
    seconds: float | None = None  # its training time (its config's clock), when known: bounds the default budget

    def __post_init__(self) -> None:
        if self.schedule != self.config.loss.schedule:
            raise ValueError("the teacher's schedule differs from the student config's loss.schedule; expected the "
                             "same schedule (the student is evaluated at the teacher's times)")

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Teacher:
        """The run in `run_dir` (EMA weights), bounded as it samples (its clip or threshold)."""
        from noisecraft.runs.pipeline import load_run

        pipe = load_run(run_dir)
        return cls(clipped(pipe.network, *pipe.bounds), pipe.schedule, pipe.config,
                   {k: v.clone() for k, v in pipe.net.state_dict().items()}, pipe.net, str(Path(run_dir)),
                   training_seconds(Path(run_dir) / "checkpoints"))

    def to(self, device: torch.device) -> Teacher:
        if self.module is not None:
            self.module.to(device).eval().requires_grad_(False)
        return self


def check_teacher_run(run_dir: str | Path) -> Path:
    """`run_dir` as a Path if it holds a trained run (config.yaml and a checkpoint), else a ValueError."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ValueError(f"teacher {str(path)!r} is not a run directory: expected config.yaml (made by "
                         "`noisecraft train`)")
    if not checkpoints(path / "checkpoints"):
        raise ValueError(f"teacher {str(path)!r} holds no checkpoint yet: train it first")
    return path


# -- grids --------------------------------------------------------------------------------------------------
def student_times(schedule: Schedule, steps: int, base: SolverConfig) -> Tensor:
    """The first K = steps times of the base sampler's named grid (distill's `grid`) with K intervals between its
    t_max and t_min:
    t_0 = t_max > ... > t_{K-1} (float64). The K-th interval ends at the clean sample, reached by the final
    x0_hat(x, t_{K-1}). Grids uniform in some variable nest: the grid of K is every 2nd time of the grid of 2K."""
    grid = base.grid if isinstance(base.grid, str) else "log_snr"
    return make_grid(schedule, steps, grid, base.t_min, base.t_max)[:steps]


def consistency_times(schedule: Schedule, steps: int, base: SolverConfig) -> Tensor:
    """A consistency student's K = steps times: t_0 the step-aware start sigma~ = max(25, K^1.25)
    (step_aware_range), t_{K-1} at sigma~ = LAST_SIGMA_TILDE (not below base's t_min), and K - 1 intervals of
    base's named grid between them (float64). A base that fixes t_max, or a schedule that starts below the
    step-aware start, keeps student_times.

    Why the start: Song & Dhariwal 2023's lognormal levels and 1/(sigma_{n+1} - sigma_n) weights give the
    intervals above sigma~ = 10 about 0.04% of the loss (EDM, 80 levels), so a student is least consistent at
    sigma_max, the only evaluation of a 1-step sample; from sigma~ = 25 the data's alpha x_0 is 1/25 of the
    prior's scale and the exact flow map still draws the mixture (docs/benchmarks/distill.md).

    Why the end: each jump re-noises the last estimate to t_k and maps it back. Well below sigma~ ~ sigma_data
    the student's map is close to the identity (gain 0.5-0.7 on random input directions at sigma~ 0.2, 0.7-1 at
    0.02; 0.4 at 0.5), so a later jump keeps the earlier jumps' errors and adds its own; far above it, the last
    jump's own error grows (against the teacher's ODE end points, 0.04 at sigma~ 0.5 and 0.15 at 2.5 on digits).
    Ending at 0.5 beat the K-interval grid's t_{K-1} (sigma~ 2.5, 0.47, 0.17 for K = 2, 3, 4 on EDM) in 7 of 9
    cases (ring and 16-D oracles, digits; K = 2, 3, 4); the others: digits at K = 3, where 0.47 is nearly the
    same point, and the ring at K = 4 (W2 0.032 against 0.026, both below the teacher's 10-NFE sampler)
    (docs/benchmarks/distill.md, "Where the last jump starts")."""
    times = student_times(schedule, steps, base)
    start = step_aware_range(schedule, steps)[1]
    if base.t_max is not None or start >= float(times[0]):
        return times
    if steps == 1:
        return torch.tensor([start], dtype=FLOAT64)
    end = float(schedule.t_from_sigma_tilde(torch.tensor(LAST_SIGMA_TILDE, dtype=FLOAT64)))
    end = max(end, base.t_min if base.t_min is not None else schedule.t_min)
    if not end < start:
        return times
    grid = base.grid if isinstance(base.grid, str) else "log_snr"
    return make_grid(schedule, steps - 1, grid, end, start)


def student_solver(method: str, times: Tensor, base: SolverConfig) -> SolverConfig:
    """The student's sampler: multistep consistency sampling or DDIM, K = len(times) evaluations, on the base's
    named grid between times[0] and times[-1] (K - 1 intervals, which are exactly `times`: the grids nest), the
    final clean estimate at times[-1]; the base's bounds kept. Another step count keeps that range, except a
    consistency student's (consistency_sampler)."""
    solver = "consistency" if method == "consistency" else "ddim"
    grid = base.grid if isinstance(base.grid, str) else "log_snr"
    t_min = float(times[-1]) if len(times) > 1 else None
    return SolverConfig(solver=solver, steps=len(times) - 1, grid=grid, t_min=t_min, t_max=float(times[0]),
                        clip=base.clip, threshold=base.threshold)


def consistency_sampler(schedule: Schedule, evaluations: int, info: DistillConfig, sample: SolverConfig) -> SolverConfig:
    """A consistency student's sampler at `evaluations` network calls: the times distillation would have chosen
    for that count (consistency_times on the recorded base grid), not the distilled count's range stretched over
    more calls. `info` is the student's record, with its base grid; `sample` the run's own sampler, whose bounds
    are kept."""
    base = SolverConfig(solver=sample.solver, grid=info.grid, t_min=info.t_min, t_max=info.t_max, clip=sample.clip,
                        threshold=sample.threshold)
    return student_solver("consistency", consistency_times(schedule, evaluations, base), base)


def consistency_levels(schedule: Schedule, n_levels: int, base: SolverConfig) -> Tensor:
    """Times of sigma~_1 = sigma~(t_min) < ... < sigma~_N = sigma~(t_max), uniform in sigma~^(1/rho) (Song et al.
    2023, sec. 6; Karras et al. 2022, eq. 5): ascending noise, float64."""
    return make_grid(schedule, n_levels - 1, "karras", base.t_min, base.t_max, rho=RHO).flip(0)


def curriculum(progress: float, s0: int, s1: int) -> int:
    """N(k) = min(s0 2^floor(k / K'), s1) + 1 levels, K' = K / (log2(s1 / s0) + 1) (Song & Dhariwal 2023, eq. 8),
    with k / K the fraction `progress` of the budget spent."""
    stages = math.floor(math.log2(s1 / s0)) + 1
    stage = min(int(progress * stages), stages - 1)
    return min(s0 * 2**stage, s1) + 1


def lognormal_level_probabilities(sigmas: Tensor) -> Tensor:
    """p(n) proportional to erf((log sigma_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((log sigma_n - P_mean) /
    (sqrt 2 P_std)) for the N - 1 intervals of ascending `sigmas` (Song & Dhariwal 2023, sec. 3.5)."""
    cdf = torch.erf((sigmas.log() - P_MEAN) / (math.sqrt(2.0) * P_STD))
    mass = (cdf[1:] - cdf[:-1]).clamp_min(1e-12)
    return mass / mass.sum()


# -- the steps -----------------------------------------------------------------------------------------------
class _Progress:
    """Fraction of a TrainConfig's length spent at a step: the larger of steps and budget time (the loop's
    own rule, Loop.progress), timed from the first call with the config's clock."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.start = cfg, None
        self.clock = time.perf_counter if cfg.clock == "wall" else time.process_time

    def __call__(self, step: int) -> float:
        self.start = self.clock() if self.start is None else self.start
        by_steps = step / self.cfg.max_steps if self.cfg.max_steps else 0.0
        by_time = (self.clock() - self.start) / (60.0 * self.cfg.minutes) if self.cfg.minutes else 0.0
        return max(by_steps, by_time)


def _per_level(levels: Tensor, fn: Callable[[Tensor, int], Tensor], like: Tensor) -> Tensor:
    """fn(rows, level) for the rows of each level, gathered into one tensor shaped like `like`: the solvers take
    one time per call, so the teacher runs once per level drawn in the batch."""
    out = torch.empty_like(like)
    for level in levels.unique().tolist():
        rows = levels == level
        out[rows] = fn(rows, int(level)).to(out.dtype)
    return out


def _bind(denoise: DenoiseFn, cond: Tensor | None) -> DenoiseFn:
    return denoise if cond is None else (lambda x, t: denoise(x, t, cond))


class _DistillStep(DiffusionStep):
    """DiffusionStep with a teacher and noise levels: `groups` levels a step, each shared by a block of the batch
    (the teacher is called once per level)."""

    def __init__(self, config: RunConfig, data: Dataset, model: nn.Module, accelerator: Any, teacher: DenoiseFn,
                 groups: int) -> None:
        super().__init__(config, data, model, accelerator)
        self.teacher, self.groups = teacher, min(groups, config.train.batch_size)
        self.progress = _Progress(config.train)
        self.info: dict[str, Any] = {}

    def draw_levels(self, step: int, weights: Tensor) -> Tensor:
        """Per-sample level indices: `groups` draws from `weights`, each repeated over its block of the batch."""
        batch = self.config.train.batch_size
        g = stream_generator(self.config.train.seed + LEVEL_SEED, step)
        picked = torch.multinomial(weights, self.groups, replacement=True, generator=g)
        return picked[torch.arange(batch) * self.groups // batch]

    def coefficients(self, times: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """alpha(t), sigma(t) per sample, broadcast over `like`."""
        s = self.config.loss.schedule
        return expand_like(s.alpha(times), like), expand_like(s.sigma(times), like)


class ConsistencyStep(_DistillStep):
    """Consistency distillation (Song et al. 2023, Alg. 2; Song & Dhariwal 2023): pseudo-Huber distance between
    f(x_{n+1}, t_{n+1}) and the stop-gradient student at the teacher's one-step estimate x_hat_n."""

    def __init__(self, *args: Any, base: SolverConfig, solver: str, levels: tuple[int, int], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.base, self.solver, self.levels = base, get_solver(solver), levels
        self.huber_c = HUBER_C * math.sqrt(math.prod(self.data.sample_shape))

    def draws(self, step: int) -> dict[str, Tensor | None]:
        d = super().draws(step)
        n_levels = curriculum(self.progress(step), *self.levels)
        times, p, weight = self._discretisation(n_levels)
        self.info = {"levels": n_levels}
        return {**d, "level": self.draw_levels(step, p), "times": times, "weight": weight}

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one entry per curriculum stage, while the step lives
    def _discretisation(self, n_levels: int) -> tuple[Tensor, Tensor, Tensor]:
        """The curriculum stage's level times, their probabilities and their normalised weights (computed once
        per stage, not every step)."""
        times = consistency_levels(self.config.loss.schedule, n_levels, self.base)
        sigmas = self.config.loss.schedule.sigma_tilde(times)
        p = lognormal_level_probabilities(sigmas)
        weight = 1.0 / (sigmas[1:] - sigmas[:-1])
        return times, p, weight / (p * weight).sum()

    def teacher_step(self, x: Tensor, t_from: float, t_to: float, cond: Tensor | None) -> Tensor:
        """x at t_to from x at t_from: one step of the teacher's probability-flow ODE with the chosen solver."""
        times = torch.tensor([t_from, t_to], dtype=FLOAT64)
        return self.solver.fn(_bind(self.teacher, cond), self.config.loss.schedule, x, times, None,
                              **self.solver.options)

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        n = d["level"][part]
        times = d["times"]
        t_next, t_now = times[n + 1], times[n]
        alpha, sigma = self.coefficients(t_next, x0)
        x_next = alpha * x0 + sigma * d["eps"][part].to(x0.device)
        with torch.no_grad():
            x_hat = _per_level(n, lambda rows, i: self.teacher_step(
                x_next[rows], float(times[i + 1]), float(times[i]), None if cond is None else cond[rows]), x_next)
            target = self.denoiser(x_hat, t_now, cond)  # stop-gradient student: no EMA target (Song & Dhariwal)
            boundary = expand_like((n == 0).to(FLOAT64), x0) > 0
            target = torch.where(boundary, x_hat / self.coefficients(t_now, x0)[0], target)
        pred = self.denoiser(x_next, t_next, cond)
        sq = ((pred.float() - target.float()) ** 2).flatten(1).sum(1)
        distance = torch.sqrt(sq + self.huber_c**2) - self.huber_c
        return (d["weight"][n].to(distance) * distance).mean()


class ProgressiveStep(_DistillStep):
    """One round of progressive distillation (Salimans & Ho 2022, Alg. 2): the student's one DDIM step from
    times[i] to times[i + 1] matches the teacher's two steps through the midpoint; x0-space loss weighted
    max(SNR, 1). `times` holds the teacher's 2N + 1 grid times, the last meaning the clean end."""

    def __init__(self, *args: Any, times: Tensor, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.times, self.student_steps = times, (len(times) - 1) // 2

    def draws(self, step: int) -> dict[str, Tensor | None]:
        d = super().draws(step)
        return {**d, "level": self.draw_levels(step, torch.ones(self.student_steps, dtype=FLOAT64))}

    def teacher_target(self, z: Tensor, i: int, cond: Tensor | None) -> Tensor:
        """x~ with which the student's one DDIM step from times[2i] lands where two teacher DDIM steps do:
        x~ = (z'' - (sigma''/sigma) z) / (alpha'' - (sigma''/sigma) alpha), or the teacher's x0 at the clean end."""
        denoise, s = _bind(self.teacher, cond), self.config.loss.schedule
        t, t_mid, t_end = (float(v) for v in self.times[2 * i: 2 * i + 3])
        if 2 * i + 2 == len(self.times) - 1:  # the last interval ends at the clean sample
            z_mid = ddim(denoise, s, z, torch.tensor([t, t_mid], dtype=FLOAT64))
            return final_step(denoise, s, z_mid, t_mid, True)
        z_end = ddim(denoise, s, z, torch.tensor([t, t_mid, t_end], dtype=FLOAT64))
        a, sg, a_end, sg_end = (float(v) for v in (s.alpha(t), s.sigma(t), s.alpha(t_end), s.sigma(t_end)))
        return (z_end - (sg_end / sg) * z) / (a_end - (sg_end / sg) * a)

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        i = d["level"][part]
        t = self.times[2 * i]
        alpha, sigma = self.coefficients(t, x0)
        z = alpha * x0 + sigma * d["eps"][part].to(x0.device)
        with torch.no_grad():
            target = _per_level(i, lambda rows, k: self.teacher_target(z[rows], k, None if cond is None else cond[rows]), z)
        pred = self.denoiser(z, t, cond)
        err = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
        snr = self.config.loss.schedule.log_snr(t).exp()
        return (snr.clamp_min(1.0).to(err) * err).mean()


# -- the driver --------------------------------------------------------------------------------------------
@dataclass
class DistillResult:
    run_dir: Path
    method: str
    steps: int
    step: int  # optimiser steps, all rounds
    loss: float
    seconds: float
    checkpoint: Path | None
    rounds: list[dict] = field(default_factory=list)  # per round (progressive) or one entry: steps, seconds, loss


def check_options(method: str, steps: int, minutes: float | None, max_steps: int | None, groups: int = 8) -> None:
    """One ValueError naming the first bad option, before any work."""
    if method not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; expected one of {list(METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1 (network evaluations per sample), got {steps!r}")
    if method == "regression" and steps != 1:
        raise ValueError(f"`steps` must be 1 for method 'regression' (its student is trained at t_max only and "
                         f"samples in one evaluation), got {steps!r}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"`minutes` must be > 0, got {minutes!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"`max_steps` must be an integer >= 1, got {max_steps!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"`groups` must be an integer >= 1, got {groups!r}")


def _check_out(out_dir: Path) -> None:
    check_new_run_dir(out_dir, "out_dir", "the student")


def default_budget(teacher: Teacher) -> tuple[float | None, int | None]:
    """(minutes, max_steps) when the caller gives neither: the teacher's own budget, ended early at BUDGET_FACTOR
    times the teacher's recorded training time (issue 17's bound; a consistency step costs about 2.9 teacher
    steps on digits, so on the teacher's machine the time ends it, at about 70% of the teacher's steps)."""
    own = teacher.config.train
    if teacher.seconds is None:
        return own.minutes, own.max_steps
    minutes = BUDGET_FACTOR * teacher.seconds / 60.0
    return (minutes if own.minutes is None else min(minutes, own.minutes)), own.max_steps


def describe_budget(cfg: TrainConfig) -> str:
    """One line: the distillation's budget, and that the first limit reached ends it."""
    parts = [f"{cfg.max_steps:,} steps"] if cfg.max_steps else []
    parts += [f"{cfg.minutes:.1f} minutes ({cfg.clock} clock)"] if cfg.minutes else []
    return "budget: " + " or ".join(parts) + (", whichever comes first" if len(parts) > 1 else "")


def _student_config(teacher: Teacher, method: str, steps: int, sample: SolverConfig, minutes: float | None,
                    max_steps: int | None, train: dict[str, Any], base: SolverConfig) -> RunConfig:
    """The teacher's config with the distillation's budget (default_budget when neither `minutes` nor
    `max_steps` is given) and train options, the student's sampler and the `distill` record (with `base`, the grid
    a consistency student's times come from)."""
    if minutes is None and max_steps is None:
        minutes, max_steps = default_budget(teacher)
    train_cfg = teacher.config.train.derived(minutes, max_steps, **train)
    info = DistillConfig(teacher=teacher.source, method=method, steps=steps)
    if method == "consistency":  # so that other step counts get their own times (consistency_sampler)
        info = info.model_copy(update={"grid": sample.grid, "t_min": base.t_min, "t_max": base.t_max})
    return teacher.config.model_copy(update={"train": train_cfg, "sample": sample, "distill": info})


def _rounds(steps: int, teacher_steps: int) -> int:
    """Halvings from the first teacher grid (at least teacher_steps intervals) down to `steps`."""
    return max(1, math.ceil(math.log2(max(teacher_steps, 2 * steps) / steps)))


def distill(teacher: str | Path | Teacher, out_dir: str | Path, method: str = "consistency", steps: int = 2,
            minutes: float | None = None, max_steps: int | None = None, *, grid: str = "karras", groups: int = 8,
            teacher_solver: str = "heun", levels: tuple[int, int] = (10, 80), teacher_steps: int = 64,
            pairs: int | None = None, progress: bool = True, **train: Any) -> DistillResult:
    """Distil `teacher` (a run directory or a Teacher) into a student run in `out_dir` that samples in `steps`
    network evaluations, by `method` "consistency", "progressive" or "regression" (steps 1 only:
    noisecraft.runs.regress with its defaults, onto the teacher's ODE ends), for `minutes` (wall-clock, or the
    config's clock) or `max_steps` optimiser steps (all rounds together); neither given: the teacher's own
    budget, ended at twice the teacher's recorded training time (default_budget; on digits 1,176 of the teacher's
    1,600 steps met issue 17's FD targets).

    Consistency: `teacher_solver` takes the teacher's ODE step, `levels` = (s0, s1) is the discretisation
    curriculum. The student's times are consistency_times: K points of the named `grid` (Karras et al. 2022's
    rho = 7 by default) from the step-aware start to sigma~ 0.5. Progressive: the first teacher grid has
    steps * 2^R >= `teacher_steps` intervals, R rounds share the budget equally. `groups` noise levels are drawn
    per optimiser step. Regression: `pairs` (z, ODE end) pairs of the teacher (default
    noisecraft.runs.regress.default_pairs of its budget). `train`: fields of the run config's train section
    (batch_size, lr, seed, warmup_steps, ...; None keeps the teacher's).
    """
    check_options(method, steps, minutes, max_steps, groups)
    if pairs is not None and method != "regression":
        raise ValueError(f"`pairs` is an option of method 'regression', not of {method!r}")
    if method == "regression":
        return _regression(teacher, out_dir, minutes, max_steps, pairs, progress, train)
    out_dir = Path(out_dir)
    _check_out(out_dir)
    if method == "consistency":
        get_solver(teacher_solver)
    check_field(SolverConfig, "grid", grid)
    train = {k: check_field(TrainConfig, k, v) for k, v in train.items() if v is not None}
    teacher = Teacher.from_run(check_teacher_run(teacher)) if isinstance(teacher, (str, Path)) else teacher
    base = teacher.config.sample.override(grid=grid)
    times = (consistency_times if method == "consistency" else student_times)(teacher.schedule, steps, base)
    config = _student_config(teacher, method, steps, student_solver(method, times, base), minutes,
                             max_steps, train, base)
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=_mixed_precision(config.train.mixed_precision),
                              cpu=not torch.cuda.is_available())
    with _fresh_dir_removed_on_failure(out_dir), \
            run_lock(out_dir) if accelerator.is_main_process else contextlib.nullcontext():
        _check_out(out_dir)  # again, under the lock
        fit = _Fit(config, out_dir, accelerator, teacher.to(accelerator.device), base, groups, progress)
        if method == "consistency":
            return fit.consistency(teacher_solver, levels)
        return fit.progressive(steps, _rounds(steps, teacher_steps))


def _regression(teacher: str | Path | Teacher, out_dir: str | Path, minutes: float | None, max_steps: int | None,
                pairs: int | None, progress: bool, train: dict[str, Any]) -> DistillResult:
    """distill(method="regression"): noisecraft.runs.regress (its defaults where `pairs` is None), its result as a
    DistillResult."""
    # regress builds on this module and on reflow: imported here, when asked for
    from noisecraft.runs.regress import regress

    given = {k: v for k, v in train.items() if v is not None}  # a `seed` seeds the pairs (regress's own seed)
    done = regress(teacher, out_dir, pairs, minutes=minutes, max_steps=max_steps, progress=progress, **given)
    fit = done.train
    rounds = [{"method": "regression", "pairs": done.pairs, "pair_seconds": done.pair_seconds, "steps": fit.step,
               "loss": fit.loss}]
    return DistillResult(done.run_dir, "regression", 1, fit.step, fit.loss, done.seconds, fit.checkpoint, rounds)


class _Fit:
    """The student network, its run files and the loops that train it."""

    def __init__(self, config: RunConfig, out_dir: Path, accelerator: Any, teacher: Teacher, base: SolverConfig,
                 groups: int, progress: bool) -> None:
        self.config, self.out_dir, self.acc, self.teacher, self.base = config, out_dir, accelerator, teacher, base
        self.groups, self.show = groups, progress
        threads = use_threads(config.train.num_threads)
        if progress and accelerator.is_main_process:
            print(threads, flush=True)
            print(describe_budget(config.train), flush=True)
        self.data = training_data(config)  # a latent run's: its autoencoder's scaled latents
        torch.manual_seed(config.train.seed)
        self.net = config.model.build(self.data.sample_shape, config.loss.time_input)
        if teacher.weights is not None:
            self.net.load_state_dict(teacher.weights)
        if accelerator.is_main_process:
            _write_run_files(out_dir, config, self.data, 0)
        self.start, self.done, self.records = time.perf_counter(), 0, []

    def _loop(self, cfg: TrainConfig, make_step: Callable[[nn.Module], DiffusionStep], final: bool,
              extra: dict[str, Any]) -> tuple[Loop, LoopState]:
        """One loop of `cfg` over a fresh optimiser and EMA of self.net; checkpoints (global step) only if final."""
        optimizer = make_optimizer(cfg, self.net)
        ema = EMA(self.net, cfg.ema_decay, cfg.ema_power)
        model, optimizer = self.acc.prepare(self.net, optimizer)
        step_fn = make_step(model)
        loop = Loop(cfg, model, optimizer, ema, step_fn, self.acc, items_per_step=cfg.batch_size)
        offset = self.done
        if final:
            save = _saver(loop, self.out_dir / "checkpoints")
            loop.on_checkpoint = lambda s: save(LoopState(step=offset + s.step, elapsed=time.perf_counter() - self.start))
        main = self.acc.is_main_process
        with open(self.out_dir / "metrics.jsonl", "a") if main else contextlib.nullcontext() as f:
            if f is not None:
                loop.on_log = lambda r: (f.write(json.dumps({**r, "step": offset + r["step"], **extra,
                                                             **step_fn.info}) + "\n"), f.flush())
            desc = " ".join(f"{k} {v}" for k, v in extra.items() if k != "method")
            state = loop.run(LoopState(), progress=self.show, desc=f"distill {extra['method']} {desc}".strip())
        self.done += state.step
        self.records.append({**extra, "steps": state.step, "seconds": state.elapsed, "loss": state.loss})
        return loop, state

    def _result(self, method: str, steps: int, state: LoopState, loop: Loop) -> DistillResult:
        self.acc.wait_for_everyone()
        ckpt = loop.on_checkpoint and state.checkpoint
        return DistillResult(self.out_dir, method, steps, self.done, state.loss, time.perf_counter() - self.start,
                             ckpt, self.records)

    def consistency(self, solver: str, levels: tuple[int, int]) -> DistillResult:
        base = self.base

        def make(model: nn.Module) -> ConsistencyStep:
            return ConsistencyStep(self.config, self.data, model, self.acc, self.teacher.denoise, self.groups,
                                   base=base, solver=solver, levels=levels)

        loop, state = self._loop(self.config.train, make, True, {"method": "consistency"})
        return self._result("consistency", self.config.distill.steps, state, loop)

    def progressive(self, steps: int, rounds: int) -> DistillResult:
        """Rounds r = 1..R: the student (started from the teacher of the round) learns the teacher's grid of
        steps * 2^(R - r + 1) intervals with half as many; its EMA weights teach the next round."""
        cfg = self.config.train
        per_round = {"max_steps": None if cfg.max_steps is None else max(1, cfg.max_steps // rounds),
                     "minutes": None if cfg.minutes is None else cfg.minutes / rounds}
        round_cfg = TrainConfig.model_validate({**cfg.model_dump(), **per_round})
        grid = student_times(self.teacher.schedule, steps * 2**rounds, self.base)
        clean_end = torch.cat([grid, grid.new_zeros(1)])  # the last entry stands for the clean sample
        teacher = self.teacher.denoise
        for r in range(1, rounds + 1):
            times = clean_end[:: 2 ** (r - 1)]

            def make(model: nn.Module, times: Tensor = times, teacher: DenoiseFn = teacher) -> ProgressiveStep:
                return ProgressiveStep(self.config, self.data, model, self.acc, teacher, self.groups, times=times)

            loop, state = self._loop(round_cfg, make, r == rounds,
                                     {"method": "progressive", "round": r, "student_steps": (len(times) - 1) // 2})
            loop.ema.copy_to(self.net)  # the round's EMA student: next round's teacher and starting point
            teacher = self._frozen_teacher()
        return self._result("progressive", steps, state, loop)

    def _frozen_teacher(self) -> DenoiseFn:
        """A frozen copy of the current student as a denoiser, bounded as the run samples."""
        net = copy.deepcopy(self.net).eval().requires_grad_(False)
        return clipped(self.config.loss.denoiser(net), self.config.sample.clip, self.config.sample.threshold)


__all__ = ["BUDGET_FACTOR", "LAST_SIGMA_TILDE", "METHODS", "ConsistencyStep", "DistillResult", "ProgressiveStep",
           "Teacher", "consistency_sampler", "consistency_times", "default_budget", "describe_budget", "distill",
           "student_times"]
