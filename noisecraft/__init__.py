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

# OpenMP threads that busy-wait slow CPU training ~10x when the cores are shared with other work
# (2 threads on a loaded 2-core machine: 6.5 s/step active, 0.78 s/step passive). libgomp reads this
# when torch loads, so it is set before the first torch import; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "Denoiser": "noisecraft.core.denoiser",
    "SampleNoise": "noisecraft.core.noise",
    "q_sample": "noisecraft.core.forward",
    "SOLVERS": "noisecraft.solvers",
    "SampleInfo": "noisecraft.solvers",
    "SolverConfig": "noisecraft.solvers",
    "sample": "noisecraft.solvers",
    "solve": "noisecraft.solvers",
    "Pipeline": "noisecraft.runs.pipeline",
    "load_run": "noisecraft.runs.pipeline",
    "RunConfig": "noisecraft.runs.config",
    "preset_config": "noisecraft.runs.config",
    "train": "noisecraft.runs.train",
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
