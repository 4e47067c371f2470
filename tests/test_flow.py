"""Rectified flow in the core: the schedule alpha = 1 - t, sigma = t, the velocity parameterization u = eps - x0,
logit-normal training times and the `flow` preset; DDIM = Euler on it, diffusers' FlowMatchEulerDiscreteScheduler
reproduced, the exact likelihood, and a tiny trained run.

The schedule's part in the shared tests: tests/conftest.py (every schedule-parametrised core test),
test_solvers_order.py (measured order), test_solvers_convergence.py (every solver on the oracles),
test_likelihood.py (exact divergence on the ring), test_core_oracle.py (closed-form Gaussian flow).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft import schedules as S
from noisecraft.analysis.likelihood import log_likelihood
from noisecraft.core.losses import PRESETS, preset
from noisecraft.core.parameterization import (
    flow_from_x0,
    prediction_from_x0,
    v_from_x0,
    x0_from_prediction,
)
from noisecraft.core.sde import ReverseProcess, point
from noisecraft.core.tensors import FLOAT64

RF = S.RectifiedFlow()
T = torch.linspace(0.01, 0.99, 33, dtype=FLOAT64)
RING = nc.oracle.ring8()


def test_schedule_closed_forms():
    """alpha = 1 - t, sigma = t; f = d log alpha/dt = -1/(1 - t); g^2 = 2t + 2t^2/(1 - t) = 2t/(1 - t)."""
    assert torch.allclose(RF.alpha(T), 1 - T, rtol=1e-14)
    assert torch.allclose(RF.sigma(T), T, rtol=1e-14)
    assert torch.allclose(RF.log_snr(T), 2 * torch.log((1 - T) / T), rtol=1e-13)
    assert torch.allclose(RF.f(T), -1 / (1 - T), rtol=1e-12)
    assert torch.allclose(RF.g2(T), 2 * T / (1 - T), rtol=1e-12)


def test_inverse_log_snr_is_exact_and_agrees_with_bisection():
    lam = torch.tensor([-40.0, -13.8, -3.0, 0.0, 0.5, 9.0, 40.0], dtype=FLOAT64)
    t = RF.t_from_log_snr(lam)
    assert torch.allclose(t, 1 / (1 + torch.exp(lam / 2)), rtol=1e-15)
    assert torch.allclose(t, S.Schedule.t_from_log_snr(RF, lam), rtol=1e-12, atol=1e-16)  # the generic inverse
    assert float(RF.t_from_log_snr(0.0)) == 0.5


def test_default_range_has_finite_log_snr_and_config_round_trips():
    assert (RF.t_min, RF.t_max) == (1e-3, 0.999)
    lam = RF.log_snr(torch.tensor([RF.t_max, RF.t_min], dtype=FLOAT64))
    assert torch.allclose(lam, torch.tensor([-1.0, 1.0], dtype=FLOAT64) * 2 * math.log(999), rtol=1e-12)  # symmetric
    assert not torch.isfinite(RF.log_snr(1.0))  # why t_max < 1
    assert RF.prior_std() == pytest.approx(0.999)
    assert S.schedule_from_config({"name": "rectified_flow"}) == RF
    assert S.schedule_from_config(S.RectifiedFlow(t_max=0.99).to_config()).t_max == 0.99
    with pytest.raises(TypeError, match="at most 0 positional"):
        S.RectifiedFlow(0.5)


def test_velocity_is_the_time_derivative_of_the_straight_path():
    """For fixed (x0, eps), d x_t/dt = eps - x0, which the parameterization recovers from (x_t, x0) at any t."""
    x0 = torch.randn(16, 3, generator=gen(0), dtype=FLOAT64)
    eps = torch.randn(16, 3, generator=gen(1), dtype=FLOAT64)
    t, h = 0.37, 1e-6
    path = lambda s: float(RF.alpha(s)) * x0 + float(RF.sigma(s)) * eps
    derivative = (path(t + h) - path(t - h)) / (2 * h)
    u = flow_from_x0(path(t), x0, RF.alpha(t), RF.sigma(t))
    assert torch.allclose(u, eps - x0, atol=1e-12)
    assert torch.allclose(derivative, u, atol=1e-8)


def test_velocity_relates_to_v_prediction():
    """Under alpha = 1 - t, sigma = t: u = (v + (2t - 1) x_t) / (alpha^2 + sigma^2), v = alpha eps - sigma x0."""
    x = torch.randn(33, 2, generator=gen(2), dtype=FLOAT64)
    x0 = torch.randn(33, 2, generator=gen(3), dtype=FLOAT64)
    alpha, sigma, t = RF.alpha(T)[:, None], RF.sigma(T)[:, None], T[:, None]
    v = v_from_x0(x, x0, alpha, sigma)
    assert torch.allclose(flow_from_x0(x, x0, alpha, sigma), (v + (2 * t - 1) * x) / (alpha**2 + sigma**2), atol=1e-10)


@pytest.mark.parametrize("schedule", [RF, S.VPCosine(), S.EDM()], ids=["rectified_flow", "vp_cosine", "edm"])
def test_flow_parameterization_inverts_on_any_schedule(schedule):
    """x0 = (x - sigma u) / (alpha + sigma) for any (alpha, sigma); a Denoiser.from_flow of the exact velocity is exact."""
    exact = RING.denoiser(schedule)
    x = torch.randn(32, 2, generator=gen(4), dtype=FLOAT64) * 2
    t = torch.full((32,), 0.41, dtype=FLOAT64)
    u = exact.flow(x, t)
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    assert torch.allclose(x0_from_prediction("flow", u, x, alpha, sigma), exact(x, t), atol=1e-10)
    assert torch.allclose(nc.Denoiser.from_flow(exact.flow, schedule)(x, t), exact(x, t), atol=1e-10)


def test_pf_ode_drift_is_the_velocity():
    """The generic PF-ODE drift f x - g^2 score / 2 of RectifiedFlow equals the velocity E[eps - x0 | x_t]."""
    exact = RING.denoiser(RF)
    flow = ReverseProcess(RF, exact, probability_flow=True)
    x = torch.randn(32, 2, generator=gen(5), dtype=FLOAT64) * 1.5
    for t in (0.02, 0.3, 0.77, 0.99):
        assert torch.allclose(flow.drift(x, point(RF, t)), exact.flow(x, t), atol=1e-9)


def test_ddim_and_euler_in_t_coincide_on_rectified_flow_only():
    """DDIM's x_t = alpha_t x0_hat + sigma_t eps_hat is x_s + (t - s) (eps_hat - x0_hat) when alpha, sigma are linear in t."""
    times = torch.tensor([0.999, 0.93, 0.7, 0.45, 0.3, 0.12, 0.04, 0.001], dtype=FLOAT64)
    x = torch.randn(64, 2, generator=gen(6), dtype=FLOAT64) * RF.prior_std()
    euler, _ = nc.solve(RING.denoiser(RF), RF, x, times, solver="euler", denoise_final=False)
    ddim, _ = nc.solve(RING.denoiser(RF), RF, x, times, solver="ddim", denoise_final=False)
    assert torch.allclose(euler, ddim, atol=1e-10)
    vp = S.VPCosine()  # the contrast: on a curved schedule the two first-order methods differ
    euler, _ = nc.solve(RING.denoiser(vp), vp, x, times, solver="euler", denoise_final=False)
    ddim, _ = nc.solve(RING.denoiser(vp), vp, x, times, solver="ddim", denoise_final=False)
    assert (euler - ddim).abs().max() > 1e-2


# -- diffusers' FlowMatchEulerDiscreteScheduler on identical inputs ------------------------------------------------


def run_diffusers(scheduler, x: torch.Tensor) -> torch.Tensor:
    """The diffusers loop with the exact velocity E[eps - x0 | x_sigma] of the ring as the model (sigma = t)."""
    exact = RING.denoiser(RF)
    sample = x.clone()
    for timestep, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1]):
        velocity = exact.flow(sample.double(), torch.tensor(float(sigma), dtype=FLOAT64))  # finite at t = 1 too
        sample = scheduler.step(velocity, timestep, sample).prev_sample
    return sample


@pytest.mark.parametrize("steps", [4, 10])
@pytest.mark.parametrize("solver", ["euler", "ddim"])
def test_diffusers_flow_match_euler_on_our_grid(steps, solver):
    """shift = 1, no dynamic shifting, sigmas = noisecraft's uniform grid; diffusers' last step to sigma = 0 is
    x - sigma u = x0_hat, noisecraft's final clean estimate. diffusers keeps the sample in float32."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    scheduler.set_timesteps(sigmas=nc.timesteps.make_grid(RF, steps, "uniform").tolist())
    times = scheduler.sigmas[:-1].double()  # the float32 sigmas both runs use
    x = torch.randn(64, 2, generator=gen(7), dtype=FLOAT64) * float(RF.sigma(times[0]))
    ours, info = nc.solve(RING.denoiser(RF), RF, x, times, solver=solver)
    assert info.nfe == len(scheduler.timesteps)
    assert torch.allclose(run_diffusers(scheduler, x), ours, atol=1e-6)


def test_diffusers_default_schedule_from_sigma_one():
    """diffusers' own grid starts at sigma = 1 from pure noise; noisecraft starts 1e-8 below it, where the
    log-SNR is finite (its grids refuse alpha = 0), and lands on the same samples to float32 precision."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(8)
    assert float(scheduler.sigmas[0]) == 1.0
    times = scheduler.sigmas[:-1].double()
    times[0] = 1 - 1e-8
    noise = torch.randn(64, 2, generator=gen(8), dtype=FLOAT64)
    ours, _ = nc.solve(RING.denoiser(RF), RF, noise, times, solver="euler")
    assert torch.allclose(run_diffusers(scheduler, noise), ours, atol=1e-6)


# -- the loss ---------------------------------------------------------------------------------------------------


def test_flow_preset_is_conditional_flow_matching():
    loss = preset("flow")
    assert "flow" in PRESETS
    assert (loss.schedule, loss.parameterization, loss.time_distribution, loss.weighting) == (
        RF, "flow", "logit_normal", "prediction")
    # unit weight on u is ((alpha + sigma) / sigma)^2 on x0 (the slope d x0_hat / du = -sigma / (alpha + sigma)) and
    # 1 / (1 - t)^2 on eps: Esser et al. 2024's w_t = t / (1 - t) in their -w lambda'/2 convention
    assert torch.allclose(loss.output_slope(T), -T, atol=1e-14)
    x0_weighted = loss.model_copy(update={"weighting": "x0"})
    assert torch.allclose(x0_weighted.weight(T), T**2, atol=1e-14)  # w_x0 = 1 carried to u-space
    x0 = torch.randn(33, 2, generator=gen(9), dtype=FLOAT64)
    eps = torch.randn(33, 2, generator=gen(10), dtype=FLOAT64)
    guess = lambda x, t: 0.7 * x

    def in_parameterization(kind: str) -> nc.Denoiser:
        def fn(x, t):
            alpha, sigma = RF.alpha(t)[:, None], RF.sigma(t)[:, None]
            return prediction_from_x0(kind, guess(x, t), x, alpha, sigma)
        return nc.Denoiser(fn, RF, kind)

    flow_loss = loss.per_sample(in_parameterization("flow"), x0, t=T, eps=eps).double()  # squared errors in float32
    eps_loss = loss.model_copy(update={"parameterization": "eps"}).per_sample(in_parameterization("eps"), x0, t=T, eps=eps)
    x_t = (1 - T)[:, None] * x0 + T[:, None] * eps
    x0_err = ((guess(x_t, T) - x0) ** 2).mean(1)
    assert torch.allclose(flow_loss, x0_err / T**2, rtol=1e-5)
    assert torch.allclose(flow_loss, eps_loss.double() / (1 - T) ** 2, rtol=1e-5)


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_times(mean, std):
    """t = sigmoid(n), n ~ N(m, s^2) (Esser et al. 2024, sec. 3.1), inside [t_min, t_max]."""
    loss = preset("flow", logit_mean=mean, logit_std=std)
    t = loss.sample_t(40_000, gen(11))
    assert t.dtype == FLOAT64 and float(t.min()) >= RF.t_min and float(t.max()) <= RF.t_max
    logit = torch.log(t / (1 - t))
    assert float(logit.mean()) == pytest.approx(mean, abs=0.02)
    assert float(logit.std()) == pytest.approx(std, abs=0.02)
    with pytest.raises(ValueError, match="logit_std"):
        preset("flow", logit_std=0.0)


# -- the likelihood ---------------------------------------------------------------------------------------------


def test_exact_likelihood_of_gaussian_data():
    """Exact divergence through RectifiedFlow's PF-ODE against the closed-form log-density of a 3-D Gaussian.

    Zero mean, so the prior N(0, sigma(t_max)^2 I) misses the true p_{t_max} only by alpha(t_max)^2 Sigma ~ 1e-7
    and what remains is the ODE's error; with a mean mu the prior term adds about alpha(t_max) mu.x_T / sigma^2
    (2e-3 nats here for mu of norm 1.1 at t_max = 0.999; 1.3e-2 for VPLinear, whose alpha(1) = 6.5e-3)."""
    schedule = S.RectifiedFlow(t_min=1e-5)
    g = nc.oracle.gaussian([0.0, 0.0, 0.0], [[0.3, 0.1, 0.0], [0.1, 0.05, 0.01], [0.0, 0.01, 0.02]])
    x, _ = g.sample(32, gen(12))
    result = log_likelihood(g.denoiser(schedule), schedule, x, divergence="exact", rtol=1e-7, atol=1e-7)
    assert (result.log_prob - g.log_prob(x)).abs().max() < 1e-4


# -- a trained run ----------------------------------------------------------------------------------------------


def test_train_and_sample_the_flow_preset(tmp_path: Path):
    """`train --loss flow` on moons: a tiny MLP for 200 steps learns (loss falls, samples move from noise towards
    the data) and `load_run(...).sample` draws from it."""
    from noisecraft.data import DataConfig
    from noisecraft.metrics.distribution import sliced_w2
    from noisecraft.nets import NetConfig
    from noisecraft.runs.config import config_from_options, preset_config
    from noisecraft.runs.train import train

    assert config_from_options("moons", "edm", loss="flow").loss == preset("flow")
    cfg = preset_config("moons", "flow", max_steps=200, batch_size=128, warmup_steps=5, checkpoint_every=200,
                        log_every=1, lr=3e-3, ema_decay=0.9)
    assert cfg.loss == preset("flow")
    train(cfg.model_copy(update={"model": NetConfig(width=64, depth=2)}), tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-20:]) / 20 < 0.9 * sum(losses[:20]) / 20
    pipe = nc.load_run(tmp_path / "run")
    assert pipe.schedule == RF
    x = pipe.sample(n=500, steps=10, seed=1)
    assert x.shape == (500, 2) and torch.isfinite(x).all()
    data = torch.as_tensor(DataConfig(name="moons", n=500).load().x, dtype=FLOAT64)
    noise = torch.randn(500, 2, generator=gen(13), dtype=FLOAT64)
    assert sliced_w2(x.double(), data, generator=gen(14)) < 0.7 * sliced_w2(noise, data, generator=gen(14))
