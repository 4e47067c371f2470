"""The variational bound (ELBO) on log p(x), for a discrete chain and in continuous time.

Discrete (Ho et al. 2020, eq. 5): -ELBO = KL(q(x_N | x_0) || N(0, sigma_N^2 I))
  + sum_{i=2..N} E_q KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i)) - E_q log p(x_0 | x_1),
with p(x_{i-1} | x_i) = N(posterior mean at x0_hat, posterior variance), so each KL is
c_i^2 ||x_0 - x0_hat||^2 / (2 sigma~_i^2), c_i the posterior mean's coefficient of x_0. On any grid of
times: DDPM's own chain when the schedule is a DiscreteVP and `steps` is its length.

Continuous (Kingma et al. 2021, VDM eq. 17): the sum becomes
  1/2 int_{lambda_min}^{lambda_max} e^lambda E ||x_0 - x0_hat(x_lambda)||^2 d lambda,
estimated with stratified lambda samples (VDM's low-discrepancy sampler).

The decoder p(x_0 | x_{t_min}) is N(x0_hat, sigma~^2) at the first time, sigma~ = sigma/alpha (the
noise level of x_t / alpha); for data on a grid of spacing `bin_width` it is that Gaussian integrated
over each bin, the outermost bins open-ended (Ho et al. 2020, eq. 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from noisecraft.core.noise import randn_like
from noisecraft.core.schedules import DiscreteVP, Schedule
from noisecraft.core.tensors import FLOAT64, as_time


@dataclass
class ElboResult:
    """Per-sample terms of -ELBO in nats (each of shape (batch,)); `total` is the bound on -log p(x)."""

    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    dim: int

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.decoder


def _sq_error(x0: Tensor, x0_hat: Tensor) -> Tensor:
    return ((x0 - x0_hat) ** 2).reshape(x0.shape[0], -1).sum(1)


def prior_kl(schedule: Schedule, x0: Tensor, t_max: float) -> Tensor:
    """KL(N(alpha x0, sigma^2 I) || N(0, sigma^2 I)) = alpha^2 ||x0||^2 / (2 sigma^2) at t_max."""
    a, s = float(schedule.alpha(t_max)), float(schedule.sigma(t_max))
    return a**2 * (x0.reshape(x0.shape[0], -1) ** 2).sum(1) / (2 * s**2)


def decoder_nll(x0: Tensor, x0_hat: Tensor, scale: float, bin_width: float | None, low: float = -1.0, high: float = 1.0) -> Tensor:
    """-log p(x0 | x_t) for the Gaussian decoder N(x0_hat, scale^2), or its discretised version on a grid."""
    x0, x0_hat = x0.to(FLOAT64), x0_hat.to(FLOAT64)
    if bin_width is None:
        log_p = -0.5 * ((x0 - x0_hat) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
    else:
        normal = torch.distributions.Normal(x0_hat, scale)
        upper = torch.where(x0 >= high - 0.5 * bin_width, torch.ones_like(x0), normal.cdf(x0 + 0.5 * bin_width))
        lower = torch.where(x0 <= low + 0.5 * bin_width, torch.zeros_like(x0), normal.cdf(x0 - 0.5 * bin_width))
        log_p = torch.log((upper - lower).clamp_min(1e-300))
    return -log_p.reshape(x0.shape[0], -1).sum(1)


def elbo_discrete(
    denoise: Callable[[Tensor, Tensor], Tensor],
    schedule: Schedule,
    x0: Tensor,
    steps: int | None = None,
    bin_width: float | None = None,
    generator: torch.Generator | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
) -> ElboResult:
    """-ELBO of the N-step chain on a uniform grid t_1 = t_min < ... < t_N = t_max (Ho et al. 2020, eq. 5).

    For a DiscreteVP schedule with steps=None, the grid is its own table: t_n = (n + 1) / N.
    """
    if isinstance(schedule, DiscreteVP) and steps is None:
        times = schedule.t_of_timestep(torch.arange(schedule.N))
    else:
        if steps is None or steps < 1:
            raise ValueError(f"steps must be an integer >= 1 for this schedule, got {steps!r}")
        t_lo = schedule.t_min if t_min is None else t_min
        t_hi = schedule.t_max if t_max is None else t_max
        times = torch.linspace(t_lo, t_hi, steps, dtype=FLOAT64)
    x0 = x0.to(FLOAT64)
    batch = x0.shape[0]
    diffusion = torch.zeros(batch, dtype=FLOAT64, device=x0.device)
    for i in range(times.numel() - 1, 0, -1):
        s, t = float(times[i]), float(times[i - 1])  # the KL for x_t given x_s, t < s
        a_s, sig_s, a_t, sig_t = (float(v) for v in (schedule.alpha(s), schedule.sigma(s), schedule.alpha(t), schedule.sigma(t)))
        var_st = sig_s**2 - (a_s / a_t) ** 2 * sig_t**2  # variance of q(x_s | x_t)
        coef = a_t * var_st / sig_s**2  # posterior mean's coefficient of x_0
        post_var = var_st * sig_t**2 / sig_s**2
        x_s = a_s * x0 + sig_s * randn_like(x0, generator)
        diffusion = diffusion + coef**2 * _sq_error(x0, denoise(x_s, as_time(s, batch)).to(FLOAT64)) / (2 * post_var)
    t1 = float(times[0])
    x_1 = float(schedule.alpha(t1)) * x0 + float(schedule.sigma(t1)) * randn_like(x0, generator)
    decoder = decoder_nll(x0, denoise(x_1, as_time(t1, batch)), float(schedule.sigma_tilde(t1)), bin_width)
    return ElboResult(prior_kl(schedule, x0, float(times[-1])), diffusion, decoder, x0[0].numel())


def elbo_continuous(
    denoise: Callable[[Tensor, Tensor], Tensor],
    schedule: Schedule,
    x0: Tensor,
    samples: int = 64,
    bin_width: float | None = None,
    generator: torch.Generator | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
) -> ElboResult:
    """-ELBO in continuous time (Kingma et al. 2021, eq. 17) with `samples` stratified log-SNR draws per x."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    t_lo = schedule.t_min if t_min is None else t_min
    t_hi = schedule.t_max if t_max is None else t_max
    lam_max, lam_min = float(schedule.log_snr(t_lo)), float(schedule.log_snr(t_hi))
    x0 = x0.to(FLOAT64)
    batch = x0.shape[0]
    offset = torch.rand(batch, generator=generator, dtype=FLOAT64)
    diffusion = torch.zeros(batch, dtype=FLOAT64, device=x0.device)
    for k in range(samples):
        lam = lam_min + (lam_max - lam_min) * (k + offset) / samples  # one stratum per k, per sample
        t = schedule.t_from_log_snr(lam)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        shape = (batch,) + (1,) * (x0.ndim - 1)
        x_t = alpha.reshape(shape).to(x0.device) * x0 + sigma.reshape(shape).to(x0.device) * randn_like(x0, generator)
        err = _sq_error(x0, denoise(x_t, t).to(FLOAT64))
        diffusion = diffusion + 0.5 * (lam_max - lam_min) * torch.exp(lam).to(x0.device) * err / samples
    x_1 = float(schedule.alpha(t_lo)) * x0 + float(schedule.sigma(t_lo)) * randn_like(x0, generator)
    decoder = decoder_nll(x0, denoise(x_1, as_time(t_lo, batch)), float(schedule.sigma_tilde(t_lo)), bin_width)
    return ElboResult(prior_kl(schedule, x0, t_hi), diffusion, decoder, x0[0].numel())
