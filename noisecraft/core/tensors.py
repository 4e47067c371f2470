"""Small tensor helpers shared by the whole core: broadcasting per-sample coefficients over any shape."""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT64 = torch.float64


def as_time(t: float | Tensor, batch: int | None = None) -> Tensor:
    """Return t as a float64 tensor; a scalar is expanded to shape (batch,) when batch is given."""
    t = torch.as_tensor(t, dtype=FLOAT64)
    if batch is not None and t.ndim == 0:
        t = t.expand(batch)
    return t


def per_time(fn, t: Tensor) -> Tensor:
    """fn(t) for a time tensor; a batch that repeats one time (stride 0, from `as_time`) is evaluated once."""
    if t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0:
        return fn(t[:1]).expand(t.shape)
    return fn(t)


def expand_like(coef: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient of shape (batch,) or () so it broadcasts over x's trailing dims."""
    coef = coef.to(device=x.device, dtype=x.dtype)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


def check_finite(x: Tensor, what: str) -> Tensor:
    """Raise a ValueError naming `what` if x holds NaN or inf."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{what} produced {bad} non-finite values (NaN or inf); expected finite numbers")
    return x
