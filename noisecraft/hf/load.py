"""Any diffusers UNet2DModel model as a noisecraft Pipeline, the object `load_run` returns: a bare UNet2DModel
folder (config.json and safetensors weights), a DDPMPipeline / DDIMPipeline folder (model_index.json, unet/,
scheduler/scheduler_config.json) or such a pipeline in memory. Every solver, grid, guidance rule, inverse
method and the likelihood then work on it, and `grid="diffusers"` samples on the scheduler's own timesteps
(noisecraft.hf.schedulers).

The scheduler config says what the network is (noisecraft.hf.schedulers.read_scheduler): its schedule, the
parameterization of its output and its time input; the Pipeline's RunConfig records exactly that, the UNet's
shape and classes, and the scheduler's x0 bounds as the default sampler's. A folder without a scheduler is read
as diffusers' DDPMScheduler defaults (1000 linear betas, epsilon). Weights are read from safetensors only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.core.losses import DenoisingLoss
from noisecraft.data import DataConfig
from noisecraft.hf.schedulers import (
    DiffusersScheduler,
    diffusers_grid,
    midpoint_rule,
    read_scheduler,
)
from noisecraft.nets import NetConfig
from noisecraft.nets.unet import UNet
from noisecraft.runs.config import RunConfig
from noisecraft.runs.pipeline import Pipeline, load_run
from noisecraft.solvers.config import SolverConfig

#: how the command line names a diffusers folder in place of a run directory
HF_PREFIX = "hf:"
#: the scheduler a folder without one is read with (diffusers' DDPMScheduler defaults)
DEFAULT_SCHEDULER = {"_class_name": "DDPMScheduler"}
DTYPES = (torch.float32, torch.float64)


class DiffusersUNet(nn.Module):
    """A UNet2DModel behind the denoiser's `fn(x_in, noise_level[, labels])` (noisecraft.nets.unet.UNet, time
    scale 1: the level is the scheduler's own timestep or c_noise), run in its own dtype whatever the caller's,
    its output multiplied by `sign` (-1: an EDM v_prediction network, whose output is -F)."""

    def __init__(self, model: nn.Module, sign: float = 1.0, time_scale: float = 1.0) -> None:
        super().__init__()
        self.unet = UNet.from_diffusers(model, time_scale)
        self.sign = float(sign)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        dtype = self.dtype
        out = self.unet(x.to(dtype), noise_level.to(dtype), cond)
        return (out if self.sign == 1.0 else self.sign * out).to(x.dtype)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); expected a diffusers config") from None
    if not isinstance(value, dict):
        raise ValueError(  # noqa: TRY004 (a bad file, not a caller's wrong type)
            f"{str(path)!r} holds a {type(value).__name__}; expected a JSON object (a diffusers config)")
    return value


def _folder_parts(folder: Path) -> tuple[Path, dict[str, Any], str]:
    """(the UNet's folder, the scheduler config, the file it came from) of a diffusers folder."""
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder; expected a diffusers folder (model_index.json with unet/, "
                         "or a UNet2DModel's config.json)")
    index = folder / "model_index.json"
    if index.is_file():
        entry = _read_json(index).get("unet")
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"{str(index)!r} names no unet; expected a pipeline with a UNet2DModel "
                             "(DDPMPipeline, DDIMPipeline)")
        if entry[1] != "UNet2DModel":
            raise ValueError(f"{str(index)!r}: the unet is a {entry[1]}; expected UNet2DModel")
        unet_dir = folder / "unet"
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
    elif (folder / "unet" / "config.json").is_file():  # unet/ and scheduler/ without a pipeline (an EDM export)
        unet_dir, scheduler_file = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    elif (folder / "config.json").is_file():
        unet_dir, scheduler_file = folder, folder / "scheduler_config.json"
    else:
        raise ValueError(f"{str(folder)!r} holds no model_index.json or config.json; expected a diffusers folder "
                         "with a UNet2DModel (a DDPMPipeline's save_pretrained, or a UNet2DModel's)")
    if scheduler_file.is_file():
        return unet_dir, _read_json(scheduler_file), str(scheduler_file)
    return unet_dir, dict(DEFAULT_SCHEDULER), "diffusers' DDPMScheduler defaults"


def _unet_time_scale(folder: Path | None) -> float:
    """The factor on the scheduler's timesteps the folder's UNet takes: `unet_time_scale` of the noisecraft.json an
    export writes (noisecraft.hf.export; an EDM run's UNet takes 250 c_noise), 1 for any other folder."""
    manifest = None if folder is None else folder / "noisecraft.json"
    if manifest is None or not manifest.is_file():
        return 1.0
    scale = _read_json(manifest).get("unet_time_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
        raise ValueError(f"{str(manifest)!r}: unet_time_scale must be a finite non-zero number, got {scale!r}")
    return float(scale)


def _unet_config(unet_dir: Path) -> tuple[dict[str, Any], str]:
    """The config of the UNet2DModel in `unet_dir` and its file, checked before any weights are read."""
    config_file = unet_dir / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{str(unet_dir)!r} has no config.json; expected a UNet2DModel folder")
    config = _read_json(config_file)
    if config.get("_class_name") != "UNet2DModel":
        raise ValueError(f"{str(config_file)!r} describes a {config.get('_class_name')}; expected UNet2DModel")
    if not any(unet_dir.glob("*.safetensors")):
        raise ValueError(f"{str(unet_dir)!r} has no .safetensors weights; expected diffusion_pytorch_model.safetensors "
                         "(pickled .bin weights are not loaded)")
    return config, str(config_file)


def _check_unet(config: dict[str, Any], source: str) -> None:
    """The UNet2DModel features the denoiser contract covers: the DDPM timestep embedding, label embeddings."""
    embedding = config.get("time_embedding_type", "positional")
    if embedding != "positional":
        raise ValueError(f"{source}: time_embedding_type {embedding!r} is not supported; expected 'positional' "
                         "(the DDPM timestep embedding)")
    if config.get("num_class_embeds") is not None and config.get("class_embed_type") is not None:
        raise ValueError(f"{source}: class_embed_type {config['class_embed_type']!r} is not supported; expected None "
                         "(a label embedding of num_class_embeds rows)")


def _scheduler_dict(scheduler: Any) -> dict[str, Any]:
    """An in-memory diffusers scheduler's config as the dict its scheduler_config.json would hold."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {"_class_name": type(scheduler).__name__, **config}


def _sample_shape(unet: nn.Module) -> tuple[int, int, int]:
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(unet.config.in_channels), int(h), int(w)


def run_config(unet: nn.Module, spec: DiffusersScheduler, name: str) -> RunConfig:
    """A RunConfig that describes the loaded model: its UNet's levels and classes, the scheduler's schedule,
    parameterization and time input (trained as diffusers trains: uniform timesteps, or EDM's weighting), and
    a default sampler bounded as the scheduler bounds x0_hat. `name` stands for the data (not readable here)."""
    config = unet.config
    attention = ["Attn" in block for block in config.down_block_types]
    model = NetConfig(kind="unet", block_channels=list(config.block_out_channels), attention=attention,
                      layers_per_block=int(config.layers_per_block), num_classes=config.num_class_embeds,
                      time_scale=1.0)
    vp, flow = spec.time_input == "timestep", spec.parameterization == "flow"
    times = "discrete" if vp else "logit_normal" if flow else "log_normal"
    loss = DenoisingLoss(schedule=spec.schedule, parameterization=spec.parameterization, time_input=spec.time_input,
                         time_distribution=times, weighting="prediction" if vp or flow else "edm",
                         sigma_data=spec.sigma_data)
    return RunConfig(data=DataConfig(name=name), model=model, loss=loss,
                     sample=SolverConfig(clip=spec.clip, threshold=spec.threshold))


def diffusers_grid_option(spec: DiffusersScheduler) -> Callable[[SolverConfig], tuple[SolverConfig, str]]:
    """The Pipeline's "diffusers" grid: a SolverConfig's `steps` network evaluations on the scheduler's own times
    (noisecraft.hf.schedulers.diffusers_grid), with its final step, a note naming them, and dpm++2m on the
    scheduler's own second-order rule (midpoint_rule)."""
    def apply(cfg: SolverConfig) -> tuple[SolverConfig, str]:
        grid = diffusers_grid(spec.config, cfg.steps, spec.source)
        options = {"midpoint": True, **cfg.options} if cfg.solver == "dpm++2m" and midpoint_rule(spec) else None
        return cfg.override(grid=grid.times, steps=len(grid.times) - 1, denoise_final=grid.denoise_final,
                            options=options), grid.note

    return apply


def _in_memory(source: Any) -> tuple[nn.Module, dict[str, Any], str]:
    """(UNet2DModel, scheduler config, where it came from) of a pipeline object or a bare UNet2DModel."""
    unet = getattr(source, "unet", source)
    if type(unet).__name__ != "UNet2DModel":
        raise ValueError(f"expected a diffusers folder, a pipeline with a UNet2DModel `unet` or a UNet2DModel, got "
                         f"{type(source).__name__}")
    scheduler = getattr(source, "scheduler", None)
    if scheduler is None:
        return unet, dict(DEFAULT_SCHEDULER), "diffusers' DDPMScheduler defaults"
    return unet, _scheduler_dict(scheduler), f"the {type(scheduler).__name__} config"


def _placed(unet: nn.Module, dtype: torch.dtype | None, device: torch.device | None) -> nn.Module:
    """An in-memory UNet in `dtype` on `device` (None: as it is; float32 unless it is float64): itself, or a
    copy if it must change, so the caller's model is left as it was."""
    param = next(unet.parameters())
    dtype = dtype or (param.dtype if param.dtype in DTYPES else torch.float32)
    if param.dtype == dtype and (device is None or param.device == device):
        return unet
    import copy

    return copy.deepcopy(unet).to(dtype=dtype, device=device or param.device)


def _replaced(config: dict[str, Any], where: str, scheduler: str | dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The scheduler config `from_diffusers(scheduler=...)` asks for: the source's, read as another class, or a
    new one."""
    if scheduler is None:
        return config, where
    if isinstance(scheduler, dict):
        return scheduler, "the `scheduler` config"
    if isinstance(scheduler, str):
        return {**config, "_class_name": scheduler}, f"{where} read as {scheduler}"
    raise ValueError(f"`scheduler` must be a scheduler class name or a config dict, got {type(scheduler).__name__}")


def from_diffusers(source: str | Path | Any, scheduler: str | dict[str, Any] | None = None,
                   device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                   eval_batch: int | None = None) -> Pipeline:
    """A diffusers UNet2DModel model as a Pipeline (noisecraft.runs.pipeline): a folder, a pipeline object
    (DDPMPipeline, DDIMPipeline) or a bare UNet2DModel.

    `scheduler` replaces the source's: a class name reads its config as that class (diffusers'
    `Other.from_config(config)`), a dict is the whole config. `dtype` is float32 or float64 (float32 for a
    folder and an object's own by default; a float64 network samples in float64). `device` is the CPU for a
    folder and the model's own for an object by default; an object's UNet is shared, not copied, unless it must
    change dtype or device. The Pipeline samples with noisecraft's defaults, or with `grid="diffusers"` on the
    scheduler's own timesteps. Every config is checked before the weights are read; errors name the file and
    what was expected."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
    if device is not None:
        device = torch.device(device)
    folder = Path(source) if isinstance(source, (str, Path)) else None
    if folder is not None:
        unet_dir, config, where = _folder_parts(folder)
        unet_config, unet_source = _unet_config(unet_dir)
    else:
        unet, config, where = _in_memory(source)
        unet_config, unet_source = dict(unet.config), "the UNet2DModel config"
    _check_unet(unet_config, unet_source)
    spec = read_scheduler(*_replaced(config, where, scheduler))
    if folder is not None:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=dtype or torch.float32)
        unet = unet.to(device or "cpu")
    else:
        unet = _placed(unet, dtype, device)
    net = DiffusersUNet(unet, spec.output_sign, spec.time_scale * _unet_time_scale(folder)).eval()
    name = f"{HF_PREFIX}{folder}" if folder is not None else f"{HF_PREFIX}{type(source).__name__} in memory"
    return Pipeline(run_config(unet, spec, name), net, _sample_shape(unet), True, 0, folder, eval_batch=eval_batch,
                    grids={"diffusers": diffusers_grid_option(spec)})


def run_folder(run: str | Path) -> Path:
    """The folder a command line's RUN argument names: a run directory, or the folder of `hf:PATH`."""
    text = str(run)
    return Path(text.removeprefix(HF_PREFIX))


def load_pipeline(run: str | Path, ema: bool = True, device: str | torch.device = "cpu",
                  eval_batch: int | None = None) -> Pipeline:
    """A run directory (`load_run`) or, spelled `hf:PATH`, a diffusers folder (`from_diffusers`; `ema` does not
    apply): what the command line's RUN argument names."""
    text = str(run)
    if text.startswith(HF_PREFIX):
        return from_diffusers(text[len(HF_PREFIX):], device=device, eval_batch=eval_batch)
    return load_run(run, ema=ema, device=device, eval_batch=eval_batch)


__all__ = ["HF_PREFIX", "DiffusersUNet", "diffusers_grid_option", "from_diffusers", "load_pipeline", "run_config", "run_folder"]
