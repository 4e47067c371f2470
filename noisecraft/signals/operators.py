"""1-D measurement operators for ECG posterior sampling (noisecraft.guide.measurements' contract: A, A^T, A^+).

`BandStop` is the noise model of the prior method: baseline wander lives below ~1 Hz and mains at 50/60 Hz and
harmonics, so the measurement keeps only the other frequencies, A = F^-1 diag(m) F with m in {0, 1} over the
real FFT bins of a window (m symmetric in frequency, so A is a real orthogonal projection: A^T = A = A^+). What
A removes the prior fills in (DDNM's null space, Wang et al. 2023); the remaining in-band noise is treated as
white Gaussian noise of std sigma_y. Gaps (dropped samples) are noisecraft.guide.measurements.Mask on the window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noisecraft.guide.measurements import LinearOperator

#: bands a BandStop removes by default, Hz: baseline wander, and +-1.5 Hz around mains and harmonics (those
#: above a window's Nyquist frequency select no bin)
DEFAULT_STOPS: tuple[tuple[float, float], ...] = ((0.0, 0.7), *((f - 1.5, f + 1.5) for f in (50, 60, 100, 120)))


class BandStop(LinearOperator):
    """A x = irfft(m * rfft(x)) over the last axis, m = 0 on the rfft bins inside any of `stops` (Hz)."""

    def __init__(self, length: int, fs: float, stops: tuple[tuple[float, float], ...] = DEFAULT_STOPS) -> None:
        if length < 2 or not fs > 0:
            raise ValueError(f"BandStop needs length >= 2 and fs > 0, got {length} and {fs}")
        f = torch.fft.rfftfreq(length, 1 / fs, dtype=torch.float64)
        keep = torch.ones_like(f, dtype=torch.bool)
        for lo, hi in stops:
            keep &= ~((f >= lo) & (f <= hi))
        self.length, self.fs, self.keep = length, fs, keep.to(torch.float64)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.length:
            raise ValueError(f"BandStop was built for windows of {self.length} samples, got {x.shape[-1]}")
        spec = torch.fft.rfft(x, dim=-1) * self.keep.to(device=x.device, dtype=x.dtype)
        return torch.fft.irfft(spec, n=self.length, dim=-1)

    adjoint = pinv = __call__

    @property
    def kept_fraction(self) -> float:
        return float(self.keep.mean())


__all__ = ["DEFAULT_STOPS", "BandStop"]
