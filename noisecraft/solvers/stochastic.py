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
from noisecraft.solvers._steps import Point, forward_std, point, score_of


def _em_step(denoise: Callable, schedule: Schedule, x: Tensor, s: Point, t: Point, z: Tensor) -> Tensor:
    """x_t = x_s - (f x - g^2 score)(s - t) + g sqrt(s - t) z, coefficients at s."""
    dt = s.t - t.t
    f, g2 = float(schedule.f(s.t)), float(schedule.g2(s.t))
    score = score_of(x, denoise(x, s.t), s)
    return x - (f * x - g2 * score) * dt + math.sqrt(g2 * dt) * z


def _reverse_diffusion_step(denoise: Callable, x: Tensor, s: Point, t: Point, z: Tensor) -> Tensor:
    """Reverse of x_s = (alpha_s/alpha_t) x_t + G xi: x_t = (2 - alpha_s/alpha_t) x_s + G^2 score + G z."""
    a_st, G = s.alpha / t.alpha, forward_std(s, t)
    score = score_of(x, denoise(x, s.t), s)
    return (2.0 - a_st) * x + G**2 * score + G * z


def euler_maruyama(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None) -> Tensor:
    """Euler-Maruyama on the reverse SDE; one function evaluation per step."""
    for s_time, t_time in zip(times[:-1], times[1:]):
        x = _em_step(denoise, schedule, x, point(schedule, s_time), point(schedule, t_time), randn_like(x, generator))
    return x


def langevin(denoise: Callable, x: Tensor, p: Point, snr: float, n_steps: int, generator: Generator) -> Tensor:
    """Langevin corrector at fixed time (Song et al. 2021, Alg. 4), step eps = 2 (snr sigma_t)^2 (see module doc)."""
    step = 2.0 * (snr * p.sigma) ** 2
    for _ in range(n_steps):
        score = score_of(x, denoise(x, p.t), p)
        x = x + step * score + math.sqrt(2.0 * step) * randn_like(x, generator)
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
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x = langevin(denoise, x, s, snr, corrector_steps, generator)
        z = randn_like(x, generator)
        if predictor == "reverse_diffusion":
            x = _reverse_diffusion_step(denoise, x, s, t, z)
        else:
            x = _em_step(denoise, schedule, x, s, t, z)
    return x
