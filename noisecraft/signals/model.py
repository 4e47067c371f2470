"""Training the two ECG denoisers with the project's trainer, and loading them.

- "conditional": a diffusion model of the clean window given the noisy one, the noisy window concatenated to
  the network input (DeScoD-ECG, Li et al. 2023, sec. III). The pairs are made on the fly: each training step
  adds noise of the stress-test kinds (noisecraft.signals.noise, "mix") at an SNR drawn from -5 to 30 dB,
  a pure function of (seed, step) like the rest of the step's draws.
- "prior": an unconditional diffusion model of clean windows, used by posterior sampling under a noise model
  (noisecraft.signals.denoise).

Both are ordinary runs (runs.train.train, loadable by nc.load_run) on ECGSYN windows at MODEL_FS; the run
directory also holds signals.json (rate, window, hop, method).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.losses import preset
from noisecraft.core.noise import stream_seed
from noisecraft.data import DataConfig
from noisecraft.io import atomic_path, write_text_atomic
from noisecraft.nets import NetConfig
from noisecraft.runs.config import RunConfig, TrainConfig
from noisecraft.runs.train import DiffusionStep, TrainResult, train
from noisecraft.signals import noise as ecg_noise
from noisecraft.signals.ecg import MODEL_FS, training_set
from noisecraft.solvers.config import SolverConfig

METHODS: tuple[str, ...] = ("conditional", "prior")
#: xor-ed into a step's stream seed to seed its noise draws, a stream apart from the step's t and eps
NOISE_SALT = 0x5EED_EC6


@dataclass(frozen=True)
class SignalSpec:
    """What a signals run was trained on: windows of `length` samples every `hop` at `fs` Hz, by `method`."""

    method: str
    fs: float = MODEL_FS
    length: int = 256
    hop: int = 128
    #: training SNRs in dB: the MIT-BIH noise stress test's levels (-6 to 24 dB, Moody, Muldrow & Mark 1984) up to
    #: nearly clean; with -5 to 10 dB the conditional model redrew even clean input (PRD 35% against 15% now,
    #: docs/benchmarks/signals_high_snr.md)
    snr: tuple[float, float] = (-5.0, 30.0)

    def save(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / "signals.json", json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, run_dir: Path) -> SignalSpec:
        path = Path(run_dir) / "signals.json"
        if not path.is_file():
            raise ValueError(f"{str(run_dir)!r} is not a signals run: expected signals.json (made by "
                             "`noisecraft signals train`)")
        raw = json.loads(path.read_text())
        return cls(raw["method"], raw["fs"], raw["length"], raw["hop"], tuple(raw["snr"]))


def condition(noisy: Tensor) -> Tensor:
    """What the conditional network sees of a noisy window: the window minus its median, so an offset that baseline
    wander gives one window and not its neighbour is removed before the network (training and denoising alike)."""
    return noisy - noisy.median(dim=-1, keepdim=True).values


class NoisyPairStep(DiffusionStep):
    """The diffusion loss of the clean window x0 conditioned on x0 plus stress-test noise at a random SNR."""

    def __init__(self, config: RunConfig, data: Any, model: torch.nn.Module, accelerator: Any,
                 spec: SignalSpec) -> None:
        super().__init__(config, data, model, accelerator)
        self.spec = spec

    def draws(self, step: int) -> dict[str, Tensor | None]:
        d = super().draws(step)
        cfg = self.config.train
        g = torch.Generator().manual_seed(stream_seed(cfg.seed, step + 1) ^ NOISE_SALT)
        lo, hi = self.spec.snr
        d["snr"] = lo + (hi - lo) * torch.rand(cfg.batch_size, generator=g, dtype=torch.float64)
        d["noise"] = ecg_noise.noise("mix", cfg.batch_size, self.data.sample_shape[-1], self.spec.fs, g)
        return d

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        power = x0.double().var(dim=-1, unbiased=False, keepdim=True)
        noisy = x0 + (d["noise"][part] * (power / 10 ** (d["snr"][part, None] / 10)).sqrt()).to(x0)
        return self.config.loss(self.denoiser, x0, cond=condition(noisy), t=d["t"][part],
                                eps=d["eps"][part].to(x0.device))


def signals_config(data: str, method: str, minutes: float | None, steps: int | None, seed: int = 0,
                   batch_size: int = 32) -> RunConfig:
    """The run config of a signals model: a small 1-D U-Net (16-32-64 channels, attention at the lowest level;
    0.3 s of CPU a step of 32 windows on one core), EDM loss with
    sigma_data 0.3 (the windows' spread), AdamW 1e-3, a CPU-time budget."""
    check_method(method)
    return RunConfig(
        data=DataConfig(name=data),
        model=NetConfig(kind="unet1d", cond="signal" if method == "conditional" else "class",
                        block_channels=[16, 32, 64], attention=[False, False, True], layers_per_block=1),
        loss=preset("edm", sigma_data=0.3),
        train=TrainConfig(batch_size=batch_size, lr=1e-3, warmup_steps=100, max_steps=steps, minutes=minutes,
                          clock="process", checkpoint_every=500, log_every=50, seed=seed, ema_decay=0.999),
        sample=SolverConfig(solver="dpm++2m", steps=20),
    )


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown `method` {method!r}; expected one of {list(METHODS)}")
    return method


def train_signals(run_dir: str | Path, method: str = "conditional", minutes: float | None = 4.5,
                  steps: int | None = None, records: int = 80, duration: float = 20.0, seed: int = 0,
                  overwrite: bool = False, progress: bool = False) -> TrainResult:
    """Simulate the ECGSYN training windows (run_dir/windows.npy) and train `method` on them in run_dir."""
    check_method(method)
    if minutes is None and steps is None:
        raise ValueError("training needs a length: pass `minutes`, `steps` or both")
    if records < 1 or not duration >= 10:
        raise ValueError(f"`records` must be >= 1 and `duration` >= 10 s, got {records} and {duration}")
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()) and not overwrite:
        raise ValueError(f"{str(run_dir)!r} already holds a trained run; pass `overwrite` or choose a new directory")
    spec = SignalSpec(method)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_dir / "windows.npy"
    x = training_set(records, duration, spec.length, spec.hop, seed, spec.fs)
    with atomic_path(data) as tmp:
        np.save(tmp, x)
    spec.save(run_dir)
    config = signals_config(str(data.resolve()), method, minutes, steps, seed)
    make_step = (lambda c, d, m, a: NoisyPairStep(c, d, m, a, spec)) if method == "conditional" else DiffusionStep
    return train(config, run_dir, overwrite=overwrite, progress=progress, make_step=make_step)


@dataclass(frozen=True)
class SignalModel:
    """A trained signals run: the Pipeline (nc.load_run) and its SignalSpec."""

    pipeline: Any
    spec: SignalSpec

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> SignalModel:
        from noisecraft.runs.pipeline import load_run

        spec = SignalSpec.load(Path(run_dir))
        return cls(load_run(run_dir, device=device), spec)


__all__ = ["METHODS", "NoisyPairStep", "SignalModel", "SignalSpec", "check_method", "condition", "signals_config",
           "train_signals"]
