"""noisecraft: diffusion generative models built from their mathematics.

One continuous-time core x_t = alpha(t) x_0 + sigma(t) eps (DESIGN.md), from which schedules, the SDE
calculus, every parameterization, every sampler and the exact likelihood follow.
"""

import os

# OpenMP threads that busy-wait slow CPU training ~10x when the cores are shared with other work
# (2 threads on a loaded 2-core machine: 6.5 s/step active, 0.78 s/step passive). libgomp reads this
# when torch loads, so it is set before the first torch import; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from noisecraft import oracle, schedules, timesteps  # noqa: E402
from noisecraft.denoiser import Denoiser  # noqa: E402
from noisecraft.noise import SampleNoise  # noqa: E402
from noisecraft.sde import q_sample  # noqa: E402
from noisecraft.solvers import SOLVERS, SampleInfo, SolverConfig, sample, solve  # noqa: E402

__all__ = [
    "Denoiser",
    "SOLVERS",
    "SampleInfo",
    "SampleNoise",
    "SolverConfig",
    "oracle",
    "q_sample",
    "sample",
    "schedules",
    "solve",
    "timesteps",
]
__version__ = "0.1.0"
