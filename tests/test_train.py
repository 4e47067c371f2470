"""The trainer on tiny models: resume reproduces the uninterrupted run, NaN stops keep the last good
checkpoint, learning-rate schedule, checkpoints are atomic safetensors, configs reject unknown keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from noisecraft.nets import NetConfig
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from noisecraft.runs.config import (
    RunConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    preset_config,
)
from noisecraft.runs.ema import EMA
from noisecraft.runs.loop import NonFiniteLossError, learning_rate
from noisecraft.runs.train import train


def tiny(**train_kw) -> RunConfig:
    kw = dict(max_steps=6, batch_size=32, checkpoint_every=2, log_every=1, warmup_steps=2)
    kw.update(train_kw)
    cfg = preset_config("moons", "v", **kw)
    return cfg.model_copy(update={"model": NetConfig(width=16, depth=1)})


def _weights(run: Path) -> dict:
    tensors, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    return tensors


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny(grad_accum=2)
    train(cfg, tmp_path / "full", progress=False)
    first = train(cfg, tmp_path / "part", stop_at=3, progress=False)
    assert first.step == 3
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 6
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for group in ("model", "ema", "optimizer"):
        assert a[group].keys() == b[group].keys()
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group]), group
    lines = [json.loads(s) for s in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]  # one line per step, continued after resume
    assert {"loss", "lr", "images_per_s", "ema_decay"} <= set(lines[-1])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = tiny(lr=1e30, checkpoint_every=1, warmup_steps=0, grad_clip=None, max_steps=50)
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) at step \d+.*last good checkpoint"):
        train(cfg, tmp_path / "run", progress=False)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None
    tensors, _ = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in tensors["model"].values())


def test_refuses_to_overwrite_a_trained_run(tmp_path: Path) -> None:
    train(tiny(max_steps=1), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="already holds a trained run"):
        train(tiny(max_steps=1), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="no config.yaml"):
        train(None, tmp_path / "nothing", resume=True, progress=False)


def test_learning_rate_warmup_then_cosine() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0.09) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(0.1)
    const = cfg.model_copy(update={"lr_schedule": "constant"})
    assert learning_rate(const, 80, 0.8) == 1.0


def test_ema_warmup_and_average() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(net, decay=0.9, power=1.0)
    assert ema.current_decay() == 0.0  # the first update copies the weights
    with torch.no_grad():
        net.weight.fill_(2.0)
    ema.update(net)
    assert float(ema.shadow["weight"]) == 2.0
    assert ema.current_decay() == pytest.approx(0.5)
    with torch.no_grad():
        net.weight.fill_(4.0)
    ema.update(net)
    assert float(ema.shadow["weight"]) == pytest.approx(3.0)


def test_checkpoint_writes_are_atomic_and_pruned(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"model": {"w": torch.full((2,), float(step))}}, {"note": step}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest", "step_00000002", "step_00000003"]  # no temporary files left behind
    tensors, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta == {"step": 3, "note": 3} and torch.equal(tensors["model"]["w"], torch.full((2,), 3.0))
    # a crash mid-write leaves a temporary directory, which the pointer never names
    (tmp_path / ".tmp-step_00000004-1").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000003"


def test_config_yaml_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    cfg = tiny()
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    raw = cfg.model_dump()
    raw["train"]["lerning_rate"] = 0.1
    with pytest.raises(ValueError, match="unknown key 'train.lerning_rate'"):
        config_from_dict(raw)
    with pytest.raises(ValueError, match="needs a length"):
        TrainConfig()
    with pytest.raises(ValueError, match="unknown preset 'ddim'"):
        preset_config("digits", "ddim")
