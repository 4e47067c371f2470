"""Step arithmetic shared by several solvers, written once (STYLE.md: no copy-paste between siblings).

All coefficients are Python floats computed in float64 from the schedule; tensors keep the caller's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisecraft.core.sde import Point, point


def eps_of(x: Tensor, x0: Tensor, p: Point) -> Tensor:
    return (x - p.alpha * x0) / p.sigma


def exponential_step(x: Tensor, s: Point, t: Point, x0_terms: Tensor) -> Tensor:
    """x_t = (sigma_t / sigma_s) x_s + alpha_t * x0_terms: the data-prediction exponential integrator
    (Lu et al. 2022b, eq. 9), where x0_terms = integral of e^(eta - eta_t) x0_hat(eta) d eta, expanded by the caller."""
    return (t.sigma / s.sigma) * x + t.alpha * x0_terms


def phi(h: float, count: int = 3) -> list[float]:
    """phi_1..phi_count with phi_{k+1} = e^-h int_0^h e^u u^k / k! du: the weights of x0, x0', x0'', ...

    phi_1 = 1 - e^-h and phi_{k+1} = h^k / k! - phi_k (integration by parts).
    """
    values = [-math.expm1(-h)]
    for k in range(1, count):
        values.append(h**k / math.factorial(k) - values[-1])
    return values


def taylor_weights(etas: list[float], eta_ref: float) -> list[list[float]]:
    """W with P^(k)(eta_ref) = sum_j W[k][j] D_j for the polynomial P through (eta_j, D_j).

    Solves the Vandermonde system sum_k c_k u_j^k / k! = D_j, u_j = eta_j - eta_ref, in float64.
    """
    import numpy as np

    u = np.asarray(etas, dtype=np.float64) - eta_ref
    vandermonde = np.stack([u**k / math.factorial(k) for k in range(len(etas))], axis=1)
    return np.linalg.inv(vandermonde).tolist()


def exponential_taylor_step(x: Tensor, s: Point, t: Point, points: list[tuple[float, Tensor]]) -> Tensor:
    """One exponential-integrator step from s to t with x0_hat(eta) replaced by the polynomial through
    `points` [(eta_j, x0_j)] expanded at eta_s: x_t = (sigma_t/sigma_s) x_s + alpha_t sum_k phi_{k+1}(h) P^(k)(eta_s)."""
    weights = taylor_weights([eta for eta, _ in points], s.eta)
    phis = phi(t.eta - s.eta, len(points))
    terms = None
    for k, phi_k in enumerate(phis):
        coefficient = sum(w * d for w, (_, d) in zip(weights[k], points))
        terms = phi_k * coefficient if terms is None else terms + phi_k * coefficient
    return exponential_step(x, s, t, terms)


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
