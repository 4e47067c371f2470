"""Theory diagnostics against the oracle: zero error and zero bound for the exact denoiser; the reverse-SDE
KL bound above the divergence measured through the PF-ODE for a perturbed one."""

from __future__ import annotations

import math

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.analysis.diagnostics import (
    denoising_error,
    kl_bound,
    loss_per_level,
    measured_kl,
    plot_diagnostics,
    with_measured,
)

VP = nc.schedules.VPLinear(t_min=1e-5)


def perturbed(ring, schedule, shift=(0.6, -0.4)):
    """x0_hat + sigma(t)^2 b: a score error alpha b, finite over the whole time range."""
    exact = ring.denoiser(schedule)
    b = torch.tensor(shift, dtype=torch.float64)

    def denoise(x, t):
        return exact(x, t) + schedule.sigma(t).to(x.dtype).reshape(-1, 1) ** 2 * b

    return denoise


def test_exact_denoiser_has_zero_error_and_zero_bound(ring):
    curve = denoising_error(ring.denoiser(VP), ring, VP, n=128, levels=8, generator=gen(0))
    assert float(curve.error.max()) < 1e-20
    assert (curve.reference > 0).all()  # the irreducible error of E[x0 | x_t] itself is not zero
    bound = kl_bound(ring.denoiser(VP), ring, VP, n=128, panels=4, generator=gen(1))
    assert bound.score_term < 1e-12
    assert abs(bound.prior_kl) < 1e-3  # alpha(1)^2 E||x0||^2 / 2 is about 1e-4


def test_bound_covers_the_measured_divergence_of_a_perturbed_denoiser(ring, tmp_path):
    denoise = perturbed(ring, VP)
    bound = kl_bound(denoise, ring, VP, n=256, panels=8, generator=gen(2))
    kl, se = measured_kl(denoise, ring, VP, n=96, generator=gen(3), rtol=1e-5, atol=1e-5)
    assert bound.score_term > 0.1
    assert bound.total >= kl - 3 * se
    assert kl > -3 * se  # a KL is nonnegative
    # the score term is the e^lambda-weighted denoising error (module docstring): check the identity at one level
    curve = denoising_error(denoise, ring, VP, n=64, levels=3, generator=gen(4))
    lam = curve.log_snr[1]
    sigma2 = float(torch.sigmoid(-lam))  # VP: sigma^2 = sigmoid(-lambda)
    assert math.isclose(float(curve.error[1]), sigma2**2 * 0.52, rel_tol=1e-6)  # ||sigma^2 b||^2, |b|^2 = 0.52
    path = plot_diagnostics(tmp_path / "diagnostics.png", [curve], with_measured(bound, (kl, se)))
    assert path.stat().st_size > 10_000


def test_loss_per_level_on_data_matches_the_mmse_for_the_exact_denoiser(ring):
    x0, _ = ring.sample(2000, gen(5))
    curve = loss_per_level(ring.denoiser(VP), VP, x0, levels=4, generator=gen(6))
    reference = denoising_error(ring.denoiser(VP), ring, VP, n=2000, levels=4, generator=gen(7)).reference / 2
    assert torch.allclose(curve.error, reference, rtol=0.15, atol=1e-4)
    with pytest.raises(ValueError, match="levels must be >= 2"):
        loss_per_level(ring.denoiser(VP), VP, x0, levels=1)
