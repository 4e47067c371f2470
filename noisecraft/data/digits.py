"""The 8x8 handwritten digits that ship with scikit-learn (Alpaydin & Kaynak 1998, UCI), in [-1, 1].

Pixel values 0..16 map linearly to [-1, 1]. The split is fixed: stratified by class, seed 0, 500 test
images, so every model and the digits metrics see the same test set.
"""

from __future__ import annotations

import functools

import numpy as np

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


def load_digits_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images of shape (n, 1, 8, 8) in [-1, 1], float32; labels (n,)) of the 'train' or 'test' split."""
    x_train, y_train, x_test, y_test = _split()
    if split == "train":
        return x_train.copy(), y_train.copy()
    if split == "test":
        return x_test.copy(), y_test.copy()
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
