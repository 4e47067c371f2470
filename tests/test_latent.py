"""Latent diffusion: the composition (autoencoder + diffusion on its scaled latents) checked on the Gaussian
mixture oracle through a linear autoencoder, and a trained latent run's contract: it names its autoencoder and
refuses another, it samples decoded images deterministically per seed and batch-size invariantly, and the
likelihood scores the latents."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.analysis.oracle import GaussianMixture, mixture16d
from noisecraft.cli import app
from noisecraft.metrics.distribution import mode_weight_error, within_mode_w2
from noisecraft.nets.vae import VAEConfig
from noisecraft.runs.config import RunConfig, config_from_dict, preset_config
from noisecraft.runs.latent import LatentCodec, latent_run
from noisecraft.runs.pipeline import Part, Pipeline
from noisecraft.runs.train import train
from noisecraft.runs.vae import measure_scaling_factor, train_vae, vae_config
from noisecraft.solvers.config import SolverConfig

N = 2000


class LinearVAE:
    """A fixed linear "autoencoder": encode x -> P x, decode z -> P^T z, P (d, D) with orthonormal rows."""

    def __init__(self, projection: torch.Tensor) -> None:
        self.P = projection

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x.double() @ self.P.T).to(x.dtype)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z.double() @ self.P).to(z.dtype)


def projected(mix: GaussianMixture, P: torch.Tensor, scale: float = 1.0) -> GaussianMixture:
    """The law of scale * P x for x ~ mix: weights kept, means scale P mu, covariances scale^2 P S P^T."""
    cov = scale**2 * P @ mix.covariances @ P.T
    return GaussianMixture(mix.weights, scale * mix.means @ P.T, 0.5 * (cov + cov.transpose(1, 2)))


def test_latent_diffusion_with_the_exact_latent_denoiser_reproduces_the_projected_mixture() -> None:
    mix = mixture16d()
    g = torch.Generator().manual_seed(0)
    P = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0][:, :8].T  # (8, 16)
    vae = LinearVAE(P)
    data = mix.sample(4000, torch.Generator().manual_seed(1))[0].float()
    scale = measure_scaling_factor(vae, data)  # the function an autoencoder run measures its factor with
    codec = LatentCodec(vae, scale, (16,), (8,), "0" * 16, "linear", clip=None)
    assert float(codec.encode(data).double().std()) == pytest.approx(1.0, abs=1e-6)
    latent_mix = projected(mix, P, scale)  # the law of the scaled latents: its exact denoiser is the model
    config = RunConfig(sample=SolverConfig(solver="dpm++2m", steps=50))  # 50 network evaluations
    pipe = Pipeline(config, None, (8,), False, network=latent_mix.denoiser(config.loss.schedule), codec=codec)
    x = pipe.sample(N, seed=0)
    assert x.shape == (N, 16) and pipe.output_shape == (16,)
    # decoded samples lie in the autoencoder's range, and their coordinates there follow the projected mixture
    assert torch.allclose(x.double() @ P.T @ P, x.double(), atol=1e-5)
    target = projected(mix, P)
    floor = within_mode_w2(target.sample(N, torch.Generator().manual_seed(100))[0], target)
    near = within_mode_w2(x.double() @ P.T, target)
    assert near < 1.25 * floor, f"within-mode W2 {near:.4f} vs floor {floor:.4f}"
    assert mode_weight_error(x.double() @ P.T, target) < 0.04
    # a wrong scale (latents decoded without dividing by s) is caught by the same check
    wrong = LatentCodec(vae, 1.0, (16,), (8,), "0" * 16, clip=None).decode(codec.encode(x))
    assert within_mode_w2(wrong.double() @ P.T, target) > 2 * floor


TINY_UNET = {"block_channels": [8, 16], "attention": [False, False], "layers_per_block": 1}


def _latent_config(vae: Path, **model) -> RunConfig:
    raw = preset_config("digits32", "edm", max_steps=2, batch_size=8, checkpoint_every=2).model_dump(mode="json")
    raw["model"].update(TINY_UNET, **model)
    return latent_run(config_from_dict(raw), vae)


def _vae(run: Path, seed: int = 0) -> Path:
    cfg = vae_config("digits32", max_steps=2, batch_size=8, seed=seed, warmup_steps=1)
    train_vae(cfg.model_copy(update={"model": VAEConfig(block_channels=[8, 16], latent_channels=2)}), run,
              progress=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("latent")
    _vae(root / "vae")
    _vae(root / "other", seed=1)
    train(_latent_config(root / "vae"), root / "plain", progress=False)
    train(_latent_config(root / "vae", num_classes=10, label_dropout=0.2), root / "cond", progress=False)
    return root


def test_the_run_names_its_autoencoder_and_samples_images(runs: Path) -> None:
    pipe = nc.load_run(runs / "plain")
    assert pipe.config.latent.vae == str((runs / "vae").resolve())
    assert pipe.config.latent.digest == pipe.codec.digest
    assert pipe.sample_shape == (2, 16, 16) and pipe.output_shape == (1, 32, 32)
    assert pipe.config.sample.clip is None  # latents have unit std, not the data's range
    x = pipe.sample(3, steps=4)
    assert x.shape == (3, 1, 32, 32) and x.dtype == torch.float32 and x.abs().max() <= 1.0


@pytest.mark.parametrize("method, steps", [("consistency", 2), ("progressive", 1), ("regression", 1), ("reflow", 1)])
def test_a_latent_run_distils_into_a_latent_student_that_samples_images(runs: Path, tmp_path: Path, method: str,
                                                                       steps: int) -> None:
    """Distillation and reflow of a latent run train on its latents (pairs of latents for regression and reflow),
    and the student keeps the autoencoder: it samples images through the decoder."""
    from noisecraft.runs.reflow import PAIRS_FILE, Pairs

    out = tmp_path / method
    if method == "reflow":
        nc.reflow(runs / "plain", out, pairs=16, max_steps=2, batch_size=8, progress=False)
    else:
        nc.distill(runs / "plain", out, method, steps, max_steps=2, batch_size=8, progress=False,
                   **({"pairs": 16} if method == "regression" else {}))
    student = nc.load_run(out)
    assert student.config.latent == nc.load_run(runs / "plain").config.latent
    assert student.sample_shape == (2, 16, 16)
    assert student.sample(2).shape == (2, 1, 32, 32)
    if method in ("regression", "reflow"):
        assert Pairs.load(out / PAIRS_FILE).x.shape == (16, 2, 16, 16)


def test_a_different_autoencoder_is_refused(runs: Path, tmp_path: Path) -> None:
    moved = tmp_path / "runs"
    shutil.copytree(runs, moved)
    for run in ("plain", "cond"):  # the config names the autoencoder by its absolute path: point it at the copy
        text = (moved / run / "config.yaml").read_text().replace(str((runs / "vae").resolve()), str(moved / "vae"))
        (moved / run / "config.yaml").write_text(text)
    nc.load_run(moved / "plain")  # the same weights in another folder are accepted
    shutil.rmtree(moved / "vae")
    shutil.copytree(runs / "other", moved / "vae")
    with pytest.raises(ValueError, match=r"has digest [0-9a-f]{16}, but this run was trained on .* digest"):
        nc.load_run(moved / "plain")
    with pytest.raises(ValueError, match="digest"):
        train(None, moved / "plain", resume=True, max_steps=3, progress=False)


def test_latent_sampling_is_deterministic_per_seed_and_batch_size_invariant(runs: Path) -> None:
    pipe = nc.load_run(runs / "plain", eval_batch=4)
    big = pipe.sample(7, steps=4, seed=3)
    assert torch.equal(pipe.sample(7, steps=4, seed=3), big)
    assert torch.equal(pipe.sample(3, steps=4, seed=3), big[:3])  # bit for bit, as pixel sampling
    assert not torch.equal(pipe.sample(3, steps=4, seed=4), big[:3])


def test_class_guidance_decodes_too(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond")
    x = pipe.sample(2, steps=3, label=4, guidance=2.0)
    assert x.shape == (2, 1, 32, 32)
    parts = pipe.sample_parts([Part(1, 0, 1), Part(2, 5, 7)], steps=3, guidance=2.0)
    assert [p.shape for p in parts] == [(1, 1, 32, 32), (2, 1, 32, 32)]


def test_likelihood_scores_the_latents(runs: Path) -> None:
    from noisecraft.data import DataConfig

    pipe = nc.load_run(runs / "plain")
    images = DataConfig(name="digits32").load().x[:2]
    result = pipe.likelihood(images, probes=1, rtol=1e-3, atol=1e-3)
    same = pipe.likelihood(pipe.codec.encode(images), probes=1, rtol=1e-3, atol=1e-3)
    assert torch.allclose(torch.as_tensor(result.log_prob), torch.as_tensor(same.log_prob))


def test_latent_restoration_returns_images_defaults_to_ddnm_and_refuses_the_reverse_sde_from_y(runs: Path) -> None:
    from noisecraft.guide.measurements import Identity, measure

    pipe = nc.load_run(runs / "plain")
    small = torch.zeros(1, 16, 16)
    for method in ("ddnm", "dps"):  # and mmps, below
        assert pipe.upscale(small, factor=2, method=method, n=2, steps=2).shape == (2, 1, 32, 32)
    ddnm = pipe.denoise(torch.zeros(1, 32, 32), 0.2, method="ddnm", n=1, steps=2)
    assert ddnm.shape == (1, 1, 32, 32)
    assert torch.equal(pipe.denoise(torch.zeros(1, 32, 32), 0.2, n=1, steps=2), ddnm)  # the latent default
    identity = measure(Identity(), torch.zeros(1, 1, 32, 32))
    assert pipe.restore(identity, "dps", n=1, steps=2).shape == (1, 1, 32, 32)
    assert torch.equal(pipe.restore(identity, n=1, steps=2), pipe.restore(identity, "ddnm", n=1, steps=2))
    assert pipe.upscale(small, factor=2, method="mmps", n=1, steps=2).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="needs a pixel-space run"):
        pipe.denoise(torch.zeros(1, 32, 32), 0.2, method="posterior")  # the reverse SDE from y needs a noisy x_t


class PoolVAE:
    """A fixed linear image "autoencoder" with orthonormal rows: encode x -> P x = 2 avgpool_2(x), decode
    z -> P^T z = upsample_2(z) / 2 (nearest), so E(D(z)) = z."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = 2 * torch.nn.functional.avg_pool2d(x, 2)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(z, scale_factor=2, mode="nearest") / 2


def _pool_latent_pipeline(scale: float, prior: GaussianMixture | None = None) -> Pipeline:
    """A latent "run" on 16x16 images: PoolVAE with scaling factor `scale`, scaled latents (1, 8, 8) ~ `prior`
    (default N(0, I)) and their exact denoiser as the network."""
    from noisecraft.analysis.oracle import gaussian

    codec = LatentCodec(PoolVAE(), scale, (1, 16, 16), (1, 8, 8), "0" * 16, "pooling", clip=None)
    config = RunConfig(sample=SolverConfig(solver="ddpm", steps=50))
    exact = (prior or gaussian(torch.zeros(64), torch.eye(64))).denoiser(config.loss.schedule)
    return Pipeline(config, None, (1, 8, 8), True, network=lambda z, t: exact(z.flatten(1), t).reshape(z.shape),
                    codec=codec)


def _within_blocks(z: torch.Tensor) -> torch.Tensor:
    """z (n, 1, 8, 8) minus the mean of each of its 2x2 blocks."""
    blocks = z.double().reshape(z.shape[0], 1, 4, 2, 4, 2)
    return (blocks - blocks.mean((3, 5), keepdim=True)).reshape(z.shape)


def test_latent_super_resolution_samples_the_known_posterior_through_a_linear_decoder() -> None:
    """x4 super-resolution of 16x16 images through the pooling codec: A(D(z)) = avgpool_2(z) / (2 s), so y fixes
    the 2x2 block means of z and, the prior being N(0, I), leaves the deviations within the blocks independent of
    them: the posterior is z = 2 s upsample(y) + (the prior's deviations). DDNM through the codec must fit y
    exactly and sample the deviations as the prior does (bit for bit those of the unguided draw of the same seed,
    the sampler being the same); DPS must approach y as its step grows, changing only the block means."""
    from noisecraft.guide.measurements import AvgPool

    pipe = _pool_latent_pipeline(1.7)
    z_true = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    A = AvgPool(4)
    y = A(pipe.codec.decode(z_true))[0]  # (1, 4, 4)
    prior = pipe.sample(64, seed=1)
    x = pipe.upscale(y, factor=4, method="ddnm", n=64, seed=1)
    assert x.shape == (64, 1, 16, 16)
    assert torch.allclose(A(x), y.expand(64, 1, 4, 4), atol=1e-5)
    deviations = _within_blocks(pipe.codec.encode(x))
    assert torch.allclose(deviations, _within_blocks(pipe.codec.encode(prior)), atol=1e-5)
    assert float(deviations.var()) > 0.5  # the unobserved part is sampled, not collapsed
    residual = {zeta: float((A(pipe.upscale(y, 4, "dps", n=64, seed=1, zeta=zeta)) - y).flatten(1).norm(dim=1).mean())
                for zeta in (10.0, 100.0)}
    unguided = float((A(prior) - y).flatten(1).norm(dim=1).mean())
    assert residual[100.0] < residual[10.0] < unguided and residual[100.0] < 0.2 * unguided
    x_dps = pipe.upscale(y, 4, "dps", n=64, seed=1, zeta=100.0)
    assert torch.allclose(_within_blocks(pipe.codec.encode(x_dps)), deviations, atol=1e-4)
    # the codec's scale matters: a projection that forgot s in the encoder would shrink the deviations by 1 / s
    wrong = replace(pipe, codec=replace(pipe.codec, scaling_factor=1.0))
    assert not torch.allclose(_within_blocks(wrong.codec.encode(x)), deviations, atol=1e-2)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_latent_dps_moves_the_decoded_image_as_pixel_dps_moves_the_image(scale: float) -> None:
    """DecodedDPS measures zeta in pixels: through the pooling codec, whose decoder z -> upsample(z / s) / 2 has
    orthogonal columns of gain 1 / s, the decoded latent step equals pixel DPS's step for the same zeta, at any s
    (2x2 pooling's A^T r lies in the decoder's range). Unnormalised, it would be 1 / s^2 times it."""
    from noisecraft.guide.inverse import dps
    from noisecraft.guide.measurements import AvgPool, Measurement
    from noisecraft.runs.latent import DecodedDPS

    codec = LatentCodec(PoolVAE(), scale, (1, 16, 16), (1, 8, 8), "0" * 16, "pooling", clip=None)
    schedule = RunConfig().loss.schedule
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    meas = Measurement(AvgPool(2), torch.randn(1, 8, 8, generator=g, dtype=torch.float64))

    def identity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    x = codec.decode_unclipped(z)
    latent_step = codec.decode_unclipped(DecodedDPS(identity, meas, codec, schedule, zeta=0.7)(z, 0.5)) - x
    pixel_step = dps(identity, meas, schedule, zeta=0.7)(x, 0.5) - x
    assert float(pixel_step.abs().max()) > 1e-3
    assert torch.allclose(latent_step, pixel_step, rtol=1e-9, atol=1e-12)


def test_latent_moment_matching_samples_the_exact_gaussian_posterior() -> None:
    """Correlated Gaussian latents, the linear pooling decoder and a noisy x4 pooling of the image: the posterior
    of z given y is Gaussian in closed form (the Kalman update with M = the matrix of z -> A(D(z))), and moment
    matching through the linearised decoder is exact for it, so its samples' mean is the posterior mean up to
    Monte Carlo error, and their spread is the posterior's up to the sampler's own deficit (the same ratio as its
    unguided samples have to the prior's)."""
    from noisecraft.analysis.oracle import gaussian
    from noisecraft.guide.measurements import AvgPool

    g = torch.Generator().manual_seed(3)
    root = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
    cov = root @ root.T + 0.3 * torch.eye(64, dtype=torch.float64)
    mu = 0.5 * torch.randn(64, generator=g, dtype=torch.float64)
    prior = gaussian(mu, cov)
    pipe = _pool_latent_pipeline(1.7, prior)
    A, sigma_y, n = AvgPool(4), 0.05, 400
    M = torch.stack([A(pipe.codec.decode(e.reshape(1, 1, 8, 8))).flatten() for e in torch.eye(64, dtype=torch.float64)], 1)
    y = M @ prior.sample(1, torch.Generator().manual_seed(0))[0][0]
    y = y + sigma_y * torch.randn(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    gain = cov @ M.T @ torch.linalg.inv(M @ cov @ M.T + sigma_y**2 * torch.eye(16, dtype=torch.float64))
    post_mean, post_cov = mu + gain @ (y - M @ mu), cov - gain @ M @ cov
    z = pipe.codec.encode(pipe.upscale(y.reshape(1, 4, 4).float(), 4, "mmps", n=n, seed=1, sigma=sigma_y))
    z = z.double().flatten(1)
    monte_carlo = math.sqrt(float(torch.trace(post_cov)) / n)
    assert float((z.mean(0) - post_mean).norm()) < 2 * monte_carlo < 0.2 * float((post_mean - mu).norm())
    unguided = pipe.codec.encode(pipe.sample(n, seed=1)).double().flatten(1)
    deficit = float(torch.trace(torch.cov(unguided.T)) / torch.trace(cov))
    assert float(torch.trace(torch.cov(z.T)) / torch.trace(post_cov)) == pytest.approx(deficit, abs=0.05)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A latent run on the 8x8 digits whose autoencoder is trained enough (100 steps) to reconstruct them roughly."""
    root = tmp_path_factory.mktemp("latent_sr")
    cfg = vae_config("digits", max_steps=100, batch_size=16, warmup_steps=5, lr=1e-2)
    train_vae(cfg.model_copy(update={"model": VAEConfig(block_channels=[8, 16], latent_channels=2)}), root / "vae",
              progress=False)
    raw = preset_config("digits", "edm", max_steps=2, batch_size=8, checkpoint_every=2).model_dump(mode="json")
    raw["model"].update(TINY_UNET)
    train(latent_run(config_from_dict(raw), root / "vae"), root / "run", progress=False)
    return root / "run"


def test_latent_super_resolution_fits_the_measurement_better_than_an_unguided_sample(digits_run: Path) -> None:
    from noisecraft.data import DataConfig
    from noisecraft.guide.measurements import AvgPool

    pipe = nc.load_run(digits_run)
    A = AvgPool(2)
    y = A(DataConfig(name="digits").load().x[:1])[0]  # (1, 4, 4)

    def residual(x: torch.Tensor) -> torch.Tensor:
        return (A(x) - y).flatten(1).norm(dim=1)

    unguided = residual(pipe.sample(4, steps=10, seed=0))
    ddnm = pipe.upscale(y, factor=2, n=4, steps=10, seed=0)  # the default method
    assert ddnm.shape == (4, 1, 8, 8) and ddnm.abs().max() <= 1.0
    assert float(residual(ddnm).max()) < 0.6 * float(unguided.mean())
    dps = pipe.upscale(y, factor=2, method="dps", n=4, steps=10, seed=0, zeta=10.0)
    assert float(residual(dps).mean()) < float(unguided.mean())
    mmps = pipe.upscale(y, factor=2, method="mmps", n=4, steps=10, seed=0)
    assert float(residual(mmps).mean()) < float(unguided.mean())


def test_latent_mask_keeps_a_position_only_when_its_whole_block_is_known() -> None:
    codec = LatentCodec(None, 1.0, (1, 8, 8), (3, 2, 2), "0" * 16)
    mask = torch.ones(1, 8, 8)
    mask[0, 0, 5] = 0  # one unknown pixel in the top-right block
    mask[0, 4:, :4] = 0  # the bottom-left block unknown
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(codec.latent_mask(mask), expected.expand(3, 2, 2))


@pytest.mark.parametrize("method", ["repaint", "replacement"])
def test_latent_inpainting_decodes_and_keeps_the_known_pixels(runs: Path, method: str) -> None:
    from noisecraft.data import DataConfig

    pipe = nc.load_run(runs / "plain")
    image = DataConfig(name="digits32").load().x[0]
    mask = torch.ones(32, 32)
    mask[:, 16:] = 0
    x = pipe.inpaint(image, mask, method=method, n=2, steps=3, jump_length=1, jump_count=1)
    assert x.shape == (2, 1, 32, 32)
    assert torch.equal(x[:, :, :, :16], image[None, :, :, :16].expand(2, -1, -1, -1))
    assert torch.equal(x, pipe.inpaint(image, mask, method=method, n=2, steps=3, jump_length=1, jump_count=1))


def test_cli_trains_a_latent_run_and_samples_it(runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", "digits32", "--latent", str(runs / "nope"), "--steps", "1",
                              "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "is not an autoencoder run" in res.output
    res = runner.invoke(app, ["train", "--data", "digits", "--latent", str(runs / "vae"), "--steps", "1",
                              "--batch-size", "8", "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "takes images of shape (1, 32, 32)" in res.output
    res = runner.invoke(app, ["train", "--resume", "--latent", str(runs / "other"), "--run", str(runs / "plain")])
    assert res.exit_code == 2 and "--latent" in res.output
    res = runner.invoke(app, ["sample", str(runs / "plain"), "--n", "2", "--steps", "2", "--out",
                              str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (2, 1, 32, 32)


def test_eval_scores_a_latent_digits32_run_on_8x8(runs: Path, tmp_path: Path) -> None:
    import json

    from noisecraft.runs.evaluate import evaluate_run

    shutil.copytree(runs / "plain", tmp_path / "plain")
    result = evaluate_run(tmp_path / "plain", n=20, steps=2)
    assert result["n"] == 20 and math.isfinite(result["digits_fd"])
    assert json.loads((tmp_path / "plain" / "eval.json").read_text())["digits_fd"] == result["digits_fd"]
