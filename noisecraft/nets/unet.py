"""Images: diffusers' `UNet2DModel` (the DDPM/ADM U-Net, Ho et al. 2020; Dhariwal & Nichol 2021) behind
the denoiser contract `fn(x_in, noise_level[, class])`.

The noise level the denoiser passes (t, c_noise, a DDPM timestep) is multiplied by `time_scale` before the
U-Net's sinusoidal timestep embedding, so continuous t in [0, 1] becomes 0 ... 1000 as in DDPM. A
pretrained diffusers U-Net plugs in with `UNet.from_diffusers(model)` and time_scale 1 on timesteps.

Text conditioning (`text_dim`): a learned linear map takes a sentence embedding (Reimers & Gurevych 2019)
to the time-embedding width and UNet2DModel adds it to the time embedding (`class_embed_type="identity"`),
the way a class embedding enters. The null condition of classifier-free guidance is the zero embedding,
whose projection is the learned bias.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class UNet(nn.Module):
    """A wrapper that calls UNet2DModel(x, time_scale * level, class_labels).sample."""

    def __init__(self, model: nn.Module, time_scale: float = 1000.0, text_dim: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.time_scale = time_scale
        self.text_dim = text_dim
        if text_dim is not None:
            width = model.config.block_out_channels[0] * 4  # UNet2DModel's time-embedding width
            self.text_proj = nn.Linear(text_dim, width)

    @classmethod
    def build(
        cls,
        sample_size: int,
        channels: int = 1,
        block_channels: Sequence[int] = (32, 64, 64),
        attention: Sequence[bool] = (False, False, True),
        layers_per_block: int = 2,
        num_classes: int | None = None,
        norm_groups: int = 8,
        dropout: float = 0.0,
        time_scale: float = 1000.0,
        text_dim: int | None = None,
    ) -> UNet:
        """A fresh UNet2DModel; `attention[i]` puts self-attention in resolution level i (down and up);
        `text_dim` conditions on sentence embeddings of that width instead of class labels."""
        from diffusers import UNet2DModel

        if len(attention) != len(block_channels):
            raise ValueError(f"attention needs one flag per level ({len(block_channels)}), got {list(attention)}")
        bad = [c for c in block_channels if c % norm_groups]
        if bad:
            raise ValueError(f"block channels must be multiples of norm_groups={norm_groups}, got {bad}")
        if sample_size % 2 ** (len(block_channels) - 1):
            raise ValueError(f"image size {sample_size} must be divisible by 2^{len(block_channels) - 1} "
                             f"for {len(block_channels)} resolution levels")
        if text_dim is not None and num_classes is not None:
            raise ValueError(f"condition on classes ({num_classes}) or on text (text_dim {text_dim}), not both")
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
        model = UNet2DModel(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(block_channels), layers_per_block=layers_per_block,
            down_block_types=down, up_block_types=up, norm_num_groups=norm_groups, dropout=dropout,
            num_class_embeds=num_classes, class_embed_type="identity" if text_dim is not None else None,
        )
        return cls(model, time_scale, text_dim)

    @classmethod
    def from_diffusers(cls, model: nn.Module, time_scale: float = 1.0) -> UNet:
        """Wrap an existing (e.g. pretrained) UNet2DModel; pair it with Denoiser(time_input="timestep")."""
        return cls(model, time_scale)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"UNet expects images of shape (batch, channels, height, width), got {tuple(x.shape)}")
        level = (self.time_scale * noise_level).expand(x.shape[0])
        if self.text_dim is not None and cond is not None:
            if cond.ndim != 2 or cond.shape[1] != self.text_dim:
                raise ValueError(f"this UNet takes text embeddings of shape (batch, {self.text_dim}), "
                                 f"got {tuple(cond.shape)}")
            cond = self.text_proj(cond.to(self.text_proj.weight.dtype)).expand(x.shape[0], -1)
        return self.model(x, level, class_labels=cond).sample
