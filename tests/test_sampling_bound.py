"""Bounding x0_hat while sampling: static clipping (Ho et al. 2020) and dynamic thresholding (Saharia et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from noisecraft.core.bounds import bound, clipped


def test_static_clipping_is_a_clamp():
    x = torch.tensor([[0.5, -2.0, 4.0, 1.0]])
    assert torch.equal(bound(x, 1.0), torch.tensor([[0.5, -1.0, 1.0, 1.0]]))
    assert bound(x, None) is x


def test_dynamic_threshold_by_hand():
    """|x| = 0.5, 2, 4, 1: its median (linear interpolation) is 1.5, so x is clamped to +-1.5 and divided by it."""
    x = torch.tensor([[0.5, -2.0, 4.0, 1.0], [0.2, -0.4, 0.9, 0.1]])
    out = bound(x, None, threshold=0.5)
    assert torch.allclose(out[0], torch.tensor([0.5, -1.5, 1.5, 1.0]) / 1.5)
    assert torch.equal(out[1], x[1])  # s is raised to 1: samples already in range are untouched
    capped = bound(x, 1.2, threshold=0.5)  # s capped at clip = 1.2
    assert torch.allclose(capped[0], torch.tensor([0.5, -1.2, 1.2, 1.0]) / 1.2)


def test_threshold_is_per_sample_and_keeps_shape_and_dtype():
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    out = bound(x, None, threshold=0.995)
    assert out.shape == x.shape and out.dtype == x.dtype and out.abs().max() <= 1 + 1e-12
    assert torch.equal(bound(x[2:3], None, threshold=0.995), out[2:3])


def test_clipped_wraps_a_denoiser():
    def denoiser(x, t, cond=None):
        return 3 * x

    x = torch.full((2, 3), 1.0)
    assert clipped(denoiser, None) is denoiser
    assert torch.equal(clipped(denoiser, 2.0)(x, None), torch.full((2, 3), 2.0))
    assert torch.equal(clipped(denoiser, None, 0.9)(x, None), torch.ones(2, 3))


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5])
def test_with_threshold_rejects_non_quantiles(threshold):
    from noisecraft.runs.config import RunConfig
    from noisecraft.runs.pipeline import Pipeline

    run = Pipeline(RunConfig(), None, (2,), False, network=lambda x, t: x)
    with pytest.raises(ValueError, match="quantile in \\(0, 1\\)"):
        run.with_threshold(threshold)


def test_with_threshold_replaces_the_static_clip():
    from noisecraft.runs.config import RunConfig
    from noisecraft.runs.pipeline import Pipeline
    from noisecraft.solvers import SolverConfig

    run = Pipeline(RunConfig(sample=SolverConfig(clip=1.0)), None, (2,), False, network=lambda x, t: x)
    assert run.with_threshold(None) is run
    sample_cfg = run.with_threshold(0.95).config.sample
    assert sample_cfg.threshold == 0.95 and sample_cfg.clip is None
    assert run.config.sample.clip == 1.0  # the loaded run itself is left as it was
