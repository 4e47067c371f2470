"""`noisecraft train` and `noisecraft demo`: parse the options, build the run config
(noisecraft.runs.config.config_from_options), call noisecraft.runs.train.train, print where the run went."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()


@app.command()
def train(
    data: str = typer.Option("digits", help="digits, 8gaussians, moons, swissroll, checkerboard, an image folder or a .npy file."),
    preset: str = typer.Option("edm", help="Loss preset and its defaults: ddpm, score, v, edm, elbo."),
    loss: str = typer.Option(None, help="Override the loss preset (ddpm, score, v, edm, elbo)."),
    config: str = typer.Option(None, help="A YAML run config (overrides --data/--preset)."),
    run: str = typer.Option(None, help="Run directory (default runs/<data>-<preset>)."),
    minutes: float = typer.Option(None, help="Wall-clock budget in minutes."),
    steps: int = typer.Option(None, help="Number of optimiser steps."),
    batch_size: int = typer.Option(None, help="Global batch size."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    seed: int = typer.Option(None, help="Training seed."),
    resume: bool = typer.Option(False, help="Continue the run in --run from its latest checkpoint."),
) -> None:
    """Train a diffusion model; writes config.yaml, checkpoints/, metrics.jsonl in the run directory."""
    from noisecraft.runs.config import config_from_options, default_run_dir
    from noisecraft.runs.train import train as train_run

    with user_errors():
        if resume and run is None:
            raise ValueError("`resume` needs `run` RUN_DIR, the run to continue")
        cfg = None if resume else config_from_options(data, preset, loss, config, minutes=minutes, max_steps=steps,
                                                      batch_size=batch_size, lr=lr, seed=seed)
        result = train_run(cfg, run or default_run_dir(data, loss or preset), resume=resume)
    typer.echo(f"trained {result.step} steps, loss {result.loss:.4f}, {result.images_per_s:.0f} images/s")
    typer.echo(f"run directory: {result.run_dir}  (checkpoint {result.checkpoint}, metrics.jsonl)")


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Directory for the demo outputs.")) -> None:
    """Run the main demo on built-in data: train on 8x8 digits (~5 min), sample, score."""
    from noisecraft.runs.demo import run_demo

    run_demo(out)
