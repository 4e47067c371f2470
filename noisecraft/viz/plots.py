"""Pictures a person would rather see than numbers: image grids and 2-D scatter plots (PNG), each written
atomically (noisecraft.io), so a failed write never leaves a truncated file in place of a good one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from noisecraft.io import atomic_path, save_figure


def grid_array(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """(n, c, h, w) in [-1, 1] -> one (H, W) or (H, W, 3) array in [0, 1], tiles separated by `pad` pixels."""
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.35, dtype=np.float32)  # grey gaps
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = \
            (np.clip(images[i], -1, 1) + 1) / 2
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)




def save_image_grids(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], scale: float = 0.07) -> Path:
    """Save titled grids side by side (e.g. samples beside real data) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [(title, grid_array(np.asarray(x))) for title, x in panels]
    width = sum(g.shape[1] for _, g in grids) * scale + 0.4 * len(grids)
    height = max(g.shape[0] for _, g in grids) * scale + 0.8
    fig, axes = plt.subplots(1, len(grids), figsize=(width, height), squeeze=False)
    for ax, (title, g) in zip(axes[0], grids):
        ax.imshow(g, cmap="gray_r" if g.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def save_scatter(path: str | Path, panels: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Scatter plots of 2-D points (first two coordinates), one panel each, shared limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allx = np.concatenate([np.asarray(x)[:, :2] for _, x in panels])
    lo, hi = np.percentile(allx, 0.5, axis=0), np.percentile(allx, 99.5, axis=0)
    margin = 0.1 * (hi - lo)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        x = np.asarray(x)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_xlim(lo[0] - margin[0], hi[0] + margin[0])
        ax.set_ylim(lo[1] - margin[1], hi[1] + margin[1])
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    return save_figure(fig, path)


def save_samples(x: np.ndarray, out: str | Path, is_image: bool, reference: np.ndarray | None = None,
                 title: str = "samples") -> Path:
    """Samples as a .npy array, or as a PNG (a grid of images, or a scatter of points) beside up to as many
    `reference` rows (the real data) when given; the format follows out's suffix."""
    out = Path(out)
    arr = np.asarray(x, dtype=np.float32)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"output {str(out)!r} must end in .png or .npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        with atomic_path(out) as tmp:
            np.save(tmp, arr)
        return out
    shown = arr[:100] if is_image else arr
    panels = [(title, shown)] + ([("real data", reference[:len(shown)])] if reference is not None else [])
    scale = 0.07 if reference is not None else 0.25
    return save_image_grids(out, panels, scale) if is_image else save_scatter(out, panels)


def save_panels(out: str | Path, panels: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Titled image grids side by side in one PNG (an input, its measurement and the results)."""
    out = Path(out)
    if out.suffix != ".png":
        raise ValueError(f"output {str(out)!r} must end in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_image_grids(out, [(title, np.asarray(x, dtype=np.float32)) for title, x in panels], scale=0.25)
