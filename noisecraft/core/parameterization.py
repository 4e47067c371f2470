"""Conversions between what a network predicts and the clean estimate x0_hat.

With x_t = alpha x_0 + sigma eps, each parameterization is an affine map of (x_t, x0_hat):
eps (Ho et al. 2020), x0, v = alpha eps - sigma x0 (Salimans & Ho 2022, generalised to any alpha, sigma),
score = -eps / sigma (Song et al. 2021), EDM's F with D = c_skip x~ + c_out F on x~ = x_t / alpha
(Karras et al. 2022, eq. 7 and Table 1), and the flow (velocity) u = eps - x0, which is dx_t/dt for
alpha = 1 - t, sigma = t (Liu et al. 2022, eq. 1, and Lipman et al. 2023, eq. 23, both with time running
from noise to data; Esser et al. 2024, sec. 3.1). Written once here; the denoiser and the losses both use it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Parameterization = Literal["eps", "x0", "v", "score", "edm", "flow"]
PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "v", "score", "edm", "flow")


def edm_coefficients(sigma_tilde: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of Karras et al. 2022, Table 1, at noise level sigma~ = sigma/alpha."""
    var = sigma_tilde**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma_tilde * sigma_data / var.sqrt()
    c_in = 1.0 / var.sqrt()
    c_noise = 0.25 * torch.log(sigma_tilde)
    return c_skip, c_out, c_in, c_noise


def eps_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = (x_t - alpha x0) / sigma."""
    return (x - alpha * x0) / sigma


def score_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie: grad log p_t(x_t) = (alpha x0_hat - x_t) / sigma^2."""
    return (alpha * x0 - x) / sigma**2


def v_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = alpha eps - sigma x0."""
    return alpha * eps_from_x0(x, x0, alpha, sigma) - sigma * x0


def flow_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The flow-matching velocity u = eps - x0, dx_t/dt of alpha = 1 - t, sigma = t (Esser et al. 2024, sec. 3.1)."""
    return eps_from_x0(x, x0, alpha, sigma) - x0


def x0_from_prediction(
    kind: str, out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5
) -> Tensor:
    """Map a network output in parameterization `kind` to x0_hat; alpha, sigma broadcast over x."""
    if kind == "x0":
        return out
    if kind == "eps":
        return (x - sigma * out) / alpha
    if kind == "v":  # alpha x - sigma v = (alpha^2 + sigma^2) x0
        return (alpha * x - sigma * out) / (alpha**2 + sigma**2)
    if kind == "score":
        return (x + sigma**2 * out) / alpha
    if kind == "edm":
        c_skip, c_out, _, _ = edm_coefficients(sigma / alpha, sigma_data)
        return c_skip * (x / alpha) + c_out * out
    if kind == "flow":  # x = alpha x0 + sigma (u + x0)
        return (x - sigma * out) / (alpha + sigma)
    raise ValueError(f"unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}")


def prediction_from_x0(
    kind: str, x0: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float = 0.5
) -> Tensor:
    """Inverse of `x0_from_prediction`: the network output that yields x0 (the regression target)."""
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps_from_x0(x, x0, alpha, sigma)
    if kind == "v":
        return v_from_x0(x, x0, alpha, sigma)
    if kind == "score":
        return score_from_x0(x, x0, alpha, sigma)
    if kind == "edm":
        c_skip, c_out, _, _ = edm_coefficients(sigma / alpha, sigma_data)
        return (x0 - c_skip * (x / alpha)) / c_out
    if kind == "flow":
        return flow_from_x0(x, x0, alpha, sigma)
    raise ValueError(f"unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}")
