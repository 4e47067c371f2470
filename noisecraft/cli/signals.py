"""`noisecraft signals ...`: train an ECG denoiser, denoise a recording, fill its gaps (noisecraft.signals).

`denoise` and `fill` read a .csv (one numeric column, or --column) or .npy recording at --fs Hz, write the
restored signal as CSV (columns: time_s, denoised, lower, upper) and a PNG beside it (noisy, denoised, the 5-95%
band of the samples, R peaks)."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    out: str = typer.Option("runs/ecg-conditional", "--out", help="Run directory to create."),
    method: str = typer.Option("conditional", help="conditional (clean given noisy) or prior (clean ECG alone)."),
    minutes: float = typer.Option(4.0, help="CPU-time budget of the training loop, in minutes."),
    steps: int = typer.Option(None, help="Optimiser steps (default: until --minutes is spent)."),
    records: int = typer.Option(80, help="ECGSYN recordings to simulate for training."),
    seed: int = typer.Option(0, help="Seed of the simulation and of training."),
    overwrite: bool = typer.Option(False, help="Replace a trained run in --out."),
) -> None:
    """Simulate ECGSYN training windows and train a 1-D diffusion model on them."""
    from noisecraft.io import check_output_folder
    from noisecraft.signals.model import check_method, train_signals

    with user_errors():
        check_method(method)
        check_output_folder(out)
        result = train_signals(out, method, minutes=minutes, steps=steps, records=records, seed=seed,
                               overwrite=overwrite, progress=True)
    typer.echo(f"trained {method} for {result.step} steps (final loss {result.loss:.4f}); saved to {out}")


def _restore(recording: str, fs: float, column: str | None, out: str, run: str, action) -> None:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from noisecraft.io import check_output, write_csv_atomic
    from noisecraft.signals.ecg import read_recording
    from noisecraft.signals.model import SignalModel
    from noisecraft.signals.plots import plot_restored

    with user_errors(fs="--fs", column="--column", sigma_y="--sigma-y"):
        path = check_output(out, (".csv",))
        x = read_recording(recording, column)
        model = SignalModel.load(run)
        result = action(model, x, fs)
        frame = pd.DataFrame({"time_s": np.arange(len(x)) / fs, "denoised": result.clean, "lower": result.lower,
                              "upper": result.upper})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(frame, path)
        png = plot_restored(result, Path(path).with_suffix(".png"))
    typer.echo(f"wrote {path} and {png} ({result.method}, {len(x)} samples at {fs:g} Hz)")


@app.command()
def denoise(
    recording: str = typer.Argument(..., help="Recording: .csv (one numeric column, or --column) or 1-D .npy."),
    fs: float = typer.Option(..., "--fs", help="Sampling rate of the recording, Hz."),
    out: str = typer.Option(..., "--out", help="Output .csv (a .png is written beside it)."),
    run: str = typer.Option("runs/ecg-conditional", help="Run made by `noisecraft signals train`."),
    column: str = typer.Option(None, help="CSV column holding the signal."),
    n: int = typer.Option(8, help="Samples per window (their spread is the band)."),
    steps: int = typer.Option(None, help="Sampler steps (default: 20 conditional, 50 prior)."),
    guide: str = typer.Option("ddnm", help="Prior runs: posterior wrapper ddnm, dps or mmps."),
    sigma_y: float = typer.Option(None, help="Prior runs: in-band noise std in normalised units (default: estimated)."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Denoise an ECG recording with a conditional or a prior run."""
    from noisecraft.signals.denoise import denoise as run_denoise

    _restore(recording, fs, column, out, run,
             lambda model, x, rate: run_denoise(model, x, rate, n=n, steps=steps, seed=seed, guide=guide,
                                                     sigma_y=sigma_y))


@app.command()
def fill(
    recording: str = typer.Argument(..., help="Recording with NaN (empty) samples where data were dropped."),
    fs: float = typer.Option(..., "--fs", help="Sampling rate of the recording, Hz."),
    out: str = typer.Option(..., "--out", help="Output .csv (a .png is written beside it)."),
    run: str = typer.Option("runs/ecg-prior", help="Prior run made by `noisecraft signals train --method prior`."),
    column: str = typer.Option(None, help="CSV column holding the signal."),
    n: int = typer.Option(8, help="Completions (their spread is the band)."),
    steps: int = typer.Option(None, help="DDPM steps (default 50)."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Fill dropped segments (NaN samples) of an ECG recording with a prior run."""
    from noisecraft.signals.denoise import fill_gaps

    _restore(recording, fs, column, out, run,
             lambda model, x, rate: fill_gaps(model, x, rate, n=n, steps=steps, seed=seed))
