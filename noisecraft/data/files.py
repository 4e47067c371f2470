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
#: PIL modes read as one grayscale channel
GRAY_MODES = ("L", "1", "I;16", "I")


def load_image_folder(folder: str | Path) -> np.ndarray:
    """All images under `folder` (sorted by path) as float32 (n, channels, height, width) in [-1, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist or is not a directory")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"image folder {str(folder)!r} holds no images; expected files ending in {IMAGE_SUFFIXES}")
    arrays, first = [], None
    for path in paths:
        arr = read_image(path)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if first is None:
            first = (path, arr.shape)
        elif arr.shape != first[1]:
            raise ValueError(f"images must all have one size and mode: {first[0].name} is {first[1]} "
                             f"(channels, height, width) but {path.name} is {arr.shape}")
        arrays.append(arr)
    return np.stack(arrays) / 127.5 - 1.0


def read_image(path: str | Path, mode: str | None = None, what: str = "image") -> np.ndarray:
    """The pixels of one image file as float32 (height, width) or (height, width, channels) in 0..255,
    converted to `mode` ('L' or 'RGB'; None keeps grayscale as 'L' and makes anything else 'RGB'). A file
    PIL cannot decode (not an image, truncated, corrupt) is a ValueError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = mode or ("L" if img.mode in GRAY_MODES else "RGB")
            return np.asarray(img.convert(mode), dtype=np.float32)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's ways to say "corrupt"
        raise ValueError(f"{what} {str(path)!r} is not a readable image: {err}") from None


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

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    arr = read_image(path, "L" if shape[0] == 1 else "RGB", what)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"{what} {path.name} is {arr.shape[1]}x{arr.shape[2]}; expected {shape[1]}x{shape[2]}")
    return torch.from_numpy(arr / 127.5 - 1.0)[None]
