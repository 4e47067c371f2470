"""The autoencoder of latent diffusion (Rombach et al. 2022, sec. 3.1): diffusers' `AutoencoderKL`, a
convolutional encoder to a diagonal Gaussian q(z | x) = N(mean, exp(logvar)) and a decoder back to pixels,
built from a small plain config; or (`kind: tiny`) diffusers' `AutoencoderTiny`, the TAESD architecture
(Bohan 2023): plain convolutions without normalisation or attention and a deterministic code, cheaper to run.

Each resolution level but the last halves the image, so an image of size H x W has latents of size
(H / f) x (W / f) with f = 2^(levels - 1); any H, W divisible by f is accepted. The training objective is
`vae_loss`: reconstruction error plus a small KL to N(0, I) (the "KL-reg" autoencoder of Rombach et al.
2022, app. G; the beta-weighted ELBO of Kingma & Welling 2014 and Higgins et al. 2017). The tiny autoencoder's
code is deterministic (a point, whose KL is infinite): its regulariser is the KL's mean term alone, ||z||^2 / 2,
the L2 penalty on the code of a regularised deterministic autoencoder (Ghosh et al. 2020).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class VAEConfig(BaseModel):
    """Size of the autoencoder: channels per resolution level, latent channels, blocks per level."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: "kl": AutoencoderKL (Gaussian posterior, GroupNorm); "tiny": AutoencoderTiny (TAESD; deterministic code,
    #: no normalisation, so `norm_groups` and `attention` do not apply; one width: `block_channels` all equal)
    kind: Literal["kl", "tiny"] = "kl"
    block_channels: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    latent_channels: int = Field(4, ge=1)
    layers_per_block: int = Field(1, ge=1)
    norm_groups: int = Field(8, ge=1)
    #: self-attention in the encoder's and decoder's middle block (costly; rarely helps at 32x32)
    attention: bool = False

    @property
    def factor(self) -> int:
        """How much each side shrinks from image to latent: 2^(levels - 1)."""
        return 2 ** (len(self.block_channels) - 1)

    def build(self, channels: int) -> VAE:
        """A fresh autoencoder for images of `channels` channels."""
        from diffusers import AutoencoderKL, AutoencoderTiny

        levels = len(self.block_channels)
        if self.kind == "tiny":
            if len(set(self.block_channels)) > 1:  # diffusers' EncoderTiny and DecoderTiny never change width
                raise ValueError(f"the tiny autoencoder has one width at every level; block_channels must be equal, "
                                 f"got {self.block_channels}")
            blocks = (self.layers_per_block,) * (levels - 1)
            model = AutoencoderTiny(
                in_channels=channels, out_channels=channels, latent_channels=self.latent_channels,
                encoder_block_out_channels=tuple(self.block_channels),
                decoder_block_out_channels=tuple(self.block_channels),
                num_encoder_blocks=(1, *blocks), num_decoder_blocks=(*blocks, 1), upsampling_scaling_factor=2,
            )
            return VAE(model, channels, self.factor)
        bad = [c for c in self.block_channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"block channels must be multiples of norm_groups={self.norm_groups}, got {bad}")
        model = AutoencoderKL(
            in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(self.block_channels),
            layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
            norm_num_groups=self.norm_groups, mid_block_add_attention=self.attention,
        )
        return VAE(model, channels, self.factor)


class VAE(nn.Module):
    """AutoencoderKL or AutoencoderTiny behind two calls: `encode(x) -> (mean, logvar)` (logvar None for the
    tiny one's deterministic code) and `decode(z) -> x`. Inputs are cast to the weights' dtype and outputs
    returned in the input's dtype."""

    def __init__(self, model: nn.Module, channels: int, factor: int) -> None:
        super().__init__()
        self.model, self.channels, self.factor = model, int(channels), int(factor)
        self.latent_channels = int(model.config.latent_channels)
        self.deterministic = not hasattr(model, "quant_conv")  # AutoencoderTiny has no posterior

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def check_images(self, x: Tensor) -> None:
        """A ValueError unless x is (batch, channels, H, W) with H and W divisible by the factor."""
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"the autoencoder takes images of shape (batch, {self.channels}, H, W) with H and W "
                             f"divisible by {self.factor}, got {tuple(x.shape)}")

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(latent channels, H / f, W / f) of images of shape (channels, H, W)."""
        self.check_images(torch.empty(1, *image_shape, device="meta"))
        return self.latent_channels, image_shape[1] // self.factor, image_shape[2] // self.factor

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean, logvar) of q(z | x), each (batch, latent channels, H / f, W / f); (code, None) for the tiny
        autoencoder."""
        self.check_images(x)
        if self.deterministic:
            return self.model.encode(x.to(self._dtype)).latents.to(x.dtype), None
        dist = self.model.encode(x.to(self._dtype)).latent_dist
        return dist.mean.to(x.dtype), dist.logvar.to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """Images (batch, channels, f h, f w) from latents (batch, latent channels, h, w)."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"the decoder takes latents of shape (batch, {self.latent_channels}, h, w), "
                             f"got {tuple(z.shape)}")
        return self.model.decode(z.to(self._dtype)).sample.to(z.dtype)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(reconstruction of x from z = mean + exp(logvar / 2) eps, mean, logvar): the reparameterised pass
        (Kingma & Welling 2014, eq. 10); z = the code for the tiny autoencoder (eps unused)."""
        mean, logvar = self.encode(x)
        z = mean if logvar is None else mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


def kl_to_standard(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element, averaged: 1/2 (mean^2 + var - 1 - logvar)
    (Kingma & Welling 2014, app. B)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def vae_loss(vae: VAE, x: Tensor, eps: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, reconstruction, KL): mean squared error per pixel + kl_weight * KL per latent element; for the
    tiny autoencoder's point code, the KL's mean term ||z||^2 / 2 per element (Ghosh et al. 2020's L2 code
    penalty)."""
    recon, mean, logvar = vae(x, eps)
    mse = (recon - x).square().mean()
    kl = 0.5 * mean.square().mean() if logvar is None else kl_to_standard(mean, logvar)
    return mse + kl_weight * kl, mse, kl


__all__ = ["VAE", "VAEConfig", "kl_to_standard", "vae_loss"]
