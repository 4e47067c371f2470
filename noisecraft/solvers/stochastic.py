"""Reverse-SDE samplers: Euler-Maruyama and predictor-corrector (Song et al. 2021, Alg. 2-5).

Reverse SDE dx = [f x - g^2 score] dt + g dW_bar, integrated from t_max down to t_min.
Predictors: "euler_maruyama", or "reverse_diffusion" (the reverse of the discretised forward
step q(x_s | x_t), Song et al. 2021 eq. 46). Corrector: Langevin MCMC. Song et al. (Alg. 4-5) set the
step eps = 2 (snr ||z|| / ||score||)^2 from norms averaged over the batch; that makes sample i depend on
the other samples, and a per-sample ratio explodes where the score vanishes (a mode's centre). We use
its typical value, ||z||^2 / ||score||^2 ~ sigma_t^2 (score ~ -eps / sigma_t), i.e. eps = 2 (snr sigma_t)^2:
deterministic in t, batch-independent, and never larger than the ratio rule where the data are tighter than sigma_t.
"""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.core.sde import Point, ReverseProcess, point
from noisecraft.solvers._steps import forward_std


def _em_step(sde: ReverseProcess, x: Tensor, s: Point, t: Point, z: Tensor) -> Tensor:
    """x_t = x_s - drift (s - t) + g sqrt(s - t) z, the reverse SDE's coefficients at s."""
    dt = s.t - t.t
    return x - sde.drift(x, s) * dt + math.sqrt(sde.g2(s) * dt) * z


def _reverse_diffusion_step(sde: ReverseProcess, x: Tensor, s: Point, t: Point, z: Tensor) -> Tensor:
    """Reverse of x_s = (alpha_s/alpha_t) x_t + G xi: x_t = (2 - alpha_s/alpha_t) x_s + G^2 score + G z."""
    a_st, G = s.alpha / t.alpha, forward_std(s, t)
    return (2.0 - a_st) * x + G**2 * sde.score(x, s) + G * z


def euler_maruyama(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None) -> Tensor:
    """Euler-Maruyama on the reverse SDE; one function evaluation per step."""
    sde = ReverseProcess(schedule, denoise, probability_flow=False)
    for s_time, t_time in zip(times[:-1], times[1:]):
        x = _em_step(sde, x, point(schedule, s_time), point(schedule, t_time), randn_like(x, generator))
    return x


def langevin(sde: ReverseProcess, x: Tensor, p: Point, snr: float, n_steps: int, generator: Generator) -> Tensor:
    """Langevin corrector at fixed time (Song et al. 2021, Alg. 4), step eps = 2 (snr sigma_t)^2 (see module doc)."""
    step = 2.0 * (snr * p.sigma) ** 2
    for _ in range(n_steps):
        x = x + step * sde.score(x, p) + math.sqrt(2.0 * step) * randn_like(x, generator)
    return x


def predictor_corrector(
    denoise: Callable,
    schedule: Schedule,
    x: Tensor,
    times: Tensor,
    generator: Generator = None,
    predictor: str = "reverse_diffusion",
    snr: float = 0.16,
    corrector_steps: int = 1,
) -> Tensor:
    """PC sampling (Song et al. 2021, Alg. 1): at each grid time, `corrector_steps` Langevin steps then a predictor step.

    Function evaluations per step: 1 + corrector_steps.
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama"):
        raise ValueError(f"predictor must be 'reverse_diffusion' or 'euler_maruyama', got {predictor!r}")
    if snr <= 0 or corrector_steps < 0:
        raise ValueError(f"need snr > 0 and corrector_steps >= 0, got snr={snr}, corrector_steps={corrector_steps}")
    sde = ReverseProcess(schedule, denoise, probability_flow=False)
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x = langevin(sde, x, s, snr, corrector_steps, generator)
        z = randn_like(x, generator)
        if predictor == "reverse_diffusion":
            x = _reverse_diffusion_step(sde, x, s, t, z)
        else:
            x = _em_step(sde, x, s, t, z)
    return x
