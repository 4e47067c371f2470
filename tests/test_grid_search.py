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
from noisecraft.solvers.dpm import multistep
from noisecraft.solvers.driver import CountingDenoise
from noisecraft.solvers.grid_search import (
    KLUB,
    ays,
    default_times,
    gits_history_costs,
    gits_pair_path,
    gits_path,
    optimize_grid,
    propagation,
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


def test_pair_dp_finds_the_cheapest_path_with_history_costs() -> None:
    g = torch.Generator().manual_seed(1)
    n = 7
    start, end = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    first, pair = torch.rand((n, n), generator=g, dtype=torch.float64), torch.rand((n, n, n), generator=g, dtype=torch.float64)
    for steps in (1, 2, 4, 6):
        path, best = gits_pair_path(start, first, pair, end, steps)

        def cost(p: tuple[int, ...]) -> float:
            return float(start[p[0]] + first[p[0], p[1]] + sum(pair[a, b, c] for a, b, c in zip(p, p[1:], p[2:])) + end[p[-1]])

        brute = min(itertools.combinations(range(n), steps + 1), key=cost)
        assert path == list(brute) and best == pytest.approx(cost(brute))
    with pytest.raises(ValueError, match="`steps` must be between 1 and 6"):
        gits_pair_path(start, first, pair, end, 7)


def test_history_costs_are_the_solvers_own_step_error(mix16) -> None:
    """pair[i, j, k] (Gram quadratic form) equals the RMS error of DPM-Solver++(2M) run on the grid (t_i, t_j, t_k)
    with the teacher's state and x0_hats substituted, computed directly on the batch."""
    denoise = mix16.denoiser(SCHEDULE)
    z = torch.randn((64, 16), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    teacher = teacher_solve(CountingDenoise(denoise), SCHEDULE, z, uniform_log_snr(SCHEDULE, 8, 0.02, 0.9))
    costs = gits_history_costs(SCHEDULE, teacher)
    carry = propagation(SCHEDULE, teacher.times, float(teacher.x0.var(dim=0).mean()))
    for i, j, k in [(0, 1, 2), (1, 4, 8), (0, 3, 5)]:
        lookup = {float(teacher.times[m]): teacher.x0_hats[m] for m in (i, j, k)}

        def cached(x, t, lookup=lookup):
            return lookup[float(t)]

        # from X_j with history D_i: the 2M step j -> k after a first step i -> j landing exactly on X_j
        x_k = multistep(cached, SCHEDULE, teacher.states[i], teacher.times[[i, j, k]], order=2)
        x_j_solver = multistep(cached, SCHEDULE, teacher.states[i], teacher.times[[i, j]], order=2)
        sigma = SCHEDULE.sigma(teacher.times[[j, k]])
        x_k = x_k + float(sigma[1] / sigma[0]) * (teacher.states[j] - x_j_solver)  # the step is affine in x_j
        direct = float(((x_k - teacher.states[k]) ** 2).sum(dim=1).mean().sqrt()) * float(carry[k])
        assert float(costs["pair"][i, j, k]) == pytest.approx(direct, rel=1e-9)
    assert torch.isinf(costs["pair"][2, 1, 3]) and torch.isinf(costs["first"][3, 3])  # only increasing paths


@pytest.mark.parametrize("solver, nfe, steps", [("dpm++2m", 5, 4), ("dpm++2s", 5, 2), ("heun", 7, 3)])
def test_gits_grid_has_the_requested_steps_and_documented_ends(mix16, solver: str, nfe: int, steps: int) -> None:
    denoise = mix16.denoiser(SCHEDULE)
    small = {"batch": 64, "fine_steps": 24}
    times = optimize_grid(denoise, SCHEDULE, nfe, solver, shape=(16,), method="gits", **small)
    assert times.dtype == torch.float64 and len(times) == steps + 1 and (times[1:] < times[:-1]).all()
    fine = uniform_log_snr(SCHEDULE, small["fine_steps"], SCHEDULE.t_min, SCHEDULE.t_max)
    assert all(torch.isclose(fine, t).any() for t in times)  # points of the fine grid
    lam, default = SCHEDULE.log_snr(fine), default_times(SCHEDULE, solver, steps)
    for t, want in ((times[0], default[0]), (times[-1], default[-1])):  # ends: the fine points nearest the default's
        assert float(t) == float(fine[torch.argmin((lam - SCHEDULE.log_snr(want)).abs())])
    fixed = optimize_grid(denoise, SCHEDULE, nfe, solver, shape=(16,), method="gits", t_min=0.01, t_max=0.9, **small)
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


def test_history_costs_beat_one_step_costs_for_unipc(mix16) -> None:
    denoise = mix16.denoiser(SCHEDULE)
    _, one = optimize_grid(denoise, SCHEDULE, 5, "unipc", shape=(16,), method="gits", history=False, return_info=True, **FAST)
    _, two = optimize_grid(denoise, SCHEDULE, 5, "unipc", shape=(16,), method="gits", return_info=True, **FAST)
    assert two.fd < 0.8 * one.fd  # the objective neither search used, on the same noise


def test_fd_is_the_default_method(mix16) -> None:
    _, info = optimize_grid(mix16.denoiser(SCHEDULE), SCHEDULE, 5, shape=(16,), return_info=True, batch=64, fine_steps=24)
    assert info.method == "fd" and info.solver == "dpm++2m"


def test_gits_one_step_costs_make_a_first_order_solver_better_than_the_default(mix16) -> None:
    times = optimize_grid(mix16.denoiser(SCHEDULE), SCHEDULE, 5, "ddim", shape=(16,), method="gits", **FAST)
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
