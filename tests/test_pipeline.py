"""`nc.load_run(path)`: the Pipeline does from Python what the CLI does, to the bit, and checks its input first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.cli import app
from noisecraft.runs.config import config_from_dict, preset_config
from noisecraft.runs.train import train

runner = CliRunner()
TINY_UNET = dict(block_channels=[8, 16], attention=[False, False], layers_per_block=1)


def _train(root: Path, name: str, **model) -> Path:
    raw = preset_config("digits", "edm", max_steps=2, batch_size=16, checkpoint_every=2).model_dump(mode="json")
    raw["model"].update(TINY_UNET, **model)
    train(config_from_dict(raw), root / name, progress=False)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(root / "x.png")
    mask = np.full((8, 8), 255, np.uint8)
    mask[:, 4:] = 0
    Image.fromarray(mask).save(root / "m.png")
    return root


def _cli_npy(args: list[str], out: Path) -> np.ndarray:
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return np.load(out)


def test_sample_equals_the_cli_bitwise(runs: Path) -> None:
    pipe = nc.load_run(runs / "plain")
    x = pipe.sample(16, seed=0)
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32
    assert np.array_equal(x.numpy(), _cli_npy(["sample", str(runs / "plain"), "--n", "16", "--seed", "0"], runs / "a.npy"))
    # the run's stored sampler is the default on both sides; another seed gives other samples
    assert not torch.equal(x, pipe.sample(16, seed=1))
    assert torch.allclose(pipe.sample(4, seed=0), x[:4], atol=1e-5)  # sample i depends only on (seed, i)


def test_class_guided_sample_equals_the_cli_bitwise(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond")
    x = pipe.sample(4, steps=3, seed=2, label=7, guidance=3.0)
    cli = _cli_npy(["sample", str(runs / "cond"), "--n", "4", "--steps", "3", "--seed", "2", "--class", "7",
                    "--guidance", "3"], runs / "c.npy")
    assert np.array_equal(x.numpy(), cli)
    assert not torch.equal(x, pipe.sample(4, steps=3, seed=2, label=1, guidance=3.0))  # the label reaches the net


def test_inpainting_equals_the_cli_bitwise(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond")
    x = pipe.inpaint(runs / "x.png", runs / "m.png", n=2, steps=4, jump_length=2, jump_count=2)
    cli = _cli_npy(["inpaint", str(runs / "cond"), "--image", str(runs / "x.png"), "--mask", str(runs / "m.png"),
                    "--n", "2", "--steps", "4", "--jump-length", "2", "--jump-count", "2"], runs / "i.npy")
    assert np.array_equal(x.numpy(), cli)
    # the known half is kept: the completions agree with the image on the known pixels
    image = pipe.image(runs / "x.png")
    assert torch.allclose(x[:, :, :, :4], image[:, :, :, :4].expand(2, -1, -1, -1), atol=0.05)


def test_arrays_and_paths_are_the_same_input(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond")
    image = pipe.image(runs / "x.png")
    mask = np.ones((8, 8))
    mask[:, 4:] = 0
    a = pipe.inpaint(image[0], mask, method="replacement", n=2, steps=3)
    b = pipe.inpaint(runs / "x.png", runs / "m.png", method="replacement", n=2, steps=3)
    assert torch.equal(a, b)


def test_every_method_runs_and_returns_images(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond")
    small = torch.zeros(1, 4, 4)
    assert pipe.upscale(small, factor=2, n=2, steps=2).shape == (2, 1, 8, 8)
    assert pipe.denoise(runs / "x.png", sigma=0.2, n=3, steps=2).shape == (3, 1, 8, 8)
    assert pipe.denoise(runs / "x.png", sigma=0.2, method="mmps", n=1, steps=2).shape == (1, 1, 8, 8)
    den = pipe.denoiser(label=3, guidance=2.0)
    x = torch.randn(2, 1, 8, 8)
    assert den(x, torch.full((2,), 0.5)).shape == x.shape
    result = pipe.likelihood(torch.from_numpy(nc.data.load_digits_split("test")[0][:2]), probes=1, bin_width=2 / 16,
                             rtol=1e-3, atol=1e-3)
    assert result.log_prob.shape == (2,) and torch.isfinite(result.log_prob).all()


@pytest.mark.parametrize("call, message", [
    (lambda p: p.sample(0, label=1), "`n` must be >= 1"),
    (lambda p: p.sample(2), "class-conditional; choose what to draw with `label` K (0..9)"),
    (lambda p: p.sample(2, label=12), "unknown class 12"),
    (lambda p: p.sample(2, label=1, guidance=-1), "`guidance` must be a finite number >= 0"),
    (lambda p: p.sample(2, label=1, solver="dpm++9m"), "unknown solver 'dpm++9m'"),
    (lambda p: p.sample(2, label=1, threshold=1.5), "quantile in (0, 1)"),
    (lambda p: p.inpaint(torch.zeros(1, 4, 4), np.ones((8, 8))), "image has shape (1, 1, 4, 4)"),
    (lambda p: p.inpaint(torch.full((1, 8, 8), float("nan")), np.ones((8, 8))), "NaN or inf"),
    (lambda p: p.inpaint(torch.zeros(1, 8, 8), np.ones((4, 4))), "mask is 4x4 but the images are 8x8"),
    (lambda p: p.inpaint(torch.zeros(1, 8, 8), np.ones((8, 8)), method="magic"), "unknown inpainting method 'magic'"),
    (lambda p: p.upscale(torch.zeros(1, 4, 4), factor=3), "`factor` must be 2 or 4, got 3"),
    (lambda p: p.denoise(torch.zeros(1, 8, 8), sigma=0), "`sigma` must be > 0"),
    (lambda p: p.likelihood(torch.zeros(3, 2)), "has samples of shape (2,)"),
])
def test_bad_input_is_named_before_any_work(runs: Path, call, message: str, monkeypatch) -> None:
    pipe = nc.load_run(runs / "cond")
    calls = []
    monkeypatch.setattr(pipe.net, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError) as err:
        call(pipe)
    assert message in str(err.value)
    assert not calls  # nothing was evaluated


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a run directory"):
        nc.load_run(tmp_path)


def test_a_mistyped_solver_fails_when_the_config_is_built(tmp_path: Path) -> None:
    raw = preset_config("moons", "edm", max_steps=1).model_dump(mode="json")
    raw["sample"]["solver"] = "dpm++2n"
    with pytest.raises(ValueError, match=r"sample.*unknown solver 'dpm\+\+2n'"):
        config_from_dict(raw)
    raw["sample"].update(solver="pc", options={"snr": 0.1, "corector_steps": 2})
    with pytest.raises(ValueError, match="corector_steps"):
        config_from_dict(raw)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "corector_steps" in res.output
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


def _commands(group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*path, name)
        if hasattr(cmd, "commands"):  # a group
            yield from _commands(cmd, (*path, name))


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert {("train",), ("sample",), ("eval",), ("inpaint",), ("likelihood",), ("plot", "forward"),
            ("ddm", "fit"), ("tabular", "fit")} <= set(paths)
    for args in [(), *paths]:
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (args, res.output)


def test_the_free_memory_is_read_only_for_draws_that_could_not_fit(monkeypatch) -> None:
    """check_fits_on skips the (slow) query below ALWAYS_FITS and refuses above it when memory is short."""
    from noisecraft.runs import memory

    reads: list[str] = []
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": reads.append(str(device)) or 10)
    memory.check_fits_on(4, 1000)
    assert reads == []
    with pytest.raises(ValueError, match="`n` = 4 samples need about"):
        memory.check_fits_on(4, memory.ALWAYS_FITS + 1)
    assert reads == ["cpu"]


def test_sampling_runs_in_inference_mode_unless_the_denoiser_takes_gradients(runs: Path) -> None:
    """A plain or class-guided draw runs the network under torch.inference_mode and returns ordinary tensors
    (changed in place by a caller without error); an SDE solver's autograd schedule derivatives work there;
    classifier-free guidance too. Inverse problems, whose guidance differentiates the denoiser, keep autograd."""
    plain, cond = nc.load_run(runs / "plain"), nc.load_run(runs / "cond")
    modes: list[bool] = []
    for run in (plain, cond):
        run.sample(1, steps=0, label=None if run is plain else 0)  # the first draw's memory probe runs outside
        run.net.register_forward_pre_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    for x in (plain.sample(2, steps=2), plain.sample(2, solver="euler_maruyama", steps=3),
              cond.sample(2, steps=2, label=3, guidance=2.0)):
        assert not x.is_inference() and torch.isfinite(x).all()
        x.add_(1.0)  # an inference tensor would refuse this outside inference mode
    assert modes and all(modes)
    modes.clear()
    restored = plain.inpaint(runs / "x.png", runs / "m.png", method="dps", n=1, steps=2)
    assert torch.isfinite(restored).all() and modes and not any(modes)
    from noisecraft.guide.classifier import train_classifier

    images, labels = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    folder = train_classifier(images, labels, plain.schedule, steps=2, batch_size=16, width=8).save(runs / "clf")
    modes.clear()
    guided = plain.sample(2, steps=2, label=3, classifier=str(folder))  # the classifier's gradient needs autograd
    assert torch.isfinite(guided).all() and modes and not any(modes)
