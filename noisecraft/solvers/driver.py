"""The one sampling driver (STYLE.md): `sample` builds the time grid, draws the prior with per-sample seeds,
and hands over to `solve`, which counts function evaluations (NFE), bounds x0_hat if asked, and takes the
final step, from x at t_min to the clean estimate x0_hat(x_{t_min}, t_min), in one place for every solver,
so that each solver's order holds on every interval of its grid and t_min does not shrink with the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from noisecraft.core.bounds import check_threshold, clipped
from noisecraft.core.noise import SampleNoise
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import as_time
from noisecraft.core.timesteps import make_grid, step_aware_range
from noisecraft.solvers.registry import check_options, get_solver


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
    clip: float | None = None,
    threshold: float | None = None,
    **options: Any,
) -> tuple[Tensor, SampleInfo]:
    """Run `solver` from x_T along `times`, then the final step; returns (x_0, info).

    clip / threshold bound every x0_hat the solver sees, the final one included (noisecraft.core.bounds).
    """
    times = make_grid(schedule, 1, list(times) if not isinstance(times, Tensor) else times)
    if not isinstance(x_T, Tensor) or x_T.ndim < 1 or x_T.shape[0] < 1:
        raise ValueError(f"x_T must be a tensor with a batch dimension, got {type(x_T).__name__}")
    check_options(solver, options)
    return _integrate(denoise, schedule, x_T, times, solver, generator, denoise_final, cond, progress, clip, threshold,
                      options)


def _integrate(denoise: Callable, schedule: Schedule, x_T: Tensor, times: Tensor, solver: str, generator: Any,
               denoise_final: bool, cond: Any, progress: bool, clip: float | None, threshold: float | None,
               options: dict) -> tuple[Tensor, SampleInfo]:
    """`solve` on checked inputs: `times` a validated float64 grid, `options` accepted by `solver`."""
    spec = get_solver(solver)
    if len(times) == 1 and not denoise_final:
        raise ValueError("a grid of one time takes no solver step, so it needs denoise_final=True")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.nfe(len(times) - 1, options, denoise_final), desc=solver, unit="nfe")
    counted = CountingDenoise(clipped(denoise, clip, check_threshold(threshold)), cond, bar)
    if not isinstance(generator, SampleNoise):  # every draw per sample, whichever option makes a solver random
        generator = SampleNoise.from_generator(generator, x_T.shape[0])
    x = spec.fn(counted, schedule, x_T, times, generator, **{**spec.options, **options}) if len(times) > 1 else x_T
    x = final_step(counted, schedule, x, float(times[-1]), denoise_final)
    if bar is not None:
        bar.close()
    return x, SampleInfo(times, counted.nfe, solver, {**spec.options, **options})


def prior_sample(schedule: Schedule, shape: Sequence[int], noise: SampleNoise, dtype: torch.dtype, device: Any, t_max: float) -> Tensor:
    """x_T ~ N(0, sigma(t_max)^2 I) with per-sample seeds."""
    return float(schedule.sigma(t_max)) * noise.randn(tuple(shape[1:]), dtype, device)


def sample(
    denoise: Callable,
    schedule: Schedule,
    solver: str = "dpm++2m",
    steps: int = 20,
    shape: Sequence[int] = (1, 2),
    generator: torch.Generator | SampleNoise | None = None,
    grid: str | Sequence[float] | Tensor = "log_snr",
    t_min: float | None = None,
    t_max: float | None = None,
    cond: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    denoise_final: bool = True,
    return_info: bool = False,
    progress: bool = False,
    clip: float | None = None,
    threshold: float | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, SampleInfo]:
    """Draw samples: prior at t_max, `steps` solver steps on `grid` down to t_min, then x0_hat.

    `steps` is the number of grid intervals; NFE = evaluations per step * steps + 1 (the final clean
    estimate), except rk45, which picks its own steps; steps=0 is the clean estimate x0_hat(x_T, t_max) alone.
    With a named grid and neither t_min nor t_max given, the range follows the evaluations n the steps spend
    (noisecraft.core.timesteps.step_aware_range: sigma~ from max(25, n^1.25) down to n^-1.25); give either
    end, or a list of times, to choose it yourself. Sample i depends only on (seed drawn from generator, i);
    a `SampleNoise` as the generator draws a shard of a larger call (its `first` row onward).
    clip / threshold bound x0_hat: static clipping or dynamic thresholding (noisecraft.core.bounds).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive sizes with the batch first, got {shape}")
    spec = get_solver(solver)
    check_options(solver, options)
    if isinstance(grid, str) and t_min is None and t_max is None and steps and spec.evaluations_per_step(options):
        t_min, t_max = step_aware_range(schedule, steps * spec.evaluations_per_step(options),
                                        spec.max_log_snr_step and steps * spec.max_log_snr_step)
    times = make_grid(schedule, steps, grid, t_min, t_max)
    noise = generator if isinstance(generator, SampleNoise) else SampleNoise.from_generator(generator, shape[0])
    if noise.batch != shape[0]:
        raise ValueError(f"the noise source was built for {noise.batch} samples, but `shape` asks for {shape[0]}")
    x_T = prior_sample(schedule, shape, noise, dtype, device, float(times[0]))
    x, info = _integrate(denoise, schedule, x_T, times, solver, noise, denoise_final, cond, progress, clip, threshold,
                         options)
    return (x, info) if return_info else x
