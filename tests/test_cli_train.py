"""The train / sample / eval commands end to end on a tiny run, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.runs.config import preset_config

runner = CliRunner()


def _tiny_config(path: Path, data: str) -> Path:
    cfg = preset_config(data, "ddpm", max_steps=3, batch_size=16, checkpoint_every=3)
    raw = cfg.model_dump(mode="json")
    raw["model"].update(width=16, depth=1, block_channels=[8, 16], attention=[False, False], layers_per_block=1)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_sample_eval_digits(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(_tiny_config(tmp_path / "c.yaml", "digits")), "--run", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    res = runner.invoke(app, ["sample", str(run), "--steps", "3", "--n", "8", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (8, 1, 8, 8) and x.min() >= -1 and x.max() <= 1  # the data's range
    res = runner.invoke(app, ["sample", str(run), "--steps", "2", "--n", "4"])
    assert res.exit_code == 0 and (run / "samples.png").is_file() and (run / "samples.npy").is_file()
    res = runner.invoke(app, ["sample", str(run), "--steps", "2", "--n", "4", "--threshold", "0.99",
                              "--out", str(tmp_path / "t.npy")])
    assert res.exit_code == 0, res.output
    assert np.abs(np.load(tmp_path / "t.npy")).max() <= 1
    res = runner.invoke(app, ["sample", str(run), "--n", "4", "--threshold", "1.5"])
    assert res.exit_code == 2 and "quantile in (0, 1)" in res.output
    res = runner.invoke(app, ["eval", str(run), "--n", "20", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert "digits-FD" in res.output and "floor" in res.output and (run / "eval.json").is_file()


def test_train_2d_with_resume_and_scatter(tmp_path: Path) -> None:
    run = tmp_path / "moons"
    cfg = _tiny_config(tmp_path / "c.yaml", "moons")
    assert runner.invoke(app, ["train", "--config", str(cfg), "--run", str(run), "--steps", "2"]).exit_code == 0
    res = runner.invoke(app, ["train", "--run", str(run), "--resume"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", str(run), "--steps", "2", "--n", "50", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000


def test_cli_errors_name_the_bad_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 2\n  batchsize: 3\n")
    res = runner.invoke(app, ["train", "--config", str(bad), "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unknown key 'train.batchsize'" in res.output
    res = runner.invoke(app, ["train", "--data", "nope", "--steps", "1", "--run", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "unknown data 'nope'" in res.output
    res = runner.invoke(app, ["sample", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a run directory" in res.output
