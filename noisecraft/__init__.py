"""noisecraft: diffusion generative models built from their mathematics.

One continuous-time core x_t = alpha(t) x_0 + sigma(t) eps (DESIGN.md), from which schedules, the SDE
calculus, every parameterization, every sampler and the exact likelihood follow.

The public names below are imported on first use (PEP 562), so `import noisecraft.ddm` (numpy/scipy only)
does not load torch.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# How long an OpenMP thread spins at a barrier before it sleeps. Spinning forever (libgomp's default
# 300,000 spins is close to it) ruins a shared machine: training the digits UNet with 2 threads on 2 cores
# beside one busy process ran at 23 images/s, against 862 idle. Sleeping at once (OMP_WAIT_POLICY=passive,
# what noisecraft set before) costs 44% of the idle speed (482). 2,000 spins keeps 80% of the idle speed
# (686) and 85% of passive's loaded speed (323): the best worse case of those measured
# (docs/benchmarks/contention.md). libgomp reads it when torch loads, so it is set before the first torch
# import; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "2000")

_EXPORTS = {
    "Denoiser": "noisecraft.core.denoiser",
    "SampleNoise": "noisecraft.core.noise",
    "q_sample": "noisecraft.core.forward",
    "SOLVERS": "noisecraft.solvers",
    "SampleInfo": "noisecraft.solvers",
    "SolverConfig": "noisecraft.solvers",
    "sample": "noisecraft.solvers",
    "solve": "noisecraft.solvers",
    "optimize_grid": "noisecraft.solvers.grid_search",
    "GridInfo": "noisecraft.solvers.grid_search",
    "Pipeline": "noisecraft.runs.pipeline",
    "load_run": "noisecraft.runs.pipeline",
    "from_diffusers": "noisecraft.hf.load",
    "export_diffusers": "noisecraft.hf.export",
    "RunConfig": "noisecraft.runs.config",
    "preset_config": "noisecraft.runs.config",
    "train": "noisecraft.runs.train",
    "distill": "noisecraft.runs.distill",
    "Teacher": "noisecraft.runs.distill",
    "reflow": "noisecraft.runs.reflow",
    "straightness": "noisecraft.runs.reflow",
    "regress": "noisecraft.runs.regress",
    "finetune": "noisecraft.hf.lora",
    "with_lora": "noisecraft.hf.lora",
    "merge_lora": "noisecraft.hf.lora",
    "unmerge_lora": "noisecraft.hf.lora",
    "load_adapter": "noisecraft.hf.lora",
}
_SUBMODULES = {
    "oracle": "noisecraft.analysis.oracle",
    "schedules": "noisecraft.core.schedules",
    "timesteps": "noisecraft.core.timesteps",
    "likelihood": "noisecraft.analysis.likelihood",
    "elbo": "noisecraft.analysis.elbo",
    "data": "noisecraft.data",
}

__all__ = sorted([*_EXPORTS, *_SUBMODULES])
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'noisecraft' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
