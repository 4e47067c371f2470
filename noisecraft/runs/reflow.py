"""Reflow (Liu et al. 2022, "Flow Straight and Fast", sec. 2.3 and Alg. 1): straighten a trained model's
probability-flow paths so that few Euler steps follow them.

1. Coupling: draw N standard normal vectors z (seeded, sample i from stream i) and solve the teacher's
   probability-flow ODE from x_T = sigma(t_max) z, with t_max the schedule's own end, to its sample x
   (a deterministic noisecraft solver, by default the teacher's own at `steps` steps on its grid). The pairs
   (z, x) and, for a class-conditional run, the label each x was drawn for, are stored in the new run as
   pairs.safetensors.
2. Training: a new run, initialised from the teacher's weights, with the teacher's config otherwise,
   minimises the run's own loss with x_0 = x and eps = z of a pair in place of a data point and fresh
   noise (ReflowStep). Under the rectified-flow schedule (alpha = 1 - t, sigma = t) and the flow
   parameterization this is the 2-rectified flow's objective: x_t = (1 - t) x + t z, target velocity z - x.

Other schedules: the same code runs with that schedule's alpha, sigma (x_t = alpha x + sigma z). It is the
rectified flow of that interpolation (Liu 2022, "Rectified flow: a marginal preserving approach", sec. 3):
the PF-ODE of a denoiser x0_hat = E[x | x_t], dx/dt = f x - g^2 score / 2, equals alpha' x0_hat + sigma'
(x - alpha x0_hat) / sigma, the expected velocity of the interpolation, so the reflowed run samples with every
solver as before. Only under rectified flow are the interpolation paths straight lines in t.

Differences from the paper, all choices of this module: the time distribution of the reflow loss is uniform
(Liu et al. 2022, Alg. 1) unless `time_distribution` keeps the teacher's (the flow preset's logit-normal puts
almost no weight near t = 1, where a 1-step sample evaluates the network; measured in docs/benchmarks/reflow.md);
class-conditional runs draw labels uniformly over the classes and keep them with the pairs (a run trained with
label dropout then learns its unconditional branch from the conditional pairs); text-conditioned runs and
consistency models (no probability-flow ODE) are refused. The reflowed run samples by default with one Euler
step on a uniform grid in t and the final clean estimate (Liu et al. 2022, sec. 2.3; 2 evaluations), the
teacher's time range (default: step-aware) and bounds kept; its config's `distill` section
records the teacher with method "reflow". Like distillation, reflow is not resumable: it refuses a directory
that holds checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.core.losses import DenoisingLoss
from noisecraft.core.noise import SampleNoise, stream_generator
from noisecraft.core.schedules import Schedule
from noisecraft.core.sde import point, reverse
from noisecraft.core.tensors import FLOAT64
from noisecraft.core.timesteps import make_grid
from noisecraft.data import Dataset
from noisecraft.io import atomic_path
from noisecraft.runs.config import DistillConfig, RunConfig, TrainConfig
from noisecraft.runs.distill import Teacher, _check_out, check_teacher_run
from noisecraft.runs.latent import model_shape
from noisecraft.runs.train import DiffusionStep, TrainResult, train
from noisecraft.solvers.config import SolverConfig
from noisecraft.solvers.driver import solve
from noisecraft.solvers.registry import get_solver
from noisecraft.validation import check_field

#: offset of the seed whose stream draws the pairs' labels (apart from the noise streams of `seed`)
LABEL_SEED = 104729
PAIRS_FILE = "pairs.safetensors"
#: with a budget shared by the pairs and training, training keeps at least this share of it (remaining_budget)
MIN_TRAIN_SHARE = 0.25
DenoiseFn = Callable[..., Tensor]


# -- the coupling ------------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """The coupling of reflow: noise z (n, *shape), the teacher's ODE solution x from sigma(t_max) z, and the
    label x was drawn for (class-conditional teachers), row by row."""

    z: Tensor
    x: Tensor
    labels: Tensor | None = None

    def __len__(self) -> int:
        return self.z.shape[0]

    def dataset(self, name: str) -> Dataset:
        """The pairs' samples x (and labels) as the training data of the reflowed run."""
        return Dataset(self.x, self.labels, name)

    def save(self, path: str | Path, meta: dict[str, str] | None = None) -> Path:
        """Write the pairs as safetensors (atomically); `meta` goes into the file's header."""
        from safetensors.torch import save_file

        tensors = {"z": self.z, "x": self.x} | ({} if self.labels is None else {"labels": self.labels})
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Pairs:
        """Pairs written by `save`; a ValueError naming the file when it is not such a file."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{str(path)!r} is not a pairs file (safetensors with z and x): {err}") from None
        if "z" not in t or "x" not in t or t["z"].shape != t["x"].shape:
            raise ValueError(f"{str(path)!r} is not a pairs file: expected tensors z and x of one shape")
        return cls(t["z"], t["x"], t.get("labels"))


def pair_solver(teacher: Teacher, steps: int, solver: str | None = None) -> SolverConfig:
    """The sampler that makes the pairs: `solver` or, if deterministic, the teacher's own (else DPM-Solver++(2M),
    Lu et al. 2022b), `steps` steps on the teacher's named grid from the schedule's t_max (where x_T = sigma z
    is the coupling's start) to the teacher's t_min (default: the schedule's), no options (no churn, no eta)."""
    base = teacher.config.sample
    spec = get_solver(base.solver)
    name = solver or (base.solver if not spec.stochastic and spec.model == "denoiser" and base.solver != "rk45"
                      else "dpm++2m")
    chosen = get_solver(name)
    if chosen.stochastic or chosen.model != "denoiser" or name == "rk45":
        raise ValueError(f"`solver` {name!r} does not solve the probability-flow ODE on a fixed grid; expected a "
                         "deterministic solver such as dpm++2m, heun, euler, ddim or unipc")
    grid = base.grid if isinstance(base.grid, str) else "log_snr"
    return SolverConfig(solver=name, steps=steps, grid=grid, t_min=base.t_min, t_max=teacher.schedule.t_max)


def pair_labels(config: RunConfig, n: int, seed: int) -> Tensor | None:
    """Labels of the n pairs of a class-conditional teacher, uniform over its classes (seeded); None otherwise."""
    classes = config.model.num_classes
    if classes is None:
        return None
    return torch.randint(classes, (n,), generator=stream_generator(seed + LABEL_SEED, 0))


def make_pairs(teacher: Teacher, n: int, steps: int = 32, seed: int = 0, solver: str | None = None,
               batch: int = 500, device: str | torch.device = "cpu", progress: bool = True) -> Pairs:
    """n coupled pairs (z, x = ODE_teacher(sigma(t_max) z)) in batches of `batch`; pair i depends only on (seed, i)
    (Liu et al. 2022, Alg. 1, step 1)."""
    check_pair_options(n, steps, batch)
    cfg = pair_solver(teacher, steps, solver)
    times = make_grid(teacher.schedule, cfg.steps, cfg.grid, cfg.t_min, cfg.t_max)
    shape = model_shape(teacher.config)  # a latent run's pairs are latents
    labels = pair_labels(teacher.config, n, seed)
    scale = float(teacher.schedule.sigma(float(times[0])))
    bar = _bar(n, progress, f"ODE pairs ({cfg.solver}, {steps} steps)")
    zs, xs = [], []
    with torch.no_grad():
        for first in range(0, n, batch):
            rows = min(batch, n - first)
            z = SampleNoise(seed, rows, first=first).randn(shape, torch.float32, device)
            cond = None if labels is None else labels[first:first + rows].to(device)
            x, _ = solve(teacher.denoise, teacher.schedule, scale * z, times, cfg.solver, cond=cond)
            zs.append(z.cpu())
            xs.append(x.float().cpu())
            if bar is not None:
                bar.update(rows)
    if bar is not None:
        bar.close()
    return Pairs(torch.cat(zs), torch.cat(xs), labels)


def _bar(total: int, show: bool, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair")


# -- the loss ------------------------------------------------------------------------------------------------
class ReflowStep(DiffusionStep):
    """DiffusionStep on the coupling: the run's loss with x_0 = x and eps = z of the batch's pairs (Liu et al.
    2022, eq. 1 on (X_0, X_1) = (z, x) under rectified flow). Batches, times and label dropout are drawn as
    in training (pure functions of (seed, step)); the step's fresh noise is left unused."""

    def __init__(self, config: RunConfig, data: Dataset, model: nn.Module, accelerator: Any, pairs: Pairs) -> None:
        super().__init__(config, pairs.dataset(data.name), model, accelerator)
        self.z = pairs.z

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        z = self.z[d["idx"][part]].to(x0.device)
        return self.config.loss(self.denoiser, x0, cond=cond, t=d["t"][part], eps=z)


# -- straightness -------------------------------------------------------------------------------------------
def straightness(denoise: DenoiseFn, schedule: Schedule, z: Tensor, steps: int = 64, cond: Any = None,
                 solver: str = "dpm++2m") -> float:
    """S = int E ||(x_{t_max} - x_{t_min}) / (t_max - t_min) - dx/dt||^2 dt / (t_max - t_min), per dimension,
    along the PF-ODE paths from x_T = sigma(t_max) z: the straightness S(Z) of Liu et al. 2022, 0 exactly when
    every path is a straight line traversed at constant speed. The paths are solved by `solver` (one evaluation per step at
    the path's own point) on `steps` intervals uniform in t over the schedule's range; dx/dt is the PF-ODE
    field at each point, the integral the trapezoidal rule. Under rectified flow the chord is z - x (up to the
    ends t_max = 0.999, t_min = 0.001)."""
    if get_solver(solver).evaluations_per_step({}) != 1 or get_solver(solver).stochastic:
        raise ValueError(f"`solver` {solver!r} must be a deterministic one-evaluation-per-step solver (dpm++2m, euler)")
    times = make_grid(schedule, steps, "uniform")
    seen: list[tuple[Tensor, float, Tensor]] = []

    def recorded(x: Tensor, t: Tensor, *c: Any) -> Tensor:
        out = denoise(x, t, *c)
        seen.append((x.detach().to(FLOAT64), float(t.reshape(-1)[0]), out.detach().to(FLOAT64)))
        return out

    with torch.no_grad():
        solve(recorded, schedule, float(schedule.sigma(float(times[0]))) * z, times, solver, cond=cond)
    velocity = [reverse(schedule, lambda *_, x0=x0: x0).drift(x, point(schedule, t)) for x, t, x0 in seen]
    chord = (seen[0][0] - seen[-1][0]) / (seen[0][1] - seen[-1][1])
    err = torch.stack([((chord - v) ** 2).flatten(1).mean(1).mean() for v in velocity])
    weights = torch.ones(len(err), dtype=FLOAT64)
    weights[0] = weights[-1] = 0.5
    return float((weights * err).sum() / weights.sum())


# -- the driver --------------------------------------------------------------------------------------------
@dataclass
class ReflowResult:
    run_dir: Path
    pairs: int
    pair_seconds: float  # making the coupling
    train: TrainResult
    seconds: float  # all of it


def check_pair_options(pairs: int, steps: int, batch: int = 500) -> None:
    """One ValueError naming the first bad count."""
    for name, value in (("pairs", pairs), ("steps", steps), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")


def check_pairs_fit(pairs: Pairs, config: RunConfig) -> None:
    """A ValueError when given pairs do not fit the run: another sample shape, or labels where the run has none
    (or none where it has classes)."""
    shape = model_shape(config)
    if tuple(pairs.x.shape[1:]) != tuple(shape):
        raise ValueError(f"`pairs` hold samples of shape {tuple(pairs.x.shape[1:])}; the teacher's network takes {shape}")
    if (pairs.labels is None) != (config.model.num_classes is None):
        raise ValueError("`pairs` " + ("lack labels for a class-conditional teacher" if pairs.labels is None else
                                       "hold labels but the teacher is unconditional"))


def check_teacher(teacher: Teacher) -> None:
    """A ValueError for a teacher reflow cannot use: text conditions, or a sampler that is not a PF-ODE of a
    denoiser (a consistency model)."""
    if teacher.config.model.text:
        raise ValueError(f"teacher {teacher.source} is text-conditioned; reflow takes unconditional or "
                         "class-conditional runs")
    if get_solver(teacher.config.sample.solver).model != "denoiser":
        raise ValueError(f"teacher {teacher.source} samples with {teacher.config.sample.solver!r}, a consistency "
                         "model with no probability-flow ODE; expected a diffusion or flow run")


def reflow_config(teacher: Teacher, minutes: float | None, max_steps: int | None, time_distribution: str | None,
                  sample_steps: int, train: dict[str, Any]) -> RunConfig:
    """The teacher's config with the reflow budget (the teacher's when neither is given), the given train fields,
    the reflow loss's time distribution, Euler on a uniform grid (the teacher's range and bounds) as default
    sampler and the `distill` record."""
    train_cfg = teacher.config.train.derived(minutes, max_steps, **train)
    loss = teacher.config.loss
    if time_distribution is not None:
        loss = DenoisingLoss.model_validate({**loss.model_dump(), "time_distribution": time_distribution})
    sample = teacher.config.sample.override(solver="euler", grid="uniform", steps=sample_steps)
    info = DistillConfig(teacher=teacher.source, method="reflow", steps=sample.nfe())
    return teacher.config.model_copy(update={"train": train_cfg, "loss": loss, "sample": sample, "distill": info})


def reflow(teacher: str | Path | Teacher, out_dir: str | Path, pairs: int | Pairs = 5000, steps: int = 32,
           minutes: float | None = None, max_steps: int | None = None, *, solver: str | None = None,
           time_distribution: str | None = "uniform", sample_steps: int = 1, seed: int = 0, batch: int = 500,
           progress: bool = True, **train_options: Any) -> ReflowResult:
    """Reflow `teacher` (a run directory or a Teacher) into a new run in `out_dir`: `pairs` coupled pairs from the
    teacher's ODE at `steps` steps (`solver`: default the teacher's deterministic sampler), then training from
    the teacher's weights on them for `minutes` or `max_steps` (default: the teacher's budget).

    `pairs` may also be a Pairs of this teacher made before (make_pairs, Pairs.load): no ODE is solved then.
    `time_distribution`: the reflow loss's p(t), "uniform" (Liu et al. 2022) or None for the teacher's.
    `sample_steps`: Euler steps of the new run's default sampler. `seed` draws the pairs' noise and labels;
    `train_options`: fields of the train section (batch_size, lr, seed, warmup_steps, ...; None keeps the
    teacher's). Returns where the run went and how long each part took."""
    check_field(SolverConfig, "steps", sample_steps, "sample_steps")
    if time_distribution is not None:
        check_field(DenoisingLoss, "time_distribution", time_distribution)
    teacher, out_dir, minutes, max_steps, train_options = checked_coupling(
        teacher, out_dir, pairs, steps, solver, batch, minutes, max_steps, train_options)
    config = reflow_config(teacher, minutes, max_steps, time_distribution, sample_steps, train_options)
    return train_on_pairs(teacher, out_dir, config, pairs, steps, seed, solver, batch, progress, ReflowStep)


def checked_coupling(teacher: str | Path | Teacher, out_dir: str | Path, pairs: int | Pairs, steps: int,
                     solver: str | None, batch: int, minutes: float | None, max_steps: int | None,
                     train_options: dict[str, Any]) -> tuple[Teacher, Path, float | None, int | None, dict[str, Any]]:
    """The options of a run trained on pairs, checked before any work (one ValueError naming the first bad one):
    (the teacher, loaded and checked; out_dir as a new run directory; minutes; max_steps; the train fields
    given, None dropped)."""
    check_pair_options(len(pairs) if isinstance(pairs, Pairs) else pairs, steps, batch)
    minutes = None if minutes is None else check_field(TrainConfig, "minutes", minutes)
    max_steps = None if max_steps is None else check_field(TrainConfig, "max_steps", max_steps)
    train_options = {k: check_field(TrainConfig, k, v) for k, v in train_options.items() if v is not None}
    out_dir = Path(out_dir)
    _check_out(out_dir)
    teacher = Teacher.from_run(check_teacher_run(teacher)) if isinstance(teacher, (str, Path)) else teacher
    check_teacher(teacher)
    if solver is not None:
        pair_solver(teacher, steps, solver)
    return teacher, out_dir, minutes, max_steps, train_options


def remaining_budget(train_cfg: TrainConfig, spent_seconds: float) -> TrainConfig:
    """The train section with `minutes` less what was spent before training (on `train_cfg.clock`), keeping at
    least MIN_TRAIN_SHARE of it so that training always runs; unchanged without a time budget."""
    if train_cfg.minutes is None:
        return train_cfg
    left = max(train_cfg.minutes - spent_seconds / 60.0, MIN_TRAIN_SHARE * train_cfg.minutes)
    return train_cfg.model_copy(update={"minutes": left})


def train_on_pairs(teacher: Teacher, out_dir: Path, config: RunConfig, pairs: int | Pairs, steps: int, seed: int,
                   solver: str | None, batch: int, progress: bool, step: type[DiffusionStep],
                   shared_budget: bool = False) -> ReflowResult:
    """The coupling (`pairs` pairs from the teacher's ODE at `steps` steps, or given ones), saved in out_dir as
    pairs.safetensors, then `config` trained from the teacher's weights with the per-step loss `step(config, data,
    model, accelerator, pairs)`: reflow's and regression distillation's common driver. With `shared_budget` the
    config's `minutes` bounds making the pairs and training together (remaining_budget)."""
    if isinstance(pairs, Pairs):
        check_pairs_fit(pairs, config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = time.process_time if config.train.clock == "process" else time.perf_counter
    start, started = time.perf_counter(), clock()
    coupling = pairs if isinstance(pairs, Pairs) else make_pairs(teacher.to(device), pairs, steps, seed, solver,
                                                                 batch, device, progress)
    pair_seconds = time.perf_counter() - start
    if shared_budget:
        config = config.model_copy(update={"train": remaining_budget(config.train, clock() - started)})
    out_dir.mkdir(parents=True, exist_ok=True)
    coupling.save(out_dir / PAIRS_FILE, {"teacher": teacher.source, "steps": str(steps), "seed": str(seed),
                                         "solver": pair_solver(teacher, steps, solver).solver})

    def make_step(cfg: RunConfig, data: Dataset, model: nn.Module, accelerator: Any) -> DiffusionStep:
        return step(cfg, data, model, accelerator, coupling)

    result = train(config, out_dir, progress=progress, make_step=make_step, init=teacher.weights)
    return ReflowResult(out_dir, len(coupling), pair_seconds, result, time.perf_counter() - start)


__all__ = ["Pairs", "ReflowResult", "ReflowStep", "checked_coupling", "make_pairs", "pair_solver", "reflow",
           "remaining_budget", "straightness", "train_on_pairs"]
