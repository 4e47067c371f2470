"""Sampling from a trained run: load its network (EMA weights by default) behind the denoiser contract,
draw with any solver of `noisecraft.sample`, and write a .npy plus a PNG grid (images) or scatter (2-D)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint
from noisecraft.runs.config import RunConfig, load_config
from noisecraft.core.denoiser import Denoiser
from noisecraft.solvers import sample


@dataclass
class LoadedRun:
    config: RunConfig
    net: torch.nn.Module
    denoiser: Denoiser
    sample_shape: tuple[int, ...]
    is_image: bool
    step: int


def load_run(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> LoadedRun:
    """The run's config and network from its latest checkpoint (EMA weights unless ema=False)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory: expected config.yaml (made by `noisecraft train`)")
    config = load_config(run_dir / "config.yaml")
    info = json.loads((run_dir / "data.json").read_text())
    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise ValueError(f"{str(run_dir)!r} has no checkpoint yet: train it first")
    group = "ema" if ema else "model"
    tensors, meta = load_checkpoint(path, groups=(group,))
    shape = tuple(info["sample_shape"])
    net = config.model.build(shape, config.loss.time_input)
    state = net.state_dict()
    state.update(tensors[group])  # EMA holds the floating-point tensors; integer buffers stay as built
    net.load_state_dict(state)
    net = net.to(device).eval()
    return LoadedRun(config, net, config.loss.denoiser(net), shape, info["is_image"], meta["step"])


def with_threshold(run: LoadedRun, threshold: float | None) -> LoadedRun:
    """The run sampled with dynamic thresholding at quantile `threshold` in place of its static clip (which
    would otherwise cap s, and at clip 1 make thresholding a plain clip); unchanged if None."""
    if threshold is None:
        return run
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a quantile in (0, 1), such as 0.95; got {threshold}")
    sample_cfg = run.config.sample.model_copy(update={"threshold": threshold, "clip": None})
    return replace(run, config=run.config.model_copy(update={"sample": sample_cfg}))


def bound(x0: Tensor, clip: float | None, threshold: float | None = None) -> Tensor:
    """x0_hat kept in range: static clipping to [-clip, clip] (Ho et al. 2020, sec. 3.3) or, with a quantile
    `threshold` p, dynamic thresholding (Saharia et al. 2022, sec. 2.3): per sample s = the p-quantile of
    |x0_hat|, raised to at least 1 and capped at clip; x0_hat is clamped to [-s, s] and divided by s."""
    if threshold is None:
        return x0 if clip is None else x0.clamp(-clip, clip)
    s = torch.quantile(x0.reshape(x0.shape[0], -1).abs().to(torch.promote_types(x0.dtype, torch.float32)),
                       threshold, dim=1)
    s = s.clamp(min=1.0, max=clip).to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def clipped(denoiser: Denoiser, clip: float | None, threshold: float | None = None) -> Any:
    """The denoiser with its x0_hat bounded by `bound`; the denoiser itself if neither is set."""
    if clip is None and threshold is None:
        return denoiser

    def denoise(x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return bound(denoiser(x, t, cond), clip, threshold)

    return denoise


@torch.no_grad()
def draw(run: LoadedRun, n: int, solver: str | None = None, steps: int | None = None, seed: int = 0,
         clip: float | None | str = "config", progress: bool = False) -> Tensor:
    """n samples (float32, on CPU) in one batch; sample i depends only on (seed, i) (noisecraft.core.noise)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if run.config.model.num_classes is not None:
        how = "--prompt TEXT" if run.config.model.cond == "text" else f"--class K (0..{run.config.model.num_classes - 1})"
        raise ValueError(f"this run is {run.config.model.cond}-conditional; choose what to draw with {how}")
    cfg = run.config.sample
    clip = cfg.clip if clip == "config" else clip
    device = next(run.net.parameters()).device
    x = sample(clipped(run.denoiser, clip, cfg.threshold), run.denoiser.schedule, solver=solver or cfg.solver,
               steps=steps or cfg.steps, shape=(n, *run.sample_shape), grid=cfg.grid,
               generator=torch.Generator().manual_seed(seed), device=device, progress=progress)
    return x.float().cpu()


def write_samples(x: Tensor, out: str | Path, is_image: bool, reference: np.ndarray | None = None) -> Path:
    """Write x as .npy or as a PNG (grid for images, scatter for points), chosen by out's suffix."""
    from noisecraft.viz.plots import save_image_grids, save_scatter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arr = x.numpy()
    if out.suffix == ".npy":
        np.save(out, arr)
    elif out.suffix == ".png":
        if is_image:
            panels = [("samples", arr[:100])] + ([("real data", reference[:100])] if reference is not None else [])
            save_image_grids(out, panels)
        else:
            panels = [("samples", arr)] + ([("real data", reference[: len(arr)])] if reference is not None else [])
            save_scatter(out, panels)
    else:
        raise ValueError(f"output {str(out)!r} must end in .png or .npy")
    return out
