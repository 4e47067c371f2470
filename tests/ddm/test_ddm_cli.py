"""The `noisecraft ddm` commands end to end on small data."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from noisecraft.cli.ddm import app

runner = CliRunner()


def test_simulate_then_fit_then_compare(tmp_path):
    csv = tmp_path / "sim.csv"
    r = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(csv),
            "--n",
            "300",
            "--v",
            "8",
            "--a",
            "1.2",
            "--t0",
            "0.3",
            "--conditions",
            "0.1,0.3",
            "--seed",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    df = pd.read_csv(csv)
    assert len(df) == 600 and set(df.condition) == {0.1, 0.3} and df.rt.min() > 0.3

    for method in ("ml", "chisq", "ez"):
        r = runner.invoke(
            app,
            [
                "fit",
                str(csv),
                "--condition",
                "condition",
                "--method",
                method,
                "--spec",
                "v=linear, a=shared, t0=shared, z=0.5",
            ],
        )
        assert r.exit_code == 0, r.output
        assert "v_slope" in r.output and "NLL=" in r.output

    out = tmp_path / "report"
    r = runner.invoke(
        app,
        [
            "compare",
            str(csv),
            "--condition",
            "condition",
            "--spec",
            "v=linear",
            "--out",
            str(out),
            "--n-recovery",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    for name in ("rt_histograms.png", "quantile_probability.png", "recovery.png"):
        assert (out / name).stat().st_size > 5000 and name in text
    assert "| v_slope |" in text


def test_fit_shipped_data_and_bad_input(tmp_path):
    r = runner.invoke(
        app,
        [
            "fit",
            "roitman",
            "--where",
            "monkey == 2 and coh >= 0.128",
            "--response",
            "correct",
            "--condition",
            "coh",
            "--method",
            "ez",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "EZ per condition" in r.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"rt": [0.5, -1.0, 0.7], "response": [1, 0, 1]}).to_csv(bad, index=False)
    r = runner.invoke(app, ["fit", str(bad)])
    assert r.exit_code == 2 and "non-positive RTs at rows 1" in r.output


def test_no_torch_in_ddm():
    # noisecraft.ddm stays numpy/scipy only: no module in it imports torch.
    for path in Path(__file__).resolve().parents[2].joinpath("noisecraft", "ddm").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), path


def test_compare_takes_a_multi_factor_spec_and_stimulus_coding(tmp_path):
    """Full distribution (ML) against summary statistics (chi-square, EZ) on a design of two factors:
    drift by stimulus strength, boundary by instruction; stimulus coding (drift sign from the stimulus)."""
    from noisecraft.ddm import simulate

    parts = []
    for j, (strength, instruction) in enumerate([(s, i) for s in ("weak", "strong") for i in ("speed", "accuracy")]):
        v = {"weak": 0.8, "strong": 2.0}[strength]
        a = {"speed": 1.0, "accuracy": 1.8}[instruction]
        for stim, sign in (("left", -1), ("right", 1)):
            d = simulate(150, v=sign * v, a=a, t0=0.3, seed=10 * j + (sign > 0))
            d["choice"] = np.where(d["response"] == 1, "right", "left")
            parts.append(d.assign(strength=strength, instruction=instruction, stim=stim))
    csv = tmp_path / "two_factors.csv"
    pd.concat(parts, ignore_index=True).drop(columns=["response"]).to_csv(csv, index=False)
    out = tmp_path / "report"
    r = runner.invoke(app, ["compare", str(csv), "--response", "choice", "--coding", "stimulus", "--stimulus", "stim",
                            "--upper", "right", "--stimulus-upper", "right",
                            "--spec", "v ~ strength, a ~ instruction, t0=shared, z=0.5",
                            "--out", str(out), "--n-recovery", "2"])
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert "stimulus coding" in text and "| v[strong] |" in text and "| a[speed] |" in text
    assert (out / "recovery.png").stat().st_size > 5000
    r = runner.invoke(app, ["compare", str(csv), "--response", "choice", "--coding", "stimulus",
                            "--spec", "v ~ strength", "--out", str(tmp_path / "no")])
    assert r.exit_code != 0 and "stimulus" in r.output
