"""`noisecraft grid optimize` on a tiny trained run: the grid is kept in the run, and `sample` (CLI and Pipeline)
uses it for that solver and step count, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft.cli import app
from noisecraft.runs.config import config_from_dict, preset_config
from noisecraft.runs.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    raw = preset_config("moons", "ddpm", max_steps=3, batch_size=32, checkpoint_every=3).model_dump(mode="json")
    raw["model"].update(width=16, depth=1)
    raw["data"]["n"] = 256
    path = tmp_path_factory.mktemp("grid") / "moons"
    train(config_from_dict(raw), path, progress=False)
    return path


def test_optimize_keeps_the_grid_and_sample_uses_it(run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["grid", "optimize", str(run), "--nfe", "5", "--solver", "dpm++2m", "--batch", "32"])
    assert res.exit_code == 0, res.output
    stored = json.loads((run / "grids.json").read_text())["dpm++2m/4"]
    assert stored["method"] == "fd" and stored["nfe"] == 5  # the default method and len(stored["times"]) == 5
    assert np.all(np.diff(stored["times"]) < 0)

    pipe = nc.load_run(run)
    assert pipe.solver("dpm++2m", 4).grid == stored["times"]  # no grid given: the stored one
    assert pipe.solver("dpm++2m", 4, grid="karras").grid == "karras"  # a grid given wins
    assert isinstance(pipe.solver("dpm++2m", 5).grid, str)  # another step count: the config's grid
    assert "optimised grid (fd, NFE 5)" in pipe.grid_source("dpm++2m", 4)

    res = runner.invoke(app, ["sample", str(run), "--solver", "dpm++2m", "--steps", "4", "--n", "8",
                              "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0 and "optimised grid (fd, NFE 5)" in res.output, res.output
    x = pipe.sample(8, "dpm++2m", 4, seed=0)
    assert np.array_equal(np.load(tmp_path / "s.npy"), x.numpy())
    assert np.array_equal(x.numpy(), pipe.sample(8, "dpm++2m", 4, seed=0, grid=stored["times"]).numpy())
    assert not np.array_equal(x.numpy(), pipe.sample(8, "dpm++2m", 4, seed=0, grid="log_snr").numpy())


def test_ays_uses_the_run_data_and_a_second_grid_is_merged(run: Path) -> None:
    res = runner.invoke(app, ["grid", "optimize", str(run), "--nfe", "5", "--solver", "dpm++2s", "--method", "ays",
                              "--batch", "32"])
    assert res.exit_code == 0, res.output
    grids = json.loads((run / "grids.json").read_text())
    assert grids["dpm++2s/2"]["method"] == "ays" and len(grids["dpm++2s/2"]["times"]) == 3


def test_bad_options_exit_2_naming_them(run: Path) -> None:
    res = runner.invoke(app, ["grid", "optimize", str(run), "--nfe", "2", "--solver", "dpm++2s"])
    assert res.exit_code == 2 and "--nfe must be an integer >= 3" in res.output
    res = runner.invoke(app, ["grid", "optimize", str(run), "--method", "best"])
    assert res.exit_code == 2 and "unknown --method 'best'" in res.output
    res = runner.invoke(app, ["grid", "optimize", str(run / "nope")])
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_a_rewritten_grids_file_is_read_again_at_once(run: Path) -> None:
    """read_grids parses a grids file once per version: a rewrite, even within the clock's granularity, is seen."""
    from noisecraft.io import write_text_atomic
    from noisecraft.runs.grids import StoredGrid, grid_key, read_grids

    def write(times: list[float]) -> None:
        entry = StoredGrid("ddim", 2, "fd", 3, times, 0.1, 0.2, None, None)
        text = json.dumps({grid_key("ddim", 2): entry.__dict__})
        write_text_atomic(run / "g" / "grids.json", text)

    (run / "g").mkdir(exist_ok=True)
    write([0.9, 0.5, 0.1])
    assert read_grids(run / "g")["ddim/2"].times == [0.9, 0.5, 0.1]
    write([0.8, 0.5, 0.1])  # the same size, written within the same clock tick
    assert read_grids(run / "g")["ddim/2"].times == [0.8, 0.5, 0.1]
    (run / "g" / "grids.json").unlink()
    assert read_grids(run / "g") == {}
