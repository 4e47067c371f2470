"""Samplers: each is `solver(denoise, schedule, x_T, times, generator, **options) -> x at times[-1]`.

`sample` is the one driver: it builds the time grid, draws the prior with per-sample seeds, counts
function evaluations (NFE), and takes the final step, from x at t_min to the clean estimate
x0_hat(x_{t_min}, t_min), in one place for every solver (STYLE.md), so that each solver's order holds on
every interval of its grid and t_min does not shrink with the number of steps.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from noisecraft.core.noise import SampleNoise
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import as_time
from noisecraft.core.timesteps import make_grid
from noisecraft.solvers.ancestral import ddim, ddpm
from noisecraft.solvers.dpm import multistep, singlestep_2s, singlestep_pp2s
from noisecraft.solvers.ode import euler, heun, rk45
from noisecraft.solvers.stochastic import euler_maruyama, predictor_corrector


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its function, fixed options, evaluations per step, and whether it is random."""

    fn: Callable[..., Tensor]
    options: dict = field(default_factory=dict)
    nfe_per_step: int = 1
    stochastic: bool = False
    order: int = 1
    doc: str = ""


SOLVERS: dict[str, SolverSpec] = {
    "ddpm": SolverSpec(ddpm, nfe_per_step=1, stochastic=True, doc="DDPM ancestral (Ho et al. 2020)"),
    "ddim": SolverSpec(ddim, nfe_per_step=1, order=1, doc="DDIM, eta option (Song et al. 2021a)"),
    "euler_maruyama": SolverSpec(euler_maruyama, stochastic=True, doc="Euler-Maruyama on the reverse SDE"),
    "pc": SolverSpec(predictor_corrector, nfe_per_step=2, stochastic=True, doc="predictor-corrector (Song et al. 2021)"),
    "euler": SolverSpec(euler, order=1, doc="Euler on the PF-ODE in t (Song et al. 2021)"),
    "heun": SolverSpec(heun, nfe_per_step=2, order=2, doc="Heun, optional churn (Karras et al. 2022, Alg. 2)"),
    "dpm++1m": SolverSpec(multistep, {"order": 1}, order=1, doc="DPM-Solver++ first order (= DDIM)"),
    "dpm++2m": SolverSpec(multistep, {"order": 2}, order=2, doc="DPM-Solver++(2M) (Lu et al. 2022b)"),
    "dpm++3m": SolverSpec(multistep, {"order": 3}, order=3, doc="DPM-Solver++(3M) (Lu et al. 2022b)"),
    "unipc": SolverSpec(multistep, {"order": 2, "corrector": True}, order=3, doc="DPM-Solver++(2M) + UniPC-style corrector"),
    "dpm2s": SolverSpec(singlestep_2s, nfe_per_step=2, order=2, doc="DPM-Solver-2 singlestep (Lu et al. 2022a)"),
    "dpm++2s": SolverSpec(singlestep_pp2s, nfe_per_step=2, order=2, doc="DPM-Solver++(2S) (Lu et al. 2022b)"),
    "rk45": SolverSpec(rk45, nfe_per_step=0, order=5, doc="adaptive Dormand-Prince on the PF-ODE (torchdiffeq)"),
}


def get_solver(name: str) -> SolverSpec:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[name]


class CountingDenoise:
    """Wraps denoise: binds `cond`, counts evaluations, and stops on non-finite output with a clear error."""

    def __init__(self, denoise: Callable, cond: Any = None, progress: Any = None) -> None:
        self.denoise, self.cond, self.progress, self.nfe = denoise, cond, progress, 0

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        t_batch = as_time(t, x.shape[0])
        out = self.denoise(x, t_batch) if self.cond is None else self.denoise(x, t_batch, self.cond)
        self.nfe += 1
        if self.progress is not None:
            self.progress.update(1)
        if out.shape != x.shape:
            raise ValueError(f"denoise returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        if not torch.isfinite(out).all():
            raise ValueError(f"denoise returned NaN or inf at t={float(t_batch[0]):.6g} (evaluation {self.nfe}); "
                             "expected finite values: check the model and the time grid")
        return out


@dataclass
class SampleInfo:
    """What a sampling run did: its grid, the evaluations used, the solver and its options."""

    times: Tensor
    nfe: int
    solver: str
    options: dict


def final_step(denoise: Callable, schedule: Schedule, x: Tensor, t_last: float, denoise_final: bool) -> Tensor:
    """The last step, decided once: x0_hat(x, t_min), or x / alpha(t_min) when denoise_final is False."""
    if denoise_final:
        return denoise(x, t_last)
    return x / float(schedule.alpha(t_last))


def solve(
    denoise: Callable,
    schedule: Schedule,
    x_T: Tensor,
    times: Tensor | Sequence[float],
    solver: str = "dpm++2m",
    generator: torch.Generator | SampleNoise | None = None,
    denoise_final: bool = True,
    cond: Any = None,
    progress: bool = False,
    **options: Any,
) -> tuple[Tensor, SampleInfo]:
    """Run `solver` from x_T along `times`, then the final step; returns (x_0, info)."""
    spec = get_solver(solver)
    times = make_grid(schedule, 1, list(times) if not isinstance(times, Tensor) else times)
    if not isinstance(x_T, Tensor) or x_T.ndim < 1 or x_T.shape[0] < 1:
        raise ValueError(f"x_T must be a tensor with a batch dimension, got {type(x_T).__name__}")
    _check_options(solver, spec, options)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.nfe_per_step * (len(times) - 1) + 1 if spec.nfe_per_step else None, desc=solver, unit="nfe")
    counted = CountingDenoise(denoise, cond, bar)
    if not isinstance(generator, SampleNoise):  # every draw per sample, whichever option makes a solver random
        generator = SampleNoise.from_generator(generator, x_T.shape[0])
    x = spec.fn(counted, schedule, x_T, times, generator, **{**spec.options, **options})
    x = final_step(counted, schedule, x, float(times[-1]), denoise_final)
    if bar is not None:
        bar.close()
    return x, SampleInfo(times, counted.nfe, solver, {**spec.options, **options})


def _check_options(name: str, spec: SolverSpec, options: dict) -> None:
    accepted = set(inspect.signature(spec.fn).parameters) - {"denoise", "schedule", "x", "times", "generator"}
    accepted -= set(spec.options)
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"solver {name!r} does not take option(s) {sorted(unknown)}; it accepts {sorted(accepted)}")


def prior_sample(schedule: Schedule, shape: Sequence[int], noise: SampleNoise, dtype: torch.dtype, device: Any, t_max: float) -> Tensor:
    """x_T ~ N(0, sigma(t_max)^2 I) with per-sample seeds."""
    return float(schedule.sigma(t_max)) * noise.randn(tuple(shape[1:]), dtype, device)


def sample(
    denoise: Callable,
    schedule: Schedule,
    solver: str = "dpm++2m",
    steps: int = 20,
    shape: Sequence[int] = (1, 2),
    generator: torch.Generator | None = None,
    grid: str | Sequence[float] | Tensor = "log_snr",
    t_min: float | None = None,
    t_max: float | None = None,
    cond: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    denoise_final: bool = True,
    return_info: bool = False,
    progress: bool = False,
    **options: Any,
) -> Tensor | tuple[Tensor, SampleInfo]:
    """Draw samples: prior at t_max, `steps` solver steps on `grid` down to t_min, then x0_hat.

    `steps` is the number of grid intervals; NFE = nfe_per_step * steps + 1 (the final clean estimate),
    except rk45, which picks its own steps. Sample i depends only on (seed drawn from generator, i).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive sizes with the batch first, got {shape}")
    get_solver(solver)
    times = make_grid(schedule, steps, grid, t_min, t_max)
    noise = SampleNoise.from_generator(generator, shape[0])
    x_T = prior_sample(schedule, shape, noise, dtype, device, float(times[0]))
    x, info = solve(denoise, schedule, x_T, times, solver, noise, denoise_final, cond, progress, **options)
    return (x, info) if return_info else x


class SolverConfig(BaseModel):
    """A sampler as a plain config (STYLE.md): solver name, steps, grid, time range and solver options.

    Round-trips to YAML; `run` draws samples with it. Unknown solvers or options are errors naming them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    solver: str = "dpm++2m"
    steps: int = Field(20, ge=1)
    grid: str | list[float] = "log_snr"
    t_min: float | None = None
    t_max: float | None = None
    denoise_final: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "SolverConfig":
        _check_options(self.solver, get_solver(self.solver), self.options)
        return self

    def run(self, denoise: Callable, schedule: Schedule, shape: Sequence[int], generator: torch.Generator | None = None,
            **kw: Any) -> Tensor | tuple[Tensor, SampleInfo]:
        """`sample` with this configuration; keyword arguments (cond, dtype, device, return_info...) pass through."""
        return sample(denoise, schedule, self.solver, self.steps, shape, generator, self.grid, self.t_min, self.t_max,
                      denoise_final=self.denoise_final, **kw, **self.options)
