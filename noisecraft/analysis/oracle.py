"""Analytic oracle: Gaussian mixtures with exact noisy marginals, scores and denoisers at every t.

For data p_0 = sum_k w_k N(mu_k, S_k) and x_t = alpha x_0 + sigma eps, the noisy marginal is
p_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I), and the exact denoiser is
E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x_t - alpha mu_k))
with responsibilities r_k proportional to w_k N(x_t; alpha mu_k, alpha^2 S_k + sigma^2 I)
(Bishop 2006, eq. 2.116 and 9.13). Each covariance is diagonalised once, S_k = U_k diag(d_k) U_k^T, so
every t costs elementwise work only. The oracle speaks the same denoise contract as a trained model,
so solvers, guidance and likelihood are checked where the true answer is known (DESIGN.md section 2).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.denoiser import Denoiser
from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64, as_time, per_time


class GaussianMixture:
    """sum_k w_k N(mu_k, S_k) in any dimension, full covariances."""

    def __init__(self, weights: Sequence[float] | Tensor, means: Sequence | Tensor, covariances: Sequence | Tensor) -> None:
        w = torch.as_tensor(weights, dtype=FLOAT64)
        mu = torch.as_tensor(means, dtype=FLOAT64)
        cov = torch.as_tensor(covariances, dtype=FLOAT64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(mu.shape)}")
        K, D = mu.shape
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {tuple(w.shape)}")
        if cov.shape != (K, D, D):
            raise ValueError(f"covariances must have shape ({K}, {D}, {D}), got {tuple(cov.shape)}")
        if (w <= 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be positive and finite, got {w.tolist()}")
        if not torch.allclose(cov, cov.transpose(1, 2), atol=1e-10):
            raise ValueError("covariances must be symmetric")
        d, U = torch.linalg.eigh(cov)
        if (d <= 0).any():
            raise ValueError(f"covariances must be positive definite; smallest eigenvalue {d.min().item():.3g}")
        self.weights = w / w.sum()
        self.means, self.covariances = mu, cov
        self.eigenvalues, self.eigenvectors = d, U  # (K, D), (K, D, D)
        self.dim = D

    def _params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(weights, means, eigenvalues, eigenvectors) on `device`, copied once per device."""
        cache = self.__dict__.setdefault("_by_device", {})
        if device not in cache:
            cache[device] = tuple(p.to(device) for p in (self.weights, self.means, self.eigenvalues, self.eigenvectors))
        return cache[device]

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    # -- the clean distribution -----------------------------------------------------------------
    def sample(self, n: int, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """n exact draws (float64) and their component labels."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator if isinstance(generator, torch.Generator) else None)
        z = randn_like(torch.empty(n, self.dim, dtype=FLOAT64), generator)
        scale = self.eigenvectors * self.eigenvalues.sqrt().unsqueeze(1)  # U diag(sqrt d)
        x = self.means[labels] + torch.einsum("nij,nj->ni", scale[labels], z)
        return x, labels

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x)."""
        return self.log_prob_t(x, alpha=1.0, sigma=0.0)

    # -- the noisy marginal ---------------------------------------------------------------------
    def _component_terms(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per component: log w_k N(x; alpha mu_k, C_k), the rotated residual y and var = alpha^2 d + sigma^2."""
        x = x.reshape(x.shape[0], -1).to(FLOAT64)
        if x.shape[1] != self.dim:
            raise ValueError(f"x has {x.shape[1]} features per sample; this mixture has dimension {self.dim}")
        weights, means, eigenvalues, eigenvectors = self._params(x.device)
        a = alpha.reshape(-1, 1, 1).to(x.device)
        s = sigma.reshape(-1, 1, 1).to(x.device)
        residual = x.unsqueeze(1) - a * means.unsqueeze(0)  # (B, K, D)
        y = torch.einsum("kji,bkj->bki", eigenvectors, residual)  # U_k^T r
        var = a**2 * eigenvalues.unsqueeze(0) + s**2
        log_normal = -0.5 * ((y**2 / var) + var.log()).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return weights.log() + log_normal, y, var

    def _alpha_sigma(self, x: Tensor, t: float | Tensor | None, schedule: Schedule | None, alpha, sigma) -> tuple[Tensor, Tensor]:
        if t is not None:
            if schedule is None:
                raise ValueError("pass a schedule together with t")
            t = as_time(t, x.shape[0])
            return per_time(schedule.alpha, t), per_time(schedule.sigma, t)
        alpha = torch.as_tensor(alpha, dtype=FLOAT64).expand(x.shape[0])
        sigma = torch.as_tensor(sigma, dtype=FLOAT64).expand(x.shape[0])
        return alpha, sigma

    def log_prob_t(self, x: Tensor, t: float | Tensor | None = None, schedule: Schedule | None = None,
                   alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0) -> Tensor:
        """log p_t(x) of the noisy marginal at time t of `schedule` (or at explicit alpha, sigma)."""
        alpha, sigma = self._alpha_sigma(x, t, schedule, alpha, sigma)
        log_joint, _, _ = self._component_terms(x, alpha, sigma)
        return torch.logsumexp(log_joint, dim=1)

    def responsibilities(self, x: Tensor, t: float | Tensor | None = None, schedule: Schedule | None = None,
                         alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0) -> Tensor:
        """p(k | x_t), shape (B, K)."""
        alpha, sigma = self._alpha_sigma(x, t, schedule, alpha, sigma)
        log_joint, _, _ = self._component_terms(x, alpha, sigma)
        return torch.softmax(log_joint, dim=1)

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor, component: Tensor | None = None) -> Tensor:
        """E[x_0 | x_t] (or E[x_0 | x_t, k] for per-sample `component` labels), in x's dtype and shape."""
        log_joint, y, var = self._component_terms(x, alpha.reshape(-1), sigma.reshape(-1))
        _, means, eigenvalues, eigenvectors = self._params(x.device)
        a = alpha.reshape(-1, 1, 1).to(device=x.device, dtype=FLOAT64)
        shrunk = a * eigenvalues.unsqueeze(0) / var * y  # alpha d / (alpha^2 d + sigma^2) * y
        per_component = means.unsqueeze(0) + torch.einsum("kij,bkj->bki", eigenvectors, shrunk)
        if component is None:
            weights = torch.softmax(log_joint, dim=1)
        else:
            weights = torch.nn.functional.one_hot(component.long().to(x.device), self.n_components).to(FLOAT64)
        mean = (weights.unsqueeze(-1) * per_component).sum(1)
        return mean.to(x.dtype).reshape(x.shape)

    def x0_hat(self, x: Tensor, t: float | Tensor, schedule: Schedule) -> Tensor:
        t = as_time(t, x.shape[0])
        return self.posterior_mean(x, per_time(schedule.alpha, t), per_time(schedule.sigma, t))

    def score(self, x: Tensor, t: float | Tensor, schedule: Schedule) -> Tensor:
        """grad_x log p_t(x), exact (via Tweedie from the exact denoiser)."""
        t = as_time(t, x.shape[0])
        alpha = per_time(schedule.alpha, t).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sigma = per_time(schedule.sigma, t).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (alpha * self.x0_hat(x, t, schedule) - x) / sigma**2

    def denoiser(self, schedule: Schedule) -> Denoiser:
        """The exact denoiser E[x_0 | x_t] behind the same contract as a trained model."""

        def exact_x0(x: Tensor, t: Tensor) -> Tensor:
            return self.x0_hat(x, t.to(FLOAT64), schedule)

        return Denoiser.from_x0(exact_x0, schedule)

    def flow(self, x: Tensor, t_from: float, t_to: float, schedule: Schedule) -> Tensor:
        """Exact probability-flow ODE map x_{t_from} -> x_{t_to} for a single Gaussian N(mu, U diag(d) U^T).

        In x~ = x / alpha the ODE dx~/dsigma~ = (x~ - x0_hat) / sigma~ is linear, with solution
        x~_to - mu = U diag(sqrt((d + sigma~_to^2) / (d + sigma~_from^2))) U^T (x~_from - mu).
        """
        if self.n_components != 1:
            raise ValueError(f"the closed-form flow needs a single Gaussian, this mixture has {self.n_components} components")
        a_from, a_to = float(schedule.alpha(t_from)), float(schedule.alpha(t_to))
        s_from, s_to = float(schedule.sigma_tilde(t_from)), float(schedule.sigma_tilde(t_to))
        d, U, mu = self.eigenvalues[0], self.eigenvectors[0], self.means[0]
        flat = x.reshape(x.shape[0], -1).to(FLOAT64) / a_from - mu
        ratio = torch.sqrt((d + s_to**2) / (d + s_from**2))
        out = ((flat @ U) * ratio) @ U.T + mu
        return (a_to * out).to(x.dtype).reshape(x.shape)

    def prior_mean(self) -> Tensor:
        return (self.weights.unsqueeze(1) * self.means).sum(0)


def ring8(radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal Gaussians on a circle (the classic 2-D toy)."""
    angles = torch.arange(8, dtype=FLOAT64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    covs = (std**2) * torch.eye(2, dtype=FLOAT64).expand(8, 2, 2).clone()
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=FLOAT64), means, covs)


def mixture16d(seed: int = 0, dim: int = 16, n_components: int = 6) -> GaussianMixture:
    """A 16-D mixture of 6 anisotropic components with unequal weights, fixed by `seed` (numpy RNG)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 2.0))
    means = rng.normal(0.0, 1.0, size=(n_components, dim))
    covs = []
    for _ in range(n_components):
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        eig = np.exp(rng.uniform(np.log(0.003), np.log(0.3), size=dim))  # std from 0.055 to 0.55
        covs.append((q * eig) @ q.T)
    covs = np.stack(covs)
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    return GaussianMixture(weights, means, covs)


def gaussian(mean: Sequence[float] | Tensor, covariance: Sequence | Tensor) -> GaussianMixture:
    """A single Gaussian as a one-component mixture (closed-form ODE paths and posteriors)."""
    mean = torch.as_tensor(mean, dtype=FLOAT64)
    return GaussianMixture([1.0], mean.unsqueeze(0), torch.as_tensor(covariance, dtype=FLOAT64).unsqueeze(0))
