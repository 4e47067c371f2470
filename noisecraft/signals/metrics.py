"""How close a denoised ECG is to the clean one: the four metrics of DeScoD-ECG (Li et al. 2023, sec. IV-C;
after Romero et al. 2021's DeepFilter) and R-peak F1.

- SSD, the sum of squared distances sum (x - x_hat)^2;
- MAD, the maximum absolute distance max |x - x_hat|;
- PRD, the percentage root-mean-square difference 100 sqrt(sum (x - x_hat)^2 / sum x^2);
- cosine similarity <x, x_hat> / (|x| |x_hat|);
- R-peak F1: R peaks found by neurokit2's detector (Makowski et al. 2021) in the clean and the denoised signal,
  matched one to one within a tolerance (50 ms, the half-width the ANSI/AAMI EC57 beat-matching window uses
  with 150 ms total); F1 = 2 TP / (2 TP + FP + FN).

x is the clean signal with its median removed (and x_hat with its own), so an offset alone is not an error.
"""

from __future__ import annotations

import numpy as np


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - np.median(x)


def ssd(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = _centred(x), _centred(x_hat)
    return float(np.sum((x - x_hat) ** 2))


def mad(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = _centred(x), _centred(x_hat)
    return float(np.max(np.abs(x - x_hat)))


def prd(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = _centred(x), _centred(x_hat)
    return float(100 * np.sqrt(np.sum((x - x_hat) ** 2) / np.sum(x**2)))


def cosine(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = _centred(x), _centred(x_hat)
    return float(np.dot(x, x_hat) / (np.linalg.norm(x) * np.linalg.norm(x_hat)))


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the R peaks (neurokit2's default detector on its cleaned signal)."""
    import neurokit2 as nk

    clean = nk.ecg_clean(np.asarray(x, dtype=np.float64), sampling_rate=round(fs))
    _, info = nk.ecg_peaks(clean, sampling_rate=round(fs))
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def match_f1(truth: np.ndarray, found: np.ndarray, tolerance: int) -> float:
    """F1 of `found` peak indices against `truth`, each true peak matched to at most one found peak within
    `tolerance` samples (greedy in time order, which is optimal for sorted points on a line)."""
    truth, found = np.sort(truth), np.sort(found)
    tp, j = 0, 0
    for t in truth:
        while j < len(found) and found[j] < t - tolerance:
            j += 1
        if j < len(found) and abs(found[j] - t) <= tolerance:
            tp, j = tp + 1, j + 1
    total = len(truth) + len(found)
    return 2 * tp / total if total else 1.0


def r_peak_f1(x: np.ndarray, x_hat: np.ndarray, fs: float, tolerance_s: float = 0.05) -> float:
    return match_f1(r_peaks(x, fs), r_peaks(x_hat, fs), round(tolerance_s * fs))


def all_metrics(x: np.ndarray, x_hat: np.ndarray, fs: float, keep: np.ndarray | None = None) -> dict[str, float]:
    """SSD, MAD, PRD, cosine and R-peak F1 of x_hat against the clean x (both at rate fs). `keep`, a boolean mask,
    scores only those samples (and the R peaks of x and x_hat that fall on them): a stretch where the reference
    itself is not clean is left out."""
    keep = np.ones(len(x), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if keep.shape != np.shape(x) or np.shape(x) != np.shape(x_hat) or not keep.any():
        raise ValueError(f"x {np.shape(x)}, x_hat {np.shape(x_hat)} and keep {keep.shape} must share one shape, "
                         "and keep must select samples")
    truth, found = r_peaks(x, fs), r_peaks(x_hat, fs)
    a, b = x[keep], x_hat[keep]
    return {"ssd": ssd(a, b), "mad": mad(a, b), "prd": prd(a, b), "cosine": cosine(a, b),
            "f1": match_f1(truth[keep[truth]], found[keep[found]], round(0.05 * fs))}


__all__ = ["all_metrics", "cosine", "mad", "match_f1", "prd", "r_peak_f1", "r_peaks", "ssd"]
