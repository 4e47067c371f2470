"""Training the autoencoder of latent diffusion (Rombach et al. 2022, sec. 3.1) as a run directory, with the
toolkit's one training loop (noisecraft.runs.loop): AdamW, warm-up/cosine rate, clipping, EMA, step or time
budget, atomic safetensors checkpoints and exact resume, as for a diffusion run.

After training, the latent scaling factor 1 / std(z) is measured on the training data with the EMA weights
(z the posterior mean of each image; Rombach et al. 2022, sec. 4.3.2, "rescale the latent by the
component-wise standard deviation") and stored in the run's config.yaml as `scaling_factor`, so the latents a
diffusion model sees have unit standard deviation, the scale its schedules and losses assume.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from noisecraft.data import DataConfig, Dataset
from noisecraft.nets.vae import VAE, VAEConfig, vae_loss
from noisecraft.runs.checkpoint import check_weights, newest_intact
from noisecraft.runs.config import TrainConfig
from noisecraft.runs.ema import EMA
from noisecraft.runs.lock import run_lock
from noisecraft.runs.loop import (
    Loop,
    LoopState,
    batch_indices,
    make_optimizer,
    reached_end,
    step_generator,
)
from noisecraft.runs.threads import use_threads
from noisecraft.runs.train import (
    _fresh_dir_removed_on_failure,
    _restore,
    _saver,
    _start,
    _with_max_steps,
    _write_run_files,
    process_slice,
)
from noisecraft.validation import check_field, describe


class VAERunConfig(BaseModel):
    """An autoencoder run: data, network, KL weight, training, and the measured latent scaling factor."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    data: DataConfig = Field(default_factory=lambda: DataConfig(name="digits32"))
    model: VAEConfig = Field(default_factory=VAEConfig)
    #: weight of the KL term per latent element against the squared error per pixel: small, so the latents keep
    #: detail, non-zero, so they stay near N(0, I) and smooth (Rombach et al. 2022, "KL-reg", app. G)
    kl_weight: float = Field(1e-3, ge=0)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=2000, batch_size=32, lr=1e-3,
                                                                   warmup_steps=50))
    #: 1 / std of the training data's latents (posterior means), measured after training; None before
    scaling_factor: float | None = Field(None, gt=0)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from noisecraft.io import write_text_atomic

        write_text_atomic(Path(path), self.to_yaml())


def load_vae_config(path: str | Path) -> VAERunConfig:
    """The VAERunConfig in a YAML file; errors name the file and the bad keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path.parent)!r} is not an autoencoder run: expected {path.name} "
                         "(made by `noisecraft vae train`)")
    try:
        return VAERunConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as err:
        raise ValueError(f"invalid {path}: {describe(err)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a YAML autoencoder config: {err}") from None


#: the default network of each autoencoder kind (VAEConfig.kind): the tiny one keeps one width at every level
MODELS: dict[str, VAEConfig] = {"kl": VAEConfig(), "tiny": VAEConfig(kind="tiny", block_channels=[32, 32, 32])}


def vae_config(data: str = "digits32", minutes: float | None = None, max_steps: int | None = None,
               kind: str = "kl", **fields: Any) -> VAERunConfig:
    """The default autoencoder run of `kind` ('kl': AutoencoderKL, 'tiny': AutoencoderTiny) for `data`, with the
    given train fields (None = default) and budget."""
    if kind not in MODELS:
        raise ValueError(f"unknown `kind` {kind!r}; expected one of {list(MODELS)}")
    given = {"minutes": minutes, "max_steps": max_steps, **fields}
    checked = {k: check_field(TrainConfig, k, v) for k, v in given.items() if v is not None}  # named as given
    train = {**VAERunConfig().train.model_dump(), **checked}
    if minutes is not None or max_steps is not None:
        train.update(minutes=minutes, max_steps=max_steps)
    try:
        return VAERunConfig(data=DataConfig(name=data), model=MODELS[kind], train=TrainConfig.model_validate(train))
    except ValidationError as err:
        raise ValueError(f"invalid options: {describe(err)}") from None


@dataclass
class VAEResult:
    run_dir: Path
    step: int
    loss: float
    scaling_factor: float | None
    checkpoint: Path | None
    note: str = ""


class VAEStep:
    """step -> that step's loss after its backward pass: the batch of (seed, step), the reparameterisation noise
    of (seed, step), sliced by process and micro-batch as the diffusion step is (noisecraft.runs.train)."""

    def __init__(self, config: VAERunConfig, data: Dataset, model: torch.nn.Module, accelerator: Any,
                 latent_shape: tuple[int, ...]) -> None:
        self.config, self.data, self.model, self.acc, self.latent_shape = config, data, model, accelerator, latent_shape

    def __call__(self, step: int) -> Tensor:
        cfg, acc = self.config.train, self.acc
        g = step_generator(cfg.seed, step)
        idx = batch_indices(len(self.data), cfg.batch_size, step, cfg.seed)
        eps = torch.randn((cfg.batch_size, *self.latent_shape), generator=g)
        total = torch.zeros((), device=acc.device)
        for micro in range(cfg.grad_accum):
            part = process_slice(cfg.batch_size, cfg.grad_accum, micro, acc.process_index, acc.num_processes)
            x = self.data.x[idx[part]].to(acc.device)
            value = vae_loss(self.model, x, eps[part].to(acc.device), self.config.kl_weight)[0]
            acc.backward(value / cfg.grad_accum)
            total += value.detach() / cfg.grad_accum
        return total


def _own(run_dir: Path, config: VAERunConfig | None) -> VAERunConfig:
    """The config of a run to resume; a given one must equal it (scaling factor and max_steps aside)."""
    own = load_vae_config(run_dir / "config.yaml")
    if config is not None:
        strip = {"scaling_factor": None}
        a = config.model_copy(update={**strip, "train": config.train.model_copy(update={"max_steps": None})})
        b = own.model_copy(update={**strip, "train": own.train.model_copy(update={"max_steps": None})})
        if a != b:
            raise ValueError(f"`config` differs from the config.yaml of {str(run_dir)!r}; a resumed run keeps it")
    return own


def train_vae(config: VAERunConfig | None, run_dir: str | Path, resume: bool = False, max_steps: int | None = None,
              overwrite: bool = False, stop_at: int | None = None, progress: bool = True) -> VAEResult:
    """Train the autoencoder `config` in `run_dir` (config.yaml, data.json, checkpoints/, metrics.jsonl), then
    measure and store its latent scaling factor. Fresh/resume/overwrite/max_steps/stop_at as in
    noisecraft.runs.train.train."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("pass `resume` or `overwrite`, not both")
    if not resume and config is None:
        raise ValueError("pass a config, or resume=True with a run directory that holds one")
    config = _own(run_dir, config) if resume else config
    data = config.data.load()  # bad data is named before anything is written
    if not data.is_image:
        raise ValueError(f"the autoencoder takes images; data {data.name!r} holds samples of shape {data.sample_shape}")
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    with _fresh_dir_removed_on_failure(run_dir), \
            run_lock(run_dir) if accelerator.is_main_process else contextlib.nullcontext():
        start = _start(run_dir, resume, overwrite, accelerator.is_main_process)
        if start is not None and max_steps is None and reached_end(config.train, start[2]["step"],
                                                                   start[2].get("elapsed_s", 0.0)):
            step = start[2]["step"]
            return VAEResult(run_dir, step, math.nan, config.scaling_factor, start[0], note=(
                f"autoencoder run {run_dir} is finished at step {step}; pass `max_steps` M > {step} to extend it"))
        config = _with_max_steps(config, max_steps, start and start[2], run_dir)  # checked against the steps done
        return _fit(config, data, run_dir, accelerator, start, stop_at, progress)


def _fit(config: VAERunConfig, data: Dataset, run_dir: Path, accelerator: Any, start: Any, stop_at: int | None,
         progress: bool) -> VAEResult:
    cfg = config.train
    threads = use_threads(cfg.num_threads)
    if progress and accelerator.is_main_process:
        print(threads, flush=True)
    torch.manual_seed(cfg.seed)
    vae = config.model.build(data.sample_shape[0])
    latent_shape = vae.latent_shape(data.sample_shape)
    optimizer = make_optimizer(cfg, vae)
    ema = EMA(vae, cfg.ema_decay, cfg.ema_power)
    state = _restore(start, vae, optimizer, ema) if start is not None else LoopState()
    if accelerator.is_main_process:
        _write_run_files(run_dir, config.model_copy(update={"scaling_factor": None}), data, state.step)
    model, optimizer = accelerator.prepare(vae, optimizer)
    loop = Loop(cfg, model, optimizer, ema, VAEStep(config, data, model, accelerator, latent_shape), accelerator,
                items_per_step=cfg.batch_size)
    loop.on_checkpoint = _saver(loop, run_dir / "checkpoints")
    state.checkpoint = start[0] if start is not None else None
    with open(run_dir / "metrics.jsonl", "a") if accelerator.is_main_process else contextlib.nullcontext() as log:
        if log is not None:
            loop.on_log = lambda record: (log.write(json.dumps(record) + "\n"), log.flush())
        loop.run(state, stop_at, progress, desc=f"vae {data.name}")
    accelerator.wait_for_everyone()
    scale = None
    if accelerator.is_main_process and (stop_at is None or state.step < stop_at):  # finished, not interrupted
        averaged = config.model.build(data.sample_shape[0])
        ema.copy_to(averaged)
        scale = measure_scaling_factor(averaged.eval(), data.x)
        config.model_copy(update={"scaling_factor": scale}).save(run_dir / "config.yaml")
    return VAEResult(run_dir, state.step, state.loss, scale, state.checkpoint)


@torch.no_grad()
def measure_scaling_factor(vae: VAE | Any, x: Tensor, chunk: int = 256) -> float:
    """1 / std of the posterior means of x over all their elements (Rombach et al. 2022, sec. 4.3.2). `vae`
    is anything with `encode(x) -> (mean, logvar)`."""
    means = torch.cat([vae.encode(x[i:i + chunk])[0].double() for i in range(0, x.shape[0], chunk)])
    std = float(means.std())
    if not std > 0:
        raise ValueError(f"the autoencoder's latents have standard deviation {std}; expected > 0 (a trained model)")
    return 1.0 / std


def load_vae(run_dir: str | Path, ema: bool = True) -> tuple[VAERunConfig, VAE, Path]:
    """(config, autoencoder with its newest intact EMA weights in eval mode, checkpoint path) of a trained
    autoencoder run; a ValueError when the run has no scaling factor yet (training never finished)."""
    run_dir = Path(run_dir)
    config = load_vae_config(run_dir / "config.yaml")
    if config.scaling_factor is None:
        raise ValueError(f"autoencoder run {str(run_dir)!r} has no scaling_factor: its training has not finished; "
                         "resume it with `noisecraft vae train --resume`")
    info = json.loads((run_dir / "data.json").read_text())
    group = "ema" if ema else "model"
    path, tensors, _ = newest_intact(run_dir / "checkpoints", (group,))
    vae = config.model.build(info["sample_shape"][0])
    state = vae.state_dict()
    check_weights(state, tensors[group], path / f"{group}.safetensors", partial=group == "ema")
    state.update(tensors[group])
    vae.load_state_dict(state)
    return config, vae.eval(), path


__all__ = ["MODELS", "VAEResult", "VAERunConfig", "VAEStep", "load_vae", "load_vae_config", "measure_scaling_factor",
           "train_vae", "vae_config"]
