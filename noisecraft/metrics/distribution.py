"""Distances between sample sets and a known mixture, for testing and benchmarking samplers.

Sliced Wasserstein-2 (Rabin et al. 2011) between two sample sets; the mode-weight error (total
variation between the share of samples assigned to each component and its weight); and the
within-mode W2, the closed-form Gaussian W2 (Givens & Shortt 1984; Dowson & Landau 1982) between
each component's samples and the component, weight-averaged.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from noisecraft.core.tensors import FLOAT64


class Mixture(Protocol):
    """What these metrics read from a mixture; `noisecraft.analysis.oracle.GaussianMixture` provides it.

    A protocol rather than an import: metrics sits below analysis (docs/architecture.md).
    """

    weights: Tensor  # (K,)
    means: Tensor  # (K, D)
    covariances: Tensor  # (K, D, D)

    @property
    def n_components(self) -> int: ...

    def responsibilities(self, x: Tensor) -> Tensor: ...


def sliced_w2(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced W2 between equal-size sample sets: sqrt of the mean over random directions of 1-D W2^2."""
    x = x.reshape(x.shape[0], -1).to(FLOAT64)
    y = y.reshape(y.shape[0], -1).to(FLOAT64)
    if x.shape != y.shape:
        raise ValueError(f"sliced_w2 needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    directions = torch.randn(x.shape[1], projections, generator=generator, dtype=FLOAT64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ directions, dim=0)
    py, _ = torch.sort(y @ directions, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mode_weight_error(x: Tensor, mixture: Mixture) -> float:
    """Total variation between the share of samples whose most likely component is k and w_k."""
    labels = mixture.responsibilities(x.reshape(x.shape[0], -1)).argmax(dim=1)
    share = torch.bincount(labels, minlength=mixture.n_components).to(FLOAT64) / x.shape[0]
    return float(0.5 * (share - mixture.weights).abs().sum())


def _sqrtm_psd(a: Tensor) -> Tensor:
    d, u = torch.linalg.eigh(0.5 * (a + a.T))
    return (u * d.clamp_min(0).sqrt()) @ u.T


def gaussian_w2(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """W2 between N(m1, C1) and N(m2, C2): ||m1-m2||^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)."""
    root2 = _sqrtm_psd(cov2)
    cross = _sqrtm_psd(root2 @ cov1 @ root2)
    w2_sq = ((mean1 - mean2) ** 2).sum() + torch.trace(cov1 + cov2 - 2 * cross)
    return float(w2_sq.clamp_min(0).sqrt())


def within_mode_w2(x: Tensor, mixture: Mixture) -> float:
    """Weight-averaged Gaussian W2 between the samples assigned to each component and that component."""
    x = x.reshape(x.shape[0], -1).to(FLOAT64)
    labels = mixture.responsibilities(x).argmax(dim=1)
    total = 0.0
    for k in range(mixture.n_components):
        members = x[labels == k]
        if members.shape[0] < 2:
            raise ValueError(f"component {k} received {members.shape[0]} samples; need >= 2 to estimate its covariance")
        total += float(mixture.weights[k]) * gaussian_w2(
            members.mean(0), torch.cov(members.T).reshape(x.shape[1], x.shape[1]), mixture.means[k], mixture.covariances[k]
        )
    return total


def distribution_report(x: Tensor, mixture: Mixture, reference: Tensor, seed: int = 0) -> dict[str, float]:
    """The three metrics of the solver benchmark for samples x against the mixture (reference = fresh true samples)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sliced_w2": sliced_w2(x, reference, generator=g),
        "mode_tv": mode_weight_error(x, mixture),
        "within_w2": within_mode_w2(x, mixture),
    }
