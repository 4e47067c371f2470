"""Recipe PNGs (noisecraft.runs.recipe): the generation parameters ride in a PNG text chunk, read back safely, and
`noisecraft sample RUN --from-png` draws the same pixels again."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.cli import app
from noisecraft.runs import recipe as R
from tests.test_pipeline import _train

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    return root


def test_tile_and_untile_are_inverse_and_quantise_exactly() -> None:
    x = torch.rand(7, 3, 4, 5) * 2 - 1
    sheet = R.tile(x, columns=3)
    assert sheet.shape == (3 * 4 + 2, 3 * 5 + 2, 3) and sheet.dtype == np.uint8
    assert (sheet[4] == R.GAP_VALUE).all() and (sheet[-4:, -5:] == R.GAP_VALUE).all()  # gaps; the empty cells
    back = R.untile(sheet, 7, (3, 4, 5), columns=3)
    assert np.array_equal(back, R.to_uint8(x))
    assert np.array_equal(R.to_uint8(torch.tensor([[[[-1.0, 0.0, 1.0]]]])), [[[[0], [128], [255]]]])


def test_png_round_trip_and_the_same_pixels_again(runs: Path) -> None:
    pipe = nc.load_run(runs / "cond", eval_batch=8)
    recipe = R.recipe_of(pipe, "cond", 5, steps=3, seed=4, label=6, guidance=2.0)
    assert recipe.solver == pipe.config.sample.solver and recipe.digest == pipe.digest  # defaults resolved
    x = R.draw(pipe, recipe)
    data = R.png_bytes(x, recipe)
    assert R.read_recipe(data) == recipe
    image = Image.open(io.BytesIO(data))
    assert "Class: 6" in image.text["parameters"] and "CFG scale: 2" in image.text["parameters"]
    pixels = R.untile(np.asarray(image)[..., None], 5, (1, 8, 8))
    assert np.array_equal(pixels, R.to_uint8(pipe.sample(5, steps=3, seed=4, label=6, guidance=2.0)))


def test_foreign_truncated_and_malformed_pngs_are_named(tmp_path: Path) -> None:
    plain = io.BytesIO()
    Image.new("L", (8, 8)).save(plain, format="PNG")
    with pytest.raises(ValueError, match="carries no noisecraft parameters"):
        R.read_recipe(plain.getvalue())
    with pytest.raises(ValueError, match="not a readable PNG"):
        R.read_recipe(plain.getvalue()[:40])
    jpeg = io.BytesIO()
    Image.new("L", (8, 8)).save(jpeg, format="JPEG")
    with pytest.raises(ValueError, match="is a JPEG file"):
        R.read_recipe(jpeg.getvalue())
    for text in ("{not json", json.dumps({"model": "m", "n": 0, "solver": "ddim", "steps": 2, "grid": "uniform",
                                          "seed": 0}), json.dumps({"__class__": "os.system"})):
        info = PngImagePlugin.PngInfo()
        info.add_text(R.CHUNK, text)
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, format="PNG", pnginfo=info)
        with pytest.raises(ValueError, match="parameters are malformed"):
            R.read_recipe(buffer.getvalue())
    with pytest.raises(ValueError, match="does not exist"):
        R.read_recipe(tmp_path / "nothing.png")


def test_cli_from_png_draws_the_same_file_and_refuses_other_weights(runs: Path, tmp_path: Path) -> None:
    pipe = nc.load_run(runs / "plain", eval_batch=8)
    recipe = R.recipe_of(pipe, "plain", 6, steps=3, seed=9)
    R.write_png(R.draw(pipe, recipe), recipe, tmp_path / "x.png")
    res = runner.invoke(app, ["sample", str(runs / "plain"), "--from-png", str(tmp_path / "x.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x_again.png").read_bytes() == (tmp_path / "x.png").read_bytes()
    res = runner.invoke(app, ["sample", str(runs / "plain"), "--from-png", str(tmp_path / "x.png"),
                              "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "x.npy"), R.draw(pipe, recipe).numpy())
    res = runner.invoke(app, ["sample", str(runs / "cond"), "--from-png", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "other weights" in res.output
    res = runner.invoke(app, ["sample", str(runs / "plain"), "--from-png", str(tmp_path / "x.png"), "--steps", "4"])
    assert res.exit_code == 2 and "drop --steps" in res.output
