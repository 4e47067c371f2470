"""One weighted denoising loss, E_{t, eps}[ w(t) || F(x_t, t) - F*(x_0, x_t, t) ||^2 ], and its presets.

Every diffusion objective in common use is this loss for some choice of schedule, network
parameterization F, distribution of t and weighting w (Kingma & Gao 2023, "Understanding diffusion
objectives as the ELBO with simple data augmentation", sec. 2-3). The regression target F* is the
network output that would return the true x_0 (`noisecraft.core.parameterization.prediction_from_x0`), so no
conversion is rewritten here. The weighting is stated in x_0-space, w_x0(t) || x0_hat - x_0 ||^2, and
carried to the network's own output space by the slope d x0_hat / d F, read off the same affine map.

Presets:
- ``ddpm``: discrete VP (1000 linear betas), eps-prediction, uniform timestep, unweighted MSE
  (Ho et al. 2020, eq. 14, "L_simple");
- ``score``: VE SDE, score-prediction, denoising score matching weighted by sigma^2
  (Song et al. 2021, eq. 7 with lambda(t) = sigma^2);
- ``v``: VP cosine schedule, v-prediction, unweighted MSE in v (Salimans & Ho 2022, sec. 4);
- ``edm``: EDM noise levels, log-normal sigma, weighting (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 and
  EDM preconditioning (Karras et al. 2022, Table 1);
- ``elbo``: the weighting -d lambda/dt / 2 on the eps error, summed over dimensions, under which the loss
  is the continuous-time diffusion term of the variational bound (Kingma et al. 2021, eq. 17);
- ``flow``: rectified flow (alpha = 1 - t, sigma = t), the velocity u = eps - x0, logit-normal t with m = 0,
  s = 1 and unit weight on u: conditional flow matching (Lipman et al. 2023; Liu et al. 2022) with the
  time distribution of Esser et al. 2024, sec. 3.1. In x_0-space its weight is ((alpha + sigma) / sigma)^2.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from noisecraft.core.denoiser import Denoiser, TimeInput
from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.parameterization import (
    Parameterization,
    prediction_from_x0,
    x0_from_prediction,
)
from noisecraft.core.schedules import EDM, VE, AnySchedule, DiscreteVP, RectifiedFlow, VPCosine
from noisecraft.core.tensors import FLOAT64, as_time, expand_like

TimeDistribution = Literal["uniform", "discrete", "log_normal", "logit_normal"]
Weighting = Literal["prediction", "x0", "snr", "snr_plus_one", "edm", "elbo"]
PRESETS: tuple[str, ...] = ("ddpm", "score", "v", "edm", "elbo", "flow")


class DenoisingLoss(BaseModel):
    """E_t E_eps [w(t) ||F - F*||^2]: schedule, parameterization, p(t) and w(t), as a plain config.

    time_distribution: "uniform" in [t_min, t_max] of the schedule; "discrete", t = (n + 1)/N with n uniform
    over a DiscreteVP table's timesteps; "log_normal", ln(sigma/alpha) ~ N(p_mean, p_std^2) (Karras et al.
    2022, sec. 5); "logit_normal", t = sigmoid(n) with n ~ N(logit_mean, logit_std^2) (Esser et al. 2024,
    sec. 3.1), clamped to [t_min, t_max]. weighting (in x_0-space): "prediction", unit weight on the network's
    own output; "x0"; "snr" = alpha^2/sigma^2, unit weight on eps; "snr_plus_one", unit weight on v for VP
    schedules; "edm"; "elbo" = -lambda'(t)/2 * snr, unit-free nats when reduction is "sum" and t is uniform.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schedule: AnySchedule = Field(default_factory=VPCosine)
    parameterization: Parameterization = "eps"
    time_input: TimeInput = "t"
    time_distribution: TimeDistribution = "uniform"
    p_mean: float = -1.2
    p_std: float = Field(1.2, gt=0)
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    weighting: Weighting = "prediction"
    reduction: Literal["mean", "sum"] = "mean"
    sigma_data: float = Field(0.5, gt=0)

    # -- pieces ---------------------------------------------------------------------------------
    def denoiser(self, fn: Any) -> Denoiser:
        """The denoiser this loss trains: `fn` behind the loss's schedule and parameterization."""
        return Denoiser(fn, self.schedule, self.parameterization, self.time_input, sigma_data=self.sigma_data)

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n training times from p(t), float64."""
        s = self.schedule
        if self.time_distribution == "discrete":
            if not isinstance(s, DiscreteVP):
                raise ValueError(f"time_distribution='discrete' needs a DiscreteVP schedule, got {type(s).__name__}")
            return s.t_of_timestep(torch.randint(0, s.N, (n,), generator=generator))
        if self.time_distribution == "log_normal":
            log_sigma = self.p_mean + self.p_std * torch.randn(n, generator=generator, dtype=FLOAT64)
            t = s.t_from_log_snr(-2.0 * log_sigma)
            return t.clamp(s.t_min, s.t_max)
        if self.time_distribution == "logit_normal":
            logit_t = self.logit_mean + self.logit_std * torch.randn(n, generator=generator, dtype=FLOAT64)
            return torch.sigmoid(logit_t).clamp(s.t_min, s.t_max)
        u = torch.rand(n, generator=generator, dtype=FLOAT64)
        return s.t_min + (s.t_max - s.t_min) * u

    def weight_x0(self, t: Tensor) -> Tensor:
        """w_x0(t), the weight on ||x0_hat - x_0||^2 (float64); "prediction" has none of its own."""
        t = as_time(t)
        lam = self.schedule.log_snr(t)
        if self.weighting == "x0":
            return torch.ones_like(lam)
        if self.weighting == "snr":
            return lam.exp()
        if self.weighting == "snr_plus_one":
            return lam.exp() + 1.0
        if self.weighting == "edm":
            sigma = torch.exp(-0.5 * lam)
            return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        if self.weighting == "elbo":
            return -0.5 * self.schedule.dlog_snr_dt(t) * lam.exp()
        raise ValueError(f"weighting {self.weighting!r} has no x0-space weight; expected a weighting other than 'prediction'")

    def weight(self, t: Tensor) -> Tensor:
        """w(t) on ||F - F*||^2 in the network's output space: w_x0 times (d x0_hat / d F)^2 (float64)."""
        t = as_time(t)
        if self.weighting == "prediction":
            return torch.ones_like(t)
        return self.weight_x0(t) * self.output_slope(t) ** 2

    def output_slope(self, t: Tensor) -> Tensor:
        """d x0_hat / d F, read off the affine map x0_from_prediction (float64, per time)."""
        t = as_time(t)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        one, zero = torch.ones_like(t), torch.zeros_like(t)
        kind, sd = self.parameterization, self.sigma_data
        return x0_from_prediction(kind, one, zero, alpha, sigma, sd) - x0_from_prediction(kind, zero, zero, alpha, sigma, sd)

    # -- the loss -------------------------------------------------------------------------------
    def per_sample(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        generator: Generator = None,
        cond: Any = None,
        t: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """w(t_i) ||F - F*||^2 for each sample i (mean or sum over its dimensions), shape (batch,)."""
        batch = x0.shape[0]
        if t is None:
            t = self.sample_t(batch, generator if isinstance(generator, torch.Generator) else None)
        t = as_time(t, batch)
        if eps is None:
            eps = randn_like(x0, generator)
        alpha = expand_like(self.schedule.alpha(t), x0)
        sigma = expand_like(self.schedule.sigma(t), x0)
        x_t = alpha * x0 + sigma * eps
        out = denoiser.raw(x_t, t, cond)
        target = prediction_from_x0(self.parameterization, x0, x_t, alpha, sigma, self.sigma_data)
        sq = (out.float() - target.float()) ** 2  # in float32 even when the network ran in bf16/fp16
        dims = tuple(range(1, sq.ndim))
        err = sq.sum(dims) if self.reduction == "sum" else sq.mean(dims)
        return self.weight(t).to(device=err.device, dtype=err.dtype) * err

    def __call__(self, denoiser: Denoiser, x0: Tensor, generator: Generator = None, cond: Any = None,
                 t: Tensor | None = None, eps: Tensor | None = None) -> Tensor:
        """The batch mean of `per_sample`: a scalar to minimise."""
        return self.per_sample(denoiser, x0, generator, cond, t, eps).mean()


def preset(name: str, **overrides: Any) -> DenoisingLoss:
    """The named loss preset (see the module docstring), with any field overridden."""
    configs: dict[str, dict[str, Any]] = {
        "ddpm": dict(schedule=DiscreteVP(), parameterization="eps", time_input="t",
                     time_distribution="discrete", weighting="prediction"),
        "score": dict(schedule=VE(), parameterization="score", time_input="t",
                      time_distribution="uniform", weighting="snr"),
        "v": dict(schedule=VPCosine(), parameterization="v", time_input="t",
                  time_distribution="uniform", weighting="prediction"),
        "edm": dict(schedule=EDM(), parameterization="edm", time_input="c_noise",
                    time_distribution="log_normal", weighting="edm"),
        "elbo": dict(schedule=VPCosine(), parameterization="eps", time_input="t",
                     time_distribution="uniform", weighting="elbo", reduction="sum"),
        "flow": dict(schedule=RectifiedFlow(), parameterization="flow", time_input="t",
                     time_distribution="logit_normal", weighting="prediction"),
    }
    if name not in configs:
        raise ValueError(f"unknown loss preset {name!r}; expected one of {list(PRESETS)}")
    return DenoisingLoss.model_validate({**configs[name], **overrides})
