"""Density, CDF and variability integrals of the DDM against their mathematics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from noisecraft.ddm import Lapse, cdf, logpdf, pdf, prob_upper, wiener_logpdf
from noisecraft.ddm import density as D

CASES = [
    # v, a, z, t0, sv, sz, st0
    (1.0, 1.5, 0.5, 0.2, 0.0, 0.0, 0.0),
    (-2.0, 0.8, 0.3, 0.1, 0.0, 0.0, 0.0),
    (3.0, 2.5, 0.7, 0.3, 1.0, 0.0, 0.0),
    (0.5, 1.0, 0.4, 0.2, 0.0, 0.2, 0.0),
    (0.5, 1.0, 0.4, 0.2, 0.0, 0.0, 0.3),
    (1.0, 1.2, 0.5, 0.2, 0.8, 0.3, 0.2),
]


def _mass(r: int, case, **kw) -> float:
    v, a, z, t0, sv, sz, st0 = case
    f = lambda t: float(pdf(t, r, v, a, z, t0, sv, sz, st0, **kw))
    kink = t0 + st0 if st0 > 0 else t0 + 0.5
    opts = {"epsabs": 1e-14, "epsrel": 1e-13, "limit": 400}
    return quad(f, t0, kink, **opts)[0] + quad(f, kink, np.inf, **opts)[0]


@pytest.mark.parametrize("case", CASES)
def test_density_integrates_to_one_over_both_boundaries(case):
    assert abs(_mass(0, case) + _mass(1, case) - 1.0) < 1e-8


@pytest.mark.parametrize("case", [c for c in CASES if c[4] == 0])
def test_upper_mass_matches_closed_form(case):
    v, a, z, *_, sv, sz, _st0 = case
    m = _mass(1, case)
    if sz == 0:
        closed = (1 - np.exp(-2 * v * a * z)) / (1 - np.exp(-2 * v * a))
    else:  # average of the closed form over z ~ U(z +- sz/2)
        closed = (
            quad(
                lambda w: (1 - np.exp(-2 * v * a * w)) / (1 - np.exp(-2 * v * a)),
                z - sz / 2,
                z + sz / 2,
            )[0]
            / sz
        )
    assert abs(m - closed) < 1e-9
    assert abs(float(prob_upper(v, a, z, sv, sz)) - closed) < 1e-9


def test_prob_upper_edge_cases():
    assert float(prob_upper(0.0, 1.0, 0.3)) == pytest.approx(0.3, abs=1e-15)
    assert float(prob_upper(400.0, 2.0, 0.5)) == pytest.approx(1.0, abs=1e-15)
    assert float(prob_upper(-400.0, 2.0, 0.5)) == pytest.approx(0.0, abs=1e-15)


def test_small_and_large_time_series_agree():
    # Both series are exact in the limit; in floating point the small-time one loses
    # digits to cancellation beyond u ~ 2, so compare where both are valid.
    u = np.linspace(0.05, 2.0, 80)
    for w in (0.1, 0.5, 0.85):
        ww = np.full_like(u, w)
        small = D._log_g_small(u, ww, 12)
        large = D._log_g_large(u, ww, 80)
        assert np.max(np.abs(small - large)) < 1e-11
    # and the CDF series
    t = np.linspace(0.2, 3.0, 30)
    v, a, w = np.full(30, 1.3), np.full(30, 1.1), np.full(30, 0.4)
    small = D._cdf_lower_small(t, v, a, w)
    large = D._prob_lower_unit(v, a, w) - D._surv_lower_large(t, v, a, w)
    assert np.max(np.abs(small - large)) < 1e-12


def test_term_counts_follow_error_bounds():
    # Navarro & Fuss: small times need few small-time terms, large times few large-time terms.
    assert (
        D._nf_terms_small(np.array([0.01]), 1e-12)[0]
        < D._nf_terms_large(np.array([0.01]), 1e-12)[0]
    )
    assert (
        D._nf_terms_large(np.array([5.0]), 1e-12)[0] < D._nf_terms_small(np.array([5.0]), 1e-12)[0]
    )


@pytest.mark.parametrize("case", CASES)
def test_cdf_is_integral_of_density(case):
    v, a, z, t0, sv, sz, st0 = case
    for r in (0, 1):
        times = (t0 + 0.15, t0 + st0 + 0.6, t0 + st0 + 2.0) if sv == 0 else (t0 + st0 + 0.6,)
        for t in times:
            f = lambda x, r=r: float(pdf(x, r, v, a, z, t0, sv, sz, st0))
            pts = [t0 + st0] if t0 + st0 < t else None
            ref = quad(f, t0, t, epsabs=1e-13, limit=200, points=pts)[0]
            tol = 1e-9 if sv == 0 else 2e-6  # sv in the CDF is Gauss-Hermite over v
            assert abs(float(cdf(t, r, v, a, z, t0, sv, sz, st0)) - ref) < tol


def test_sv_closed_form_matches_integration_over_v():
    v, a, z, sv = 1.2, 1.4, 0.45, 0.9
    for r in (0, 1):
        for t in (0.1, 0.4, 1.3):
            closed = float(np.exp(wiener_logpdf(t, r, v, a, z, sv)))
            num = quad(
                lambda x, t=t, r=r: (
                    float(np.exp(wiener_logpdf(t, r, x, a, z))) * norm.pdf(x, v, sv)
                ),
                v - 12 * sv,
                v + 12 * sv,
                epsabs=1e-14,
                limit=200,
            )[0]
            assert closed == pytest.approx(num, rel=1e-9)


def test_logpdf_log_space_where_pdf_underflows():
    # Very fast RT: the density underflows in linear space but the log stays finite and smooth.
    lp = logpdf(np.array([0.201, 0.2015, 0.202]), 1, 1.0, 2.0, 0.5, 0.2)
    assert np.all(np.isfinite(lp)) and np.all(lp < -200) and np.all(np.diff(lp) > 0)
    assert np.all(logpdf(np.array([0.1, 0.2]), 1, 1.0, 1.0, 0.5, 0.2) == -np.inf)


def test_noise_scale_convention():
    # (v, a, sv) at s = 0.1 equal (10v, 10a, 10sv) at s = 1.
    rt = np.array([0.35, 0.6, 1.2])
    lp1 = logpdf(rt, [1, 0, 1], 0.2, 0.12, 0.4, 0.25, 0.1, s=0.1)
    lp2 = logpdf(rt, [1, 0, 1], 2.0, 1.2, 0.4, 0.25, 1.0)
    np.testing.assert_allclose(lp1, lp2 - 0.0, rtol=1e-12)


def test_lapse_mixture_is_explicit_and_normalised():
    lapse = Lapse(0.05, 0.0, 3.0)
    case = (1.0, 1.2, 0.5, 0.25, 0.0, 0.0, 0.0)
    total = 0.0
    for r in (0, 1):
        f = lambda t, r=r: float(pdf(t, r, *case, lapse=lapse))
        total += quad(f, 0, 0.25, epsabs=1e-14)[0] + quad(f, 0.25, 3.0, epsabs=1e-14, limit=200)[0]
        total += quad(f, 3.0, np.inf, epsabs=1e-14)[0]
    assert abs(total - 1.0) < 1e-8
    base = pdf(0.1, 1, *case, lapse=lapse)  # before t0: only contaminants
    assert base == pytest.approx(0.05 * 0.5 / 3.0, rel=1e-12)
    with pytest.raises(ValueError, match="lapse probability"):
        Lapse(1.5)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"a": -1.0}, "boundary separation a=-1;"),
        ({"z": 1.2}, "relative start z=1.2;"),
        ({"sz": 0.9, "z": 0.3}, "start-point variability sz=0.9"),
        ({"sv": -0.1}, "drift variability sv=-0.1"),
    ],
)
def test_invalid_parameters_name_the_value(bad, match):
    args = {"v": 1.0, "a": 1.0, "z": 0.5, "t0": 0.1, "sv": 0.0, "sz": 0.0, "st0": 0.0} | bad
    with pytest.raises(ValueError, match=match):
        logpdf(0.5, 1, **args)


@pytest.mark.parametrize("with_sv", [False, True])
def test_gradient_matches_finite_differences(with_sv):
    rng = np.random.default_rng(0)
    n = 40
    rt = rng.uniform(0.25, 2.5, n)
    up = rng.random(n) < 0.6
    v, a, z, t0 = (
        rng.normal(1, 1, n),
        rng.uniform(0.6, 2, n),
        rng.uniform(0.3, 0.7, n),
        np.full(n, 0.2),
    )
    sv = rng.uniform(0.2, 1.5, n) if with_sv else np.zeros(n)
    kw = {"s": 0.5, "lapse_p": 0.03, "lapse_density": 0.5 / 3}
    ll, g = D.logpdf_and_grad(rt, up, v, a, z, t0, sv, **kw)
    ref = logpdf(rt, up, v, a, z, t0, sv, s=0.5, lapse=Lapse(0.03, 0, 3))
    np.testing.assert_allclose(ll, ref, atol=1e-12)
    h = 1e-6
    for name in ("v", "a", "z", "t0", "sv"):
        args = {"v": v, "a": a, "z": z, "t0": t0, "sv": sv}
        args[name] = args[name] + h
        lp = D.logpdf_and_grad(rt, up, **args, **kw)[0]
        args[name] = args[name] - 2 * h  # sv = -h is fine here: only sv^2 enters
        lm = D.logpdf_and_grad(rt, up, **args, **kw)[0]
        np.testing.assert_allclose(g[name], (lp - lm) / (2 * h), rtol=1e-5, atol=1e-6)
