"""Forward process: q(x_t | x_0) sampling, and the discrete chain against the closed-form marginal."""

from __future__ import annotations

import torch
from tests._helpers import gen

from noisecraft import schedules as S
from noisecraft.core.forward import q_sample, run_chain


def test_q_sample_moments(schedule):
    x0 = torch.tensor([[1.5, -2.0]], dtype=torch.float64).expand(40000, 2)
    xt, eps = q_sample(schedule, x0, 0.4, gen(1))
    alpha, sigma = float(schedule.alpha(0.4)), float(schedule.sigma(0.4))
    assert torch.allclose(xt, alpha * x0 + sigma * eps)
    se = sigma / 40000**0.5
    assert ((xt.mean(0) - alpha * x0[0]).abs() < 5 * se).all()
    assert ((xt.std(0) / sigma - 1).abs() < 0.03).all()


def test_markov_chain_matches_marginal():
    """Running q(x_n | x_{n-1}) step by step gives N(sqrt(abar_n) x0, (1 - abar_n) I) (Ho et al. 2020, eq. 4)."""
    s = S.DiscreteVP(num_timesteps=100, beta_start=1e-3, beta_end=0.05)
    n_samples, n_last = 20000, 59
    x0 = torch.randn(n_samples, 3, generator=gen(2), dtype=torch.float64) * 0.5 + torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    x = run_chain(s, x0, n_last, gen(3))
    abar = float(s.alphas_cumprod()[n_last])
    # x_n - sqrt(abar) x0 must be N(0, (1 - abar) I), independent of x0
    resid = x - abar**0.5 * x0
    se = ((1 - abar) / n_samples) ** 0.5
    assert (resid.mean(0).abs() < 5 * se).all()
    cov = torch.cov(resid.T)
    assert torch.allclose(cov, (1 - abar) * torch.eye(3, dtype=torch.float64), atol=5 * (2 / n_samples) ** 0.5 * (1 - abar))
    # and the continuous schedule at the matching time has the same alpha
    assert abs(float(s.alpha(s.t_of_timestep(n_last))) ** 2 - abar) < 1e-12
