"""Theory diagnostics: where a denoiser errs, by noise level, and what that costs in KL.

1. Denoising error against log-SNR (oracle): E ||x0_hat(x_t, t) - E[x_0 | x_t]||^2, beside the
   irreducible error E ||x_0 - E[x_0 | x_t]||^2 of the exact posterior mean (the MMSE).
2. Without an oracle, the loss per noise level on data: E ||x0_hat(x_t, t) - x_0||^2 (per dimension),
   whose minimum over denoisers is that same MMSE (Kingma et al. 2021, sec. 5; Karras et al. 2022, Fig. 5).
3. The KL bound of the reverse SDE (Song et al. 2021, "Maximum likelihood training of score-based
   diffusion models", Thm. 1):
       KL(p_0 || p_theta^SDE) <= KL(p_T || prior) + integral_{t_min}^{t_max} g(t)^2 / 2 E_{p_t} ||s_theta - grad log p_t||^2 dt,
   integrated in log-SNR by composite Gauss-Legendre quadrature (dt = d lambda / lambda'(t)), with
   the prior term by Monte Carlo from the oracle's exact log p_T. Since g^2 = -sigma^2 lambda'(t) and
   s_theta - s = alpha / sigma^2 (x0_hat - E[x_0 | x_t]), the score term equals
   1/2 integral e^lambda E ||x0_hat - E[x_0 | x_t]||^2 d lambda: the denoising error of (1), weighted.
4. The divergence actually measured, E_{p_0}[log p_0(x) - log p_theta(x)], with log p_theta from the
   probability-flow ODE (noisecraft.analysis.likelihood). The theorem bounds the SDE's model; the ODE's density
   equals it only for an exact score (Lu et al. 2022, "Maximum likelihood training for score-based
   diffusion ODEs by high-order denoising score matching", show the ODE's KL is not bounded by the
   first-order term in general), so the comparison is a measurement, not a guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noisecraft.analysis.likelihood import gauss_legendre_panels, log_likelihood
from noisecraft.analysis.oracle import GaussianMixture
from noisecraft.core.noise import randn_like
from noisecraft.core.parameterization import score_from_x0
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64, as_time, expand_like
from noisecraft.io import save_figure

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LevelCurve:
    """A per-sample squared error at each log-SNR level: its mean and standard error, and a reference."""

    log_snr: Tensor
    error: Tensor
    stderr: Tensor
    label: str
    reference: Tensor | None = None  # the irreducible error (MMSE), when an oracle knows it
    per_dim: bool = False


@dataclass
class KLBound:
    """KL(p_T || prior) + the score-matching integral, by quadrature nodes in log-SNR, and the measured KL."""

    log_snr: Tensor  # quadrature nodes
    density: Tensor  # d(score term)/d lambda at each node, in nats per unit of log-SNR
    weights: Tensor
    prior_kl: float
    score_term: float
    stderr: float
    measured: float | None = None
    measured_stderr: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.prior_kl + self.score_term


def log_snr_levels(schedule: Schedule, levels: int, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """`levels` log-SNR values, equally spaced between lambda(t_max) and lambda(t_min), float64."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    t_lo = schedule.t_min if t_min is None else t_min
    t_hi = schedule.t_max if t_max is None else t_max
    return torch.linspace(float(schedule.log_snr(t_hi)), float(schedule.log_snr(t_lo)), levels, dtype=FLOAT64)


def _noisy(schedule: Schedule, x0: Tensor, lam: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(x_t, t as a (batch,) tensor) at log-SNR lam."""
    t = as_time(schedule.t_from_log_snr(torch.tensor(lam, dtype=FLOAT64)), x0.shape[0])
    alpha, sigma = expand_like(schedule.alpha(t), x0), expand_like(schedule.sigma(t), x0)
    return alpha * x0 + sigma * randn_like(x0, generator), t


def _sq(a: Tensor, b: Tensor) -> Tensor:
    return ((a.to(FLOAT64) - b.to(FLOAT64)) ** 2).reshape(a.shape[0], -1).sum(1)


def _mean_se(v: Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else 0.0


@torch.no_grad()
def denoising_error(denoise: DenoiseFn, oracle: GaussianMixture, schedule: Schedule, n: int = 512, levels: int = 24,
                    generator: torch.Generator | None = None, label: str = "denoiser") -> LevelCurve:
    """E ||x0_hat - E[x_0 | x_t]||^2 (summed over dimensions) at each level, with the MMSE as reference."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    lams = log_snr_levels(schedule, levels)
    err, se, mmse = [], [], []
    for lam in lams.tolist():
        x0, _ = oracle.sample(n, generator)
        x_t, t = _noisy(schedule, x0, lam, generator)
        exact = oracle.x0_hat(x_t, t, schedule)
        mean, stderr = _mean_se(_sq(denoise(x_t, t), exact))
        err.append(mean)
        se.append(stderr)
        mmse.append(float(_sq(x0, exact).mean()))
    return LevelCurve(lams, torch.tensor(err), torch.tensor(se), label, torch.tensor(mmse))


@torch.no_grad()
def loss_per_level(denoise: DenoiseFn, schedule: Schedule, x0: Tensor, levels: int = 24,
                   generator: torch.Generator | None = None, label: str = "denoiser") -> LevelCurve:
    """E ||x0_hat(x_t, t) - x_0||^2 per dimension on data x0 at each level (no oracle needed)."""
    if x0.shape[0] < 2:
        raise ValueError(f"need at least 2 data samples, got {x0.shape[0]}")
    lams = log_snr_levels(schedule, levels)
    dim = x0[0].numel()
    err, se = [], []
    for lam in lams.tolist():
        x_t, t = _noisy(schedule, x0, lam, generator)
        mean, stderr = _mean_se(_sq(denoise(x_t.to(x0.dtype), t), x0) / dim)
        err.append(mean)
        se.append(stderr)
    return LevelCurve(lams, torch.tensor(err), torch.tensor(se), label, per_dim=True)


@torch.no_grad()
def kl_bound(denoise: DenoiseFn, oracle: GaussianMixture, schedule: Schedule, n: int = 256, panels: int = 16,
             order: int = 4, generator: torch.Generator | None = None) -> KLBound:
    """KL(p_T || N(0, sigma_T^2 I)) + integral g^2/2 E_{p_t} ||s_theta - grad log p_t||^2 dt over [t_min, t_max].

    Each quadrature node draws its own n samples of p_t; the standard error is that of the per-sample
    sums over nodes (samples are independent across i).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    lam_lo, lam_hi = float(schedule.log_snr(schedule.t_max)), float(schedule.log_snr(schedule.t_min))
    nodes, weights = gauss_legendre_panels(lam_lo, lam_hi, panels, order)
    per_sample = torch.zeros(n, dtype=FLOAT64)
    density = []
    for lam, w in zip(nodes.tolist(), weights.tolist()):
        x0, _ = oracle.sample(n, generator)
        x_t, t = _noisy(schedule, x0, lam, generator)
        alpha, sigma = expand_like(schedule.alpha(t), x_t), expand_like(schedule.sigma(t), x_t)
        gap = score_from_x0(x_t, denoise(x_t, t).to(FLOAT64), alpha, sigma) - score_from_x0(x_t, oracle.x0_hat(x_t, t, schedule), alpha, sigma)
        t1 = t[:1]
        # dt = d lambda / lambda'(t); lambda' < 0 and the integral runs up in lambda as t runs down
        jacobian = float(schedule.g2(t1)) / 2.0 / abs(float(schedule.dlog_snr_dt(t1)))
        contribution = jacobian * (gap**2).reshape(n, -1).sum(1)
        density.append(float(contribution.mean()))
        per_sample += w * contribution
    score_term, score_se = _mean_se(per_sample)
    x0, _ = oracle.sample(n, generator)
    x_T, _ = _noisy(schedule, x0, lam_lo, generator)
    sigma_T, dim = float(schedule.sigma(schedule.t_max)), oracle.dim
    log_prior = -0.5 * (x_T**2).sum(1) / sigma_T**2 - dim * (math.log(sigma_T) + 0.5 * math.log(2 * math.pi))
    prior_kl, prior_se = _mean_se(oracle.log_prob_t(x_T, schedule.t_max, schedule) - log_prior)
    return KLBound(nodes, torch.tensor(density), weights, prior_kl, score_term, math.hypot(score_se, prior_se))


def measured_kl(denoise: DenoiseFn, oracle: GaussianMixture, schedule: Schedule, n: int = 128,
                generator: torch.Generator | None = None, **likelihood_options) -> tuple[float, float]:
    """E_{p_0}[log p_0(x) - log p_theta(x)] and its standard error, log p_theta through the PF-ODE.

    The divergence is exact for dimension <= 16 unless `divergence` is given (noisecraft.analysis.likelihood).
    """
    x, _ = oracle.sample(n, generator)
    likelihood_options.setdefault("divergence", "exact" if oracle.dim <= 16 else "hutchinson")
    result = log_likelihood(denoise, schedule, x, generator=generator, **likelihood_options)
    return _mean_se(oracle.log_prob(x) - result.log_prob)


def with_measured(bound: KLBound, measured: tuple[float, float]) -> KLBound:
    """The bound with the measured divergence set beside it."""
    bound.measured, bound.measured_stderr = measured
    return bound


def plot_diagnostics(path: str | Path, curves: list[LevelCurve], bound: KLBound | None = None, title: str = "") -> Path:
    """Error against log-SNR for each curve (with the MMSE where known); and, given a bound, its density
    over log-SNR, cumulative from the prior term, beside the measured divergence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves and bound is None:
        raise ValueError("nothing to plot: pass at least one curve or a bound")
    ncols = (1 if curves else 0) + (1 if bound is not None else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(5.6 * ncols, 4.2), squeeze=False)
    col = 0
    if curves:
        ax = axes[0][col]
        col += 1
        for i, c in enumerate(curves):
            color = f"C{i}"
            lam, err, se = c.log_snr.numpy(), c.error.numpy(), c.stderr.numpy()
            floor = 1e-12  # a log axis cannot show an exact zero; it is drawn at the floor and named
            label = c.label + (" (exactly 0)" if (err == 0).all() else "")
            ax.plot(lam, err.clip(min=floor), "o-", ms=3, color=color, label=label)
            low = np.maximum(err - 2 * se, err / 10)  # a log axis: keep the band from plunging where se ~ err
            ax.fill_between(lam, low.clip(min=floor), (err + 2 * se).clip(min=floor), color=color, alpha=0.2)
            if c.reference is not None:
                ax.plot(lam, c.reference.numpy(), "--", color="gray", lw=1,
                        label="irreducible E||x0 - E[x0|x_t]||^2" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("log-SNR  lambda = log(alpha^2 / sigma^2)")
        per = " per dimension" if curves[0].per_dim else ""
        ax.set_ylabel(("E||x0_hat - x0||^2" if curves[0].reference is None else "E||x0_hat - E[x0|x_t]||^2") + per)
        ax.set_title("denoising error by noise level" if curves[0].reference is not None else "loss by noise level (data)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if bound is not None:
        ax = axes[0][col]
        order = torch.argsort(bound.log_snr, descending=False)
        lam = bound.log_snr[order].numpy()
        dens = bound.density[order].numpy()
        # cumulative from high noise (low lambda), starting at the prior term
        cum = bound.prior_kl + torch.cumsum((bound.weights * bound.density)[order], 0).numpy()
        ax.plot(lam, dens, color="C3", label="integrand d(bound)/d lambda")
        ax.set_xlabel("log-SNR  lambda")
        ax.set_ylabel("nats per unit log-SNR", color="C3")
        twin = ax.twinx()
        twin.plot(lam, cum, color="C0", lw=2, label="bound, cumulative")
        twin.axhline(bound.total, color="C0", ls=":", lw=1)
        if bound.measured is not None:
            twin.axhline(bound.measured, color="k", ls="--", lw=1.5, label="measured KL (PF-ODE)")
            twin.axhspan(bound.measured - 2 * bound.measured_stderr, bound.measured + 2 * bound.measured_stderr,
                         color="k", alpha=0.07, label="measured +- 2 s.e.")
        twin.set_ylabel("nats")
        measured = "" if bound.measured is None else f"; measured {bound.measured:.3g} +- {bound.measured_stderr:.2g}"
        ax.set_title(f"KL bound {bound.total:.3g} +- {bound.stderr:.2g} nats{measured}", fontsize=10)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        twin.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)
