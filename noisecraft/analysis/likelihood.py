"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, sec. D.2; Chen et al. 2018).

In scaled coordinates x~ = x / alpha and rho = log sigma~ (sigma~ = sigma / alpha) the PF-ODE of every
schedule is dx~/drho = v = x~ - x0_hat(alpha x~, t), with divergence div v = D - alpha tr(d x0_hat / dx).
Along the flow, log p~_{rho0}(x~_0) = log p~_{rho1}(x~_1) + integral_{rho0}^{rho1} div v drho, and
log p_x(x) = log p~(x / alpha) - D log alpha. The prior at t_max is N(0, sigma(t_max)^2 I).

Divergence: exact (D vector-Jacobian products, for small D), or Hutchinson's estimator with k Rademacher
or Gaussian probes, optionally with a control variate: the estimate is taken of x0_hat minus the linear
denoiser of a Gaussian fitted to the data, whose trace is known in closed form.

Two ways to integrate it. estimator="ode" (Grathwohl et al. 2019; score_sde, k-diffusion): the divergence
rides along as an extra ODE state, so its probes must stay fixed along the path, and a probe's error is
carried whole into the answer. estimator="quadrature" (default): the adaptive solver only follows the path
x~(rho); the integral of div v is then taken by composite Gauss-Legendre quadrature on that path with
fresh probes at every node, so the probe errors of the nodes average out. Both run in float64 with
torchdiffeq's dopri5 at the user's rtol/atol. The default ("auto") uses the ODE for the exact divergence,
quadrature for Hutchinson.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from noisecraft.core.schedules import Schedule
from noisecraft.core.sde import ReverseProcess
from noisecraft.core.tensors import FLOAT64, as_time


@dataclass
class GaussianFit:
    """N(mean, U diag(d) U^T) fitted to data: its exact denoiser is linear with a closed-form trace."""

    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor

    @classmethod
    def from_data(cls, x: Tensor, floor: float = 1e-6) -> "GaussianFit":
        flat = x.reshape(x.shape[0], -1).to(FLOAT64)
        if flat.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to fit a Gaussian, got {flat.shape[0]}")
        d, U = torch.linalg.eigh(torch.atleast_2d(torch.cov(flat.T)))
        return cls(flat.mean(0), d.clamp_min(floor), U)

    def denoise(self, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """E[x0 | x_t] for the Gaussian: mu + U diag(alpha d / (alpha^2 d + sigma^2)) U^T (x - alpha mu)."""
        flat = x.reshape(x.shape[0], -1)
        mean, d, U = (p.to(device=x.device, dtype=x.dtype) for p in (self.mean, self.eigenvalues, self.eigenvectors))
        gain = alpha * d / (alpha**2 * d + sigma**2)
        out = mean + (((flat - alpha * mean) @ U) * gain) @ U.T
        return out.reshape(x.shape)

    def trace(self, alpha: float, sigma: float) -> float:
        """tr(d x0_hat / dx) = sum_i alpha d_i / (alpha^2 d_i + sigma^2)."""
        return float((alpha * self.eigenvalues / (alpha**2 * self.eigenvalues + sigma**2)).sum())


@dataclass
class LikelihoodResult:
    """Per-sample log p(x) in nats, with the evaluations and settings that produced it."""

    log_prob: Tensor
    nfe: int
    dim: int
    divergence: str
    probes: int

    @property
    def nll(self) -> Tensor:
        return -self.log_prob

    def mean_and_stderr(self) -> tuple[float, float]:
        """Mean NLL over samples and its standard error (std / sqrt(n))."""
        nll = self.nll
        n = nll.numel()
        return float(nll.mean()), float(nll.std() / math.sqrt(n)) if n > 1 else float("nan")


def bits_per_dim(nll_nats: Tensor | float, dim: int, bin_width: float | None = None) -> Tensor | float:
    """NLL in bits per dimension. For data on a grid of spacing `bin_width` (uniformly dequantized),
    P(bin) = p(x) bin_width^D, so bits/dim = (NLL - D log bin_width) / (D log 2) (Theis et al. 2016)."""
    offset = 0.0 if bin_width is None else -dim * math.log(bin_width)
    return (nll_nats + offset) / (dim * math.log(2.0))


def dequantize(x: Tensor, bin_width: float, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: x + u, u ~ U(-bin_width/2, bin_width/2) (Uria et al. 2013)."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype) - 0.5
    return x + bin_width * u.to(x.device)


def gauss_legendre_panels(a: float, b: float, panels: int, order: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of composite Gauss-Legendre quadrature on [a, b]: `panels` equal panels, `order` nodes each."""
    import numpy as np

    if panels < 1 or order < 1:
        raise ValueError(f"panels and order must be >= 1, got {panels} and {order}")
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(a, b, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).reshape(-1)
    weights = (half[:, None] * w[None, :]).reshape(-1)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _probes(shape: tuple[int, ...], k: int, kind: str, generator: torch.Generator | None) -> Tensor:
    if kind == "rademacher":
        return torch.randint(0, 2, (k, *shape), generator=generator).to(FLOAT64) * 2 - 1
    if kind == "gaussian":
        return torch.randn((k, *shape), generator=generator, dtype=FLOAT64)
    raise ValueError(f"probe kind must be 'rademacher' or 'gaussian', got {kind!r}")


def log_likelihood(
    denoise: Callable[[Tensor, Tensor], Tensor],
    schedule: Schedule,
    x: Tensor,
    divergence: str = "hutchinson",
    probes: int = 1,
    probe_kind: str = "rademacher",
    control_variate: GaussianFit | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    t_max: float | None = None,
    generator: torch.Generator | None = None,
    estimator: str = "auto",
    panels: int = 32,
    order: int = 4,
) -> LikelihoodResult:
    """log p(x) per sample through the PF-ODE; x is data (batch first, any trailing shape).

    With estimator="quadrature", `panels` x `order` Gauss-Legendre nodes in rho carry the divergence;
    "auto" takes the ODE for the exact divergence (no probe noise, error controlled by rtol/atol) and
    quadrature for Hutchinson.
    """
    from torchdiffeq import odeint

    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf; expected finite data")
    t_min = schedule.t_min if t_min is None else t_min
    t_max = schedule.t_max if t_max is None else t_max
    batch, dim = x.shape[0], x[0].numel()
    x = x.to(FLOAT64)
    if estimator not in ("auto", "ode", "quadrature"):
        raise ValueError(f"estimator must be 'auto', 'ode' or 'quadrature', got {estimator!r}")
    if estimator == "auto":
        estimator = "ode" if divergence == "exact" else "quadrature"
    device = x.device
    count = {"nfe": 0}

    def counted(x_in: Tensor, t: Tensor) -> Tensor:
        count["nfe"] += 1
        return denoise(x_in, t)

    flow = ReverseProcess(schedule, counted, probability_flow=True)
    fixed_eps = _probes(tuple(x.shape), probes, probe_kind, generator).to(device) if divergence == "hutchinson" else None

    def x0_and_divergence(x_scaled: Tensor, rho: Tensor, node: int) -> tuple[Tensor, Tensor]:
        """x0_hat and div v at (x~, rho); quadrature nodes draw fresh probes, the ODE keeps fixed ones."""
        eps = fixed_eps
        if divergence == "hutchinson" and estimator == "quadrature":
            eps = _probes(tuple(x.shape), probes, probe_kind, generator).to(device)
        t = flow.time_of_rho(rho)
        alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
        with torch.enable_grad():
            xs = x_scaled.detach().requires_grad_(True)
            x0 = counted(alpha * xs, as_time(t, batch))
            residual = x0 if control_variate is None else x0 - control_variate.denoise(alpha * xs, alpha, sigma)
            if divergence == "exact":
                flat = residual.reshape(batch, -1)
                trace = torch.zeros(batch, dtype=FLOAT64, device=device)
                for i in range(dim):  # d(residual_i)/d(xs_i), one vector-Jacobian product per dimension
                    (grad,) = torch.autograd.grad(flat[:, i].sum(), xs, retain_graph=i < dim - 1)
                    trace = trace + grad.reshape(batch, -1)[:, i]
            else:
                trace = torch.zeros(batch, dtype=FLOAT64, device=device)
                for j in range(probes):
                    (vjp,) = torch.autograd.grad(residual, xs, eps[j], retain_graph=j < probes - 1)
                    trace = trace + (vjp * eps[j]).reshape(batch, -1).sum(1) / probes
        # trace is d residual / d x~ = alpha tr(d x0_hat / dx); the linear part's trace is added exactly
        if control_variate is not None:
            trace = trace + alpha * control_variate.trace(alpha, sigma)
        return x0.detach(), dim - trace.detach()

    alpha0 = float(schedule.alpha(t_min))
    rho0, rho1 = math.log(float(schedule.sigma_tilde(t_min))), math.log(float(schedule.sigma_tilde(t_max)))
    x_scaled0 = x / alpha0
    if estimator == "ode":
        def field(rho: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:  # dx~/drho with div v beside it
            x0, div = x0_and_divergence(state[0], rho, 0)
            return state[0] - x0, div

        span = torch.tensor([rho0, rho1], dtype=FLOAT64, device=device)
        xs_path, div_path = odeint(field, (x_scaled0, torch.zeros(batch, dtype=FLOAT64, device=device)), span, rtol=rtol, atol=atol, method="dopri5")
        x_scaled_T, integral = xs_path[-1], div_path[-1]
    else:
        nodes, weights = gauss_legendre_panels(rho0, rho1, panels, order)
        out_times = torch.cat([torch.tensor([rho0], dtype=FLOAT64), nodes, torch.tensor([rho1], dtype=FLOAT64)]).to(device)
        with torch.no_grad():  # the path needs no graph; the divergence builds its own under enable_grad
            path = odeint(flow.dx_drho, x_scaled0, out_times, rtol=rtol, atol=atol, method="dopri5")
        integral = torch.zeros(batch, dtype=FLOAT64, device=device)
        for j in range(nodes.numel()):
            _, div = x0_and_divergence(path[j + 1], nodes[j].cpu(), j)
            integral = integral + float(weights[j]) * div
        x_scaled_T = path[-1]
    x_T = x_scaled_T * float(schedule.alpha(t_max))
    sigma_T = float(schedule.sigma(t_max))
    log_prior = -0.5 * (x_T.reshape(batch, -1) ** 2).sum(1) / sigma_T**2 - dim * (math.log(sigma_T) + 0.5 * math.log(2 * math.pi))
    # log p~ at rho1 -> log p~ at rho0: + integral of div; x_T = alpha_T x~_T adds D log alpha_T; x = alpha_0 x~ removes D log alpha_0
    log_p = log_prior + dim * math.log(float(schedule.alpha(t_max))) + integral - dim * math.log(alpha0)
    return LikelihoodResult(log_p.detach(), count["nfe"], dim, divergence, probes if divergence == "hutchinson" else 0)
