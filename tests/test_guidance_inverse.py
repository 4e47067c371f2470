"""Inverse problems against the closed form: Gaussian data N(mu, S) and y = A x + sigma_y n have the Gaussian
posterior mean mu + S A^T K^-1 (y - A mu), covariance S - S A^T K^-1 A S, K = A S A^T + sigma_y^2 I."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.guide.blur import Blur, gaussian_kernel
from noisecraft.guide.fourier import Fourier, cartesian_mask, radial_mask
from noisecraft.guide.inverse import (
    denoise_observation,
    dps,
    moment_matched,
    projection,
    repaint,
    resampling_path,
    sdedit,
)
from noisecraft.guide.measurements import (
    AvgPool,
    Identity,
    Mask,
    Matrix,
    Measurement,
    mask_from_array,
    mask_from_png,
    measure,
)

SCHED = nc.schedules.VPCosine()
D = 6

#: each operator with the sample shape it acts on: a matrix on vectors, the image operators on small images
OPERATORS = {
    "matrix": (lambda: Matrix(torch.randn(3, D, generator=gen(4), dtype=torch.float64)), (D,)),
    "fourier": (lambda: Fourier(cartesian_mask((8, 8), 4, seed=1)), (1, 8, 8)),
    "blur": (lambda: Blur(gaussian_kernel(0.5, radius=1)), (1, 8, 8)),
}
#: the same on smaller images, for tests that draw thousands of posterior samples
SMALL_OPERATORS = {
    "matrix": (lambda: Matrix(torch.randn(2, D, generator=gen(9), dtype=torch.float64)), (D,)),
    "fourier": (lambda: Fourier(radial_mask((4, 4), 2, seed=0)), (1, 4, 4)),
    "blur": (lambda: Blur(gaussian_kernel(0.7, radius=1)), (1, 4, 4)),
}


def dense(op, shape) -> torch.Tensor:
    """The matrix of a linear operator on samples of `shape` (columns A e_i), acting on flattened samples."""
    eye = torch.eye(math.prod(shape), dtype=torch.float64).reshape(-1, *shape)
    return op(eye).flatten(1).T


def random_gaussian(seed: int = 0, dim: int = D):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = (q * np.exp(rng.uniform(np.log(0.05), np.log(1.0), size=dim))) @ q.T
    return nc.oracle.gaussian(rng.normal(size=dim) * 0.5, 0.5 * (cov + cov.T))


def gaussian_posterior(prior, A: torch.Tensor, y: torch.Tensor, sigma_y: float):
    mu, S = prior.means[0], prior.covariances[0]
    K = A @ S @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=torch.float64)
    gain = S @ A.T @ torch.linalg.pinv(K, hermitian=True, rtol=1e-10)  # K is singular for a noiseless redundant y
    return mu + gain @ (y - A @ mu), S - gain @ A @ S


def check_moments(x, mean, cov, z=5.0):
    """Sample mean and covariance within z Monte-Carlo standard errors of (mean, cov)."""
    n = x.shape[0]
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((x.mean(0) - mean).abs() <= z * se_mean + 1e-4).all(), (x.mean(0), mean)
    sd = torch.diagonal(cov).sqrt()
    se_cov = torch.sqrt((cov**2 + torch.outer(sd**2, sd**2)) / n)  # Var of a sample covariance entry
    assert ((torch.cov(x.T) - cov).abs() <= z * se_cov + 1e-4).all(), (torch.cov(x.T), cov)


def test_operators_adjoint_and_pseudo_inverse():
    x = torch.randn(3, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    u = torch.randn(3, 1, 4, 4, generator=gen(1), dtype=torch.float64)
    pool = AvgPool(2)
    assert torch.allclose((pool(x) * u).sum(), (x * pool.adjoint(u)).sum())  # <Ax, u> = <x, A^T u>
    assert torch.allclose(pool(pool.pinv(u)), u)  # A A^+ = I
    m = Mask(torch.arange(64).reshape(1, 8, 8) % 3 == 0)
    assert torch.allclose(m.project(m.project(x)), m.project(x))
    A = Matrix(torch.randn(3, 5, generator=gen(2), dtype=torch.float64))
    v = torch.randn(4, 5, generator=gen(3), dtype=torch.float64)
    assert torch.allclose(A(A.pinv(A(v))), A(v))
    assert torch.equal(Identity()(v), v)


def test_mask_sizes_are_checked(tmp_path):
    from PIL import Image

    with pytest.raises(ValueError, match="mask is 4x4 but the images are 8x8"):
        mask_from_array(np.ones((4, 4)), (1, 8, 8))
    arr = np.zeros((8, 8), dtype=np.uint8)
    arr[:, :4] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    mask = mask_from_png(tmp_path / "m.png", (1, 8, 8))
    assert mask.known_fraction == 0.5 and mask.mask[0, 0, 0] == 1 and mask.mask[0, 0, 7] == 0
    with pytest.raises(ValueError, match="does not exist"):
        mask_from_png(tmp_path / "missing.png", (1, 8, 8))
    with pytest.raises(ValueError, match="divisible by the factor 3"):
        AvgPool(3)(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
@pytest.mark.parametrize("t", [0.2, 0.6, 0.95])
def test_moment_matched_is_the_exact_conditional_denoiser(operator, sigma_y, t):
    """For Gaussian data the wrapper returns E[x_0 | x_t, y] exactly (CG exact after rank(A) steps)."""
    make, shape = OPERATORS[operator]
    op, dim = make(), math.prod(shape)
    A = dense(op, shape)
    prior = random_gaussian(1, dim)
    x_true = prior.sample(1, gen(5))[0].reshape(1, *shape)
    meas = measure(op, x_true, sigma_y, gen(6))
    alpha, sigma = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    x_t = alpha * prior.sample(16, gen(7))[0] + sigma * torch.randn(16, dim, generator=gen(8), dtype=torch.float64)
    rank = int(torch.linalg.matrix_rank(A))
    got = moment_matched(prior.denoiser(SCHED), meas, SCHED, cg_steps=rank)(x_t.reshape(16, *shape), t)
    # joint observation of x_0: x_t = alpha x_0 + sigma eps and y = A x_0 + sigma_y n
    m = A.shape[0]
    B = torch.cat([alpha * torch.eye(dim, dtype=torch.float64), A])
    noise = torch.diag(torch.cat([torch.full((dim,), sigma**2), torch.full((m,), sigma_y**2)])).double()
    mu, S = prior.means[0], prior.covariances[0]
    gain = S @ B.T @ torch.linalg.pinv(B @ S @ B.T + noise, hermitian=True, rtol=1e-12)
    obs = torch.cat([x_t, meas.y.reshape(1, m).expand(16, m)], 1)
    want = mu + (obs - B @ mu) @ gain.T
    assert torch.allclose(got.reshape(16, dim), want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("operator", SMALL_OPERATORS)
def test_moment_matched_samples_the_exact_posterior(operator):
    make, shape = SMALL_OPERATORS[operator]
    op, dim = make(), math.prod(shape)
    A = dense(op, shape)
    prior = random_gaussian(2, dim)
    x_true = prior.sample(1, gen(10))[0].reshape(1, *shape)
    meas = measure(op, x_true, 0.1, gen(11))
    rank = int(torch.linalg.matrix_rank(A))
    x = nc.sample(moment_matched(prior.denoiser(SCHED), meas, SCHED, cg_steps=rank), SCHED, solver="dpm++2m",
                  steps=40, shape=(3000, *shape), generator=gen(12), dtype=torch.float64)
    check_moments(x.reshape(3000, dim), *gaussian_posterior(prior, A, meas.y.flatten(), 0.1))


def test_denoising_from_the_observation_samples_the_exact_posterior():
    prior = random_gaussian(3)
    x_true, _ = prior.sample(1, gen(13))
    sigma_y = 0.3
    y = x_true + sigma_y * torch.randn(1, D, generator=gen(14), dtype=torch.float64)
    x = denoise_observation(prior.denoiser(SCHED), SCHED, y.expand(3000, D), sigma_y, solver="ddpm", steps=300,
                            generator=gen(15))
    check_moments(x, *gaussian_posterior(prior, torch.eye(D, dtype=torch.float64), y[0], sigma_y))


def stationary_gaussian(size: int, seed: int):
    """A stationary prior on size x size images: circulant covariance, power 1 / (1 + |k|^2), so its DFT
    coefficients are independent (one conjugate pair from another)."""
    f = torch.fft.fftfreq(size, 1 / size, dtype=torch.float64)
    power = 1 / (1 + f[:, None] ** 2 + f[None, :] ** 2)
    cov = dense(lambda e: torch.fft.ifft2(power * torch.fft.fft2(e)).real, (1, size, size))
    mean = torch.randn(size * size, generator=gen(seed), dtype=torch.float64) * 0.3
    return nc.oracle.gaussian(mean, 0.5 * (cov + cov.T))


def block_gaussian(seed: int):
    """A prior on D-vectors whose first and last three coordinates are independent."""
    rng = np.random.default_rng(seed)
    cov = np.zeros((D, D))
    for block in (slice(0, 3), slice(3, 6)):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cov[block, block] = (q * rng.uniform(0.1, 1.0, size=3)) @ q.T
    return nc.oracle.gaussian(rng.normal(size=D) * 0.5, 0.5 * (cov + cov.T))


@pytest.mark.parametrize("case", ["mask", "fourier"])
def test_projection_is_exact_when_measured_and_null_parts_are_independent(case):
    """E[x0's null-space part | x_t] ignores the measured part when the two are independent under the prior, so
    DDNM's projection samples the exact posterior: replacement for a mask on a block-diagonal prior (the known
    part is y), and the k-space projection for a stationary prior, whose DFT coefficients are independent."""
    if case == "mask":
        prior, op, shape = block_gaussian(4), Mask(torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=torch.float64)), (D,)
    else:
        prior, op, shape = stationary_gaussian(4, 4), Fourier(cartesian_mask((4, 4), 2, seed=0)), (1, 4, 4)
    dim = math.prod(shape)
    x_true = prior.sample(1, gen(16))[0].reshape(1, *shape)
    meas = measure(op, x_true)
    x = nc.sample(projection(prior.denoiser(SCHED), meas), SCHED, solver="ddpm", steps=200, shape=(3000, *shape),
                  generator=gen(17), dtype=torch.float64)
    assert torch.allclose(op(x), meas.y.expand_as(op(x)), atol=1e-8)  # the measured part is y
    mean, cov_post = gaussian_posterior(prior, dense(op, shape), meas.y.flatten(), 0.0)
    check_moments(x.reshape(3000, dim), mean, cov_post)


def test_resampling_path_passes_each_block_jump_count_times():
    path = resampling_path(20, 5, 3)
    assert path[0] == 0 and path[-1] == 20
    assert all(abs(b - a) == 1 for a, b in itertools.pairwise(path))
    downs = [a for a, b in itertools.pairwise(path) if b == a + 1]
    # steps inside the first three blocks are taken 3 times, the last block once
    assert downs.count(0) == 3 and downs.count(7) == 3 and downs.count(17) == 1
    assert resampling_path(10, 10, 5) == list(range(11))  # one block: plain DDPM


def test_repaint_keeps_the_known_part_and_resampling_beats_plain_replacement():
    prior = random_gaussian(5)
    mask = torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=torch.float64)
    x_true, _ = prior.sample(1, gen(18))
    meas = measure(Mask(mask), x_true)
    mean, _ = gaussian_posterior(prior, torch.eye(D, dtype=torch.float64)[:3], x_true[0, :3], 1e-6)
    errors = {}
    for jump_length, jump_count in [(1, 1), (5, 10)]:  # (1, 1) is plain replacement with DDPM steps
        x = repaint(prior.denoiser(SCHED), SCHED, meas, (2000, D), steps=50, jump_length=jump_length,
                    jump_count=jump_count, generator=gen(19), dtype=torch.float64)
        assert torch.allclose(x[:, :3], x_true[:, :3].expand(2000, 3), atol=1e-8)
        errors[jump_count] = float((x[:, 3:].mean(0) - mean[3:]).norm())
    assert errors[10] < 0.6 * errors[1], errors  # approximate, but resampling harmonises (0.07 vs 0.17)


@pytest.mark.parametrize("operator", OPERATORS)
def test_dps_reduces_the_measurement_residual(operator):
    make, shape = OPERATORS[operator]
    prior = random_gaussian(6, math.prod(shape))
    x_true = prior.sample(1, gen(21))[0].reshape(1, *shape)
    meas = measure(make(), x_true, 0.05, gen(22))
    kw = {"solver": "ddpm", "steps": 50, "shape": (500, *shape), "generator": gen(23), "dtype": torch.float64}
    free = nc.sample(prior.denoiser(SCHED), SCHED, **kw)
    # DPS steps along the gradient of the residual's norm, a unit vector: 64-pixel images need a larger zeta
    guided = nc.sample(dps(prior.denoiser(SCHED), meas, SCHED, zeta=20.0), SCHED, **kw)
    res = lambda x: meas.residual(x).flatten(1).norm(dim=1).mean()
    assert res(guided) < 0.5 * res(free)


def test_sdedit_strength_interpolates_between_input_and_sample():
    prior = random_gaussian(7)
    x_in = torch.full((200, D), 3.0, dtype=torch.float64)  # a rough input far from the data
    near = sdedit(prior.denoiser(SCHED), SCHED, x_in, strength=0.05, steps=20, generator=gen(24))
    far = sdedit(prior.denoiser(SCHED), SCHED, x_in, strength=1.0, steps=20, generator=gen(24))
    assert (near - x_in).norm(dim=1).mean() < 0.5 * (far - x_in).norm(dim=1).mean()
    assert torch.allclose(far.mean(0), prior.means[0], atol=0.2)
    with pytest.raises(ValueError, match="strength must be in"):
        sdedit(prior.denoiser(SCHED), SCHED, x_in, strength=0.0)


def test_noisy_projection_needs_a_schedule_and_denoising_range_is_checked():
    meas = Measurement(Identity(), torch.zeros(1, D), 0.1)
    with pytest.raises(ValueError, match="sigma_y=0.1"):
        projection(lambda x, t: x, meas)
    with pytest.raises(ValueError, match="sigma=1000000.0 is outside"):
        denoise_observation(lambda x, t: x, nc.schedules.EDM(), torch.zeros(1, D), 1e6)
    assert math.isfinite(float(SCHED.t_from_sigma_tilde(0.2)))


def test_cli_moment_matching_uses_the_unclipped_jacobian():
    """A run clipped to [-1, 1] whose x0_hat saturates: the correction must still reach the known pixels.
    Clipping before moment matching zeroes the Jacobian there and leaves x0_hat at the clip instead of y."""
    from noisecraft.runs.config import RunConfig
    from noisecraft.runs.pipeline import Pipeline
    from noisecraft.runs.steer import moment_matched_denoiser
    from noisecraft.solvers import SolverConfig

    schedule = nc.schedules.VPCosine()
    denoiser = nc.Denoiser.from_x0(lambda x, t: 0.5 * x, schedule)  # Jacobian 0.5 I: a valid covariance
    loaded = Pipeline(RunConfig(sample=SolverConfig(clip=1.0)), None, (1, 2, 2), True, network=denoiser)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    y_true = torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64)
    meas = measure(Mask(mask), y_true)
    x = torch.full((1, 1, 2, 2), 4.0, dtype=torch.float64)  # 0.5 x = 2: saturated under clip 1
    out = moment_matched_denoiser(loaded, meas)(x, torch.tensor([0.5], dtype=torch.float64))
    assert torch.allclose(out[mask.bool().expand_as(out)], torch.full((2,), 0.3, dtype=torch.float64), atol=1e-8)
    assert out.abs().max() <= 1.0  # the corrected estimate is still bounded
