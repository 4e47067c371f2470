"""Hierarchical Bayesian DDM (noisecraft.ddm.bayes): the model's density by hand, the likelihood's
gradient, recovery, diagnostics, and bad input named before any sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from noisecraft.ddm import bayes as B
from noisecraft.ddm import load_cavanagh
from noisecraft.ddm.simulate import simulate

SPEC = "v=shared, a=shared, t0=shared, z=0.5"
TRUTH = {0: (0.8, 1.3, 0.25), 1: (1.3, 1.6, 0.30), 2: (1.1, 1.9, 0.35), 3: (1.6, 1.5, 0.28)}


def _panel(n: int = 150, truth=TRUTH, seed: int = 0) -> pd.DataFrame:
    return pd.concat([simulate(n, v=v, a=a, t0=t0, seed=seed + j).assign(subj_idx=j)
                      for j, (v, a, t0) in truth.items()], ignore_index=True)


def _group(df: pd.DataFrame, spec: str = SPEC) -> tuple[B._Group, list]:
    from noisecraft.ddm.fit import _DATA_OPTIONS, _setup, _spec, fit_defaults

    opts = {k: fit_defaults()[k] for k in _DATA_OPTIONS}
    labels, probs = zip(*[(lab, _setup(sub, _spec(spec), "ml", opts)) for lab, sub in df.groupby("subj_idx")])
    group = B._Group(list(labels), list(probs), "subj_idx")
    d = probs[0].design
    return group, B._entries(d.names, d.kinds, d.slices, _spec(spec), {}, "slopes")


@pytest.fixture(scope="module")
def posterior() -> B.BayesResult:
    return B.bayes(_panel(100), SPEC, draws=100, warmup=100, chains=2, seed=1)


@pytest.mark.parametrize("full", [False, True])
def test_group_loglik_is_the_sum_of_participants_and_its_gradient_matches_finite_differences(full):
    """The basic model in closed form; with sz and st0 free, one decision-time grid over every participant's cells.
    Either way the group's log-likelihood is the sum of the participants' own, and its gradient matches central
    differences."""
    spec = SPEC + (", sz=shared, st0=shared" if full else "")
    group, _ = _group(_panel(60), spec)
    extra = [0.1, 0.05] if full else []
    theta = np.array([[v, a, t0 * (0.8 if full else 0.9), *extra] for v, a, t0 in TRUTH.values()])
    ll, g = group.loglik_grad(theta)
    assert np.isfinite(ll)
    assert ll == pytest.approx(sum(p.loglik_grad(theta[j])[0] for j, p in enumerate(group.problems)), rel=1e-12)
    h = 1e-6
    for j, k in [(0, 0), (1, 1), (2, 2), (3, theta.shape[1] - 1)]:
        e = np.zeros_like(theta)
        e[j, k] = h
        fd = (group.loglik_grad(theta + e)[0] - group.loglik_grad(theta - e)[0]) / (2 * h)
        assert g[j, k] == pytest.approx(fd, rel=1e-5, abs=1e-5)
    # t0 above a participant's fastest trial: zero likelihood, -inf (the sampler rejects the step)
    bad = theta.copy()
    bad[0, 2] = 5.0
    assert group.loglik_grad(bad)[0] == -np.inf


@pytest.mark.parametrize("centred", [(True, True, True), (False, False, False), (False, True, True)])
def test_numpyro_log_density_equals_prior_plus_likelihood_written_by_hand(centred):
    """The model NUTS samples is exactly: mu ~ N(m, s), tau ~ HalfNormal(h), u ~ N(mu, tau) (centred) or
    u = mu + tau eta with eta ~ N(0, 1) (non-centred), theta = g^-1(u), plus the exact DDM log-likelihood.
    Checked at a random point against scipy."""
    import jax
    import numpyro
    from numpyro.infer.util import log_density

    numpyro.enable_x64()
    group, entries = _group(_panel(60))
    centred = np.array(centred)
    model, vary = B._model(entries, len(group.labels), B._loglik_op(group), centred)
    rng = np.random.default_rng(0)
    mu = np.array([1.0, np.log(1.5), np.log(0.22)]) + 0.05 * rng.standard_normal(3)
    tau = np.array([0.3, 0.1, 0.1])
    eta = rng.standard_normal((4, 3))
    u = mu + tau * eta
    sites = {"mu": mu, "tau": tau}
    if centred.any():
        sites["u"] = u[:, centred]
    if not centred.all():
        sites["eta"] = eta[:, ~centred]
    got, _ = log_density(model, (), {}, sites)
    theta = np.stack([u[:, 0], np.exp(u[:, 1]), np.exp(u[:, 2])], axis=1)
    participants = (stats.norm.logpdf(u, mu, tau)[:, centred].sum()
                    + stats.norm.logpdf(eta)[:, ~centred].sum())
    want = (sum(stats.norm.logpdf(mu[k], e.loc, e.scale) for k, e in enumerate(entries))
            + sum(stats.halfnorm.logpdf(tau[i], scale=entries[k].tau) for i, k in enumerate(vary))
            + participants + group.loglik_grad(theta)[0])
    assert float(got) == pytest.approx(want, rel=1e-10)
    # and reverse-mode through the callback is the analytic gradient of the likelihood
    grad = jax.grad(lambda th: B._loglik_op(group)(th))(theta)
    np.testing.assert_allclose(np.asarray(grad), group.loglik_grad(theta)[1], rtol=1e-12)


def test_recovers_participants_and_group(posterior):
    r = posterior
    assert r.theta.shape == (2, 100, 4, 3) and r.group.shape == (2, 100, 3)
    covered = 0
    for j, truth in TRUTH.items():
        for k in range(3):
            lo, hi = np.quantile(r.theta[:, :, j, k], [0.005, 0.995])
            covered += lo <= truth[k] <= hi
    assert covered >= 11, covered  # 12 intervals at 99%
    # group centres near the participants' centre (a, t0: medians of the log-normal)
    assert r.draws("v").mean() == pytest.approx(1.2, abs=0.3)
    assert r.draws("a").mean() == pytest.approx(1.57, abs=0.25)
    assert r.draws("t0").mean() == pytest.approx(0.29, abs=0.04)
    s = r.summary()
    assert set(s["level"]) == {"group", "spread", "participant"}
    assert len(s) == 3 + 3 + 12
    assert (s["r_hat"] < 1.1).all() and (s["ess_bulk"] > 20).all(), s[["name", "r_hat", "ess_bulk"]]
    assert r.divergences <= 3
    assert 0 < r.p_dic < 30 and np.isfinite(r.dic)


def test_posterior_tracks_the_likelihood_when_data_are_many():
    """With 400 trials per participant the posterior mean is within a few ML standard errors of the ML fit
    (Bernstein-von Mises); the weak group prior barely shrinks it."""
    from noisecraft.ddm import fit

    truth = {0: (0.9, 1.4, 0.3), 1: (1.4, 1.8, 0.25)}
    df = _panel(400, truth, seed=7)
    r = B.bayes(df, SPEC, draws=100, warmup=100, chains=1, seed=2)
    for j, (label, sub) in enumerate(df.groupby("subj_idx")):
        ml = fit(sub, spec=SPEC)
        post = r.theta[:, :, j, :].reshape(-1, 3)
        for k, name in enumerate(("v", "a", "t0")):
            se = ml.se[ml.names.index(name)]
            assert abs(post[:, k].mean() - ml.params[name]) < 3 * se, (label, name)
            assert 0.5 < post[:, k].std() / se < 1.6, (label, name)


def test_diagnostics_flag_chains_that_disagree():
    rng = np.random.default_rng(0)
    same = rng.standard_normal((2, 500))
    apart = same + np.array([[0.0], [1.0]])
    assert B._row("x", "group", None, same)["r_hat"] < 1.01
    assert B._row("x", "group", None, apart)["r_hat"] > 1.1
    assert B._row("x", "group", None, same)["ess_bulk"] > 600  # iid draws: ESS ~ 1000
    sticky = np.cumsum(rng.standard_normal((2, 500)), axis=1)
    assert B._row("x", "group", None, sticky)["ess_bulk"] < 50


def test_queries_predictive_and_plot(posterior, tmp_path):
    r = posterior
    assert r.prob_greater("a", "t0") == 1.0
    assert 0.0 <= r.prob_greater("v", 1.2) <= 1.0
    with pytest.raises(ValueError, match="no entry 'b'"):
        r.draws("b")
    pred = r.predictive(n_draws=5, seed=0)
    assert len(pred) == 5 * 4 * 100 and set(pred.columns) == {"draw", "subj_idx", "cell", "rt", "response"}
    # predictive accuracy and median RT near the data's (the model fits simulated DDM data)
    data = _panel(100)
    assert pred["response"].mean() == pytest.approx(data["response"].mean(), abs=0.05)
    assert pred["rt"].median() == pytest.approx(data["rt"].median(), rel=0.1)
    png = r.plot_predictive(tmp_path / "pp.png", n_draws=5)
    assert png.stat().st_size > 5000
    g = r.group_table()
    assert list(g["name"]) == ["v", "a", "t0", "v_tau", "a_tau", "t0_tau"]


def test_multifactor_spec_and_group_only_slopes():
    """Cavanagh's regression model: a per-trial affine in theta per conflict level, slopes group-only."""
    df = load_cavanagh()
    df = df[df["subj_idx"].isin([0, 1, 2])]
    _, entries = _group(df, "v ~ stim, a ~ affine(theta)*conf, t0=shared, z=0.5")
    assert [e.name for e in entries if not e.varying] == ["a_slope[HC]", "a_slope[LC]"]
    assert [e.kind for e in entries][:3] == ["level"] * 3
    # HDDM's own form, a ~ theta:C(conf): one intercept that varies by participant, two group-only slopes
    _, entries = _group(df, "v ~ stim, a ~ affine(theta):conf, t0=shared, z=0.5")
    assert [(e.name, e.varying) for e in entries if e.name.startswith("a")] == [
        ("a_intercept", True), ("a_slope[HC]", False), ("a_slope[LC]", False)]


@pytest.mark.parametrize(
    "change, kwargs, match",
    [
        (lambda d: d[d.subj_idx == 0], {}, "1 participant"),
        (lambda d: d, {"by": "subject"}, "by='subject' is not a column"),
        (lambda d: d.assign(subj_idx=d.subj_idx.where(d.index != 3)), {}, "missing values"),
        (lambda d: d, {"priors": {"b": ("log", 1, 1, 1)}}, "unknown parameter"),
        (lambda d: d, {"draws": 0}, "draws=0"),
        (lambda d: d, {"target_accept": 1.5}, "target_accept"),
        (lambda d: d, {"group_only": ["q"]}, "group_only names"),
        (lambda d: d, {"rt_colum": "rt"}, "unknown option"),
        (lambda d: d.assign(rt=d.rt.where(~((d.subj_idx == 2) & (d.index % 50 == 0)))), {}, "subj_idx=2"),
    ],
)
def test_bad_input_is_named_before_any_sampling(change, kwargs, match, monkeypatch):
    monkeypatch.setattr(B, "_sample", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(ValueError, match=match):
        B.bayes(change(_panel(40)), SPEC, **kwargs)


def test_cli_writes_summary_draws_and_predictive_plot(tmp_path):
    from typer.testing import CliRunner

    from noisecraft.cli.ddm import app

    csv = tmp_path / "trials.csv"
    _panel(60, {0: (1.0, 1.4, 0.3), 1: (1.5, 1.6, 0.3)}).to_csv(csv, index=False)
    out = tmp_path / "bayes"
    r = CliRunner().invoke(app, ["bayes", str(csv), "--spec", SPEC, "--draws", "20", "--warmup", "20",
                                 "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "max R-hat" in r.output and "divergence" in r.output and "DIC" in r.output
    summary = pd.read_csv(out / "summary.csv")
    assert {"name", "level", "r_hat", "ess_bulk"} <= set(summary.columns) and len(summary) == 3 + 3 + 6
    draws = pd.read_csv(out / "draws.csv")
    assert len(draws) == 2 * 20 and {"chain", "draw", "v", "a", "t0", "v_tau", "loglik"} <= set(draws.columns)
    assert (out / "predictive.png").stat().st_size > 5000
    # bad input: named, nothing written
    r = CliRunner().invoke(app, ["bayes", str(csv), "--by", "subject", "--out", str(tmp_path / "no")])
    assert r.exit_code != 0 and "by='subject' is not a column" in r.output
    assert not (tmp_path / "no").exists()


def test_auto_centres_the_entries_the_data_pin_and_not_the_others():
    """Centred where median ML se < the spread of participants net of that noise, non-centred elsewhere."""
    rng = np.random.default_rng(0)
    vary = np.array([0, 1, 2])
    u = np.column_stack([rng.normal(1.0, 0.5, 20), rng.normal(0.4, 0.02, 20), rng.normal(-1.2, 0.2, 20)])
    se = np.column_stack([np.full(20, 0.1), np.full(20, 0.1), np.full(20, np.inf)])
    assert B._centring(u, se, vary, "auto").tolist() == [True, False, False]
    assert B._centring(u, se, vary, "centred").all() and not B._centring(u, se, vary, "non-centred").any()


def test_many_trials_are_sampled_centred_few_non_centred():
    """End to end on the rule: Cavanagh's participants (about 285 trials each) pin every entry; 40 trials from
    identical participants pin none; with 4 participants nothing is centred."""
    from noisecraft.ddm.bayes import _centring, _ml

    for df, want in ((load_cavanagh().query("subj_idx < 10"), [True] * 3),
                     (_panel(40, {j: (1.0, 1.5, 0.3) for j in range(10)}), [False] * 3),
                     (load_cavanagh().query("subj_idx < 4"), [False] * 3)):  # too few participants
        group, entries = _group(df)
        u, se = _ml(group, entries, 0)
        assert _centring(u, se, np.arange(3), "auto").tolist() == want
