"""The figure functions from Python: each writes a PNG; bad shapes are refused with a clear message."""

from __future__ import annotations

import pytest
import torch

import noisecraft as nc
from noisecraft.viz.figures import all_schedules, plot_forward, plot_trajectories, reverse_paths


def test_reverse_paths_end_where_the_sampler_ends(ring):
    """Stepping one interval at a time reproduces a single `solve` over the grid (deterministic Heun)."""
    schedule = nc.schedules.VPLinear()
    times = nc.timesteps.make_grid(schedule, 12, "log_snr")
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states = reverse_paths(ring.denoiser(schedule), schedule, x_T, times, "heun")
    whole, _ = nc.solve(ring.denoiser(schedule), schedule, x_T, times, "heun", denoise_final=False)
    assert states.shape == (13, 8, 2)
    assert torch.allclose(states[-1] / float(schedule.alpha(times[-1])), whole, atol=1e-10)


def test_figures_write_pngs_and_refuse_bad_shapes(tmp_path, ring):
    assert len(all_schedules()) == 6
    schedule = nc.schedules.VE()
    x, _ = ring.sample(500, torch.Generator().manual_seed(1))
    assert plot_forward(tmp_path / "f.png", x, schedule, times=[0.0, 0.5, 1.0]).stat().st_size > 10_000
    path = plot_trajectories(tmp_path / "t.png", ring.denoiser(schedule), schedule, data=x, n_paths=4, steps=6)
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="images .* or 2-D points"):
        plot_forward(tmp_path / "g.png", torch.zeros(5, 3), schedule)
    with pytest.raises(ValueError, match="2-D data, got dimension 16"):
        mix = nc.oracle.mixture16d()
        plot_trajectories(tmp_path / "h.png", mix.denoiser(schedule), schedule, oracle=mix)
    with pytest.raises(ValueError, match="needs an oracle or data"):
        plot_trajectories(tmp_path / "h.png", ring.denoiser(schedule), schedule)
