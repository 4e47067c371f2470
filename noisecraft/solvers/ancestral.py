"""DDPM ancestral sampling and DDIM, as steps of the Gaussian posterior q(x_t | x_s, x0_hat).

DDIM with eta (Song et al. 2021a, eq. 12): eta = 0 is the deterministic sampler (first order in the
probability-flow ODE; Euler in (x/alpha, sigma/alpha), Karras et al. 2022 sec. 3); eta = 1 is DDPM's
ancestral step with the posterior variance sigma~^2 (Ho et al. 2020, eq. 6-7). `ddpm(variance="forward")`
uses the forward step's variance (beta_t) instead, Ho et al.'s other choice.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.solvers._steps import ddim_step, forward_std, point, posterior_std


def ddim(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021a, Alg. in sec. 4.1); one function evaluation per step."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x0 = denoise(x, s.t)
        std = eta * posterior_std(s, t)
        z = randn_like(x, generator) if std > 0 else None
        x = ddim_step(x, x0, s, t, std, z)
    return x


def ddpm(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None, variance: str = "posterior") -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) between arbitrary grid times."""
    if variance not in ("posterior", "forward"):
        raise ValueError(f"variance must be 'posterior' or 'forward', got {variance!r}")
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x0 = denoise(x, s.t)
        z = randn_like(x, generator)
        if variance == "posterior":
            x = ddim_step(x, x0, s, t, posterior_std(s, t), z)
        else:
            x = ddim_step(x, x0, s, t, posterior_std(s, t), None) + forward_std(s, t) * z
    return x
