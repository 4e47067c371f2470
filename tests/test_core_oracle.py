"""The oracle: exact score against autograd of log p_t, exact denoiser against Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_score_equals_autograd_of_log_density(schedule, mix16, t):
    x = (mix16.sample(8, gen(0))[0] * float(schedule.alpha(t)) + float(schedule.sigma(t)) * torch.randn(8, 16, generator=gen(1), dtype=torch.float64)).requires_grad_(True)
    log_p = mix16.log_prob_t(x, t, schedule).sum()
    (grad,) = torch.autograd.grad(log_p, x)
    assert torch.allclose(mix16.score(x.detach(), t, schedule), grad, rtol=1e-7, atol=1e-8)


def test_log_prob_integrates_to_one(ring):
    grid = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    mass = ring.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(float(mass) - 1) < 1e-4


def test_sampling_matches_weights_and_moments(mix16):
    x, labels = mix16.sample(30000, gen(2))
    share = torch.bincount(labels, minlength=6) / 30000
    assert torch.allclose(share.double(), mix16.weights, atol=0.01)
    k = 1
    members = x[labels == k]
    assert torch.allclose(torch.cov(members.T), mix16.covariances[k], atol=0.02)


def test_denoiser_matches_monte_carlo_posterior_mean(ring):
    """E[x0 | x_t] by self-normalised importance sampling from the prior: x0 ~ p_0, weights N(x_t; a x0, s^2)."""
    sched = nc.schedules.VPLinear()
    t = 0.35
    a, s = float(sched.alpha(t)), float(sched.sigma(t))
    x0, _ = ring.sample(400000, gen(3))
    queries = torch.tensor([[1.0, 0.5], [-0.3, 0.2], [0.0, -1.4]], dtype=torch.float64)
    for xt in queries:
        log_w = -((xt - a * x0) ** 2).sum(1) / (2 * s * s)
        w = torch.softmax(log_w, 0)
        mc = (w[:, None] * x0).sum(0)
        ess = 1 / (w**2).sum()
        se = math.sqrt(float((w[:, None] * (x0 - mc) ** 2).sum(0).max()) / float(ess))
        exact = ring.x0_hat(xt[None], t, sched)[0]
        assert (exact - mc).abs().max() < 5 * se + 1e-3


@pytest.mark.parametrize("sched", [nc.schedules.VPCosine(), nc.schedules.RectifiedFlow()],
                         ids=["vp_cosine", "rectified_flow"])
def test_exact_flow_is_the_ode_solution(sched):
    """The closed-form flow of a Gaussian agrees with a fine adaptive ODE solve."""
    g = nc.oracle.gaussian([0.5, -1.0], [[0.3, 0.1], [0.1, 0.05]])
    x = torch.randn(5, 2, generator=gen(4), dtype=torch.float64) * float(sched.sigma(0.9))
    exact = g.flow(x, 0.9, 0.01, sched)
    times = torch.tensor([0.9, 0.01], dtype=torch.float64)
    numeric, _ = nc.solve(g.denoiser(sched), sched, x, times, solver="rk45", denoise_final=False, rtol=1e-10, atol=1e-10)
    assert torch.allclose(numeric * float(sched.alpha(0.01)), exact, atol=1e-7)


def test_bad_mixture_inputs():
    with pytest.raises(ValueError, match="positive definite"):
        nc.oracle.GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
    with pytest.raises(ValueError, match="weights must have shape"):
        nc.oracle.GaussianMixture([0.5, 0.5, 0.1], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="dimension"):
        nc.oracle.ring8().log_prob(torch.zeros(3, 5))
