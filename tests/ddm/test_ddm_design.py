"""Designs with several factors, stimulus coding and per-participant fits (issue 15, part 1).

Oracles: the design matrix against a table built by hand from the parameter names; the analytic
gradient through the design against finite differences; parameter recovery on data simulated at
known values, judged by the fit's own standard errors; stimulus coding with z = 1/2 against the
same data accuracy-coded (the same model, so the same likelihood); per-participant rows against
separate fits.
"""

from __future__ import annotations

import importlib
from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from typer.testing import CliRunner

from noisecraft.ddm import ModelSpec, Rule, fit, fit_participants, prepare, simulate
from noisecraft.ddm.design import Design

FIT = importlib.import_module("noisecraft.ddm.fit")

# The canonical speed/accuracy design: drift by strength shared over instructions; a and t0 by instruction.
V = {1: 0.1, 2: 0.4, 3: 0.8, 4: 1.2, 5: 1.7, 6: 2.3, 7: 3.0}
A = {"accuracy": 1.6, "speed": 0.9}
T0 = {"accuracy": 0.35, "speed": 0.25}
CANONICAL = "v ~ strength, a ~ instruction, t0 ~ instruction, z=0.5"


def speed_accuracy(n_per_cell: int, seed: int) -> pd.DataFrame:
    """Trials of the 7 x 2 design, simulated at V, A, T0 (accuracy coding: 1 = correct)."""
    rows = pd.DataFrame(
        [(s, i) for s, i in product(V, A) for _ in range(n_per_cell)], columns=["strength", "instruction"]
    )
    sim = simulate(len(rows), rows.strength.map(V), rows.instruction.map(A), 0.5,
                   rows.instruction.map(T0), seed=seed)
    return pd.concat([rows, sim], axis=1)


def stimulus_coded(n: int, v: float, a: float, z: float, t0: float, seed: int) -> pd.DataFrame:
    """Trials with stimulus 'left'/'right' and response 'left'/'right' (upper boundary = 'right')."""
    rng = np.random.default_rng(seed)
    stim = np.where(rng.random(n) < 0.5, "right", "left")
    d = simulate(n, np.where(stim == "right", v, -v), a, z, t0, seed=rng)
    d["stim"] = stim
    d["choice"] = np.where(d.response == 1, "right", "left")
    d["correct"] = (d.choice == d.stim).astype(int)
    return d


@pytest.fixture(scope="module")
def canonical_data() -> pd.DataFrame:
    return speed_accuracy(120, seed=11)


@pytest.fixture
def no_fitting(monkeypatch):
    """Fail the test if any optimisation starts: bad input must raise before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("fitting work started before the bad input was reported")

    monkeypatch.setattr(FIT, "minimize", refuse)
    monkeypatch.setattr(FIT, "_sobol", refuse)
    monkeypatch.setattr(FIT, "ez_from_data", refuse)


# ---------------------------------------------------------------------------------------- parsing


def test_old_specs_parse_and_print_as_before():
    spec = ModelSpec.parse("v=linear, a=shared, t0=shared, z=0.5")
    assert spec.rules["v"] == Rule("linear") and spec.rules["a"] == Rule("shared")
    assert spec.rules["z"] == Rule("fixed", 0.5) and not spec.rules["v"].is_formula
    assert spec.columns() == [] and spec.needs_numeric_condition
    assert str(spec) == "v=linear, a=shared, z=0.5, t0=shared, sv=0.0, sz=0.0, st0=0.0, lapse=0.0, s=1.0"


def test_formula_rules_parse_and_round_trip(tmp_path):
    text = ("v ~ strength, a ~ instruction*difficulty; t0 ~ linear(coh)\n"
            "sv ~ affine(coh)*instruction, z ~ 1, lapse=0.01, lapse_range=0:3")
    spec = ModelSpec.parse(text)
    r = spec.rules
    assert r["v"] == Rule("free", factors=("strength",))
    assert r["a"] == Rule("free", factors=("instruction", "difficulty"))
    assert r["t0"] == Rule("linear", column="coh", factors=())
    assert r["sv"] == Rule("affine", column="coh", factors=("instruction",))
    assert r["z"] == Rule("shared") and r["lapse"] == Rule("fixed", 0.01)
    assert spec.columns() == ["strength", "instruction", "difficulty", "coh"]
    assert "a ~ instruction*difficulty" in str(spec) and "sv ~ affine(coh)*instruction" in str(spec)
    for again in (ModelSpec.parse(str(spec)), ModelSpec.from_dict(spec.to_dict())):
        assert again.rules == spec.rules and again.lapse_range == spec.lapse_range
    f = tmp_path / "spec.json"
    f.write_text('{"v": "~ strength", "a": "~ instruction", "t0": "~ instruction"}')
    assert ModelSpec.load(f).rules == ModelSpec.parse(CANONICAL.replace(", z=0.5", "")).rules


@pytest.mark.parametrize(
    "text, match",
    [
        ("a ~ instruction + difficulty", r"rule a ~ instruction \+ difficulty: additive '\+' terms are not supported"),
        ("z ~ 0.4", r"'0.4' is not a column name; .*write z=0.4 for a fixed value"),
        ("v ~ ", r"rule v ~ ''; expected 1, columns joined by '\*'"),
        ("v ~ quadratic(coh)", r"'quadratic\(coh\)' is not a column name"),
        ("v ~ linear(coh)*coh", r"column 'coh' named twice"),
        ("v=free, v ~ strength", r"spec gives 'v' twice \(v=free, v ~ strength\)"),
        ("b ~ strength", r"unknown parameter 'b'"),
        ("v strength", r"expected name=rule or name ~ columns"),
        ("a ~ linear(coh):instruction", r"':' joins affine\(column\) to the columns"),
        ("a ~ affine(coh):", r"':' joins affine\(column\) to the columns"),
        ("a ~ affine(coh):instruction:difficulty", r"':' joins affine\(column\)"),
    ],
)
def test_bad_formulas_name_the_rule(text, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec.parse(text)


# ----------------------------------------------------------------------------------------- design


def test_design_maps_rows_to_values_as_built_by_hand():
    # 2 instructions x 3 strengths, 2 trials per cell, shuffled rows; coh is a numeric column.
    cells = [(i, s) for i in ("acc", "spd") for s in (1, 2, 3)] * 2
    df = pd.DataFrame(cells, columns=["instruction", "strength"]).sample(frac=1, random_state=0)
    df = df.reset_index(drop=True)
    df["coh"] = df.strength * 0.1
    df["rt"], df["response"] = 0.5 + 0.01 * np.arange(len(df)), np.arange(len(df)) % 2
    spec = ModelSpec.parse("v ~ strength, a ~ instruction, t0 ~ instruction*strength, "
                           "sv ~ linear(coh), z ~ affine(coh)*instruction, lapse=0.01")
    data = prepare(df, columns=spec.columns())
    design = Design.build(spec, data, t0_cap=np.full(len(data.levels), 0.4))
    assert design.names == [
        "v[1]", "v[2]", "v[3]", "a[acc]", "a[spd]",
        "z_intercept[acc]", "z_intercept[spd]", "z_slope[acc]", "z_slope[spd]",
        "t0[acc,1]", "t0[acc,2]", "t0[acc,3]", "t0[spd,1]", "t0[spd,2]", "t0[spd,3]",
        "sv_slope",
    ]
    theta = np.random.default_rng(3).uniform(0.1, 0.9, len(design.names))
    th = dict(zip(design.names, theta))
    vals = design.values(theta)
    rows = data.rows  # the data frame's row of every prepared trial
    for p, expected in {
        "v": [th[f"v[{s}]"] for s in df.strength[rows]],
        "a": [th[f"a[{i}]"] for i in df.instruction[rows]],
        "t0": [th[f"t0[{i},{s}]"] for i, s in zip(df.instruction[rows], df.strength[rows])],
        "sv": [th["sv_slope"] * c for c in df.coh[rows]],
        "z": [th[f"z_intercept[{i}]"] + th[f"z_slope[{i}]"] * c for i, c in zip(df.instruction[rows], df.coh[rows])],
        "lapse": [0.01] * len(rows),
        "st0": [0.0] * len(rows),
    }.items():
        np.testing.assert_allclose(vals[p][data.cond], expected, rtol=0, atol=1e-12, err_msg=p)
    # the matrix form: p_cell = X_p theta_p, and the chain rule is its transpose
    a = design.matrix("a")
    assert a.shape == (6, 2) and np.array_equal(a.sum(1), np.ones(6))
    g = np.arange(6.0)
    np.testing.assert_allclose(design.chain("a", g), a.T @ g)


def test_shared_intercept_with_a_slope_per_level_parses_maps_and_recovers_the_truth():
    """a ~ affine(theta):conf (HDDM's a ~ theta:C(conf)): a = a_intercept + a_slope[conf] * theta in every cell;
    the spec prints back as written, and ML recovers the three values from simulated trials within 3 SE."""
    spec = ModelSpec.parse("v=shared, a ~ affine(theta):conf, t0=shared, z=0.5")
    assert spec.rules["a"] == Rule("affine", column="theta", factors=("conf",), shared_intercept=True)
    assert "a ~ affine(theta):conf" in str(spec) and ModelSpec.parse(str(spec)).rules == spec.rules
    assert ModelSpec.from_dict(spec.to_dict()).rules == spec.rules
    rng = np.random.default_rng(4)
    n = 3000
    df = pd.DataFrame({"conf": np.where(np.arange(n) % 2 == 0, "HC", "LC"),
                       "theta": rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], n)})
    truth = {"a_intercept": 1.4, "a_slope[HC]": 0.3, "a_slope[LC]": -0.15}
    a = truth["a_intercept"] + np.where(df.conf == "HC", truth["a_slope[HC]"], truth["a_slope[LC]"]) * df.theta
    df = pd.concat([df, simulate(n, 1.0, a.to_numpy(), 0.5, 0.3, seed=5)], axis=1)
    data = prepare(df, columns=spec.columns())
    design = Design.build(spec, data, t0_cap=np.full(len(data.levels), 0.2))
    assert design.names == ["v", "a_intercept", "a_slope[HC]", "a_slope[LC]", "t0"]
    theta = np.array([1.0, 1.4, 0.3, -0.15, 0.3])
    cells = data.cells
    expected = 1.4 + np.where(cells.conf == "HC", 0.3, -0.15) * cells.theta.to_numpy(float)
    np.testing.assert_allclose(design.values(theta)["a"], expected, atol=1e-12)
    res = fit(df, spec=spec)
    se = dict(zip(res.names, res.se))
    for name, value in truth.items():  # about 0.02-0.03 SE each; 3.5 SE is a 1-in-2,000 miss per value
        assert abs(res.params[name] - value) < 3.5 * se[name], (name, res.params[name], se[name])


def test_gradient_through_a_multifactor_stimulus_design_matches_finite_differences():
    d = stimulus_coded(400, 1.2, 1.1, 0.45, 0.3, seed=5)
    d["instruction"] = np.where(np.arange(len(d)) % 2 == 0, "speed", "accuracy")
    d["coh"] = 0.1 + 0.1 * (np.arange(len(d)) % 3)
    spec = ModelSpec.parse("v ~ linear(coh)*instruction, a ~ instruction, z ~ instruction, t0=shared, "
                           "sv=shared, lapse=shared")
    data = prepare(d, response="choice", columns=spec.columns(), coding="stimulus", stimulus="stim",
                   upper="right")
    prob = FIT._Problem(data, spec, (0.0, 3.0))
    theta = FIT._clip(prob, FIT._default_theta(prob)) * np.random.default_rng(1).uniform(0.9, 1.1, prob.design.lower.size)
    _, grad = prob.nll_grad(theta)
    h = 1e-6
    numeric = [(prob.nll(theta + h * e) - prob.nll(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)


def test_p_equals_free_over_the_condition_is_p_tilde_that_column():
    d = speed_accuracy(40, seed=2)
    old = fit(d, condition="instruction", spec="v=free, a=shared, t0=shared", se=False)
    new = fit(d, spec="v ~ instruction, a=shared, t0=shared", se=False)
    assert new.names == old.names == ["v[accuracy]", "v[speed]", "a", "t0"]
    assert new.nll == pytest.approx(old.nll, abs=1e-9)
    np.testing.assert_allclose(new.theta, old.theta, atol=1e-9)


# --------------------------------------------------------------------------------------- recovery


def test_canonical_speed_accuracy_design_recovers_the_truth(canonical_data):
    res = fit(canonical_data, spec=CANONICAL)
    assert res.k == 11 and res.converged and res.n == 14 * 120
    truth = {**{f"v[{s}]": v for s, v in V.items()}, **{f"a[{i}]": x for i, x in A.items()},
             **{f"t0[{i}]": x for i, x in T0.items()}}
    se = dict(zip(res.names, res.se))
    for name, true in truth.items():
        # 120 trials per cell: SEs of about .1 (drifts), .03 (a), .005 (t0); 4 SE is a 1-in-16,000 miss.
        assert abs(res.params[name] - true) < 4 * se[name], (name, res.params[name], se[name])
    assert max(se[f"v[{s}]"] for s in V) < 0.2 and max(se[f"a[{i}]"] for i in A) < 0.06
    # Freeing the drift per instruction adds 7 parameters the truth does not need: the likelihood
    # ratio is chi-square(7)-sized, and never negative (the models are nested).
    wider = fit(canonical_data, spec=CANONICAL.replace("strength", "strength*instruction"), se=False)
    assert wider.k == 18
    assert 0 <= 2 * (res.nll - wider.nll) < chi2.ppf(0.999, 7)
    table = res.per_condition()
    assert list(table.columns[:3]) == ["condition", "strength", "instruction"] and len(table) == 14


def test_stimulus_coding_recovers_a_response_bias():
    d = stimulus_coded(1500, 1.5, 1.2, 0.35, 0.3, seed=2)
    res = fit(d, response="choice", coding="stimulus", stimulus="stim", upper="right",
              spec="v=shared, z=shared")
    p, se = res.params, dict(zip(res.names, res.se))
    for name, true in {"v": 1.5, "a": 1.2, "z": 0.35, "t0": 0.3}.items():
        assert abs(p[name] - true) < 4 * se[name], (name, p[name], se[name])
    assert (0.5 - p["z"]) / se["z"] > 10  # the bias towards 'left' is found
    cells = res.per_condition().set_index("condition")
    assert cells.loc["right", "v"] == -cells.loc["left", "v"] == pytest.approx(p["v"])
    # With z fixed at 1/2, stimulus coding is accuracy coding: the same likelihood and estimates.
    stim = fit(d, response="choice", coding="stimulus", stimulus="stim", upper="right", spec="v=shared")
    acc = fit(d, response="correct", spec="v=shared")
    assert stim.nll == pytest.approx(acc.nll, abs=1e-6)
    np.testing.assert_allclose(stim.theta, acc.theta, atol=1e-5)
    # Separate drifts per stimulus, each towards its own response; 0/1 codes work the same way.
    sep = fit(d, response="choice", coding="stimulus", stimulus="stim", upper="right",
              spec="v ~ stim, z=shared", se=False)
    assert sep.names[:2] == ["v[left]", "v[right]"]
    assert sep.params["v[left]"] == pytest.approx(1.5, abs=0.3) and sep.params["v[right]"] == pytest.approx(1.5, abs=0.3)
    d01 = d.assign(choice=(d.choice == "right").astype(int), stim=(d.stim == "right").astype(int))
    again = fit(d01, response="choice", coding="stimulus", stimulus="stim", spec="v=shared, z=shared", se=False)
    assert again.nll == pytest.approx(res.nll, abs=1e-6)


# ------------------------------------------------------------------------------------ participants


@pytest.fixture(scope="module")
def three_participants() -> pd.DataFrame:
    parts = []
    for subj, a in enumerate((0.9, 1.3, 1.8)):
        d = simulate(300, 1.2, a, 0.5, 0.3, seed=40 + subj)
        d["instruction"] = np.where(np.arange(300) < 150, "speed", "accuracy")
        d["subj_idx"] = subj
        parts.append(d)
    return pd.concat(parts, ignore_index=True)


def test_fit_participants_is_one_fit_per_participant(three_participants):
    spec = "v=shared, a ~ instruction, t0=shared"
    table = fit_participants(three_participants, spec, by="subj_idx", se=False)
    assert list(table.columns) == ["subj_idx", "parameter", "estimate", "se", "at_bound", "n", "k", "nll",
                                   "aic", "bic", "converged", "time_s"]
    assert len(table) == 3 * 4 and set(table.subj_idx) == {0, 1, 2}
    for subj, rows in table.groupby("subj_idx"):
        alone = fit(three_participants[three_participants.subj_idx == subj], spec=spec, se=False)
        assert list(rows.parameter) == alone.names
        np.testing.assert_allclose(rows.estimate, alone.theta, rtol=0, atol=1e-12)
        assert rows.nll.iloc[0] == alone.nll and rows.n.iloc[0] == 300 and rows.converged.all()
    a = table[table.parameter == "a[speed]"].set_index("subj_idx").estimate
    assert a[0] < a[1] < a[2]


def test_cli_fit_by_participant_writes_the_table(tmp_path, three_participants):
    from noisecraft.cli.ddm import app

    csv, out = tmp_path / "trials.csv", tmp_path / "table.csv"
    three_participants.to_csv(csv, index=False)
    spec = "v=shared, a ~ instruction, t0=shared"
    r = CliRunner().invoke(app, ["fit", str(csv), "--spec", spec, "--by", "subj_idx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = pd.read_csv(out)
    expected = fit_participants(three_participants, spec, by="subj_idx")
    assert list(written.parameter) == list(expected.parameter)
    np.testing.assert_allclose(written.estimate, expected.estimate, rtol=1e-9)
    assert "a[accuracy]" in r.output
    r = CliRunner().invoke(app, ["fit", str(csv), "--coding", "stimulus"])
    assert r.exit_code == 2 and "coding='stimulus' needs stimulus=" in r.output


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, kwargs, match",
    [
        # a factor column with one level used for a free parameter (new and old form)
        ({"instruction": "speed"}, {"spec": "a ~ instruction"},
         r"^rule a ~ instruction: column 'instruction' has one level \(speed\); a free parameter needs at least two"),
        ({"instruction": "speed"}, {"spec": "v=free", "condition": "instruction"},
         r"^rule v=free: column 'instruction' has one level"),
        # stimulus coding without (or with a bad) stimulus column
        ({}, {"coding": "stimulus"}, r"^coding='stimulus' needs stimulus=<column>"),
        ({}, {"coding": "stimulus", "stimulus": "stimulus"}, r"^column 'stimulus' not in data"),
        ({}, {"stimulus": "stim"}, r"^stimulus='stim' is used only with coding='stimulus'"),
        ({"stim": ["a", "b", "c"] * 20}, {"coding": "stimulus", "stimulus": "stim", "stimulus_upper": "a"},
         r"^stimulus column 'stim' has values \['a', 'b', 'c'\]; stimulus coding expects two stimuli"),
        ({}, {"coding": "stimulus", "stimulus": "stim", "stimulus_upper": "up"},
         r"^stimulus column 'stim' has no trial with stimulus_upper='up'"),
        ({}, {"upper": "yes"}, r"^upper='yes' is not a value of 'response'"),
        # a spec naming a column that does not exist
        ({}, {"spec": "a ~ instrucion"},
         r"^spec rule a ~ instrucion names column 'instrucion', which is not in the data; columns are \["),
        ({}, {"spec": "v ~ linear(coherence)"}, r"^spec rule v ~ linear\(coherence\) names column 'coherence'"),
        # a linear/affine rule on a non-numeric column, or one the data cannot identify
        ({}, {"spec": "v ~ linear(instruction)"},
         r"^rule v ~ linear\(instruction\): column 'instruction' is not numeric \(values \['accuracy', 'speed'\]\)"),
        ({"coh": 0.2}, {"spec": "v ~ affine(coh)"}, r"^rule v ~ affine\(coh\): column 'coh' has one value"),
        ({"coh": 0.0}, {"spec": "v ~ linear(coh)"}, r"^rule v ~ linear\(coh\): column 'coh' is 0 in every cell"),
        ({"coh": 0.2}, {"spec": "a ~ affine(coh):instruction"},
         r"^rule a ~ affine\(coh\):instruction: the intercept and the 2 slopes are not identified"),
        ({"instruction": ["speed", None, "accuracy"] * 20}, {"spec": "a ~ instruction"},
         r"^column 'instruction' has missing values at rows 1, 4, 7"),
    ],
)
def test_bad_input_is_named_before_any_work(no_fitting, change, kwargs, match):
    df = simulate(60, 1.0, 1.0, t0=0.2, seed=1)
    df["instruction"] = np.where(np.arange(60) % 2 == 0, "speed", "accuracy")
    df["stim"] = np.where(np.arange(60) % 3 == 0, "left", "right")
    df["coh"] = 0.1 * (1 + np.arange(60) % 3)
    for col, value in change.items():
        df[col] = value
    with pytest.raises(ValueError, match=match):
        fit(df, **kwargs)


def test_bad_participant_is_named_before_any_fit(no_fitting, three_participants):
    d = three_participants.copy()
    d.loc[d.subj_idx == 2, "instruction"] = "speed"
    with pytest.raises(ValueError, match=r"^subj_idx=2: rule a ~ instruction: column 'instruction' has one level"):
        fit_participants(d, "a ~ instruction", by="subj_idx")
    with pytest.raises(ValueError, match=r"^by='subject' is not a column of the data"):
        fit_participants(d, "a ~ instruction", by="subject")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['conditon'\]"):
        fit_participants(d, "a ~ instruction", conditon="instruction")
