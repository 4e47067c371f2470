"""Sinusoidal embedding of a scalar noise level (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, appendix B).

The noise level is whatever the denoiser feeds the network (t in [0, 1], EDM's c_noise, a DDPM timestep);
`scale` maps it to the range where the frequencies 1 ... 1/max_period resolve it (1000 for t in [0, 1]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class NoiseLevelEmbedding(nn.Module):
    """[cos(s c w_k), sin(s c w_k)] with w_k = max_period^(-k/half), then a two-layer MLP."""

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10_000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
        half = dim // 2
        self.scale = scale
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, level: Tensor) -> Tensor:
        angles = self.scale * level.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))
