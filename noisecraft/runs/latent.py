"""Latent diffusion (Rombach et al. 2022): the diffusion model is trained on, and samples, the scaled latents
z = s * E(x) of a trained autoencoder (noisecraft.runs.vae), and its samples are decoded x = D(z / s).

`LatentCodec` is the one object that crosses between pixels and latents: the training data are encoded once
(posterior means, deterministic), a Pipeline decodes what its solver draws, the likelihood encodes what it is
given. A latent run's config names its autoencoder by directory and by digest (the SHA-256 of its weights and
scaling factor); a different autoencoder at that path is refused, since the model's latents would no longer
mean the same images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.data import Dataset
from noisecraft.nets.batching import FixedBatch
from noisecraft.runs.checkpoint import weights_digest
from noisecraft.runs.config import LatentConfig, RunConfig


class _Decode(nn.Module):
    """`decode(z)` behind the (x, noise_level) call of FixedBatch."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: Tensor, _level: Tensor) -> Tensor:
        return self.vae.decode(z)


@dataclass(frozen=True)
class LatentCodec:
    """Pixels <-> scaled latents of an autoencoder `vae` (anything with `encode(x) -> (mean, logvar)` and
    `decode(z) -> x`): encode x -> s * mean(x), decode z -> D(z / s), clipped to [-clip, clip] (the data
    range; None: unclipped). Decoding runs in chunks of `chunk` rows (the last padded), so an image depends
    only on its own latent, bit for bit, whatever the batch (noisecraft.nets.batching)."""

    vae: Any
    scaling_factor: float
    image_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    digest: str
    source: str = ""
    clip: float | None = 1.0
    chunk: int = 16

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Scaled latents s * E[z | x] of images x (n, *image_shape), in x's dtype."""
        x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"the autoencoder {self.source} takes images of shape {self.image_shape}, "
                             f"got {tuple(x.shape[1:])}")
        parts = [self.vae.encode(x[i:i + 256])[0] for i in range(0, x.shape[0], 256)]
        return self.scaling_factor * torch.cat(parts) if parts else x.new_zeros((0, *self.latent_shape))

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Images D(z / s) of scaled latents z (n, *latent_shape), in z's dtype."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"expected latents of shape {self.latent_shape}, got {tuple(z.shape[1:])}")
        if z.shape[0] == 0:
            return z.new_zeros((0, *self.image_shape))
        x = FixedBatch(_Decode(self.vae), self.chunk)(z / self.scaling_factor, torch.zeros(()))
        return x if self.clip is None else x.clamp(-self.clip, self.clip)

    def latent_mask(self, mask: Tensor) -> Tensor:
        """A pixel mask (1 = known) of the image shape on the latent grid: a latent position is known only when
        every pixel of its f x f block, in every channel, is known (min pooling), so no unknown pixel is ever held
        fixed; the same mask for every latent channel. (Blended Latent Diffusion, Avrahami et al. 2023, maps the
        mask to the latent resolution the same way, by downsampling.)"""
        m = torch.as_tensor(mask, dtype=torch.float64).reshape(self.image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"latent masks need images (channels, height, width), got {self.image_shape}")
        factor = self.image_shape[1] // self.latent_shape[1]
        block = -torch.nn.functional.max_pool2d(-m.amin(0, keepdim=True)[None], factor)[0]
        return block.expand(self.latent_shape).clone()


def codec_from_run(vae_dir: str | Path) -> LatentCodec:
    """The codec of a trained autoencoder run (noisecraft vae train), with its EMA weights."""
    from noisecraft.runs.vae import load_vae

    vae_dir = Path(vae_dir)
    if not (vae_dir / "config.yaml").is_file():
        raise ValueError(f"`latent` {str(vae_dir)!r} is not an autoencoder run: expected config.yaml "
                         "(made by `noisecraft vae train`)")
    config, vae, _ = load_vae(vae_dir)
    image_shape = tuple(json.loads((vae_dir / "data.json").read_text())["sample_shape"])
    scale = float(config.scaling_factor)
    return LatentCodec(vae, scale, image_shape, vae.latent_shape(image_shape),
                       weights_digest(vae.state_dict(), f"scaling_factor={scale!r}"), str(vae_dir))


def latent_config(vae_dir: str | Path) -> LatentConfig:
    """What a latent run records of its autoencoder: the absolute directory and the digest."""
    codec = codec_from_run(vae_dir)
    return LatentConfig(vae=str(Path(vae_dir).resolve()), digest=codec.digest)


def load_codec(latent: LatentConfig) -> LatentCodec:
    """The codec a latent run was trained with; a ValueError when the autoencoder there is another one."""
    codec = codec_from_run(latent.vae)
    if codec.digest != latent.digest:
        raise ValueError(f"the autoencoder at {latent.vae!r} has digest {codec.digest}, but this run was trained on "
                         f"the latents of the autoencoder with digest {latent.digest} (config.yaml latent.digest); "
                         "a different autoencoder would decode its samples into other images")
    return codec


def latent_run(config: RunConfig, vae_dir: str | Path) -> RunConfig:
    """`config` as a latent run on the autoencoder in `vae_dir`: its digest recorded, and no clip of x0_hat (the
    scaled latents have unit std, not the data's [-1, 1] range; decoded images are clipped instead)."""
    sample = config.sample.model_copy(update={"clip": None, "threshold": None})
    return config.model_copy(update={"latent": latent_config(vae_dir), "sample": sample})


def training_data(config: RunConfig) -> Dataset:
    """The run's training data: the images of config.data, or for a latent run their scaled latents."""
    data = config.data.load()
    if config.latent is None:
        return data
    codec = load_codec(config.latent)
    if data.sample_shape != codec.image_shape:
        raise ValueError(f"data {data.name!r} has samples of shape {data.sample_shape}, but the autoencoder "
                         f"{config.latent.vae!r} takes images of shape {codec.image_shape}")
    return Dataset(codec.encode(data.x), data.labels, data.name)


__all__ = ["LatentCodec", "codec_from_run", "latent_config", "latent_run", "load_codec", "training_data"]
