"""Signals: a small 1-D U-Net behind the denoiser contract `fn(x_in, noise_level[, cond])`.

The DDPM U-Net (Ho et al. 2020, appendix B) with its convolutions made one-dimensional: residual blocks
(GroupNorm, SiLU, convolution) that add the embedded noise level, a stride-2 convolution down and nearest
upsampling up with skip connections, and self-attention (Vaswani et al. 2017) at the levels flagged in
`attention`. Samples are (length,) or (channels, length); the length must be divisible by 2^(levels - 1).

With `cond_channels` > 0 the network is conditioned on a signal of that many channels and the sample's length
by concatenating it to the input (channel concatenation, as SR3, Saharia et al. 2022, and DeScoD-ECG, Li et al.
2023, condition on the low-quality input): F(x_t, noise level, y) for a model of clean given noisy.
diffusers' UNet1DModel is not used: its blocks are built for fixed-length audio (Dance Diffusion) and it has
no input for a conditioning signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisecraft.nets.embedding import NoiseLevelEmbedding


class _ResBlock(nn.Module):
    """h + conv(SiLU(GN(conv(SiLU(GN(h))) + emb))), a 1x1 convolution on the skip when the width changes."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(groups, c_in), nn.GroupNorm(groups, c_out)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        self.emb = nn.Linear(emb_dim, c_out)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        out = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None]
        out = self.conv2(self.drop(F.silu(self.norm2(out))))
        return self.skip(h) + out


class _Attention(nn.Module):
    """Residual single-head self-attention over the positions of a level."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = nn.MultiheadAttention(channels, 1, batch_first=True)

    def forward(self, h: Tensor) -> Tensor:
        q = self.norm(h).transpose(1, 2)
        return h + self.attn(q, q, q, need_weights=False)[0].transpose(1, 2)


class UNet1D(nn.Module):
    """F(x, noise_level[, cond]) for x of shape (batch, length) or (batch, channels, length); output as x."""

    def __init__(self, channels: int = 1, block_channels: Sequence[int] = (32, 64, 64),
                 attention: Sequence[bool] = (False, False, True), layers_per_block: int = 2,
                 cond_channels: int = 0, time_scale: float = 1000.0, kernel: int = 5, norm_groups: int = 8,
                 dropout: float = 0.0, squeeze: bool = True) -> None:
        super().__init__()
        if len(attention) != len(block_channels):
            raise ValueError(f"attention needs one flag per level ({len(block_channels)}), got {list(attention)}")
        bad = [c for c in block_channels if c % norm_groups]
        if bad:
            raise ValueError(f"block channels must be multiples of norm_groups={norm_groups}, got {bad}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd number >= 1, got {kernel}")
        self.channels, self.cond_channels, self.levels = channels, cond_channels, len(block_channels)
        self.squeeze = squeeze  # samples of shape (length,): the channel axis is added and removed here
        emb_dim = 4 * block_channels[0]
        self.embed = NoiseLevelEmbedding(emb_dim, scale=time_scale)
        self.inp = nn.Conv1d(channels + cond_channels, block_channels[0], kernel, padding=kernel // 2)
        block = (lambda a, b: _ResBlock(a, b, emb_dim, kernel, norm_groups, dropout))
        attn = (lambda c, on: _Attention(c, norm_groups) if on else nn.Identity())
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        widths, c = [block_channels[0]], block_channels[0]
        for level, (width, on) in enumerate(zip(block_channels, attention, strict=True)):
            for _ in range(layers_per_block):
                self.down.append(block(c, width))
                self.down_attn.append(attn(width, on))
                c = width
                widths.append(c)
            last = level == self.levels - 1
            self.downsample.append(nn.Identity() if last else nn.Conv1d(c, c, 3, stride=2, padding=1))
            if not last:
                widths.append(c)
        self.mid1, self.mid_attn, self.mid2 = block(c, c), _Attention(c, norm_groups), block(c, c)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level, (width, on) in reversed(list(enumerate(zip(block_channels, attention, strict=True)))):
            for _ in range(layers_per_block + 1):
                self.up.append(block(c + widths.pop(), width))
                self.up_attn.append(attn(width, on))
                c = width
            self.upsample.append(nn.Conv1d(c, c, kernel, padding=kernel // 2) if level else nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(norm_groups, c), nn.SiLU(), nn.Conv1d(c, channels, kernel,
                                                                                    padding=kernel // 2))
        nn.init.zeros_(self.out[-1].weight)  # the network starts at output 0, whatever it predicts
        nn.init.zeros_(self.out[-1].bias)
        self.layers_per_block = layers_per_block

    def _as_channels(self, x: Tensor, what: str) -> Tensor:
        want = 2 if self.squeeze else 3
        if x.ndim != want or (not self.squeeze and x.shape[1] != self.channels):
            shape = "(batch, length)" if self.squeeze else f"(batch, {self.channels}, length)"
            raise ValueError(f"UNet1D expects {what} of shape {shape}, got {tuple(x.shape)}")
        return x[:, None] if self.squeeze else x

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self._as_channels(x, "samples")
        if h.shape[-1] % 2 ** (self.levels - 1):
            raise ValueError(f"signal length {h.shape[-1]} must be divisible by 2^{self.levels - 1} for "
                             f"{self.levels} resolution levels")
        if self.cond_channels:
            if cond is None:
                raise ValueError("this UNet1D is conditioned on a signal (cond_channels > 0); pass `cond`")
            y = self._as_channels(cond, "conditioning signals").to(h.dtype)
            if y.shape[-1] != h.shape[-1]:
                raise ValueError(f"the conditioning signal has length {y.shape[-1]}; expected {h.shape[-1]}")
            h = torch.cat([h, y.expand(h.shape[0], -1, -1)], dim=1)
        elif cond is not None:
            raise ValueError("got a conditioning signal, but this UNet1D was built without cond_channels")
        emb = self.embed(noise_level.expand(x.shape[0]))
        h = self.inp(h)
        skips, k = [h], 0
        for level in range(self.levels):
            for _ in range(self.layers_per_block):
                h = self.down_attn[k](self.down[k](h, emb))
                skips.append(h)
                k += 1
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        k = 0
        for i, level in enumerate(reversed(range(self.levels))):
            for _ in range(self.layers_per_block + 1):
                h = self.up_attn[k](self.up[k](torch.cat([h, skips.pop()], dim=1), emb))
                k += 1
            if level:
                h = self.upsample[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.out(h)
        return out[:, 0] if self.squeeze else out
