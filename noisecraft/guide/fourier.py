"""Subsampled 2-D Fourier measurements, the forward model of accelerated MRI: y = M F x + sigma_y n.

F is the orthonormal 2-D DFT over the last two axes (torch.fft.fft2, norm="ortho") and M a k-space
sampling mask of shape (H, W) in FFT order (the DC coefficient at [0, 0]; torch.fft.fftshift it to look at
it). The images are real, the coefficients complex: y is stored as a real tensor of shape (*x.shape, 2),
(real, imaginary) as torch.view_as_real gives, zero off the mask. Every inner product the guidance
methods take (DPS's residual norm, moment matching's conjugate gradients) is then the real one,
<u, v> = Re sum conj(u) v, for which the adjoint is A^T y = Re F^H (M y).

A real image has a conjugate-symmetric spectrum, X(-k) = conj X(k), so A A^T = M S M with S the projection
y(k) -> (y(k) + conj y(-k)) / 2, and the Moore-Penrose pseudo-inverse is A^+ y = Re F^H (M y / s) with
s(k) = (m(k) + m(-k)) / 2: where the mask holds k and -k, A^+ = A^T; where it holds k alone, the
coefficient counts twice (it gives -k too). The mask builders below sample conjugate pairs, so that
A^+ = A^T (zero filling) and the acceleration R = H W / (sampled coefficients) is the honest ratio of real
unknowns to independent real measurements.

Masks: `cartesian_mask`, random phase-encoding lines with a fully sampled centre (the fastMRI
"random" mask, Zbontar et al. 2018, sec. 4.2, centre fraction 0.08 at 4x and 0.04 at 8x), and
`radial_mask`, spokes through the k-space centre at equal angles (Lauterbur 1973; the radial masks of
Song et al. 2022, "Solving inverse problems in medical imaging with score-based generative models").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from noisecraft.guide.measurements import LinearOperator


def conjugate_flip(a: Tensor) -> Tensor:
    """a(-k) over the last two axes in FFT order (index i -> -i mod n); complex conjugation is the caller's."""
    return torch.roll(torch.flip(a, (-2, -1)), (1, 1), (-2, -1))


class Fourier(LinearOperator):
    """A = M F: a k-space mask M (H, W) of 0/1 in FFT order after the orthonormal 2-D DFT (see module docstring)."""

    def __init__(self, mask: Tensor | np.ndarray) -> None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask, dtype=torch.float64)
        if m.ndim != 2:
            raise ValueError(f"a k-space mask has shape (H, W), got {tuple(m.shape)}")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("a k-space mask holds 0 (not sampled) and 1 (sampled) only")
        if not bool(m.any()):
            raise ValueError("the k-space mask samples no coefficient")
        self.mask = m
        pair = (m + conjugate_flip(m)) / 2  # 1 where k and -k are both sampled, 1/2 where one of them is
        self._pinv_weight = torch.where(m > 0, m / pair.clamp_min(0.5), torch.zeros_like(m))

    def _check(self, x: Tensor, what: str) -> None:
        if x.shape[-2:] != self.mask.shape:
            raise ValueError(f"{what} of size {tuple(x.shape[-2:])} does not fit the {tuple(self.mask.shape)} "
                             "k-space mask")

    def _on(self, weight: Tensor, like: Tensor) -> Tensor:
        return weight.to(device=like.device, dtype=like.real.dtype if like.is_complex() else like.dtype)

    def __call__(self, x: Tensor) -> Tensor:
        self._check(x, "image")
        k = torch.fft.fft2(x, norm="ortho")
        return torch.view_as_real(k * self._on(self.mask, x))

    def _back(self, y: Tensor, weight: Tensor) -> Tensor:
        if y.shape[-1] != 2:
            raise ValueError(f"k-space data has shape {tuple(y.shape)}; expected (..., H, W, 2) (real, imaginary)")
        k = torch.view_as_complex(y.contiguous())
        self._check(k, "k-space data")
        return torch.fft.ifft2(k * self._on(weight, y), norm="ortho").real

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y = Re F^H (M y)."""
        return self._back(y, self.mask)

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = Re F^H (M y / s): the minimum-norm real image with A x = y (for y in the range of A)."""
        return self._back(y, self._pinv_weight)

    def observed(self, y: Tensor) -> Tensor:
        """A A^+ y: the sampled, conjugate-symmetric part of k-space data (the range of A)."""
        return self(self.pinv(y))

    @property
    def acceleration(self) -> float:
        """R = H W / (sampled coefficients)."""
        return float(self.mask.numel() / self.mask.sum())


def _check_mask_args(shape: Sequence[int], acceleration: float) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 2 for s in shape):
        raise ValueError(f"a k-space mask needs a shape (H, W) of integers >= 2, got {tuple(shape)}")
    if not (math.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"the acceleration factor must be a finite number >= 1, got {acceleration}")
    return int(shape[0]), int(shape[1])


def _signed(n: int) -> np.ndarray:
    """Signed frequency of each FFT index: 0, 1, ..., -2, -1 (the Nyquist index n/2 counted as -n/2)."""
    return np.fft.fftfreq(n, 1.0 / n).astype(int)


def cartesian_mask(shape: Sequence[int], acceleration: float, center_fraction: float | None = None,
                   seed: int = 0) -> Tensor:
    """Random full lines along the first axis (phase encoding along the last), in FFT order: the
    round(W center_fraction) lowest frequencies always (default 0.32 / R: fastMRI's 0.08 at 4x, 0.04 at 8x),
    then random conjugate pairs of lines, chosen by `seed`, up to round(W / R) lines in all."""
    h, w = _check_mask_args(shape, acceleration)
    center_fraction = 0.32 / acceleration if center_fraction is None else float(center_fraction)
    if not 0 < center_fraction <= 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    budget = max(1, round(w / acceleration))
    f = np.abs(_signed(w))
    half = max(0, (round(w * center_fraction) - 1) // 2)
    lines = f <= half
    if lines.sum() > budget:
        raise ValueError(f"the fully sampled centre ({int(lines.sum())} lines) exceeds the {budget} lines of "
                         f"acceleration {acceleration} on width {w}; lower center_fraction")
    rng = np.random.default_rng(seed)
    for freq in rng.permutation(np.arange(half + 1, w // 2 + 1)):  # each |frequency| is a conjugate pair
        pair = f == freq
        if lines.sum() + pair.sum() <= budget:
            lines |= pair
    mask = np.broadcast_to(lines[None, :], (h, w)).astype(np.float64)
    return torch.from_numpy(mask.copy())


def radial_mask(shape: Sequence[int], acceleration: float, seed: int = 0) -> Tensor:
    """Spokes through the k-space centre at equal angles (offset by a random rotation from `seed`), as few
    as give at least a 1 / R share of the coefficients, in FFT order; closed under k -> -k."""
    h, w = _check_mask_args(shape, acceleration)
    u, v = np.meshgrid(_signed(h), _signed(w), indexing="ij")
    offset = np.random.default_rng(seed).uniform(0, np.pi)
    for spokes in range(1, 4 * max(h, w) + 1):
        angles = offset + np.pi * np.arange(spokes) / spokes
        # a pixel is on a spoke when it lies within half a pixel of the line through 0 at that angle
        dist = np.abs(u[..., None] * np.cos(angles) - v[..., None] * np.sin(angles))
        near = (dist <= 0.5).any(-1)
        mask = torch.from_numpy(near.astype(np.float64))
        mask = torch.maximum(mask, conjugate_flip(mask))
        if float(mask.mean()) >= 1 / acceleration:
            return mask
    return torch.ones(h, w, dtype=torch.float64)  # pragma: no cover - the spokes cover the plane long before


MASKS = {"cartesian": cartesian_mask, "radial": radial_mask}


def kspace_mask(kind: str, shape: Sequence[int], acceleration: float, seed: int = 0) -> Tensor:
    """A mask by name: 'cartesian' (random lines, fastMRI) or 'radial' (spokes)."""
    if kind not in MASKS:
        raise ValueError(f"unknown k-space mask {kind!r}; expected one of {list(MASKS)}")
    return MASKS[kind](shape, acceleration, seed=seed)


__all__ = ["MASKS", "Fourier", "cartesian_mask", "conjugate_flip", "kspace_mask", "radial_mask"]
