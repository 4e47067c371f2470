"""Optimised time grids (noisecraft.solvers.grid_search) on the exact denoiser of Gaussian-mixture oracles, where
the true error of a grid is measured against a fine reference solve from the same noise."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import noisecraft as nc
from noisecraft.core.timesteps import uniform_log_snr
from noisecraft.metrics.distribution import within_mode_w2
from noisecraft.solvers.driver import CountingDenoise
from noisecraft.solvers.grid_search import (
    KLUB,
    ays,
    default_times,
    gits_path,
    optimize_grid,
    steps_for_nfe,
    teacher_solve,
)

SCHEDULE = nc.schedules.DiscreteVP()
FAST = {"batch": 128, "fine_steps": 40}


@pytest.fixture(scope="module")
def mix16():
    return nc.oracle.mixture16d()


def _true_error(mixture, solver: str, times: torch.Tensor, n: int = 512, seed: int = 99) -> float:
    """RMS distance of the solver's end points on `times` from a 240-step reference, on fresh noise."""
    denoise = mixture.denoiser(SCHEDULE)
    z = torch.randn((n, mixture.dim), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    reference = teacher_solve(CountingDenoise(denoise), SCHEDULE, z, uniform_log_snr(SCHEDULE, 240, SCHEDULE.t_min, SCHEDULE.t_max)).x0
    x, _ = nc.solve(denoise, SCHEDULE, float(SCHEDULE.sigma(float(times[0]))) * z, times, solver)
    return float(((x - reference) ** 2).mean().sqrt())


def _within_w2(mixture, solver: str, times: torch.Tensor, n: int = 4000) -> float:
    x = nc.sample(mixture.denoiser(SCHEDULE), SCHEDULE, solver, len(times) - 1, shape=(n, mixture.dim), grid=times,
                  generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return within_mode_w2(x, mixture)


def test_dp_finds_the_cheapest_path_of_exactly_n_jumps() -> None:
    g = torch.Generator().manual_seed(0)
    n = 7
    costs = torch.rand((n, n), generator=g, dtype=torch.float64).triu(1)
    costs[torch.tril(torch.ones(n, n, dtype=torch.bool))] = math.inf
    start, end = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    for steps in (1, 3, 6):
        path, best = gits_path(costs, start, end, steps)
        brute = min(float(start[p[0]] + sum(costs[a, b] for a, b in itertools.pairwise(p)) + end[p[-1]])
                    for p in itertools.combinations(range(n), steps + 1))
        assert len(path) == steps + 1 and path == sorted(set(path)) and best == pytest.approx(brute)
    with pytest.raises(ValueError, match="`steps` must be between 1 and 6"):
        gits_path(costs, start, end, 7)


@pytest.mark.parametrize("solver, nfe, steps", [("dpm++2m", 5, 4), ("dpm++2s", 5, 2), ("heun", 7, 3)])
def test_gits_grid_has_the_requested_steps_and_documented_ends(mix16, solver: str, nfe: int, steps: int) -> None:
    denoise = mix16.denoiser(SCHEDULE)
    small = {"batch": 64, "fine_steps": 24}
    times = optimize_grid(denoise, SCHEDULE, nfe, solver, shape=(16,), **small)
    assert times.dtype == torch.float64 and len(times) == steps + 1 and (times[1:] < times[:-1]).all()
    fine = uniform_log_snr(SCHEDULE, small["fine_steps"], SCHEDULE.t_min, SCHEDULE.t_max)
    assert all(torch.isclose(fine, t).any() for t in times)  # free ends: points of the fine grid
    fixed = optimize_grid(denoise, SCHEDULE, nfe, solver, shape=(16,), t_min=0.01, t_max=0.9, **small)
    assert float(fixed[0]) == 0.9 and float(fixed[-1]) == 0.01 and len(fixed) == steps + 1
    _, info = nc.sample(denoise, SCHEDULE, solver, steps, shape=(4, 16), grid=fixed, return_info=True)
    assert info.nfe == nfe  # the grid spends exactly the NFE asked for


@pytest.mark.parametrize("solver", ["dpm++2m", "unipc"])
def test_fd_grid_beats_the_default_grid_at_nfe_5(mix16, solver: str) -> None:
    times, info = optimize_grid(mix16.denoiser(SCHEDULE), SCHEDULE, 5, solver, shape=(16,), method="fd",
                                return_info=True, **FAST)
    assert info.fd < info.default_fd  # the objective it minimised, on its own noise
    default = default_times(SCHEDULE, solver, 4)
    assert _within_w2(mix16, solver, times) < 0.95 * _within_w2(mix16, solver, default)  # true error, fresh noise


def test_gits_one_step_costs_make_a_first_order_solver_better_than_the_default(mix16) -> None:
    times = optimize_grid(mix16.denoiser(SCHEDULE), SCHEDULE, 5, "ddim", shape=(16,), **FAST)
    assert _true_error(mix16, "ddim", times) < 0.95 * _true_error(mix16, "ddim", default_times(SCHEDULE, "ddim", 4))


def test_ays_klub_decreases_over_its_sweeps(mix16) -> None:
    denoise = CountingDenoise(mix16.denoiser(SCHEDULE))
    x0 = mix16.sample(128, torch.Generator().manual_seed(1))[0]
    klub = KLUB(denoise, SCHEDULE, x0, 6, torch.Generator().manual_seed(2))
    start = uniform_log_snr(SCHEDULE, 4, 0.01, 0.9)
    times, history = ays(klub, start, candidates=6, sweeps=3)
    assert history[-1] < 0.8 * history[0] and all(b <= a for a, b in itertools.pairwise(history))
    assert float(times[0]) == 0.9 and float(times[-1]) == 0.01 and (times[1:] < times[:-1]).all()
    # the interval's bound vanishes as it shrinks and is additive up to the frozen start (a larger interval costs more)
    assert klub(0.5, 0.49) < klub(0.5, 0.3) < klub(0.5, 0.1)


def test_ays_grid_through_the_entry_point(mix16) -> None:
    data = mix16.sample(256, torch.Generator().manual_seed(1))[0]
    times, info = optimize_grid(mix16.denoiser(SCHEDULE), SCHEDULE, 5, "dpm++2m", data=data, method="ays",
                                return_info=True, **FAST)
    default = default_times(SCHEDULE, "dpm++2m", 4)
    assert len(times) == 5 and float(times[0]) == float(default[0]) and float(times[-1]) == float(default[-1])
    assert info.history[-1] < info.history[0] and math.isfinite(info.error)


def test_bad_inputs_are_named_before_any_work(mix16) -> None:
    denoise = mix16.denoiser(SCHEDULE)
    with pytest.raises(ValueError, match=r"`nfe` must be an integer >= 3 for solver 'dpm\+\+2s'"):
        optimize_grid(denoise, SCHEDULE, 2, "dpm++2s", shape=(16,))
    with pytest.raises(ValueError, match="adaptive"):
        steps_for_nfe("rk45", 5)
    with pytest.raises(ValueError, match="needs|pass `data`"):
        optimize_grid(denoise, SCHEDULE, 5, method="ays", shape=(16,))
    with pytest.raises(ValueError, match=r"`data` samples have shape \(2,\)"):
        optimize_grid(denoise, SCHEDULE, 5, method="ays", data=torch.zeros(10, 2), shape=(16,))
    bad = torch.zeros(10, 16)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        optimize_grid(denoise, SCHEDULE, 5, method="ays", data=bad)
    with pytest.raises(ValueError, match="unknown `method`"):
        optimize_grid(denoise, SCHEDULE, 5, method="best", shape=(16,))
    with pytest.raises(ValueError, match="stochastic"):
        optimize_grid(denoise, SCHEDULE, 5, "ddpm", shape=(16,))
    with pytest.raises(ValueError, match="pass `shape`"):
        optimize_grid(denoise, SCHEDULE, 5)
    with pytest.raises(ValueError, match="NaN or inf"):
        optimize_grid(lambda x, t: torch.full_like(x, float("nan")), SCHEDULE, 5, shape=(16,), **FAST)
