"""Probability-flow ODE solvers: Euler in t, Heun with optional churn, adaptive Dormand-Prince.

In scaled coordinates x~ = x / alpha and sigma~ = sigma / alpha the PF-ODE of every schedule is
dx~/dsigma~ = (x~ - x0_hat) / sigma~ (Karras et al. 2022, eq. 4 with s = 1 after rescaling), so Heun and
the adaptive solver work there, where the path is smoothest; Euler in t follows Song et al. 2021, eq. 13.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from noisecraft.core.forward import pf_ode_drift
from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.solvers._steps import point


def euler(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None) -> Tensor:
    """Euler on dx/dt = f x - g^2/2 score in t (Song et al. 2021, eq. 13); one evaluation per step."""
    for s_time, t_time in zip(times[:-1], times[1:]):
        x = x + (float(t_time) - float(s_time)) * pf_ode_drift(schedule, denoise, x, float(s_time))
    return x


def _slope(denoise: Callable, schedule: Schedule, x_scaled: Tensor, t: float, alpha: float, sigma_tilde: float) -> Tensor:
    """d x~ / d sigma~ = (x~ - x0_hat) / sigma~."""
    return (x_scaled - denoise(alpha * x_scaled, t)) / sigma_tilde


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
    steps = len(times) - 1
    sigma_ceiling = float(schedule.sigma_tilde(1.0))
    s0 = point(schedule, times[0])
    x_scaled = x / s0.alpha
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        gamma = min(churn / steps, math.sqrt(2.0) - 1.0) if churn_min <= s.sigma_tilde <= churn_max else 0.0
        sigma_hat = min(s.sigma_tilde * (1.0 + gamma), sigma_ceiling)
        if sigma_hat > s.sigma_tilde:
            x_scaled = x_scaled + math.sqrt(sigma_hat**2 - s.sigma_tilde**2) * noise_scale * randn_like(x_scaled, generator)
            s = point(schedule, schedule.t_from_sigma_tilde(sigma_hat))
        d = _slope(denoise, schedule, x_scaled, s.t, s.alpha, s.sigma_tilde)
        x_euler = x_scaled + (t.sigma_tilde - s.sigma_tilde) * d
        d_next = _slope(denoise, schedule, x_euler, t.t, t.alpha, t.sigma_tilde)
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
    start, end = point(schedule, times[0]), point(schedule, times[-1])

    def field(rho: Tensor, x_scaled: Tensor) -> Tensor:
        # clamped: dopri5's first trial step may probe beyond the span's ends
        t = min(max(float(schedule.t_from_log_snr(-2.0 * rho.detach().cpu().to(torch.float64))), 0.0), 1.0)
        alpha = float(schedule.alpha(t))
        return x_scaled - denoise(alpha * x_scaled, t)

    span = torch.tensor([math.log(start.sigma_tilde), math.log(end.sigma_tilde)], dtype=x.dtype, device=x.device)
    path = odeint(field, x / start.alpha, span, rtol=rtol, atol=atol, method=method)
    return path[-1] * end.alpha
