"""A run directory keeps its data: checkpoints are found from their step folders, a trained run is never
overwritten by accident, a finished run is not trained further, one process at a time holds a run, pointers
never lead outside it, outputs are replaced atomically, and damaged checkpoints give one clear error or fall
back to the newest intact one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.nets import NetConfig
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from noisecraft.runs.config import RunConfig, load_config, preset_config
from noisecraft.runs.pipeline import load_run
from noisecraft.runs.train import train

runner = CliRunner()


def tiny(**train_kw) -> RunConfig:
    kw = {"max_steps": 4, "batch_size": 32, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 1, **train_kw}
    return preset_config("moons", "v", **kw).model_copy(update={"model": NetConfig(width=16, depth=1)})


def _steps(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


def _model(path: Path) -> dict:
    return load_checkpoint(path)[0]["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4, copied by the tests that change it."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    train(tiny(), run, progress=False)
    return run


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


# -- 1: checkpoints come from the step folders; no overwrite without `overwrite` -------------------
@pytest.mark.parametrize("pointer", ["missing", "stale"])
def test_a_trained_run_without_a_good_latest_pointer_is_still_trained(trained: Path, tmp_path: Path,
                                                                      pointer: str) -> None:
    run = _copy(trained, tmp_path / "run")
    before = _model(run / "checkpoints" / "step_00000004")
    if pointer == "missing":
        (run / "checkpoints" / "latest").unlink()
    else:
        (run / "checkpoints" / "latest").write_text("step_00000001")
    assert latest_checkpoint(run / "checkpoints").name == "step_00000004"
    with pytest.raises(ValueError, match="already holds a trained run.*`overwrite`"):
        train(tiny(), run, progress=False)
    assert _same(_model(run / "checkpoints" / "step_00000004"), before)
    assert load_run(run).step == 4
    assert train(None, run, resume=True, progress=False).step == 4


def test_overwrite_clears_the_old_run_first(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    (run / "checkpoints" / "step_00000007").mkdir()  # a stray later folder must not outlive the overwrite
    result = train(tiny(max_steps=2), run, overwrite=True, progress=False)
    assert result.step == 2 and _steps(run) == ["step_00000002"]
    steps = [json.loads(s)["step"] for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_cli_train_refuses_a_trained_run_unless_overwrite(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    cfg = tmp_path / "c.yaml"
    tiny(max_steps=2).save(cfg)
    res = runner.invoke(app, ["train", "--config", str(cfg), "--run", str(run)])
    assert res.exit_code == 2 and "already holds a trained run" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, ["train", "--config", str(cfg), "--run", str(run), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _steps(run) == ["step_00000002"]


# -- 2: a finished run is not trained further; extending is explicit; conflicts are errors -------
def test_resuming_a_finished_run_does_nothing(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    final = _model(run / "checkpoints" / "step_00000004")
    for _ in range(2):
        result = train(None, run, resume=True, progress=False)
        assert result.step == 4 and "finished at step 4" in result.note and "`max_steps`" in result.note
    assert _steps(run) == ["step_00000002", "step_00000004"]
    assert _same(_model(run / "checkpoints" / "step_00000004"), final)


def test_extending_a_run_is_explicit_and_recorded(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    with pytest.raises(ValueError, match="`max_steps` 3 .* 4 steps"):
        train(None, run, resume=True, max_steps=3, progress=False)
    assert train(None, run, resume=True, max_steps=6, progress=False).step == 6
    assert load_config(run / "config.yaml").train.max_steps == 6
    assert _steps(run) == ["step_00000004", "step_00000006"]


def test_a_spent_time_budget_is_finished(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train(tiny(max_steps=None, minutes=0.0005, checkpoint_every=1000), run, progress=False)
    again = train(None, run, resume=True, progress=False)
    assert again.step == first.step and "finished" in again.note
    assert train(None, run, resume=True, max_steps=first.step + 2, progress=False).step == first.step + 2


def test_cli_resume_options_extend_or_conflict(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    res = runner.invoke(app, ["train", "--run", str(run), "--resume"])
    assert res.exit_code == 0 and "finished at step 4; pass --steps" in res.output, res.output
    for option, value in [("--lr", "0.5"), ("--data", "8gaussians"), ("--batch-size", "8"), ("--seed", "3"),
                          ("--preset", "edm"), ("--loss", "ddpm"), ("--minutes", "2")]:
        res = runner.invoke(app, ["train", "--run", str(run), "--resume", option, value])
        assert res.exit_code == 2 and option in res.output, (option, res.output)
    other = tmp_path / "other.yaml"
    tiny(lr=0.5).save(other)
    res = runner.invoke(app, ["train", "--run", str(run), "--resume", "--config", str(other)])
    assert res.exit_code == 2 and "--config" in res.output and "train.lr" in res.output, res.output
    same = tmp_path / "same.yaml"
    tiny(seed=0).save(same)
    res = runner.invoke(app, ["train", "--run", str(run), "--resume", "--lr", "0.001", "--config", str(same),
                              "--steps", "5"])
    assert res.exit_code == 0 and "trained 5 steps" in res.output, res.output
    assert _steps(run) == ["step_00000004", "step_00000005"]


# -- 3: one process per run directory ------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_process_on_a_run_fails_at_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError) as err:
            train(tiny(max_steps=1), run, progress=False)
        assert str(err.value) == f"run directory {run} is in use by process {holder.pid}"
        assert not (run / "config.yaml").exists()  # nothing was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert train(tiny(max_steps=1), run, progress=False).step == 1  # the OS released the killed holder's lock
    assert (run / ".lock").read_text().strip() == str(os.getpid())


# -- 4: pointers never lead outside the run; crash leftovers are cleaned --------------------------
def _ckpt(folder: Path, step: int) -> Path:
    return save_checkpoint(folder, step, {"model": {"w": torch.full((2,), float(step))}}, {}, keep=5)


def test_latest_outside_the_run_is_never_followed(tmp_path: Path) -> None:
    ckpts, outside = tmp_path / "run" / "checkpoints", tmp_path / "other"
    _ckpt(ckpts, 3)
    _ckpt(outside, 9)
    for target in ["../../other/step_00000009", str(outside / "step_00000009")]:
        (ckpts / "latest").write_text(target)
        assert latest_checkpoint(ckpts) == ckpts / "step_00000003"
    (ckpts / "step_00000010").symlink_to(outside / "step_00000009")
    (ckpts / "latest").write_text("step_00000010")
    assert latest_checkpoint(ckpts) == ckpts / "step_00000003"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphans_of_a_crash_are_removed_at_the_next_save(tmp_path: Path) -> None:
    _ckpt(tmp_path, 2)
    dead = _dead_pid()
    for name in (f".tmp-step_00000003-{dead}", f".old-step_00000002-{dead}", f".del-step_00000001-{dead}",
                 ".tmp-step_00000003-1"):
        (tmp_path / name).mkdir()
    (tmp_path / f".latest.tmp-{dead}").write_text("step_")
    _ckpt(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step_00000003-1", "latest", "step_00000002",
                                                         "step_00000003"]  # pid 1 is alive: not ours to remove


def test_a_whole_old_copy_is_put_back_when_its_step_folder_is_gone(tmp_path: Path) -> None:
    path = _ckpt(tmp_path, 2)
    os.rename(path, tmp_path / f".old-step_00000002-{_dead_pid()}")  # crash between the two renames of a re-save
    _ckpt(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003"]


def test_resume_removes_orphans(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    orphan = run / "checkpoints" / f".tmp-step_00000005-{_dead_pid()}"
    orphan.mkdir()
    train(None, run, resume=True, progress=False)
    assert not orphan.exists()


# -- 5: outputs are replaced atomically -----------------------------------------------------------
def _fail_midway(*args, **kwargs) -> None:
    """A writer (np.save, Figure.savefig) that writes part of its file, then fails as a full disk would."""
    Path(next(a for a in args if isinstance(a, (str, Path)))).write_bytes(b"partial")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("name", ["s.npy", "s.png"])
def test_a_failed_write_leaves_the_old_output_whole(tmp_path: Path, monkeypatch, name: str) -> None:
    from matplotlib.figure import Figure

    from noisecraft.viz.plots import save_samples

    out = tmp_path / name
    x = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    save_samples(x, out, is_image=False)
    before = out.read_bytes()
    monkeypatch.setattr(np, "save", _fail_midway)
    monkeypatch.setattr(Figure, "savefig", _fail_midway)
    with pytest.raises(OSError, match="No space"):
        save_samples(x[:4], out, is_image=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


# -- 6: damaged checkpoints: one clear error, or the newest intact one -----------------------------
def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not json":
        path.write_text("{step: 4")
    elif how == "no step":
        meta = json.loads(path.read_text())
        del meta["step"]
        path.write_text(json.dumps(meta))


DAMAGES = [("ema.safetensors", "truncated"), ("ema.safetensors", "random"), ("model.safetensors", "empty"),
           ("state.json", "not json"), ("state.json", "no step")]


@pytest.mark.parametrize(("file", "how"), DAMAGES)
def test_a_damaged_file_is_one_clear_error(trained: Path, tmp_path: Path, file: str, how: str) -> None:
    run = _copy(trained, tmp_path / "run")
    _damage(run / "checkpoints" / "step_00000004" / file, how)
    with pytest.raises(ValueError, match=f"checkpoint .*step_00000004/{file} is damaged"):
        load_checkpoint(run / "checkpoints" / "step_00000004")


@pytest.mark.parametrize(("file", "how"), DAMAGES)
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact(trained: Path, tmp_path: Path, file: str,
                                                                    how: str) -> None:
    run = _copy(trained, tmp_path / "run")
    _damage(run / "checkpoints" / "step_00000004" / file, how)
    if file == "model.safetensors":  # sampling reads the EMA weights only
        assert load_run(run).step == 4
    else:
        with pytest.warns(UserWarning, match="step_00000004.*damaged.*step_00000002"):
            assert load_run(run).step == 2
    with pytest.warns(UserWarning, match="step_00000004.*damaged.*step_00000002"):
        assert train(None, run, resume=True, progress=False).step == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_run(run).step == 4  # retrained from step 2: the damaged folder is gone


def test_no_intact_checkpoint_is_an_error(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    for step in ("step_00000002", "step_00000004"):
        _damage(run / "checkpoints" / step / "ema.safetensors", "truncated")
    with pytest.raises(ValueError, match="no intact checkpoint.*step_00000004/ema.safetensors is damaged"):
        load_run(run)


def test_weights_of_another_network_are_named(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["model"]["width"] = 24
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"step_00000004/ema.safetensors holds weights of another network: "
                                         r"shape mismatch for .*\(16, .*expected \(24"):
        load_run(run)
    raw["model"]["depth"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="holds weights of another network: missing keys"):
        train(None, run, resume=True, max_steps=8, progress=False)


def test_a_fresh_run_whose_data_fails_leaves_no_directory(tmp_path: Path) -> None:
    from noisecraft.runs.config import preset_config
    from noisecraft.runs.train import train as train_run

    cfg = preset_config("moons", "v", max_steps=2)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"name": str(tmp_path / "missing.npy")})})
    with pytest.raises((ValueError, FileNotFoundError)):
        train_run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
