"""Pictures of a synthetic table beside the real one: per-column marginals and association matrices.

Matplotlib with the Agg backend, so plots are written as PNG files on machines without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from noisecraft.io import save_figure
from noisecraft.tabular.evaluate import association_matrix, category_labels, column_kinds
from noisecraft.tabular.schema import TableSchema


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_marginals(real: pd.DataFrame, synthetic: pd.DataFrame, numeric: list[str], categorical: list[str],
                   path: str | Path, max_levels: int = 12) -> Path:
    """One panel per column: overlaid density histograms (numbers) or side-by-side category shares."""
    plt = _pyplot()
    names = numeric + categorical
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        if name in numeric:
            a = pd.to_numeric(real[name], errors="coerce").dropna()
            b = pd.to_numeric(synthetic[name], errors="coerce").dropna()
            lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
            ax.hist(a, bins=bins, density=True, alpha=0.5, label="real")
            ax.hist(b, bins=bins, density=True, alpha=0.5, label="synthetic")
        else:
            p = category_labels(real[name]).value_counts(normalize=True)
            q = category_labels(synthetic[name]).value_counts(normalize=True)
            levels = list(p.index[:max_levels])
            x = np.arange(len(levels))
            ax.bar(x - 0.2, p.reindex(levels).fillna(0), 0.4, label="real")
            ax.bar(x + 0.2, q.reindex(levels).fillna(0), 0.4, label="synthetic")
            ax.set_xticks(x, [str(v)[:10] for v in levels], rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def plot_associations(real: pd.DataFrame, synthetic: pd.DataFrame, numeric: list[str], categorical: list[str],
                      path: str | Path) -> Path:
    """Association matrices of the real and synthetic tables side by side, and their absolute difference."""
    plt = _pyplot()
    a = association_matrix(real, numeric, categorical)
    b = association_matrix(synthetic, numeric, categorical)
    names = list(a.columns)
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3 + 1, 4.4))
    for ax, mat, title in zip(axes, (a, b, (a - b).abs()), ("real", "synthetic", "|real - synthetic|")):
        im = ax.imshow(mat.to_numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return Path(path)


def write_plots(real: pd.DataFrame, synthetic: pd.DataFrame, schema: TableSchema, folder: str | Path,
                stem: str) -> list[Path]:
    """The marginals and associations plots of `noisecraft tabular eval`: folder/{stem}_marginals.png and
    folder/{stem}_associations.png (the folder is created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    numeric, categorical = column_kinds(schema)
    return [plot_marginals(real, synthetic, numeric, categorical, folder / f"{stem}_marginals.png"),
            plot_associations(real, synthetic, numeric, categorical, folder / f"{stem}_associations.png")]
