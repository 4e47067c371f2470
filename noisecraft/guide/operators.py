"""Measurement operators by name, as the command line and the HTTP service spell them: `fourier` (k-space
subsampling, noisecraft.guide.fourier), `blur` (noisecraft.guide.blur), `pool` (super-resolution)."""

from __future__ import annotations

from collections.abc import Sequence

from noisecraft.guide.blur import Blur, gaussian_kernel
from noisecraft.guide.fourier import MASKS, Fourier, kspace_mask
from noisecraft.guide.measurements import AvgPool, LinearOperator

OPERATORS: tuple[str, ...] = ("fourier", "blur", "pool")


def operator_by_name(name: str, image_shape: Sequence[int], acceleration: float = 4.0, mask: str = "cartesian",
                     blur_std: float = 1.0, factor: int = 2, seed: int = 0) -> LinearOperator:
    """The operator `name` for images of shape (C, H, W): `fourier` with a `mask` ('cartesian' or 'radial') of
    `acceleration` R drawn with `seed`; `blur` by a Gaussian of `blur_std` pixels (periodic boundary); `pool`,
    average pooling by `factor`."""
    if name not in OPERATORS:
        raise ValueError(f"unknown `operator` {name!r}; expected one of {list(OPERATORS)}")
    if len(image_shape) != 3:
        raise ValueError(f"operators act on images (C, H, W), got samples of shape {tuple(image_shape)}")
    if name == "fourier":
        if mask not in MASKS:
            raise ValueError(f"unknown `mask` {mask!r}; expected one of {list(MASKS)}")
        return Fourier(kspace_mask(mask, image_shape[1:], acceleration, seed))
    if name == "blur":
        return Blur(gaussian_kernel(blur_std))
    return AvgPool(factor)


__all__ = ["OPERATORS", "operator_by_name"]
