"""Total-variation reconstruction, the classical baseline for the inverse problems of noisecraft.guide:

    x* = argmin_x  ||A x - y||^2 / 2 + lambda TV(x),   TV(x) = sum_pixels |grad x|_2  (isotropic; Rudin et al. 1992)

solved by the primal-dual algorithm of Chambolle & Pock (2011, Alg. 1, theta = 1) with K = [grad; A] and
F(z_1, z_2) = lambda ||z_1||_{2,1} + ||z_2 - y||^2 / 2, G = 0, so it needs only A and A^T of any
LinearOperator (Sidky et al. 2012 use the same split for CT and MRI). The gradient is the forward difference
with a zero last row and column (Neumann boundary), whose negative adjoint is the divergence, as in
Chambolle (2004) and skimage.restoration.denoise_tv_chambolle, which this solves exactly when A = I.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisecraft.guide.measurements import LinearOperator, Measurement


def gradient(x: Tensor) -> Tensor:
    """Forward differences over the last two axes, zero at the far edge: shape (*x.shape[:-2], 2, H, W)."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gy, gx], dim=-3)


def divergence(p: Tensor) -> Tensor:
    """div = -grad^T, for p of shape (..., 2, H, W)."""
    py, px = p[..., 0, :, :], p[..., 1, :, :]
    dy = torch.zeros_like(py)
    dx = torch.zeros_like(px)
    dy[..., 0, :] = py[..., 0, :]
    dy[..., 1:-1, :] = py[..., 1:-1, :] - py[..., :-2, :]
    dy[..., -1, :] = -py[..., -2, :]
    dx[..., :, 0] = px[..., :, 0]
    dx[..., :, 1:-1] = px[..., :, 1:-1] - px[..., :, :-2]
    dx[..., :, -1] = -px[..., :, -2]
    return dy + dx


def total_variation(x: Tensor) -> Tensor:
    """Isotropic TV of each sample, shape (batch,)."""
    return gradient(x).pow(2).sum(-3).sqrt().flatten(1).sum(1)


def operator_norm(operator: LinearOperator, like: Tensor, iters: int = 50, seed: int = 0) -> float:
    """||A||_2 by power iteration on A^T A from a random start of x's shape (an upper estimate, +1%)."""
    v = torch.randn(like.shape, generator=torch.Generator().manual_seed(seed), dtype=like.dtype).to(like.device)
    norm = torch.tensor(0.0)
    for _ in range(iters):
        v = v / v.norm()
        w = operator.adjoint(operator(v))
        norm = w.norm().sqrt()
        v = w
    return 1.01 * float(norm)


def tv_reconstruct(measurement: Measurement, lam: float, shape: tuple[int, ...], iters: int = 300) -> Tensor:
    """argmin_x ||A x - y||^2 / 2 + lam TV(x) for each sample of y (Chambolle & Pock 2011, Alg. 1), started at
    A^+ y; `shape` is the batch of images x, (batch, C, H, W)."""
    if not lam >= 0:
        raise ValueError(f"TV weight lambda must be >= 0, got {lam}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    A, y = measurement.operator, measurement.y
    x = A.pinv(y).expand(shape).clone()
    step = 1.0 / (8.0 + operator_norm(A, x) ** 2) ** 0.5  # sigma = tau, sigma tau ||K||^2 < 1; ||grad||^2 <= 8
    p, q = torch.zeros_like(gradient(x)), torch.zeros_like(A(x))
    x_bar = x
    for _ in range(iters):
        p = p + step * gradient(x_bar)
        p = p / (p.pow(2).sum(-3, keepdim=True).sqrt() / max(lam, 1e-30)).clamp_min(1.0)  # onto |p| <= lam
        q = (q + step * (A(x_bar) - y)) / (1.0 + step)  # prox of the conjugate of ||. - y||^2 / 2
        x_new = x + step * (divergence(p) - A.adjoint(q))
        x_bar, x = 2 * x_new - x, x_new
    return x


__all__ = ["divergence", "gradient", "operator_norm", "total_variation", "tv_reconstruct"]
