"""Guidance: class conditioning as wrappers that turn a denoise function into another (DESIGN.md section 2).

Classifier-free guidance (Ho & Salimans 2022, eq. 6). Convention used throughout noisecraft: the scale w
multiplies the conditional direction,

    x0_hat_w = x0_hat(x_t, null) + w (x0_hat(x_t, y) - x0_hat(x_t, null)),

so w = 0 is the unconditional model, w = 1 the plain conditional model and w > 1 extrapolates past it.
Because eps_hat and the score are affine in x0_hat at fixed (x_t, t), the same line holds for them:
score_w = (1 - w) grad log p_t(x) + w grad log p_t(x | y), the score of p_t(x)^(1-w) p_t(x | y)^w.
(Ho & Salimans write eps_cond + w' (eps_cond - eps_uncond); their w' is our w - 1.)

Classifier guidance (Dhariwal & Nichol 2021, sec. 4 and Alg. 1-2, written for any solver): with a
noise-conditional classifier log p(y | x_t, t),

    score_s = grad log p_t(x) + s grad_x log p(y | x_t, t),   i.e.  x0_hat_s = x0_hat + s sigma^2 / alpha grad_x log p(y | x_t),

so s = 1 with the exact classifier gives the exact conditional score grad log p_t(x | y) (Bayes' rule).

Both wrappers know nothing of solvers: they take and return `denoise(x, t, cond) -> x0_hat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import as_time, expand_like, per_time

DenoiseFn = Callable[..., Tensor]
#: log p(y | x_t, t) for labels y, shape (batch,): differentiable in x_t
LogProbFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def check_scale(scale: float, name: str = "guidance scale") -> float:
    """A finite scale >= 0, or a ValueError naming it."""
    scale = float(scale)
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {scale}")
    return scale


def check_labels(labels: Any, num_classes: int, batch: int | None = None) -> Tensor:
    """Class labels as a long tensor in [0, num_classes), or a ValueError naming the bad label."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(f"unknown class {int(bad[0])}; expected a class in 0..{num_classes - 1}")
    if batch is not None:
        if labels.numel() == 1:
            labels = labels.expand(batch)
        elif labels.numel() != batch:
            raise ValueError(f"got {labels.numel()} labels for a batch of {batch}; expected 1 or {batch}")
    return labels


class ClassifierFree:
    """x0_hat(null) + w (x0_hat(y) - x0_hat(null)) (Ho & Salimans 2022); w = 1 is the conditional model.

    `denoise(x, t, cond)` must accept the null condition as `cond` (a model trained with label dropout, see
    NetConfig.label_dropout). The condition is a class label with `null_label` an int, or a text embedding
    (a vector per sample, Reimers & Gurevych 2019) with `null_label` a vector such as the zero embedding.
    Conditional and unconditional evaluations go through the network as one batch of 2B. Called without
    `cond` the wrapper is the unconditional model.
    """

    def __init__(self, denoise: DenoiseFn, scale: float, null_label: int | Tensor) -> None:
        self.denoise = denoise
        self.scale = check_scale(scale)
        self.embedded = isinstance(null_label, Tensor) and null_label.ndim > 0
        self.null_label = null_label.reshape(-1) if self.embedded else int(null_label)

    def _batch(self, cond: Any, batch: int, device: torch.device) -> Tensor:
        """cond (or the null) repeated or checked to one row per sample."""
        if not self.embedded:
            return torch.as_tensor(cond, device=device).long().reshape(-1).expand(batch)
        cond = torch.as_tensor(cond, device=device, dtype=torch.float32)
        dim = self.null_label.numel()
        if cond.shape[-1] != dim or cond.ndim > 2:
            raise ValueError(f"expected text embeddings of shape ({dim},) or (batch, {dim}), got {tuple(cond.shape)}")
        return cond.reshape(-1, dim).expand(batch, dim)

    def __call__(self, x: Tensor, t: float | Tensor, cond: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0])
        null = self._batch(self.null_label, x.shape[0], x.device)
        if cond is None:
            return self.denoise(x, t, null)
        cond = self._batch(cond, x.shape[0], x.device)
        if self.scale == 1.0:
            return self.denoise(x, t, cond)
        if self.scale == 0.0:
            return self.denoise(x, t, null)
        both = self.denoise(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
        x0_cond, x0_uncond = both.chunk(2)
        return x0_uncond + self.scale * (x0_cond - x0_uncond)


def classifier_free(denoise: DenoiseFn, scale: float, null_label: int | Tensor) -> ClassifierFree:
    """Classifier-free guidance with scale w (w = 1: plain conditional; see the module docstring);
    `null_label` is the null class, or the null embedding vector for text conditioning."""
    return ClassifierFree(denoise, scale, null_label)


class ClassifierGuided:
    """x0_hat + s sigma^2/alpha grad_x log p(y | x_t, t) (Dhariwal & Nichol 2021), any solver.

    `denoise` is the unconditional model: called as denoise(x, t), or denoise(x, t, base_cond) when
    base_cond is given (e.g. the null label of a classifier-free model). `log_prob(x, t, y)` is the
    noise-conditional classifier's log p(y | x_t, t), differentiable in x.
    """

    def __init__(self, denoise: DenoiseFn, log_prob: LogProbFn, schedule: Schedule, scale: float = 1.0,
                 base_cond: Any = None) -> None:
        self.denoise, self.log_prob, self.schedule = denoise, log_prob, schedule
        self.scale = check_scale(scale, "classifier guidance scale")
        self.base_cond = base_cond

    def _base(self, x: Tensor, t: Tensor) -> Tensor:
        if self.base_cond is None:
            return self.denoise(x, t)
        cond = torch.as_tensor(self.base_cond, device=x.device).reshape(-1).expand(x.shape[0])
        return self.denoise(x, t, cond)

    def classifier_grad(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """grad_x log p(y | x_t, t), summed over the batch (samples are independent)."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x_in, t, labels).sum(), x_in)
        return grad

    def __call__(self, x: Tensor, t: float | Tensor, cond: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0])
        x0 = self._base(x, t)
        if cond is None or self.scale == 0.0:
            return x0
        labels = torch.as_tensor(cond, device=x.device).long().reshape(-1).expand(x.shape[0])
        alpha = expand_like(per_time(self.schedule.alpha, t), x)
        sigma = expand_like(per_time(self.schedule.sigma, t), x)
        grad = self.classifier_grad(x, t, labels).to(x.dtype)
        return x0 + self.scale * sigma**2 / alpha * grad


def classifier_guidance(denoise: DenoiseFn, log_prob: LogProbFn, schedule: Schedule, scale: float = 1.0,
                        base_cond: Any = None) -> ClassifierGuided:
    """Classifier guidance with scale s (s = 1 with the exact classifier: the exact conditional)."""
    return ClassifierGuided(denoise, log_prob, schedule, scale, base_cond)


__all__ = ["ClassifierFree", "ClassifierGuided", "check_labels", "check_scale", "classifier_free",
           "classifier_guidance"]
