"""Differential privacy of a tabular fit: the accountant against Opacus' own and against the exact Gaussian
mechanism, the noise search, private preprocessing, a record that refuses to under-claim, a DP fit end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.model import TabularConfig, TabularDiffusion
from noisecraft.tabular.privacy import (
    DPConfig,
    PrivacyRecord,
    epsilon_of,
    noise_for_epsilon,
    private_preprocessing,
    private_quantiles,
    rdp_orders,
)
from noisecraft.tabular.schema import infer_schema


@pytest.mark.parametrize("kind", ["rdp", "prv"])
@pytest.mark.parametrize(("sigma", "q", "steps"), [(1.1, 0.01, 500), (0.8, 0.05, 200), (4.0, 1.0, 3)])
def test_accountant_matches_opacus_stepped(kind, sigma, q, steps):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    theirs = acc.get_epsilon(1e-5, alphas=rdp_orders()) if kind == "rdp" else acc.get_epsilon(1e-5)
    assert epsilon_of([(sigma, q, steps)], 1e-5, kind) == pytest.approx(theirs, rel=1e-6)
    if kind == "rdp":  # the added large orders only tighten Opacus' default bound
        assert epsilon_of([(sigma, q, steps)], 1e-5, kind) <= acc.get_epsilon(1e-5) + 1e-9


def _exact_gaussian_epsilon(z: float, delta: float) -> float:
    """epsilon of the Gaussian mechanism with noise multiplier z (std / L2 sensitivity) at delta, exactly:
    delta(eps) = Phi(1/(2z) - eps z) - e^eps Phi(-1/(2z) - eps z) (Balle & Wang 2018, thm. 8)."""
    def gap(eps):
        return norm.cdf(0.5 / z - eps * z) - math.exp(eps) * norm.cdf(-0.5 / z - eps * z) - delta
    return brentq(gap, 0.0, 100.0)


@pytest.mark.parametrize("z", [0.8, 2.0, 5.0])
def test_accountants_against_the_exact_gaussian_mechanism(z):
    exact = _exact_gaussian_epsilon(z, 1e-5)
    # PRV is numerically tight (Gopi et al. 2021); RDP is an upper bound
    assert epsilon_of([(z, 1.0, 1)], 1e-5, "prv") == pytest.approx(exact, rel=0.02, abs=0.01)
    rdp = epsilon_of([(z, 1.0, 1)], 1e-5, "rdp")
    assert exact <= rdp <= 1.5 * exact + 0.1


def test_noise_search_matches_opacus_and_is_the_smallest():
    from opacus.accountants.utils import get_noise_multiplier

    eps = 2.0
    ours = noise_for_epsilon([], 0.02, 300, eps, 1e-5, "rdp", tol=1e-4)
    theirs = get_noise_multiplier(target_epsilon=eps, target_delta=1e-5, sample_rate=0.02, steps=300,
                                  accountant="rdp", epsilon_tolerance=1e-3, alphas=rdp_orders())
    assert ours == pytest.approx(theirs, rel=5e-3)
    assert epsilon_of([(ours, 0.02, 300)], 1e-5) <= eps
    assert epsilon_of([(ours * (1 - 2e-3), 0.02, 300)], 1e-5) > eps
    # a prefix (the preprocessing) takes its share: more noise is needed for the same total
    prefix = [(5.0, 1.0, 1)]
    with_prefix = noise_for_epsilon(prefix, 0.02, 300, eps, 1e-5)
    assert with_prefix > ours
    assert epsilon_of([*prefix, (with_prefix, 0.02, 300)], 1e-5) <= eps


def _record(epsilon: float) -> dict:
    return {"epsilon": epsilon, "delta": 1e-5, "target_epsilon": 1.0, "accountant": "rdp", "max_grad_norm": 1.0,
            "mechanisms": [{"name": "DP-SGD", "noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 1000}],
            "preprocessing": {}}


def test_record_refuses_to_claim_less_than_spent():
    spent = epsilon_of([(1.0, 0.01, 1000)], 1e-5)
    assert PrivacyRecord.model_validate(_record(spent)).spent() == pytest.approx(spent)
    PrivacyRecord.model_validate(_record(spent * 1.5))  # over-claiming is allowed (it is still true)
    with pytest.raises(ValueError, match="claims epsilon .* but its mechanisms spend"):
        PrivacyRecord.model_validate(_record(0.5 * spent))


def test_private_quantiles_approach_the_empirical_ones_with_little_noise():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, 20000)
    q = np.asarray(private_quantiles(x, 0.0, 64.0, std=1e-3, rng=rng, n_quantiles=101))
    emp = np.quantile(x, np.linspace(0, 1, 101))
    # within one histogram bin (the asinh bins are at most ~0.5 wide here) away from the open top tail
    assert np.abs(q[1:-5] - emp[1:-5]).max() < 0.6
    # heavy noise: still a valid (non-decreasing, in-range) quantile list
    q = np.asarray(private_quantiles(x, 0.0, 64.0, std=200.0, rng=rng, n_quantiles=101))
    assert np.all(np.diff(q) >= 0) and q[0] >= 0.0 and q[-1] <= 64.0


def _table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    y = np.where(group == "a", -1.0, 2.0) + rng.normal(size=n)
    frame = pd.DataFrame({"group": group, "y": y, "age": rng.integers(18, 90, n)})
    frame.loc[0, "group"] = "unique-row"  # one row's category: partition selection must not release it
    return frame


def test_private_preprocessing_sources_and_selection():
    frame = _table()
    schema = infer_schema(frame)
    dp = DPConfig(epsilon=1.0)
    private, _, mechanisms, sources, delta_sel = private_preprocessing(frame, schema, dp, 1000)
    assert sources == {"group": "dp", "y": "dp", "age": "dp"}
    assert private.column("group").categories == ["a", "b"]  # "unique-row" stays private
    assert 0 < delta_sel < dp.delta and len(mechanisms) == 2
    lo, hi = private.column("age").min, private.column("age").max
    assert lo <= 18 and hi >= 64 and hi <= 128  # a power-of-two cover of the observed range
    public = infer_schema(frame.iloc[1:])
    public.column("y").min, public.column("y").max = -10.0, 10.0
    private, _, _, sources, delta_sel = private_preprocessing(frame, schema, dp, 1000, public=public)
    assert sources["group"] == "declared" and sources["y"] == "declared" and delta_sel == 0.0
    assert (private.column("y").min, private.column("y").max) == (-10.0, 10.0)


def test_private_range_spans_a_zero_inflated_column_and_ignores_a_lone_outlier():
    """Fertility's `work` (weeks worked: 0 in 45% of rows, else 1 ... 52): no integer falls in the grid's bins
    inside (0, 1), and a range grown only through contiguous bins from the zero bin stopped at [0, 1]."""
    rng = np.random.default_rng(1)
    n = 20_000
    work = np.where(rng.random(n) < 0.45, 0, rng.integers(1, 53, n))
    balance = np.where(rng.random(n) < 0.1, 0.0, rng.gamma(8.0, 100.0, n))  # zeros, then hundreds
    frame = pd.DataFrame({"work": work, "balance": balance})
    frame.loc[0, "balance"] = 3e9  # one far outlier: its bin holds one row, not enough to stretch the range
    private, transforms, *_ = private_preprocessing(frame, infer_schema(frame), DPConfig(epsilon=1.0), 1000)
    work_col, balance_col = private.column("work"), private.column("balance")
    assert (work_col.min, work_col.max) == (0, 64)
    assert balance_col.min == 0.0 and 2048 <= balance_col.max <= 4096
    # the transform then keeps the zero mass and the values above it
    z = transforms["work"].forward(np.array([0.0, 20.0, 52.0]))
    assert np.all(np.diff(z) > 0)


def test_dp_fit_end_to_end(tmp_path):
    frame = _table(3000)
    train = TrainConfig(max_steps=30, batch_size=200, lr=3e-3, warmup_steps=5, ema_decay=0.9, mixed_precision="no")
    model = TabularDiffusion(TabularConfig(width=32, depth=1, train=train, sample_steps=10))
    model.fit(frame, dp=DPConfig(epsilon=2.0, delta=1e-5), progress=False)
    rec = model.privacy
    assert rec is not None and rec.target_epsilon == 2.0
    assert rec.epsilon <= 2.0 and rec.epsilon == pytest.approx(2.0, rel=0.02)  # spends the budget, not more
    sgd = rec.mechanisms[-1]
    assert sgd.name == "DP-SGD" and sgd.steps == model.stats.steps == 30
    assert sgd.sample_rate == pytest.approx(200 / (len(frame) - rec.rows_dropped))
    # the record's epsilon is Opacus' own for the same mechanisms
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for m in rec.mechanisms:
        for _ in range(m.steps):
            acc.step(noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate)
    assert rec.epsilon == pytest.approx(acc.get_epsilon(rec.delta - rec.delta_selection, alphas=rdp_orders()), rel=1e-6)
    synth = model.sample(100, seed=0)
    assert set(synth["group"]) <= {"a", "b"} and len(synth) == 100
    model.save(tmp_path / "m")
    again = TabularDiffusion.load(tmp_path / "m")
    assert again.privacy == rec
    # a saved model whose record claims a smaller epsilon than it spent is refused
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["privacy"]["epsilon"] = 0.5
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="claims epsilon 0.5 but its mechanisms spend"):
        TabularDiffusion.load(tmp_path / "m")


def test_width_defaults_to_dp_width_under_dp_and_is_saved(tmp_path):
    """No width given: DP_WIDTH (64) with DP, WIDTH (256) without; the width used is in the saved config, so the
    model loads with it; a width given is kept under DP."""
    from noisecraft.tabular.model import DP_WIDTH, WIDTH

    frame = _table(600)
    train = TrainConfig(max_steps=3, batch_size=100, warmup_steps=1, mixed_precision="no")
    private = TabularDiffusion(TabularConfig(depth=1, train=train)).fit(frame, dp=DPConfig(epsilon=2.0),
                                                                       progress=False)
    plain = TabularDiffusion(TabularConfig(depth=1, train=train)).fit(frame, progress=False)
    given = TabularDiffusion(TabularConfig(width=16, depth=1, train=train)).fit(frame, dp=DPConfig(epsilon=2.0),
                                                                              progress=False)
    assert (private.config.width, plain.config.width, given.config.width) == (DP_WIDTH, WIDTH, 16) == (64, 256, 16)
    size = {m: sum(p.numel() for p in m.net.parameters()) for m in (private, plain)}
    assert size[private] < size[plain] / 8  # the hidden layers' weights scale with width^2
    private.save(tmp_path / "m")
    again = TabularDiffusion.load(tmp_path / "m")
    assert again.config.width == 64
    pd.testing.assert_frame_equal(again.sample(20, seed=1), private.sample(20, seed=1))


def test_a_time_budget_ends_the_default_dp_plan_early_and_does_not_replace_it():
    """With `minutes` and no `steps`, DP-SGD's noise is set for the default plan (4,000 steps, under the epoch
    cap), not for the epoch cap alone (4,688 steps here), and the time budget only stops it early, spending less."""
    frame = _table(4000)
    model = TabularDiffusion(TabularConfig(depth=1)).fit(frame, dp=DPConfig(epsilon=2.0), minutes=0.01,
                                                        progress=False)
    assert model.config.train.max_steps == 4000 < math.ceil(300 * 3999 / 256)
    assert model.stats.steps < 4000 and model.privacy.epsilon < 2.0


def test_the_default_dp_plan_grows_with_the_table_only_while_sigma_stays_below_the_knee():
    """DP_PLANS: a long table (small q) plans 12,000 steps, a short one keeps 4,000; each plan's sigma is the
    accountant's for that many steps, and the chosen one is the longest at sigma <= 1."""
    from noisecraft.tabular.model import DP_KNEE_SIGMA, DP_PLANS, dp_plan

    dp = DPConfig(epsilon=3.0)
    prefix = [(20.0, 1.0, 2)]
    sigmas = {t: noise_for_epsilon(prefix, 256 / 200_000, t, 3.0, 1e-5) for t in DP_PLANS}
    assert dp_plan(list(DP_PLANS), prefix, 256 / 200_000, dp, 1e-5) == (12_000, sigmas[12_000])
    assert sigmas[4000] < sigmas[12_000] <= DP_KNEE_SIGMA
    steps, sigma = dp_plan(list(DP_PLANS), prefix, 256 / 8_000, dp, 1e-5)
    assert steps == 4000 and sigma > DP_KNEE_SIGMA  # every plan is above the knee: the first
    # a long table through fit: the plan, its noise and the record agree (a time budget stops it early)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"g": rng.choice(["a", "b"], 200_000), "y": rng.normal(size=200_000)})
    model = TabularDiffusion(TabularConfig(depth=1)).fit(frame, dp=DPConfig(epsilon=3.0), minutes=0.01,
                                                        progress=False)
    assert model.config.train.max_steps == 12_000
    dpsgd = model.privacy.mechanisms[-1]
    planned = model.privacy.history[:-1] + [(dpsgd.noise_multiplier, dpsgd.sample_rate, 12_000)]
    delta = model.privacy.delta - model.privacy.delta_selection
    assert epsilon_of(planned, delta) == pytest.approx(3.0, rel=2e-3)
    # steps given are the plan, whatever the table
    given = TabularDiffusion(TabularConfig(depth=1)).fit(frame, dp=DPConfig(epsilon=3.0), steps=5, progress=False)
    assert given.config.train.max_steps == 5 and given.stats.steps == 5


def test_dp_config_errors():
    with pytest.raises(ValueError):
        DPConfig(epsilon=0.0)
    with pytest.raises(ValueError):
        DPConfig(epsilon=1.0, delta=1.5)
    with pytest.raises(ValueError, match="accountant must be"):
        epsilon_of([(1.0, 0.1, 10)], 1e-5, "moments")


def test_cli_fit_with_dp_and_eval_reports_epsilon(tmp_path):
    from typer.testing import CliRunner

    from noisecraft.cli import app

    data = tmp_path / "t.csv"
    _table(2000).to_csv(data, index=False)
    runner = CliRunner()
    model = tmp_path / "m"
    res = runner.invoke(app, ["tabular", "fit", str(data), "--out", str(model), "--steps", "10", "--width", "16",
                              "--depth", "1", "--dp-epsilon", "3", "--dp-delta", "1e-5"])
    assert res.exit_code == 0, res.output
    assert "privacy: (epsilon 3, delta 1e-05)-DP, rdp accountant; preprocessing dp" in res.output
    synth = tmp_path / "s.csv"
    res = runner.invoke(app, ["tabular", "sample", str(model), "--n", "400", "--out", str(synth), "--steps", "5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["tabular", "eval", str(data), str(synth), "--model", str(model), "--sensitive", "group"])
    assert res.exit_code == 0, res.output
    import re

    spent = re.search(r"differential privacy: epsilon ([0-9.]+) spent \(target 3\), delta 1e-05", res.output)
    assert spent and 2.9 < float(spent.group(1)) <= 3.0, res.output
    assert "membership AUC (DOMIAS)" in res.output and "attribute inference accuracy (group)" in res.output
    res = runner.invoke(app, ["tabular", "fit", str(data), "--out", str(tmp_path / "m2"), "--dp-epsilon", "0"])
    assert res.exit_code == 2 and "--dp-epsilon" in res.output
