"""`noisecraft vae train`: the autoencoder of latent diffusion (noisecraft.runs.vae). Parses the options, calls
noisecraft.runs.vae.train_vae, prints where the run went and its latent scaling factor."""

from __future__ import annotations

import typer

from noisecraft.cli._common import as_options, user_errors

app = typer.Typer(no_args_is_help=True)


@app.command("train")
def train(
    data: str = typer.Option("digits32", help="Images: digits32 (default), skimage32 (patches of scikit-image's photographs), digits, or a folder of PNG/JPEG images."),
    run: str = typer.Option("runs/vae-digits32", help="Run directory of the autoencoder."),
    kind: str = typer.Option("kl", help="kl (AutoencoderKL, default) or tiny (AutoencoderTiny, the TAESD design)."),
    minutes: float = typer.Option(None, help="Time budget in minutes."),
    steps: int = typer.Option(None, help="Number of optimiser steps (default 2000 without --minutes)."),
    batch_size: int = typer.Option(None, help="Batch size (default 32)."),
    lr: float = typer.Option(None, help="Peak learning rate (default 1e-3)."),
    seed: int = typer.Option(None, help="Training seed."),
    resume: bool = typer.Option(False, help="Continue the run in --run; with --steps N, extend it to N steps."),
    overwrite: bool = typer.Option(False, help="Replace the trained autoencoder in --run."),
) -> None:
    """Train a KL-regularised autoencoder (diffusers AutoencoderKL; or AutoencoderTiny with --kind tiny) and
    measure its latent scaling factor; use it with `noisecraft train --latent RUN`."""
    from noisecraft.runs.vae import train_vae, vae_config

    with user_errors(max_steps="--steps"):
        if resume:
            result = train_vae(None, run, resume=True, max_steps=steps)
        else:
            cfg = vae_config(data, minutes=minutes, max_steps=steps, kind=kind, batch_size=batch_size, lr=lr, seed=seed)
            result = train_vae(cfg, run, overwrite=overwrite)
    if result.note:
        typer.echo(as_options(result.note, {"max_steps": "--steps"}))
        return
    typer.echo(f"trained {result.step} steps, loss {result.loss:.5f}, latent scaling factor {result.scaling_factor:.4f}")
    typer.echo(f"autoencoder run: {result.run_dir}  (checkpoint {result.checkpoint})")
