"""noisecraft.signals: windows and resampling, the 1-D operators and U-Net, noise at a set SNR, the checks on
recordings, the metrics, and the two methods end to end on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisecraft.guide.measurements import Mask
from noisecraft.nets import NetConfig
from noisecraft.signals import noise as ecg_noise
from noisecraft.signals.ecg import Scale, check_recording, heart_rate, sample_recording, simulate
from noisecraft.signals.metrics import cosine, mad, match_f1, prd, ssd
from noisecraft.signals.operators import BandStop
from noisecraft.signals.windows import (
    padded_length,
    resample,
    resampled_length,
    stitch,
    taper,
    windows,
)


@pytest.mark.parametrize("n, length, hop", [(1000, 256, 128), (1000, 256, 256), (257, 256, 1), (999, 100, 37),
                                            (256, 256, 64)])
def test_windows_stitch_back_exactly(n, length, hop):
    x = np.random.default_rng(n + hop).normal(size=n)
    w = windows(x, length, hop)
    assert w.shape == ((padded_length(n, length, hop) - length) // hop + 1, length)
    np.testing.assert_allclose(stitch(w, n, hop), x, rtol=0, atol=1e-12)


def test_stitch_is_a_weighted_average_of_the_overlapping_windows():
    """A constant c_k in window k stitches to sum_k w c_k / sum_k w: between the values, never outside."""
    w = np.stack([np.full(8, 1.0), np.full(8, 3.0)])
    out = stitch(w, 12, 4)
    np.testing.assert_allclose(out[:4], 1.0)
    np.testing.assert_allclose(out[8:], 3.0)
    tw = taper(8)
    np.testing.assert_allclose(out[4:8], (tw[4:] * 1 + tw[:4] * 3) / (tw[4:] + tw[:4]))
    assert (taper(8) > 0).all()


def test_windows_refuse_a_signal_shorter_than_a_window():
    with pytest.raises(ValueError, match="100 samples; a window needs at least 256"):
        windows(np.zeros(100), 256, 128)


@pytest.mark.parametrize("fs", [250.0, 360.0, 500.0, 1000.0])
def test_resampling_round_trip_keeps_a_band_limited_signal(fs):
    """Through the model's 125 Hz and back: content below both Nyquist frequencies (here < 40 Hz) is kept."""
    t = np.arange(int(8 * fs)) / fs
    x = np.sin(2 * np.pi * 1.3 * t) + 0.5 * np.sin(2 * np.pi * 17.0 * t + 1) + 0.2 * np.cos(2 * np.pi * 35.0 * t)
    down = resample(x, fs, 125.0)
    assert len(down) == resampled_length(len(x), fs, 125.0)
    back = resample(down, 125.0, fs)[:len(x)]
    inner = slice(int(fs), -int(fs))  # the FIR filter's edge effects stay within the first and last second
    assert np.max(np.abs(back[inner] - x[inner])) < 1e-2
    np.testing.assert_array_equal(resample(x, fs, fs), x)


def test_resampling_removes_content_above_the_new_nyquist():
    fs = 1000.0
    t = np.arange(8000) / fs
    down = resample(np.sin(2 * np.pi * 200.0 * t), fs, 125.0)  # 200 Hz > 62.5 Hz
    assert np.std(down[125:-125]) < 1e-2


def _dot_test(op, x, y):
    return float((op(x) * y).sum()), float((x * op.adjoint(y)).sum())


def test_bandstop_adjoint_passes_the_dot_product_test_and_is_a_projection():
    g = torch.Generator().manual_seed(0)
    op = BandStop(256, 125.0)
    x, y = torch.randn(4, 256, generator=g, dtype=torch.float64), torch.randn(4, 256, generator=g, dtype=torch.float64)
    lhs, rhs = _dot_test(op, x, y)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    torch.testing.assert_close(op(op(x)), op(x))  # idempotent
    torch.testing.assert_close(op(op.pinv(op(x))), op(x))  # A A^+ A = A
    assert 0.8 < op.kept_fraction < 1.0


def test_bandstop_removes_the_stop_bands_and_keeps_the_rest():
    fs, n = 125.0, 256
    t = torch.arange(n, dtype=torch.float64) / fs
    f_bin = fs / n  # exact FFT frequencies, so no leakage
    keep = torch.sin(2 * torch.pi * 20 * f_bin * t)  # ~9.8 Hz
    mains = torch.sin(2 * torch.pi * round(50 / f_bin) * f_bin * t)
    out = BandStop(n, fs)((keep + mains + 3.0)[None])[0]
    torch.testing.assert_close(out, keep, atol=1e-10, rtol=0)


def test_mask_on_signals_passes_the_dot_product_test():
    g = torch.Generator().manual_seed(1)
    m = (torch.rand(3, 128, generator=g) > 0.3).double()
    op = Mask(m)
    x, y = torch.randn(3, 128, generator=g, dtype=torch.float64), torch.randn(3, 128, generator=g, dtype=torch.float64)
    lhs, rhs = _dot_test(op, x, y)
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_unet1d_shapes_and_signal_conditioning():
    torch.manual_seed(0)
    net = NetConfig(kind="unet1d", cond="signal", block_channels=[8, 16], attention=[False, True]).build((64,))
    for p in net.out.parameters():  # the output layer starts at zero; move it so outputs depend on inputs
        torch.nn.init.normal_(p)
    x, y = torch.randn(3, 64), torch.randn(3, 64)
    out = net(x, torch.rand(3), y)
    assert out.shape == (3, 64)
    assert not torch.allclose(out, net(x, torch.rand(3), torch.zeros_like(y)))
    with pytest.raises(ValueError, match="pass `cond`"):
        net(x, torch.rand(3))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(3, 63), torch.rand(3), torch.randn(3, 63))
    multi = NetConfig(kind="unet1d", block_channels=[8, 16], attention=[False, False]).build((2, 32))
    assert multi(torch.randn(2, 2, 32), torch.rand(2)).shape == (2, 2, 32)
    with pytest.raises(ValueError, match="cond 'signal' needs kind 'unet1d'"):
        NetConfig(kind="mlp", cond="signal")


@pytest.mark.parametrize("kind", ecg_noise.CHOICES)
def test_noise_has_unit_power_and_sets_the_snr(kind):
    g = torch.Generator().manual_seed(2)
    n = ecg_noise.noise(kind, 3, 1000, 250.0, g)
    torch.testing.assert_close(n.pow(2).mean(-1), torch.ones(3, dtype=torch.float64))
    clean = torch.randn(3, 1000, generator=g, dtype=torch.float64) * 2
    snr = torch.tensor([-5.0, 0.0, 10.0])
    noisy = ecg_noise.add_noise(clean, snr, kind, 250.0, g)
    measured = 10 * torch.log10(clean.var(-1, unbiased=False) / (noisy - clean).var(-1, unbiased=False))
    torch.testing.assert_close(measured, snr.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind, band", [("bw", (0.0, 1.0)), ("ma", (10.0, 100.0)), ("em", (0.0, 15.0)),
                                        ("mains", (49.0, 61.0))])
def test_noise_kinds_put_their_power_in_their_band(kind, band):
    fs, n = 250.0, 5000
    x = ecg_noise.noise(kind, 8, n, fs, torch.Generator().manual_seed(3))
    power = torch.fft.rfft(x, dim=-1).abs().pow(2).sum(0)
    f = torch.fft.rfftfreq(n, 1 / fs)
    inside = power[(f >= band[0]) & (f <= band[1])].sum() / power.sum()
    assert inside > 0.9, float(inside)


def test_unknown_noise_kind_is_named():
    with pytest.raises(ValueError, match="unknown noise kind 'hum'"):
        ecg_noise.noise("hum", 1, 10, 250.0, torch.Generator())


def test_heart_rate_of_simulated_and_real_ecg():
    rng = np.random.default_rng(0)
    for bpm in (55.0, 90.0, 130.0):
        x = simulate(12, 250.0, bpm, rng)
        assert heart_rate(x, 250.0) == pytest.approx(bpm, rel=0.08)
    x, fs = sample_recording()
    assert len(x) == 22350 and fs == 1000.0
    assert 60 < heart_rate(x, fs) < 100


def test_check_recording_names_each_problem():
    x, fs = sample_recording()
    assert check_recording(x, fs) is not None
    with pytest.raises(ValueError, match="times a minute.*is `fs` the rate"):
        check_recording(x, 250.0)  # a 1000 Hz recording read as 250 Hz beats ~20 times a minute
    with pytest.raises(ValueError, match="`fs` must be a sampling rate in 100-20000 Hz, got 50"):
        check_recording(x, 50.0)
    bad = x.copy()
    bad[[10, 500]] = np.nan
    with pytest.raises(ValueError, match="2 NaN or inf samples \\(the first at sample 10\\)"):
        check_recording(bad, fs)
    with pytest.raises(ValueError, match="1000 samples \\(1.00 s at 1000 Hz\\); expected at least 4 s"):
        check_recording(x[:1000], fs)


def test_scale_inverts_and_ignores_baseline_wander():
    x, fs = sample_recording()
    s = Scale.of(x, fs)
    np.testing.assert_allclose(s.invert(s(x)), x)
    t = np.arange(len(x)) / fs
    drifted = Scale.of(x + 200 * np.sin(2 * np.pi * 0.1 * t), fs)
    assert drifted.scale == pytest.approx(s.scale, rel=0.05)


def test_metrics_on_known_cases():
    x = np.array([0.0, 1.0, -1.0, 2.0, 0.0])
    assert ssd(x, x) == 0 and mad(x, x) == 0 and prd(x, x) == 0 and cosine(x, x) == pytest.approx(1.0)
    y = x + np.array([0.0, 0.5, 0.0, 0.0, 0.0])  # the median of y is still 0
    assert ssd(x, y) == pytest.approx(0.25) and mad(x, y) == pytest.approx(0.5)
    assert prd(x, y) == pytest.approx(100 * np.sqrt(0.25 / 6))
    assert match_f1(np.array([10, 50, 90]), np.array([12, 50, 95, 200]), 3) == pytest.approx(2 * 2 / (3 + 4))
    assert match_f1(np.array([10, 11]), np.array([10]), 5) == pytest.approx(2 / 3)  # one-to-one


def test_noise_sigma_recovers_white_noise_under_a_sparse_signal():
    from noisecraft.signals.denoise import noise_sigma

    rng = np.random.default_rng(4)
    spikes = np.zeros(20_000)
    spikes[::150] = 5.0  # sparse large events (QRS-like) barely move the median
    assert noise_sigma(spikes + 0.3 * rng.normal(size=20_000)) == pytest.approx(0.3, rel=0.05)


def test_the_condition_is_the_noisy_window_minus_its_median():
    from noisecraft.signals.model import condition

    y = torch.tensor([[1.0, 5.0, 2.0], [10.0, 10.0, 13.0]])
    torch.testing.assert_close(condition(y), torch.tensor([[-1.0, 3.0, 0.0], [0.0, 0.0, 3.0]]))


def test_all_metrics_leaves_out_what_keep_excludes():
    from noisecraft.signals.metrics import all_metrics

    x, fs = sample_recording()
    x = Scale.of(x, fs)(x)[:8000]
    spoiled = x.copy()
    spoiled[3000:3500] += 5.0  # a stretch the reference does not vouch for
    keep = np.ones(len(x), dtype=bool)
    keep[3000:3500] = False
    scores = all_metrics(x, spoiled, fs, keep)
    assert scores["ssd"] == 0 and scores["prd"] == 0
    assert scores["f1"] > 0.9  # detection filters smear the spoiled stretch's edges onto a neighbouring beat at most
    assert all_metrics(x, spoiled, fs)["prd"] > 10
