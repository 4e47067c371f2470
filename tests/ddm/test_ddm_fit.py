"""Fitting: recovery of known parameters, the Roitman & Shadlen optimum, specs and bad data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.ddm import ModelSpec, fit, load_roitman, negloglik, prepare, simulate
from noisecraft.ddm.density import Lapse


@pytest.fixture(scope="module")
def two_conditions() -> pd.DataFrame:
    truth = {"easy": 2.0, "hard": 0.7}
    parts = []
    for i, (c, v) in enumerate(truth.items()):
        d = simulate(1500, v, 1.3, 0.5, 0.3, seed=100 + i)
        d["cond"] = c
        parts.append(d)
    return pd.concat(parts, ignore_index=True)


def test_ml_recovers_known_parameters(two_conditions):
    res = fit(two_conditions, condition="cond", spec="v=free, a=shared, t0=shared, z=0.5")
    p, se = res.params, dict(zip(res.names, res.se))
    truth = {"v[easy]": 2.0, "v[hard]": 0.7, "a": 1.3, "t0": 0.3}
    for k, t in truth.items():
        assert abs(p[k] - t) < 4 * se[k], (k, p[k], se[k])
        assert 0 < se[k] < 0.1
    assert res.converged and res.k == 4
    assert res.aic == pytest.approx(2 * 4 + 2 * res.nll)
    assert res.bic == pytest.approx(4 * np.log(3000) + 2 * res.nll)
    # the reported NLL is the likelihood at the reported parameters
    data = prepare(two_conditions, "rt", "response", "cond")
    assert negloglik(data, res.spec, res.params) == pytest.approx(res.nll, abs=1e-8)


def test_standard_errors_match_the_sampling_spread():
    # Across replications, the spread of the ML estimate of v matches its Hessian SE.
    est, ses = [], []
    for i in range(6):
        d = simulate(400, 1.5, 1.1, 0.5, 0.25, seed=500 + i)
        r = fit(d, spec="v=shared", n_starts=2)
        est.append(r.params["v"])
        ses.append(dict(zip(r.names, r.se))["v"])
    assert 0.4 < np.std(est, ddof=1) / np.mean(ses) < 2.5


def test_chisq_and_g2_recover(two_conditions):
    for stat in ("chisq", "g2"):
        res = fit(
            two_conditions,
            condition="cond",
            spec="v=free, a=shared, t0=shared",
            method="chisq",
            statistic=stat,
        )
        p = res.params
        assert p["v[easy]"] == pytest.approx(2.0, abs=0.2)
        assert p["v[hard]"] == pytest.approx(0.7, abs=0.15)
        assert p["a"] == pytest.approx(1.3, abs=0.1)
        assert p["t0"] == pytest.approx(0.3, abs=0.03)
        assert res.statistic_name == stat and res.statistic >= 0


def test_linear_drift_and_free_lapse_recover():
    parts = []
    for i, c in enumerate((0.05, 0.1, 0.2, 0.4)):
        d = simulate(400, 8.0 * c, 1.2, 0.5, 0.3, lapse=Lapse(0.05, 0.0, 2.0), seed=10 + i)
        d["coh"] = c
        parts.append(d)
    df = pd.concat(parts, ignore_index=True)
    spec = ModelSpec.parse("v=linear, a=shared, t0=shared, z=0.5, lapse=shared, lapse_range=0:2")
    res = fit(df, condition="coh", spec=spec)
    p = res.params
    assert res.names == ["v_slope", "a", "t0", "lapse"]
    assert p["v_slope"] == pytest.approx(8.0, rel=0.1)
    assert p["a"] == pytest.approx(1.2, abs=0.08)
    assert p["t0"] == pytest.approx(0.3, abs=0.02)
    assert p["lapse"] == pytest.approx(0.05, abs=0.025)
    # Without the lapse term the contaminants drag t0 down (fast contaminants must be explained).
    plain = fit(df, condition="coh", spec="v=linear, a=shared, t0=shared", se=False)
    assert plain.params["t0"] < 0.2


def test_sv_free_improves_the_likelihood_of_sv_data():
    d = simulate(800, 1.5, 1.2, 0.5, 0.3, sv=1.2, seed=7)
    base = fit(d, spec="v=shared", se=False, n_starts=2)
    full = fit(d, spec="v=shared, sv=shared", se=False, n_starts=2)
    assert full.nll < base.nll - 2
    assert 0.4 < full.params["sv"] < 2.5


def test_roitman_monkey1_reaches_the_published_optimum():
    # Roitman & Shadlen (2002), monkey 1: drift linear in coherence, shared a and t0,
    # 0.1 < rt < 1.65 s, 2 % uniform lapse on [0, 2] s, z = 1/2; optimum NLL ~205.5 at
    # about (10.3, 1.49, 0.31) with the exact density.
    df = load_roitman(monkey=1)
    res = fit(
        df,
        response="correct",
        condition="coh",
        rt_min=0.1,
        rt_max=1.65,
        spec="v=linear, a=shared, t0=shared, z=0.5, lapse=0.02, lapse_range=0:2",
    )
    assert res.n == 2611
    assert res.nll <= 205.5
    p = res.params
    assert p["v_slope"] == pytest.approx(10.3, abs=0.1)
    assert p["a"] == pytest.approx(1.49, abs=0.01)
    assert p["t0"] == pytest.approx(0.31, abs=0.005)
    assert res.converged


def test_ez_method_per_condition(two_conditions):
    res = fit(two_conditions, condition="cond", spec="v=free, a=shared, t0=shared", method="ez")
    assert list(res.ez_per_condition["condition"]) == ["easy", "hard"]
    assert res.params["v[easy]"] == pytest.approx(2.0, rel=0.15)
    assert res.params["a"] == pytest.approx(1.3, rel=0.1)


def test_spec_round_trip_and_errors(tmp_path):
    spec = ModelSpec.parse("v=linear; a=shared\nt0=free, z=0.4, lapse=0.02, lapse_range=0:2, s=0.1")
    assert spec.rules["v"].kind == "linear" and spec.rules["z"].value == 0.4
    assert spec.lapse_range == (0.0, 2.0) and spec.s == 0.1
    again = ModelSpec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    f = tmp_path / "spec.json"
    f.write_text('{"v": "affine", "a": "free"}')
    assert ModelSpec.load(f).rules["v"].kind == "affine"
    with pytest.raises(ValueError, match="rule v='quadratic'"):
        ModelSpec.parse("v=quadratic")
    with pytest.raises(ValueError, match="unknown parameter 'b'"):
        ModelSpec.parse("b=shared")
    df = pd.DataFrame({"rt": [0.5, 0.6, 0.7], "response": [1, 0, 1], "c": ["x", "y", "x"]})
    with pytest.raises(ValueError, match="not numeric"):
        fit(df, condition="c", spec="v=linear")


@pytest.mark.parametrize(
    "column, values, match",
    [
        ("rt", [0.5, -0.2, 0.6, 0.7], r"non-positive RTs at rows 1 "),
        ("rt", [0.5, 0.4, np.nan, 0.7], r"missing/non-numeric RTs at rows 2;"),
        ("response", [1, 0, 2, 1], r"'response' has values \['2'\] at rows 2;"),
        ("response", [1, "left", 0, 1], r"values \['left'\] at rows 1;"),
    ],
)
def test_bad_data_names_the_rows(column, values, match):
    df = pd.DataFrame({"rt": [0.5, 0.4, 0.6, 0.7], "response": [1, 0, 1, 1]})
    df[column] = values
    with pytest.raises(ValueError, match=match):
        fit(df)


def test_too_few_trials_names_the_condition():
    df = simulate(60, 1.0, 1.0, t0=0.2, seed=1)
    df["coh"] = 0.1
    df.loc[[3, 7, 9], "coh"] = 0.5
    with pytest.raises(
        ValueError, match=r"coh=0.5 has 3 trials \(rows 3, 7, 9\); method 'chisq' needs at least 20"
    ):
        fit(df, condition="coh", method="chisq")
    with pytest.raises(ValueError, match="column 'coherence' not in data"):
        fit(df, condition="coherence")


def test_quantile_bins_fall_back_with_few_errors():
    import importlib

    F = importlib.import_module("noisecraft.ddm.fit")
    df = pd.DataFrame(
        {
            "rt": np.r_[np.linspace(0.4, 1.0, 40), [0.5, 0.6, 0.7], np.linspace(0.4, 1.0, 30)],
            "response": np.r_[np.ones(40), np.zeros(3), np.ones(30)].astype(int),
            "c": ["x"] * 43 + ["y"] * 30,
        }
    )
    bins = F._QuantileBins(prepare(df, "rt", "response", "c"))
    sizes = {(k, r): obs for k, r, _, obs, _ in bins.groups}
    assert len(sizes[(0, 1)]) == 6  # .1/.3/.5/.7/.9 quantiles
    assert len(sizes[(0, 0)]) == 2  # 3 errors: median only
    assert len(sizes[(1, 0)]) == 1 and sizes[(1, 0)][0] == 0  # no errors: one bin, observed 0
    assert sum(sizes[(0, 1)]) + sum(sizes[(0, 0)]) == pytest.approx(1.0)


def test_ratcliff_noise_scale_in_a_fit():
    d = simulate(1000, 0.15, 0.11, 0.5, 0.3, s=0.1, seed=9)
    r1 = fit(d, spec="v=shared, s=0.1", se=False)
    r2 = fit(d, spec="v=shared", se=False)
    assert r1.params["v"] == pytest.approx(r2.params["v"] / 10, rel=1e-4)
    assert r1.params["a"] == pytest.approx(r2.params["a"] / 10, rel=1e-4)
    assert r1.nll == pytest.approx(r2.nll, abs=1e-6)


def test_st0_free_fits_uniform_nondecision_time():
    d = simulate(800, 1.5, 1.2, 0.5, 0.25, st0=0.2, seed=8)
    base = fit(d, spec="v=shared", se=False, n_starts=2)
    full = fit(d, spec="v=shared, st0=shared", se=False, n_starts=2)
    assert full.nll < base.nll - 2
    assert full.params["st0"] == pytest.approx(0.2, abs=0.08)
    assert full.params["t0"] == pytest.approx(0.25, abs=0.04)


def test_spec_needs_what_it_names(tmp_path):
    df = simulate(50, 1.0, 1.0, t0=0.2, seed=2)
    with pytest.raises(ValueError, match="linear/affine rules; expected a condition column"):
        fit(df, spec="v=linear")
    with pytest.raises(ValueError, match="spec file .*missing.yaml' not found"):
        fit(df, spec=str(tmp_path / "missing.yaml"))
    f = tmp_path / "spec.yaml"
    f.write_text("v: shared\nt0: shared\nlapse: 0.01\nlapse_range: [0, 3]\n")
    res = fit(df, spec=str(f), se=False)
    assert res.names == ["v", "a", "t0"] and res.lapse_range == (0.0, 3.0)


@pytest.mark.parametrize("subject", [3, 12])
def test_free_lapse_never_fits_worse_than_the_nested_model(subject):
    """lapse = 0 lies in the box of a free lapse, so the free fit's NLL is at most the nested one's.

    Cavanagh participant 12 has a second basin (lapse 0.15, late t0, NLL 320.5) that every
    generic start fell into while the nested model reaches 301.9.
    """
    from noisecraft.ddm import load_cavanagh

    g = load_cavanagh().query("subj_idx == @subject")
    free = fit(g, spec=ModelSpec.parse("v ~ stim, lapse=shared"), se=False)
    nested = fit(g, spec=ModelSpec.parse("v ~ stim, lapse=0"), se=False)
    assert free.nll <= nested.nll + 1e-6
    assert free.converged


def test_a_checking_start_that_wins_is_polished_to_the_tight_optimum(monkeypatch):
    """Starts after the first stop at a loose tolerance or once they agree with the best (they only test agreement);
    when one of them ends best it is polished at the first start's tight tolerance, so the fit returns the same
    optimum as usual."""
    import sys

    fit_module = sys.modules["noisecraft.ddm.fit"]
    df = simulate(500, 1.5, 1.2, 0.5, 0.3, seed=2024)
    spec = "v=shared, a=shared, t0=shared, z=0.5, lapse=0.02, lapse_range=0:3"
    reference = fit(df, spec=spec)
    calls = []
    real_minimize = fit_module.minimize

    def cut_first_start_short(fun, x0, **kw):
        options = dict(kw.pop("options"))
        if not calls:
            options["maxiter"] = 1  # the first start ends far from the optimum, so a checking start wins
        calls.append((options, None))  # (before the call: a checking start may stop by raising)
        return real_minimize(fun, x0, options=options, **kw)

    monkeypatch.setattr(fit_module, "minimize", cut_first_start_short)
    result = fit(df, spec=spec)
    tight, check = calls[0][0], calls[1][0]
    assert check["ftol"] > tight["ftol"] and check["gtol"] > tight["gtol"]
    polish = calls[-1]
    assert polish[0]["ftol"] == tight["ftol"] and polish[0]["gtol"] == tight["gtol"] and len(calls) >= 3
    assert result.nll == pytest.approx(reference.nll, abs=1e-8)
    np.testing.assert_allclose(result.theta, reference.theta, atol=1e-4)
    # the Hessian formed at the first start's (cut short) end scaled the checking start; the SEs come from the end
    np.testing.assert_allclose(result.se, reference.se, rtol=1e-3)


def test_checking_starts_run_scaled_by_the_curvature_whose_hessian_gives_the_ses(monkeypatch):
    """After the first start, the Hessian at its end (which the SEs need) scales the checking starts: they search
    u = theta / D, D = 1 / sqrt(diag H). When that end stays best the same Hessian gives the SEs (formed once); a
    fit without SEs forms none and runs its checks unscaled. Scaled or not, the fit ends at the same optimum."""
    import sys

    fit_module = sys.modules["noisecraft.ddm.fit"]
    df = simulate(500, 1.5, 1.2, 0.5, 0.3, seed=5)
    spec = "v=shared, a=shared, t0=shared, z=0.5, lapse=0.02, lapse_range=0:3"
    real_hessian, real_run = fit_module._inner_hessian, fit_module._run_until_agreement
    at, scales = [], []

    def watched_hessian(prob, x):
        at.append(x.copy())
        return real_hessian(prob, x)

    def watched_run(fun, x0, bounds, options, target, scale=None):
        scales.append(scale)
        return real_run(fun, x0, bounds, options, target, scale)

    monkeypatch.setattr(fit_module, "_inner_hessian", watched_hessian)
    monkeypatch.setattr(fit_module, "_run_until_agreement", watched_run)
    res = fit(df, spec=spec)
    assert res.converged and len(at) == 1 and np.array_equal(at[0], res.theta)
    prob = fit_module._setup(prepare(df), ModelSpec.parse(spec), "ml", {})
    inner, H = real_hessian(prob, res.theta)
    assert inner.size == 3 and scales[0] is not None
    np.testing.assert_allclose(scales[0], 1.0 / np.sqrt(np.diag(H)))
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(np.linalg.inv(H))))
    at.clear(), scales.clear()
    bare = fit(df, spec=spec, se=False)
    assert not at and scales and all(s is None for s in scales)
    assert bare.nll == pytest.approx(res.nll, abs=1e-8)


def test_run_until_agreement_in_scaled_coordinates_returns_points_in_the_parameters(monkeypatch):
    """The search runs in u = x / D (L-BFGS-B sees the scaled start and box); on a quadratic with known minimum m
    it ends at m whatever D; stopped by the target it returns a point in x whose value is below the target."""
    import sys

    fit_module = sys.modules["noisecraft.ddm.fit"]
    _run_until_agreement, real_minimize, seen = fit_module._run_until_agreement, fit_module.minimize, []

    def watched(fun, x0, **kw):
        seen.append((np.array(x0), kw["bounds"]))
        return real_minimize(fun, x0, **kw)

    monkeypatch.setattr(fit_module, "minimize", watched)
    m, c = np.array([0.5, -2.0, 0.01]), np.array([1.0, 400.0, 4e4])
    fun = lambda x: (float(np.sum(c * (x - m) ** 2)), 2.0 * c * (x - m))
    bounds = [(-5.0, 5.0)] * 3
    options = {"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-10}
    for scale in (None, 1.0 / np.sqrt(c), np.array([3.0, 0.1, 7.0])):
        res = _run_until_agreement(fun, np.array([2.0, 1.0, 1.0]), bounds, options, -1.0, scale)
        np.testing.assert_allclose(res.x, m, atol=1e-6)
        d = np.ones(3) if scale is None else scale
        np.testing.assert_allclose(seen[-1][0], np.array([2.0, 1.0, 1.0]) / d)
        np.testing.assert_allclose(np.array(seen[-1][1])[:, 1], 5.0 / d)
        stop = _run_until_agreement(fun, np.array([2.0, 1.0, 1.0]), bounds, options, 1.0, scale)
        assert stop.fun < 1.0 and fun(stop.x)[0] == pytest.approx(stop.fun)


def test_starts_beyond_three_come_from_the_sobol_design(monkeypatch):
    """n_starts > 3 adds starts at the Sobol design's next-best points (it was silently capped at 3): with the
    first three starts cut short so that they disagree, the fourth and fifth run and the fit still reaches the
    usual optimum; n_starts < 1 is refused before any work."""
    import sys

    fit_module = sys.modules["noisecraft.ddm.fit"]
    df = simulate(400, 1.2, 1.4, 0.5, 0.3, seed=11)
    spec = "v=shared, a=shared, t0=shared, z=0.5"
    reference = fit(df, spec=spec, se=False)
    starts = []
    real_minimize = fit_module.minimize

    def first_three_cut_short(fun, x0, **kw):
        options = dict(kw.pop("options"))
        if len(starts) < 3:
            options["maxiter"] = 1
        starts.append(np.array(x0))
        return real_minimize(fun, x0, options=options, **kw)

    monkeypatch.setattr(fit_module, "minimize", first_three_cut_short)
    result = fit(df, spec=spec, se=False, n_starts=5)
    assert len(result.starts) >= 4
    assert not any(np.allclose(starts[3], x) for x in starts[:3])
    assert result.nll == pytest.approx(reference.nll, abs=1e-6)
    monkeypatch.undo()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_starts"):
            fit(df, spec=spec, n_starts=bad)
