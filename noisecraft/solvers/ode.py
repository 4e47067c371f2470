"""Probability-flow ODE solvers: Euler in t, Heun with optional churn, adaptive Dormand-Prince.

All three integrate the PF-ODE of noisecraft.core.sde.ReverseProcess: Euler its drift in t (Song et al.
2021, eq. 13); Heun and the adaptive solver its field in the scaled variables, dx~/dsigma~ = (x~ - x0_hat) /
sigma~ and dx~/drho = x~ - x0_hat (Karras et al. 2022, eq. 4 after rescaling), where the path is smoothest.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.core.sde import ReverseProcess, point


def euler(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None) -> Tensor:
    """Euler on dx/dt = f x - g^2/2 score in t (Song et al. 2021, eq. 13); one evaluation per step."""
    flow = ReverseProcess(schedule, denoise, probability_flow=True)
    for s_time, t_time in zip(times[:-1], times[1:]):
        x = x + (float(t_time) - float(s_time)) * flow.drift(x, point(schedule, s_time))
    return x


def heun(
    denoise: Callable,
    schedule: Schedule,
    x: Tensor,
    times: Tensor,
    generator: Generator = None,
    churn: float = 0.0,
    churn_min: float = 0.0,
    churn_max: float = float("inf"),
    noise_scale: float = 1.0,
) -> Tensor:
    """Heun's 2nd-order method with stochastic churn (Karras et al. 2022, Alg. 2); two evaluations per step.

    churn = S_churn (0: deterministic); noise is added only while churn_min <= sigma~ <= churn_max.
    The correction is applied on every interval, the last one included, so the order holds to t_min.
    """
    flow = ReverseProcess(schedule, denoise, probability_flow=True)
    steps = len(times) - 1
    sigma_ceiling = float(schedule.sigma_tilde(1.0))
    x_scaled = x / point(schedule, times[0]).alpha
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        gamma = min(churn / steps, math.sqrt(2.0) - 1.0) if churn_min <= s.sigma_tilde <= churn_max else 0.0
        sigma_hat = min(s.sigma_tilde * (1.0 + gamma), sigma_ceiling)
        if sigma_hat > s.sigma_tilde:
            x_scaled = x_scaled + math.sqrt(sigma_hat**2 - s.sigma_tilde**2) * noise_scale * randn_like(x_scaled, generator)
            s = point(schedule, schedule.t_from_sigma_tilde(sigma_hat))
        d = flow.dx_dsigma(x_scaled, s)
        x_euler = x_scaled + (t.sigma_tilde - s.sigma_tilde) * d
        d_next = flow.dx_dsigma(x_euler, t)
        x_scaled = x_scaled + (t.sigma_tilde - s.sigma_tilde) * 0.5 * (d + d_next)
    return x_scaled * point(schedule, times[-1]).alpha


def rk45(
    denoise: Callable,
    schedule: Schedule,
    x: Tensor,
    times: Tensor,
    generator: Generator = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
) -> Tensor:
    """Adaptive Dormand-Prince RK45 (torchdiffeq) on dx~/d rho = x~ - x0_hat, rho = log sigma~.

    Only the first and last grid times are used; the solver chooses its own steps to meet rtol/atol.
    """
    from torchdiffeq import odeint

    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    flow = ReverseProcess(schedule, denoise, probability_flow=True)
    start, end = point(schedule, times[0]), point(schedule, times[-1])
    span = torch.tensor([math.log(start.sigma_tilde), math.log(end.sigma_tilde)], dtype=x.dtype, device=x.device)
    path = odeint(flow.dx_drho, x / start.alpha, span, rtol=rtol, atol=atol, method=method)
    return path[-1] * end.alpha
