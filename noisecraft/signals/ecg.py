"""ECG data: ECGSYN training signals, the real pyhrv test recording, recordings read from files and checked,
and the amplitude normalisation every method shares.

Training signals come from ECGSYN, the dynamical model of McSharry et al. 2003 ("A dynamical model for
generating synthetic electrocardiogram signals", IEEE TBME 50(3)), through neurokit2's `ecg_simulate`
(Makowski et al. 2021), over heart rates and morphologies: the model's P, Q, R, S, T Gaussian amplitudes a_i,
widths b_i and angles theta_i are drawn around McSharry's values (their Table 1). The real test signal is the
BITalino recording that pyhrv ships (Gomes et al. 2019; 1000 Hz, 22.35 s), copied into
noisecraft/signals/data with its PROVENANCE; it is never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the rate (Hz) the models see: every recording is resampled to it and back
MODEL_FS: float = 125.0
#: the rate ECGSYN integrates at before resampling to MODEL_FS (its own default is 256 Hz)
SIMULATION_FS: float = 250.0
#: the shortest recording accepted, in seconds: two beats even at 30 beats per minute
MIN_SECONDS: float = 4.0
#: sampling rates accepted, Hz: the ECG band (to 40 Hz) must fit below Nyquist
FS_RANGE: tuple[float, float] = (100.0, 20_000.0)
#: heart rates (beats per minute) a recording at its stated rate must show; outside: the rate is wrong
HR_RANGE: tuple[float, float] = (30.0, 240.0)

_TI = np.array([-70.0, -15.0, 0.0, 15.0, 100.0])  # McSharry et al. 2003, Table 1 (degrees)
_AI = np.array([1.2, -5.0, 30.0, -7.5, 0.75])
_BI = np.array([0.25, 0.1, 0.1, 0.1, 0.4])
SAMPLE = Path(__file__).parent / "data" / "pyhrv_sample_ecg.csv"


def simulate(duration: float, fs: float, heart_rate: float, rng: np.random.Generator) -> np.ndarray:
    """One ECGSYN recording (duration s at fs Hz) with a random morphology around McSharry's: P, Q, S scaled
    by 0.3-2, R by 0.7-1.3, T by -1.2-2 (inverted T waves included), widths by 0.7-1.4, angles moved by
    up to 10 degrees."""
    import neurokit2 as nk

    ai = _AI * np.array([rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.uniform(0.7, 1.3),
                         rng.uniform(0.3, 2.0), rng.uniform(-1.2, 2.0)])
    bi = _BI * rng.uniform(0.7, 1.4, 5)
    ti = _TI + np.array([rng.uniform(-10, 10), rng.uniform(-3, 3), 0, rng.uniform(-3, 3), rng.uniform(-10, 10)])
    seed = int(rng.integers(2**31))
    x = nk.ecg_simulate(duration=duration, sampling_rate=int(fs), heart_rate=heart_rate, heart_rate_std=2,
                        noise=0, method="ecgsyn", random_state=seed, ai=tuple(ai), bi=tuple(bi), ti=tuple(ti))
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class Scale:
    """x_norm = (x - offset) / scale: the recording's median and the spread of its 0.5-40 Hz band."""

    offset: float
    scale: float

    @classmethod
    def of(cls, x: np.ndarray, fs: float) -> Scale:
        """offset = median(x); scale = the standard deviation of x band-passed to 0.5-40 Hz (baseline wander and
        mains, which may dwarf the ECG, do not set the scale), times 4 so QRS peaks sit near +-1."""
        from scipy.signal import butter, sosfiltfilt

        sos = butter(2, [0.5, min(40.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
        spread = float(np.std(sosfiltfilt(sos, x - np.median(x))))
        return cls(float(np.median(x)), 4 * spread if spread > 0 else 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.offset) / self.scale

    def invert(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) * self.scale + self.offset


def training_set(records: int = 80, duration: float = 20.0, length: int = 256, hop: int = 128,
                 seed: int = 0, fs: float = MODEL_FS) -> np.ndarray:
    """(n, length) float32 windows of ECGSYN recordings (simulated at SIMULATION_FS, resampled to fs), heart
    rates 45-140 bpm, each recording normalised by its own Scale, each window multiplied by a gain in 0.6-1.4
    (the scale of a noisy recording is not known exactly)."""
    from noisecraft.signals.windows import resample, windows

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(records):
        x = resample(simulate(duration, SIMULATION_FS, float(rng.uniform(45, 140)), rng), SIMULATION_FS, fs)
        w = windows(Scale.of(x, fs)(x), length, hop)
        out.append(w * rng.uniform(0.6, 1.4, (len(w), 1)))
    return np.concatenate(out).astype(np.float32)


def sample_recording() -> tuple[np.ndarray, float]:
    """The real BITalino ECG that pyhrv ships (ADC units, 1000 Hz, 22.35 s): the held-out test signal."""
    return np.loadtxt(SAMPLE, skiprows=1, dtype=np.float64), 1000.0


def read_recording(path: str | Path, column: str | None = None) -> np.ndarray:
    """One signal from a .npy (1-D) or .csv file (one numeric column, or `column`; a header row is optional).
    Errors name the file; NaN samples are left for `check_recording` to report."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recording {str(path)!r} does not exist")
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.dtype.kind not in "fiu" or x.ndim != 1:
            raise ValueError(f"{path.name} holds a {x.dtype} array of shape {x.shape}; expected a 1-D array of numbers")
        return x.astype(np.float64)
    if path.suffix != ".csv":
        raise ValueError(f"recording {str(path)!r} must be a .csv or .npy file")
    import pandas as pd

    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].split(",")
    header = any(_not_number(cell) for cell in first)
    frame = pd.read_csv(path, header=0 if header else None)
    if column is None:
        if frame.shape[1] != 1:
            raise ValueError(f"{path.name} has {frame.shape[1]} columns; pass `column` to pick the signal")
        column = frame.columns[0]
    elif column not in frame.columns:
        raise ValueError(f"{path.name} has no column {column!r}; its columns are {list(map(str, frame.columns))}")
    values = pd.to_numeric(frame[column], errors="coerce")
    text = frame[column].notna() & values.isna()
    if text.any():
        row = int(np.argmax(text.to_numpy()))
        raise ValueError(f"{path.name} row {row + 1 + header} holds {frame[column].iloc[row]!r}; expected a number")
    return values.to_numpy(dtype=np.float64)


def _not_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell.strip() != ""
    return False


def check_recording(x: np.ndarray, fs: float, what: str = "recording") -> np.ndarray:
    """x as float64 if it is a usable ECG at rate fs: a positive rate in FS_RANGE, no NaN or inf, at least
    MIN_SECONDS long, and a heart rate in HR_RANGE at that rate (else the stated rate is wrong)."""
    x = np.asarray(x, dtype=np.float64)
    if not (np.isfinite(fs) and FS_RANGE[0] <= fs <= FS_RANGE[1]):
        raise ValueError(f"`fs` must be a sampling rate in {FS_RANGE[0]:g}-{FS_RANGE[1]:g} Hz, got {fs}")
    if x.ndim != 1:
        raise ValueError(f"{what} must be one signal (1-D), got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{what} holds {int(bad.sum())} NaN or inf samples (the first at sample {int(np.argmax(bad))}); "
                         "expected finite numbers (fill gaps first: `noisecraft signals fill`)")
    if len(x) < MIN_SECONDS * fs:
        raise ValueError(f"{what} has {len(x)} samples ({len(x) / fs:.2f} s at {fs:g} Hz); expected at least "
                         f"{MIN_SECONDS:g} s")
    rate = heart_rate(x, fs)
    if not HR_RANGE[0] <= rate <= HR_RANGE[1]:
        raise ValueError(f"at `fs` {fs:g} Hz the {what} beats {rate:.0f} times a minute, outside "
                         f"{HR_RANGE[0]:g}-{HR_RANGE[1]:g}: is `fs` the rate it was sampled at?")
    return x


def heart_rate(x: np.ndarray, fs: float) -> float:
    """Beats per minute at rate fs: the lag of the highest autocorrelation peak of the QRS energy envelope
    (8-20 Hz band, squared, 100 ms moving average) among lags of 0.2-4 s; 0 when no peak stands out."""
    from scipy.signal import butter, find_peaks, sosfiltfilt

    sos = butter(2, [8.0, min(20.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    env = np.convolve(sosfiltfilt(sos, x - np.mean(x)) ** 2, np.ones(max(1, int(0.1 * fs))), mode="same")
    env = env - env.mean()
    n = len(env)
    r = np.fft.irfft(np.abs(np.fft.rfft(env, 2 * n)) ** 2)[:n]
    if r[0] <= 0:
        return 0.0
    r = r / r[0]
    lo, hi = int(0.2 * fs), min(int(4 * fs), n - 1)
    peaks, _ = find_peaks(r[lo:hi], height=0.1)
    if len(peaks) == 0:
        return 0.0
    lag = lo + peaks[np.argmax(r[lo:hi][peaks])]
    return 60.0 * fs / lag


__all__ = ["FS_RANGE", "HR_RANGE", "MIN_SECONDS", "MODEL_FS", "SAMPLE", "SIMULATION_FS", "Scale", "check_recording", "heart_rate",
           "read_recording", "sample_recording", "simulate", "training_set"]
