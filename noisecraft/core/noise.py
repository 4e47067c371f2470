"""Random draws with per-sample seeding (DESIGN.md section 4).

`SampleNoise` gives each sample of a batch its own torch.Generator seeded from (seed, i), so sample i
depends only on (seed, i) and the same seed gives the same samples at any batch size. Draws are
buffered in blocks so a long chain costs a few generator calls per sample, not one per step; the first block
holds only FIRST_BLOCK draws (the prior and one step), so a one- or two-step sampler does not fill sixteen.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

SEED_STRIDE = 1_000_003  # a prime, so (seed, i) pairs map to distinct generator seeds
FIRST_BLOCK = 2  # draws in a stream's first block: x_T and one step's noise


def stream_seed(seed: int, index: int) -> int:
    """The seed of stream `index` under base `seed`: sample i of a batch, training step k, data epoch e.

    The one definition of the toolkit's seed streams (DESIGN.md section 4)."""
    return (int(seed) * SEED_STRIDE + int(index)) % (2**63 - 1)


def stream_generator(seed: int, index: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `stream_seed(seed, index)`."""
    return torch.Generator().manual_seed(stream_seed(seed, index))


def base_seed(generator: torch.Generator | None) -> int:
    """One base seed drawn from `generator`: what SampleNoise.from_generator splits into per-sample streams."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


class SampleNoise:
    """Standard normal draws of shape (batch, *sample_shape), sample i from its own stream."""

    def __init__(self, seed: int, batch: int, block: int = 16, first: int = 0) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.seed = int(seed)
        self.batch = batch
        self.first = int(first)  # row 0 of this batch is sample `first` of the call (a shard of a larger draw)
        self.block = block
        self._generators: list[torch.Generator] | None = None  # made on the first draw: deterministic solvers never pay
        self._buffers: dict[tuple, tuple[Tensor, int]] = {}
        self._pairs: list[tuple[int, int]] | None = None  # explicit (seed, index) per row (of_streams)

    def _streams(self) -> list[torch.Generator]:
        if self._generators is None:
            pairs = self._pairs or [(self.seed, self.first + i) for i in range(self.batch)]
            self._generators = [stream_generator(seed, index) for seed, index in pairs]
        return self._generators

    @classmethod
    def of_streams(cls, pairs: list[tuple[int, int]], block: int = 16) -> SampleNoise:
        """Row r draws from stream `pairs[r]` = (seed, index): several draws merged into one batch (a service
        batch) give each row exactly the numbers it gets drawn alone."""
        if not pairs:
            raise ValueError("of_streams needs at least one (seed, index) pair")
        noise = cls(pairs[0][0], len(pairs), block=block, first=pairs[0][1])
        noise._pairs = [(int(seed), int(index)) for seed, index in pairs]
        return noise

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, batch: int, first: int = 0) -> "SampleNoise":
        """Draw one base seed from `generator` (so successive calls differ) and split it per sample; `first`
        makes row 0 sample `first` of the draw (its rows first .. first + batch - 1, as one process's shard)."""
        return cls(base_seed(generator), batch, first=first)

    def randn(self, sample_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
        key = tuple(sample_shape)
        buffer, used = self._buffers.get(key, (None, 0))
        if buffer is None or used >= len(buffer):
            size = min(FIRST_BLOCK, self.block) if buffer is None else self.block
            buffer = torch.stack(
                [torch.randn((size, *key), generator=g, dtype=torch.float64) for g in self._streams()],
                dim=1,
            )
            used = 0
        self._buffers[key] = (buffer, used + 1)
        return buffer[used].to(dtype=dtype, device=device)


Generator = Union[torch.Generator, SampleNoise, None]


def randn_like(x: Tensor, generator: Generator) -> Tensor:
    """N(0, I) noise shaped like x, from a torch.Generator or a per-sample `SampleNoise`."""
    if isinstance(generator, SampleNoise):
        if generator.batch != x.shape[0]:
            raise ValueError(f"noise source was built for batch {generator.batch}, got x of batch {x.shape[0]}")
        return generator.randn(tuple(x.shape[1:]), x.dtype, x.device)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator is not None else x.device)
    return noise.to(x.device)
