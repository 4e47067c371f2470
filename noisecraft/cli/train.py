"""`noisecraft train` and `noisecraft demo`: parse the options, build the run config
(noisecraft.runs.config.config_from_options), call noisecraft.runs.train.train, print where the run went."""

from __future__ import annotations

import typer

from noisecraft.cli._common import as_options, user_errors

app = typer.Typer()


@app.command()
def train(
    data: str = typer.Option(None, help="digits (default), digits32, skimage32, 8gaussians, moons, swissroll, checkerboard, an image folder or a .npy file."),
    preset: str = typer.Option(None, help="Loss preset and its defaults: ddpm, score, v, edm (default), elbo, flow."),
    loss: str = typer.Option(None, help="Override the loss preset (ddpm, score, v, edm, elbo, flow)."),
    config: str = typer.Option(None, help="A YAML run config (overrides --data/--preset)."),
    run: str = typer.Option(None, help="Run directory (default runs/<data>-<preset>)."),
    minutes: float = typer.Option(None, help="Wall-clock budget in minutes."),
    steps: int = typer.Option(None, help="Number of optimiser steps."),
    batch_size: int = typer.Option(None, help="Global batch size."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    seed: int = typer.Option(None, help="Training seed."),
    resume: bool = typer.Option(False, help="Continue the run in --run from its newest checkpoint; with --steps N, extend it to N steps."),
    overwrite: bool = typer.Option(False, help="Replace the trained run in --run (its checkpoints and metrics are deleted)."),
    latent: str = typer.Option(None, help="An autoencoder run (noisecraft vae train): diffusion on its scaled latents."),
) -> None:
    """Train a diffusion model; writes config.yaml, checkpoints/, metrics.jsonl in the run directory."""
    from noisecraft.runs.config import config_from_options, default_run_dir
    from noisecraft.runs.latent import latent_run
    from noisecraft.runs.train import check_resume_options
    from noisecraft.runs.train import train as train_run

    with user_errors(max_steps="--steps"):
        if resume and run is None:
            raise ValueError("`resume` needs `run` RUN_DIR, the run to continue")
        if resume:  # the run keeps its config: options that would change it are errors, --steps extends it
            check_resume_options(run, data, preset, loss, config, batch_size, lr, seed, minutes, latent)
            result = train_run(None, run, resume=True, max_steps=steps, overwrite=overwrite)
        else:
            data, preset = data or "digits", preset or "edm"
            cfg = config_from_options(data, preset, loss, config, minutes=minutes, max_steps=steps,
                                      batch_size=batch_size, lr=lr, seed=seed)
            if latent is not None:
                cfg = latent_run(cfg, latent)
            default = default_run_dir(data, loss or preset) + ("-latent" if latent else "")
            result = train_run(cfg, run or default, overwrite=overwrite)
    if result.note:
        typer.echo(as_options(result.note, {"max_steps": "--steps"}))
        return
    typer.echo(f"trained {result.step} steps, loss {result.loss:.4f}, {result.images_per_s:.0f} images/s")
    typer.echo(f"run directory: {result.run_dir}  (checkpoint {result.checkpoint}, metrics.jsonl)")


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Directory for the demo outputs.")) -> None:
    """Run the main demo on built-in data: train on 8x8 digits (~5 min), sample, score."""
    from noisecraft.io import check_output_folder
    from noisecraft.runs.demo import run_demo

    with user_errors():
        check_output_folder(out)  # before five minutes of training
    run_demo(out)
