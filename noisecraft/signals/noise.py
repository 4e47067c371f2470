"""ECG noise of the MIT-BIH noise stress test kinds, synthesised from spectral models, at a chosen SNR.

The noise stress test (Moody, Muldrow & Mark 1984, "A noise stress test for arrhythmia detectors", Computers in
Cardiology 11) adds recorded baseline wander (bw), muscle artefact (ma) and electrode motion (em) to clean ECG
at set signal-to-noise ratios; mains interference is the fourth classic contaminant. The recordings are not
shipped here, so each kind is synthesised from the models of Friesen et al. 1990 ("A comparison of the noise
sensitivity of nine QRS detection algorithms", IEEE TBME 37(1), sec. II), which describe each by its spectrum:

- bw: baseline drift from respiration, a sinusoid at 0.15-0.4 Hz (Friesen's drift model), plus a random walk
  (power ~ 1/f^2) confined below 1 Hz;
- ma: electromyographic noise, zero-mean band-limited Gaussian noise (Friesen), here 10-100 Hz (capped at 0.45 fs);
- em: electrode motion, transient baseline shifts that decay exponentially (Friesen's motion artefact), plus
  pink noise (power ~ 1/f) in 0.5-15 Hz, the band where em overlaps the ECG (Moody et al. 1984);
- mains: power-line interference, a 50 or 60 Hz sinusoid with its harmonics below fs/2 (amplitudes 1, 0.3, 0.1).

`noise` draws unit-power rows of one kind or of a random mix; `add_noise` scales them to an SNR in dB,
10 log10(P_signal / P_noise) with P the variance, as the stress test states noise levels. Every draw takes a
torch.Generator, so training draws are a pure function of (seed, step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KINDS: tuple[str, ...] = ("bw", "ma", "em", "mains")
#: what `noise` accepts: one kind, or "mix" (all four with random Dirichlet(1) power shares per row)
CHOICES: tuple[str, ...] = (*KINDS, "mix")


def _unit_power(x: Tensor) -> Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def colored(batch: int, n: int, fs: float, band: tuple[float, float], beta: float, g: torch.Generator) -> Tensor:
    """Gaussian noise with power spectrum ~ f^-beta in `band` (Hz) and none outside: white noise shaped in the
    Fourier domain, on a buffer of at least 20 s so sub-Hz content exists in short windows."""
    m = max(n, int(20 * fs))
    spec = torch.fft.rfft(torch.randn((batch, m), generator=g, dtype=torch.float64), dim=-1)
    f = torch.fft.rfftfreq(m, 1 / fs, dtype=torch.float64)
    keep = (f >= band[0]) & (f <= band[1])
    gain = torch.where(keep, f.clamp_min(1e-9) ** (-beta / 2), torch.zeros_like(f))
    return torch.fft.irfft(spec * gain, n=m, dim=-1)[:, :n]


def _sinusoid(freq: Tensor, n: int, fs: float, g: torch.Generator) -> Tensor:
    t = torch.arange(n, dtype=torch.float64) / fs
    phase = _uniform((freq.shape[0], 1), 0, 2 * math.pi, g)
    return torch.sin(2 * math.pi * freq[:, None] * t + phase)


def _bw(batch: int, n: int, fs: float, g: torch.Generator) -> Tensor:
    breath = _sinusoid(_uniform((batch,), 0.15, 0.4, g), n, fs, g)
    return _unit_power(breath) + _unit_power(colored(batch, n, fs, (0.01, 1.0), 2.0, g))


def _ma(batch: int, n: int, fs: float, g: torch.Generator) -> Tensor:
    return colored(batch, n, fs, (10.0, min(100.0, 0.45 * fs)), 0.0, g)


def _em(batch: int, n: int, fs: float, g: torch.Generator, rate: float = 0.5) -> Tensor:
    """Pink noise in 0.5-15 Hz plus Poisson-timed (rate per s) steps a exp(-(t - u)/tau), tau in 0.1-0.5 s."""
    t = torch.arange(n, dtype=torch.float64) / fs
    events = max(1, math.ceil(rate * n / fs * 2))
    onset = _uniform((batch, events, 1), -1.0, n / fs, g)
    tau = _uniform((batch, events, 1), 0.1, 0.5, g)
    amp = torch.randn((batch, events, 1), generator=g, dtype=torch.float64)
    on = torch.rand((batch, events, 1), generator=g, dtype=torch.float64) < rate * (n / fs + 1) / events
    lag = (t - onset).clamp_min(0)
    steps = (on * amp * torch.where(t >= onset, torch.exp(-lag / tau), torch.zeros_like(lag))).sum(1)
    return _unit_power(colored(batch, n, fs, (0.5, 15.0), 1.0, g)) + steps


def _mains(batch: int, n: int, fs: float, g: torch.Generator) -> Tensor:
    f0 = torch.where(torch.rand(batch, generator=g) < 0.5, 50.0, 60.0).to(torch.float64)
    out = torch.zeros((batch, n), dtype=torch.float64)
    for h, a in ((1, 1.0), (2, 0.3), (3, 0.1)):
        wave = _sinusoid(h * f0, n, fs, g)
        out += a * torch.where((h * f0 < 0.5 * fs)[:, None], wave, torch.zeros_like(wave))
    return out


_MAKERS = {"bw": _bw, "ma": _ma, "em": _em, "mains": _mains}


def check_kind(kind: str) -> str:
    if kind not in CHOICES:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {list(CHOICES)}")
    return kind


def noise(kind: str, batch: int, n: int, fs: float, generator: torch.Generator) -> Tensor:
    """(batch, n) float64 noise of `kind` at rate fs, each row zero-mean with unit power."""
    check_kind(kind)
    if kind != "mix":
        return _unit_power(_MAKERS[kind](batch, n, fs, generator))
    # Dirichlet(1, ..., 1) power shares as normalised exponentials, drawn from our generator
    e = -torch.log(torch.rand((batch, len(KINDS)), generator=generator, dtype=torch.float64).clamp_min(1e-300))
    w = e / e.sum(1, keepdim=True)
    parts = [_unit_power(_MAKERS[k](batch, n, fs, generator)) for k in KINDS]
    return _unit_power(sum(w[:, i:i + 1].sqrt() * p for i, p in enumerate(parts)))


def add_noise(clean: Tensor, snr_db: float | Tensor, kind: str, fs: float, generator: torch.Generator) -> Tensor:
    """clean (batch, n) plus noise of `kind` at `snr_db` (a number or one per row): 10 log10 of the ratio of
    the clean row's variance to the noise's."""
    clean64 = clean.to(torch.float64)
    snr = torch.as_tensor(snr_db, dtype=torch.float64).reshape(-1, 1)
    unit = noise(kind, clean.shape[0], clean.shape[-1], fs, generator)
    power = clean64.var(dim=-1, unbiased=False, keepdim=True)
    return (clean64 + unit * (power / 10 ** (snr / 10)).sqrt()).to(clean.dtype)


__all__ = ["CHOICES", "KINDS", "add_noise", "check_kind", "colored", "noise"]
