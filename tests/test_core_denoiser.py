"""Denoiser parameterizations: exact round trips for every schedule, and the one-line wrappers."""

from __future__ import annotations

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.core.parameterization import (
    PARAMETERIZATIONS,
    prediction_from_x0,
    x0_from_prediction,
)


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_round_trip_every_parameterization(schedule, kind):
    x = torch.randn(64, 3, generator=gen(0), dtype=torch.float64) * 3
    x0 = torch.randn(64, 3, generator=gen(1), dtype=torch.float64)
    t = torch.rand(64, generator=gen(2), dtype=torch.float64) * (schedule.t_max - schedule.t_min - 0.01) + schedule.t_min + 0.005
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    pred = prediction_from_x0(kind, x0, x, alpha, sigma)
    assert torch.allclose(x0_from_prediction(kind, pred, x, alpha, sigma), x0, rtol=1e-8, atol=1e-8)


def test_wrappers_agree_with_the_exact_denoiser(schedule, ring):
    exact = ring.denoiser(schedule)
    x = torch.randn(32, 2, generator=gen(3), dtype=torch.float64) * 2
    t = 0.37
    eps_fn = lambda x, t: exact.eps(x, t)  # noqa: E731
    score_fn = lambda x, t: exact.score(x, t)  # noqa: E731
    v_fn = lambda x, t: exact.v(x, t)  # noqa: E731
    flow_fn = lambda x, t: exact.flow(x, t)  # noqa: E731
    for wrapped in (nc.Denoiser.from_eps(eps_fn, schedule), nc.Denoiser.from_score(score_fn, schedule),
                    nc.Denoiser.from_v(v_fn, schedule), nc.Denoiser.from_flow(flow_fn, schedule)):
        assert torch.allclose(wrapped(x, t), exact(x, t), atol=1e-9)


def test_edm_preconditioning_round_trip(schedule, ring):
    """An EDM network F that returns the exact target reproduces the exact denoiser."""
    exact = ring.denoiser(schedule)
    from noisecraft.core.parameterization import edm_coefficients

    def F(x_in, c_noise):
        sigma_tilde = torch.exp(4 * c_noise)[:, None]
        c_skip, c_out, c_in, _ = edm_coefficients(sigma_tilde, 0.5)
        x_scaled = x_in / c_in
        alpha = 1 / torch.sqrt(1 + sigma_tilde**2) if schedule.name in ("vp_linear", "vp_cosine", "discrete_vp") else None
        if alpha is None:
            return None
        x = alpha * x_scaled
        t = schedule.t_from_sigma_tilde(sigma_tilde[:, 0])
        return (exact(x, t) - c_skip * x_scaled) / c_out

    if schedule.name not in ("vp_linear", "vp_cosine", "discrete_vp"):
        pytest.skip("F above reconstructs x from x~ using the VP relation alpha = 1/sqrt(1 + sigma~^2)")
    d = nc.Denoiser.edm(F, schedule)
    x = torch.randn(16, 2, generator=gen(4), dtype=torch.float64)
    assert torch.allclose(d(x, 0.3), exact(x, 0.3), atol=1e-8)


def test_discrete_timestep_input():
    """A diffusers-style eps net taking integer DDPM timesteps plugs in with time_input='timestep'."""
    sched = nc.schedules.DiscreteVP()
    seen = []

    def eps_net(x, timestep):
        seen.append(timestep.clone())
        return torch.zeros_like(x)

    d = nc.Denoiser.from_eps(eps_net, sched, time_input="timestep")
    d(torch.zeros(2, 2, dtype=torch.float64), sched.t_of_timestep(torch.tensor([999, 0])))
    assert torch.allclose(seen[0].double(), torch.tensor([999.0, 0.0], dtype=torch.float64))


def test_bad_parameterization_and_time_input():
    with pytest.raises(ValueError, match="parameterization"):
        nc.Denoiser(lambda x, t: x, nc.schedules.VPLinear(), "noise")
    with pytest.raises(ValueError, match="DiscreteVP"):
        nc.Denoiser.from_eps(lambda x, t: x, nc.schedules.VPLinear(), time_input="timestep")
