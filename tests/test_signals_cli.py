"""noisecraft.signals end to end on tiny runs (2 training steps): both methods train with the project trainer,
load, denoise and fill gaps with the right shapes and guarantees; `noisecraft signals` writes its files and
names bad recordings in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.signals.denoise import denoise, fill_gaps
from noisecraft.signals.ecg import sample_recording
from noisecraft.signals.model import SignalModel, SignalSpec, train_signals

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    for method in ("conditional", "prior"):
        train_signals(root / method, method, minutes=None, steps=2, records=1, duration=10.0)
    return root


@pytest.fixture(scope="module")
def recording():
    x, fs = sample_recording()
    return x[:6000], fs  # 6 s at 1000 Hz


def test_runs_are_ordinary_runs_with_their_spec(runs):
    for method in ("conditional", "prior"):
        model = SignalModel.load(runs / method)
        assert model.spec == SignalSpec(method)
        assert model.pipeline.config.model.kind == "unet1d"
        assert model.pipeline.sample_shape == (model.spec.length,)
    assert SignalModel.load(runs / "conditional").pipeline.config.model.cond == "signal"


@pytest.mark.parametrize("method", ["conditional", "prior"])
def test_denoise_returns_samples_a_band_and_the_mean(runs, recording, method):
    x, fs = recording
    model = SignalModel.load(runs / method)
    out = denoise(model, x, fs, n=3, steps=2, seed=1)
    assert out.samples.shape == (3, len(x)) and out.clean.shape == x.shape
    assert np.isfinite(out.samples).all()
    np.testing.assert_allclose(out.clean, out.samples.mean(0))
    assert (out.lower <= out.clean + 1e-9).all() and (out.clean <= out.upper + 1e-9).all()
    again = denoise(model, x, fs, n=3, steps=2, seed=1)
    np.testing.assert_array_equal(again.samples, out.samples)  # a seed fixes the samples


def test_sample_rows_do_not_depend_on_the_chunk_size(runs, recording, monkeypatch):
    import noisecraft.signals.denoise as mod

    x, fs = recording
    model = SignalModel.load(runs / "conditional")
    whole = denoise(model, x, fs, n=2, steps=2).samples
    monkeypatch.setattr(mod, "CHUNK", 5)
    np.testing.assert_allclose(denoise(model, x, fs, n=2, steps=2).samples, whole, atol=1e-4)


def test_fill_gaps_keeps_the_known_samples(runs, recording):
    x, fs = recording
    holed = x.copy()
    holed[2000:2300] = np.nan
    out = fill_gaps(SignalModel.load(runs / "prior"), holed, fs, n=2, steps=2)
    known = np.isfinite(holed)
    np.testing.assert_array_equal(out.samples[:, known], np.broadcast_to(x[known], (2, known.sum())))
    assert np.isfinite(out.samples).all()
    with pytest.raises(ValueError, match="needs a prior run"):
        fill_gaps(SignalModel.load(runs / "conditional"), holed, fs)


def test_noisy_pairs_are_a_function_of_seed_and_step(runs):
    from types import SimpleNamespace

    from noisecraft.data import DataConfig
    from noisecraft.runs.config import load_config
    from noisecraft.signals.model import NoisyPairStep

    config = load_config(runs / "conditional" / "config.yaml")
    data = DataConfig(name=config.data.name).load()
    acc = SimpleNamespace(device=torch.device("cpu"))
    step = NoisyPairStep(config, data, torch.nn.Identity(), acc, SignalSpec("conditional"))
    a, b, c = step.draws(7), step.draws(7), step.draws(8)
    torch.testing.assert_close(a["noise"], b["noise"])
    assert not torch.allclose(a["noise"], c["noise"])
    lo, hi = SignalSpec("conditional").snr
    assert (lo, hi) == (-5.0, 30.0) and ((a["snr"] >= lo) & (a["snr"] <= hi)).all()


def _csv(path, values, header="ecg"):
    pd.DataFrame({header: values}).to_csv(path, index=False)
    return str(path)


def test_cli_denoise_writes_the_signal_and_a_png(runs, recording, tmp_path):
    x, _fs = recording
    out = tmp_path / "clean.csv"
    res = runner.invoke(app, ["signals", "denoise", _csv(tmp_path / "rec.csv", x), "--fs", "1000", "--out", str(out),
                              "--run", str(runs / "conditional"), "--n", "2", "--steps", "2"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["time_s", "denoised", "lower", "upper"] and len(frame) == len(x)
    assert (tmp_path / "clean.png").stat().st_size > 1000


@pytest.mark.parametrize("edit, fs, message", [
    (lambda x: x, "250", "beats 20 times a minute"),  # a 1000 Hz recording said to be 250 Hz
    (lambda x: x, "20", "--fs must be a sampling rate in 100-20000 Hz, got 20"),
    (lambda x: np.where(np.arange(len(x)) == 42, np.nan, x), "1000", "1 NaN or inf samples (the first at sample 42)"),
    (lambda x: x[:1500], "1000", "1500 samples (1.50 s at 1000 Hz); expected at least 4 s"),
])
def test_cli_names_a_bad_recording(runs, recording, tmp_path, edit, fs, message):
    x, _ = recording
    res = runner.invoke(app, ["signals", "denoise", _csv(tmp_path / "rec.csv", edit(x)), "--fs", fs, "--out",
                              str(tmp_path / "o.csv"), "--run", str(runs / "conditional")])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.csv").exists()


def test_cli_names_a_cell_that_is_not_a_number(tmp_path, runs):
    path = tmp_path / "rec.csv"
    path.write_text("ecg\n1.0\n2.0\nabc\n")
    res = runner.invoke(app, ["signals", "denoise", str(path), "--fs", "360", "--out", str(tmp_path / "o.csv"),
                              "--run", str(runs / "conditional")])
    assert res.exit_code == 2 and "rec.csv row 4 holds 'abc'; expected a number" in res.output, res.output
