"""The medical-imaging operators against mathematics and reference libraries: adjoints by the dot-product test,
pseudo-inverses by the four Moore-Penrose conditions on their dense matrices, the Fourier operator against
numpy.fft and the blur against scipy.ndimage.convolve (wrap) on identical inputs, and the k-space masks'
sampling rates. Their Gaussian posterior oracles live beside the other operators' in test_guidance_inverse.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests._helpers import gen

from noisecraft.guide.blur import Blur, gaussian_kernel
from noisecraft.guide.fourier import (
    Fourier,
    cartesian_mask,
    conjugate_flip,
    kspace_mask,
    radial_mask,
)
from noisecraft.guide.measurements import Identity, Measurement, measure, measure_poisson
from noisecraft.guide.tv import divergence, gradient, total_variation, tv_reconstruct

F64 = torch.float64


def dense(op, shape) -> torch.Tensor:
    """The matrix of a linear operator acting on samples of `shape` (its columns are A e_i)."""
    eye = torch.eye(int(np.prod(shape)), dtype=F64).reshape(-1, *shape)
    return op(eye).flatten(1).T


def random_mask(seed: int) -> torch.Tensor:
    """A k-space mask with no structure at all: not closed under k -> -k."""
    return (torch.rand(8, 8, generator=gen(seed), dtype=F64) < 0.4).double()


OPERATORS = {
    "fourier-random": lambda: Fourier(random_mask(0)),
    "fourier-cartesian": lambda: Fourier(cartesian_mask((8, 8), 4, seed=1)),
    "fourier-radial": lambda: Fourier(radial_mask((8, 8), 8, seed=2)),
    "blur-gaussian": lambda: Blur(gaussian_kernel(1.0)),
    "blur-asymmetric": lambda: Blur(torch.rand(3, 5, generator=gen(3), dtype=F64), rcond=0.0),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_passes_the_dot_product_test(name):
    op = OPERATORS[name]()
    x = torch.randn(3, 2, 8, 8, generator=gen(4), dtype=F64)
    y = torch.randn(op(x).shape, generator=gen(5), dtype=F64)
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12), (lhs, rhs)


@pytest.mark.parametrize("name", OPERATORS)
def test_pseudo_inverse_meets_the_moore_penrose_conditions(name):
    op = OPERATORS[name]()
    A = dense(op, (1, 8, 8))
    P = dense(op.pinv, tuple(op(torch.zeros(1, 1, 8, 8, dtype=F64)).shape[1:]))
    if name == "blur-gaussian":  # truncated: the pseudo-inverse of A with its small singular values dropped
        s = torch.linalg.svdvals(A)
        U, S, Vh = torch.linalg.svd(A)
        A = U @ torch.diag(torch.where(S > op.rcond * s.max(), S, torch.zeros_like(S))) @ Vh
    for got, want in [(A @ P @ A, A), (P @ A @ P, P), (A @ P, (A @ P).T), (P @ A, (P @ A).T)]:
        assert torch.allclose(got, want, atol=1e-10), (got - want).abs().max()
    assert torch.allclose(P, torch.linalg.pinv(A, rtol=1e-8), atol=1e-8)


def test_fourier_matches_numpy_and_zero_filling_is_the_pseudo_inverse_for_closed_masks():
    mask = cartesian_mask((8, 6), 2, seed=0)
    op = Fourier(mask)
    x = torch.randn(2, 1, 8, 6, generator=gen(6), dtype=F64)
    want = np.fft.fft2(x.numpy(), norm="ortho") * mask.numpy()
    got = op(x)
    assert got.shape == (2, 1, 8, 6, 2)
    assert np.allclose(got[..., 0].numpy(), want.real) and np.allclose(got[..., 1].numpy(), want.imag)
    y = torch.randn(got.shape, generator=gen(7), dtype=F64)
    assert torch.allclose(op.pinv(y), op.adjoint(y))  # closed under k -> -k: A^+ = A^T
    assert torch.allclose(op.pinv(op(x)), op.project(x))
    full = Fourier(torch.ones(8, 6))
    assert torch.allclose(full.pinv(full(x)), x)  # the unitary DFT
    with pytest.raises(ValueError, match=r"does not fit the \(8, 6\) k-space mask"):
        op(torch.zeros(1, 1, 6, 8, dtype=F64))
    with pytest.raises(ValueError, match="holds 0"):
        Fourier(torch.full((4, 4), 0.5))


def test_blur_matches_scipy_circular_convolution():
    from scipy import ndimage

    kernel = torch.rand(3, 5, generator=gen(8), dtype=F64)
    x = torch.randn(1, 1, 9, 12, generator=gen(9), dtype=F64)
    want = ndimage.convolve(x[0, 0].numpy(), kernel.numpy(), mode="wrap")
    assert np.allclose(Blur(kernel)(x)[0, 0].numpy(), want, atol=1e-12)
    k = gaussian_kernel(1.5)
    assert k.shape == (11, 11) and np.isclose(k.sum(), 1.0) and np.allclose(k, k.T)
    with pytest.raises(ValueError, match="odd height and width"):
        Blur(np.ones((2, 3)))
    with pytest.raises(ValueError, match="larger than the 4x4 image"):
        Blur(k)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="std must be"):
        gaussian_kernel(0.0)


@pytest.mark.parametrize("kind", ["cartesian", "radial"])
@pytest.mark.parametrize("R", [4, 8])
def test_kspace_masks_reach_the_acceleration_and_are_closed(kind, R):
    mask = kspace_mask(kind, (64, 64), R, seed=0)
    assert torch.equal(mask, conjugate_flip(mask))  # closed under k -> -k
    assert mask[0, 0] == 1  # the DC coefficient
    rate = float(mask.mean())
    if kind == "cartesian":
        lines = mask[0]
        assert int(lines.sum()) == round(64 / R) and (mask == lines).all()
        half = (round(64 * 0.32 / R) - 1) // 2
        assert lines[: half + 1].all() and lines[-half:].all()  # fully sampled centre
    else:
        assert 1 / R <= rate < 1.35 / R  # as few spokes as reach 1/R
    assert torch.equal(mask, kspace_mask(kind, (64, 64), R, seed=0))
    assert not torch.equal(mask, kspace_mask(kind, (64, 64), R, seed=1))
    assert Fourier(mask).acceleration == pytest.approx(1 / rate)


def test_mask_arguments_are_checked():
    with pytest.raises(ValueError, match="acceleration factor must be a finite number >= 1, got 0.5"):
        cartesian_mask((8, 8), 0.5)
    with pytest.raises(ValueError, match="shape"):
        radial_mask((8,), 4)
    with pytest.raises(ValueError, match="centre .* exceeds"):
        cartesian_mask((32, 32), 8, center_fraction=0.5)
    with pytest.raises(ValueError, match="unknown k-space mask 'spiral'"):
        kspace_mask("spiral", (8, 8), 4)


def test_tv_reconstruction_solves_the_rof_problem_as_scikit_image_does():
    """With A = I the TV problem is Rudin-Osher-Fatemi denoising, which skimage's Chambolle solver solves with
    the same discretisation: the same minimiser; and div is -grad^T (dot-product test)."""
    restoration = pytest.importorskip("skimage.restoration")
    x = torch.randn(2, 1, 12, 10, generator=gen(10), dtype=F64)
    p = torch.randn(2, 1, 2, 12, 10, generator=gen(11), dtype=F64)
    assert torch.allclose((gradient(x) * p).sum(), -(x * divergence(p)).sum(), atol=1e-12)
    y = torch.randn(1, 1, 16, 16, generator=gen(12), dtype=F64)
    got = tv_reconstruct(Measurement(Identity(), y), 0.3, (1, 1, 16, 16), iters=300)
    want = restoration.denoise_tv_chambolle(y[0, 0].numpy(), weight=0.3, eps=1e-10, max_num_iter=2000)
    assert np.abs(got[0, 0].numpy() - want).max() < 1e-4
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        tv_reconstruct(Measurement(Identity(), y), -1.0, (1, 1, 16, 16))


def test_tv_reconstruction_beats_zero_filling_on_a_piecewise_constant_image():
    x = torch.zeros(1, 1, 16, 16, dtype=F64)
    x[..., 4:12, 3:9] = 1.0
    x[..., 8:14, 10:15] = -0.5
    meas = measure(Fourier(cartesian_mask((16, 16), 2, center_fraction=0.25, seed=0)), x, 0.01, gen(13))
    zero_filled = meas.operator.pinv(meas.y)
    tv = tv_reconstruct(meas, 0.01, tuple(x.shape), iters=500)
    assert (tv - x).norm() < 0.25 * (zero_filled - x).norm()  # 0.19 against 2.28
    objective = lambda u: 0.5 * meas.residual(u).pow(2).sum() + 0.01 * total_variation(u).sum()
    assert objective(tv) < objective(zero_filled) and objective(tv) < objective(x)


def test_scan_patches_keep_the_held_out_strip_out_of_training():
    pytest.importorskip("skimage")
    from noisecraft.data import scans

    train = scans.train_patches(patch=16, stride=8, side=64, sources=("cell", "coins"))
    tiles, names = scans.heldout_patches(patch=16, side=64, sources=("cell", "coins"))
    assert train.shape[1:] == (1, 16, 16) and train.dtype == np.float32 and -1 <= train.min() < train.max() <= 1
    assert names[0] == "cell:0" and len(names) == len(tiles) == 4 + 4  # one 16-px column of 4 tiles per image
    distance = ((tiles[:, None] - train[None]) ** 2).reshape(len(tiles), len(train), -1).sum(-1)
    assert distance.min() > 1e-3  # no held-out tile is a training patch, flipped or not
    assert scans.VALIDATION not in scans.SOURCES
    assert scans.phantom(16).shape == (1, 1, 16, 16) and scans.validation_patches(16, 64, 3).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="narrower than one 32-pixel patch"):
        scans.train_patches(patch=32, side=64)
    with pytest.raises(ValueError, match="unknown scan source 'brain'"):
        scans.load_source("brain")


def test_poisson_counts_have_the_shot_noise_moments_and_their_gaussian_approximation():
    x = torch.rand(1, 1, 8, 8, generator=gen(14), dtype=F64) * 2 - 1
    op, peak, n = Blur(gaussian_kernel(1.0)), 50.0, 4000
    meas = measure_poisson(op, x.expand(n, 1, 8, 8), peak, gen(15))
    mean, var = op(x)[0], 2 * (op(x)[0] + 1) / peak  # E[y] = A x, Var[y] = 2 (A x + 1) / peak
    assert ((meas.y.mean(0) - mean).abs() <= 5 * (var / n).sqrt()).all()
    assert ((meas.y.var(0) - var).abs() <= 5 * var * (2 / n) ** 0.5 + 2 / peak**2).all()
    assert meas.sigma == pytest.approx(float(var.mean().sqrt()), rel=0.01)
    assert torch.allclose((meas.y + 1) * peak / 2, ((meas.y + 1) * peak / 2).round())  # whole photon counts
    with pytest.raises(ValueError, match="intensities >= 0"):
        measure_poisson(Fourier(torch.ones(8, 8)), x - 1, peak)
    with pytest.raises(ValueError, match="peak .* must be > 0"):
        measure_poisson(op, x, 0.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step run on 32 random 8x8 images (a .npy) and a clean 8x8 PNG."""
    from PIL import Image

    from noisecraft.runs.config import config_from_dict, preset_config
    from noisecraft.runs.train import train

    root = tmp_path_factory.mktemp("scans")
    np.save(root / "x.npy", np.random.default_rng(0).uniform(-1, 1, (32, 1, 8, 8)).astype(np.float32))
    raw = preset_config(str(root / "x.npy"), "edm", max_steps=2, batch_size=16, checkpoint_every=2).model_dump()
    raw["model"].update(block_channels=[8, 16], attention=[False, False], layers_per_block=1)
    train(config_from_dict(raw), root / "run", progress=False)
    Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(root / "x.png")
    return root


@pytest.mark.parametrize("options", [["--operator", "fourier", "--acceleration", "4", "--mask", "radial"],
                                     ["--operator", "blur", "--blur-std", "0.8", "--method", "ddnm"],
                                     ["--operator", "fourier", "--method", "dps", "--zeta", "5"]])
def test_restore_command_measures_and_reconstructs(tiny_run, options):
    from typer.testing import CliRunner

    from noisecraft.cli import app

    out = tiny_run / "r.npy"
    res = CliRunner().invoke(app, ["restore", str(tiny_run / "run"), "--image", str(tiny_run / "x.png"), *options,
                                   "--n", "2", "--steps", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("options, message", [(["--operator", "radon"], "unknown --operator 'radon'"),
                                              (["--acceleration", "0.5"], "acceleration factor must be"),
                                              (["--mask", "spiral"], "unknown --mask 'spiral'"),
                                              (["--method", "repaint"], "restoration method")])
def test_restore_command_names_bad_options(tiny_run, options, message):
    from typer.testing import CliRunner

    from noisecraft.cli import app

    res = CliRunner().invoke(app, ["restore", str(tiny_run / "run"), "--image", str(tiny_run / "x.png"), *options])
    assert res.exit_code != 0 and message in res.output, res.output


def test_pipeline_restore_takes_one_observation_per_sample(tiny_run):
    import noisecraft as nc

    x = torch.zeros(3, 1, 8, 8, dtype=F64)
    meas = measure(Fourier(radial_mask((8, 8), 2)), x)
    for method in ("mmps", "ddnm"):  # a fresh run first measures its network on one row, not the n observations
        pipe = nc.load_run(tiny_run / "run")
        assert pipe.restore(meas, method, n=3, steps=2).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="holds 3 observations; expected 1 or `n` = 2"):
        pipe.restore(meas, "ddnm", n=2, steps=2)


def test_measurement_noise_stays_in_the_range_of_the_operator():
    x = torch.randn(2, 1, 8, 8, generator=gen(16), dtype=F64)
    op = Fourier(random_mask(1))
    meas = measure(op, x, 0.1, gen(17))
    assert torch.allclose(op.observed(meas.y), meas.y)  # A A^+ y = y
    assert (meas.y[..., op.mask == 0, :] == 0).all()  # nothing off the mask
    noise = meas.y - op(x)
    assert 0.5 < float(noise.pow(2).sum() / (0.1**2 * int(torch.linalg.matrix_rank(dense(op, (1, 8, 8)))) * 2)) < 1.5


def test_benchmark_metrics_match_scikit_image():
    import importlib.util
    from pathlib import Path

    metrics = pytest.importorskip("skimage.metrics")
    spec = importlib.util.spec_from_file_location("benchmark_scans", Path(__file__).parents[1] / "benchmarks" / "scans.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = torch.rand(2, 1, 16, 16, generator=gen(18), dtype=F64) * 2 - 1
    x = (ref + 0.1 * torch.randn(2, 1, 16, 16, generator=gen(19), dtype=F64)).clamp(-1, 1)
    psnr, ssim = bench.psnr_ssim(x, ref)
    a, b = ((x + 1) / 2).numpy()[:, 0], ((ref + 1) / 2).numpy()[:, 0]
    assert np.allclose(psnr, [metrics.peak_signal_noise_ratio(v, u, data_range=1.0) for u, v in zip(a, b)])
    assert np.allclose(ssim, [metrics.structural_similarity(u, v, data_range=1.0) for u, v in zip(a, b)])
