"""Distillation (noisecraft.runs.distill) and multistep consistency sampling (noisecraft.solvers.consistency).

The teacher is the exact denoiser of the ring of eight Gaussians (noisecraft.analysis.oracle), so a student
distilled for a few hundred steps is measured against the true mixture: at the same number of network
evaluations it must beat the teacher sampled with DDIM, and beat its own starting network (a briefly
trained denoiser), so a distillation that did nothing fails. Then: the student is an ordinary run (load_run,
`noisecraft sample`, guidance), a k-evaluation sample calls the network k times, and bad input is refused
before any work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import noisecraft as nc
from noisecraft import schedules as S
from noisecraft.cli import app
from noisecraft.core.timesteps import step_aware_range
from noisecraft.metrics.distribution import sliced_w2, within_mode_w2
from noisecraft.nets import NetConfig
from noisecraft.runs.checkpoint import checkpoints, training_seconds
from noisecraft.runs.config import preset_config
from noisecraft.runs.distill import (
    BUDGET_FACTOR,
    LAST_SIGMA_TILDE,
    RHO,
    Teacher,
    consistency_times,
    curriculum,
    default_budget,
    describe_budget,
    distill,
    lognormal_level_probabilities,
    student_solver,
    student_times,
)
from noisecraft.runs.pipeline import load_run
from tests._helpers import gen

runner = CliRunner()
RING = nc.oracle.ring8()
SCHEDULE = S.EDM()
N = 2000
FAST = {"batch_size": 256, "warmup_steps": 20, "progress": False}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """Ring samples as a .npy, a small MLP run config, and that MLP trained briefly as a denoiser (the students'
    starting weights, as a real teacher's weights would be)."""
    root = tmp_path_factory.mktemp("distill")
    np.save(root / "ring.npy", RING.sample(20_000, gen(0))[0].float().numpy())
    config = preset_config(str(root / "ring.npy"), "edm", max_steps=300, warmup_steps=20, batch_size=256)
    config = config.model_copy(update={"model": NetConfig(width=64, depth=3)})
    nc.train(config, root / "init", progress=False)
    return {"root": root, "config": config, "init": root / "init",
            "weights": load_run(root / "init").net.state_dict()}


def _teacher(base: dict) -> Teacher:
    return Teacher(RING.denoiser(SCHEDULE), SCHEDULE, base["config"], weights=base["weights"])


@pytest.fixture(scope="module")
def students(base) -> dict:
    """Students of the exact ring teacher: consistency (2 evaluations), progressive (1 and 2), regression (1)."""
    root = base["root"]
    distill(_teacher(base), root / "cd2", "consistency", 2, max_steps=300, **FAST)
    distill(_teacher(base), root / "pd2", "progressive", 2, max_steps=300, teacher_steps=8, **FAST)
    distill(_teacher(base), root / "pd1", "progressive", 1, max_steps=300, teacher_steps=4, **FAST)
    distill(_teacher(base), root / "rg1", "regression", 1, max_steps=300, **FAST)
    return {"cd2": root / "cd2", "pd2": root / "pd2", "pd1": root / "pd1", "rg1": root / "rg1"}


def _scores(x: torch.Tensor) -> tuple[float, float]:
    truth = RING.sample(N, gen(5))[0]
    return within_mode_w2(x, RING), sliced_w2(x, truth, generator=gen(7))


@torch.no_grad()
def _teacher_ddim(nfe: int) -> tuple[float, float]:
    """The exact teacher sampled by DDIM in `nfe` evaluations with noisecraft's defaults."""
    return _scores(nc.sample(RING.denoiser(SCHEDULE), SCHEDULE, "ddim", nfe - 1, (N, 2), gen(3)))


@torch.no_grad()
def _initial(student: Path, base: dict, nfe: int) -> tuple[float, float]:
    """The student's starting network sampled as the student samples: what a distillation that did nothing gives."""
    init = load_run(base["init"])
    cfg = load_run(student).config.sample.override(steps=nfe - 1)
    return _scores(cfg.run(init.network, SCHEDULE, (N, 2), gen(3)))


@pytest.mark.parametrize("name, nfe", [("cd2", 1), ("cd2", 2), ("pd1", 1), ("pd2", 2), ("rg1", 1)])
def test_student_beats_ddim_and_its_start_at_equal_nfe(students, base, name, nfe):
    student = load_run(students[name])
    got = _scores(student.sample(N, steps=nfe - 1, seed=3))
    ddim, start = _teacher_ddim(nfe), _initial(students[name], base, nfe)
    for metric, value, teacher, initial in zip(("within-mode W2", "sliced W2"), got, ddim, start):
        assert value < 0.75 * teacher, f"{name} at {nfe} NFE: {metric} {value:.3f}, teacher DDIM {teacher:.3f}"
        assert value < 0.75 * initial, f"{name} at {nfe} NFE: {metric} {value:.3f}, its start {initial:.3f}"


def test_student_is_an_ordinary_run(students):
    for name, method, steps in (("cd2", "consistency", 2), ("pd1", "progressive", 1)):
        run = load_run(students[name])
        assert run.config.distill.method == method and run.config.distill.steps == steps
        assert run.config.sample.solver == ("consistency" if method == "consistency" else "ddim")
        assert run.config.sample.nfe() == steps
        assert run.sample(16).shape == (16, 2)
        records = [json.loads(line) for line in (students[name] / "metrics.jsonl").read_text().splitlines()]
        assert records and records[-1]["step"] <= 300 and all(r["method"] == method for r in records)
    rounds = {r["round"] for r in map(json.loads, (students["pd2"] / "metrics.jsonl").read_text().splitlines())}
    assert rounds == {1, 2}  # 8 -> 4 -> 2 steps


@pytest.mark.parametrize("name, steps, nfe", [("cd2", None, 2), ("cd2", 0, 1), ("cd2", 3, 4), ("pd1", None, 1),
                                              ("rg1", None, 1)])
def test_a_k_evaluation_sample_calls_the_network_k_times(students, name, steps, nfe):
    run = load_run(students[name])
    calls = []
    run.net.register_forward_hook(lambda *_: calls.append(1))
    run._widest_activation(run.denoiser())  # the memory probe's one evaluation, taken once per Pipeline
    calls.clear()
    run.sample(16, steps=steps)
    assert len(calls) == nfe


def test_a_regression_student_is_an_ordinary_run_that_keeps_its_pairs(students, base):
    from noisecraft.runs.reflow import PAIRS_FILE, Pairs
    from noisecraft.runs.regress import EPOCHS

    run = load_run(students["rg1"])
    assert run.config.distill.method == "regression" and run.config.distill.steps == 1
    assert run.config.sample.solver == "ddim" and run.config.sample.nfe() == 1
    assert run.config.sample.t_max == SCHEDULE.t_max  # sampled where it was trained: the pairs' start
    pairs = Pairs.load(students["rg1"] / PAIRS_FILE)
    # by default as many pairs as 300 steps of 256 rows see EPOCHS times each
    assert len(pairs) == 300 * 256 // EPOCHS and pairs.x.shape == (len(pairs), 2)
    # it learned the map from noise to the teacher's ODE end: on its pairs, far closer than where it started
    z, x = pairs.z.double(), pairs.x.double()
    t = torch.full((len(pairs),), SCHEDULE.t_max, dtype=torch.float64)
    scale = float(SCHEDULE.sigma(SCHEDULE.t_max))
    with torch.no_grad():
        err, initial = (float(((load_run(path).float64_denoiser()(scale * z, t) - x) ** 2).sum(1).mean())
                        for path in (students["rg1"], base["init"]))
    assert err < 0.25 * initial, (err, initial)


def test_the_default_pairs_follow_the_step_budget():
    from noisecraft.runs.config import TrainConfig
    from noisecraft.runs.regress import EPOCHS, MIN_PAIRS, PAIRS, default_pairs

    assert default_pairs(TrainConfig(max_steps=20_000, batch_size=512)) == 20_000 * 512 // EPOCHS
    assert default_pairs(TrainConfig(max_steps=10, batch_size=16)) == MIN_PAIRS
    assert default_pairs(TrainConfig(max_steps=None, minutes=5.0)) == PAIRS


def test_a_regression_budget_in_minutes_includes_making_its_pairs(base, tmp_path):
    from noisecraft.runs.config import TrainConfig
    from noisecraft.runs.reflow import MIN_TRAIN_SHARE, remaining_budget

    cfg = TrainConfig(max_steps=100, minutes=2.0)
    assert remaining_budget(cfg, 30.0).minutes == pytest.approx(1.5)
    assert remaining_budget(cfg, 600.0).minutes == pytest.approx(MIN_TRAIN_SHARE * 2.0)  # training always runs
    assert remaining_budget(TrainConfig(max_steps=100), 30.0).minutes is None
    distill(_teacher(base), tmp_path / "rg", "regression", 1, minutes=1.0, max_steps=5, pairs=2000, **FAST)
    recorded = yaml.safe_load((tmp_path / "rg" / "config.yaml").read_text())["train"]["minutes"]
    assert MIN_TRAIN_SHARE <= recorded < 1.0  # the pairs' time came off the training's


def test_the_sampler_grid_is_the_grid_the_student_learned(students):
    """The stored named grid over [t_{K-1}, t_0] reproduces the times distillation trained at, and the grids nest."""
    base = nc.SolverConfig()
    for k in (1, 2, 3, 4):
        times = student_times(SCHEDULE, k, base)
        cfg = student_solver("consistency", times, base)
        grid = nc.timesteps.make_grid(SCHEDULE, cfg.steps, cfg.grid, cfg.t_min, cfg.t_max)
        assert torch.allclose(grid, times, rtol=0, atol=1e-12)
    assert torch.allclose(student_times(SCHEDULE, 8, base)[::4], student_times(SCHEDULE, 2, base), atol=1e-12)
    learned = student_times(SCHEDULE, 2, base.override(grid="karras"))  # distill's default grid
    assert load_run(students["pd2"]).config.sample.t_min == pytest.approx(float(learned[1]))
    consistency = consistency_times(SCHEDULE, 2, base.override(grid="karras"))
    stored = load_run(students["cd2"]).config.sample
    assert (stored.t_max, stored.t_min) == pytest.approx((float(consistency[0]), float(consistency[1])))


def test_a_consistency_student_asked_for_another_count_samples_on_that_counts_times(students, tmp_path):
    """K evaluations of a consistency student take the times distillation would give K (consistency_times on
    the recorded base grid), not the distilled count's range. A caller's grid, an optimised grid and a run
    without the record (made before it) keep theirs."""
    run = load_run(students["cd2"])
    info = run.config.distill
    assert (info.grid, info.t_min, info.t_max) == ("karras", None, None)
    base = nc.SolverConfig(grid="karras")
    for k in (1, 3, 4):
        want = consistency_times(SCHEDULE, k, base)
        cfg = run.solver(steps=k - 1)
        got = nc.timesteps.make_grid(SCHEDULE, cfg.steps, cfg.grid, cfg.t_min, cfg.t_max)
        assert cfg.nfe() == k and torch.allclose(got, want, rtol=0, atol=1e-12)
        assert "times for" in run.grid_source(steps=k - 1)
    assert run.solver(steps=1) == run.config.sample  # the distilled count: the stored sampler
    assert run.solver(steps=3, grid="log_snr").t_min == run.config.sample.t_min  # the caller's grid keeps the range
    old = tmp_path / "old"
    shutil.copytree(students["cd2"], old)
    raw = yaml.safe_load((old / "config.yaml").read_text())
    raw["distill"] = {k: raw["distill"][k] for k in ("teacher", "method", "steps")}
    (old / "config.yaml").write_text(yaml.safe_dump(raw))
    kept = load_run(old).solver(steps=3)
    assert (kept.t_min, kept.t_max) == (run.config.sample.t_min, run.config.sample.t_max)


@pytest.mark.parametrize("schedule", [S.EDM(), S.DiscreteVP(), S.RectifiedFlow()], ids=["edm", "ddpm", "flow"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_consistency_student_starts_at_the_step_aware_start(schedule, k):
    """t_0 is the step-aware start (sigma~ 25 for a few evaluations), t_{K-1} sigma~ 0.5 (LAST_SIGMA_TILDE), the
    times between on the named grid, reproduced by the stored sampler; a range the teacher's sampler gives is
    kept, and a t_min above sigma~ 0.5 is honoured."""
    base = nc.SolverConfig(grid="karras")
    times = consistency_times(schedule, k, base)
    assert len(times) == k and float(times[0]) == pytest.approx(step_aware_range(schedule, k)[1], abs=1e-12)
    assert float(schedule.sigma_tilde(times[0])) == pytest.approx(25.0, rel=1e-9)
    if k > 1:
        assert float(schedule.sigma_tilde(times[-1])) == pytest.approx(LAST_SIGMA_TILDE, rel=1e-9)
        gaps = (schedule.sigma_tilde(times).to(torch.float64) ** (1 / RHO)).diff()  # Karras: uniform in sigma~^(1/rho)
        assert torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-9)
        high = float(schedule.t_from_sigma_tilde(torch.tensor(2.0, dtype=torch.float64)))
        assert float(consistency_times(schedule, k, base.override(t_min=high))[-1]) == pytest.approx(high, abs=1e-12)
    assert (times[1:] < times[:-1]).all()
    cfg = student_solver("consistency", times, base)
    grid = nc.timesteps.make_grid(schedule, cfg.steps, cfg.grid, cfg.t_min, cfg.t_max)
    assert torch.allclose(grid, times, rtol=0, atol=1e-12)
    given = base.override(t_max=0.9)
    assert torch.equal(consistency_times(schedule, k, given), student_times(schedule, k, given))


def test_a_schedule_that_starts_below_the_step_aware_start_keeps_its_range():
    low = S.EDM(sigma_max=10.0)
    assert torch.equal(consistency_times(low, 2, nc.SolverConfig()), student_times(low, 2, nc.SolverConfig()))


def test_consistency_curriculum_and_level_distribution():
    """N(k) doubles from s0 to s1 (Song & Dhariwal 2023, eq. 8); p(n) is the lognormal mass of each interval."""
    assert [curriculum(p, 10, 80) for p in (0.0, 0.26, 0.5, 0.76, 1.0)] == [11, 21, 41, 81, 81]
    sigmas = torch.tensor([0.002, 0.1, 0.3, 1.0, 80.0], dtype=torch.float64)
    p = lognormal_level_probabilities(sigmas)
    cdf = torch.distributions.Normal(-1.1, 2.0).cdf(sigmas.log())
    assert torch.allclose(p, (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0]), atol=1e-12)


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_consistency_sampling_with_the_exact_consistency_function_draws_the_data(steps):
    """For one Gaussian the consistency function is the closed-form probability-flow map to sigma ~ 0 (the
    oracle's `flow`); multistep consistency sampling with it draws N(mu, S) at any step count, in steps + 1
    evaluations."""
    mu = torch.tensor([1.0, -0.5, 0.3, 2.0], dtype=torch.float64)
    a = torch.randn(4, 4, generator=gen(1), dtype=torch.float64)
    cov = 0.2 * a @ a.T + 0.05 * torch.eye(4, dtype=torch.float64)
    gaussian = nc.oracle.gaussian(mu, cov)

    def f(x, t):
        return gaussian.flow(x, float(t[0]), 0.0, SCHEDULE)  # EDM: t = 0 is sigma_min = 0.002

    x, info = nc.sample(f, SCHEDULE, "consistency", steps, (20_000, 4), gen(2), grid="karras", t_min=0.3,
                        t_max=1.0, dtype=torch.float64, return_info=True)
    assert info.nfe == steps + 1
    assert torch.allclose(x.mean(0), mu, atol=0.03)  # std <= ~1, 20,000 draws: ~0.007 Monte-Carlo error
    assert torch.allclose(torch.cov(x.T), cov, atol=0.04)


def test_with_no_budget_a_student_stops_at_twice_its_teachers_training_time(base, tmp_path):
    """default_budget: the teacher's steps, ended at BUDGET_FACTOR x the training time its newest checkpoint
    records (issue 17's bound on distillation cost); a teacher without that record keeps its own budget."""
    recorded = json.loads((checkpoints(base["init"] / "checkpoints")[0] / "state.json").read_text())["elapsed_s"]
    teacher = Teacher.from_run(base["init"])
    assert recorded > 0 and teacher.seconds == training_seconds(base["init"] / "checkpoints") == pytest.approx(recorded)
    assert default_budget(teacher) == (pytest.approx(BUDGET_FACTOR * recorded / 60.0), 300)
    assert default_budget(_teacher(base)) == (None, 300)  # a denoiser function: no record
    result = distill(base["init"], tmp_path / "student", "progressive", 1, teacher_steps=2, **FAST)
    train = load_run(tmp_path / "student").config.train
    assert (train.minutes, train.max_steps) == (pytest.approx(BUDGET_FACTOR * recorded / 60.0), 300)
    minutes = f"{BUDGET_FACTOR * recorded / 60.0:.1f}"
    assert describe_budget(train) == f"budget: 300 steps or {minutes} minutes (wall clock), whichever comes first"
    assert describe_budget(train.model_copy(update={"minutes": None})) == "budget: 300 steps"
    assert result.step <= 300
    blank = tmp_path / "blank"
    shutil.copytree(base["init"] / "checkpoints", blank)
    for state in blank.glob("step_*/state.json"):
        state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "elapsed_s"}))
    assert training_seconds(blank) is None and training_seconds(tmp_path / "none") is None


@pytest.fixture(scope="module")
def cli_student(base) -> Path:
    """`noisecraft distill` on a run directory (the briefly trained MLP as teacher)."""
    out = base["root"] / "cli"
    res = runner.invoke(app, ["distill", str(base["init"]), "--method", "progressive", "--steps", "1",
                              "--max-steps", "10", "--run", str(out), "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    assert "noisecraft sample" in res.output
    return out


def test_cli_distill_then_sample(cli_student, base, tmp_path):
    raw = yaml.safe_load((cli_student / "config.yaml").read_text())
    assert raw["distill"] == {"teacher": str(base["init"]), "method": "progressive", "steps": 1, "grid": None,
                              "t_min": None, "t_max": None}  # the base grid is recorded for consistency students
    assert raw["sample"]["steps"] == 0 and raw["train"]["max_steps"] == 10
    res = runner.invoke(app, ["sample", str(cli_student), "--n", "16", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npy").shape == (16, 2)


def test_cli_distill_by_regression_then_sample(base, tmp_path):
    out = tmp_path / "rg"
    res = runner.invoke(app, ["distill", str(base["init"]), "--method", "regression", "--steps", "1", "--pairs", "300",
                              "--max-steps", "10", "--run", str(out), "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    assert "by regression distillation into 1-evaluation sampling" in res.output
    assert yaml.safe_load((out / "config.yaml").read_text())["distill"]["method"] == "regression"
    res = runner.invoke(app, ["sample", str(out), "--n", "16", "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npy").shape == (16, 2)


def test_a_student_cannot_be_resumed_as_a_diffusion_run(cli_student):
    res = runner.invoke(app, ["train", "--resume", "--run", str(cli_student), "--steps", "20"])
    assert res.exit_code == 2 and "is a student made by progressive distillation" in res.output, res.output


@pytest.mark.parametrize("args, needle", [
    (["{empty}", "--max-steps", "5", "--run", "{out}"], "is not a run directory"),
    (["{teacher}", "--method", "magic", "--max-steps", "5", "--run", "{out}"], "unknown --method 'magic'"),
    (["{teacher}", "--steps", "0", "--max-steps", "5", "--run", "{out}"], "--steps must be an integer >= 1"),
    (["{teacher}", "--minutes", "0", "--run", "{out}"], "--minutes must be > 0"),
    (["{teacher}", "--method", "regression", "--steps", "2", "--max-steps", "5", "--run", "{out}"],
     "--steps must be 1 for method 'regression'"),
    (["{teacher}", "--pairs", "100", "--max-steps", "5", "--run", "{out}"], "--pairs is an option of method 'regression'"),
    (["{teacher}", "--method", "regression", "--steps", "1", "--pairs", "0", "--max-steps", "5", "--run", "{out}"],
     "--pairs must be an integer >= 1"),
    (["{teacher}", "--max-steps", "5", "--run", "{teacher}"], "already holds a trained run"),
    (["{teacher}", "--max-steps", "5", "--run", "{out}", "--lr", "-1"], "--lr must be > 0"),
])
def test_cli_distill_refuses_bad_input_before_any_work(base, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    names = {"{empty}": str(tmp_path / "empty"), "{teacher}": str(base["init"]), "{out}": str(tmp_path / "out")}
    res = runner.invoke(app, ["distill", *[names.get(a, a) for a in args]])
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out").exists()


def test_without_a_budget_the_student_gets_the_teachers():
    from noisecraft.runs.distill import _student_config

    config = preset_config("moons", "v", max_steps=123)
    teacher = Teacher(lambda x, t: x, config.loss.schedule, config)
    sample = teacher.config.sample
    assert _student_config(teacher, "consistency", 2, sample, None, None, {}, sample).train.max_steps == 123
    given = _student_config(teacher, "consistency", 2, sample, 1.5, None, {}, sample).train
    assert given.minutes == 1.5 and given.max_steps is None


@pytest.mark.parametrize("method, steps", [("consistency", 2), ("regression", 1)])
def test_guidance_works_on_a_class_conditional_student(tmp_path, method, steps):
    """A class-conditional teacher with label dropout gives a student conditioned the same way, which samples
    a class with classifier-free guidance through the normal pipeline (a regression student's pairs carry the
    labels they were drawn for)."""
    cfg = preset_config("digits", "edm", max_steps=2, batch_size=16, warmup_steps=1)
    model = NetConfig(block_channels=[8, 16], attention=[False, False], layers_per_block=1, num_classes=10,
                      label_dropout=0.2)
    nc.train(cfg.model_copy(update={"model": model}), tmp_path / "teacher", progress=False)
    distill(tmp_path / "teacher", tmp_path / "student", method, steps, max_steps=2, batch_size=16, progress=False,
            **({"pairs": 32} if method == "regression" else {}))
    x = load_run(tmp_path / "student").sample(4, label=3, guidance=2.0)
    assert x.shape == (4, 1, 8, 8) and x.abs().max() <= 1.0
