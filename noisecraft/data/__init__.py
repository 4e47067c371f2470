"""Training data: 2-D toys, scikit-learn's 8x8 digits (and their 32x32 upsampling, digits32), 32x32 patches of
scikit-image's public-domain photographs (skimage32), image folders and .npy arrays, behind one config.

`DataConfig.load()` returns a `Dataset`: a float32 tensor of samples (finite, checked here, at the
boundary), optional class labels, and whether the samples are images (for grids) or points (for plots).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from noisecraft.data.digits import load_digits_split
from noisecraft.data.files import load_image_folder, load_npy
from noisecraft.data.toys import TOYS, toy_2d

#: the digits at each size: 8x8 as scikit-learn ships them, and upsampled to 32x32 (noisecraft.data.digits)
DIGITS: dict[str, int] = {"digits": 8, "digits32": 32}
#: patch sets of scikit-image's public-domain / CC0 sample images (noisecraft.data.scans.PHOTOS), by patch size
PATCHES: dict[str, int] = {"skimage32": 32}
BUILTIN: tuple[str, ...] = tuple(DIGITS) + tuple(PATCHES) + TOYS
#: the built-in sets of images (the rest are points)
IMAGES: tuple[str, ...] = tuple(DIGITS) + tuple(PATCHES)


def load_patches(name: str, split: str = "train") -> np.ndarray:
    """A patch set (PATCHES) as (n, 1, size, size) float32 in [-1, 1]: 'train', the overlapping patches (stride 8,
    with flips) of the left three quarters of each image, or 'test', the non-overlapping tiles of the right quarter
    (noisecraft.data.scans; each image resized to a shorter side of 128 pixels)."""
    from noisecraft.data.scans import PHOTOS, heldout_patches, train_patches

    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    size = PATCHES[name]
    if split == "train":
        return train_patches(size, stride=8, sources=PHOTOS)
    return heldout_patches(size, sources=PHOTOS)[0]


@dataclass
class Dataset:
    """Samples x (n, *shape) float32, labels (n,) or None, and whether x holds images."""

    x: Tensor
    labels: Tensor | None
    name: str

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1

    def __len__(self) -> int:
        return self.x.shape[0]


class DataConfig(BaseModel):
    """`name` is a built-in dataset (digits, digits32, skimage32, 8gaussians, moons, swissroll, checkerboard), an image folder
    or a .npy file; `n` is the number of toy points drawn (seed `seed`); `classes` keeps only the samples of
    those classes (labelled data: digits), their labels unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = "digits"
    n: int = Field(20_000, ge=1)
    seed: int = 0
    classes: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)

    def load(self) -> Dataset:
        labels = None
        if self.name in DIGITS:
            x, y = load_digits_split("train", DIGITS[self.name])
            labels = torch.from_numpy(y)
        elif self.name in PATCHES:
            x = load_patches(self.name)
        elif self.name in TOYS:
            x = toy_2d(self.name, self.n, self.seed)
        elif self.name.endswith(".npy"):
            x = load_npy(self.name)
        elif Path(self.name).is_dir():
            x = load_image_folder(self.name)
        else:
            raise ValueError(f"unknown data {self.name!r}; expected one of {list(BUILTIN)}, "
                             "a folder of PNG/JPEG images or a .npy file")
        return keep_classes(Dataset(check_samples(x, self.name), labels, self.name), self.classes)


def keep_classes(data: Dataset, classes: list[int] | None) -> Dataset:
    """The samples of `data` whose label is one of `classes` (all of them if None); a ValueError when the data
    have no labels or none of those classes."""
    if classes is None:
        return data
    if data.labels is None:
        raise ValueError(f"data.classes {classes} needs labelled data (digits); {data.name!r} has no labels")
    keep = torch.isin(data.labels, torch.tensor(classes))
    if not keep.any():
        raise ValueError(f"data {data.name!r} has no samples of data.classes {classes}; its labels are "
                         f"{sorted(set(data.labels.tolist()))}")
    return Dataset(data.x[keep], data.labels[keep], data.name)


def check_samples(x: np.ndarray, name: str) -> Tensor:
    """x as a float32 tensor, or a ValueError naming how many values are NaN or inf."""
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"data {name!r} holds {bad} non-finite values (NaN or inf); expected finite numbers")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def check_builtin(name: str) -> str:
    """`name` if it is a built-in dataset, else a ValueError listing them."""
    if name not in BUILTIN:
        raise ValueError(f"unknown data {name!r}; expected one of {list(BUILTIN)}")
    return name


def heldout(name: str, split: str = "test", n: int = 200, seed: int = 0) -> tuple[Tensor, float | None]:
    """n points of a built-in dataset for evaluation, float64, and the bin width of their grid (digits: 2/16;
    digits32 and toys: None, continuous). Toy test points are fresh draws (seed 10_000 + seed), never the training draws."""
    from noisecraft.data.digits import BIN_WIDTH

    check_builtin(name)
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    if name in DIGITS:
        images, _ = load_digits_split(split, DIGITS[name])
        # the 32x32 upsampling leaves the 8x8 grid of values: no bin width
        return torch.from_numpy(images[:n]).double(), BIN_WIDTH if name == "digits" else None
    if name in PATCHES:
        return torch.from_numpy(load_patches(name, split)[:n]).double(), None
    return torch.from_numpy(toy_2d(name, n, seed=0 if split == "train" else 10_000 + seed)).double(), None


__all__ = ["BUILTIN", "DIGITS", "IMAGES", "PATCHES", "DataConfig", "Dataset", "check_builtin", "heldout", "load_digits_split",
           "load_patches", "toy_2d"]
