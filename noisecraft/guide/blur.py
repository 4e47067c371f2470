"""Blur by a known kernel, y = k * x + sigma_y n, with a circular (periodic) boundary: deconvolution.

The periodic boundary makes A diagonal in the Fourier basis, A = F^H diag(K) F with K the DFT of the
kernel centred at index (0, 0), so A, A^T (K -> conj K: the flipped kernel) and the pseudo-inverse are exact
and cost two FFTs. A Gaussian kernel's K decays to ~0 at high frequencies; the pseudo-inverse keeps the
frequencies with |K| > rcond max |K| and drops the rest, as numpy.linalg.pinv drops small singular values:
it is the Moore-Penrose inverse of A with those singular values set to zero (DDNM's truncated SVD, Wang
et al. 2023, sec. 3.2), and the prior fills in what was dropped. The images' edges wrap around: an image
that is far from periodic shows its opposite edge mixed in at the border (pad it first if that matters).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from noisecraft.guide.measurements import LinearOperator


def gaussian_kernel(std: float, radius: int | None = None) -> np.ndarray:
    """A normalised 2-D Gaussian kernel of standard deviation `std` pixels, (2 r + 1) square, r = ceil(3 std)."""
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"blur std must be a finite number > 0 (pixels), got {std}")
    r = math.ceil(3 * std) if radius is None else int(radius)
    if r < 0:
        raise ValueError(f"kernel radius must be >= 0, got {radius}")
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / std) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


class Blur(LinearOperator):
    """A x = k * x, circular convolution over the last two axes with an odd-sized kernel (same for each channel)."""

    def __init__(self, kernel: Tensor | np.ndarray, rcond: float = 1e-3) -> None:
        k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, Tensor) else kernel, dtype=torch.float64)
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"a blur kernel is a 2-D array of odd height and width, got shape {tuple(k.shape)}")
        if not torch.isfinite(k).all() or not bool(k.abs().sum() > 0):
            raise ValueError("a blur kernel needs finite values, not all zero")
        if not 0 <= rcond < 1:
            raise ValueError(f"rcond must be in [0, 1), got {rcond}")
        self.kernel, self.rcond = k, float(rcond)
        self._cache: dict[tuple[int, int], Tensor] = {}

    def transfer(self, size: tuple[int, int]) -> Tensor:
        """K = DFT of the kernel on an (H, W) grid, centred at index (0, 0): A = F^H diag(K) F."""
        size = (int(size[0]), int(size[1]))
        if size not in self._cache:
            kh, kw = self.kernel.shape
            if kh > size[0] or kw > size[1]:
                raise ValueError(f"the {kh}x{kw} blur kernel is larger than the {size[0]}x{size[1]} image")
            padded = torch.zeros(size, dtype=torch.float64)
            padded[:kh, :kw] = self.kernel
            self._cache[size] = torch.fft.fft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), (0, 1)))
        return self._cache[size]

    def _apply(self, x: Tensor, gain: Tensor) -> Tensor:
        if x.ndim < 2:
            raise ValueError(f"blur acts on images (..., H, W), got shape {tuple(x.shape)}")
        gain = gain.to(device=x.device, dtype=torch.complex128 if x.dtype == torch.float64 else torch.complex64)
        return torch.fft.ifft2(gain * torch.fft.fft2(x)).real.to(x.dtype)

    def __call__(self, x: Tensor) -> Tensor:
        return self._apply(x, self.transfer(x.shape[-2:]))

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y: correlation with the kernel (conj K)."""
        return self._apply(y, self.transfer(y.shape[-2:]).conj())

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = F^H diag(1 / K on |K| > rcond max|K|, else 0) F y."""
        K = self.transfer(y.shape[-2:])
        keep = K.abs() > self.rcond * K.abs().max()
        return self._apply(y, torch.where(keep, 1 / torch.where(keep, K, torch.ones_like(K)), torch.zeros_like(K)))


__all__ = ["Blur", "gaussian_kernel"]
