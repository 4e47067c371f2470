"""Digits metrics: the shipped classifier, Frechet distance, precision/recall and the floor."""

from __future__ import annotations

import numpy as np
import pytest

from noisecraft.data.digits import load_digits_split
from noisecraft.metrics.digits import (
    evaluate_digits,
    features_and_classes,
    floor,
    frechet_distance,
    precision_recall,
)


def test_classifier_is_accurate_on_the_test_split() -> None:
    x, y = load_digits_split("test")
    _, pred = features_and_classes(x)
    assert (pred == y).mean() > 0.97


def test_frechet_distance_of_gaussians_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20_000, 3))
    b = rng.normal(0.5, 2, (20_000, 3))
    # ||mu||^2 + sum (1 + 4 - 2*2) per dim = 3*0.25 + 3*1
    assert frechet_distance(a, b) == pytest.approx(3.75, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_detects_missing_modes() -> None:
    rng = np.random.default_rng(1)
    real = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(5, 0.1, (100, 2))])
    half = rng.normal(0, 0.1, (200, 2))  # only one of the two modes
    p, r = precision_recall(real, half)
    assert p > 0.9 and r < 0.6


def test_floor_is_low_and_noise_is_far() -> None:
    f = floor()
    assert f["digits_fd"] < 15 and f["precision"] > 0.8 and f["recall"] > 0.8
    assert sum(f["class_histogram"]) == 500
    noise = evaluate_digits(np.random.default_rng(0).uniform(-1, 1, (500, 1, 8, 8)))
    assert noise["digits_fd"] > 20 * f["digits_fd"]
    with pytest.raises(ValueError, match=r"\(n, 1, 8, 8\)"):
        evaluate_digits(np.zeros((5, 3, 8, 8)))
