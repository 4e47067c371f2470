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
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noisecraft.data import Dataset
from noisecraft.io import remove_stale_temps, write_text_atomic
from noisecraft.runs import distributed
from noisecraft.runs.checkpoint import (
    GROUPS,
    check_weights,
    checkpoints,
    newest_intact,
    optimizer_from_tensors,
    optimizer_to_tensors,
    remove_checkpoint,
    remove_orphans,
    rng_from_tensors,
    rng_to_tensors,
    save_checkpoint,
)
from noisecraft.runs.config import RunConfig, TrainConfig, load_config
from noisecraft.runs.ema import EMA
from noisecraft.runs.latent import training_data
from noisecraft.runs.lock import run_lock
from noisecraft.runs.loop import (
    Loop,
    LoopState,
    NonFiniteLossError,
    batch_indices,
    budget_spent,
    make_optimizer,
    reached_end,
    step_generator,
)
from noisecraft.runs.sharding import (
    full_optimizer_state,
    full_state,
    shard_model,
    shard_optimizer_state,
    shard_shadows,
)
from noisecraft.runs.threads import use_threads

__all__ = ["NonFiniteLossError", "TrainResult", "check_resume_options", "conditions", "process_slice", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    images_per_s: float
    checkpoint: Path | None
    model: torch.nn.Module | None = None  # the trained network (unwrapped), this process's copy
    ema: EMA | None = None
    note: str = ""  # why nothing was trained (a finished run resumed), else empty


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

    def loss(self, x0: Tensor, cond: Tensor | None, d: dict, part: slice) -> Tensor:
        """The scalar loss of one micro-batch: clean samples x0, their conditions, and the part `part` of the
        step's draws `d` (a subclass replaces it: distillation, noisecraft.runs.distill)."""
        return self.config.loss(self.denoiser, x0, cond=cond, t=d["t"][part], eps=d["eps"][part].to(x0.device))

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
                value = self.loss(x0, self._cond(d, idx, part), d, part)
                acc.backward(value / cfg.grad_accum)
            total += value.detach().float() / cfg.grad_accum
        # The step's tensors stay referenced until the next step, as in a plain inline loop: freed before the
        # optimiser update, glibc returns the heap top to the OS and faults it back every step (measured on CPU:
        # 2.8x the minor page faults, ~5% slower steps).
        self._last_step = (d, x0, value)
        return total


#: builds a run's per-step loss from (config, data, model, accelerator): DiffusionStep or a subclass
StepFactory = Callable[[RunConfig, Dataset, torch.nn.Module, Any], DiffusionStep]
#: changes a freshly built network before the optimiser and EMA see it (adds layers, freezes weights)
Adapt = Callable[[torch.nn.Module], torch.nn.Module]


def _run_config(config: RunConfig | None, run_dir: Path, resume: bool, overwrite: bool) -> RunConfig:
    """The config to train: the run's own on resume (a given one must equal it), else the given one."""
    if resume and overwrite:
        raise ValueError("pass `resume` or `overwrite`, not both")
    if not resume:
        if config is None:
            raise ValueError("pass a config, or resume=True with a run directory that holds one")
        return config
    if config is not None:
        check_resume_options(run_dir, config=config)
    return _own_config(run_dir)


def _own_config(run_dir: Path) -> RunConfig:
    """The config.yaml of a run to resume."""
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"cannot resume: {str(run_dir)!r} has no config.yaml")
    config = load_config(run_dir / "config.yaml")
    if config.distill is not None:  # the diffusion loss would undo what distillation taught it
        raise ValueError(f"cannot resume: {str(run_dir)!r} is a student made by {config.distill.method} "
                         "distillation (noisecraft distill), not a diffusion run; distil again into a new directory")
    return config


def _differences(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs, the step budget (train.max_steps) aside."""
    def flat(raw: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in raw.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    fa, fb = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    return [k for k in sorted(fa.keys() | fb.keys()) if k != "train.max_steps" and fa.get(k) != fb.get(k)]


def check_resume_options(run_dir: str | Path, data: str | None = None, preset: str | None = None,
                         loss: str | None = None, config: RunConfig | str | Path | None = None,
                         batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
                         minutes: float | None = None, latent: str | Path | None = None) -> None:
    """A ValueError naming the first given option (None = not given) that would change the config of the run
    in `run_dir`: a resumed run keeps its config.yaml, only `max_steps` can extend it."""
    from noisecraft.core.losses import PRESETS
    from noisecraft.core.losses import preset as loss_preset

    run = _own_config(Path(run_dir))
    asked = {"data": (data, run.data.name), "batch_size": (batch_size, run.train.batch_size),
             "lr": (lr, run.train.lr), "seed": (seed, run.train.seed), "minutes": (minutes, run.train.minutes)}
    if loss or preset:
        own = next((name for name in PRESETS if loss_preset(name) == run.loss), "a custom loss")
        asked["loss" if loss else "preset"] = (loss or preset, own)
    if latent is not None:  # the autoencoder's directory, compared as a path
        asked["latent"] = (str(Path(latent).resolve()), run.latent and run.latent.vae)
    for name, (value, own) in asked.items():
        if value is not None and value != own:
            raise ValueError(f"`{name}` {value} differs from the run's config ({own}); a resumed run keeps its "
                             "config.yaml (only `max_steps` extends it)")
    if config is not None:
        changed = _differences(config if isinstance(config, RunConfig) else load_config(config), run)
        if changed:
            raise ValueError(f"`config` differs from the run's config.yaml in {', '.join(changed[:4])}; a resumed "
                             "run keeps its config.yaml (only `max_steps` extends it)")


def _claim_fresh(run_dir: Path, overwrite: bool, main: bool) -> None:
    """A fresh run: a directory with checkpoints is refused unless `overwrite`, which clears them first."""
    found = checkpoints(run_dir / "checkpoints")
    if found and not overwrite:
        raise ValueError(f"{str(run_dir)!r} already holds a trained run ({found[0].name}); pass `resume` to "
                         "continue it, `overwrite` to replace it, or choose a new directory")
    if overwrite and main:
        for path in found:
            remove_checkpoint(path)


def _start(run_dir: Path, resume: bool, overwrite: bool, main: bool) -> tuple[Path, dict, dict] | None:
    """(path, tensors, state) of the checkpoint to resume from, the newest intact one; None for a fresh run."""
    if not resume:
        _claim_fresh(run_dir, overwrite, main)
        return None
    if main:  # under the run's lock: what a crashed process left is no one's
        remove_stale_temps(run_dir)
        remove_orphans(run_dir / "checkpoints")
    return newest_intact(run_dir / "checkpoints", GROUPS)



def _with_max_steps(config: RunConfig, max_steps: int | None, meta: dict | None, run_dir: Path) -> RunConfig:
    """`config` with the step budget `max_steps`; on resume it must exceed the steps done, and a spent time
    budget is dropped so the run extends to max_steps."""
    if max_steps is None:
        return config
    done = meta["step"] if meta else 0
    if max_steps < 1 or max_steps <= done:
        raise ValueError(f"`max_steps` {max_steps} must exceed the {done} steps run {run_dir} has done"
                         if done else f"`max_steps` must be >= 1, got {max_steps}")
    cfg = config.train
    spent = meta is not None and budget_spent(cfg, meta.get("elapsed_s", 0.0))
    train_cfg = TrainConfig.model_validate({**cfg.model_dump(), "max_steps": max_steps,
                                            "minutes": None if spent else cfg.minutes})
    return config.model_copy(update={"train": train_cfg})


def _write_run_files(run_dir: Path, config: RunConfig, data: Dataset, step: int) -> None:
    """config.yaml, data.json, and metrics.jsonl cut back to `step` (the lines an interrupted attempt logged
    after its checkpoint, and a torn last line, would repeat or garble the log)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    write_text_atomic(run_dir / "data.json", json.dumps(
        {"name": data.name, "sample_shape": list(data.sample_shape), "is_image": data.is_image,
         "num_classes": data.num_classes, "n": len(data)}))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        kept = [line for line in metrics.read_text().splitlines() if _logged_step(line) <= step]
        write_text_atomic(metrics, "".join(line + "\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; inf for a line that does not parse."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _restore(start: tuple[Path, dict, dict], net: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema: EMA) -> LoopState:
    """Weights, optimiser, EMA and RNG state of a checkpoint; the loop continues from its step."""
    path, tensors, meta = start
    check_weights(net.state_dict(), tensors["model"], path / "model.safetensors")
    check_weights(ema.state_dict(), tensors["ema"], path / "ema.safetensors")
    try:
        net.load_state_dict(tensors["model"])
        optimizer.load_state_dict(optimizer_from_tensors(tensors["optimizer"], meta["optimizer"]))
        ema.load_state_dict(tensors["ema"], meta["ema_updates"])
        rng_from_tensors(tensors["rng"], meta["rng"])
        return LoopState(step=meta["step"], elapsed=meta["elapsed_s"])
    except KeyError as err:
        raise ValueError(f"checkpoint {path} lacks {err}; expected a training checkpoint") from None
    except (ValueError, RuntimeError, IndexError) as err:
        raise ValueError(f"checkpoint {path} does not fit the run's network or optimiser: {err}") from None


def _saver(loop: Loop, ckpt_dir: Path) -> Any:
    """The loop's checkpoint callback: every process waits, the main one writes (atomically)."""
    acc = loop.accelerator

    def save(state: LoopState) -> Path | None:
        acc.wait_for_everyone()
        path = None
        # whole tensors, gathered by every process from FSDP's shards (as they are under DDP)
        model_state, ema_state = full_state(loop.unwrapped().state_dict()), full_state(loop.ema.state_dict())
        opt_state = full_optimizer_state(loop.optimizer.state_dict())
        if acc.is_main_process:
            opt_tensors, opt_meta = optimizer_to_tensors(opt_state)
            rng_tensors, rng_meta = rng_to_tensors()
            path = save_checkpoint(
                ckpt_dir, state.step,
                {"model": model_state, "ema": ema_state, "optimizer": opt_tensors, "rng": rng_tensors},
                {"elapsed_s": state.elapsed, "ema_updates": loop.ema.updates, "optimizer": opt_meta, "rng": rng_meta,
                 "world_size": acc.num_processes},
                keep=loop.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    return save


def train(config: RunConfig | None, run_dir: str | Path, resume: bool = False, max_steps: int | None = None,
          overwrite: bool = False, stop_at: int | None = None, progress: bool = True,
          make_step: StepFactory = DiffusionStep, init: dict[str, Tensor] | None = None,
          adapt: Adapt | None = None) -> TrainResult:
    """Train `config` in `run_dir` (config.yaml, data.json, checkpoints/, metrics.jsonl).

    A directory that holds checkpoints is refused unless overwrite=True, which clears them first. With
    resume=True the config is read from run_dir (a given `config` must equal it) and training continues from
    the newest intact checkpoint; a finished run (max_steps reached or time budget spent) is left as it is,
    with `note` saying so. `max_steps` replaces the step budget; on resume it extends the run (it must exceed
    the steps done) and is recorded in config.yaml. One process at a time trains a run directory (an OS lock
    on run_dir/.lock). `stop_at` stops after that step with a checkpoint, as an interruption would (tests).
    `make_step(config, data, model, accelerator)` builds the per-step loss (a DiffusionStep subclass: reflow,
    noisecraft.runs.reflow); `init`, a state dict, starts a fresh run from those weights instead of random ones.
    `adapt(net) -> net` changes the built (and initialised) network before the optimiser and EMA see it, on a
    fresh run and on resume alike: it may add layers and freeze weights (LoRA adapters, noisecraft.hf.lora);
    a frozen weight gets no gradient, so AdamW leaves it as it is.
    """
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    config = _run_config(config, run_dir, resume, overwrite)
    # cpu=True when there is no GPU: Accelerate then reads torchrun's env as a gloo process group
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.train.mixed_precision),
                              cpu=not torch.cuda.is_available())
    if accelerator.num_processes > 1:
        distributed.leave_at_exit()
    with _fresh_dir_removed_on_failure(run_dir), \
            run_lock(run_dir) if accelerator.is_main_process else contextlib.nullcontext():
        start = _start(run_dir, resume, overwrite, accelerator.is_main_process)
        done = start is not None and reached_end(config.train, start[2]["step"], start[2].get("elapsed_s", 0.0))
        if done and max_steps is None:
            step = start[2]["step"]
            return TrainResult(run_dir, step, math.nan, 0.0, start[0], note=(
                f"run {run_dir} is finished at step {step}; pass `max_steps` M > {step} to extend it"))
        config = _with_max_steps(config, max_steps, start and start[2], run_dir)
        return _fit(config, run_dir, accelerator, start, stop_at, progress, make_step, init, adapt)


@contextlib.contextmanager
def _fresh_dir_removed_on_failure(run_dir: Path) -> Any:
    """A run directory this call creates is removed again when training fails before config.yaml is written
    (a bad data path, say), so bad input leaves nothing behind."""
    fresh = not run_dir.exists()
    try:
        yield
    except BaseException:
        if fresh and run_dir.is_dir() and not (run_dir / "config.yaml").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _sharded(net: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA, cfg: TrainConfig,
             device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """FSDP (noisecraft.runs.sharding): the network sharded over the processes, a new optimiser on its shards
    holding the (restored) moments, the EMA averaging its own shard."""
    whole = optimizer.state_dict()
    net = shard_model(net, device)
    optimizer = make_optimizer(cfg, net)
    optimizer.load_state_dict(shard_optimizer_state(whole, list(net.parameters())))
    ema.shadow = shard_shadows(ema.shadow, net)
    return net, optimizer


def _fit(config: RunConfig, run_dir: Path, accelerator: Any, start: tuple[Path, dict, dict] | None,
         stop_at: int | None, progress: bool, make_step: StepFactory = DiffusionStep,
         init: dict[str, Tensor] | None = None, adapt: Adapt | None = None) -> TrainResult:
    """Build the network (weights `init` on a fresh run, then `adapt`), restore `start` (None: fresh) and run
    the loop with the step `make_step` builds, logging to metrics.jsonl."""
    cfg = config.train
    threads = use_threads(cfg.num_threads)  # one per CPU other processes leave free (runs.threads)
    if progress and accelerator.is_main_process:
        print(threads, flush=True)
    data = training_data(config)  # a latent run's data are its autoencoder's scaled latents
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    net = config.model.build(data.sample_shape, config.loss.time_input)
    if init is not None and start is None:
        check_weights(net.state_dict(), init, "the initial weights")
        net.load_state_dict(init)
    if adapt is not None:
        net = adapt(net)
    optimizer = make_optimizer(cfg, net)
    ema = EMA(net, cfg.ema_decay, cfg.ema_power)
    state = _restore(start, net, optimizer, ema) if start is not None else LoopState()
    if accelerator.is_main_process:
        _write_run_files(run_dir, config, data, state.step)
    if cfg.sharding == "fsdp" and accelerator.num_processes > 1:
        model, optimizer = _sharded(net, optimizer, ema, cfg, accelerator.device)
        optimizer = accelerator.prepare(optimizer)  # the sharded module is not wrapped again (DDP)
    else:
        model, optimizer = accelerator.prepare(net, optimizer)
    loop = Loop(cfg, model, optimizer, ema, make_step(config, data, model, accelerator), accelerator,
                items_per_step=cfg.batch_size)
    loop.on_checkpoint = _saver(loop, run_dir / "checkpoints")
    state.checkpoint = start[0] if start is not None and accelerator.is_main_process else None
    with open(run_dir / "metrics.jsonl", "a") if accelerator.is_main_process else contextlib.nullcontext() as metrics:
        if metrics is not None:
            loop.on_log = lambda record: (metrics.write(json.dumps(record) + "\n"), metrics.flush())
        loop.run(state, stop_at, progress, desc=f"train {data.name}")
    accelerator.wait_for_everyone()
    return TrainResult(run_dir, state.step, state.loss, state.items_per_s, state.checkpoint,
                       accelerator.unwrap_model(model), ema)
