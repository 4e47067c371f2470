"""The noise-conditional classifier: it learns p(k | x_t) of a mixture, round-trips to disk, and guides."""

from __future__ import annotations

import torch
from tests._helpers import gen

import noisecraft as nc
from noisecraft.guide.classifier import load_classifier, train_classifier
from noisecraft.guide.guidance import classifier_guidance

SCHED = nc.schedules.VPCosine()


def test_noisy_classifier_learns_the_exact_classifier_and_guides(tmp_path, ring):
    x, labels = ring.sample(4000, gen(0))
    model = train_classifier(x.float(), labels, SCHED, steps=300, batch_size=256, width=64, seed=0)
    model = load_classifier(model.save(tmp_path / "clf"))
    # near the data the exact classifier is almost certain; the learned one agrees with it
    t = torch.full((512,), 0.1, dtype=torch.float64)
    x0, _ = ring.sample(512, gen(1))
    x_t = float(SCHED.alpha(0.1)) * x0 + float(SCHED.sigma(0.1)) * torch.randn(512, 2, generator=gen(2), dtype=torch.float64)
    exact = ring.responsibilities(x_t, t, SCHED).argmax(1)
    learned = model.logits(x_t.float(), t).argmax(1)
    assert (exact == learned).float().mean() > 0.9
    # guiding the unconditional oracle with it puts most samples in the requested class
    guided = classifier_guidance(ring.denoiser(SCHED), model.log_prob, SCHED, scale=2.0)
    out = nc.sample(guided, SCHED, solver="dpm++2m", steps=20, shape=(400, 2), generator=gen(3), cond=torch.tensor(5),
                    dtype=torch.float64)
    assert (ring.responsibilities(out).argmax(1) == 5).float().mean() > 0.8
