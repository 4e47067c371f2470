"""A trained run's denoiser steered: unconditional, to a class (classifier-free or classifier guidance), to a
text prompt, or corrected by a measurement (moment matching), each bounded as the run samples.

These read the run's config (its condition kind, null label, text width, x0 bounds) and hand the wrapping to
the guidance layer (noisecraft.guide). `run` is a noisecraft.runs.pipeline.Pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from noisecraft.core.bounds import bound, clipped

DenoiseFn = Callable[..., Tensor]


def _labels(label: int | Tensor, x: Tensor) -> Tensor:
    """One label per row: `label` repeated, or a per-row label tensor as it is."""
    if isinstance(label, Tensor):
        return label.to(device=x.device, dtype=torch.long)
    return torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)


def _check_guidable(model: Any, scale: float) -> None:
    if not model.guidable and scale != 1.0:
        raise ValueError(f"guidance {scale:g} needs a run trained with label dropout (model.label_dropout > 0); "
                         "this one can only sample with guidance 1")


def base_denoiser(run: Any, bounded: bool = True) -> DenoiseFn:
    """The run's unconditional x0_hat(x, t): the null condition for a classifier-free model, bounded as the run
    samples (bounded=False: as the network gives it)."""
    denoise = clipped(run.network, *run.bounds) if bounded else run.network
    model = run.config.model
    if model.num_classes is None:
        return denoise
    if not model.guidable:
        raise ValueError(f"this run is {model.cond}-conditional without a null condition (model.label_dropout = 0): "
                         f"pass a {'prompt' if model.text else 'label'} to sample it")
    return lambda x, t: denoise(x, t, model.null_cond(x.shape[0], x.device))


def class_denoiser(run: Any, label: int | Tensor, guidance: float = 1.0) -> DenoiseFn:
    """x0_hat(x, t) of a class-conditional run steered to `label` (or one label per row) by classifier-free
    guidance with scale w (Ho & Salimans 2022, eq. 6); w = 1 is the plain conditional model."""
    from noisecraft.guide.guidance import check_labels, check_scale, classifier_free

    scale = check_scale(guidance, "guidance")
    model = run.config.model
    if model.num_classes is None:
        raise ValueError("this run is unconditional (model.num_classes is not set): a label needs a "
                         "class-conditional run, or a noisy classifier (classifier=FOLDER)")
    if model.text:
        raise ValueError("this run is text-conditioned (model.cond = 'text'): pass a prompt instead of a label")
    check_labels(label, model.num_classes)
    _check_guidable(model, scale)
    if model.null_label is None:
        denoise = clipped(run.network, *run.bounds)
        return lambda x, t: denoise(x, t, _labels(label, x))
    guided = classifier_free(run.network, scale, model.null_label)
    return lambda x, t: bound(guided(x, t, _labels(label, x)), *run.bounds)


def classifier_denoiser(run: Any, label: int, guidance: float, classifier: str) -> DenoiseFn:
    """The run's unconditional x0_hat steered to `label` by a noisy classifier's gradient with scale w
    (Dhariwal & Nichol 2021, Alg. 1, in x0 form; noisecraft.guide.guidance.classifier_guidance)."""
    from noisecraft.guide.classifier import load_classifier
    from noisecraft.guide.guidance import check_labels, check_scale, classifier_guidance

    scale = check_scale(guidance, "guidance")
    clf = load_classifier(classifier)
    check_labels(label, clf.net.num_classes)
    guided = classifier_guidance(base_denoiser(run), clf.log_prob, run.schedule, scale)
    return lambda x, t: guided(x, t, torch.full((x.shape[0],), label, dtype=torch.long))


def text_denoiser(run: Any, embedding: Tensor, guidance: float = 1.0) -> DenoiseFn:
    """x0_hat(x, t) of a text-conditioned run steered to a prompt's sentence embedding (Reimers & Gurevych
    2019): classifier-free guidance (Ho & Salimans 2022) against the zero embedding, bounded as configured."""
    from noisecraft.guide.guidance import check_scale, classifier_free

    scale = check_scale(guidance, "guidance")
    model = run.config.model
    _check_guidable(model, scale)
    embedding = embedding.reshape(1, -1)
    if embedding.shape[1] != model.text_dim:
        raise ValueError(f"the prompt embedding has {embedding.shape[1]} dimensions; the run expects {model.text_dim}")
    guided = classifier_free(run.network, scale, torch.zeros(model.text_dim)) if model.guidable else run.network
    return lambda x, t: bound(guided(x, t, embedding.to(x.device).expand(x.shape[0], -1)), *run.bounds)


def moment_matched_denoiser(run: Any, measurement: Any, cg_steps: int = 4) -> DenoiseFn:
    """Moment matching (Rozet et al. 2024) on the run's unbounded x0_hat, bounded after the correction.

    Its covariance is the denoiser's Jacobian (Tweedie); clipping x0_hat first would zero that Jacobian at
    every saturated pixel (the digits' background) and leave the known pixels uncorrected. Four CG steps:
    on a learned network more make it worse (docs/benchmarks/guidance.md), as its Jacobian is not exactly
    symmetric positive definite."""
    from noisecraft.guide.inverse import moment_matched

    corrected = moment_matched(base_denoiser(run, bounded=False), measurement, run.schedule, cg_steps)
    return clipped(corrected, *run.bounds)
