"""Distillation by regression onto the teacher's ODE ends: a student that samples in one network evaluation.

Luhman & Luhman 2021 ("Knowledge distillation in iterative generative models for improved sampling speed") and
the one-step distillation that follows reflow in Liu et al. 2022 ("Flow Straight and Fast"): the teacher's
probability-flow ODE defines a deterministic map from prior noise to a sample, and the student learns that
map directly.

1. Coupling: reflow's (noisecraft.runs.reflow.make_pairs): standard normal z, and the teacher's ODE solved
   from x_T = sigma(t_max) z, t_max the schedule's end, to its sample x; stored in the run as
   pairs.safetensors.
2. Training: the student starts from the teacher's weights and minimises the squared error
   ||x0_hat(sigma(t_max) z, t_max) - x||^2 (mean over elements) over the pairs, its denoiser in the
   teacher's parameterization evaluated at the one time it will be sampled at.
3. Sampling: one evaluation, x0_hat(x_T, t_max) (the driver's final clean estimate on a grid of one time);
   the run's sample section says so, so `load_run(...).sample()` and `noisecraft sample` take it unchanged.

When to pick it over consistency distillation (docs/few_steps.md): the target is exact, so nothing is
bootstrapped and every optimiser step trains the one evaluation a 1-step sample makes; the price is the
pairs (one ODE solve of the teacher each) and a student that is trained at t_max only, so more evaluations
add little (a consistency student improves with them). Where the map from noise to data has sharp
boundaries (between well separated modes), the student generalises from the pairs it saw: the error on fresh
noise falls with their number (docs/benchmarks/distill.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.core.tensors import FLOAT64
from noisecraft.data import Dataset
from noisecraft.runs.config import DistillConfig, RunConfig, TrainConfig
from noisecraft.runs.distill import Teacher, default_budget, student_solver
from noisecraft.runs.reflow import Pairs, ReflowResult, checked_coupling, train_on_pairs
from noisecraft.runs.train import DiffusionStep

#: epochs over the pairs that set their default number (default_pairs). Fewer epochs over more pairs measured
#: better wherever tried: on the 16-D oracle (MLP 512 x 4) 50,000 pairs seen 100 times each gave within-mode W2
#: 0.104, 200,000 seen 51 times 0.063 (a student that saw its pairs 100 times fit them, squared error 0.002, but
#: not fresh noise, 0.42); on digits 4,096 pairs seen 75 times gave FD 17.7 at 1 NFE, 20,000 seen 16 times 15.0.
#: A pair costs the teacher's ODE (32 evaluations), a use about 3 (forward and backward), so at 20 epochs the
#: pairs cost about half the training (docs/benchmarks/distill.md)
EPOCHS = 20
#: pairs when no step budget is set (training bounded by time only), and the fewest by default
PAIRS, MIN_PAIRS = 50_000, 1_000


def default_pairs(train: TrainConfig) -> int:
    """max_steps x batch_size / EPOCHS pairs (at least MIN_PAIRS), so that the planned steps see each pair about
    EPOCHS times however long the student trains; PAIRS when training has no step budget."""
    if train.max_steps is None:
        return PAIRS
    return max(MIN_PAIRS, math.ceil(train.max_steps * train.batch_size / EPOCHS))


class RegressionStep(DiffusionStep):
    """Squared error between the student's one evaluation x0_hat(sigma(t_max) z, t_max) and the teacher's ODE
    end x of the same z (Luhman & Luhman 2021), mean over elements; batches and label dropout are
    drawn as in training, the step's noise and times are left unused."""

    def __init__(self, config: RunConfig, data: Dataset, model: nn.Module, accelerator: Any, pairs: Pairs) -> None:
        super().__init__(config, pairs.dataset(data.name), model, accelerator)
        s = config.loss.schedule
        self.z, self.t_max, self.scale = pairs.z, s.t_max, float(s.sigma(s.t_max))  # fixed: taken once, not per step

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        z = self.z[d["idx"][part]].to(x0.device)
        t = torch.full((z.shape[0],), self.t_max, dtype=FLOAT64, device=x0.device)
        pred = self.denoiser(self.scale * z, t, cond)
        return ((pred.float() - x0.float()) ** 2).flatten(1).mean(1).mean()


def regression_config(teacher: Teacher, minutes: float | None, max_steps: int | None, train: dict[str, Any]
                      ) -> RunConfig:
    """The teacher's config with the training budget (default_budget when neither is given), the train fields,
    the one-evaluation sampler at the schedule's t_max (the teacher's bounds kept) and the `distill` record."""
    if minutes is None and max_steps is None:
        minutes, max_steps = default_budget(teacher)
    base = teacher.config.sample
    start = torch.tensor([teacher.schedule.t_max], dtype=FLOAT64)
    info = DistillConfig(teacher=teacher.source, method="regression", steps=1)
    return teacher.config.model_copy(update={"train": teacher.config.train.derived(minutes, max_steps, **train),
                                             "sample": student_solver("regression", start, base), "distill": info})


def regress(teacher: str | Path | Teacher, out_dir: str | Path, pairs: int | Pairs | None = None, steps: int = 32,
            minutes: float | None = None, max_steps: int | None = None, *, solver: str | None = None, seed: int = 0,
            batch: int = 500, progress: bool = True, **train_options: Any) -> ReflowResult:
    """Distil `teacher` (a run directory or a Teacher) into a 1-evaluation student in `out_dir` by regression
    onto `pairs` ODE ends of the teacher at `steps` steps (`solver`: default the teacher's deterministic
    sampler; `pairs` may be a Pairs made before; default: default_pairs of the student's budget), trained from
    the teacher's weights for `minutes` or `max_steps` (default: distillation's, the teacher's budget ended at
    twice its training time); `minutes` bounds making the pairs and training together (training keeps at least
    a quarter of it, reflow.remaining_budget). `seed` draws the pairs' noise and labels;
    `train_options`: fields of the train section (None keeps the teacher's)."""
    teacher, out_dir, minutes, max_steps, train_options = checked_coupling(
        teacher, out_dir, PAIRS if pairs is None else pairs, steps, solver, batch, minutes, max_steps, train_options)
    config = regression_config(teacher, minutes, max_steps, train_options)
    pairs = default_pairs(config.train) if pairs is None else pairs
    return train_on_pairs(teacher, out_dir, config, pairs, steps, seed, solver, batch, progress, RegressionStep,
                          shared_budget=True)


__all__ = ["EPOCHS", "PAIRS", "RegressionStep", "default_pairs", "regress", "regression_config"]
