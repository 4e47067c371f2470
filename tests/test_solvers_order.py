"""Pathwise convergence order of the deterministic solvers against the exact PF-ODE flow of a Gaussian.

The grid runs from t_max to t_min and the final clean estimate is taken once, after it (solvers/__init__.py),
so each solver must show its nominal order on the whole path, last interval included.
"""

from __future__ import annotations

import math

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft import schedules as S

ORDERS = {"unipc": 3, "ddim": 1, "euler": 1, "heun": 2, "dpm++2m": 2, "dpm++3m": 3, "dpm2s": 2, "dpm++2s": 2, "dpm++1m": 1}
GAUSSIAN = nc.oracle.gaussian([0.5, -1.0, 0.2], [[0.3, 0.1, 0.0], [0.1, 0.05, 0.01], [0.0, 0.01, 0.02]])


def pathwise_errors(solver: str, schedule: S.Schedule, steps: list[int], grid: str = "log_snr") -> list[float]:
    x = torch.randn(16, 3, generator=gen(0), dtype=torch.float64) * schedule.prior_std()
    errors = []
    for n in steps:
        times = nc.timesteps.make_grid(schedule, n, grid)
        exact = GAUSSIAN.flow(x, float(times[0]), float(times[-1]), schedule)
        out, info = nc.solve(GAUSSIAN.denoiser(schedule), schedule, x, times, solver=solver, denoise_final=False)
        errors.append(float((out * float(schedule.alpha(times[-1])) - exact).norm(dim=1).mean()))
    return errors


@pytest.mark.parametrize("solver", sorted(ORDERS))
@pytest.mark.parametrize("schedule", [S.VPCosine(), S.EDM(), S.RectifiedFlow()],
                         ids=["vp_cosine", "edm", "rectified_flow"])
def test_measured_order_matches_nominal(solver, schedule):
    if solver == "euler" and schedule.name == "edm":
        pytest.skip("Euler in t on EDM's rho-time is first order only far into the asymptotic range (tested on VP)")
    errors = pathwise_errors(solver, schedule, [40, 80, 160])
    slope = math.log(errors[-2] / errors[-1]) / math.log(2)
    assert slope > ORDERS[solver] - 0.2, f"{solver}: errors {errors}, measured order {slope:.2f}"
    assert errors[-1] < errors[0]


def test_adaptive_solver_meets_tolerance():
    sched = S.VPLinear()
    x = torch.randn(16, 3, generator=gen(1), dtype=torch.float64) * sched.prior_std()
    times = torch.tensor([sched.t_max, sched.t_min], dtype=torch.float64)
    exact = GAUSSIAN.flow(x, sched.t_max, sched.t_min, sched)
    errs, nfes = [], []
    for tol in (1e-3, 1e-6):
        out, info = nc.solve(GAUSSIAN.denoiser(sched), sched, x, times, solver="rk45", denoise_final=False, rtol=tol, atol=tol)
        errs.append(float((out * float(sched.alpha(sched.t_min)) - exact).abs().max()))
        nfes.append(info.nfe)
    assert errs[1] < 1e-4 and errs[1] < errs[0]
    assert nfes[1] > nfes[0]
