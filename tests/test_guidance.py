"""Guidance wrappers against the oracle: a Gaussian mixture whose class is its component.

p_t(x | k) = N(alpha mu_k, alpha^2 S_k + sigma^2 I) exactly, so the conditional score, the CFG-guided score
(1 - w) grad log p_t(x) + w grad log p_t(x | k) and the exact noisy classifier p(k | x_t) are closed-form.
"""

from __future__ import annotations

import pytest
import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.guide.guidance import (
    check_labels,
    check_scale,
    classifier_free,
    classifier_guidance,
)

SCHED = nc.schedules.VPCosine()


def oracle_class_denoiser(mix, schedule):
    """denoise(x, t, cond): E[x_0 | x_t, k] for labels k in 0..K-1; label K (the null label) is unconditional."""
    K = mix.n_components

    def denoise(x, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        if cond is None:
            return mix.posterior_mean(x, alpha, sigma)
        cond = torch.as_tensor(cond).long().expand(x.shape[0])
        uncond = cond == K
        out = mix.posterior_mean(x, alpha, sigma, component=cond.clamp(max=K - 1))
        if uncond.any():
            out = torch.where(uncond[:, None], mix.posterior_mean(x, alpha, sigma), out)
        return out

    return denoise


def component_score(mix, x, t, k):
    """grad log N(x; alpha mu_k, alpha^2 S_k + sigma^2 I), written from scratch (not via posterior_mean)."""
    alpha, sigma = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    cov = alpha**2 * mix.covariances[k] + sigma**2 * torch.eye(mix.dim, dtype=torch.float64)
    resid = x - alpha * mix.means[k]
    return -torch.linalg.solve(cov, resid.T).T


def score_of(x0, x, t):
    alpha, sigma = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    return (alpha * x0 - x) / sigma**2


def noisy_points(mix, t, n=64, seed=0):
    x0, labels = mix.sample(n, gen(seed))
    alpha, sigma = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    return alpha * x0 + sigma * torch.randn(n, mix.dim, generator=gen(seed + 1), dtype=torch.float64), labels


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_cfg_at_one_is_the_exact_conditional(mix16, t):
    denoise = oracle_class_denoiser(mix16, SCHED)
    x, labels = noisy_points(mix16, t)
    guided = classifier_free(denoise, 1.0, null_label=mix16.n_components)
    x0 = guided(x, torch.full((64,), t, dtype=torch.float64), labels)
    want = torch.stack([component_score(mix16, x[i:i + 1], t, int(labels[i]))[0] for i in range(64)])
    assert torch.allclose(score_of(x0, x, t), want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("w", [0.0, 2.0, 4.5])
@pytest.mark.parametrize("t", [0.2, 0.7])
def test_cfg_equals_the_closed_form_guided_score(mix16, w, t):
    denoise = oracle_class_denoiser(mix16, SCHED)
    x, labels = noisy_points(mix16, t, seed=3)
    x0 = classifier_free(denoise, w, mix16.n_components)(x, t, labels)
    x_req = x.clone().requires_grad_(True)
    (grad_marginal,) = torch.autograd.grad(mix16.log_prob_t(x_req, t, SCHED).sum(), x_req)
    grad_cond = torch.stack([component_score(mix16, x[i:i + 1], t, int(labels[i]))[0] for i in range(64)])
    want = (1 - w) * grad_marginal + w * grad_cond
    assert torch.allclose(score_of(x0, x, t), want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_classifier_guidance_with_the_exact_classifier_is_the_exact_conditional(mix16, t):
    def log_prob(x, t_batch, y):  # the exact noisy classifier log p(k | x_t)
        r = mix16.responsibilities(x, t_batch, SCHED).clamp_min(1e-300)
        return r.log().gather(1, y[:, None])[:, 0]

    x, labels = noisy_points(mix16, t, seed=5)
    guided = classifier_guidance(mix16.denoiser(SCHED), log_prob, SCHED, scale=1.0)
    x0 = guided(x, t, labels)
    exact = oracle_class_denoiser(mix16, SCHED)(x, t, labels)
    assert torch.allclose(x0, exact, rtol=1e-7, atol=1e-7)
    # scale 0 and no labels: the unconditional model
    assert torch.allclose(guided(x, t), mix16.x0_hat(x, t, SCHED))


def test_cfg_guidance_concentrates_samples_on_the_class(ring):
    """End to end through a solver: with w = 1 the samples carry the class's mean and covariance exactly."""
    denoise = oracle_class_denoiser(ring, SCHED)
    k = 3
    x = nc.sample(classifier_free(denoise, 1.0, ring.n_components), SCHED, solver="dpm++2m", steps=30,
                  shape=(4000, 2), generator=gen(7), cond=torch.tensor(k), dtype=torch.float64)
    assert torch.allclose(x.mean(0), ring.means[k], atol=0.02)
    assert torch.allclose(torch.cov(x.T), ring.covariances[k], atol=0.004)
    # w > 1 sharpens: the spread shrinks below the class's
    x3 = nc.sample(classifier_free(denoise, 3.0, ring.n_components), SCHED, solver="dpm++2m", steps=30,
                   shape=(2000, 2), generator=gen(7), cond=torch.tensor(k), dtype=torch.float64)
    assert float(torch.cov(x3.T).trace()) < float(ring.covariances[k].trace())


def test_bad_scale_and_labels_are_named():
    with pytest.raises(ValueError, match="-1"):
        check_scale(-1.0)
    with pytest.raises(ValueError, match="unknown class 12"):
        check_labels([3, 12], 10)
    assert check_labels(7, 10, batch=4).tolist() == [7, 7, 7, 7]
