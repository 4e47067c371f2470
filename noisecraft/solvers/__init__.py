"""Samplers: each is `solver(denoise, schedule, x_T, times, generator, **options) -> x at times[-1]`.

- `registry`: the registered solvers (`SOLVERS`) with their evaluations per step and order;
- `driver`: `sample` and `solve`, the one driver that builds the grid, draws the prior per sample, counts
  evaluations and takes the final clean step for every solver;
- `config`: `SolverConfig`, a sampler as a plain config;
- the step rules: `ancestral` (DDPM, DDIM), `dpm` (DPM-Solver family, UniPC-style corrector), `ode`
  (Euler, Heun, RK45 on the PF-ODE), `stochastic` (Euler-Maruyama, predictor-corrector), `_steps` (shared
  step arithmetic).
"""

from __future__ import annotations

from noisecraft.solvers.config import SolverConfig
from noisecraft.solvers.driver import CountingDenoise, SampleInfo, final_step, prior_sample, sample, solve
from noisecraft.solvers.registry import SOLVERS, SolverSpec, check_options, get_solver

__all__ = ["SOLVERS", "CountingDenoise", "SampleInfo", "SolverConfig", "SolverSpec", "check_options", "final_step",
           "get_solver", "prior_sample", "sample", "solve"]
