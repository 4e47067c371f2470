"""Patches of the real micrographs, scans and photographs scikit-image ships, for a patch prior of scans.

Each source image (`SOURCES`: a retinal fundus photograph, an immunohistochemistry micrograph, a
fluorescence micrograph of cells, a photograph of the moon, one of coins) is made grayscale, cropped and
resized so that its shorter side is `side` pixels, then split by columns: the left (1 - held_out) share is
the training region, the rightmost share is held out. Training patches are cut from the training regions
only (stride `stride`, with their horizontal and vertical flips); test patches are the non-overlapping
tiles of the held-out regions, so no test pixel is ever seen in training. `VALIDATION` (the cameraman
photograph) is used by no split and serves for choosing hyperparameters (a baseline's regularisation
weight) away from the test images; `phantom` is the Shepp-Logan head phantom (Shepp & Logan 1974), a
second test set of another kind entirely.

`PHOTOS` (public-domain and CC0 photographs and textures) are cut the same way into the built-in image set
`skimage32` (noisecraft.data), a second real image set for latent diffusion.

Pixels are in [-1, 1], arrays float32 of shape (n, 1, patch, patch). scikit-image is an optional
dependency (`pip install scikit-image`); its sample images ship with it (scikit-image's data/README lists
their sources and licences).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: scikit-image sample images (skimage.data names) whose patches train and test the prior
SOURCES: tuple[str, ...] = ("retina", "immunohistochemistry", "cell", "moon", "coins")
#: the image kept apart from training and testing, for choosing hyperparameters
VALIDATION = "camera"
#: scikit-image sample images whose docstrings state no copyright restriction (public domain or CC0): the
#: cameraman (CC0, Lav Varshney), Greek coins from Pompeii (Brooklyn Museum, no known restrictions), a text corner
#: image (Wikipedia, public domain), brick, grass and gravel textures (CC0); the patches of `skimage32`
PHOTOS: tuple[str, ...] = ("camera", "coins", "text", "brick", "grass", "gravel")
#: central crop (fraction of each side) of images with empty borders: the fundus photograph's black surround
_CROP = {"retina": 0.62}


def _skimage_data():
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("the scan patches need scikit-image: pip install scikit-image") from None
    return skimage.data


def load_source(name: str, side: int = 128) -> np.ndarray:
    """One scikit-image sample image, grayscale in [0, 1], centrally cropped if listed in _CROP and resized
    (with anti-aliasing) so that its shorter side is `side`; float64 (H, W)."""
    from skimage.color import rgb2gray
    from skimage.transform import resize

    data = _skimage_data()
    known = dict.fromkeys((*SOURCES, VALIDATION, *PHOTOS))
    if name not in known:
        raise ValueError(f"unknown scan source {name!r}; expected one of {list(known)}")
    img = np.asarray(getattr(data, name)())
    img = rgb2gray(img) if img.ndim == 3 else img.astype(np.float64) / 255.0
    if name in _CROP:
        h, w = img.shape
        ch, cw = int(h * _CROP[name]), int(w * _CROP[name])
        img = img[(h - ch) // 2:(h + ch) // 2, (w - cw) // 2:(w + cw) // 2]
    scale = side / min(img.shape)
    shape = (round(img.shape[0] * scale), round(img.shape[1] * scale))
    return np.clip(resize(img, shape, anti_aliasing=True), 0.0, 1.0)


def _check(patch: int, stride: int, held_out: float, side: int) -> None:
    if patch < 4 or stride < 1:
        raise ValueError(f"patch must be >= 4 and stride >= 1, got patch={patch}, stride={stride}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    if side * held_out < patch:
        raise ValueError(f"the held-out strip ({held_out:g} of {side} pixels) is narrower than one {patch}-pixel "
                         "patch; raise side or held_out")


def _split(img: np.ndarray, held_out: float, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(training region, held-out region): the held-out strip is a whole number of patches wide."""
    width = max(patch, int(img.shape[1] * held_out) // patch * patch)
    return img[:, :-width], img[:, -width:]


def _windows(region: np.ndarray, patch: int, stride: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(region, (patch, patch))[::stride, ::stride]
    return windows.reshape(-1, patch, patch)


def _to_model(patches: np.ndarray) -> np.ndarray:
    return (patches[:, None] * 2.0 - 1.0).astype(np.float32)


def train_patches(patch: int = 32, stride: int = 4, held_out: float = 0.25, side: int = 128,
                  sources: Sequence[str] = SOURCES) -> np.ndarray:
    """Overlapping patches of the training regions with their flips, (n, 1, patch, patch) in [-1, 1]."""
    _check(patch, stride, held_out, side)
    out = []
    for name in sources:
        train, _ = _split(load_source(name, side), held_out, patch)
        p = _windows(train, patch, stride)
        out += [p, p[:, ::-1], p[:, :, ::-1], p[:, ::-1, ::-1]]
    return _to_model(np.concatenate(out))


def heldout_patches(patch: int = 32, held_out: float = 0.25, side: int = 128, sources: Sequence[str] = SOURCES,
                 per_image: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Non-overlapping tiles of the held-out regions ((n, 1, patch, patch) in [-1, 1]) and a name for each
    ('retina:0', ...); `per_image` keeps that many per source, spread evenly down the strip."""
    _check(patch, patch, held_out, side)
    out, names = [], []
    for name in sources:
        _, test = _split(load_source(name, side), held_out, patch)
        tiles = _windows(test, patch, patch)
        if per_image is not None:
            tiles = tiles[np.linspace(0, len(tiles) - 1, min(per_image, len(tiles))).round().astype(int)]
        out.append(tiles)
        names += [f"{name}:{i}" for i in range(len(tiles))]
    return _to_model(np.concatenate(out)), names


def validation_patches(patch: int = 32, side: int = 128, n: int = 4, seed: int = 0) -> np.ndarray:
    """n patches of the validation image (the cameraman), at random places fixed by `seed`."""
    img = load_source(VALIDATION, side)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, img.shape[0] - patch + 1, n)
    cols = rng.integers(0, img.shape[1] - patch + 1, n)
    return _to_model(np.stack([img[r:r + patch, c:c + patch] for r, c in zip(rows, cols)]))


def phantom(size: int = 32) -> np.ndarray:
    """The Shepp-Logan phantom (scikit-image's phantom.png) resized to size x size, (1, 1, size, size) in [-1, 1]."""
    from skimage.transform import resize

    img = _skimage_data().shepp_logan_phantom()
    return _to_model(np.clip(resize(img, (size, size), anti_aliasing=True), 0.0, 1.0)[None])


__all__ = ["PHOTOS", "SOURCES", "VALIDATION", "heldout_patches", "load_source", "phantom", "train_patches", "validation_patches"]
