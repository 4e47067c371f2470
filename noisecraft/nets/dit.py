"""A small Diffusion Transformer (DiT, Peebles & Xie 2023) behind the denoiser contract
`fn(x_in, noise_level[, class])`, for pixels or latents.

The image is cut into p x p patches, each linearly embedded and given a fixed 2-D sine-cosine position
(Peebles & Xie 2023, sec. 3.1; the ViT patch embedding of Dosovitskiy et al. 2021). The condition
c = embed(noise level) + embed(class) drives every block through adaLN-Zero: a linear map of c gives the shift,
scale and gate of each sub-layer's LayerNorm and residual, initialised to zero so every block starts as the
identity (sec. 3.2, "adaLN-Zero block"). A final adaptive LayerNorm and a zero-initialised linear layer give
each patch's p x p x C output, put back in place.

Written here rather than wrapping diffusers' DiTTransformer2DModel: that model embeds the noise level once per
block and drops labels with its own unseeded draws in training mode, where the toolkit's label dropout is a
function of (seed, step) (noisecraft.runs.train).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from noisecraft.nets.embedding import NoiseLevelEmbedding


def sincos_2d(width: int, rows: int, cols: int) -> Tensor:
    """Fixed 2-D sine-cosine positions (rows * cols, width): half the channels code the row, half the column,
    each as [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (width / 4)) (Vaswani et al. 2017, sec. 3.5)."""
    if width % 4:
        raise ValueError(f"the DiT width must be a multiple of 4 for 2-D positions, got {width}")
    quarter = width // 4
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(quarter, dtype=torch.float64) / quarter)
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    parts = [f(pos.reshape(-1, 1) * freqs) for pos in (r, c) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LayerNorm output x shifted and scaled per sample: x (1 + scale) + shift (adaLN, Peebles & Xie sec. 3.2)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and MLP sub-layers, each LayerNorm -> adaptive shift/scale -> sub-layer -> gated residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"the DiT width {width} must be divisible by its {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: the block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)

    def attention(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, w))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attention(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """DiT on images (channels, size, size): patch size p, `depth` blocks of `width` channels and `heads` heads;
    classes (`num_classes` rows, the null label included when there is one) or text (`text_dim`) condition
    through the adaLN input."""

    def __init__(self, size: int, channels: int, width: int = 128, depth: int = 4, heads: int = 4,
                 patch_size: int = 2, num_classes: int | None = None, time_scale: float = 1000.0,
                 text_dim: int | None = None) -> None:
        super().__init__()
        if size % patch_size:
            raise ValueError(f"the DiT's image size {size} must be divisible by patch_size {patch_size}")
        if num_classes and text_dim:
            raise ValueError(f"condition on classes ({num_classes}) or on text (text_dim {text_dim}), not both")
        self.size, self.channels, self.patch = size, channels, patch_size
        grid = size // patch_size
        self.embed_patches = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.register_buffer("position", sincos_2d(width, grid, grid), persistent=False)
        self.embed_level = NoiseLevelEmbedding(width, scale=time_scale)
        self.class_embed = nn.Embedding(num_classes, width) if num_classes else None
        self.text_proj = nn.Linear(text_dim, width) if text_dim else None
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, patch_size * patch_size * channels)
        for layer in (self.ada_out[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, batch: int, noise_level: Tensor, cond: Tensor | None) -> Tensor:
        c = self.embed_level(noise_level.expand(batch))
        if cond is None:
            return c
        if self.text_proj is not None:
            if cond.ndim != 2 or cond.shape[1] != self.text_proj.in_features:
                raise ValueError(f"this DiT takes text embeddings of shape (batch, {self.text_proj.in_features}), "
                                 f"got {tuple(cond.shape)}")
            return c + self.text_proj(cond.to(c.dtype))
        if self.class_embed is None:
            raise ValueError("got class labels, but this DiT was built without num_classes")
        return c + self.class_embed(cond)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, self.size, self.size):
            raise ValueError(f"this DiT takes images of shape (batch, {self.channels}, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        b, p, grid = x.shape[0], self.patch, self.size // self.patch
        c = self.condition(b, noise_level, cond)
        h = self.embed_patches(x).flatten(2).transpose(1, 2) + self.position.to(x.dtype)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c).chunk(2, dim=1)
        h = self.out(_modulate(self.norm_out(h), shift, scale))  # (b, grid * grid, p * p * channels)
        h = h.reshape(b, grid, grid, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, self.channels, self.size, self.size)


__all__ = ["DiT", "DiTBlock", "sincos_2d"]
