"""The `noisecraft` command line (typer): one module per command group, each with its own Typer app, all
attached here the same way. A command parses its options, calls the library, and writes files."""

from __future__ import annotations

import typer

from noisecraft.cli import (
    ddm,
    distill,
    finetune,
    grid,
    hf,
    reflow,
    restore,
    sample,
    serve,
    signals,
    tabular,
    theory,
    train,
    ui,
    vae,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Diffusion models from their mathematics.")

for module in (train, sample, restore, theory, distill, reflow, finetune, hf, serve, ui):  # top-level commands
    app.add_typer(module.app)
app.add_typer(theory.plot_app, name="plot", help="Pictures of the theory: schedules, forward process, reverse paths (PNG).")
app.add_typer(ddm.app, name="ddm", help="The drift-diffusion model of decisions (response times).")
app.add_typer(tabular.app, name="tabular", help="Synthetic tables: fit, sample, evaluate fidelity, utility, privacy.")
app.add_typer(vae.app, name="vae", help="The autoencoder of latent diffusion: train it, then `train --latent RUN`.")
app.add_typer(grid.app, name="grid", help="Sampling time grids optimised for a run (GITS, Align Your Steps).")
app.add_typer(signals.app, name="signals", help="1-D signals (ECG): train a denoiser, denoise a recording, fill gaps.")
