"""Time grids for sampling, separate from the solvers (STYLE.md: a grid is an argument, not a flag).

A grid is a strictly decreasing float64 tensor t_0 = t_max > ... > t_N = t_min in [0, 1]; `steps` = N
intervals (N = 0: the single time t_max, where a sampler only takes the clean estimate x0_hat(x_T, t_max)). Uniform in t, uniform in log-SNR (Lu et al. 2022 recommend it for DPM-Solver), or the
Karras rho-grid, uniform in sigma~^(1/rho) with sigma~ = sigma/alpha (Karras et al. 2022, eq. 5).
"""

from __future__ import annotations

from typing import Sequence

import math

import torch
from torch import Tensor

from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64

GRIDS = ("uniform", "log_snr", "karras")


def _range(schedule: Schedule, t_min: float | None, t_max: float | None) -> tuple[float, float]:
    t_min = schedule.t_min if t_min is None else float(t_min)
    t_max = schedule.t_max if t_max is None else float(t_max)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return t_min, t_max


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    return steps


#: sigma~ = sigma/alpha where a few-step sampler starts at the latest: N(0, sigma^2) then misses the data's
#: alpha x_0 by 1/25 of its scale (DDPM's timestep 799, where diffusers' "leading" spacing starts)
SIGMA_TILDE_START = 25.0
#: the noise range a sampler of n evaluations covers is sigma~ in [n^-k, max(SIGMA_TILDE_START, n^k)]
RANGE_EXPONENT = 1.25


def step_aware_range(schedule: Schedule, evaluations: int, max_span: float | None = None) -> tuple[float, float]:
    """(t_min, t_max) for a sampler that spends `evaluations` network calls between them: noise levels
    sigma~ in [n^-1.25, max(25, n^1.25)] (log-SNR in [-2 ln max(25, n^1.25), 2.5 ln n]), inside the
    schedule's own range.

    Measured, not derived (benchmarks/few_step_range.py, docs/few_steps.md): a few steps spread over the
    whole range take steps in log-SNR too long to be accurate (DDPM's range spans 19.3 nats), and the
    clean estimate at the end is better taken a little early than after inaccurate steps. On the 16-D and
    ring oracles the best end for every deterministic solver lies within ~1 nat of 2.5 ln n for n from 4
    to 20; with n >= 36 it reaches DDPM's whole range. Data are assumed at unit scale (sigma_data ~ 0.5-1).
    `max_span` caps the log-SNR span (a solver that cannot take long steps), shrinking it about its middle.
    """
    spread = max(int(evaluations), 1) ** RANGE_EXPONENT
    lam_end = min(2.0 * math.log(spread), float(schedule.log_snr(schedule.t_min)))
    lam_start = max(-2.0 * math.log(max(SIGMA_TILDE_START, spread)), float(schedule.log_snr(schedule.t_max)))
    if max_span is not None and lam_end - lam_start > max_span:
        middle = 0.5 * (lam_start + lam_end)
        lam_start, lam_end = middle - 0.5 * max_span, middle + 0.5 * max_span
    t_min = max(float(schedule.t_from_log_snr(torch.tensor(lam_end, dtype=FLOAT64))), schedule.t_min)
    t_max = min(float(schedule.t_from_log_snr(torch.tensor(lam_start, dtype=FLOAT64))), schedule.t_max)
    if not t_min < t_max:  # a schedule whose whole range is narrower than the rule's
        return schedule.t_min, schedule.t_max
    return t_min, t_max


def uniform_t(schedule: Schedule, steps: int, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """t_i = t_max + i/N (t_min - t_max)."""
    t_min, t_max = _range(schedule, t_min, t_max)
    return torch.linspace(t_max, t_min, _check_steps(steps) + 1, dtype=FLOAT64)


def uniform_log_snr(schedule: Schedule, steps: int, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Equal steps in lambda (Lu et al. 2022, sec. 3.4)."""
    t_min, t_max = _range(schedule, t_min, t_max)
    lam = torch.linspace(float(schedule.log_snr(t_max)), float(schedule.log_snr(t_min)), _check_steps(steps) + 1, dtype=FLOAT64)
    times = schedule.t_from_log_snr(lam)
    times[0], times[-1] = t_max, t_min  # exact endpoints, free of the inverse's rounding
    return times


def karras(schedule: Schedule, steps: int, rho: float = 7.0, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """sigma~_i = (sigma~_max^(1/rho) + i/N (sigma~_min^(1/rho) - sigma~_max^(1/rho)))^rho (Karras et al. 2022, eq. 5)."""
    t_min, t_max = _range(schedule, t_min, t_max)
    hi = float(schedule.sigma_tilde(t_max)) ** (1 / rho)
    lo = float(schedule.sigma_tilde(t_min)) ** (1 / rho)
    sigma = torch.linspace(hi, lo, _check_steps(steps) + 1, dtype=FLOAT64) ** rho
    times = schedule.t_from_sigma_tilde(sigma)
    times[0], times[-1] = t_max, t_min
    return times


def check_time_list(times: Sequence[float] | Tensor) -> Tensor:
    """A user grid as float64 times: at least one point, finite, inside [0, 1], strictly decreasing."""
    times = torch.as_tensor(times, dtype=FLOAT64).reshape(-1)
    if times.numel() < 1:
        raise ValueError("a time grid needs at least 1 point, got none")
    if not torch.isfinite(times).all() or times.min() < 0.0 or times.max() > 1.0:
        raise ValueError(f"time grid must lie in [0, 1], got values from {times.min().item()} to {times.max().item()}")
    if not (times[1:] < times[:-1]).all():
        i = int(torch.nonzero(times[1:] >= times[:-1])[0])
        raise ValueError(f"time grid must be strictly decreasing, but t[{i}]={times[i].item()} <= t[{i + 1}]={times[i + 1].item()}")
    return times


def validate_times(schedule: Schedule, times: Sequence[float] | Tensor) -> Tensor:
    """Check a user grid: at least one point, strictly decreasing, inside [0, 1], finite log-SNR."""
    times = check_time_list(times)
    lam = schedule.log_snr(times)
    if not torch.isfinite(lam).all():
        bad = times[~torch.isfinite(lam)].tolist()
        raise ValueError(f"log-SNR is not finite at t={bad} for this schedule; keep the grid inside (t where alpha > 0 and sigma > 0)")
    return times


def make_grid(
    schedule: Schedule,
    steps: int,
    grid: str | Sequence[float] | Tensor = "log_snr",
    t_min: float | None = None,
    t_max: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """A named grid with `steps` intervals, or a user list of times (validated)."""
    if not isinstance(grid, str):
        return validate_times(schedule, grid)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {GRIDS} or a list of times")
    if _check_steps(steps) == 0:
        return validate_times(schedule, torch.tensor([_range(schedule, t_min, t_max)[1]], dtype=FLOAT64))
    if grid == "uniform":
        times = uniform_t(schedule, steps, t_min, t_max)
    elif grid == "log_snr":
        times = uniform_log_snr(schedule, steps, t_min, t_max)
    else:
        times = karras(schedule, steps, rho, t_min, t_max)
    return validate_times(schedule, times)
