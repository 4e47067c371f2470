"""The weighted denoising loss against the Gaussian oracle: exact minima, perturbations, and learning."""

from __future__ import annotations

import pytest
import torch

from noisecraft import oracle
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.losses import PRESETS, DenoisingLoss, preset
from noisecraft.core.parameterization import prediction_from_x0
from noisecraft.core.tensors import FLOAT64

VARIANCES = torch.tensor([0.3, 0.05], dtype=FLOAT64)
GAUSS = oracle.gaussian([0.4, -0.2], torch.diag(VARIANCES))


class ExactDenoiser(Denoiser):
    """The oracle's x0_hat expressed in the loss's parameterization, plus an optional offset on the output."""

    def __init__(self, loss: DenoisingLoss, x0_offset: float = 0.0) -> None:
        super().__init__(None, loss.schedule, loss.parameterization, loss.time_input, sigma_data=loss.sigma_data)
        self.x0_offset = x0_offset

    def raw(self, x, t, cond=None):
        t, alpha, sigma = self.coefficients(x, t)
        x0 = GAUSS.x0_hat(x, t, self.schedule) + self.x0_offset
        return prediction_from_x0(self.parameterization, x0, x, alpha, sigma, self.sigma_data)


def analytic_minimum(loss: DenoisingLoss, t: torch.Tensor) -> torch.Tensor:
    """w(t) E||F - F*||^2 at the exact denoiser: the posterior variance of x_0, carried to output space."""
    alpha2, sigma2 = loss.schedule.alpha(t).unsqueeze(1) ** 2, loss.schedule.sigma(t).unsqueeze(1) ** 2
    post_var = VARIANCES * sigma2 / (alpha2 * VARIANCES + sigma2)  # Bishop 2006, eq. 2.116
    err = post_var.sum(1) if loss.reduction == "sum" else post_var.mean(1)
    return loss.weight(t) * err / loss.output_slope(t) ** 2


def _draw(loss: DenoisingLoss, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x0, _ = GAUSS.sample(n, g)
    t = loss.sample_t(n, g)
    eps = torch.randn(x0.shape, generator=g, dtype=FLOAT64)
    return x0, t, eps


@pytest.mark.parametrize("name", PRESETS)
def test_exact_denoiser_attains_the_analytic_minimum(name: str) -> None:
    loss = preset(name)
    x0, t, eps = _draw(loss, 40_000, 0)
    exact = loss.per_sample(ExactDenoiser(loss), x0, t=t, eps=eps)
    expected = analytic_minimum(loss, t)
    # compare per-sample ratios so the spread of w(t) over t does not enter the Monte Carlo error
    ratio = (exact / expected).mean().item()
    assert ratio == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("name", PRESETS)
def test_perturbed_denoiser_scores_higher(name: str) -> None:
    loss = preset(name)
    x0, t, eps = _draw(loss, 20_000, 1)
    exact = loss.per_sample(ExactDenoiser(loss), x0, t=t, eps=eps)
    off = loss.per_sample(ExactDenoiser(loss, x0_offset=0.3), x0, t=t, eps=eps)
    assert (off.mean() > exact.mean()).item()
    # the excess is the x0-space weight times 0.3^2 per dimension (the cross term vanishes at the optimum)
    dims = 2 if loss.reduction == "sum" else 1
    w_x0 = loss.weight(t) / loss.output_slope(t) ** 2
    excess = ((off - exact) / (w_x0 * 0.09 * dims)).mean().item()
    assert excess == pytest.approx(1.0, abs=0.1)


def test_mixture_exact_denoiser_beats_perturbed() -> None:
    ring = oracle.ring8()
    loss = preset("v")
    g = torch.Generator().manual_seed(2)
    x0, _ = ring.sample(20_000, g)
    t = loss.sample_t(20_000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=FLOAT64)
    exact = Denoiser.from_x0(lambda x, tt: ring.x0_hat(x, tt.to(FLOAT64), loss.schedule), loss.schedule)
    shrunk = Denoiser.from_x0(lambda x, tt: 0.95 * ring.x0_hat(x, tt.to(FLOAT64), loss.schedule), loss.schedule)
    x0_loss = loss.model_copy(update={"parameterization": "x0", "weighting": "snr_plus_one"})
    assert x0_loss.per_sample(exact, x0, t=t, eps=eps).mean() < x0_loss.per_sample(shrunk, x0, t=t, eps=eps).mean()


def test_weightings_agree_where_they_should() -> None:
    t = torch.linspace(0.05, 0.95, 7, dtype=FLOAT64)
    ddpm_like = preset("v", parameterization="eps")
    snr = ddpm_like.model_copy(update={"weighting": "snr"})
    assert torch.allclose(ddpm_like.weight(t), snr.weight(t))  # unit on eps == snr on x0
    v = preset("v")
    assert torch.allclose(v.weight(t), v.model_copy(update={"weighting": "snr_plus_one"}).weight(t))
    edm = preset("edm")
    assert torch.allclose(edm.weight(t), torch.ones_like(t))  # lambda(sigma) c_out^2 = 1 (Karras et al. 2022)
    score = preset("score")
    assert torch.allclose(score.weight(t), score.schedule.sigma(t) ** 2)  # Song et al. 2021, lambda = sigma^2


def test_edm_times_follow_the_log_normal() -> None:
    loss = preset("edm")
    t = loss.sample_t(50_000, torch.Generator().manual_seed(0))
    log_sigma = torch.log(loss.schedule.sigma(t))
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.05)


def test_config_round_trip_and_errors() -> None:
    loss = preset("edm")
    again = DenoisingLoss.model_validate(loss.model_dump())
    assert again == loss
    with pytest.raises(ValueError, match="unknown loss preset 'nope'"):
        preset("nope")
    with pytest.raises(ValueError, match="DiscreteVP"):
        preset("v", time_distribution="discrete").sample_t(3)
    with pytest.raises(ValueError, match="weightng"):
        DenoisingLoss.model_validate({"weightng": "snr"})


def test_training_reaches_the_optimal_linear_denoiser() -> None:
    """On 1-D Gaussian data the best denoiser is linear in x_t; a small learned map reaches it."""
    torch.manual_seed(0)
    mean, var = 0.5, 0.25
    data = oracle.gaussian([mean], [[var]])
    loss = preset("v")
    # x0_hat = a(t) x + b(t): two small heads on the noise level, linear in x_t like the optimum
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = net(t.reshape(-1, 1).float())
        return ab[:, :1] * x + ab[:, 1:]

    den = loss.denoiser(fn)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        x0 = data.sample(256, g)[0].float()
        value = loss(den, x0, g)
        opt.zero_grad()
        value.backward()
        opt.step()
        if step == 200:
            for group in opt.param_groups:
                group["lr"] = 2e-3
    # the learned denoiser's loss on fresh data is within 2% of the analytic minimum (posterior variance)
    g = torch.Generator().manual_seed(1)
    x0 = data.sample(40_000, g)[0]
    t = loss.sample_t(40_000, g)
    with torch.no_grad():
        learned = loss.per_sample(den, x0.float(), g, t=t).double()
    alpha2, sigma2 = loss.schedule.alpha(t) ** 2, loss.schedule.sigma(t) ** 2
    minimum = loss.weight(t) * (var * sigma2 / (alpha2 * var + sigma2)) / loss.output_slope(t) ** 2
    assert learned.mean().item() / minimum.mean().item() == pytest.approx(1.0, abs=0.02)
