"""Long recordings to fixed-length windows and back, and resampling to the model's rate.

A network sees windows of `length` samples every `hop` samples. `stitch` puts (denoised) windows back by a
weighted overlap-add, sum_k w(n - k hop) s_k(n) / sum_k w(n - k hop), with a strictly positive taper w (a raised
cosine that never reaches zero). Dividing by the summed weights makes the stitch exact for windows that were not
changed, whatever the taper, hop or padding; the taper only smooths the seams between windows that disagree.
Resampling is polyphase FIR filtering (scipy.signal.resample_poly) by the rational factor fs_out / fs_in.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def taper(length: int) -> np.ndarray:
    """w(n) = sin^2(pi (n + 1/2) / length) (a Hann window shifted half a sample), > 0 at every n."""
    return np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 2


def _check(n: int, length: int, hop: int) -> None:
    if length < 1 or not 1 <= hop <= length:
        raise ValueError(f"windows need length >= 1 and 1 <= hop <= length, got length {length}, hop {hop}")
    if n < length:
        raise ValueError(f"the signal has {n} samples; a window needs at least {length}")


def padded_length(n: int, length: int, hop: int) -> int:
    """The length a signal of n samples is padded to so that windows of `length` every `hop` cover it."""
    _check(n, length, hop)
    return length + -(-(n - length) // hop) * hop


def windows(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(count, length) windows of the 1-D signal x, every `hop` samples; the end is padded by reflection
    (numpy's 'symmetric') so the last window is full."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    total = padded_length(len(x), length, hop)
    x = np.pad(x, (0, total - len(x)), mode="symmetric")
    starts = np.arange(0, total - length + 1, hop)
    return np.stack([x[s:s + length] for s in starts])


def stitch(segments: np.ndarray, n: int, hop: int) -> np.ndarray:
    """The signal of n samples whose windows (count, length) are `segments`, by weighted overlap-add; for
    segments cut by `windows(x, length, hop)` and left unchanged it returns x exactly (up to rounding)."""
    segments = np.asarray(segments, dtype=np.float64)
    count, length = segments.shape
    total = padded_length(n, length, hop)
    if count != (total - length) // hop + 1:
        raise ValueError(f"{count} windows of {length} every {hop} do not cover {n} samples; expected "
                         f"{(total - length) // hop + 1}")
    w = taper(length)
    num, den = np.zeros(total), np.zeros(total)
    for k in range(count):
        num[k * hop:k * hop + length] += w * segments[k]
        den[k * hop:k * hop + length] += w
    return num[:n] / den[:n]


def _ratio(fs_in: float, fs_out: float) -> Fraction:
    for name, fs in (("fs_in", fs_in), ("fs_out", fs_out)):
        if not (np.isfinite(fs) and fs > 0):
            raise ValueError(f"sampling rate {name} must be a positive number of Hz, got {fs}")
    return Fraction(fs_out / fs_in).limit_denominator(1000)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """x sampled at fs_in resampled to fs_out (polyphase FIR, scipy.signal.resample_poly, the ratio as a fraction
    with denominator <= 1000). Content above min(fs_in, fs_out)/2 is removed; below it the signal is kept up to
    the filter's ripple, away from the ends."""
    from scipy.signal import resample_poly

    ratio = _ratio(fs_in, fs_out)
    x = np.asarray(x, dtype=np.float64)
    if ratio == 1:
        return x.copy()
    return resample_poly(x, ratio.numerator, ratio.denominator, padtype="line")


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """How many samples `resample` returns for n samples: ceil(n up / down)."""
    ratio = _ratio(fs_in, fs_out)
    return -(-n * ratio.numerator // ratio.denominator)


__all__ = ["padded_length", "resample", "resampled_length", "stitch", "taper", "windows"]
