"""The 8x8 handwritten digits that ship with scikit-learn (Alpaydin & Kaynak 1998, UCI), in [-1, 1].

Pixel values 0..16 map linearly to [-1, 1]. The split is fixed: stratified by class, seed 0, 500 test
images, so every model and the digits metrics see the same test set.

`digits32` is the same split upsampled to 32x32 by bilinear interpolation (a larger image for latent diffusion,
noisecraft.runs.latent); `to_digits8` takes 32x32 images back to 8x8 by the least-squares inverse of that
upsampling (exact on digits32 itself), for the digits metrics.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TEST_SIZE = 500
LEVELS = 17  # pixel values 0..16
BIN_WIDTH = 2.0 / (LEVELS - 1)  # their spacing in [-1, 1]: the dequantization bin of the likelihood
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0) * 2.0 - 1.0
    x_train, x_test, y_train, y_test = train_test_split(
        images[:, None], digits.target.astype(np.int64), test_size=TEST_SIZE,
        random_state=SPLIT_SEED, stratify=digits.target,
    )
    return x_train, y_train, x_test, y_test


def load_digits_split(split: str = "train", size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(images of shape (n, 1, size, size) in [-1, 1], float32; labels (n,)) of the 'train' or 'test' split;
    size 32 is the bilinear 4x upsampling (digits32)."""
    x_train, y_train, x_test, y_test = _split()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size not in (8, 32):
        raise ValueError(f"digits come at size 8 or 32, got {size}")
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return (x.copy() if size == 8 else upsample32(x)), y.copy()


def upsample32(x: np.ndarray) -> np.ndarray:
    """8x8 digits (n, 1, 8, 8) as 32x32 by bilinear interpolation (half-pixel centres), still in [-1, 1]."""
    import torch

    up = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=4, mode="bilinear", align_corners=False)
    return up.clamp(-1.0, 1.0).numpy()


@functools.lru_cache(maxsize=1)
def _upsampling_pinv() -> np.ndarray:
    """The pseudo-inverse (64, 1024) of the bilinear 8 -> 32 upsampling as a matrix (1024, 64)."""
    import torch

    basis = torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)
    up = torch.nn.functional.interpolate(basis, scale_factor=4, mode="bilinear", align_corners=False)
    return torch.linalg.pinv(up.reshape(64, 1024).T).numpy()


def to_digits8(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """32x32 digits (n, 1, 32, 32) back to 8x8 (for the 8x8 digits metrics): the 8x8 image whose bilinear
    upsampling is nearest in least squares (the pseudo-inverse of `upsample32`, exact on its outputs), clipped
    to [-1, 1]."""
    import torch

    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 32, 32):
        raise ValueError(f"expected 32x32 digits of shape (n, 1, 32, 32), got {tuple(x.shape)}")
    small = x.double().reshape(-1, 1024) @ torch.from_numpy(_upsampling_pinv()).T
    return small.reshape(-1, 1, 8, 8).clamp(-1.0, 1.0).float()
