"""Images: diffusers' `UNet2DModel` (the DDPM/ADM U-Net, Ho et al. 2020; Dhariwal & Nichol 2021) behind
the denoiser contract `fn(x_in, noise_level[, class])`.

The noise level the denoiser passes (t, c_noise, a DDPM timestep) is multiplied by `time_scale` before the
U-Net's sinusoidal timestep embedding, so continuous t in [0, 1] becomes 0 ... 1000 as in DDPM. A
pretrained diffusers U-Net plugs in with `UNet.from_diffusers(model)` and time_scale 1 on timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class UNet(nn.Module):
    """A wrapper that calls UNet2DModel(x, time_scale * level, class_labels).sample."""

    def __init__(self, model: nn.Module, time_scale: float = 1000.0) -> None:
        super().__init__()
        self.model = model
        self.time_scale = time_scale

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
    ) -> UNet:
        """A fresh UNet2DModel; `attention[i]` puts self-attention in resolution level i (down and up)."""
        from diffusers import UNet2DModel

        if len(attention) != len(block_channels):
            raise ValueError(f"attention needs one flag per level ({len(block_channels)}), got {list(attention)}")
        bad = [c for c in block_channels if c % norm_groups]
        if bad:
            raise ValueError(f"block channels must be multiples of norm_groups={norm_groups}, got {bad}")
        if sample_size % 2 ** (len(block_channels) - 1):
            raise ValueError(f"image size {sample_size} must be divisible by 2^{len(block_channels) - 1} "
                             f"for {len(block_channels)} resolution levels")
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
        model = UNet2DModel(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(block_channels), layers_per_block=layers_per_block,
            down_block_types=down, up_block_types=up, norm_num_groups=norm_groups, dropout=dropout,
            num_class_embeds=num_classes,
        )
        return cls(model, time_scale)

    @classmethod
    def from_diffusers(cls, model: nn.Module, time_scale: float = 1.0) -> UNet:
        """Wrap an existing (e.g. pretrained) UNet2DModel; pair it with Denoiser(time_input="timestep")."""
        return cls(model, time_scale)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"UNet expects images of shape (batch, channels, height, width), got {tuple(x.shape)}")
        level = (self.time_scale * noise_level).expand(x.shape[0])
        return self.model(x, level, class_labels=cond).sample
