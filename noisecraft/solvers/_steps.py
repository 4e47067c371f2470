"""Step arithmetic shared by several solvers, written once (STYLE.md: no copy-paste between siblings).

All coefficients are Python floats computed in float64 from the schedule; tensors keep the caller's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from noisecraft.schedules import Schedule


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
    t = float(t)
    return Point(t, float(schedule.alpha(t)), float(schedule.sigma(t)))


def eps_of(x: Tensor, x0: Tensor, p: Point) -> Tensor:
    return (x - p.alpha * x0) / p.sigma


def score_of(x: Tensor, x0: Tensor, p: Point) -> Tensor:
    return (p.alpha * x0 - x) / p.sigma**2


def exponential_step(x: Tensor, s: Point, t: Point, x0_terms: Tensor) -> Tensor:
    """x_t = (sigma_t / sigma_s) x_s + alpha_t * x0_terms: the data-prediction exponential integrator
    (Lu et al. 2022b, eq. 9), where x0_terms = integral of e^(eta - eta_t) x0_hat(eta) d eta, expanded by the caller."""
    return (t.sigma / s.sigma) * x + t.alpha * x0_terms


def phi(h: float) -> tuple[float, float, float]:
    """phi_1, phi_2, phi_3 with e^-h int_0^h e^u u^k / k! du = phi_{k+1}: the weights of x0, x0' and x0''."""
    phi1 = -math.expm1(-h)
    phi2 = h - phi1
    phi3 = 0.5 * h * h - phi2
    return phi1, phi2, phi3


def posterior_std(s: Point, t: Point) -> float:
    """Std of q(x_t | x_s, x_0) for t < s: sigma_{s|t} sigma_t / sigma_s (Kingma et al. 2021, eq. 32)."""
    a_st = s.alpha / t.alpha
    var_st = max(s.sigma**2 - a_st**2 * t.sigma**2, 0.0)
    return math.sqrt(var_st) * t.sigma / s.sigma


def forward_std(s: Point, t: Point) -> float:
    """Std of the forward step q(x_s | x_t), sigma_{s|t} (beta_t in DDPM's discrete chain)."""
    a_st = s.alpha / t.alpha
    return math.sqrt(max(s.sigma**2 - a_st**2 * t.sigma**2, 0.0))


def ddim_step(x: Tensor, x0: Tensor, s: Point, t: Point, noise_std: float, z: Tensor | None) -> Tensor:
    """x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps_hat + c z (Song et al. 2021a, eq. 12, any alpha, sigma)."""
    eps = eps_of(x, x0, s)
    x_next = t.alpha * x0 + math.sqrt(max(t.sigma**2 - noise_std**2, 0.0)) * eps
    return x_next if z is None or noise_std == 0.0 else x_next + noise_std * z


def as_float(t: float | Tensor) -> float:
    return float(t.item()) if isinstance(t, torch.Tensor) else float(t)
