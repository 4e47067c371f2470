"""`noisecraft compare` end to end on a 2-D toy with a tiny budget, `noisecraft likelihood` on its runs,
`noisecraft plot ...`, and the errors a user meets at the boundary."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from noisecraft.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = runner.invoke(app, ["compare", "--data", "8gaussians", "--steps", "30", "--out", str(out), "--nfe", "5,9",
                                 "--solvers", "ddpm,ddim,heun,dpm++2m,rk45", "--n-samples", "128",
                                 "--n-likelihood", "16"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_compare_writes_a_report_with_every_section(compared):
    out, output = compared
    report = (out / "report.md").read_text()
    for section in ("## Setup", "## Samples", "## Quality against NFE", "## Likelihood", "## Training curves",
                    "## Loss by noise level", "## The theory, measured", "## What this run shows"):
        assert section in report
    for png in ("samples.png", "quality_vs_nfe.png", "training.png", "loss_by_level.png", "kl_bound.png"):
        assert (out / png).stat().st_size > 5_000
    results = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in results["quality"]} == {"ddpm", "score"}
    assert {r["solver"] for r in results["quality"]} == {"ddpm", "ddim", "heun", "dpm++2m", "rk45"}
    nfe = {(r["solver"], r["nfe"]) for r in results["quality"] if r["model"] == "ddpm"}
    assert ("ddim", 5) in nfe and ("heun", 9) in nfe  # NFE = steps * evaluations per step + 1
    assert results["training"]["ddpm"]["steps"] == results["training"]["score"]["steps"] == 30
    assert "elbo_discrete" in results["likelihood"][0] and "elbo_discrete" not in results["likelihood"][1]
    # the closing section quotes the measured numbers, not canned text
    best = min(r["quality"] for r in results["quality"] if r["model"] == "ddpm")
    assert f"{best:.3g}" in report.split("## What this run shows")[1]
    assert "wrote" in output


def test_likelihood_cli_prints_nll_bits_and_the_offset(compared):
    out, _ = compared
    result = runner.invoke(app, ["likelihood", str(out / "ddpm"), "--data", "8gaussians", "--n", "12", "--exact",
                                 "--rtol", "1e-3", "--atol", "1e-3"])
    assert result.exit_code == 0, result.output
    assert re.search(r"NLL\s+-?\d+\.\d+ \+- \d+\.\d+ nats", result.output)
    assert re.search(r"bits/dim\s+-?\d+\.\d+ \+- \d+\.\d+", result.output)
    assert "offset" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "mnist"], "unknown data 'mnist'"),
    (["--data", "8gaussians", "--probes", "0"], "--probes must be >= 1, got 0"),
    (["--data", "digits"], "has samples of shape (1, 8, 8)"),
])
def test_likelihood_cli_rejects_bad_input(compared, args, message):
    out, _ = compared
    result = runner.invoke(app, ["likelihood", str(out / "ddpm"), "--n", "4", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_likelihood_cli_needs_a_checkpoint(tmp_path):
    import shutil

    from noisecraft.runs.config import preset_config

    run = tmp_path / "empty"
    run.mkdir()
    preset_config("8gaussians", "ddpm").save(run / "config.yaml")
    (run / "data.json").write_text('{"sample_shape": [2], "is_image": false}')
    result = runner.invoke(app, ["likelihood", str(run), "--data", "8gaussians"])
    assert result.exit_code == 2 and "no checkpoint" in result.output
    shutil.rmtree(run)
    result = runner.invoke(app, ["likelihood", str(run), "--data", "8gaussians"])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_compare_rejects_bad_input(tmp_path):
    result = runner.invoke(app, ["compare", "--data", "mnist", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown data 'mnist'" in result.output
    result = runner.invoke(app, ["compare", "--data", "moons", "--steps", "5", "--solvers", "ddpm,magic", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "unknown solver(s) ['magic']" in result.output


def test_plot_commands_write_pngs(tmp_path, compared):
    out, _ = compared
    for args in (["schedules"], ["forward", "--data", "digits", "--schedule", "ve"], ["forward", "--run", str(out / "score")],
                 ["trajectories", "--paths", "6", "--steps", "10"],
                 ["trajectories", "--run", str(out / "ddpm"), "--paths", "4", "--steps", "8"]):
        png = tmp_path / f"{args[0]}-{len(args)}.png"
        result = runner.invoke(app, ["plot", *args, "--out", str(png)])
        assert result.exit_code == 0, result.output
        assert png.stat().st_size > 10_000
    result = runner.invoke(app, ["plot", "forward", "--data", "nope", "--out", str(tmp_path / "f.png")])
    assert result.exit_code == 2 and "unknown data 'nope'" in result.output
    result = runner.invoke(app, ["plot", "schedules", "--out", str(tmp_path / "f.jpg")])
    assert result.exit_code == 2 and "must end in .png" in result.output
