"""Denoising and gap filling of ECG recordings with a trained signals model (noisecraft.signals.model).

A recording at any rate is checked (noisecraft.signals.ecg.check_recording), normalised (ecg.Scale), resampled
to the model's rate, cut into overlapping windows, restored window by window, stitched back, resampled to its
own rate and un-normalised. `n` samples per window give `n` restorations: their mean is the estimate and
their pointwise 5-95% quantiles the uncertainty band.

- "conditional" runs sample p(x | y) from the network trained on (clean, noisy) pairs, the noisy window as
  the condition (DeScoD-ECG, Li et al. 2023), with the run's sampler (DPM-Solver++(2M), 20 steps).
- "prior" runs sample the posterior of an unconditional prior of clean ECG under the noise model
  y = A x + sigma_y n, A the BandStop projection (baseline wander and mains removed, noisecraft.signals.operators)
  and sigma_y the white in-band noise, estimated from y by Donoho & Johnstone 1994's median absolute deviation
  of the finest Haar detail coefficients. The posterior is drawn with the inverse-problem wrappers of
  noisecraft.guide.inverse: DDNM (Wang et al. 2023, default), DPS (Chung et al. 2023) or moment matching (Rozet
  et al. 2024), on DDPM ancestral steps.
- `fill_gaps` (prior runs) fills NaN samples: a Mask operator per window and the DDNM/replacement wrapper
  (inpainting by replacement, Song et al. 2021, app. I); the known samples are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.noise import SampleNoise
from noisecraft.guide.inverse import dps, moment_matched, projection
from noisecraft.guide.measurements import Mask, Measurement
from noisecraft.signals.ecg import Scale, check_recording
from noisecraft.signals.model import SignalModel, condition
from noisecraft.signals.operators import BandStop
from noisecraft.signals.windows import resample, stitch, windows

GUIDES: tuple[str, ...] = ("ddnm", "dps", "mmps")
#: rows of windows x samples restored per solver call (bounds memory on long recordings)
CHUNK = 512


@dataclass(frozen=True)
class Restored:
    """A restored recording at its own rate fs: the input, the estimate (mean of the samples), the samples
    (n, length) and the pointwise 5% / 95% quantiles of the samples."""

    fs: float
    noisy: np.ndarray
    clean: np.ndarray
    samples: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    sigma_y: float | None = None


def noise_sigma(y: np.ndarray) -> float:
    """White-noise std from the finest Haar detail d_k = (y_2k - y_2k+1)/sqrt(2): median|d| / 0.6745
    (Donoho & Johnstone 1994); the sparse QRS complexes barely move the median."""
    d = (y[0:len(y) - 1:2] - y[1::2]) / np.sqrt(2)
    return float(np.median(np.abs(d)) / 0.6745)


def _check_n(n: int, steps: int | None) -> None:
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    if steps is not None and steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")


def _run(model: SignalModel, make: Callable[[slice], tuple[Callable, Tensor | None]], rows: int, steps: int,
         seed: int, solver: str) -> Tensor:
    """`rows` windows drawn with `solver`, CHUNK at a time; `make(rows slice)` gives that chunk's denoise
    function and condition. Row i draws from stream (seed, i), so a row does not depend on CHUNK."""
    pipe = model.pipeline
    cfg = pipe.solver(solver, steps)
    out = []
    for start in range(0, rows, CHUNK):
        part = slice(start, min(rows, start + CHUNK))
        denoise, cond = make(part)
        noise = SampleNoise(seed, part.stop - start, first=start)
        with torch.no_grad():  # DPS and moment matching turn gradients on where they need them
            out.append(cfg.run(denoise, pipe.schedule, (part.stop - start, model.spec.length), noise, cond=cond))
    return torch.cat(out)


def _windows_in(model: SignalModel, x: np.ndarray, fs: float) -> tuple[Scale, np.ndarray, Tensor]:
    """(the recording's Scale, the normalised signal at the model rate, its windows as float32)."""
    scale = Scale.of(x, fs)
    xm = resample(scale(x), fs, model.spec.fs)
    return scale, xm, torch.from_numpy(windows(xm, model.spec.length, model.spec.hop)).float()


def _back(model: SignalModel, draws: Tensor, n: int, count: int, size: int, scale: Scale, fs: float,
          length: int) -> np.ndarray:
    """(n, length) restorations at rate fs in the recording's units from draws (count * n, L), window-major."""
    per = draws.double().numpy().reshape(count, n, -1)
    out = [resample(stitch(per[:, i], size, model.spec.hop), model.spec.fs, fs)[:length] for i in range(n)]
    return scale.invert(np.stack(out))


def _restored(x: np.ndarray, fs: float, samples: np.ndarray, method: str, sigma_y: float | None = None) -> Restored:
    lower, upper = np.quantile(samples, [0.05, 0.95], axis=0)
    return Restored(fs, x, samples.mean(0), samples, lower, upper, method, sigma_y)


def denoise(model: SignalModel, x: np.ndarray, fs: float, n: int = 8, steps: int | None = None, seed: int = 0,
            guide: str = "ddnm", zeta: float = 1.0, sigma_y: float | None = None) -> Restored:
    """n restorations of the recording x (rate fs, any units) by the model's method; see the module docstring.
    `steps` defaults to the run's 20 (conditional) or 50 DDPM steps (prior); `guide` picks the prior's
    posterior wrapper (ddnm, dps, mmps), `zeta` DPS's step, `sigma_y` the in-band noise std in the normalised
    units (None: estimated by `noise_sigma`)."""
    if guide not in GUIDES:
        raise ValueError(f"unknown `guide` {guide!r}; expected one of {list(GUIDES)}")
    _check_n(n, steps)
    x = check_recording(x, fs)
    scale, xm, w = _windows_in(model, x, fs)
    rows = w.repeat_interleave(n, 0)
    pipe = model.pipeline
    if model.spec.method == "conditional":
        cond = condition(rows)
        draws = _run(model, lambda part: (pipe.network, cond[part]), len(rows), steps or pipe.config.sample.steps,
                     seed, pipe.config.sample.solver)
        return _restored(x, fs, _back(model, draws, n, len(w), len(xm), scale, fs, len(x)), "conditional")
    band = BandStop(model.spec.length, model.spec.fs)
    if sigma_y is None:
        sigma_y = noise_sigma(BandStop(len(xm), model.spec.fs)(torch.from_numpy(xm)[None])[0].numpy())
    elif not sigma_y > 0:
        raise ValueError(f"`sigma_y` must be > 0, got {sigma_y}")
    wrap = {"ddnm": lambda m: projection(pipe.network, m, pipe.schedule),
            "dps": lambda m: dps(pipe.network, m, pipe.schedule, zeta),
            "mmps": lambda m: moment_matched(pipe.network, m, pipe.schedule)}[guide]
    draws = _run(model, lambda part: (wrap(Measurement(band, band(rows[part]), sigma_y)), None), len(rows),
                 steps or 50, seed, "ddpm")
    return _restored(x, fs, _back(model, draws, n, len(w), len(xm), scale, fs, len(x)), f"prior+{guide}", sigma_y)


def fill_gaps(model: SignalModel, x: np.ndarray, fs: float, n: int = 8, steps: int | None = None,
              seed: int = 0) -> Restored:
    """n completions of the NaN samples of x (rate fs) by a prior run (DDNM / replacement with a Mask per
    window); the known samples of every completion are the input's."""
    if model.spec.method != "prior":
        raise ValueError("gap filling needs a prior run (`noisecraft signals train --method prior`); this run is "
                         f"{model.spec.method!r}")
    _check_n(n, steps)
    x = np.asarray(x, dtype=np.float64)
    known = np.isfinite(x)
    if known.all():
        raise ValueError("the recording has no NaN samples: nothing to fill")
    if known.mean() < 0.5:
        raise ValueError(f"only {100 * known.mean():.0f}% of the recording's samples are known; expected at least 50%")
    t = np.arange(len(x))
    bridged = check_recording(np.interp(t, t[known], x[known]), fs)
    scale, xm, w = _windows_in(model, bridged, fs)
    # a model-rate sample is known when the recording is known within one model sample period of it
    reach = int(np.ceil(fs / model.spec.fs))
    gap = np.convolve(~known, np.ones(2 * reach + 1), mode="same") > 0
    at = np.minimum(np.round(np.arange(len(xm)) * fs / model.spec.fs).astype(int), len(x) - 1)
    mask = torch.from_numpy(windows((~gap[at]).astype(np.float64), model.spec.length, model.spec.hop))
    rows, masks = w.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    net = model.pipeline.network
    draws = _run(model, lambda part: (projection(net, Measurement(Mask(masks[part]), masks[part].float() * rows[part])),
                                      None), len(rows), steps or 50, seed, "ddpm")
    samples = _back(model, draws, n, len(w), len(xm), scale, fs, len(x))
    samples[:, known] = x[known]
    return _restored(x, fs, samples, "prior+fill")


__all__ = ["CHUNK", "GUIDES", "Restored", "denoise", "fill_gaps", "noise_sigma"]
