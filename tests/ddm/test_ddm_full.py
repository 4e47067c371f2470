"""The full Ratcliff model's fast path (the likelihood on a grid of decision times, analytic partials) against its mathematics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from noisecraft.ddm import fit, logpdf, negloglik, prepare, simulate
from noisecraft.ddm.density import logpdf_and_grad
from noisecraft.ddm.fit import _Problem
from noisecraft.ddm.grid import DecisionGrid
from noisecraft.ddm.reference import logpdf_quadrature
from noisecraft.ddm.spec import ModelSpec

# v, a, z, t0, sv, sz, st0
CASES = [
    (1.5, 1.2, 0.45, 0.3, 0.8, 0.2, 0.15),
    (-0.5, 2.0, 0.6, 0.2, 1.5, 0.5, 0.3),
    (1.0, 1.5, 0.5, 0.1, 0.0, 0.6, 0.4),
]
RTS = np.array([0.12, 0.35, 0.5, 2.0])


def _brute(rt: float, resp: int, v, a, z, t0, sv, sz, st0) -> float:
    """Density by adaptive quadrature of the sv density over w ~ U(z +- sz/2) and tau ~ U(0, st0)."""
    return float(np.exp(logpdf_quadrature(rt, resp, v, a, z, t0, sv, sz, st0)))


def _grid(rt, resp, cells, lapse_p=0.0, lapse_density=0.0, s=1.0, **kw):
    """Per-trial log density from a DecisionGrid over trials in cells; cells: per-cell values (v, a, z, t0, sv, sz, st0)."""
    rt = np.atleast_1d(np.asarray(rt, float))
    cond = kw.pop("cond", np.zeros(rt.size, int))
    cells = np.atleast_2d(cells)
    vals = {k: cells[:, i].astype(float) for i, k in enumerate(("v", "a", "z", "t0", "sv", "sz", "st0"))}
    grid = DecisionGrid(rt, np.atleast_1d(resp) == 1, cond, len(cells), **kw)
    n = rt.size
    return grid.loglik_grad(vals, np.full(n, lapse_p), np.broadcast_to(lapse_density, (n,)), s=s)


# the RT layer (equation (2) of noisecraft.ddm.grid) forced on for every group, and off
LAYER = pytest.mark.parametrize("layer_min", [0, 10**9], ids=["rt-layer", "windows"])


@LAYER
@pytest.mark.parametrize("case", CASES)
def test_grid_density_matches_brute_force_integration(case, layer_min):
    """The grid's densities agree with adaptive quadrature of the model to 2e-5, as the reference logpdf does: both
    average over the start point by 8-node Gauss-Legendre, the error left where a wide sz meets decision times near 0.
    With 32 start-point nodes what is left of the grid's own error (log g interpolated over decision time, Gauss-
    Legendre over panels) is below 1e-7."""
    rts = RTS[RTS > case[3]]
    data = np.concatenate([rts, [case[3] + 3.0]])  # the grid spans the slowest RT of each response
    for resp in (0, 1):
        brute = np.log([_brute(t, resp, *case) for t in rts])
        assert np.max(np.abs(logpdf(rts, resp, *case) - brute)) < 2e-5
        ll = _grid(data, np.full(data.size, resp), case, layer_min=layer_min)[0][:-1]
        assert np.max(np.abs(ll - brute)) < 2e-5
        ll = _grid(data, np.full(data.size, resp), case, n_z=32, layer_min=layer_min)[0][:-1]
        assert np.max(np.abs(ll - brute)) < 1e-7


@pytest.mark.parametrize("case", [(1.0, 0.77, 0.69, 0.25, 0.8, 0.49, 0.3), (2.0, 0.6, 0.3, 0.2, 1.0, 0.5, 0.4)])
def test_logpdf_window_with_sv_resolves_a_start_point_near_a_boundary(case):
    """With sv and st0, logpdf integrates the st0 window over decision times. Where a start point lies within 0.05 of
    a boundary, g rises to a sharp peak near s = 0 that one Gauss-Legendre rule over the window missed (1.5e-2 in
    log density); the graded composite rule stays within 1e-6 of adaptive quadrature."""
    rts = case[3] + np.array([0.01, 0.03, 0.07, 0.15, 0.3, 0.45, 0.75, 1.25])
    for resp in (0, 1):
        brute = np.log([_brute(t, resp, *case) for t in rts])
        assert np.max(np.abs(logpdf(rts, resp, *case) - brute)) < 1e-6, resp


@LAYER
def test_grid_matches_logpdf_over_random_models_and_converges(layer_min):
    """Without sv, logpdf is exact (CDF differences); the grid matches it on random models and data sets, at
    plausible t0 and with t0 just below the fastest RT; a finer grid moves nothing measurable."""
    rng = np.random.default_rng(0)
    for i in range(12):
        z = rng.uniform(0.3, 0.7)
        case = [rng.uniform(-3, 3), rng.uniform(0.6, 2.5), z, rng.uniform(0.1, 0.4), 0.0,
                rng.uniform(0, min(0.5, 2 * min(z, 1 - z) - 0.02)), rng.choice([0.0, rng.uniform(0.02, 0.4)])]
        df = simulate(400, *case[:4], sv=0.0, sz=case[5], st0=case[6], seed=i)
        rt, resp = df.rt.to_numpy(), df.response.to_numpy()
        for t0 in (case[3] * 0.95, rt.min() - 0.02):
            model = [*case[:3], t0, *case[4:]]
            ll = _grid(rt, resp, model, layer_min=layer_min)[0]
            assert np.max(np.abs(ll - logpdf(rt, resp, *model))) < 2e-5, (model, i)
            fine = _grid(rt, resp, model, n_panels=96, order=8, n_quad=16, layer_min=layer_min)[0]
            assert np.max(np.abs(ll - fine)) < 2e-5


@LAYER
def test_grid_keeps_relative_precision_far_below_the_mode(layer_min):
    """Trials where the density is e^-10 to e^-50 and below (t0 just below the fastest RT at a poor start) keep finite log
    densities close to the exact ones: log g, not g, is interpolated."""
    case = [1.3, 1.2, 0.5, 0.0, 0.0, 0.1, 0.05]
    df = simulate(300, 1.3, 1.2, 0.5, 0.3, sv=0.0, sz=0.1, st0=0.05, seed=3)
    rt, resp = df.rt.to_numpy(), df.response.to_numpy()
    case[3] = rt.min() - 0.0005
    ll = _grid(rt, resp, case, layer_min=layer_min)[0]
    exact = logpdf(rt, resp, *case)
    assert exact.min() < -50  # the fastest trials are very unlikely at this t0
    assert np.all(np.isfinite(ll))
    far = exact < -10
    assert np.max(np.abs(ll - exact)[far] / np.abs(exact[far])) < 0.01
    assert np.max(np.abs(ll - exact)[~far]) < 1e-5


@LAYER
@pytest.mark.parametrize("s", [1.0, 0.1])
def test_grid_gradient_matches_finite_differences(s, layer_min):
    """Two cells, one with a window (st0 > 0) and one without, lapse mixed in: every per-cell partial of the summed
    log-likelihood against central differences of the same grid objective."""
    cells = np.array([[1.5, 1.2, 0.45, 0.3, 0.8, 0.2, 0.15], [-0.5, 2.0, 0.6, 0.2, 1.5, 0.5, 0.0]])
    cells[:, [0, 1, 4]] *= s
    parts = [simulate(150, *(c[:4] / [s, s, 1, 1]), sv=c[4] / s, sz=c[5], st0=c[6], seed=k) for k, c in enumerate(cells)]
    rt = np.concatenate([p.rt for p in parts])
    resp = np.concatenate([p.response for p in parts])
    cond = np.repeat([0, 1], 150)
    lapse = {"lapse_p": 0.03, "lapse_density": 0.25, "s": s, "cond": cond, "layer_min": layer_min}
    total = lambda c, **kw: float(np.sum(_grid(rt, resp, c, **{**lapse, **kw})[0]))
    _, g = _grid(rt, resp, cells, **lapse)
    for i, k in enumerate(("v", "a", "z", "t0", "sv", "sz", "st0")):
        for cell in (0, 1):
            if k == "st0" and cell == 1:
                continue  # st0 = 0 sits on its bound
            h = 1e-6 * max(1.0, abs(cells[cell, i]))
            up, dn = cells.copy(), cells.copy()
            up[cell, i] += h
            dn[cell, i] -= h
            fd = (total(up) - total(dn)) / (2 * h)
            assert abs(g[k][cell] - fd) < 1e-5 * max(1.0, abs(fd)), (k, cell, g[k][cell], fd)
    fd = (total(cells, lapse_p=0.03 + 1e-7) - total(cells, lapse_p=0.03 - 1e-7)) / 2e-7
    assert abs(g["lapse"].sum() - fd) < 1e-5 * max(1.0, abs(fd))


def test_rt_layer_carries_most_trials_of_a_large_data_set_and_agrees_with_their_windows():
    """With the defaults a group of 2,000 trials gets panels over its RTs (equation (2) of noisecraft.ddm.grid); on
    random full models (with and without sv, st0 from 0 to wide, t0 plausible or just below the fastest RT) most
    trials take f from them, and the log densities and every partial agree with each trial's own window."""
    rng = np.random.default_rng(4)
    shares = []
    for i in range(8):
        z = rng.uniform(0.3, 0.7)
        case = [rng.uniform(-3, 3), rng.uniform(0.6, 2.5), z, rng.uniform(0.1, 0.4), [0.0, 1.0][i % 2],
                rng.uniform(0, min(0.5, 2 * min(z, 1 - z) - 0.02)), [0.0, 0.02, 0.15, 0.35][i % 4]]
        df = simulate(2000, *case[:4], sv=case[4], sz=case[5], st0=case[6], seed=10 + i)
        rt, resp, cond = df.rt.to_numpy(), df.response.to_numpy(), np.zeros(len(df), int)
        layered = DecisionGrid(rt, resp == 1, cond, 1)
        windows = DecisionGrid(rt, resp == 1, cond, 1, layer_min=10**9)
        assert layered.layer is not None and windows.layer is None
        for t0 in (case[3] * 0.95, rt.min() - 0.01):
            vals = {k: np.array([x]) for k, x in zip(("v", "a", "z", "t0", "sv", "sz", "st0"), [*case[:3], t0, *case[4:]])}
            args = (vals, np.full(rt.size, 0.02), np.full(rt.size, 0.3))
            (ll, g), (ll_w, g_w) = layered.loglik_grad(*args), windows.loglik_grad(*args)
            assert np.max(np.abs(ll - ll_w)) < 1e-6, (i, t0)
            for k in g:
                assert abs(g[k][0] - g_w[k][0]) < 1e-6 * max(1.0, abs(g_w[k][0])), (i, t0, k)
            layer = layered.layer
            shares.append(layer.far(vals["t0"][layer.cell], vals["st0"][layer.cell])[0].mean())
    assert np.median(shares) > 0.8 and min(shares) > 0.5, shares


def test_rt_layer_small_groups_keep_their_windows_and_underflow_gives_the_lapse():
    """A group with fewer distinct rows than twice the RT panels' nodes is not layered. At an absurd point where f
    underflows at slow RTs, a layered trial is as unlikely as by its own window: with a lapse its log-likelihood is
    the lapse's log(p c), finite, as the windows give."""
    df = simulate(3000, 2.5, 1.5, 0.5, 0.3, sz=0.2, st0=0.1, seed=5)
    rt, resp, cond = df.rt.to_numpy(), df.response.to_numpy(), np.zeros(len(df), int)
    grid = DecisionGrid(rt, resp == 1, cond, 1)
    small = np.bincount(grid.group) < 2 * (48 * 5 + 1)
    assert grid.layer is not None and small.any() and not small.all()
    assert not np.isin(np.flatnonzero(small), grid.layer.group).any()
    vals = {k: np.array([x]) for k, x in zip(("v", "a", "z", "t0", "sv", "sz", "st0"), [60.0, 3.0, 0.5, 0.25, 0.0, 0.2, 0.1])}
    args = (vals, np.full(rt.size, 0.05), np.full(rt.size, 0.4))
    ll, _ = grid.loglik_grad(*args)
    ll_w, _ = DecisionGrid(rt, resp == 1, cond, 1, layer_min=10**9).loglik_grad(*args)
    lapse_only = np.log(0.05 * 0.4)
    assert np.all(np.isfinite(ll)) and np.sum(np.isclose(ll_w, lapse_only)) > 100
    np.testing.assert_allclose(ll, ll_w, atol=1e-6)


def test_grid_sz_zero_uses_one_start_point_with_a_zero_sz_partial():
    case = (1.5, 1.2, 0.45, 0.3, 0.8, 0.0, 0.15)
    df = simulate(200, 1.5, 1.2, 0.45, 0.3, sv=0.8, st0=0.15, seed=2)
    rt, resp = df.rt.to_numpy(), df.response.to_numpy()
    ll, g = _grid(rt, resp, case)
    assert np.max(np.abs(ll - logpdf(rt, resp, *case))) < 1e-5
    assert g["sz"][0] == 0.0


SPEC7 = "v=shared, z=shared, sv=shared, sz=shared, st0=shared"
TRUE7 = {"v": 1.5, "a": 1.2, "z": 0.45, "t0": 0.3, "sv": 0.8, "sz": 0.4, "st0": 0.2}


def test_full_model_recovery():
    df = simulate(800, *TRUE7.values(), seed=7)
    res = fit(df, spec=SPEC7)
    assert res.converged
    se = dict(zip(res.names, res.se))
    for k, x in TRUE7.items():
        # 800 trials: each estimate within 4 Hessian standard errors of the truth (a 4-sigma
        # miss in any of 7 parameters has probability < 5e-4 if the SEs are right); sz, badly
        # identified at this size (Ratcliff & Tuerlinckx 2002), may sit on its bound without an
        # SE: then only |error| < 0.4 (the whole truth) is asked of it.
        tol = 4 * se[k] if np.isfinite(se[k]) else 0.4
        assert abs(res.params[k] - x) < tol, (k, res.params[k], x, se[k])


def test_full_fit_is_an_optimum_of_the_exact_likelihood():
    # The old path minimised the exact logpdf with numerical gradients: from the new optimum,
    # that objective's own L-BFGS-B gains less than 1e-4 in NLL.
    df = simulate(300, *TRUE7.values(), seed=3)
    res = fit(df, spec=SPEC7, se=False)
    prob = _Problem(prepare(df, "rt", "response"), ModelSpec.load(SPEC7), res.lapse_range)
    exact = lambda th: -float(np.sum(prob.loglik_trials(th)))
    assert abs(exact(res.theta) - res.nll) < 1e-9  # the reported NLL is the exact one
    pol = minimize(exact, res.theta, method="L-BFGS-B", bounds=list(zip(prob.design.lower, prob.design.upper)),
                   options={"maxiter": 10})
    assert res.nll <= pol.fun + 1e-4


def test_full_fit_is_tight_on_its_objective():
    """Where sz is identified (a = 2, sz = 0.4), sv, sz and st0 trade off: L-BFGS-B at the tightest tolerance gains
    nothing measurable on the fit's objective (the grid likelihood) from the returned optimum."""
    df = simulate(1000, 2.0, 2.0, 0.5, 0.3, sv=0.5, sz=0.4, st0=0.2, seed=5)
    res = fit(df, spec=SPEC7, se=False)
    assert res.params["sz"] > 0.2  # away from the bound, where every node of the rule is needed
    prob = _Problem(prepare(df, "rt", "response"), ModelSpec.load(SPEC7), res.lapse_range)
    f0 = prob.nll(res.theta)
    pol = minimize(prob.nll_grad, res.theta, jac=True, method="L-BFGS-B",
                   bounds=list(zip(prob.design.lower, prob.design.upper)),
                   options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-8})
    assert f0 - pol.fun < 1e-6


def test_full_fit_reaches_the_optimum_where_a_coarse_rule_had_its_own():
    """On these data a coarse quadrature had an optimum of its own (sz on its bound, 8 below the real optimum on that
    rule, 20 above it in truth), and a fit ranked on it returned 399.6 against the truth's 371.6. The fit's exact NLL
    cannot exceed the truth's, and its starts agree."""
    spec = "v=shared, z=shared, sz=shared, st0=shared"  # the full model without sv
    truth = {"v": 1.5, "a": 1.2, "z": 0.45, "t0": 0.3, "sz": 0.3, "st0": 0.15}
    df = simulate(2000, truth["v"], truth["a"], truth["z"], truth["t0"], sv=0.0, sz=truth["sz"], st0=truth["st0"],
                  seed=1)
    res = fit(df, spec=spec, se=False)
    assert res.nll <= negloglik(prepare(df), ModelSpec.parse(spec), truth)
    assert res.converged


def test_fitting_objective_is_continuous_where_the_start_point_range_leaves_0_1():
    """Past z + sz/2 = 1 (less a margin) the objective shrinks sz to fit and adds a quadratic penalty: it is
    continuous across the edge and its gradient there is the derivative of what it returns (a constant penalty had
    stalled L-BFGS-B's line search 0.053 above the optimum on 300 trials)."""
    df = simulate(300, *TRUE7.values(), seed=3)
    prob = _Problem(prepare(df, "rt", "response"), ModelSpec.load(SPEC7), (0.0, float(df.rt.max())))
    theta = np.array([TRUE7[k] for k in prob.design.names])
    i_z, i_sz = prob.design.names.index("z"), prob.design.names.index("sz")
    theta[i_z] = 0.7
    edge = 2 * (0.3 - 2e-3)  # the largest sz that fits at z = 0.7
    at = lambda sz: prob.nll_grad(np.where(np.arange(theta.size) == i_sz, sz, theta))
    assert abs(at(edge + 1e-9)[0] - at(edge - 1e-9)[0]) < 1e-5
    for sz in (edge + 0.01, edge + 0.05):
        f, g = at(sz)
        assert f < 1e9  # not the constant penalty
        for i in (i_z, i_sz):
            e = np.zeros(theta.size)
            e[i] = 1e-7
            th = np.where(np.arange(theta.size) == i_sz, sz, theta)
            fd = (prob.nll_grad(th + e)[0] - prob.nll_grad(th - e)[0]) / 2e-7
            assert abs(g[i] - fd) < 1e-4 * max(1.0, abs(fd)), (sz, i, g[i], fd)
    assert at(edge + 0.05)[0] > at(edge + 0.01)[0] > at(edge)[0]


def test_a_checking_start_stops_once_it_agrees_with_the_best():
    """A full-model start after the first only tests agreement: it stops at the first point below the best start's
    NLL plus a margin (fewer evaluations, value below the target); a target it cannot reach lets it run to the
    minimum as usual."""
    from noisecraft.ddm.fit import _run_until_agreement

    A = np.diag([1.0, 30.0, 300.0])
    calls = []
    fun = lambda x: (calls.append(1), (0.5 * x @ A @ x + 1.0, A @ x))[1]
    opts = {"maxiter": 1000, "ftol": 1e-11, "gtol": 1e-6}
    bounds = [(-5, 5)] * 3
    full = _run_until_agreement(fun, np.array([3.0, -2.0, 1.0]), bounds, opts, target=0.0)
    n_full = len(calls)
    assert full.fun == pytest.approx(1.0, abs=1e-9)
    calls.clear()
    early = _run_until_agreement(fun, np.array([3.0, -2.0, 1.0]), bounds, opts, target=1.5)
    assert early.fun < 1.5 and len(calls) < n_full
    assert fun(early.x)[0] == pytest.approx(early.fun)


def test_full_fit_checks_itself_against_the_nested_model_not_a_design(monkeypatch):
    """The full model's global check is the nested model's optimum (sz = st0 = 0), a point of the full model: two
    agreeing starts that end above it are not converged. The Sobol design, costly on the grid, is evaluated only
    when a start needs it (more than three starts)."""
    import sys

    from scipy.optimize import OptimizeResult

    FIT = sys.modules["noisecraft.ddm.fit"]
    df = simulate(400, 1.5, 1.2, 0.45, 0.3, sv=0.0, sz=0.3, st0=0.15, seed=2)
    spec = "v=shared, z=shared, sz=shared, st0=shared"
    designs = []
    real_sobol = FIT._sobol_points
    monkeypatch.setattr(FIT, "_sobol_points", lambda prob, *a, **k: (designs.append(prob.basic), real_sobol(prob, *a, **k))[1])
    res = fit(df, spec=spec, se=False)
    assert res.converged and not any(basic is False for basic in designs)
    designs.clear()
    fit(df, spec=spec, se=False, n_starts=4)
    assert False in designs
    # both starts stay where they begin, at the wide start (far above the nested optimum): they agree, but the check
    # refuses them
    prob = _Problem(prepare(df), ModelSpec.parse(spec), (0.0, float(df.rt.max())))
    starts, nested = FIT._basic_starts(prob, 0)
    assert prob.nll(starts[1]) > prob.nll(nested) + 1.0
    stay = lambda fun, x0, *a, **k: OptimizeResult(x=x0, fun=float(fun(x0)[0]), success=True)
    monkeypatch.setattr(FIT, "_basic_starts", lambda prob, seed: ([starts[1], starts[1].copy()], nested))
    monkeypatch.setattr(FIT, "minimize", lambda fun, x0, **k: stay(fun, x0))
    monkeypatch.setattr(FIT, "_run_until_agreement", stay)
    stuck = fit(df, spec=spec, se=False)
    assert stuck.starts[0] == pytest.approx(stuck.starts[1]) and stuck.nll > res.nll + 1.0
    assert not stuck.converged


@pytest.mark.parametrize("basic", [True, False])
def test_trials_with_equal_rts_are_evaluated_once_and_counted(basic):
    """Recorded RTs repeat (to the ms): the likelihood forms each distinct (cell, response, RT) row once and weights its
    partials by its count. Per-trial values and per-cell partial sums equal those of every trial evaluated apart."""
    from noisecraft.ddm.fit import CellLikelihood

    df = simulate(600, 1.2, 1.1, 0.45, 0.25, sv=0.5, sz=0.0 if basic else 0.3, st0=0.0 if basic else 0.1, seed=4)
    rt = np.round(df.rt.to_numpy(), 2)  # recorded to 10 ms, as Cavanagh's data
    upper = df.response.to_numpy() == 1
    cell = (np.arange(rt.size) % 2).astype(int)
    lapse_c = np.full(rt.size, 0.2)
    vals = {"v": np.array([1.2, 0.8]), "a": np.array([1.1, 1.3]), "z": np.array([0.45, 0.5]),
            "t0": np.array([0.2, 0.22]), "sv": np.array([0.5, 0.3]), "sz": np.array([0.0, 0.0] if basic else [0.3, 0.2]),
            "st0": np.array([0.0, 0.0] if basic else [0.08, 0.12]), "lapse": np.array([0.02, 0.05])}
    lik = CellLikelihood(rt, upper, cell, 2, lapse_c, 1.0, basic)
    assert lik.rt.size < rt.size / 2  # the duplicates were merged
    ll, g = lik(vals)
    if basic:
        tv = {p: vals[p][cell] for p in ("v", "a", "z", "t0", "sv")}
        ll_ref, g_ref = logpdf_and_grad(rt, upper, tv["v"], tv["a"], tv["z"], tv["t0"], tv["sv"],
                                        lapse_p=vals["lapse"][cell], lapse_density=lapse_c)
        g_ref = {p: np.bincount(cell, weights=x, minlength=2) for p, x in g_ref.items()}
    else:
        ll_ref, g_ref = DecisionGrid(rt, upper, cell, 2).loglik_grad(vals, vals["lapse"][cell], lapse_c)
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-12, atol=1e-12)
    assert set(g) == set(g_ref)
    for p in g:
        np.testing.assert_allclose(g[p], g_ref[p], rtol=1e-9, atol=1e-9, err_msg=p)


def test_quadrature_reference_reduces_to_the_closed_form_without_sz_and_st0():
    """The reference density's branches without sz or st0 are the series itself (no integral left to take)."""
    rts = np.array([0.25, 0.4, 0.9, 1.6])
    for resp in (0, 1):
        ref = logpdf_quadrature(rts, resp, 1.2, 1.4, 0.4, 0.2, sv=0.7)
        np.testing.assert_allclose(ref, logpdf(rts, resp, 1.2, 1.4, 0.4, 0.2, 0.7), atol=1e-12)
        ref = logpdf_quadrature(rts, resp, 0.12, 0.14, 0.4, 0.2, sv=0.07, st0=0.1, s=0.1)  # Ratcliff's s = 0.1
        np.testing.assert_allclose(ref, logpdf(rts, resp, 1.2, 1.4, 0.4, 0.2, 0.7, 0.0, 0.1), atol=1e-6)


@pytest.mark.parametrize("case, resp, d", [
    ((2.7745, 0.7373, 0.5, 0.3232, 0.4304, 0.966, 0.147), 0, [0.1482, 0.15, 0.16]),  # a window starting near s = 0
    ((1.0, 0.7, 0.5, 0.2, 0.0, 0.96, 0.0), 0, [0.005, 0.01, 0.02, 0.04]),  # sz alone, small decision times
    ((1.0, 0.7, 0.5, 0.2, 0.6, 0.96, 0.0), 1, [0.005, 0.01, 0.02, 0.04]),
])
def test_logpdf_start_point_rule_follows_g_where_it_is_steep_across_the_range(case, resp, d):
    """With an edge of the start-point range within 0.02 of a boundary and decision times of a few ms, g changes by
    orders of magnitude across the range: one 8-node rule was off by 5e-4 to 1.4e-3 in log density; the points where
    log g spans more than 10 over its nodes are taken again by 4 panels, within 2e-6 of adaptive quadrature."""
    rt = case[3] + np.array(d)
    assert np.max(np.abs(logpdf(rt, resp, *case) - logpdf_quadrature(rt, resp, *case))) < 2e-6


def test_exact_loglik_of_a_fit_is_formed_once_per_distinct_rt_and_equals_every_trial_apart():
    """The reported NLL (`logpdf` per trial) is evaluated once per distinct (cell, response, RT) row: the same values
    as every trial evaluated apart."""
    from noisecraft.ddm.fit import _trial_loglik

    df = simulate(500, 1.2, 1.1, 0.45, 0.25, sv=0.5, sz=0.3, st0=0.1, seed=6)
    df["rt"] = df["rt"].round(2)
    spec = ModelSpec.parse("v=shared, z=shared, sv=shared, sz=shared, st0=shared, lapse=shared")
    prob = _Problem(prepare(df), spec, (0.0, 3.0))
    assert prob.likelihood.rt.size < prob.data.n / 2
    theta = np.array([{"v": 1.1, "a": 1.2, "z": 0.47, "t0": 0.22, "sv": 0.4, "sz": 0.25, "st0": 0.12,
                       "lapse": 0.03}[name] for name in prob.design.names])
    vals = prob.design.values(theta)
    tv = {p: vals[p][prob.data.cond] for p in vals}
    apart = _trial_loglik(prob.data.rt, prob.data.response, tv, 1.0, prob.lapse_c)
    np.testing.assert_allclose(prob.loglik_trials(theta), apart, rtol=1e-13, atol=1e-13)
