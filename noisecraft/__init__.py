"""noisecraft: diffusion generative models built from their mathematics.

One continuous-time core x_t = alpha(t) x_0 + sigma(t) eps (DESIGN.md), from which schedules, the SDE
calculus, every parameterization, every sampler and the exact likelihood follow.
"""

from noisecraft import oracle, schedules, timesteps
from noisecraft.denoiser import Denoiser
from noisecraft.noise import SampleNoise
from noisecraft.sde import q_sample
from noisecraft.solvers import SOLVERS, SampleInfo, sample, solve

__all__ = [
    "Denoiser",
    "SOLVERS",
    "SampleInfo",
    "SampleNoise",
    "oracle",
    "q_sample",
    "sample",
    "schedules",
    "solve",
    "timesteps",
]
__version__ = "0.1.0"
