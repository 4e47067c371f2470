"""Data from disk: a folder of PNG/JPEG images of one size (grayscale or RGB), or a .npy array.

Images are scaled from 0..255 to [-1, 1] as in DDPM (Ho et al. 2020, sec. 3.3). Errors say what was
found and what was expected, before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image_folder(folder: str | Path) -> np.ndarray:
    """All images under `folder` (sorted by path) as float32 (n, channels, height, width) in [-1, 1]."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist or is not a directory")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"image folder {str(folder)!r} holds no images; expected files ending in {IMAGE_SUFFIXES}")
    arrays, first = [], None
    for path in paths:
        with Image.open(path) as img:
            mode = "L" if img.mode in ("L", "1", "I;16", "I") else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if first is None:
            first = (path, arr.shape)
        elif arr.shape != first[1]:
            raise ValueError(f"images must all have one size and mode: {first[0].name} is {first[1]} "
                             f"(channels, height, width) but {path.name} is {arr.shape}")
        arrays.append(arr)
    return np.stack(arrays) / 127.5 - 1.0


def load_npy(path: str | Path) -> np.ndarray:
    """A .npy array used as given: (n, dim) vectors, (n, height, width) or (n, channels, height, width) images."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"array file {str(path)!r} does not exist")
    x = np.load(path, allow_pickle=False)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{path.name} holds {x.dtype} values; expected numbers")
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"{path.name} has shape {x.shape}; expected (n, dim), (n, h, w) or (n, c, h, w) with n >= 1")
    return x


def load_image(path: str | Path, shape: tuple[int, ...], what: str = "image") -> torch.Tensor:
    """One PNG/JPEG as (1, C, H, W) in [-1, 1]; its size and channels must be `shape` (C, H, W)."""
    import torch
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if shape[0] == 1 else "RGB"), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"{what} {path.name} is {arr.shape[1]}x{arr.shape[2]}; expected {shape[1]}x{shape[2]}")
    return torch.from_numpy(arr / 127.5 - 1.0)[None]
