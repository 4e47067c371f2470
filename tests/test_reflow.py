"""Reflow (noisecraft.runs.reflow; Liu et al. 2022, sec. 2.3).

The teacher is the exact rectified flow of a 2-D Gaussian mixture (noisecraft.analysis.oracle): its pairs are
checked against the closed-form ODE map of a Gaussian, and a small MLP reflowed on the ring's pairs must sample
the ring in one evaluation clearly better than the same MLP trained as a flow model for the same budget, and far
better than the exact teacher's one-step sample (the mean of x_0 given pure noise); its paths must be straighter
(the straightness S(Z) of Liu et al. 2022). Then: labels travel with the pairs, the result is an ordinary run,
the CLI round trip, and bad input refused before any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft import schedules as S
from noisecraft.cli import app
from noisecraft.metrics.distribution import sliced_w2, within_mode_w2
from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.distill import Teacher
from noisecraft.runs.pipeline import load_run
from noisecraft.runs.reflow import Pairs, ReflowStep, make_pairs, reflow, straightness
from tests._helpers import gen

runner = CliRunner()
RING = nc.oracle.ring8()
RF = S.RectifiedFlow()
N = 2000
BUDGET = {"max_steps": 250, "warmup_steps": 20, "batch_size": 256}


def _config(root: Path, **model) -> nc.RunConfig:
    """A flow run on ring samples (.npy) with a small MLP."""
    if not (root / "ring.npy").is_file():
        np.save(root / "ring.npy", RING.sample(20_000, gen(0))[0].float().numpy())
    config = preset_config(str(root / "ring.npy"), "flow", **BUDGET)
    return config.model_copy(update={"model": NetConfig(width=64, depth=3, **model)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The ring's exact flow as the teacher, a run reflowed from it, and a flow run trained for the same budget."""
    root = tmp_path_factory.mktemp("reflow")
    config = _config(root)
    teacher = Teacher(RING.denoiser(RF), RF, config, source="ring8 oracle")
    result = reflow(teacher, root / "reflowed", pairs=3000, steps=24, progress=False, **BUDGET)
    nc.train(config, root / "flow", progress=False)
    return {"root": root, "result": result, "reflowed": root / "reflowed", "flow": root / "flow"}


def _scores(x: torch.Tensor) -> tuple[float, float]:
    return within_mode_w2(x, RING), sliced_w2(x, RING.sample(N, gen(5))[0], generator=gen(7))


def test_pairs_follow_the_exact_flow_map():
    """x = x0_hat(ODE(sigma(t_max) z; t_max -> t_min), t_min) in closed form for one anisotropic Gaussian, to the
    teacher solver's error, which falls at its order (DPM-Solver++(2M): 2); pair i depends only on (seed, i)."""
    blob = nc.oracle.gaussian([1.0, -0.5], [[0.3, 0.12], [0.12, 0.08]])
    config = preset_config("moons", "flow", max_steps=1)
    teacher = Teacher(blob.denoiser(RF), RF, config, source="gaussian oracle")
    errors = []
    for steps in (32, 64):
        pairs = make_pairs(teacher, 300, steps=steps, seed=4, batch=128, progress=False)
        x_T = float(RF.sigma(RF.t_max)) * pairs.z.double()
        exact = blob.x0_hat(blob.flow(x_T, RF.t_max, RF.t_min, RF), RF.t_min, RF)
        errors.append(float((pairs.x.double() - exact).abs().max()))
    assert errors[1] < 1e-2 and errors[1] < 0.35 * errors[0], errors
    assert pairs.labels is None and pairs.z.std() == pytest.approx(1.0, abs=0.1)
    again = make_pairs(teacher, 300, steps=64, seed=4, batch=300, progress=False)
    assert torch.equal(again.z, pairs.z) and torch.allclose(again.x, pairs.x, atol=1e-6)
    assert not torch.equal(make_pairs(teacher, 8, steps=4, seed=5, progress=False).z, pairs.z[:8])


@torch.no_grad()
def test_reflowed_one_step_sample_beats_flow_and_teacher(runs):
    """One evaluation (steps=0, x0_hat at t_max = x_T - t_max u): reflow against the same budget without reflow,
    and against the exact teacher (whose one-step answer is E[x_0 | x_T], near the ring's centre)."""
    reflowed = _scores(load_run(runs["reflowed"]).sample(N, steps=0, seed=3))
    flow = _scores(load_run(runs["flow"]).sample(N, steps=0, seed=3))
    teacher = _scores(nc.sample(RING.denoiser(RF), RF, "euler", 0, (N, 2), gen(3)))
    for metric, got, plain, exact in zip(("within-mode W2", "sliced W2"), reflowed, flow, teacher):
        assert got < 0.6 * plain, f"{metric}: reflowed {got:.3f}, flow without reflow {plain:.3f}"
        assert got < 0.25 * exact, f"{metric}: reflowed {got:.3f}, exact teacher in one step {exact:.3f}"
    # the run's default sampler (one Euler step and the clean estimate, 2 evaluations) is as good
    assert _scores(load_run(runs["reflowed"]).sample(N, seed=3))[0] < 0.6 * flow[0]


def test_straightness_decreases_after_reflow(runs):
    """The straightness S(Z) of Liu et al. 2022: the exact teacher's paths bend; after reflow they are nearly straight."""
    z = torch.randn(1000, 2, generator=gen(11))
    teacher = straightness(RING.denoiser(RF), RF, z)
    reflowed = straightness(load_run(runs["reflowed"]).network, RF, z)
    flow = straightness(load_run(runs["flow"]).network, RF, z)
    assert teacher > 0.2 and reflowed < 0.1 * teacher and reflowed < 0.2 * flow, (teacher, reflowed, flow)
    # a straight field gives 0: the exact flow of a point mass x* is u = (x - x*) / t, constant on each path
    point_mass = nc.Denoiser.from_x0(lambda x, t: torch.full_like(x, 0.7), RF)
    assert straightness(point_mass, RF, z) < 1e-10


def test_reflowed_run_is_an_ordinary_run(runs, capsys):
    run = load_run(runs["reflowed"])
    assert run.config.distill.method == "reflow" and run.config.distill.teacher == "ring8 oracle"
    assert run.config.sample.solver == "euler" and run.config.distill.steps == run.config.sample.nfe() == 2
    assert run.config.loss.time_distribution == "uniform" and run.config.loss.parameterization == "flow"
    assert run.sample(16, steps=1).shape == (16, 2)
    pairs = Pairs.load(runs["reflowed"] / "pairs.safetensors")
    assert len(pairs) == 3000 and pairs.x.shape == (3000, 2) and pairs.labels is None
    records = [json.loads(line) for line in (runs["reflowed"] / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == 250 and runs["result"].train.step == 250
    res = runner.invoke(app, ["sample", str(runs["reflowed"]), "--n", "8", "--out", str(runs["root"] / "s.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(runs["root"] / "s.npy").shape == (8, 2)


def _per_component(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """A class-conditional exact teacher: label k is the ring's k-th Gaussian alone."""
    out = torch.empty_like(x)
    for k in cond.unique().tolist():
        rows = cond == k
        blob = nc.oracle.gaussian(RING.means[k], RING.covariances[k])
        out[rows] = blob.x0_hat(x[rows], t[rows], RF).to(x.dtype)
    return out


def test_labels_travel_with_the_pairs(tmp_path):
    """Each pair's x comes from its own label's flow, and the reflow loss sees that label as its condition."""
    config = _config(tmp_path, num_classes=8)
    teacher = Teacher(_per_component, RF, config, source="conditional oracle")
    pairs = make_pairs(teacher, 400, steps=16, progress=False)
    assert pairs.labels is not None and set(pairs.labels.tolist()) == set(range(8))
    nearest = torch.cdist(pairs.x.double(), RING.means).argmin(1)
    assert torch.equal(nearest, pairs.labels)
    data = config.data.load()
    step = ReflowStep(config, data, config.model.build(data.sample_shape, config.loss.time_input),
                      SimpleNamespace(device=torch.device("cpu")), pairs)
    d = step.draws(0)
    idx = d["idx"][:32]
    assert torch.equal(step._cond(d, idx, slice(0, 32)), pairs.labels[idx])
    assert torch.equal(step.data.x[idx], pairs.x[idx]) and torch.equal(step.z[idx], pairs.z[idx])


def test_bad_input_is_refused_before_any_work(tmp_path, runs):
    teacher = Teacher(RING.denoiser(RF), RF, _config(tmp_path), source="ring8 oracle")
    with pytest.raises(ValueError, match="not a run directory"):
        reflow(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="`pairs` must be an integer >= 1, got 0"):
        reflow(teacher, tmp_path / "out", pairs=0, progress=False)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        reflow(teacher, tmp_path / "out", steps=0, progress=False)
    with pytest.raises(ValueError, match="already holds a trained run"):
        reflow(teacher, runs["flow"], progress=False)
    with pytest.raises(ValueError, match=r"`pairs` hold samples of shape \(3,\); the teacher's network takes \(2,\)"):
        reflow(teacher, tmp_path / "out", pairs=Pairs(torch.zeros(4, 3), torch.zeros(4, 3)), progress=False)
    with pytest.raises(ValueError, match="`pairs` hold labels but the teacher is unconditional"):
        reflow(teacher, tmp_path / "out", pairs=Pairs(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4)),
               progress=False)
    with pytest.raises(ValueError, match="does not solve the probability-flow ODE"):
        reflow(teacher, tmp_path / "out", solver="ddpm", progress=False)
    text = _config(tmp_path, num_classes=8, cond="text")
    with pytest.raises(ValueError, match="text-conditioned"):
        reflow(Teacher(RING.denoiser(RF), RF, text), tmp_path / "out", progress=False)
    consistency = text.model_copy(update={"model": NetConfig(), "sample": nc.SolverConfig(solver="consistency")})
    with pytest.raises(ValueError, match="consistency model"):
        reflow(Teacher(RING.denoiser(RF), RF, consistency), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_round_trip_on_a_tiny_moons_flow_run(tmp_path):
    config = preset_config("moons", "flow", max_steps=3, batch_size=16, checkpoint_every=3)
    config = config.model_copy(update={"model": NetConfig(width=16, depth=1)})
    config.save(tmp_path / "c.yaml")
    teacher, out = tmp_path / "moons", tmp_path / "moons-reflow"
    assert runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--run", str(teacher)]).exit_code == 0
    res = runner.invoke(app, ["reflow", str(teacher), "--run", str(out), "--pairs", "64", "--steps", "4",
                              "--max-steps", "3"])
    assert res.exit_code == 0, res.output
    assert "64 pairs" in res.output and (out / "pairs.safetensors").is_file()
    assert load_run(out).config.distill.teacher == str(teacher)
    res = runner.invoke(app, ["sample", str(out), "--n", "8", "--steps", "1", "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 0 and np.load(tmp_path / "x.npy").shape == (8, 2), res.output
    for args, message in ((["reflow", str(teacher), "--run", str(out)], "already holds a trained run"),
                          (["reflow", str(tmp_path / "nope"), "--run", str(tmp_path / "o")], "not a run directory"),
                          (["reflow", str(teacher), "--run", str(tmp_path / "o"), "--pairs", "0"],
                           "--pairs must be an integer >= 1"),
                          (["reflow", str(teacher), "--run", str(tmp_path / "o"), "--minutes", "-1"], "--minutes")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and message in res.output, res.output


def test_plain_training_does_not_resume_a_reflowed_run(runs):
    """`train --resume` would continue a reflowed run with the diffusion loss on the data, not on the pairs."""
    with pytest.raises(ValueError, match="cannot resume: .* made by reflow"):
        nc.train(None, runs["reflowed"], resume=True, max_steps=300, progress=False)
