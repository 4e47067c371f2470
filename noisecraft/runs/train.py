"""The trainer: Hugging Face Accelerate around one loss call per micro-batch (DESIGN.md section 2).

AdamW (Loshchilov & Hutter 2019) with linear warm-up then cosine or constant learning rate, gradient
clipping, EMA weights, gradient accumulation, mixed precision on GPUs, atomic checkpoints, a time
budget, metrics.jsonl and a progress bar.

Reproducibility: the global batch of step k (which samples, their times t and noise eps) is a pure
function of (seed, k), drawn whole on every process and then sliced by process and micro-batch. So a
resumed run repeats the uninterrupted one exactly, and N processes train the same trajectory as one
process with the same global batch (gradients are averaged by DDP; Li et al. 2020).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noisecraft.runs.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_from_tensors,
    rng_to_tensors,
    save_checkpoint,
    write_text_atomic,
)
from noisecraft.runs.config import RunConfig, TrainConfig, load_config
from noisecraft.data import Dataset
from noisecraft.core.noise import stream_generator
from noisecraft.runs.ema import EMA


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped before the bad update."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    images_per_s: float
    checkpoint: Path | None
    model: torch.nn.Module | None = None  # the trained network (unwrapped), this process's copy
    ema: EMA | None = None


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to min_lr_ratio * lr at progress 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def batch_indices(n: int, batch: int, step: int, seed: int) -> Tensor:
    """Dataset indices of step `step`'s global batch: consecutive slices of seeded per-epoch permutations."""
    start = step * batch
    out, pos = [], start
    while pos < start + batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=stream_generator(seed, epoch))
        take = min(n - offset, start + batch - pos)
        out.append(perm[offset:offset + take])
        pos += take
    return torch.cat(out)


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


def _any_across(accelerator: Any, flag: bool) -> bool:
    """True on every process when it is true on one (keeps processes in step for stops and errors)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.gather(t).max().item() > 0)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def train(config: RunConfig | None, run_dir: str | Path, resume: bool = False, stop_at: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train `config` in `run_dir` (config.yaml, data.json, checkpoints/, metrics.jsonl).

    With resume=True the config is read from run_dir and training continues from its latest checkpoint.
    `stop_at` stops after that step with a checkpoint, as an interruption would (used by tests).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"cannot resume: {str(run_dir)!r} has no config.yaml")
        config = load_config(run_dir / "config.yaml")
    elif config is None:
        raise ValueError("pass a config, or resume=True with a run directory that holds one")
    elif latest_checkpoint(ckpt_dir) is not None:
        raise ValueError(f"{str(run_dir)!r} already holds a trained run; pass resume=True or choose a new directory")
    cfg = config.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    # cpu=True when there is no GPU: Accelerate then reads torchrun's env as a gloo process group
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    data: Dataset = config.data.load()
    loss_fn = config.loss
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    net = config.model.build(data.sample_shape, loss_fn.time_input)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
        write_text_atomic(run_dir / "data.json", json.dumps(
            {"name": data.name, "sample_shape": list(data.sample_shape), "is_image": data.is_image,
             "num_classes": data.num_classes, "n": len(data)}))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema_decay, cfg.ema_power)
    step, elapsed_before = 0, 0.0
    if resume:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            raise ValueError(f"cannot resume: {str(ckpt_dir)!r} holds no checkpoint")
        tensors, meta = load_checkpoint(path)
        net.load_state_dict(tensors["model"])
        optimizer.load_state_dict(optimizer_from_tensors(tensors["optimizer"], meta["optimizer"]))
        ema.load_state_dict(tensors["ema"], meta["ema_updates"])
        rng_from_tensors(tensors["rng"], meta["rng"])
        step, elapsed_before = meta["step"], meta["elapsed_s"]
    model, optimizer = accelerator.prepare(net, optimizer)
    denoiser = loss_fn.denoiser(model)
    use_labels = config.model.num_classes is not None
    if use_labels and data.labels is None:
        raise ValueError(f"model.num_classes is set but data {data.name!r} has no labels")
    null = config.model.null_label
    guidable = config.model.guidable
    # text mode (NetConfig cond "text"): a label becomes the sentence embedding of one of its prompts
    prompts = None
    if config.model.text:
        from noisecraft.guide.text import prompt_table

        prompts = prompt_table(config.model.num_classes)
        if prompts.shape[-1] != config.model.text_dim:
            raise ValueError(f"model.text_dim is {config.model.text_dim} but the sentence embeddings have "
                             f"{prompts.shape[-1]} dimensions")

    def checkpoint() -> Path | None:
        accelerator.wait_for_everyone()
        path = None
        if main:
            unwrapped = accelerator.unwrap_model(model)
            opt_tensors, opt_meta = optimizer_to_tensors(optimizer.state_dict())
            rng_tensors, rng_meta = rng_to_tensors()
            path = save_checkpoint(
                ckpt_dir, step,
                {"model": unwrapped.state_dict(), "ema": ema.state_dict(), "optimizer": opt_tensors, "rng": rng_tensors},
                {"elapsed_s": elapsed, "ema_updates": ema.updates, "optimizer": opt_meta, "rng": rng_meta,
                 "world_size": world},
                keep=cfg.keep_checkpoints,
            )
        accelerator.wait_for_everyone()
        return path

    budget_s = None if cfg.minutes is None else 60.0 * cfg.minutes
    clock = time.perf_counter if cfg.clock == "wall" else time.process_time
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and main), unit="step",
               desc=f"train {data.name}", dynamic_ncols=True)
    metrics = open(run_dir / "metrics.jsonl", "a") if main else None
    start = clock()
    elapsed = elapsed_before
    window_start = time.perf_counter()
    window_t, window_images, window_loss, window_n = window_start, 0, 0.0, 0
    last_loss, images_per_s, last_path = float("nan"), 0.0, latest_checkpoint(ckpt_dir) if main else None
    model.train()
    try:
        while True:
            progress_frac = max(step / cfg.max_steps if cfg.max_steps else 0.0,
                                elapsed / budget_s if budget_s else 0.0)
            lr = learning_rate(cfg, step, progress_frac)
            for group in optimizer.param_groups:
                group["lr"] = lr
            g = stream_generator(cfg.seed, step + 1)
            idx = batch_indices(len(data), cfg.batch_size, step, cfg.seed)
            t_all = loss_fn.sample_t(cfg.batch_size, g)
            eps_all = torch.randn((cfg.batch_size, *data.sample_shape), generator=g)
            # drawn after eps so runs without label dropout keep their random stream
            drop_all = torch.rand(cfg.batch_size, generator=g) < config.model.label_dropout if guidable else None
            # drawn last, for the same reason; a pure function of (seed, step), so resume stays exact
            tpl_all = torch.randint(prompts.shape[1], (cfg.batch_size,), generator=g) if prompts is not None else None
            step_loss = torch.zeros((), device=accelerator.device)
            for micro in range(cfg.grad_accum):
                part = process_slice(cfg.batch_size, cfg.grad_accum, micro, rank, world)
                x0 = data.x[idx[part]].to(accelerator.device)
                cond = None
                if use_labels:
                    cond = conditions(data.labels[idx[part]], None if drop_all is None else drop_all[part], null,
                                      prompts, None if tpl_all is None else tpl_all[part]).to(accelerator.device)
                sync = micro == cfg.grad_accum - 1
                ctx = contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(model)
                with ctx, accelerator.autocast():
                    value = loss_fn(denoiser, x0, cond=cond, t=t_all[part], eps=eps_all[part].to(accelerator.device))
                    accelerator.backward(value / cfg.grad_accum)
                step_loss += value.detach().float() / cfg.grad_accum
            mean_loss = accelerator.gather(step_loss.reshape(1)).mean().item() if world > 1 else step_loss.item()
            if not math.isfinite(mean_loss):
                where = f"; the last good checkpoint is {last_path}" if last_path else "; no checkpoint was written yet"
                raise NonFiniteLossError(f"loss became {mean_loss} at step {step}, before the update; "
                                         f"stopped{where}. Expected a finite loss: lower train.lr or check the data")
            if cfg.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(accelerator.unwrap_model(model))
            step += 1
            last_loss = mean_loss
            now = time.perf_counter()
            elapsed = elapsed_before + clock() - start
            window_images += cfg.batch_size
            window_loss += mean_loss
            window_n += 1
            if step % cfg.log_every == 0 or step == 1:
                images_per_s = window_images / max(now - window_t, 1e-9)
                record = {"step": step, "loss": window_loss / window_n, "lr": lr, "images_per_s": images_per_s,
                          "ema_decay": ema.current_decay(), "elapsed_s": elapsed}
                if metrics is not None:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{images_per_s:.0f}", refresh=False)
                window_t, window_images, window_loss, window_n = now, 0, 0.0, 0
            bar.update(1)
            done = (cfg.max_steps is not None and step >= cfg.max_steps) or (stop_at is not None and step >= stop_at)
            done = _any_across(accelerator, done or (budget_s is not None and elapsed >= budget_s))
            if done or step % cfg.checkpoint_every == 0:
                last_path = checkpoint()
            if done:
                break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    accelerator.wait_for_everyone()
    return TrainResult(run_dir, step, last_loss, images_per_s, last_path, accelerator.unwrap_model(model), ema)
