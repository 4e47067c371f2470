"""A residual MLP with a noise-level embedding, for vectors and 2-D toy data.

Each block adds the embedded noise level before its hidden layer, the pattern of the DDPM network's
time conditioning (Ho et al. 2020, appendix B) on a fully connected trunk.
"""

from __future__ import annotations

from torch import Tensor, nn

from noisecraft.nets.embedding import NoiseLevelEmbedding


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h) + emb))))


class MLP(nn.Module):
    """F(x, noise_level[, class]) for x of shape (batch, dim); output has x's shape."""

    def __init__(self, dim: int, width: int = 256, depth: int = 3, num_classes: int | None = None,
                 time_scale: float = 1000.0, text_dim: int | None = None) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"MLP needs dim, width, depth >= 1, got {dim}, {width}, {depth}")
        self.dim = dim
        self.embed = NoiseLevelEmbedding(width, scale=time_scale)
        if num_classes and text_dim:
            raise ValueError(f"condition on classes ({num_classes}) or on text (text_dim {text_dim}), not both")
        # a class label is looked up; a sentence embedding (Reimers & Gurevych 2019) is projected linearly
        self.class_embed = nn.Embedding(num_classes, width) if num_classes else None
        self.text_proj = nn.Linear(text_dim, width) if text_dim else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP expects input of shape (batch, {self.dim}), got {tuple(x.shape)}")
        return self.out(self._trunk(self.inp(x), noise_level, cond))

    def features(self, h: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        """What the output layer reads, from the input projection h = inp(x) (batch, width): forward(x) =
        out[-1](features(inp(x))), for a caller that forms h or reads the output layer its own way (the tabular
        sampler). Not for sharded training: there `out` is gathered only when it runs as one module."""
        return self.out[:-1](self._trunk(h, noise_level, cond))

    def _trunk(self, h: Tensor, noise_level: Tensor, cond: Tensor | None) -> Tensor:
        emb = self.embed(noise_level.expand(h.shape[0]))
        if cond is not None and self.text_proj is not None:
            if cond.ndim != 2 or cond.shape[1] != self.text_proj.in_features:
                raise ValueError(f"this MLP takes text embeddings of shape (batch, {self.text_proj.in_features}), "
                                 f"got {tuple(cond.shape)}")
            emb = emb + self.text_proj(cond.to(emb.dtype))
        elif cond is not None:
            if self.class_embed is None:
                raise ValueError("got class labels, but this MLP was built without num_classes")
            emb = emb + self.class_embed(cond)
        for block in self.blocks:
            h = block(h, emb)
        return h
