"""Reliability of DDM fits: bootstrap, split-half, starting values (noisecraft.ddm.reliability)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from noisecraft.cli.ddm import app
from noisecraft.ddm import fit
from noisecraft.ddm.reliability import bootstrap, split_half, start_sensitivity
from noisecraft.ddm.simulate import simulate_conditions

SPEC = "v=shared, a=shared, t0=shared, z=0.5"
TRUE = {"v": 1.2, "a": 1.4, "t0": 0.3}


def _one(n: int = 300, seed: int = 0, **p) -> pd.DataFrame:
    q = {**TRUE, **p}
    return simulate_conditions(n, q["v"], q["a"], 0.5, q["t0"], seed=seed)[["rt", "response"]]


def _panel(n: int, k: int = 12, seed: int = 0) -> pd.DataFrame:
    """k participants with spread-out true v, a, t0 (the same k for any n), n trials each."""
    rng = np.random.default_rng(seed)
    v, a, t0 = rng.uniform(0.3, 2.5, k), rng.uniform(0.8, 2.4, k), rng.uniform(0.2, 0.5, k)
    return pd.concat([_one(n, seed=100 + i, v=v[i], a=a[i], t0=t0[i]).assign(subj=i) for i in range(k)],
                     ignore_index=True)


def test_bootstrap_se_matches_asymptotic_and_ci_covers_truth():
    df = _one(400, seed=3)
    t = bootstrap(df, SPEC, n_boot=60, seed=1, n_starts=1).set_index("parameter")
    # The percentile interval holds the point estimate, and the bootstrap SE agrees with the
    # inverse-Hessian SE (both estimate the same sampling SD; 60 draws give the SD within ~20 %).
    assert (t.ci_low <= t.estimate).all() and (t.estimate <= t.ci_high).all()
    ratio = t.se_boot / t.se
    assert ((ratio > 0.6) & (ratio < 1.6)).all(), ratio
    # Each 95 % interval covers its true value (3 parameters, one data set: fails with prob ~ 0.15
    # for a well-calibrated method; the seed is fixed, so the check is deterministic).
    for p, val in TRUE.items():
        assert t.ci_low[p] - 0.02 <= val <= t.ci_high[p] + 0.02, (p, t.loc[p].to_dict())


def test_bootstrap_coverage_small_study():
    # 10 data sets x 3 parameters, 25 resamples each (one EZ start per fit: this model has one
    # optimum, see the start test): 90 % intervals should cover ~27 of 30 (binomial sd 1.6);
    # 25-draw percentile intervals run a little narrow, so >= 22 (3 sd below nominal). Intervals
    # that were too narrow by half would cover ~17.
    covered = 0
    for i in range(10):
        t = bootstrap(_one(120, seed=50 + i), SPEC, n_boot=25, level=0.9, seed=i, n_starts=1)
        t = t.set_index("parameter")
        covered += sum(t.ci_low[p] <= val <= t.ci_high[p] for p, val in TRUE.items())
    assert covered >= 22, covered


def test_bootstrap_deterministic_by_seed_and_stratified():
    df = pd.concat([_one(80, seed=1).assign(c="x"), _one(80, seed=2, v=0.4).assign(c="y")], ignore_index=True)
    spec = "v ~ c, a=shared, t0=shared, z=0.5"
    b1 = bootstrap(df, spec, n_boot=8, seed=5)
    b2 = bootstrap(df, spec, n_boot=8, seed=5)
    b3 = bootstrap(df, spec, n_boot=8, seed=6)
    pd.testing.assert_frame_equal(b1, b2)
    assert not np.allclose(b1.ci_low, b3.ci_low)
    assert list(b1.parameter) == ["v[x]", "v[y]", "a", "t0"]


def test_bootstrap_by_participant_checks_every_group_first():
    df = _panel(40, k=3)
    t = bootstrap(df, SPEC, n_boot=3, by="subj", seed=0, n_starts=1)
    assert list(t.columns[:2]) == ["subj", "parameter"] and len(t) == 9
    bad = df.copy()
    bad.loc[bad.index[-1], "rt"] = -1.0  # the last participant's last trial
    with pytest.raises(ValueError, match="non-positive"):
        bootstrap(bad, SPEC, n_boot=3, by="subj")


def test_split_half_reliability_high_with_many_trials_lower_with_few():
    many = split_half(_panel(400), SPEC, by="subj").table.set_index("parameter")
    few = split_half(_panel(24), SPEC, by="subj").table.set_index("parameter")
    assert (many.reliability > 0.9).all(), many
    assert (many.n == 12).all()
    # Spearman-Brown from r
    assert np.allclose(many.reliability, 2 * many.r / (1 + many.r))
    for p in ("v", "a"):
        assert few.reliability[p] < many.reliability[p], (p, few, many)


def test_split_half_odd_even_halves_are_cell_balanced_and_sessions_work():
    df = _panel(60, k=4)
    res = split_half(df, SPEC, by="subj")
    counts = res.estimates.query("parameter == 'a'").groupby("half")["n"].sum()
    assert counts[1] == counts[2] == 4 * 30
    df["session"] = np.where(df.groupby("subj").cumcount() < 30, "s1", "s2")
    ses = split_half(df, SPEC, by="subj", session="session")
    assert np.allclose(ses.table.reliability, ses.table.r)
    r1 = split_half(df, SPEC, by="subj", split="random", seed=3).table
    r2 = split_half(df, SPEC, by="subj", split="random", seed=3).table
    pd.testing.assert_frame_equal(r1, r2)


def test_start_sensitivity_finds_the_optimum_and_reports_spread():
    df = _one(300, seed=7)
    res = start_sensitivity(df, SPEC, n_starts=12, seed=0)
    best = fit(df, spec=SPEC, n_starts=3, se=False)
    assert len(res.runs) == 12 and {"start_a", "a", "nll", "gap", "worse"} <= set(res.runs.columns)
    assert res.fits.nll_best_single[0] == pytest.approx(best.nll, abs=1e-4)
    assert res.fits.nll_multistart[0] == pytest.approx(best.nll, abs=1e-9)
    # Starts that reach the optimum give the multi-start's a; sd and ranges are reported.
    good = res.runs[~res.runs.worse]
    assert np.allclose(good.a, best.params["a"], atol=1e-3)
    t = res.table.set_index("parameter")
    assert set(t.index) == {"v", "a", "t0"} and (t["min"] <= t["max"]).all() and (t.sd >= 0).all()
    # The starts really are spread over the box.
    assert res.runs.start_a.std() > 0.5
    f = res.fits.iloc[0]
    assert f.n_starts == 12 and 0 <= f.share_worse <= 1 and f.nll_ez_start >= f.nll_multistart - 1e-6
    assert f.a_multistart == pytest.approx(best.params["a"])
    again = start_sensitivity(df, SPEC, n_starts=12, seed=0)
    pd.testing.assert_frame_equal(res.runs, again.runs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda df: bootstrap(df, "v ~ missing, a=shared", n_boot=5), "missing"),
        (lambda df: bootstrap(df, SPEC, n_boot=0), "n_boot"),
        (lambda df: bootstrap(df, SPEC, n_boot=5, level=1.5), "level"),
        (lambda df: bootstrap(df, SPEC, n_boot=5, by="nope"), "by='nope'"),
        (lambda df: bootstrap(df, SPEC, n_boot=5, n_boot_typo=1), "unknown fit option"),
        (lambda df: split_half(df, SPEC, by="nope"), "by='nope'"),
        (lambda df: split_half(df, SPEC, by="subj", split="halves"), "split="),
        (lambda df: split_half(df, SPEC, by="subj", session="subj"), "exactly two"),
        (lambda df: start_sensitivity(df, SPEC, n_starts=0), "n_starts"),
        (lambda df: start_sensitivity(df, SPEC, n_starts=3, method="chisq"), "ml"),
        (lambda df: start_sensitivity(df, "t0 ~ nope", n_starts=3), "nope"),
    ],
)
def test_bad_input_raises_before_work(call, match, monkeypatch):
    df = _panel(20, k=3)

    def no_fit(*args, **kwargs):
        raise AssertionError("fit ran before the input was checked")

    monkeypatch.setattr("noisecraft.ddm.reliability.fit", no_fit)
    monkeypatch.setattr("noisecraft.ddm.reliability.fit_participants", no_fit)
    with pytest.raises(ValueError, match=match):
        call(df)


def test_cli_reliability_writes_markdown_and_csv(tmp_path):
    csv = tmp_path / "panel.csv"
    _panel(60, k=4).to_csv(csv, index=False)
    runner = CliRunner()
    md = tmp_path / "rel.md"
    args = ["reliability", str(csv), "--spec", SPEC, "--by", "subj", "--bootstrap", "3", "--split-half",
            "--starts", "2"]
    r = runner.invoke(app, [*args, "--out", str(md)])
    assert r.exit_code == 0, r.output
    text = md.read_text()
    assert "Bootstrap" in text and "Split-half" in text and "Starting values" in text
    out_csv = tmp_path / "rel.csv"
    r = runner.invoke(app, [*args, "--out", str(out_csv)])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out_csv)
    assert set(t["table"]) == {"bootstrap", "split_half", "start_fits", "start_spread"}
    r = runner.invoke(app, ["reliability", str(csv), "--spec", SPEC])
    assert r.exit_code != 0 and "nothing to do" in r.output
