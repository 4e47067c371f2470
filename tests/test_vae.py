"""The autoencoder of latent diffusion: shapes and dtypes at every size it accepts, the KL term against its
closed form, the scaling factor bringing the latents to unit std, exact resume, and the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.nets.vae import VAEConfig, kl_to_standard
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint
from noisecraft.runs.latent import codec_from_run
from noisecraft.runs.vae import load_vae, train_vae, vae_config

TINY = VAEConfig(block_channels=[8, 16], latent_channels=2)


def tiny_config(**train):
    cfg = vae_config("digits32", **{"max_steps": 4, "batch_size": 8, "checkpoint_every": 2, "warmup_steps": 1,
                                    **train})
    return cfg.model_copy(update={"model": TINY})


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    train_vae(tiny_config(), run, progress=False)
    return run


@pytest.mark.parametrize("size", [(8, 8), (16, 24), (32, 32), (40, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_decode_shapes_and_dtypes(size, dtype) -> None:
    torch.manual_seed(0)
    vae = VAEConfig(block_channels=[8, 16, 16], latent_channels=3).build(2).to(dtype)
    x = torch.rand(3, 2, *size, dtype=dtype) * 2 - 1
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (3, 3, size[0] // 4, size[1] // 4)
    assert vae.latent_shape((2, *size)) == (3, size[0] // 4, size[1] // 4)
    out = vae.decode(mean)
    assert out.shape == x.shape and out.dtype == mean.dtype == dtype


@pytest.mark.parametrize("size", [(8, 8), (16, 24), (40, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tiny_autoencoder_encodes_and_decodes_every_size_it_accepts(size, dtype) -> None:
    torch.manual_seed(0)
    vae = VAEConfig(kind="tiny", block_channels=[8, 8, 8], latent_channels=3).build(2).to(dtype)
    x = torch.rand(3, 2, *size, dtype=dtype) * 2 - 1
    code, logvar = vae.encode(x)
    assert logvar is None and code.shape == (3, 3, size[0] // 4, size[1] // 4) and code.dtype == dtype
    assert vae.latent_shape((2, *size)) == (3, size[0] // 4, size[1] // 4)
    out = vae.decode(code)
    assert out.shape == x.shape and out.dtype == dtype
    recon, _, _ = vae(x, torch.randn(code.shape, dtype=dtype))  # deterministic: the noise is not used
    assert torch.equal(recon, out)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(1, 2, 10, 8\)"):
        vae.encode(torch.zeros(1, 2, 10, 8, dtype=dtype))


def test_the_tiny_autoencoder_trains_and_its_point_code_is_penalised_by_the_kl_mean_term(tmp_path: Path) -> None:
    from noisecraft.data.digits import load_digits_split
    from noisecraft.nets.vae import vae_loss

    with pytest.raises(ValueError, match="block_channels must be equal"):
        VAEConfig(kind="tiny", block_channels=[8, 16]).build(1)
    vae = VAEConfig(kind="tiny", block_channels=[8, 8], latent_channels=2).build(1)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    total, mse, penalty = vae_loss(vae, x, torch.zeros(4, 2, 4, 4), kl_weight=0.5)
    code = vae.encode(x)[0]
    assert torch.allclose(penalty, 0.5 * code.square().mean())
    assert torch.allclose(total, mse + 0.5 * penalty)
    cfg = vae_config("digits32", max_steps=2, batch_size=8, warmup_steps=1, kind="tiny")
    assert cfg.model.kind == "tiny"
    train_vae(cfg.model_copy(update={"model": VAEConfig(kind="tiny", block_channels=[8, 8, 8], latent_channels=2)}),
              tmp_path / "tiny", progress=False)
    codec = codec_from_run(tmp_path / "tiny")  # the kind is read back from config.yaml
    assert codec.latent_shape == (2, 8, 8)
    images = torch.from_numpy(load_digits_split("train", 32)[0])
    assert float(codec.encode(images).double().std()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="unknown `kind` 'big'"):
        vae_config(kind="big")


def test_sizes_the_factor_does_not_divide_are_refused() -> None:
    vae = VAEConfig(block_channels=[8, 16, 16]).build(1)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(1, 1, 10, 8\)"):
        vae.encode(torch.zeros(1, 1, 10, 8))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, H, W\).*got \(1, 3, 8, 8\)"):
        vae.encode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="latents of shape"):
        vae.decode(torch.zeros(1, 2, 2, 2))


def test_kl_matches_the_monte_carlo_kl() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.tensor([0.7, -1.2]), torch.tensor([-0.5, 0.8])
    z = mean + (0.5 * logvar).exp() * torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(mean.double(), (0.5 * logvar).exp().double()).log_prob(z)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    assert float(kl_to_standard(mean, logvar)) == pytest.approx(float((log_q - log_p).mean()), abs=5e-3)


def test_scaling_factor_brings_the_latents_to_unit_std(vae_run: Path) -> None:
    from noisecraft.data import DataConfig

    config, _, _ = load_vae(vae_run)
    assert config.scaling_factor is not None and config.scaling_factor > 0
    codec = codec_from_run(vae_run)
    z = codec.encode(DataConfig(name="digits32").load().x)
    assert z.shape[1:] == (2, 16, 16)
    assert float(z.double().std()) == pytest.approx(1.0, abs=1e-5)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, vae_run: Path) -> None:
    train_vae(tiny_config(), tmp_path / "cut", stop_at=2, progress=False)
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step_00000002"
    with pytest.raises(ValueError, match="no scaling_factor"):
        load_vae(tmp_path / "cut")  # interrupted: not measured yet
    result = train_vae(None, tmp_path / "cut", resume=True, progress=False)
    assert result.step == 4
    full, _ = load_checkpoint(latest_checkpoint(vae_run / "checkpoints"))
    cut, _ = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))
    for key, value in full["ema"].items():
        assert torch.equal(value, cut["ema"][key]), key
    assert result.scaling_factor == load_vae(vae_run)[0].scaling_factor
    note = train_vae(None, tmp_path / "cut", resume=True, progress=False).note
    assert "finished at step 4" in note
    with pytest.raises(ValueError, match="must exceed the 4 steps"):
        train_vae(None, tmp_path / "cut", resume=True, max_steps=4, progress=False)
    longer = train_vae(None, tmp_path / "cut", resume=True, max_steps=5, progress=False)
    assert longer.step == 5 and longer.scaling_factor == load_vae(tmp_path / "cut")[0].scaling_factor


def test_fresh_run_refuses_a_trained_directory(vae_run: Path) -> None:
    with pytest.raises(ValueError, match="already holds a trained run"):
        train_vae(tiny_config(), vae_run, progress=False)


def test_cli_trains_and_names_bad_data(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["vae", "train", "--data", "nope", "--steps", "1", "--run", str(tmp_path / "v")])
    assert res.exit_code == 2 and "unknown data 'nope'" in res.output
    assert not (tmp_path / "v").exists()
    res = runner.invoke(app, ["vae", "train", "--data", "moons", "--steps", "1", "--run", str(tmp_path / "v")])
    assert res.exit_code == 2 and "takes images" in res.output
    res = runner.invoke(app, ["vae", "train", "--steps", "0", "--run", str(tmp_path / "v")])
    assert res.exit_code == 2 and "--steps" in res.output
    res = runner.invoke(app, ["vae", "train", "--kind", "big", "--steps", "1", "--run", str(tmp_path / "v")])
    assert res.exit_code == 2 and "--kind" in res.output and "'tiny'" in res.output
    assert not (tmp_path / "v").exists()


def test_digits32_is_the_bilinear_upsampling_and_to_digits8_inverts_it() -> None:
    from noisecraft.data import DataConfig
    from noisecraft.data.digits import load_digits_split, to_digits8

    small, labels = load_digits_split("test")
    big, same = load_digits_split("test", 32)
    assert big.shape == (500, 1, 32, 32) and (labels == same).all()
    up = torch.nn.functional.interpolate(torch.from_numpy(small).double(), size=32, mode="bilinear")
    assert torch.allclose(torch.from_numpy(big).double(), up, atol=1e-6)
    assert torch.allclose(to_digits8(big), torch.from_numpy(small), atol=1e-5)
    assert DataConfig(name="digits32").load().sample_shape == (1, 32, 32)
    with pytest.raises(ValueError, match=r"\(n, 1, 32, 32\)"):
        to_digits8(torch.zeros(2, 1, 8, 8))


def test_skimage32_is_patches_of_the_public_domain_photographs(tmp_path: Path) -> None:
    from noisecraft.data import DataConfig, heldout
    from noisecraft.data.scans import PHOTOS, load_source

    data = DataConfig(name="skimage32").load()
    assert data.sample_shape == (1, 32, 32) and data.labels is None and data.is_image
    assert -1 <= float(data.x.min()) and float(data.x.max()) <= 1
    camera = torch.from_numpy(load_source(PHOTOS[0])).float() * 2 - 1  # the cameraman, shorter side 128
    assert torch.allclose(data.x[0, 0], camera[:32, :32])  # the first window of the first image
    test, bin_width = heldout("skimage32")
    assert bin_width is None and torch.allclose(test[0, 0].float(), camera[:32, -32:])  # its right strip is held out
    assert not any(torch.equal(test[0, 0].float(), patch[0]) for patch in data.x)
    result = train_vae(vae_config("skimage32", max_steps=2, batch_size=8, warmup_steps=1).model_copy(
        update={"model": TINY}), tmp_path / "v", progress=False)
    codec = codec_from_run(tmp_path / "v")
    assert codec.image_shape == (1, 32, 32) and codec.latent_shape == (2, 16, 16)
    assert float(codec.encode(data.x).double().std()) == pytest.approx(1.0, rel=1e-4)
    assert result.scaling_factor == codec.scaling_factor
