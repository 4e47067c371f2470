"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Alg. 1).

A consistency model f(x_t, t) maps any point of a probability-flow path to the path's clean end, so one
evaluation is a sample. More evaluations alternate the map with fresh noise: x0 = f(x, t_i), then
x_{t_{i+1}} = alpha(t_{i+1}) x0 + sigma(t_{i+1}) z, z ~ N(0, I), and the driver's final clean estimate is
f(x, t_last). A grid of k times therefore takes exactly k evaluations. The step is the DDIM step with its
noise std raised to sigma(t_{i+1}) (all of the new point's noise fresh), so no arithmetic is written twice.

It needs a consistency model: on a denoiser E[x_0 | x_t] it is not a sampler of the data (each step pulls
x toward a posterior mean), which is why the convergence tests of the denoiser solvers leave it out.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from torch import Tensor

from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.solvers._steps import ddim_step, point


def consistency(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None) -> Tensor:
    """Song et al. 2023, Alg. 1 in any (alpha, sigma): x0 = f(x, s), x_t = alpha_t x0 + sigma_t z; one evaluation
    per step."""
    for s_time, t_time in pairwise(times):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x0 = denoise(x, s.t)
        x = ddim_step(x, x0, s, t, t.sigma, randn_like(x, generator))
    return x
