"""Batch-invariant evaluation: a network called on row chunks of one fixed size, so each row's output is the
same bits whatever the batch it came in.

CPU kernels pick their blocking from the tensor shapes: a convolution over n images sums in an order that
depends on n, so the digits UNet gives a row outputs that differ at the 1e-7 level between batch sizes (an MLP's
rows do not). At one fixed shape the kernels are fixed, and a row's output depends neither on its position
nor on the other rows (measured for the UNet at 1, 8, 16, 32 and 64 rows, 1 and 2 threads; tests/test_batching.py).
Evaluating every call as chunks of `size` rows, the last one padded, therefore makes sample i a function of
(seed, i) alone, bit for bit, across sample counts, processes and merged service batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _rows(value: Any, start: int, stop: int, n: int) -> Any:
    """Rows start:stop of a per-row tensor (leading dim n); anything else (None, a scalar) as it is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n:
        return value[start:stop]
    return value


def _pad(value: Any, rows: int) -> Any:
    """A per-row chunk extended to `rows` rows by repeating its first row."""
    if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] == rows:
        return value
    fill = value[:1].expand(rows - value.shape[0], *value.shape[1:])
    return torch.cat([value, fill])


class FixedBatch(nn.Module):
    """`net(x, noise_level[, cond])` evaluated on chunks of exactly `size` rows (the last padded, the padding's
    outputs dropped); gradients flow as through `net`."""

    def __init__(self, net: nn.Module, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"`eval_batch` must be >= 1, got {size}")
        self.net = net
        self.size = int(size)

    def forward(self, x: Tensor, noise_level: Tensor, *cond: Any) -> Tensor:
        n = x.shape[0]
        outs = []
        for start in range(0, n, self.size):
            stop = min(start + self.size, n)
            args = [_pad(_rows(a, start, stop, n), self.size) for a in (x, noise_level, *cond)]
            outs.append(self.net(*args)[: stop - start])
        return torch.cat(outs)


__all__ = ["FixedBatch"]
