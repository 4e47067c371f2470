"""The denoiser contract: `denoise(x_t, t) -> x0_hat`, whatever the network predicts (DESIGN.md section 2).

A `Denoiser` wraps a callable and its parameterization (eps, x0, v, score, EDM preconditioning or the flow
velocity) and returns x0_hat; eps_hat, the score, v and the flow follow from it (noisecraft.core.parameterization). Solvers, guidance
and likelihood only ever see the denoise function.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor

from noisecraft.core.parameterization import (
    PARAMETERIZATIONS,
    edm_coefficients,
    eps_from_x0,
    flow_from_x0,
    score_from_x0,
    v_from_x0,
    x0_from_prediction,
)
from noisecraft.core.schedules import DiscreteVP, Schedule
from noisecraft.core.tensors import as_time, expand_like, per_time

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
TimeInput = Literal["t", "timestep", "c_noise", "log_snr"]


class Denoiser:
    """x0_hat = E[x_0 | x_t] from a network `fn(x_in, time_in[, cond])` and its parameterization.

    time_input picks what the network receives as its noise level: continuous t ("t"), the fractional
    DDPM timestep of a DiscreteVP schedule ("timestep", for pretrained diffusers UNets), EDM's
    c_noise = log(sigma/alpha)/4 ("c_noise") or the log-SNR. With scale_input the network sees
    c_in * x_t / alpha (Karras et al. 2022), which keeps its input at unit scale for every schedule.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        schedule: Schedule,
        parameterization: str = "eps",
        time_input: TimeInput = "t",
        scale_input: bool | None = None,
        sigma_data: float = 0.5,
    ) -> None:
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if time_input not in ("t", "timestep", "c_noise", "log_snr"):
            raise ValueError(f"time_input must be 't', 'timestep', 'c_noise' or 'log_snr', got {time_input!r}")
        if time_input == "timestep" and not isinstance(schedule, DiscreteVP):
            raise ValueError(f"time_input='timestep' needs a DiscreteVP schedule, got {type(schedule).__name__}")
        self.fn = fn
        self.schedule = schedule
        self.parameterization = parameterization
        self.time_input = time_input
        self.scale_input = parameterization == "edm" if scale_input is None else scale_input
        self.sigma_data = sigma_data

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_eps(cls, fn: Callable[..., Tensor], schedule: Schedule, **kw: Any) -> "Denoiser":
        """Wrap an eps-prediction function fn(x_t, t) (Ho et al. 2020)."""
        return cls(fn, schedule, "eps", **kw)

    @classmethod
    def from_x0(cls, fn: Callable[..., Tensor], schedule: Schedule, **kw: Any) -> "Denoiser":
        return cls(fn, schedule, "x0", **kw)

    @classmethod
    def from_v(cls, fn: Callable[..., Tensor], schedule: Schedule, **kw: Any) -> "Denoiser":
        return cls(fn, schedule, "v", **kw)

    @classmethod
    def from_score(cls, fn: Callable[..., Tensor], schedule: Schedule, **kw: Any) -> "Denoiser":
        return cls(fn, schedule, "score", **kw)

    @classmethod
    def from_flow(cls, fn: Callable[..., Tensor], schedule: Schedule, **kw: Any) -> "Denoiser":
        """Wrap a flow-matching velocity u = eps - x0 (Lipman et al. 2023; Esser et al. 2024, sec. 3.1)."""
        return cls(fn, schedule, "flow", **kw)

    @classmethod
    def edm(cls, fn: Callable[..., Tensor], schedule: Schedule, sigma_data: float = 0.5, **kw: Any) -> "Denoiser":
        """EDM preconditioning: D = c_skip x~ + c_out F(c_in x~, c_noise) (Karras et al. 2022, eq. 7)."""
        kw.setdefault("time_input", "c_noise")
        return cls(fn, schedule, "edm", sigma_data=sigma_data, **kw)

    # -- the contract ---------------------------------------------------------------------------
    def coefficients(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(t as (batch,) float64, alpha, sigma broadcast over x)."""
        t = as_time(t, x.shape[0])
        alpha, sigma = per_time(self.schedule.alpha, t), per_time(self.schedule.sigma, t)
        return t, expand_like(alpha, x), expand_like(sigma, x)

    def network_time(self, t: Tensor) -> Tensor:
        """The noise-level input the network was built for."""
        if self.time_input == "t":
            return t
        if self.time_input == "timestep":
            return self.schedule.timestep_of_t(t)  # type: ignore[attr-defined]
        if self.time_input == "log_snr":
            return per_time(self.schedule.log_snr, t)
        return 0.25 * torch.log(per_time(self.schedule.sigma_tilde, t))

    def network_input(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if not self.scale_input:
            return x
        _, _, c_in, _ = edm_coefficients(sigma / alpha, self.sigma_data)
        return c_in * x / alpha

    def raw(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        """The network's own output at (x_t, t)."""
        t, alpha, sigma = self.coefficients(x, t)
        time_in = self.network_time(t).to(dtype=x.dtype, device=x.device)
        x_in = self.network_input(x, alpha, sigma)
        return self.fn(x_in, time_in) if cond is None else self.fn(x_in, time_in, cond)

    def __call__(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        """x0_hat(x_t, t)."""
        t, alpha, sigma = self.coefficients(x, t)
        out = self.raw(x, t, cond)
        return x0_from_prediction(self.parameterization, out, x, alpha, sigma, self.sigma_data)

    def eps(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        _, alpha, sigma = self.coefficients(x, t)
        return eps_from_x0(x, self(x, t, cond), alpha, sigma)

    def score(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        _, alpha, sigma = self.coefficients(x, t)
        return score_from_x0(x, self(x, t, cond), alpha, sigma)

    def v(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        _, alpha, sigma = self.coefficients(x, t)
        return v_from_x0(x, self(x, t, cond), alpha, sigma)

    def flow(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        """The velocity u = eps_hat - x0_hat (dx_t/dt under RectifiedFlow)."""
        _, alpha, sigma = self.coefficients(x, t)
        return flow_from_x0(x, self(x, t, cond), alpha, sigma)
