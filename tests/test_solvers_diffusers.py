"""Equivalence with diffusers' schedulers on identical inputs, the same DDPM table and the same time grid.

The model is the oracle's exact eps at diffusers' integer timesteps (t = (n + 1) / N in noisecraft). Each
diffusers run ends with a first-order step to sigma = 0, which is noisecraft's final clean estimate at
the last grid time; everything before it must agree to float64 round-off.
"""

from __future__ import annotations

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc

diffusers = pytest.importorskip("diffusers")

SCHED = nc.schedules.DiscreteVP()
MIX = nc.oracle.ring8()
EXACT = MIX.denoiser(SCHED)


def eps_model(x: torch.Tensor, timestep) -> torch.Tensor:
    t = SCHED.t_of_timestep(torch.as_tensor(timestep, dtype=torch.float64)).expand(x.shape[0])
    return EXACT.eps(x, t)


def run_diffusers(scheduler, x: torch.Tensor, scaled: bool) -> torch.Tensor:
    """The standard diffusers loop; `scaled`: the sample lives in x~ = x / alpha (Euler, Heun)."""
    sample = x / float(SCHED.alpha(SCHED.t_of_timestep(int(scheduler.timesteps[0])))) if scaled else x
    for timestep in scheduler.timesteps:
        model_in = scheduler.scale_model_input(sample, timestep) if scaled else sample
        sample = scheduler.step(eps_model(model_in, timestep), timestep, sample).prev_sample
    return sample


def our_times(timesteps) -> torch.Tensor:
    return SCHED.t_of_timestep(torch.as_tensor([int(n) for n in timesteps], dtype=torch.float64))


def start(times: torch.Tensor) -> torch.Tensor:
    return torch.randn(64, 2, generator=gen(0), dtype=torch.float64) * float(SCHED.sigma(times[0]))


def config(**kw):
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **kw)


@pytest.mark.parametrize("steps", [5, 12])
def test_ddim_eta0(steps):
    sch = diffusers.DDIMScheduler(**config(clip_sample=False, set_alpha_to_one=True))
    sch.set_timesteps(steps)
    times = our_times(sch.timesteps)
    x = start(times)
    ours, _ = nc.solve(EXACT, SCHED, x, times, solver="ddim")
    assert torch.allclose(run_diffusers(sch, x.clone(), scaled=False), ours, atol=1e-10)


@pytest.mark.parametrize("solver_type", ["heun", "midpoint"])
@pytest.mark.parametrize("steps", [6, 12])
def test_dpm_solver_pp_2m(steps, solver_type):
    """Taylor form = diffusers' solver_type "heun"; midpoint=True = its default "midpoint" (Alg. 2 as printed)."""
    sch = diffusers.DPMSolverMultistepScheduler(**config(algorithm_type="dpmsolver++", solver_order=2,
                                                         solver_type=solver_type))
    sch.set_timesteps(timesteps=[999, 800, 600, 400, 250, 120, 40][: steps] if steps < 7 else None,
                      num_inference_steps=None if steps < 7 else steps)
    times = our_times(sch.timesteps)
    x = start(times)
    ours, _ = nc.solve(EXACT, SCHED, x, times, solver="dpm++2m", midpoint=solver_type == "midpoint")
    theirs = run_diffusers(sch, x.clone(), scaled=False)
    assert torch.allclose(theirs, ours, atol=1e-9)
    other, _ = nc.solve(EXACT, SCHED, x, times, solver="dpm++2m", midpoint=solver_type != "midpoint")
    assert not torch.allclose(theirs, other, atol=1e-6)  # the two rules differ: the test tells them apart


def test_midpoint_is_second_order_only():
    with pytest.raises(ValueError, match="midpoint=True is the second-order rule"):
        nc.solve(EXACT, SCHED, torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0.9, 0.5, 0.1]),
                 solver="dpm++3m", midpoint=True)


def test_euler_equals_ddim_in_scaled_coordinates():
    """diffusers' Euler (Karras et al. 2022, Alg. 1 without churn) is DDIM; both reach the same samples."""
    timesteps = [999, 700, 450, 200, 60, 10]
    sch = diffusers.EulerDiscreteScheduler(**config())
    sch.set_timesteps(timesteps=timesteps)
    times = our_times(timesteps)
    x = start(times)
    ours, _ = nc.solve(EXACT, SCHED, x, times, solver="ddim")
    assert torch.allclose(run_diffusers(sch, x.clone(), scaled=True), ours, atol=1e-9)


def test_heun():
    timesteps = [999, 700, 450, 200, 60, 10]
    sch = diffusers.HeunDiscreteScheduler(**config())
    sch.set_timesteps(timesteps=timesteps)
    times = our_times(timesteps)
    x = start(times)
    ours, info = nc.solve(EXACT, SCHED, x, times, solver="heun", space="sigma")
    assert info.nfe == 2 * (len(timesteps) - 1) + 1
    assert torch.allclose(run_diffusers(sch, x.clone(), scaled=True), ours, atol=1e-9)


def test_dpm_solver_pp_2m_with_dynamic_thresholding():
    """Saharia et al. 2022's thresholding of x0_hat, as diffusers applies it inside DPM-Solver++."""
    from noisecraft.core.bounds import clipped

    sch = diffusers.DPMSolverMultistepScheduler(**config(
        algorithm_type="dpmsolver++", solver_order=2, solver_type="heun", thresholding=True,
        dynamic_thresholding_ratio=0.8, sample_max_value=1.5))
    sch.set_timesteps(timesteps=[999, 800, 600, 400, 250, 120, 40])
    times = our_times(sch.timesteps)
    x = start(times)
    ours, _ = nc.solve(clipped(EXACT, 1.5, threshold=0.8), SCHED, x, times, solver="dpm++2m")
    plain, _ = nc.solve(EXACT, SCHED, x, times, solver="dpm++2m")
    assert (ours - plain).abs().max() > 0.1  # ring points (radius 2) are pulled in: the bound acts
    theirs = x.clone().reshape(-1, 2, 1)  # diffusers' thresholding needs a channel axis and one more
    for timestep in sch.timesteps:
        theirs = sch.step(eps_model(theirs.reshape(-1, 2), timestep).reshape(-1, 2, 1), timestep, theirs).prev_sample
    assert torch.allclose(theirs.reshape(-1, 2), ours, atol=1e-9)
