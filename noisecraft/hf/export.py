"""A run exported as a diffusers folder: `unet/` (UNet2DModel), `scheduler/` (the diffusers scheduler of the
run's schedule and parameterization), `model_index.json` where DDPMPipeline samples it, and `noisecraft.json`.

The network's weights are written unchanged, except where a run's noise level differs from diffusers'
timestep by a constant: the sinusoidal time embedding (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020,
appendix B) of n + delta is an exact rotation of the embedding of n, frequency by frequency,
    cos(w (n + delta)) = cos(w n) cos(w delta) - sin(w n) sin(w delta),
    sin(w (n + delta)) = sin(w n) cos(w delta) + cos(w n) sin(w delta),
so the offset folds into the first linear layer after the embedding. A constant *factor* cannot be folded:
UNet2DModel's positional embedding has the frequencies 10000^(-k / (h - freq_shift)), k < h, which always
include 1, while a run's are time_scale 10000^(-k / h); sinusoids of different frequencies are linearly
independent, so no freq_shift and no weights reproduce them, and the other embeddings ("fourier" takes
log(timestep) and divides the output by the timestep; "learned" is a table of integers) do not either.

Which diffusers scheduler, and how exact (diffusers only evaluates the network at its own timesteps):
- VP schedules (DiscreteVP, VPLinear, VPCosine) with eps, v or x0 prediction -> DDPMScheduler (DDIM and
  DPM-Solver load the same folder) and DDPMPipeline. A DiscreteVP table is written as it is; a continuous
  schedule as the table alpha_bar_n = alpha^2((n + 1)/N), the node noisecraft's DiscreteVP puts at timestep
  n, so the folder is exact at every diffusers timestep (to diffusers' float32 table) but the last of
  VPCosine, where alpha(1) = 0 and the beta is capped at 0.999 as diffusers' squaredcos_cap_v2 caps it (that
  node lies past the run's t_max).
  A run fed t scaled by N sees n + 1 where diffusers passes n: the offset is folded into the weights.
- EDM preconditioning (Karras et al. 2022) on an alpha = 1 schedule (EDM, VE) ->
  EDMDPMSolverMultistepScheduler (EDMEulerScheduler loads the same folder). diffusers' EDM schedulers pass
  the UNet c_noise = log(sigma)/4 itself; noisecraft's UNet takes time_scale * c_noise (250 by default), a
  factor that by the argument above no UNet2DModel config can carry, so a loop calls
  `unet(x_in, unet_time_scale * t)` (docs/hf.md) and there is no model_index.json.
- Rectified flow with the velocity u = eps - x0 (Esser et al. 2024, sec. 3.1) ->
  FlowMatchEulerDiscreteScheduler, whose timestep is sigma N = t N.
Anything else (vector/MLP runs, text-conditioned runs, score prediction, sub-VP, ...) is a ValueError naming
what has no diffusers counterpart, raised before anything is written.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from noisecraft.core.denoiser import Denoiser
from noisecraft.core.schedules import (
    EDM,
    VE,
    DiscreteVP,
    RectifiedFlow,
    Schedule,
    VPCosine,
    VPLinear,
)
from noisecraft.core.tensors import FLOAT64
from noisecraft.hf.load import DiffusersUNet, load_pipeline
from noisecraft.hf.schedulers import scheduler_config
from noisecraft.io import check_output_folder
from noisecraft.nets.unet import UNet
from noisecraft.runs.pipeline import Pipeline

#: the parameterizations a DDPM table's schedulers take (diffusers' prediction_type epsilon, v_prediction, sample)
VP_PARAMETERIZATIONS = ("eps", "v", "x0")
#: sample_max_value of a dynamic threshold without a clip: no cap (noisecraft.core.bounds)
NO_CAP = 1e9
#: the largest beta of a continuous schedule's table (diffusers' betas_for_alpha_bar, max_beta)
MAX_BETA = 0.999
#: the file in an export that says how it was made and how its UNet is called
MANIFEST = "noisecraft.json"


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: the scheduler class and config, the pipeline class (None: no model_index.json),
    the factor a sampling loop multiplies the scheduler's timesteps by before calling the UNet
    (`unet_time_scale`, 1 where diffusers' own pipelines work) and the offset of the run's noise level from
    that product (`time_shift`), folded into the time-embedding weights."""

    scheduler_class: str
    scheduler_config: dict[str, Any]
    pipeline_class: str | None
    unet_time_scale: float
    time_shift: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiffusersExport:
    """The folder written by `export_diffusers`, and the plan it followed."""

    path: Path
    plan: ExportPlan
    step: int
    files: tuple[str, ...] = field(default=())


# -- the plan ------------------------------------------------------------------------------------------------
def plan_export(pipeline: Pipeline) -> ExportPlan:
    """How `pipeline` maps onto diffusers' classes, or a ValueError naming what has no counterpart."""
    unet = _diffusers_unet(pipeline)
    denoiser = pipeline.network
    if not isinstance(denoiser, Denoiser):
        raise ValueError(  # noqa: TRY004 (a run without a counterpart: one error type at the boundary)
            f"the run's network is a {type(denoiser).__name__}, not a Denoiser; expected a run loaded by "
            "nc.load_run or nc.from_diffusers")
    kind, schedule, time_input = denoiser.parameterization, denoiser.schedule, denoiser.time_input
    scale = float(unet.time_scale)
    if kind in VP_PARAMETERIZATIONS and _is_vp(schedule):
        plan = _plan_vp(pipeline, schedule, kind, time_input, scale)
    elif kind == "edm" and isinstance(schedule, (EDM, VE)):
        plan = _plan_edm(pipeline, denoiser, schedule, time_input, scale)
    elif kind == "flow" and isinstance(schedule, RectifiedFlow):
        plan = _plan_flow(schedule, time_input, scale)
    else:
        raise ValueError(f"parameterization {kind!r} on schedule {type(schedule).__name__} has no diffusers "
                         "counterpart; expected eps, v or x0 on a VP schedule (DiscreteVP, VPLinear, VPCosine), "
                         "edm on EDM or VE, or flow on RectifiedFlow")
    if unet.model.config.num_class_embeds is not None or plan.unet_time_scale != 1.0:
        plan = ExportPlan(plan.scheduler_class, plan.scheduler_config, None, plan.unet_time_scale,
                          plan.time_shift, plan.notes + _why_no_pipeline(unet, plan))
    return plan


def _diffusers_unet(pipeline: Pipeline) -> UNet:
    """The run's UNet wrapper (or the one inside a folder loaded by nc.from_diffusers), or a ValueError for
    networks diffusers has no class for."""
    net = pipeline.net
    if isinstance(net, DiffusersUNet):
        if net.sign != 1.0:
            raise ValueError("the network's output is -F (an EDM v_prediction folder); expected an EDM epsilon "
                             "network, the one preconditioning export writes")
        net = net.unet
    if not isinstance(net, UNet):
        raise ValueError(  # noqa: TRY004 (a run without a counterpart: one error type at the boundary)
            f"the run's network is {type(net).__name__} on samples of shape {pipeline.sample_shape}; "
            "diffusers' counterpart here is UNet2DModel, for image runs only")
    if net.text_dim is not None:
        raise ValueError(f"the run is text-conditioned (sentence embeddings of width {net.text_dim} through a "
                         "projection outside UNet2DModel); diffusers' UNet2DModel has no counterpart")
    return net


def _is_vp(schedule: Schedule) -> bool:
    return type(schedule) in (DiscreteVP, VPLinear, VPCosine)  # SubVP subclasses VPLinear but is not VP


def _plan_vp(pipeline: Pipeline, schedule: Schedule, parameterization: str, time_input: str,
             scale: float) -> ExportPlan:
    """DDPMScheduler on the run's beta table; the UNet sees scale (n + 1) / N (t) or scale n (timestep)."""
    if time_input not in ("t", "timestep"):
        raise ValueError(f"time_input {time_input!r} on a VP schedule has no diffusers counterpart: diffusers "
                         "passes the UNet the integer timestep n; expected time_input 't' or 'timestep'")
    table = schedule if isinstance(schedule, DiscreteVP) else vp_table(schedule, _table_length(scale))
    factor = scale / table.N if time_input == "t" else scale
    shift = factor if time_input == "t" else 0.0  # t_n = (n + 1) / N: the network sees factor n + factor
    clip, threshold = pipeline.config.sample.clip, pipeline.config.sample.threshold
    bounds = {} if threshold is None else {"thresholding": True, "dynamic_thresholding_ratio": threshold,
                                           "sample_max_value": clip or NO_CAP}
    config = scheduler_config(table, parameterization, "DDPMScheduler", clip=None if threshold else clip, **bounds)
    notes = () if table is schedule else (
        f"{type(schedule).__name__} written as its {table.N}-entry table alpha_bar_n = alpha^2((n + 1)/{table.N}): "
        "exact at every diffusers timestep" + (f" but the last, where beta is capped at {MAX_BETA}"
                                               if max(table.betas) == MAX_BETA else ""),)
    return ExportPlan("DDPMScheduler", config, "DDPMPipeline", factor, shift, notes)


def _table_length(scale: float) -> int:
    """N of the table a continuous schedule is written as: the run's time scale (t N = the timestep + 1)."""
    return int(scale) if scale >= 2 and scale == int(scale) else 1000


def vp_table(schedule: Schedule, num_timesteps: int) -> DiscreteVP:
    """A VP schedule as the DDPM table alpha_bar_n = alpha^2((n + 1) / N) (Ho et al. 2020, eq. 4): betas from
    consecutive ratios, float64, capped at 0.999 as diffusers caps its cosine table (alpha(1) = 0)."""
    t = (torch.arange(num_timesteps, dtype=FLOAT64) + 1.0) / num_timesteps
    alpha_bar = torch.exp(2.0 * schedule.log_alpha(t))
    betas = 1.0 - alpha_bar / torch.cat([torch.ones(1, dtype=FLOAT64), alpha_bar[:-1]])
    return DiscreteVP(betas=betas.clamp(max=MAX_BETA).tolist())


def _plan_edm(pipeline: Pipeline, denoiser: Denoiser, schedule: Schedule, time_input: str, scale: float) -> ExportPlan:
    """EDM scheduler: the UNet sees scale c_noise (c_noise time input) or scale log-SNR = -8 scale c_noise."""
    if time_input not in ("c_noise", "log_snr") or not denoiser.scale_input:
        raise ValueError(f"EDM preconditioning with time_input {time_input!r} (scale_input "
                         f"{denoiser.scale_input}) has no diffusers counterpart: diffusers' EDM schedulers feed "
                         "c_in x and c_noise = log(sigma)/4; expected time_input 'c_noise' or 'log_snr'")
    extra: dict[str, Any] = {"sigma_data": denoiser.sigma_data, "algorithm_type": "dpmsolver++", "solver_order": 2,
                             "solver_type": "heun", "final_sigmas_type": "zero"}
    if isinstance(schedule, VE):  # geometric sigmas: diffusers' "exponential" EDM grid
        schedule, extra["sigma_schedule"] = EDM(sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max), "exponential"
    clip, threshold = pipeline.config.sample.clip, pipeline.config.sample.threshold
    notes = []
    if threshold is not None:
        extra.update(thresholding=True, dynamic_thresholding_ratio=threshold, sample_max_value=clip or NO_CAP)
    elif clip is not None:
        notes.append(f"the run clips x0_hat to [-{clip:g}, {clip:g}]; diffusers' EDM schedulers have no static clip, "
                     "so they sample it unclipped")
    config = scheduler_config(schedule, "edm", "EDMDPMSolverMultistepScheduler", **extra)
    factor = scale if time_input == "c_noise" else -8.0 * scale
    notes.append(f"call the UNet with {factor:g} * t for each t in scheduler.timesteps (c_noise = log(sigma)/4)")
    return ExportPlan("EDMDPMSolverMultistepScheduler", config, None, factor, 0.0, tuple(notes))


def _plan_flow(schedule: RectifiedFlow, time_input: str, scale: float) -> ExportPlan:
    """FlowMatchEulerDiscreteScheduler: its timestep is sigma N = t N; the UNet sees scale t."""
    if time_input != "t":
        raise ValueError(f"flow with time_input {time_input!r} has no diffusers counterpart: "
                         "FlowMatchEulerDiscreteScheduler passes the UNet t N; expected time_input 't'")
    n_steps = _table_length(scale)
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": n_steps, "shift": 1.0,
              "use_dynamic_shifting": False}
    notes = (f"diffusers starts at sigma = 1 (x = noise); the run's sampler starts at t_max = {schedule.t_max:g}",)
    return ExportPlan("FlowMatchEulerDiscreteScheduler", config, "DDPMPipeline", scale / n_steps, 0.0, notes)


def _why_no_pipeline(unet: UNet, plan: ExportPlan) -> tuple[str, ...]:
    if plan.pipeline_class is None:
        return ()
    if unet.model.config.num_class_embeds is not None:
        return ("class-conditional: DDPMPipeline passes no class labels, so no model_index.json; call the UNet "
                + "with class_labels in a loop",)
    return (f"the UNet takes {plan.unet_time_scale:g} * the scheduler's timesteps, which DDPMPipeline does not "
            + "pass, so no model_index.json",)


# -- the weights ---------------------------------------------------------------------------------------------
def shift_time_embedding(model: torch.nn.Module, shift: float) -> None:
    """Fold an offset into UNet2DModel's time embedding, in place: afterwards the model at timestep n equals the
    model before at n + shift (the rotation in the module docstring, applied to time_embedding.linear_1)."""
    config = model.config
    if config.time_embedding_type != "positional":
        raise ValueError(f"a time offset folds only into a positional time embedding, got {config.time_embedding_type!r}")
    half = config.block_out_channels[0] // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=FLOAT64) / (half - config.freq_shift))
    c, s = torch.cos(shift * freqs), torch.sin(shift * freqs)
    linear = model.time_embedding.linear_1
    weight = linear.weight.detach().to(FLOAT64)
    first, second = weight[:, :half], weight[:, half:2 * half]  # cos then sin when flip_sin_to_cos, else sin, cos
    w_cos, w_sin = (first, second) if config.flip_sin_to_cos else (second, first)
    new_cos, new_sin = w_cos * c + w_sin * s, w_sin * c - w_cos * s
    rotated = weight.clone()
    rotated[:, :half], rotated[:, half:2 * half] = (new_cos, new_sin) if config.flip_sin_to_cos else (new_sin, new_cos)
    with torch.no_grad():
        linear.weight.copy_(rotated.to(linear.weight.dtype))


def exported_unet(pipeline: Pipeline, plan: ExportPlan) -> torch.nn.Module:
    """A copy of the run's UNet2DModel with the plan's time offset folded in (the run is left untouched)."""
    model = copy.deepcopy(_diffusers_unet(pipeline).model).to("cpu")
    if plan.time_shift:
        shift_time_embedding(model, plan.time_shift)
    return model


# -- the folder ----------------------------------------------------------------------------------------------
def check_export_folder(out: str | Path, force: bool = False) -> Path:
    """`out` as a new export folder: absent or empty, or (with `force`) an earlier export to replace."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {str(out)!r} is a file; expected a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ValueError(f"`out` {str(out)!r} exists and is not empty; choose a new folder or pass `force` "
                             "to replace an earlier export")
        if not (out / MANIFEST).is_file():
            raise ValueError(f"`out` {str(out)!r} is not empty and holds no {MANIFEST}; `force` replaces only an "
                             "earlier export, so choose a new folder")
    return check_output_folder(out, "out")


def export_diffusers(run: str | Path | Pipeline, out: str | Path, force: bool = False,
                     ema: bool = True) -> DiffusersExport:
    """Write a run (a run directory, `hf:FOLDER` or a Pipeline) as a diffusers folder at `out` (module
    docstring): weights as safetensors by save_pretrained, into a temporary folder beside `out` renamed onto
    it when complete. An existing non-empty `out` is refused unless `force` and it is an earlier export.
    `ema` chooses the EMA weights of a run directory."""
    from diffusers import UNet2DModel  # noqa: F401  (fail early, before loading the run, if diffusers is missing)

    out = check_export_folder(out, force)
    pipeline = run if isinstance(run, Pipeline) else load_pipeline(run, ema=ema)
    plan = plan_export(pipeline)
    model = exported_unet(pipeline, plan)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = _write(tmp, model, plan, pipeline)
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DiffusersExport(out, plan, pipeline.step, files)


def build_scheduler(plan: ExportPlan) -> Any:
    """The plan's diffusers scheduler object."""
    import diffusers

    return getattr(diffusers, plan.scheduler_class).from_config(plan.scheduler_config)


def _write(folder: Path, model: torch.nn.Module, plan: ExportPlan, pipeline: Pipeline) -> tuple[str, ...]:
    """unet/, scheduler/, model_index.json (when a pipeline fits) and the manifest, each file fsynced."""
    import diffusers

    folder.mkdir(parents=True)
    scheduler = build_scheduler(plan)
    if plan.pipeline_class is not None:
        getattr(diffusers, plan.pipeline_class)(unet=model, scheduler=scheduler).save_pretrained(folder)
    else:
        model.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    (folder / MANIFEST).write_text(json.dumps(_manifest(plan, pipeline), indent=1) + "\n")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    for name in files:
        with open(folder / name, "rb") as f:
            os.fsync(f.fileno())
    return tuple(files)


def _manifest(plan: ExportPlan, pipeline: Pipeline) -> dict[str, Any]:
    """How the folder's UNet is called (`unet_time_scale` times the scheduler's timesteps, class labels) and
    the run it came from: read by people and by nc.from_diffusers."""
    denoiser = pipeline.network
    model = pipeline.config.model
    return {
        "format": "noisecraft diffusers export",
        "version": 1,
        "unet_time_scale": plan.unet_time_scale,
        "time_shift_folded": plan.time_shift,
        "scheduler": plan.scheduler_class,
        "pipeline": plan.pipeline_class,
        "num_classes": model.num_classes,
        "null_label": model.null_label,
        "notes": list(plan.notes),
        "run": {
            "path": str(pipeline.run_dir) if pipeline.run_dir is not None else None,
            "step": pipeline.step,
            "parameterization": denoiser.parameterization,
            "schedule": denoiser.schedule.to_config(),
            "time_input": denoiser.time_input,
            "sigma_data": denoiser.sigma_data,
            "sample": pipeline.config.sample.model_dump(mode="json"),
        },
    }


def _replace_folder(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` onto `out`; an earlier export there is moved aside first, then removed."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.is_dir() and any(out.iterdir()):
        os.rename(out, old)
    elif out.is_dir():
        out.rmdir()
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["DiffusersExport", "ExportPlan", "build_scheduler", "check_export_folder", "export_diffusers",
           "exported_unet", "plan_export", "shift_time_embedding", "vp_table"]
