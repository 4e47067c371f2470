"""Fine-tuning a trained run on new data (transfer learning): a new run whose network starts from the base
run's EMA weights and is trained by the one loop (noisecraft.runs.train) on `data`, for a new budget.

The base's network, loss, schedule and default sampler are kept; its data and budget are replaced. Full
fine-tuning trains every weight. An `adapt` function changes what trains before the optimiser sees the
network: LoRA (Hu et al. 2021, noisecraft.hf.lora) adds low-rank adapters and freezes every base weight.
The new directory is an ordinary run directory (config.yaml with the new data, checkpoints/, metrics.jsonl)
and records its base in finetune.json. Like distillation, fine-tuning starts fresh: it refuses a directory
that holds checkpoints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisecraft.data import DataConfig
from noisecraft.io import write_text_atomic
from noisecraft.runs.checkpoint import check_new_run_dir
from noisecraft.runs.config import RunConfig, TrainConfig
from noisecraft.runs.pipeline import Pipeline, load_run
from noisecraft.runs.train import Adapt, TrainResult, train
from noisecraft.validation import check_field

FINETUNE_FILE = "finetune.json"


@dataclass
class FinetuneResult:
    run_dir: Path
    base: Path
    train: TrainResult
    seconds: float


def as_data_config(data: str | DataConfig) -> DataConfig:
    """A data name (built-in, image folder, .npy) or a DataConfig, as a DataConfig."""
    return data if isinstance(data, DataConfig) else DataConfig(name=str(data))


def check_fits_base(data: DataConfig, base: Pipeline) -> None:
    """A ValueError when `data` cannot train the base run's network: another sample shape, or no labels for a
    class-conditional network."""
    loaded = data.load()
    if tuple(loaded.sample_shape) != tuple(base.sample_shape):
        raise ValueError(f"`data` {data.name!r} has samples of shape {loaded.sample_shape}; the base run "
                         f"{base.run_dir} models shape {tuple(base.sample_shape)}")
    if base.config.model.num_classes is not None and loaded.labels is None:
        raise ValueError(f"`data` {data.name!r} has no labels; the base run {base.run_dir} is class-conditional")


def check_run_dir(run_dir: Path) -> None:
    """A ValueError unless `run_dir` can receive a new fine-tuned run (absent, or a folder without checkpoints)."""
    check_new_run_dir(run_dir, "run_dir", "the fine-tuned run")


def finetune_config(base: RunConfig, data: DataConfig, minutes: float | None, max_steps: int | None,
                    train_options: dict[str, Any]) -> RunConfig:
    """The base's config with `data`, the given budget (the base's own when neither is given) and train fields."""
    return base.model_copy(update={"data": data, "train": base.train.derived(minutes, max_steps, **train_options)})


def finetune(base_run: str | Path, data: str | DataConfig, run_dir: str | Path, minutes: float | None = None,
             max_steps: int | None = None, *, adapt: Adapt | None = None, method: str = "full",
             progress: bool = True, **train_options: Any) -> FinetuneResult:
    """Fine-tune the run in `base_run` on `data` into a new run in `run_dir`, from the base's EMA weights, for
    `minutes` or `max_steps` (default: the base's budget). `adapt(net) -> net` changes what trains (None: every
    weight, full fine-tuning); `method` names it in finetune.json. `train_options`: fields of the train section
    (lr, batch_size, seed, clock, ...; None keeps the base's)."""
    minutes = None if minutes is None else check_field(TrainConfig, "minutes", minutes)
    max_steps = None if max_steps is None else check_field(TrainConfig, "max_steps", max_steps)
    train_options = {k: check_field(TrainConfig, k, v) for k, v in train_options.items() if v is not None}
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    base = load_run(base_run)
    data = as_data_config(data)
    check_fits_base(data, base)
    config = finetune_config(base.config, data, minutes, max_steps, train_options)
    init = {k: v.clone() for k, v in base.net.state_dict().items()}
    start = time.perf_counter()
    result = train(config, run_dir, progress=progress, init=init, adapt=adapt)
    write_text_atomic(run_dir / FINETUNE_FILE, json.dumps(
        {"base": str(base_run), "base_step": base.step, "method": method, "steps": result.step}, indent=2))
    return FinetuneResult(run_dir, Path(base_run), result, time.perf_counter() - start)


__all__ = ["FINETUNE_FILE", "FinetuneResult", "finetune", "finetune_config"]
