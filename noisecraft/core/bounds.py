"""Bounds on the clean estimate x0_hat: static clipping and dynamic thresholding.

Both act on x0_hat alone, so they wrap any denoise function; the sampler config carries them (as
diffusers' schedulers carry `clip_sample` and `thresholding`) and the sampling driver applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def check_threshold(threshold: float | None) -> float | None:
    """A quantile in (0, 1) or None, else a ValueError naming it."""
    if threshold is not None and not 0 < threshold < 1:
        raise ValueError(f"`threshold` must be a quantile in (0, 1), such as 0.95; got {threshold}")
    return threshold


def bound(x0: Tensor, clip: float | None, threshold: float | None = None) -> Tensor:
    """x0_hat kept in range: static clipping to [-clip, clip] (Ho et al. 2020, sec. 3.3) or, with a quantile
    `threshold` p, dynamic thresholding (Saharia et al. 2022, sec. 2.3): per sample s = the p-quantile of
    |x0_hat|, raised to at least 1 and capped at clip; x0_hat is clamped to [-s, s] and divided by s."""
    if threshold is None:
        return x0 if clip is None else x0.clamp(-clip, clip)
    s = torch.quantile(x0.reshape(x0.shape[0], -1).abs().to(torch.promote_types(x0.dtype, torch.float32)),
                       threshold, dim=1)
    s = s.clamp(min=1.0, max=clip).to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def clipped(denoise: Callable[..., Tensor], clip: float | None, threshold: float | None = None) -> Callable[..., Tensor]:
    """`denoise` with its x0_hat bounded by `bound`; `denoise` itself if neither bound is set."""
    if clip is None and threshold is None:
        return denoise

    def bounded(x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return bound(denoise(x, t) if cond is None else denoise(x, t, cond), clip, threshold)

    return bounded
