"""The guided sample, inpaint, upscale and denoise commands end to end on a tiny class-conditional run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.runs.config import preset_config

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cond")
    cfg = preset_config("digits", "edm", max_steps=2, batch_size=16, checkpoint_every=2)
    raw = cfg.model_dump(mode="json")
    raw["model"].update(block_channels=[8, 16], attention=[False, False], layers_per_block=1, num_classes=10,
                        label_dropout=0.2)
    (root / "c.yaml").write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["train", "--config", str(root / "c.yaml"), "--run", str(root / "run")])
    assert res.exit_code == 0, res.output
    gray = np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)
    Image.fromarray(gray).save(root / "x.png")
    mask = np.full((8, 8), 255, np.uint8)
    mask[:, 4:] = 0
    Image.fromarray(mask).save(root / "m.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "small.png")
    return root


def _ok(args: list[str], out: Path) -> None:
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.stat().st_size > 0


def test_commands_write_side_by_side_pngs(run: Path) -> None:
    r = str(run / "run")
    _ok(["sample", r, "--class", "7", "--guidance", "3", "--steps", "2", "--n", "4"], run / "s.png")
    _ok(["sample", r, "--class", "7", "--guidance", "3", "--threshold", "0.995", "--steps", "2", "--n", "4"],
        run / "st.png")
    _ok(["inpaint", r, "--image", str(run / "x.png"), "--mask", str(run / "m.png"), "--steps", "4", "--n", "2",
         "--jump-length", "2", "--jump-count", "2"], run / "i.png")
    _ok(["inpaint", r, "--image", str(run / "x.png"), "--mask", str(run / "m.png"), "--method", "mmps",
         "--steps", "2", "--n", "2"], run / "i2.png")
    _ok(["upscale", r, "--image", str(run / "small.png"), "--factor", "2", "--steps", "2", "--n", "2"], run / "u.png")
    _ok(["denoise", r, "--image", str(run / "x.png"), "--sigma", "0.2", "--steps", "2", "--n", "2"], run / "d.png")


@pytest.mark.parametrize("args, message", [
    (["sample", "{r}", "--class", "11"], "unknown class 11"),
    (["sample", "{r}", "--class", "3", "--guidance", "-2"], "--guidance must be a finite number >= 0, got -2"),
    (["sample", "{r}", "--class", "3", "--guidance", "2", "--threshold", "0"], "quantile in (0, 1)"),
    (["inpaint", "{r}", "--image", "{d}/x.png", "--mask", "{d}/small.png"], "mask is 4x4 but the images are 8x8"),
    (["inpaint", "{r}", "--image", "{d}/x.png", "--mask", "{d}/m.png", "--method", "magic"], "unknown inpainting method 'magic'"),
    (["upscale", "{r}", "--image", "{d}/x.png", "--factor", "2"], "is 8x8; expected 4x4"),
    (["upscale", "{r}", "--image", "{d}/small.png", "--factor", "3"], "--factor must be 2 or 4, got 3"),
    (["denoise", "{r}", "--image", "{d}/x.png", "--sigma", "0"], "--sigma must be > 0"),
])
def test_bad_input_is_named(run: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, [a.format(r=run / "run", d=run) for a in args])
    assert res.exit_code == 2 and message in res.output, res.output
