"""The reverse-time process of a schedule and a denoise function: reverse SDE and probability-flow ODE.

From the forward SDE dx = f(t) x dt + g(t) dW (noisecraft.core.schedules derives f and g^2 from alpha and
sigma) and the score from Tweedie's formula, score = (alpha x0_hat - x) / sigma^2, follow (Song et al. 2021,
eq. 6 and 13; score_sde's `SDE.reverse(probability_flow=...)`)

    reverse SDE:  dx = [f x - g^2 score] dt + g dW_bar,
    PF-ODE:       dx = [f x - g^2 score / 2] dt.

In the scaled variables x~ = x / alpha, sigma~ = sigma / alpha and rho = log sigma~ = -lambda / 2 the PF-ODE
of every schedule is dx~/dsigma~ = (x~ - x0_hat) / sigma~, i.e. dx~/drho = x~ - x0_hat (Karras et al. 2022,
eq. 4 after rescaling), where its path is smoothest; Heun, the adaptive solver and the likelihood work there.

`ReverseProcess` holds all of it once: the drift and diffusion, the field in the scaled variables with its
clamp of t to [0, 1], and d lambda / dt. Every solver of the ODE or SDE, the likelihood and the figures use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64, as_time


@dataclass(frozen=True)
class Point:
    """A schedule evaluated at one time: alpha, sigma and eta = log(alpha / sigma) = lambda / 2."""

    t: float
    alpha: float
    sigma: float

    @property
    def eta(self) -> float:
        return math.log(self.alpha) - math.log(self.sigma)

    @property
    def sigma_tilde(self) -> float:
        return self.sigma / self.alpha


def point(schedule: Schedule, t: float | Tensor) -> Point:
    """The schedule at time t, its coefficients as Python floats (float64)."""
    t = float(t)
    return Point(t, float(schedule.alpha(t)), float(schedule.sigma(t)))


class ReverseProcess:
    """The reverse SDE (probability_flow=False) or the PF-ODE (True) of `schedule` and `denoise`.

    `denoise(x, t) -> x0_hat` is the denoiser contract; times are floats (one time for the whole batch).
    """

    def __init__(self, schedule: Schedule, denoise: Callable[[Tensor, Tensor], Tensor], probability_flow: bool = True) -> None:
        self.schedule, self.denoise, self.probability_flow = schedule, denoise, probability_flow

    # -- x and t --------------------------------------------------------------------------------------
    def score(self, x: Tensor, p: Point) -> Tensor:
        """grad log p_t(x) = (alpha x0_hat - x) / sigma^2 (Tweedie)."""
        return (p.alpha * self.denoise(x, p.t) - x) / p.sigma**2

    def g2(self, p: Point) -> float:
        """g^2(t) of the forward SDE."""
        return float(self.schedule.g2(p.t))

    def drift(self, x: Tensor, p: Point) -> Tensor:
        """f x - g^2 score (reverse SDE) or f x - g^2 score / 2 (PF-ODE), at time p.t."""
        weight = 0.5 if self.probability_flow else 1.0
        return float(self.schedule.f(p.t)) * x - weight * self.g2(p) * self.score(x, p)

    def diffusion(self, p: Point) -> float:
        """g(t) of the reverse SDE; 0 for the PF-ODE."""
        return 0.0 if self.probability_flow else math.sqrt(self.g2(p))

    def dlog_snr_dt(self, t: float | Tensor) -> Tensor:
        """d lambda / dt (negative), the change of variables between t and the log-SNR."""
        return self.schedule.dlog_snr_dt(t)

    # -- the scaled variables x~ = x / alpha, rho = log sigma~ ------------------------------------------
    def time_of_rho(self, rho: float | Tensor) -> float:
        """t at log sigma~ = rho, clamped to [0, 1]: an adaptive solver's trial steps may probe past the ends
        of the span (dopri5's first step can reach far beyond t = 1, where VE's sigma overflows)."""
        lam = -2.0 * torch.as_tensor(rho).detach().cpu().to(FLOAT64)
        return min(max(float(self.schedule.t_from_log_snr(lam)), 0.0), 1.0)

    def dx_dsigma(self, x_scaled: Tensor, p: Point) -> Tensor:
        """dx~/dsigma~ = (x~ - x0_hat(alpha x~, t)) / sigma~ (PF-ODE)."""
        return (x_scaled - self.denoise(p.alpha * x_scaled, p.t)) / p.sigma_tilde

    def dx_drho(self, rho: float | Tensor, x_scaled: Tensor) -> Tensor:
        """dx~/drho = x~ - x0_hat(alpha x~, t(rho)) (PF-ODE), in x~'s dtype; t(rho) clamped as above."""
        t = self.time_of_rho(rho)
        x0 = self.denoise(float(self.schedule.alpha(t)) * x_scaled, as_time(t, x_scaled.shape[0]))
        return x_scaled - x0.to(x_scaled.dtype)


def reverse(schedule: Schedule, denoise: Callable[[Tensor, Tensor], Tensor], probability_flow: bool = True) -> ReverseProcess:
    """The reverse-time process of `schedule` with the score of `denoise` (score_sde's `SDE.reverse`)."""
    return ReverseProcess(schedule, denoise, probability_flow)


__all__ = ["Point", "ReverseProcess", "point", "reverse"]
