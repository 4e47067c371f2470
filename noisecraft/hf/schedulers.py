"""diffusers scheduler configs as noisecraft schedules, parameterizations and time grids, both ways.

Forward (`read_scheduler`): a scheduler_config.json, as a dict, gives the Schedule of the model it ships with (a
DDPM beta table as `DiscreteVP`, the EDM sigma range as `EDM`), the parameterization of its prediction_type
(EDM preconditioning for the EDM schedulers, Karras et al. 2022, Table 1), the time input of the network (the
DDPM timestep, or c_noise = ln(sigma)/4) and the x0 bounds of clip_sample / thresholding.
`diffusers_grid` gives "the diffusers grid": the times, as noisecraft's t, at which the scheduler evaluates the
network for a number of steps (timestep_spacing leading / linspace / trailing, steps_offset; Lin et al. 2024,
Table 2), and how it ends (a final clean estimate, or a last noisy sample).
Reverse (`scheduler_config`): a Schedule and a parameterization give a config that diffusers' schedulers load.

The time of DDPM timestep n is t = (n + 1) / N (`DiscreteVP.t_of_timestep`); EDM's sigma is sigma(t) of the EDM
schedule, so an EDM scheduler's sigmas map to t in closed form.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.schedules import EDM, DiscreteVP, RectifiedFlow, Schedule
from noisecraft.core.tensors import FLOAT64

#: VP schedulers that work in sigma = sqrt((1 - a) / a): for a zero-terminal-SNR table diffusers stores
#: alpha_N^2 = 2^-24 in these (its sigma would be infinite), and keeps alpha_N^2 = 0 in the others
SIGMA_SPACE_SCHEDULERS = frozenset({
    "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "UniPCMultistepScheduler",
})
#: alpha_N^2 of a zero-terminal-SNR table in the sigma-space schedulers (diffusers' constant)
SIGMA_SPACE_TERMINAL_ALPHA2 = 2.0**-24
#: VP schedulers that read `rescale_betas_zero_snr` (the others ignore it, as diffusers does)
ZERO_SNR_SCHEDULERS = SIGMA_SPACE_SCHEDULERS | {"DDPMScheduler", "DDIMScheduler", "LCMScheduler", "TCDScheduler"}
#: schedulers built on a DDPM beta table (a DiscreteVP schedule, DDPM timesteps into the network)
VP_SCHEDULERS = ZERO_SNR_SCHEDULERS | {
    "PNDMScheduler", "DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
}
#: schedulers on EDM's sigma range with EDM preconditioning (an EDM schedule, c_noise into the network)
EDM_SCHEDULERS = frozenset({"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"})
DPM_SCHEDULERS = frozenset({"DPMSolverMultistepScheduler", "EDMDPMSolverMultistepScheduler"})
#: rectified flow with velocity prediction (Esser et al. 2024): the network takes sigma N = t N
FLOW_SCHEDULERS = frozenset({"FlowMatchEulerDiscreteScheduler"})
SCHEDULERS = VP_SCHEDULERS | EDM_SCHEDULERS | FLOW_SCHEDULERS
#: schedulers whose timesteps `diffusers_grid` reproduces
GRID_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EDMEulerScheduler",
                   "EDMDPMSolverMultistepScheduler")
#: diffusers' prediction_type -> noisecraft's parameterization (VP schedulers)
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
#: EDM schedulers: prediction_type -> the sign of c_out (D = c_skip x + sign c_out F)
EDM_PREDICTION_SIGNS = {"epsilon": 1.0, "v_prediction": -1.0}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
SPACINGS = ("leading", "linspace", "trailing")


@dataclass(frozen=True)
class DiffusersScheduler:
    """What a scheduler config says about its model: the schedule, the parameterization the network's output
    is in (`output_sign` -1 flips it: EDM's v_prediction is -F), what the network takes as its time, and the
    bounds on x0_hat the scheduler applies (clip, or dynamic-thresholding quantile capped at clip)."""

    class_name: str
    config: dict[str, Any]
    schedule: Schedule
    parameterization: str
    time_input: str
    output_sign: float = 1.0
    sigma_data: float = 0.5
    clip: float | None = None
    threshold: float | None = None
    source: str = "scheduler_config.json"
    #: the factor from the network's time input to what the scheduler passes the UNet (flow: t -> t N)
    time_scale: float = 1.0


@dataclass(frozen=True)
class DiffusersGrid:
    """A scheduler's sampling times for `steps` network evaluations, as noisecraft times: the solver steps
    along `times` and then takes x0_hat at the last one (denoise_final) or returns the sample there.
    `timesteps` are what the scheduler feeds the network (DDPM timesteps, or EDM's c_noise)."""

    times: list[float]
    denoise_final: bool
    timesteps: list[float]
    note: str
    #: where a noisecraft solver on this grid cannot follow the scheduler step for step (empty: it can)
    caveats: list[str] = field(default_factory=list)


# -- reading a config ---------------------------------------------------------------------------------
def _class_name(config: Any, source: str) -> str:
    if not isinstance(config, dict):
        raise ValueError(  # noqa: TRY004 (a bad config file, one error type at the boundary)
            f"{source}: expected a JSON object (a diffusers scheduler config), got {type(config).__name__}")
    name = config.get("_class_name")
    if name not in SCHEDULERS:
        raise ValueError(f"{source}: unknown scheduler class {name!r}; expected one of {sorted(SCHEDULERS)}")
    return name


def filled_config(config: dict[str, Any], source: str = "scheduler_config.json") -> dict[str, Any]:
    """The config with diffusers' defaults for its class filled in (a config saved by diffusers has them all)."""
    import diffusers

    name = _class_name(config, source)
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}
    return {**defaults, **config}


def _field(config: dict[str, Any], key: str, choices: tuple[str, ...], source: str) -> str:
    value = config.get(key)
    if value not in choices:
        raise ValueError(f"{source}: {key} {value!r} is not supported; expected one of {list(choices)}")
    return value


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Betas whose sqrt(alpha_bar) is shifted to end at 0 and scaled to keep its start (Lin et al. 2024, Alg. 1)."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))  # the scale as one factor: diffusers' float32 rounding
    alpha_bar = root**2
    return 1.0 - torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])


def _cosine_betas(n: int, max_beta: float = 0.999) -> list[float]:
    """Betas of alpha_bar(t) = cos^2((t + 0.008)/1.008 pi/2), each capped at 0.999 (Nichol & Dhariwal 2021, eq. 17)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1.0 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]


def _float32_betas(config: dict[str, Any], source: str) -> Tensor:
    """The betas as diffusers' schedulers hold them: float32, from the same formulas."""
    n = int(config["num_train_timesteps"])
    f32 = torch.float32
    if config.get("trained_betas") is not None:
        return torch.tensor([float(b) for b in config["trained_betas"]], dtype=f32)
    kind = _field(config, "beta_schedule", BETA_SCHEDULES, source)
    start, end = float(config["beta_start"]), float(config["beta_end"])
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=f32)
    if kind == "scaled_linear":  # latent diffusion's schedule: linear in sqrt(beta)
        return torch.linspace(start**0.5, end**0.5, n, dtype=f32) ** 2
    if kind == "squaredcos_cap_v2":
        return torch.tensor(_cosine_betas(n), dtype=f32)
    return torch.sigmoid(torch.linspace(-6.0, 6.0, n, dtype=f32)) * (end - start) + start  # DDPMScheduler's sigmoid


def alphas_cumprod(config: dict[str, Any], source: str = "scheduler_config.json") -> Tensor:
    """alpha_bar_n of a (filled) VP scheduler config, the float32 table diffusers trains and samples with, as
    float64. Zero terminal SNR (rescale_betas_zero_snr, Lin et al. 2024) ends at alpha_bar_N = 0, or at 2^-24 in
    the sigma-space schedulers, as diffusers does, unless that would raise it above earlier entries (then 0)."""
    betas = _float32_betas(config, source)
    zero_snr = bool(config.get("rescale_betas_zero_snr")) and config["_class_name"] in ZERO_SNR_SCHEDULERS
    if zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    table = torch.cumprod(1.0 - betas, dim=0).to(FLOAT64)
    positive = table[:-1] if zero_snr else table  # rescaling ends at exactly 0
    if not (positive > 0).all() or not (table[1:] < table[:-1]).all():
        raise ValueError(f"{source}: the betas give alpha_bar {table[:3].tolist()} ... {table[-3:].tolist()}; expected "
                         "betas in (0, 1), so that alpha_bar decreases from 1 towards 0")
    if zero_snr:
        table[-1] = 0.0
        if config["_class_name"] in SIGMA_SPACE_SCHEDULERS:
            if table[-2] > SIGMA_SPACE_TERMINAL_ALPHA2:
                table[-1] = SIGMA_SPACE_TERMINAL_ALPHA2
            else:  # diffusers' floor would sit above alpha_bar_{N-1}: a log-SNR that rises again at the end
                warnings.warn(f"{source}: {config['_class_name']} stores alpha_bar_N = 2^-24 above alpha_bar_{{N-1}} = "
                              f"{float(table[-2]):.3g}; noisecraft keeps alpha_bar_N = 0 (stored as 2^-48), so its "
                              "first step from timestep N-1 differs from diffusers'", stacklevel=3)
    return table


def beta_table(config: dict[str, Any], source: str = "scheduler_config.json") -> Tensor:
    """float64 betas whose cumulative product is `alphas_cumprod(config)`: a last beta of 1 is zero terminal SNR."""
    table = alphas_cumprod(config, source)
    return 1.0 - table / torch.cat([table.new_ones(1), table[:-1]])


def read_scheduler(config: dict[str, Any], source: str = "scheduler_config.json") -> DiffusersScheduler:
    """The schedule, parameterization, network time input and x0 bounds of a diffusers scheduler config.

    Errors name `source` (the file) and what was expected: an unknown scheduler class, beta_schedule or
    prediction_type is a ValueError before any model is loaded."""
    name = _class_name(config, source)
    cfg = filled_config(config, source)
    prediction = cfg.get("prediction_type")
    if name in EDM_SCHEDULERS:
        if prediction not in EDM_PREDICTION_SIGNS:
            raise ValueError(f"{source}: prediction_type {prediction!r} is not supported for {name}; expected one of "
                             f"{list(EDM_PREDICTION_SIGNS)}")
        schedule = EDM(sigma_min=float(cfg["sigma_min"]), sigma_max=float(cfg["sigma_max"]), rho=float(cfg["rho"]),
                       sigma_data=float(cfg["sigma_data"]))
        return DiffusersScheduler(name, cfg, schedule, "edm", "c_noise", output_sign=EDM_PREDICTION_SIGNS[prediction],
                                  sigma_data=float(cfg["sigma_data"]), **_bounds(cfg), source=source)
    if name in FLOW_SCHEDULERS:  # shift only moves the sampling times; the model is the flow in t = sigma
        return DiffusersScheduler(name, cfg, RectifiedFlow(), "flow", "t", source=source,
                                  time_scale=float(cfg["num_train_timesteps"]))
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"{source}: prediction_type {prediction!r} is not supported; expected one of "
                         f"{list(PREDICTION_TYPES)}")
    schedule = DiscreteVP(betas=beta_table(cfg, source).tolist())
    return DiffusersScheduler(name, cfg, schedule, PREDICTION_TYPES[prediction], "timestep", **_bounds(cfg),
                              source=source)


def _bounds(cfg: dict[str, Any]) -> dict[str, float | None]:
    """clip and threshold of x0_hat: diffusers' thresholding (quantile, capped at sample_max_value) wins over
    clip_sample (Saharia et al. 2022; Ho et al. 2020, sec. 3.3)."""
    if cfg.get("thresholding"):
        return {"clip": float(cfg["sample_max_value"]), "threshold": float(cfg["dynamic_thresholding_ratio"])}
    if cfg.get("clip_sample"):
        return {"clip": float(cfg["clip_sample_range"]), "threshold": None}
    return {"clip": None, "threshold": None}


def schedule_from_config(config: dict[str, Any], source: str = "scheduler_config.json") -> Schedule:
    """The noise schedule of a diffusers scheduler config (`read_scheduler(...).schedule`)."""
    return read_scheduler(config, source).schedule


# -- the diffusers grid -------------------------------------------------------------------------------
def _spaced(cfg: dict[str, Any], steps: int, source: str, last: int, extra: int) -> np.ndarray:
    """DDPM timesteps of `timestep_spacing` (Lin et al. 2024, Table 2). `extra` = 1 for the sigma-space
    schedulers, which space steps + 1 points and drop the last; `last` is one past the highest timestep."""
    spacing = _field(cfg, "timestep_spacing", SPACINGS, source)
    n = int(cfg["num_train_timesteps"])
    if spacing == "linspace":
        steps_ = np.linspace(0, last - 1, steps + extra).round()[::-1]
        return steps_[:steps].astype(np.int64)
    if spacing == "leading":
        ratio = last // (steps + extra)
        return (np.arange(0, steps + extra) * ratio).round()[::-1][:steps].astype(np.int64) + int(cfg["steps_offset"])
    return np.round(np.arange(last, 0, -n / steps)).astype(np.int64)[:steps] - 1


def _lambda_clipped_end(schedule: DiscreteVP, cfg: dict[str, Any]) -> int:
    """One past the highest timestep DPMSolverMultistepScheduler uses: timesteps whose log(alpha/sigma) lies
    below lambda_min_clipped are left out (Lu et al. 2022b's clipping for cosine schedules)."""
    half_lambdas = 0.5 * schedule.log_snr(schedule.t_of_timestep(torch.arange(schedule.N)))
    clipped = int((half_lambdas < float(cfg.get("lambda_min_clipped", -math.inf))).sum())
    return schedule.N - clipped


def diffusers_timesteps(config: dict[str, Any], steps: int, source: str = "scheduler_config.json") -> list[float]:
    """What the scheduler feeds the network over `steps` evaluations (its `timesteps` after set_timesteps)."""
    return diffusers_grid(config, steps, source).timesteps


def midpoint_rule(spec: DiffusersScheduler) -> bool:
    """Whether the scheduler's second-order multistep update is Lu et al. 2022b's Alg. 2 as printed (diffusers'
    solver_type "midpoint", its default): noisecraft's dpm++2m option midpoint=True."""
    return spec.class_name in DPM_SCHEDULERS and spec.config.get("solver_type", "midpoint") == "midpoint"


def diffusers_grid(config: dict[str, Any], steps: int, source: str = "scheduler_config.json",
                   scheduler: str | None = None) -> DiffusersGrid:
    """The scheduler's own times for `steps` network evaluations, as a noisecraft grid (see DiffusersGrid).

    A noisecraft solver on this grid reproduces the scheduler loop from the same x_T: "ddim" (or "dpm++1m")
    DDIMScheduler with eta 0 and EDMEulerScheduler; "dpm++2m" DPMSolverMultistepScheduler and
    EDMDPMSolverMultistepScheduler (solver_type "heun"; their default "midpoint" with the solver option
    midpoint=True, which the Pipeline's "diffusers" grid sets from the config); "ddpm" DDPMScheduler in distribution. `scheduler` reads the config as that class instead of its own
    (diffusers' `OtherScheduler.from_config(config)`). Where diffusers steps elsewhere than its own next
    timestep, or ends on a noisy sample, `caveats` says so and a warning is issued."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1 for the diffusers grid, got {steps!r}")
    spec = read_scheduler({**config, "_class_name": scheduler} if scheduler else config, source)
    if spec.class_name not in GRID_SCHEDULERS:
        raise ValueError(f"{source}: the diffusers grid of {spec.class_name} is not reproduced; expected one of "
                         f"{list(GRID_SCHEDULERS)} (pass scheduler=... to use one of theirs, or a named grid)")
    if spec.class_name in EDM_SCHEDULERS:
        grid = _edm_grid(spec, steps, source)
    elif spec.class_name == "DPMSolverMultistepScheduler":
        grid = _dpm_grid(spec, steps, source)
    else:
        grid = _ddim_grid(spec, steps, source)
    for caveat in grid.caveats:
        warnings.warn(f"{source}: {caveat}", stacklevel=2)
    return grid


def _times(schedule: DiscreteVP, timesteps: np.ndarray, source: str) -> list[float]:
    if len(timesteps) > 1 and not (np.diff(timesteps) < 0).all():
        raise ValueError(f"{source}: the scheduler's timesteps {timesteps.tolist()} repeat; expected fewer steps")
    if timesteps.min() < 0 or timesteps.max() >= schedule.N:
        raise ValueError(f"{source}: timesteps {timesteps.tolist()} leave 0 ... {schedule.N - 1}; check steps_offset")
    return schedule.t_of_timestep(torch.as_tensor(timesteps)).tolist()


def _ddim_grid(spec: DiffusersScheduler, steps: int, source: str) -> DiffusersGrid:
    """DDPMScheduler / DDIMScheduler: N, steps and spacing as diffusers; DDPM steps to its next timestep, DDIM to
    t - N // steps (diffusers issue #12633), the same for leading spacing and for trailing when steps divides N."""
    cfg, schedule = spec.config, spec.schedule
    n = int(cfg["num_train_timesteps"])
    if steps > n:
        raise ValueError(f"`steps` must be <= num_train_timesteps {n} of {source}, got {steps}")
    timesteps = _spaced(cfg, steps, source, n, 0)
    caveats: list[str] = []
    times = _times(schedule, timesteps, source)
    final = True
    if spec.class_name == "DDIMScheduler":
        targets = timesteps - n // steps
        if (targets[:-1] != timesteps[1:]).any() or targets[-1] >= 0:
            caveats.append(f"DDIMScheduler steps from each timestep t to t - {n // steps}, not to its next timestep "
                           f"({cfg['timestep_spacing']} spacing, {steps} steps; diffusers issue #12633); noisecraft "
                           "steps to the next timestep, so the samples differ slightly")
        if not cfg.get("set_alpha_to_one", True):
            final = False
            if timesteps[-1] > 0:
                times.append(float(schedule.t_of_timestep(0)))
            caveats.append("set_alpha_to_one=False ends on the noisy sample at timestep 0: noisecraft returns it "
                           "divided by alpha_0, diffusers as it is")
    note = (f"{spec.class_name} timesteps ({cfg['timestep_spacing']} spacing, steps_offset {cfg['steps_offset']}), "
            f"{steps} steps")
    return DiffusersGrid(times, final, [float(v) for v in timesteps], note, caveats)


def _dpm_grid(spec: DiffusersScheduler, steps: int, source: str) -> DiffusersGrid:
    """DPMSolverMultistepScheduler: steps + 1 spaced points less the last, sigmas at the nodes, then sigma 0
    (final_sigmas_type "zero": the last step is x0_hat) or timestep 0's sigma."""
    cfg, schedule = spec.config, spec.schedule
    for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                 "use_flow_sigmas"):
        if cfg.get(flag):
            raise ValueError(f"{source}: {flag}=True is not reproduced by the diffusers grid (the scheduler feeds the "
                             "network a rounded timestep but steps with the unrounded sigma); expected it False, or "
                             "use grid='karras'")
    last = _lambda_clipped_end(schedule, cfg)
    timesteps = _spaced(cfg, steps, source, last, 1)
    times = _times(schedule, timesteps, source)
    caveats: list[str] = []
    final = _field(cfg, "final_sigmas_type", ("zero", "sigma_min"), source) == "zero"
    if not final:
        times.append(float(schedule.t_of_timestep(0)))
        caveats.append("final_sigmas_type 'sigma_min' ends on the noisy sample at timestep 0 (and with fewer than 15 "
                       "steps takes that last step at first order): noisecraft returns it divided by alpha_0 and "
                       "keeps the solver's order")
    note = (f"{spec.class_name} timesteps ({cfg['timestep_spacing']} spacing, steps_offset {cfg['steps_offset']}), "
            f"{steps} steps")
    return DiffusersGrid(times, final, [float(v) for v in timesteps], note, caveats)


def edm_sigmas(cfg: dict[str, Any], steps: int) -> Tensor:
    """An EDM scheduler's `steps` sigmas, float64: the rho-ramp of Karras et al. 2022, eq. 5, or geometric."""
    ramp = torch.linspace(0.0, 1.0, steps, dtype=FLOAT64)
    lo, hi = float(cfg["sigma_min"]), float(cfg["sigma_max"])
    if cfg.get("sigma_schedule", "karras") == "exponential":
        return torch.exp(torch.linspace(math.log(hi), math.log(lo), steps, dtype=FLOAT64))
    rho = float(cfg["rho"])
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def _edm_grid(spec: DiffusersScheduler, steps: int, source: str) -> DiffusersGrid:
    """EDMEulerScheduler / EDMDPMSolverMultistepScheduler: `steps` sigmas from sigma_max to sigma_min, then 0
    (the last step is x0_hat) or sigma_min again (a step of length 0: the sample at sigma_min)."""
    cfg, schedule = spec.config, spec.schedule
    _field(cfg, "sigma_schedule", ("karras", "exponential"), source)
    sigmas = edm_sigmas(cfg, steps)
    times = schedule.t_from_log_snr(-2.0 * torch.log(sigmas)).clamp(0.0, 1.0)
    times[0] = 1.0
    if steps > 1:
        times[-1] = 0.0
    final = _field(cfg, "final_sigmas_type", ("zero", "sigma_min"), source) == "zero"
    note = f"{spec.class_name} sigmas ({cfg.get('sigma_schedule', 'karras')}), {steps} steps"
    return DiffusersGrid(times.tolist(), final, (0.25 * torch.log(sigmas)).tolist(), note)


# -- the reverse: a schedule as a scheduler config ----------------------------------------------------
def scheduler_config(schedule: Schedule, parameterization: str, class_name: str | None = None,
                     clip: float | None = None, **extra: Any) -> dict[str, Any]:
    """A diffusers scheduler config for a model with this schedule and parameterization (the reverse of
    `read_scheduler`): a DiscreteVP as a beta table (DDPMScheduler by default), EDM as EDMEulerScheduler.
    `clip` sets clip_sample / clip_sample_range where the class has them; `extra` keys are added as given.
    A schedule or parameterization with no diffusers counterpart is a ValueError naming it."""
    if isinstance(schedule, DiscreteVP):
        inverse = {v: k for k, v in PREDICTION_TYPES.items()}
        if parameterization not in inverse:
            raise ValueError(f"parameterization {parameterization!r} has no diffusers prediction_type for a DDPM "
                             f"table; expected one of {list(inverse)}")
        name = class_name or "DDPMScheduler"
        if name not in VP_SCHEDULERS:
            raise ValueError(f"scheduler class {name!r} does not take a DDPM beta table; expected one of "
                             f"{sorted(VP_SCHEDULERS)}")
        out: dict[str, Any] = {"_class_name": name, "num_train_timesteps": schedule.N,
                               "prediction_type": inverse[parameterization]}
        if schedule.betas is None:
            out.update(beta_schedule="linear", beta_start=schedule.beta_start, beta_end=schedule.beta_end)
        else:
            out.update(trained_betas=[float(b) for b in schedule.betas])
        if name in ("DDPMScheduler", "DDIMScheduler"):
            out.update(clip_sample=clip is not None, clip_sample_range=float(clip or 1.0))
        return {**out, **extra}
    if isinstance(schedule, EDM):
        if parameterization != "edm":
            raise ValueError(f"parameterization {parameterization!r} on an EDM schedule has no diffusers scheduler; "
                             "expected 'edm' (EDM preconditioning)")
        name = class_name or "EDMEulerScheduler"
        if name not in EDM_SCHEDULERS:
            raise ValueError(f"scheduler class {name!r} is not an EDM scheduler; expected one of "
                             f"{sorted(EDM_SCHEDULERS)}")
        return {"_class_name": name, "sigma_min": schedule.sigma_min, "sigma_max": schedule.sigma_max,
                "sigma_data": schedule.sigma_data, "rho": schedule.rho, "sigma_schedule": "karras",
                "prediction_type": "epsilon", **extra}
    raise ValueError(f"schedule {type(schedule).__name__} has no diffusers scheduler; expected DiscreteVP (a DDPM "
                     "beta table) or EDM")


__all__ = [
    "DPM_SCHEDULERS",
    "EDM_SCHEDULERS",
    "FLOW_SCHEDULERS",
    "GRID_SCHEDULERS",
    "PREDICTION_TYPES",
    "SCHEDULERS",
    "VP_SCHEDULERS",
    "DiffusersGrid",
    "DiffusersScheduler",
    "alphas_cumprod",
    "beta_table",
    "diffusers_grid",
    "diffusers_timesteps",
    "edm_sigmas",
    "filled_config",
    "midpoint_rule",
    "read_scheduler",
    "rescale_zero_terminal_snr",
    "schedule_from_config",
    "scheduler_config",
]
