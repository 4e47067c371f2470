"""A run's configuration: data, network, loss, training and sampling (a SolverConfig), as one pydantic model
in YAML.

Every section forbids unknown keys, so a mistyped key is an error that names it. `preset_config` gives
the defaults for a dataset and a loss preset (noisecraft.core.losses.PRESETS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from noisecraft.core.losses import PRESETS, DenoisingLoss, preset
from noisecraft.data import IMAGES, DataConfig
from noisecraft.nets import NetConfig
from noisecraft.solvers.config import SolverConfig
from noisecraft.validation import check_field, describe


class TrainConfig(BaseModel):
    """Optimisation: AdamW with linear warm-up then cosine or constant learning rate (Loshchilov & Hutter 2019)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    batch_size: int = Field(128, ge=1, description="global batch per optimiser step, over all processes")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(100, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_power: float = Field(2 / 3, ge=0)
    max_steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    #: what `minutes` counts: wall-clock time, or this process's CPU time (for fair budgets on shared machines)
    clock: Literal["wall", "process"] = "wall"
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(25, ge=1)
    seed: int = 0
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    num_threads: int | None = Field(None, ge=1)
    #: several processes: "ddp" replicates the weights and averages gradients; "fsdp" shards weights, gradients,
    #: optimiser moments and EMA over the processes (noisecraft.runs.sharding); one process ignores it
    sharding: Literal["ddp", "fsdp"] = "ddp"

    def derived(self, minutes: float | None = None, max_steps: int | None = None, **fields: Any) -> TrainConfig:
        """The train section of a run derived from this one (distillation, reflow, fine-tuning): `fields`
        changed, and the budget replaced by `minutes` / `max_steps` when either is given, else this one's."""
        budget = {"minutes": minutes, "max_steps": max_steps} if minutes is not None or max_steps is not None else {}
        return TrainConfig.model_validate({**self.model_dump(), **fields, **budget})

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.minutes is None:
            raise ValueError("training needs a length: set max_steps, minutes, or both")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by grad_accum {self.grad_accum}")
        return self


class DistillConfig(BaseModel):
    """Where a distilled or reflowed run came from (noisecraft.runs.distill, noisecraft.runs.reflow): its
    teacher, the method and the student's network evaluations per sample (its default sampler's)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    teacher: str = Field(description="the teacher's run directory, or a description of a teacher given as a function")
    method: Literal["consistency", "progressive", "regression", "reflow"]
    steps: int = Field(ge=1, description="network evaluations per sample of the student")
    grid: str | None = Field(None, description="consistency: the named grid the student's times were cut from "
                                               "(None in runs made before it was recorded)")
    t_min: float | None = Field(None, description="consistency: that grid's t_min (None: the schedule's)")
    t_max: float | None = Field(None, description="consistency: that grid's t_max (None: open, step-aware start)")


class LatentConfig(BaseModel):
    """The autoencoder a latent diffusion run lives in (noisecraft.runs.latent): its run directory and the
    digest of its weights and scaling factor, checked whenever the run is trained, resumed or loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    vae: str = Field(description="the autoencoder's run directory (noisecraft vae train)")
    digest: str = Field(pattern=r"^[0-9a-f]{16}$", description="noisecraft.runs.latent.LatentCodec.digest")


class RunConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    data: DataConfig = Field(default_factory=DataConfig)
    model: NetConfig = Field(default_factory=NetConfig)
    loss: DenoisingLoss = Field(default_factory=lambda: preset("edm"))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=1000))
    #: how `sample` draws from the run by default: one SolverConfig, validated when the run config is built
    sample: SolverConfig = Field(default_factory=SolverConfig)
    #: set on a run made by distillation or reflow (noisecraft.runs.distill, .reflow): teacher, method, steps
    distill: DistillConfig | None = None
    #: set on a latent diffusion run: the model is trained on, and samples, the scaled latents of this autoencoder
    latent: LatentConfig | None = None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from noisecraft.io import write_text_atomic

        write_text_atomic(Path(path), self.to_yaml())


def config_from_dict(raw: Any, source: str = "config") -> RunConfig:
    """Validate a plain dict; errors name each bad key by its dotted path, all in one line."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"invalid {source}: {describe(err)}") from None


def load_config(path: str | Path) -> RunConfig:
    """The RunConfig in a YAML file; a missing file, text that is not UTF-8 or not YAML, or a bad key is a
    ValueError naming the file (and the line, for YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start}); expected YAML") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(err)}") from None
    return config_from_dict(raw, source=str(path))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line L: problem' for a PyYAML error (its mark counts lines from 0)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def preset_config(data: str = "digits", loss: str = "edm", **train: Any) -> RunConfig:
    """Defaults for `data` (a built-in name, folder or .npy) trained with loss preset `loss`."""
    if loss not in PRESETS:
        raise ValueError(f"unknown preset {loss!r}; expected one of {list(PRESETS)}")
    data_cfg = DataConfig(name=data)
    image_like = data in IMAGES or Path(data).is_dir()  # toys and .npy arrays are points or vectors
    train_defaults: dict[str, Any] = dict(batch_size=128 if image_like else 512, lr=2e-3 if image_like else 1e-3)
    train_defaults.update({k: v for k, v in train.items() if v is not None})
    if train_defaults.get("max_steps") is None and train_defaults.get("minutes") is None:
        train_defaults["max_steps"] = 2000
    return RunConfig(
        data=data_cfg,
        model=NetConfig(),
        loss=preset(loss),
        train=TrainConfig(**train_defaults),
        sample=SolverConfig(clip=1.0 if image_like else None),
    )


def config_from_options(data: str = "digits", preset_name: str = "edm", loss: str | None = None,
                        config: str | Path | None = None, **train: Any) -> RunConfig:
    """The config `noisecraft train` builds: a YAML file or the preset for `data`, with `loss` replacing the
    preset's loss and the given train fields (None = unchanged) applied; a time budget alone drops the file's
    step budget."""
    for name, value in (("preset", None if config else preset_name), ("loss", loss)):  # named as the options
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown `{name}` {value!r}; expected one of {list(PRESETS)}")
    overrides = {k: check_field(TrainConfig, k, v) for k, v in train.items() if v is not None}
    if config is None:
        raw = preset_config(data, preset_name, **overrides).model_dump()
    else:
        raw = load_config(config).model_dump()
        if "minutes" in overrides and "max_steps" not in overrides:
            overrides["max_steps"] = None
        raw["train"].update(overrides)
    if loss is not None:
        raw["loss"] = preset(loss).model_dump()
    return config_from_dict(raw, source=str(config or "options"))


def default_run_dir(data: str, preset_name: str) -> str:
    """runs/<data name>-<preset>: the stem of a .npy file or the name of an image folder."""
    path = Path(data)
    return f"runs/{path.name if path.is_dir() else path.stem}-{preset_name}"
