"""The picture of a restored recording: noisy input, estimate, the samples' 5-95% band and the R peaks
found in the estimate (neurokit2's detector), the first `seconds` of the recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisecraft.signals.denoise import Restored
from noisecraft.signals.metrics import r_peaks


def plot_restored(result: Restored, path: str | Path, seconds: float = 10.0, clean: np.ndarray | None = None) -> Path:
    """Write the PNG; `clean`, when known (benchmarks), is drawn too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisecraft.io import save_figure

    n = min(len(result.noisy), int(seconds * result.fs))
    t = np.arange(n) / result.fs
    peaks = r_peaks(result.clean, result.fs)
    peaks = peaks[peaks < n]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(t, result.noisy[:n], color="0.7", lw=0.8, label="noisy")
    if clean is not None:
        ax.plot(t, clean[:n], color="black", lw=0.8, ls="--", label="clean")
    ax.fill_between(t, result.lower[:n], result.upper[:n], color="tab:blue", alpha=0.3,
                    label=f"5-95% of {len(result.samples)} samples")
    ax.plot(t, result.clean[:n], color="tab:blue", lw=1.0, label=f"denoised ({result.method})")
    ax.plot(peaks / result.fs, result.clean[peaks], "v", color="tab:red", ms=6, label=f"R peaks ({len(peaks)})")
    ax.set_xlabel("time (s)")
    ax.set_title(f"{result.method}, {result.fs:g} Hz" + (f", sigma_y {result.sigma_y:.3g}" if result.sigma_y else ""))
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["plot_restored"]
