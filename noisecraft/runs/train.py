"""Diffusion training: a run directory, Hugging Face Accelerate, and one loss call per micro-batch driven by
the one training loop (noisecraft.runs.loop; DESIGN.md section 2).

Reproducibility: the global batch of step k (which samples, their times t and noise eps) is a pure
function of (seed, k), drawn whole on every process and then sliced by process and micro-batch. So a
resumed run repeats the uninterrupted one exactly, and N processes train the same trajectory as one
process with the same global batch (gradients are averaged by DDP; Li et al. 2020).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noisecraft.data import Dataset
from noisecraft.io import write_text_atomic
from noisecraft.runs.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_from_tensors,
    rng_to_tensors,
    save_checkpoint,
)
from noisecraft.runs.config import RunConfig, load_config
from noisecraft.runs.ema import EMA
from noisecraft.runs.loop import (
    Loop,
    LoopState,
    NonFiniteLossError,
    batch_indices,
    make_optimizer,
    step_generator,
)

__all__ = ["NonFiniteLossError", "TrainResult", "conditions", "process_slice", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    images_per_s: float
    checkpoint: Path | None
    model: torch.nn.Module | None = None  # the trained network (unwrapped), this process's copy
    ema: EMA | None = None


def process_slice(batch: int, accum: int, micro: int, rank: int, world: int) -> slice:
    """The part of the global batch that process `rank` computes in micro-batch `micro`."""
    micro_size = batch // accum
    if micro_size % world:
        raise ValueError(f"batch_size/grad_accum = {micro_size} must be divisible by the {world} processes")
    per = micro_size // world
    start = micro * micro_size + rank * per
    return slice(start, start + per)


def conditions(labels: Tensor, drop: Tensor | None = None, null_label: int | None = None,
               prompts: Tensor | None = None, templates: Tensor | None = None) -> Tensor:
    """What the network is conditioned on for a batch of labels.

    Class mode: the labels, with those where `drop` is true replaced by `null_label` (label dropout for
    classifier-free guidance, Ho & Salimans 2022). Text mode (`prompts`, (classes, templates, dim)): the
    sentence embedding of template `templates[i]` for label i (Reimers & Gurevych 2019), and the zero
    embedding where `drop` is true.
    """
    if prompts is not None:
        cond = prompts[labels, templates]
        return cond if drop is None else torch.where(drop[:, None], torch.zeros_like(cond), cond)
    return labels if drop is None else torch.where(drop, null_label, labels)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _prompt_table(config: RunConfig) -> Tensor | None:
    """Text mode (NetConfig cond "text"): the sentence embeddings of every (class, template) prompt."""
    if not config.model.text:
        return None
    from noisecraft.guide.text import prompt_table

    prompts = prompt_table(config.model.num_classes)
    if prompts.shape[-1] != config.model.text_dim:
        raise ValueError(f"model.text_dim is {config.model.text_dim} but the sentence embeddings have "
                         f"{prompts.shape[-1]} dimensions")
    return prompts


class DiffusionStep:
    """step -> that step's loss, after its backward pass: the global batch of (seed, step) sliced by process and
    micro-batch, conditions with label dropout, the loss under autocast, gradients accumulated."""

    def __init__(self, config: RunConfig, data: Dataset, model: torch.nn.Module, accelerator: Any) -> None:
        if config.model.num_classes is not None and data.labels is None:
            raise ValueError(f"model.num_classes is set but data {data.name!r} has no labels")
        self.config, self.data, self.model, self.accelerator = config, data, model, accelerator
        self.denoiser = config.loss.denoiser(model)
        self.prompts = _prompt_table(config)

    def draws(self, step: int) -> dict[str, Tensor | None]:
        """The random draws of the whole global batch, a pure function of (seed, step)."""
        cfg, model_cfg = self.config.train, self.config.model
        g = step_generator(cfg.seed, step)
        idx = batch_indices(len(self.data), cfg.batch_size, step, cfg.seed)
        t = self.config.loss.sample_t(cfg.batch_size, g)
        eps = torch.randn((cfg.batch_size, *self.data.sample_shape), generator=g)
        # drawn after eps so runs without label dropout keep their random stream
        drop = torch.rand(cfg.batch_size, generator=g) < model_cfg.label_dropout if model_cfg.guidable else None
        # drawn last, for the same reason
        templates = torch.randint(self.prompts.shape[1], (cfg.batch_size,), generator=g) if self.prompts is not None else None
        return {"idx": idx, "t": t, "eps": eps, "drop": drop, "templates": templates}

    def _cond(self, d: dict, idx: Tensor, part: slice) -> Tensor | None:
        if self.config.model.num_classes is None:
            return None
        pick = (lambda v: None if v is None else v[part])
        return conditions(self.data.labels[idx], pick(d["drop"]), self.config.model.null_label, self.prompts,
                          pick(d["templates"])).to(self.accelerator.device)

    def __call__(self, step: int) -> Tensor:
        cfg, acc = self.config.train, self.accelerator
        d = self.draws(step)
        total = torch.zeros((), device=acc.device)
        for micro in range(cfg.grad_accum):
            part = process_slice(cfg.batch_size, cfg.grad_accum, micro, acc.process_index, acc.num_processes)
            idx = d["idx"][part]
            x0 = self.data.x[idx].to(acc.device)
            sync = micro == cfg.grad_accum - 1
            ctx = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(self.model)
            with ctx, acc.autocast():
                value = self.config.loss(self.denoiser, x0, cond=self._cond(d, idx, part), t=d["t"][part],
                                         eps=d["eps"][part].to(acc.device))
                acc.backward(value / cfg.grad_accum)
            total += value.detach().float() / cfg.grad_accum
        # The step's tensors stay referenced until the next step, as in a plain inline loop: freed before the
        # optimiser update, glibc returns the heap top to the OS and faults it back every step (measured on CPU:
        # 2.8x the minor page faults, ~5% slower steps).
        self._last_step = (d, x0, value)
        return total


def _run_config(config: RunConfig | None, run_dir: Path, resume: bool) -> RunConfig:
    """The config to train: the run's own on resume, else the given one for a directory not trained yet."""
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"cannot resume: {str(run_dir)!r} has no config.yaml")
        return load_config(run_dir / "config.yaml")
    if config is None:
        raise ValueError("pass a config, or resume=True with a run directory that holds one")
    if latest_checkpoint(run_dir / "checkpoints") is not None:
        raise ValueError(f"{str(run_dir)!r} already holds a trained run; pass resume=True or choose a new directory")
    return config


def _write_run_files(run_dir: Path, config: RunConfig, data: Dataset) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    write_text_atomic(run_dir / "data.json", json.dumps(
        {"name": data.name, "sample_shape": list(data.sample_shape), "is_image": data.is_image,
         "num_classes": data.num_classes, "n": len(data)}))


def _restore(ckpt_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA) -> LoopState:
    """Weights, optimiser, EMA and RNG state of the latest checkpoint; the loop continues from its step."""
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise ValueError(f"cannot resume: {str(ckpt_dir)!r} holds no checkpoint")
    tensors, meta = load_checkpoint(path)
    net.load_state_dict(tensors["model"])
    optimizer.load_state_dict(optimizer_from_tensors(tensors["optimizer"], meta["optimizer"]))
    ema.load_state_dict(tensors["ema"], meta["ema_updates"])
    rng_from_tensors(tensors["rng"], meta["rng"])
    return LoopState(step=meta["step"], elapsed=meta["elapsed_s"])


def _saver(loop: Loop, ckpt_dir: Path) -> Any:
    """The loop's checkpoint callback: every process waits, the main one writes (atomically)."""
    acc = loop.accelerator

    def save(state: LoopState) -> Path | None:
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            opt_tensors, opt_meta = optimizer_to_tensors(loop.optimizer.state_dict())
            rng_tensors, rng_meta = rng_to_tensors()
            path = save_checkpoint(
                ckpt_dir, state.step,
                {"model": loop.unwrapped().state_dict(), "ema": loop.ema.state_dict(), "optimizer": opt_tensors,
                 "rng": rng_tensors},
                {"elapsed_s": state.elapsed, "ema_updates": loop.ema.updates, "optimizer": opt_meta, "rng": rng_meta,
                 "world_size": acc.num_processes},
                keep=loop.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    return save


def train(config: RunConfig | None, run_dir: str | Path, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train `config` in `run_dir` (config.yaml, data.json, checkpoints/, metrics.jsonl).

    With resume=True the config is read from run_dir and training continues from its latest checkpoint.
    `stop_at` stops after that step with a checkpoint, as an interruption would (used by tests).
    """
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    config = _run_config(config, run_dir, resume)
    cfg = config.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # cpu=True when there is no GPU: Accelerate then reads torchrun's env as a gloo process group
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    data = config.data.load()
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    net = config.model.build(data.sample_shape, config.loss.time_input)
    if accelerator.is_main_process:
        _write_run_files(run_dir, config, data)
    optimizer = make_optimizer(cfg, net)
    ema = EMA(net, cfg.ema_decay, cfg.ema_power)
    state = _restore(run_dir / "checkpoints", net, optimizer, ema) if resume else LoopState()
    model, optimizer = accelerator.prepare(net, optimizer)
    loop = Loop(cfg, model, optimizer, ema, DiffusionStep(config, data, model, accelerator), accelerator,
                items_per_step=cfg.batch_size)
    loop.on_checkpoint = _saver(loop, run_dir / "checkpoints")
    state.checkpoint = latest_checkpoint(run_dir / "checkpoints") if accelerator.is_main_process else None
    with open(run_dir / "metrics.jsonl", "a") if accelerator.is_main_process else contextlib.nullcontext() as metrics:
        if metrics is not None:
            loop.on_log = lambda record: (metrics.write(json.dumps(record) + "\n"), metrics.flush())
        loop.run(state, stop_at, progress, desc=f"train {data.name}")
    accelerator.wait_for_everyone()
    return TrainResult(run_dir, state.step, state.loss, state.items_per_s, state.checkpoint,
                       accelerator.unwrap_model(model), ema)
