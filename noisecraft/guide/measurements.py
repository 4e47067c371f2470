"""Linear measurements y = A x + sigma_y n for inverse problems: masks, average pooling, identity, matrices.

Each operator gives A, its adjoint A^T and its pseudo-inverse A^+ in closed form, which is what the
projection methods (DDNM, Wang et al. 2023) and the likelihood-guided methods (DPS, Chung et al. 2023;
moment matching, Rozet et al. 2024) need. Operators act on batches (batch, *sample_shape) of any shape
the operator supports; a mask comes from an array or a PNG and is checked against the image size here,
at the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class LinearOperator:
    """A linear map A with its adjoint and pseudo-inverse; subclasses implement all three."""

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """A^+ A x: the part of x the measurement sees (the range of A^T)."""
        return self.pinv(self(x))

    def observed(self, y: Tensor) -> Tensor:
        """The orthogonal projection of y onto the range of A. Noise outside the range says nothing about x, so
        `measure` leaves it out (the posterior is the same either way, and residual norms stay meaningful): the
        identity unless A never reaches some directions (a mask's unknown pixels, unsampled k-space)."""
        return y


class Identity(LinearOperator):
    """A = I: denoising."""

    def __call__(self, x: Tensor) -> Tensor:
        return x

    adjoint = pinv = __call__


class Mask(LinearOperator):
    """A = diag(m) with m in {0, 1} (1 = observed): inpainting. y keeps x's shape, zero where unobserved."""

    def __init__(self, mask: Tensor | np.ndarray) -> None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask, dtype=torch.float64)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("a mask holds 0 (unknown) and 1 (known) only; use mask_from_array to threshold")
        self.mask = m

    def _m(self, x: Tensor) -> Tensor:
        m = self.mask.to(device=x.device, dtype=x.dtype)
        if m.shape != x.shape[1:] and m.shape != x.shape[-m.ndim:]:
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit samples of shape {tuple(x.shape[1:])}")
        return m

    def __call__(self, x: Tensor) -> Tensor:
        return self._m(x) * x

    adjoint = pinv = observed = __call__

    @property
    def known_fraction(self) -> float:
        return float(self.mask.mean())


class AvgPool(LinearOperator):
    """A = average pooling by `factor` over the last two axes (super-resolution, x2 or x4).

    A A^T = I / factor^2, so A^T y spreads y / factor^2 over each block and A^+ y = factor^2 A^T y repeats
    each value over its block (nearest-neighbour upsampling).
    """

    def __init__(self, factor: int) -> None:
        if int(factor) != factor or factor < 1:
            raise ValueError(f"pooling factor must be an integer >= 1, got {factor}")
        self.factor = int(factor)

    def _check(self, x: Tensor) -> None:
        if x.ndim < 3 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by the factor {self.factor}")

    def __call__(self, x: Tensor) -> Tensor:
        self._check(x)
        return F.avg_pool2d(x, self.factor)

    def pinv(self, y: Tensor) -> Tensor:
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def adjoint(self, y: Tensor) -> Tensor:
        return self.pinv(y) / self.factor**2


class Matrix(LinearOperator):
    """A given matrix (m, D) acting on vectors (batch, D): y = x A^T."""

    def __init__(self, matrix: Tensor | np.ndarray | Sequence) -> None:
        self.matrix = torch.as_tensor(matrix, dtype=torch.float64)
        if self.matrix.ndim != 2:
            raise ValueError(f"a measurement matrix must be 2-D (m, D), got shape {tuple(self.matrix.shape)}")
        self.pinv_matrix = torch.linalg.pinv(self.matrix)

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.matrix.to(x).T

    def adjoint(self, y: Tensor) -> Tensor:
        return y @ self.matrix.to(y)

    def pinv(self, y: Tensor) -> Tensor:
        return y @ self.pinv_matrix.to(y).T


@dataclass
class Measurement:
    """y = A x + sigma n, n ~ N(0, I): the operator, the observation and its noise std."""

    operator: LinearOperator
    y: Tensor
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise ValueError(f"measurement noise sigma must be >= 0, got {self.sigma}")

    def residual(self, x0: Tensor) -> Tensor:
        """y - A x0 (y broadcast over the batch)."""
        return self.y.to(x0) - self.operator(x0)


def measure(operator: LinearOperator, x: Tensor, sigma: float = 0.0, generator: torch.Generator | None = None) -> Measurement:
    """Simulate y = A x + sigma n, n ~ N(0, I) on the range of A (LinearOperator.observed)."""
    y = operator(x)
    if sigma > 0:
        y = y + sigma * operator.observed(torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device))
    return Measurement(operator, y, float(sigma))


def measure_poisson(operator: LinearOperator, x: Tensor, peak: float,
                    generator: torch.Generator | None = None) -> Measurement:
    """Photon counts: with intensities I = (A x + 1) / 2 in [0, 1] (pixels in [-1, 1]), counts ~ Poisson(peak I)
    and y = 2 counts / peak - 1, so E[y] = A x and Var[y] = 2 (A x + 1) / peak (shot noise, as in fluorescence
    microscopy; peak = expected photons at full intensity). Fits operators whose A x is an intensity (blur,
    pooling, masks, identity), not k-space data.

    The Measurement returned carries the Gaussian approximation of that likelihood that DPS, DDNM and moment
    matching use: y = A x + sigma n with sigma^2 = the mean of 2 (y + 1) / peak over y's entries, the average
    shot-noise variance (the variance-stabilised alternative is Anscombe's transform, Makitalo & Foi 2011).
    """
    if not (peak > 0 and math.isfinite(peak)):
        raise ValueError(f"the Poisson peak (expected photons at full intensity) must be > 0, got {peak}")
    intensity = (operator(x) + 1) / 2
    if bool((intensity < -1e-6).any()):
        raise ValueError(f"Poisson counts need A x >= -1 (intensities >= 0); got A x down to {2 * float(intensity.min()) - 1:.3g}")
    rate = (peak * intensity.clamp_min(0)).double().cpu()
    counts = torch.poisson(rate, generator=generator).to(device=x.device, dtype=x.dtype)
    y = 2 * counts / peak - 1
    return Measurement(operator, y, float(torch.sqrt((2 * (y + 1) / peak).mean())))


def mask_from_array(mask: Tensor | np.ndarray, sample_shape: Sequence[int], threshold: float = 0.5) -> Mask:
    """A Mask from an array of shape (H, W), (1, H, W) or sample_shape; values > threshold are known.

    A 2-D mask is shared by all channels. A mask of another size is an error naming both sizes.
    """
    arr = np.asarray(mask, dtype=np.float64)
    shape = tuple(int(s) for s in sample_shape)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and len(shape) == 3:
        if arr.shape != shape[1:]:
            raise ValueError(f"mask is {arr.shape[0]}x{arr.shape[1]} but the images are {shape[1]}x{shape[2]}; "
                             "expected a mask of the image's size")
        arr = np.broadcast_to(arr, shape)
    elif arr.shape != shape:
        raise ValueError(f"mask has shape {arr.shape}; expected {shape} or the image's (height, width)")
    return Mask((arr > threshold).astype(np.float64))


def mask_from_png(path: str | Path, sample_shape: Sequence[int]) -> Mask:
    """A Mask from a grayscale PNG: white (> 127) = known, black = to fill in."""
    from noisecraft.data.files import read_image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask file {str(path)!r} does not exist")
    arr = read_image(path, "L", "mask").astype(np.float64) / 255.0
    return mask_from_array(arr, sample_shape)


__all__ = ["AvgPool", "Identity", "LinearOperator", "Mask", "Matrix", "Measurement", "mask_from_array",
           "mask_from_png", "measure", "measure_poisson"]
