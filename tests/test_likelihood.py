"""Exact likelihood and the ELBO against the oracle's true log-density."""

from __future__ import annotations

import math

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.analysis.elbo import decoder_nll, elbo_continuous, elbo_discrete
from noisecraft.analysis.likelihood import GaussianFit, bits_per_dim, dequantize, log_likelihood

VP = nc.schedules.VPLinear(t_min=1e-5)


@pytest.mark.parametrize("schedule", [VP, nc.schedules.EDM(), nc.schedules.RectifiedFlow(t_min=1e-5)],
                         ids=["vp_linear", "edm", "rectified_flow"])
def test_exact_divergence_matches_true_density_2d(schedule):
    ring = nc.oracle.ring8()
    x, _ = ring.sample(48, gen(1))
    result = log_likelihood(ring.denoiser(schedule), schedule, x, divergence="exact", rtol=1e-6, atol=1e-6)
    assert (result.log_prob - ring.log_prob(x)).abs().max() < 1e-2
    assert result.nfe > 10


def test_hutchinson_16d_mean_within_its_standard_error():
    mix = nc.oracle.mixture16d()
    x, _ = mix.sample(96, gen(2))
    result = log_likelihood(mix.denoiser(VP), VP, x, probes=2, generator=gen(3))
    error = result.log_prob - mix.log_prob(x)
    standard_error = float(error.std()) / math.sqrt(x.shape[0])
    assert abs(float(error.mean())) < 3 * standard_error
    mean, se = result.mean_and_stderr()
    assert math.isfinite(mean) and se > 0
    assert abs(mean - float(-mix.log_prob(x).mean())) < 3 * standard_error + 0.05


def test_spread_shrinks_with_probes_and_with_fresh_probes():
    mix = nc.oracle.mixture16d()
    x, _ = mix.sample(48, gen(4))
    truth = mix.log_prob(x)

    def spread(**kw) -> float:
        return float((log_likelihood(mix.denoiser(VP), VP, x, generator=gen(5), **kw).log_prob - truth).std())

    fixed_one = spread(probes=1, estimator="ode")
    fresh_one = spread(probes=1, estimator="quadrature")
    fresh_four = spread(probes=4, estimator="quadrature", panels=16)
    assert fresh_one < fixed_one / 2  # fresh probes at every node average out
    assert fresh_four < spread(probes=1, estimator="quadrature", panels=16)


def test_control_variate_removes_the_gaussian_part():
    """On Gaussian data the fitted Gaussian's linear denoiser is the exact one: no probe noise remains."""
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    cov = (q * torch.logspace(-2, 0, 16, dtype=torch.float64)) @ q.T
    g = nc.oracle.gaussian(torch.zeros(16), cov)
    x, _ = g.sample(32, gen(6))
    fit = GaussianFit(g.means[0], g.eigenvalues[0], g.eigenvectors[0])
    with_cv = log_likelihood(g.denoiser(VP), VP, x, probes=1, control_variate=fit, generator=gen(7))
    without = log_likelihood(g.denoiser(VP), VP, x, probes=1, generator=gen(7))
    truth = g.log_prob(x)
    assert float((with_cv.log_prob - truth).std()) < 0.01
    assert float((without.log_prob - truth).std()) > 0.1


def test_elbo_bounds_nll_and_tightens_with_finer_chains():
    ring = nc.oracle.ring8()
    x, _ = ring.sample(1000, gen(8))
    nll = -ring.log_prob(x)
    gaps = []
    for steps in (50, 400):
        bound = elbo_discrete(ring.denoiser(VP), VP, x, steps=steps, generator=gen(9)).total
        gap = bound - nll
        assert float(gap.mean()) > -3 * float(gap.std()) / math.sqrt(x.shape[0])
        gaps.append(float(gap.mean()))
    assert gaps[1] < gaps[0] / 3
    cont = elbo_continuous(ring.denoiser(VP), VP, x, samples=32, generator=gen(10)).total - nll
    se = float(cont.std()) / math.sqrt(x.shape[0])
    assert -3 * se < float(cont.mean()) < gaps[1]


def test_ddpm_table_elbo_is_finite_and_above_nll():
    sched = nc.schedules.DiscreteVP()
    ring = nc.oracle.ring8()
    x, _ = ring.sample(300, gen(11))
    result = elbo_discrete(ring.denoiser(sched), sched, x, generator=gen(12))
    gap = result.total - (-ring.log_prob(x))
    assert torch.isfinite(result.total).all()
    assert float(gap.mean()) > -3 * float(gap.std()) / math.sqrt(300)


def test_bits_per_dim_offsets_and_dequantization():
    # 17-level data in [-1, 1]: bin width 1/8; a uniform density on [-1 - 1/16, 1 + 1/16]^D gives
    # P(bin) = (1/8) / (2 + 1/8) per dimension, i.e. log2(17) bits
    dim, width = 64, 2.0 / 16
    density_nll = dim * math.log(2 + width)
    assert abs(bits_per_dim(density_nll, dim, width) - math.log2(17)) < 1e-12
    assert abs(bits_per_dim(dim * math.log(2.0), dim) - 1.0) < 1e-12
    levels = torch.linspace(-1, 1, 17, dtype=torch.float64).repeat(100, 1)
    noisy = dequantize(levels, width, gen(13))
    assert ((noisy - levels).abs() <= width / 2).all() and not torch.equal(noisy, levels)


def test_discretized_decoder_sums_to_one_over_bins():
    levels = torch.linspace(-1, 1, 17, dtype=torch.float64).reshape(17, 1)
    x0_hat = torch.full((17, 1), 0.3, dtype=torch.float64)
    probs = torch.exp(-decoder_nll(levels, x0_hat, 0.2, 2.0 / 16))
    assert abs(float(probs.sum()) - 1.0) < 1e-12


def test_bad_likelihood_inputs():
    ring = nc.oracle.ring8()
    x, _ = ring.sample(4, gen(0))
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(ring.denoiser(VP), VP, x, divergence="approx")
    with pytest.raises(ValueError, match="probes must be >= 1"):
        log_likelihood(ring.denoiser(VP), VP, x, probes=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        log_likelihood(ring.denoiser(VP), VP, x * math.nan)
    with pytest.raises(ValueError, match="probe kind"):
        log_likelihood(ring.denoiser(VP), VP, x, probe_kind="sphere")
