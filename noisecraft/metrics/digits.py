"""Sample quality for 8x8 digits, measured inside the project.

A small CNN trained on the digits train split (weights shipped beside this module, made by
scripts/train_digits_classifier.py) gives penultimate-layer features; from them: the Frechet distance
to the 500 test images, "digits-FD" (the FID recipe of Heusel et al. 2017 with this classifier in place
of Inception), precision and recall on k-NN manifolds (Kynkaanniemi et al. 2019, k = 3), and the
histogram of predicted classes. The floor is the same FD for 500 random train images: no model can be
expected to beat real held-out data.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn

WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")
FEATURE_DIM = 128


class DigitsClassifier(nn.Module):
    """conv32-conv64-pool-conv64-pool-fc128-fc10 on (batch, 1, 8, 8) images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 2 * 2, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@functools.lru_cache(maxsize=1)
def classifier() -> DigitsClassifier:
    """The shipped classifier, in eval mode."""
    from safetensors.torch import load_file

    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"digits classifier weights missing at {WEIGHTS}; run scripts/train_digits_classifier.py")
    net = DigitsClassifier()
    net.load_state_dict(load_file(str(WEIGHTS)))
    return net.eval()


def _as_images(x: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float32)
    x = x.reshape(-1, 1, 8, 8) if x.ndim in (2, 3) else x
    if x.shape[1:] != (1, 8, 8):
        raise ValueError(f"digits metrics need images of shape (n, 1, 8, 8) in [-1, 1], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("digits metrics got non-finite sample values; expected finite numbers in [-1, 1]")
    return x.clamp(-1, 1)


@torch.no_grad()
def features_and_classes(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features (n, 128) float64, predicted classes (n,))."""
    net = classifier()
    feats = net.features(_as_images(x))
    return feats.double().numpy(), net.head(feats).argmax(1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product is handled just below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as in Heusel et al.'s code
        eye = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean.real))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of fake samples inside the real
    k-NN manifold (union of balls reaching each real point's k-th neighbour), and the converse."""

    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def inside(points: np.ndarray, centers: np.ndarray, r: np.ndarray) -> float:
        d = np.sqrt(((points[:, None] - centers[None]) ** 2).sum(-1))
        return float((d <= r[None]).any(1).mean())

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


@functools.lru_cache(maxsize=1)
def _test_features() -> tuple[np.ndarray, np.ndarray]:
    from noisecraft.data.digits import load_digits_split

    x, _ = load_digits_split("test")
    return features_and_classes(x)


def evaluate_digits(samples: Tensor | np.ndarray) -> dict:
    """digits-FD, precision, recall and the class histogram of `samples` against the 500 test images."""
    feats, classes = features_and_classes(samples)
    test_feats, _ = _test_features()
    precision, recall = precision_recall(test_feats, feats)
    return {
        "n": int(feats.shape[0]),
        "digits_fd": frechet_distance(feats, test_feats),
        "precision": precision,
        "recall": recall,
        "class_histogram": np.bincount(classes, minlength=10).tolist(),
    }


@functools.lru_cache(maxsize=4)
def floor(n: int = 500, seed: int = 0) -> dict:
    """The same metrics for n random train images: the best a model can be expected to reach."""
    from noisecraft.data.digits import load_digits_split

    x, _ = load_digits_split("train")
    pick = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    return evaluate_digits(x[pick])
