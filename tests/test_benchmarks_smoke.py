"""Smoke tests of benchmark scripts: their core functions on tiny inputs (no timings are checked), and the
mathematics they rest on (the diffusers adapter of benchmarks/latency.py against exact denoisers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.runs.config import config_from_dict, preset_config
from noisecraft.runs.train import train

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"block_channels": [8, 16], "attention": [False, False], "layers_per_block": 1}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


latency = _script("latency")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    raw = preset_config("digits", "edm", max_steps=2, batch_size=16, checkpoint_every=2).model_dump(mode="json")
    raw["model"].update(TINY_UNET)
    out = tmp_path_factory.mktemp("latency") / "run"
    train(config_from_dict(raw), out, progress=False)
    return out


@pytest.mark.parametrize("schedule", [nc.schedules.EDM(), nc.schedules.VPCosine(), nc.schedules.RectifiedFlow()],
                         ids=["edm", "vp_cosine", "flow"])
def test_ddpm_table_keeps_the_schedules_log_snr(schedule):
    table = latency.ddpm_table(schedule, size=200)
    n = torch.tensor([0, 57, 199])
    t = schedule.t_min + (n + 1).double() / 200 * (schedule.t_max - schedule.t_min)
    assert torch.allclose(table.log_snr(table.t_of_timestep(n)), schedule.log_snr(t), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("schedule", [nc.schedules.EDM(), nc.schedules.RectifiedFlow()], ids=["edm", "flow"])
def test_eps_adapter_is_the_exact_eps_on_the_table(schedule):
    """The exact denoiser of a mixture on the run's schedule, seen through the adapter at DDPM timestep n, is
    the exact eps of the same mixture on the table's schedule at that timestep."""
    mix = nc.oracle.ring8()
    table = latency.ddpm_table(schedule)
    eps = latency.eps_model(mix.denoiser(schedule), schedule, table)
    for n in (3, 400, 999):
        t_n = table.t_of_timestep(n)
        x = torch.randn(64, 2, generator=gen(n), dtype=torch.float64) * 2.0
        want = mix.denoiser(table).eps(x, t_n.expand(64))
        assert torch.allclose(eps(x, torch.tensor(n)), want, atol=1e-6, rtol=1e-6)


def test_latency_core_rows_and_measured_nfe(tiny_run):
    result = latency.measure(tiny_run, tiny_run, nfes=(1, 2), batches=(1, 3), repeats=1, reference_nfe=3)
    rows = result["rows"]
    assert [(r["name"].split()[0], r["nfe"]) for r in rows] == [
        ("noisecraft", 1), ("noisecraft", 2), ("noisecraft", 3), ("diffusers", 3)]
    assert rows[0]["name"].startswith("noisecraft student")
    for row in rows:
        for batch in ("1", "3"):
            assert row["batches"][batch]["nfe"] == row["nfe"]  # counted network calls, not the nominal count
            assert row["batches"][batch]["ms"] > 0 and row["batches"][batch]["cold_ms"] > 0
    text = latency.table([result])
    assert text.count("\n") == 1 + len(rows)
    assert "diffusers DPM++2M" in text and f"{result['threads']} thr, batch 3" in text
    assert len(latency.ratio_lines([result], "3")) == 1


def test_latency_rejects_an_unreachable_nfe(tiny_run):
    run = nc.load_run(tiny_run)
    with pytest.raises(ValueError, match="`nfe` 0"):
        latency.steps_for(run, 0)


def test_serve_load_smoke(tiny_run, tmp_path):
    """benchmarks/serve_load.py end to end on a tiny run (a real service subprocess on loopback, 1 s per cell),
    and its RSS slope on a line of known slope."""
    for extra in ("httpx", "fastapi", "uvicorn"):
        pytest.importorskip(extra)
    serve_load = _script("serve_load")
    assert serve_load.slope_mb_per_min([(t, 300 + 0.25 * t) for t in range(0, 120, 5)]) == pytest.approx(15.0)
    out = tmp_path / "serve_load.md"
    text = serve_load.main(["--run", str(tiny_run), "--smoke", "--threads", "1", "--out", str(out)])
    assert out.read_text() == text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| on |")]
    assert [int(r[1]) for r in rows] == [1, 2]  # one row per client count
    for r in rows:
        assert int(r[2]) >= 1 and float(r[3]) > 0 and r[7].strip() == "0"  # requests, images/s, errors
        assert float(r[8]) > 0 and float(r[9]) >= 1  # peak RSS MB, rows per solver call
    assert "errors: on 0" in text
