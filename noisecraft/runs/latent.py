"""Latent diffusion (Rombach et al. 2022): the diffusion model is trained on, and samples, the scaled latents
z = s * E(x) of a trained autoencoder (noisecraft.runs.vae), and its samples are decoded x = D(z / s).

`LatentCodec` is the one object that crosses between pixels and latents: the training data are encoded once
(posterior means, deterministic), a Pipeline decodes what its solver draws, the likelihood encodes what it is
given. A latent run's config names its autoencoder by directory and by digest (the SHA-256 of its weights and
scaling factor); a different autoencoder at that path is refused, since the model's latents would no longer
mean the same images.

Inverse problems on a latent run measure the decoded image, y = A D(z / s) + sigma n: `guided` corrects the latent
denoiser through the decoder, by DPS (`DecodedDPS`), by DDNM's projection on the decoded x0_hat encoded back
(`DecodedProjection`) or by moment matching with the decoder linearised (`DecodedMomentMatched`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.data import Dataset
from noisecraft.guide.inverse import DPS
from noisecraft.guide.measurements import Measurement
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
        """Images D(z / s) of scaled latents z (n, *latent_shape), in z's dtype, clipped to the data range."""
        x = self.decode_unclipped(z)
        return x if self.clip is None else x.clamp(-self.clip, self.clip)

    def decode_unclipped(self, z: Tensor) -> Tensor:
        """D(z / s) as the decoder gives it, with gradients flowing to z (posterior sampling through the decoder,
        `DecodedOperator`): no clip, which would zero the gradient at every saturated pixel."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"expected latents of shape {self.latent_shape}, got {tuple(z.shape[1:])}")
        if z.shape[0] == 0:
            return z.new_zeros((0, *self.image_shape))
        return FixedBatch(_Decode(self.vae), self.chunk)(z / self.scaling_factor, torch.zeros(()))

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


class DecodedOperator:
    """A measurement of the decoded image, seen from the latents: z -> A(D(z / s)), differentiable in z. It is
    not linear (the decoder is not), so it serves the methods that only evaluate A and differentiate through
    it (DPS), not those that need A^T or A^+."""

    def __init__(self, operator: Any, codec: LatentCodec) -> None:
        self.operator, self.codec = operator, codec

    def __call__(self, z: Tensor) -> Tensor:
        return self.operator(self.codec.decode_unclipped(z))


class DecodedDPS(DPS):
    """DPS through the decoder (`DecodedOperator`; the "Latent-DPS" of Rout et al. 2023, their PSLD update with
    gamma = 0) with zeta in the units of pixel DPS: the latent step is divided by the decoder's mean squared gain
    g^2 = ||J||_F^2 / dim z, J = dD/dz at z0_hat. Why: a latent step dz moves the image by J dz, and the latent
    gradient is J^T of the pixel one, so the decoded image moves by J J^T times the pixel step, which is g^2 times
    it on the decoder's range when J's singular values are alike. Without this, the same zeta does g^2 times as
    much in latent space (g^2 = 0.13 for the digits32 autoencoder of docs/benchmarks/latent.md, where zeta 1 left
    the samples unguided). g^2 is Hutchinson's estimate mean_p ||J v_p||^2 / dim z with `probes` fixed Rademacher
    vectors v_p (Hutchinson 1990; exact when J has orthogonal columns of equal norm), the same for every row, so a
    sample does not depend on the batch it is drawn in; J v_p is the central difference of the decoder along v_p
    with step `eps` (one decoder call without gradients on the 2 x probes points per row, where forward-mode AD
    through the decoder cost 3x the whole DPS step)."""

    def __init__(self, denoise: Callable[..., Tensor], measurement: Measurement, codec: LatentCodec, schedule: Any,
                 zeta: float = 1.0, probes: int = 2, eps: float = 1e-2) -> None:
        super().__init__(denoise, Measurement(DecodedOperator(measurement.operator, codec), measurement.y,
                                              measurement.sigma), schedule, zeta)
        self.codec = codec
        signs = torch.randint(0, 2, (probes, *codec.latent_shape), generator=torch.Generator().manual_seed(0))
        self.probes, self.eps = 2.0 * signs - 1.0, float(eps)

    @torch.no_grad()
    def step_scale(self, z0: Tensor) -> Tensor:
        """1 / g^2(z0_hat), per row, shaped to broadcast over z."""
        n, (k, *shape) = z0.shape[0], self.probes.shape
        step = self.eps * self.probes.to(z0)[:, None]  # (k, 1, *shape)
        points = torch.cat([z0 + step, z0 - step]).reshape(2 * k * n, *shape)  # one decoder call for all
        ends = self.codec.decode_unclipped(points).reshape(2, k, n, -1)
        gain = ((ends[0] - ends[1]) / (2 * self.eps)).square().sum(-1).mean(0) / self.probes[0].numel()
        return (1.0 / gain.clamp_min(torch.finfo(gain.dtype).tiny)).reshape(-1, *[1] * (z0.dim() - 1))


class DecodedProjection:
    """DDNM's range/null-space split (Wang et al. 2023, eq. 13) applied to the decoded image and encoded back:
    z0_hat <- s E(x0 + lambda_t A^+ (y - A x0)) with x0 = D(z0_hat / s) (noisecraft.guide.inverse.Projection
    on the pixels). It is the point that PSLD's "gluing" term pulls z0_hat towards (Rout et al. 2023, Alg. 1,
    there with A^T for A^+ and as a gradient penalty), here put in its place, in the spirit of ReSample's hard
    data consistency (Song et al. 2024); one decoder and one encoder pass per step, no gradient. With a noisy y,
    the shrinkage lambda_t = v / (v + sigma_y^2) takes v = (sigma_t / alpha_t)^2 of the latents as the error
    variance of the decoded x0: a heuristic, as the decoder rescales errors."""

    def __init__(self, denoise: Callable[..., Tensor], measurement: Measurement, codec: LatentCodec,
                 schedule: Any) -> None:
        from noisecraft.guide.inverse import projection

        self.codec = codec
        self.pixels = projection(lambda z, t: codec.decode(denoise(z, t)), measurement, schedule)

    def __call__(self, z: Tensor, t: Any) -> Tensor:
        return self.codec.encode(self.pixels(z, t)).to(z.dtype)


class DecodedMomentMatched:
    """Moment matching (Rozet et al. 2024; noisecraft.guide.inverse.MomentMatched) with the decoder linearised at
    z0_hat, as an extended Kalman update: p(y | z_t) ~ N(y; A D(z0_hat), A J C J^T A^T + sigma_y^2 I) with
    J = dD/dz at z0_hat / s (the scaling folded in) and C = sigma^2/alpha dz0_hat/dz_t (Tweedie), so

        z0_hat <- z0_hat + C J^T A^T (A J C J^T A^T + sigma_y^2 I)^{-1} (y - A D(z0_hat / s)),

    the inverse by `cg_steps` conjugate-gradient steps. J^T u is one vector-Jacobian product of the decoder, J v
    the derivative of u -> <J^T u, v> (double backward). Exact for a linear decoder and Gaussian latents."""

    def __init__(self, denoise: Callable[..., Tensor], measurement: Measurement, codec: LatentCodec, schedule: Any,
                 cg_steps: int = 4) -> None:
        self.denoise, self.measurement, self.codec, self.schedule = denoise, measurement, codec, schedule
        self.cg_steps = cg_steps

    def __call__(self, z: Tensor, t: Any) -> Tensor:
        from noisecraft.core.tensors import as_time, expand_like, per_time
        from noisecraft.guide.inverse import conjugate_gradient

        t = as_time(t, z.shape[0])
        A, sigma_y = self.measurement.operator, self.measurement.sigma
        alpha, sigma = (expand_like(per_time(f, t), z) for f in (self.schedule.alpha, self.schedule.sigma))
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(True)
            z0 = self.denoise(z_in, t)
            at = z0.detach().requires_grad_(True)
            x0 = self.codec.decode_unclipped(at)

            def cov(v: Tensor) -> Tensor:  # C v = sigma^2/alpha J_denoiser^T v
                return sigma**2 / alpha * torch.autograd.grad(z0, z_in, v, retain_graph=True)[0]

            def jt(u: Tensor) -> Tensor:  # J^T u
                return torch.autograd.grad(x0, at, u, retain_graph=True)[0]

            u = torch.zeros_like(x0, requires_grad=True)
            jt_u = torch.autograd.grad(x0, at, u, retain_graph=True, create_graph=True)[0]  # linear in u, kept

            def j(v: Tensor) -> Tensor:  # J v = d/du <J^T u, v>
                return torch.autograd.grad(jt_u, u, v, retain_graph=True)[0]

            residual = self.measurement.residual(x0).detach()
            w = conjugate_gradient(lambda u: A(j(cov(jt(A.adjoint(u))))) + sigma_y**2 * u, residual, self.cg_steps)
            correction = cov(jt(A.adjoint(w)))
        return (z0 + correction).detach()


def guided(run: Any, method: str, measurement: Measurement, zeta: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """The latent denoiser of a latent run (a noisecraft.runs.pipeline.Pipeline with a codec) corrected by a
    measurement y = A x + sigma n of its decoded images x:

    - 'dps': `DecodedDPS`, diffusion posterior sampling through the decoder, the likelihood score
      -zeta grad_z ||y - A D(z0_hat(z_t) / s)|| / g^2 (Chung et al. 2023, Alg. 1, with A(D(.)) as the forward
      model and zeta in pixel units);
    - 'ddnm': `DecodedProjection`;
    - 'mmps': `DecodedMomentMatched` (four CG steps, as on pixels)."""
    from noisecraft.runs.steer import base_denoiser

    codec = run.codec
    denoise = base_denoiser(run)
    if method == "dps":
        return DecodedDPS(denoise, measurement, codec, run.schedule, zeta)
    if method == "ddnm":
        return DecodedProjection(denoise, measurement, codec, run.schedule)
    if method == "mmps":
        return DecodedMomentMatched(denoise, measurement, codec, run.schedule)
    raise ValueError(f"unknown `method` {method!r} for a latent run; expected 'ddnm', 'dps' or 'mmps'")


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


def model_shape(config: RunConfig) -> tuple[int, ...]:
    """The shape of one sample the run's network acts on: its autoencoder's latent shape for a latent run, else
    its data's sample shape."""
    if config.latent is None:
        return config.data.load().sample_shape
    return load_codec(config.latent).latent_shape


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


__all__ = ["DecodedDPS", "DecodedMomentMatched", "DecodedOperator", "DecodedProjection", "LatentCodec", "codec_from_run", "guided", "latent_config",
           "latent_run", "load_codec", "model_shape", "training_data"]
