"""Schedules: f and g^2 against finite differences and Song et al. 2021's closed forms; inverses; configs."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from noisecraft import schedules as S

T = torch.linspace(0.02, 0.97, 40, dtype=torch.float64) + 3.7e-4  # off the DiscreteVP nodes, where d lambda/dt jumps


def test_log_snr_strictly_decreasing(schedule):
    t = torch.linspace(schedule.t_min, schedule.t_max, 500, dtype=torch.float64)
    lam = schedule.log_snr(t)
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


def test_inverse_log_snr_round_trip(schedule):
    lam = schedule.log_snr(T)
    assert torch.allclose(schedule.t_from_log_snr(lam), T, atol=1e-10, rtol=0)


def test_f_and_g2_match_finite_differences(schedule):
    h = 1e-6
    dlog_alpha = (torch.log(schedule.alpha(T + h)) - torch.log(schedule.alpha(T - h))) / (2 * h)
    dsigma2 = (schedule.sigma(T + h) ** 2 - schedule.sigma(T - h) ** 2) / (2 * h)
    f = schedule.f(T)
    assert torch.allclose(f, dlog_alpha, rtol=1e-5, atol=1e-6)
    g2_fd = dsigma2 - 2 * dlog_alpha * schedule.sigma(T) ** 2
    assert torch.allclose(schedule.g2(T), g2_fd, rtol=1e-5, atol=1e-6)


def test_derivatives_by_autograd_work_inside_a_samplers_inference_mode(schedule):
    """f, g^2 and d lambda/dt are autograd derivatives; the pipeline samples under torch.inference_mode, where
    tensors take no gradient, and its SDE solvers call them there with times made in that mode."""
    want = (schedule.f(T), schedule.g2(T), schedule.dlog_snr_dt(T))
    with torch.inference_mode():
        t = T.clone()
        got = (schedule.f(t), schedule.g2(t), schedule.dlog_snr_dt(t))
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_vp_linear_closed_form():
    s = S.VPLinear(beta_min=0.1, beta_max=20.0)
    beta = 0.1 + T * (20.0 - 0.1)
    assert torch.allclose(s.f(T), -0.5 * beta, rtol=1e-12)
    assert torch.allclose(s.g2(T), beta, rtol=1e-10)
    assert torch.allclose(s.alpha(T) ** 2 + s.sigma(T) ** 2, torch.ones_like(T), atol=1e-14)


def test_sub_vp_closed_form():
    s = S.SubVP()
    beta = 0.1 + T * (20.0 - 0.1)
    integral = 0.1 * T + 0.5 * T**2 * (20.0 - 0.1)
    assert torch.allclose(s.f(T), -0.5 * beta, rtol=1e-12)
    assert torch.allclose(s.g2(T), beta * (1 - torch.exp(-2 * integral)), rtol=1e-9)  # Song et al. 2021, eq. 29


def test_ve_closed_form():
    s = S.VE(sigma_min=0.01, sigma_max=50.0)
    sigma = 0.01 * (50.0 / 0.01) ** T
    assert torch.allclose(s.sigma(T), sigma, rtol=1e-12)
    assert torch.allclose(s.f(T), torch.zeros_like(T))
    assert torch.allclose(s.g2(T), sigma**2 * 2 * math.log(50.0 / 0.01), rtol=1e-10)  # eq. 30


def test_cosine_matches_nichol_dhariwal():
    s = S.VPCosine()
    f = lambda t: torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert torch.allclose(s.alpha(T) ** 2, f(T) / f(torch.tensor(0.0, dtype=torch.float64)), rtol=1e-12)


def test_discrete_vp_exact_at_nodes_and_matches_diffusers_table():
    s = S.DiscreteVP()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    n = torch.arange(0, 1000, 37)
    t = s.t_of_timestep(n)
    assert torch.allclose(s.alpha(t) ** 2, alphas_cumprod[n], rtol=1e-12)
    # continuous between nodes: log-SNR linear in t
    mid = s.t_of_timestep(torch.tensor([10.5]))
    assert torch.allclose(s.log_snr(mid), 0.5 * (s.log_snr(s.t_of_timestep(10)) + s.log_snr(s.t_of_timestep(11))))


def test_edm_uniform_t_is_karras_grid():
    s = S.EDM()
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    lo, hi = 0.002 ** (1 / 7), 80 ** (1 / 7)
    assert torch.allclose(s.sigma(t), (lo + t * (hi - lo)) ** 7, rtol=1e-12)


def test_config_round_trip_through_yaml(schedule):
    text = yaml.safe_dump(schedule.to_config())
    again = S.schedule_from_config(yaml.safe_load(text))
    assert again == schedule
    assert torch.allclose(again.log_snr(T), schedule.log_snr(T))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "nope"}, "unknown schedule"),
        ({"name": "vp_linear", "beta_mx": 3}, "beta_mx"),
        ({"name": "ve", "sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min < sigma_max"),
        ({"name": "vp_linear", "t_min": 0.5, "t_max": 0.2}, "t_min"),
        ({"name": "discrete_vp", "betas": [0.1, 1.5]}, "(0, 1)"),
    ],
)
def test_bad_configs_name_the_problem(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        S.schedule_from_config(config)


def test_discrete_vp_follows_the_device_of_t():
    """Tables are moved to t's device (the GPU check found a CPU table indexed by CUDA times); 'meta' stands in."""
    s = S.DiscreteVP()
    t = torch.tensor([0.3, 0.7], dtype=torch.float64, device="meta")
    assert s.log_snr(t).device.type == "meta"
    assert s.t_from_log_snr(torch.tensor([1.0, -2.0], dtype=torch.float64, device="meta")).device.type == "meta"


@pytest.mark.parametrize(
    "positional, keywords",
    [
        (S.VE(0.01, 50), S.VE(sigma_min=0.01, sigma_max=50)),  # the README's first example
        (S.VPLinear(0.2, 15.0), S.VPLinear(beta_min=0.2, beta_max=15.0)),
        (S.SubVP(0.2), S.SubVP(beta_min=0.2)),  # fields inherited from VPLinear keep their order
        (S.VPCosine(0.01), S.VPCosine(s=0.01)),
        (S.EDM(0.01, 40.0, 5.0), S.EDM(sigma_min=0.01, sigma_max=40.0, rho=5.0)),
        (S.DiscreteVP(None, 1e-3, 0.03, 20), S.DiscreteVP(beta_start=1e-3, beta_end=0.03, num_timesteps=20)),
        (S.VE(0.1, t_max=0.5), S.VE(sigma_min=0.1, t_max=0.5)),  # mixed, time range by keyword
    ],
)
def test_positional_fields_in_declaration_order(positional, keywords):
    assert positional == keywords
    again = S.schedule_from_config(yaml.safe_load(yaml.safe_dump(positional.to_config())))
    assert again == keywords


@pytest.mark.parametrize("as_table", [list, lambda b: torch.tensor(b, dtype=torch.float64)])
def test_discrete_vp_takes_a_beta_table_positionally(as_table):
    """`DiscreteVP(betas)` as in the README: the first own field is the table (name, t_min, t_max are keyword-only)."""
    betas = torch.linspace(1e-4, 0.05, 50, dtype=torch.float64).tolist()
    s = S.DiscreteVP(as_table(betas))
    assert s == S.DiscreteVP(betas=betas)
    assert s.N == 50
    assert torch.allclose(s.alpha(s.t_of_timestep(49)) ** 2, torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)[-1])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: S.VE(0.01, 50.0, 0.5), r"VE\(\) takes at most 2 positional arguments \(sigma_min, sigma_max\), got 3"),
        (lambda: S.VPCosine(0.01, 0.9), r"VPCosine\(\) takes at most 1 positional arguments \(s\), got 2; t_min and t_max"),
        (lambda: S.VE(0.01, sigma_min=0.02), r"VE\(\) got sigma_min both positionally and by keyword"),
        (lambda: S.EDM(0.01, 40.0, sigma_max=30.0), r"positional order is \(sigma_min, sigma_max, rho, sigma_data\)"),
    ],
)
def test_bad_positional_arguments_are_type_errors_naming_the_fields(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_positional_arguments_are_still_validated():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        S.VE(50.0, 0.01)
    with pytest.raises(ValueError, match="greater than 0"):
        S.VPLinear(-1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        S.DiscreteVP([0.1, 1.5])
