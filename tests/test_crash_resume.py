"""kill -9 at random moments: `noisecraft train` on a tiny run is killed three times at seeded random delays and
resumed each time; the final checkpoint equals, bit for bit, an uninterrupted run of the same config, and
metrics.jsonl holds each step once."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from noisecraft.nets import NetConfig
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint
from noisecraft.runs.config import RunConfig, preset_config
from noisecraft.runs.train import train

STEPS, KILLS = 60, 3


def _config() -> RunConfig:
    cfg = preset_config("moons", "v", max_steps=STEPS, batch_size=32, checkpoint_every=1, log_every=1,
                        warmup_steps=5, num_threads=1)
    return cfg.model_copy(update={"model": NetConfig(width=16, depth=1)})


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "noisecraft.cli", "train", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _newest_step(run: Path) -> int:
    path = latest_checkpoint(run / "checkpoints")
    return int(path.name.split("_")[1]) if path else 0


def _progress(run: Path, after: int, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Wait until the run has a checkpoint newer than step `after` (True), or the process has ended (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if _newest_step(run) > after:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_kill_9_and_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    rng, run, log = random.Random(13), tmp_path / "run", tmp_path / "train.log"
    _config().save(tmp_path / "c.yaml")
    proc, kills = _launch(["--config", str(tmp_path / "c.yaml"), "--run", str(run)], log), 0
    while kills < KILLS and _progress(run, _newest_step(run), proc):
        time.sleep(rng.uniform(0.0, 0.15))  # at a random moment of a step, a checkpoint write or a log line
        proc.kill()
        proc.wait()
        kills += 1
        proc = _launch(["--run", str(run), "--resume"], log)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert kills == KILLS, "the run ended before it could be killed; raise STEPS"
    full = train(_config(), tmp_path / "full", progress=False)
    a, meta_a = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    b, meta_b = load_checkpoint(full.checkpoint)
    assert meta_a["step"] == meta_b["step"] == STEPS
    for group in ("model", "ema", "optimizer"):
        assert a[group].keys() == b[group].keys()
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group]), group
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
