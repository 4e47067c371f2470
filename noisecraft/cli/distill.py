"""`noisecraft distill`: parse the options, call noisecraft.runs.distill.distill, print where the student went."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()


@app.command()
def distill(
    run: str = typer.Argument(..., help="The teacher: a trained run directory."),
    method: str = typer.Option("consistency", help="consistency (Song et al. 2023), progressive (Salimans & Ho 2022) "
                                "or regression (Luhman & Luhman 2021; --steps 1)."),
    steps: int = typer.Option(2, help="Network evaluations per sample of the student (1-4 typical)."),
    minutes: float = typer.Option(None, help="Distillation budget in minutes (all rounds of progressive together; "
                                  "regression's pairs included); default: the teacher's budget, ended at twice its "
                                  "training time."),
    max_steps: int = typer.Option(None, help="Or a budget in optimiser steps."),
    pairs: int = typer.Option(None, help="regression: (noise, ODE end) pairs drawn from the teacher (default: "
                              "max steps x batch size / 20, so that training sees each about 20 times)."),
    out: str = typer.Option(..., "--run", help="Directory of the student run (new)."),
    batch_size: int = typer.Option(None, help="Global batch size (default: the teacher's)."),
    lr: float = typer.Option(None, help="Peak learning rate (default: the teacher's)."),
    seed: int = typer.Option(None, help="Seed (default: the teacher's)."),
) -> None:
    """Distil a trained run into a student run that samples in --steps network evaluations."""
    from noisecraft.runs.distill import distill as distill_run

    with user_errors(out_dir="--run"):
        result = distill_run(run, out, method, steps, minutes, max_steps, pairs=pairs, batch_size=batch_size,
                             lr=lr, seed=seed)
    typer.echo(f"distilled {run} by {result.method} distillation into {result.steps}-evaluation sampling: "
               f"{result.step} steps in {result.seconds:.0f} s, loss {result.loss:.4g}")
    typer.echo(f"student run: {result.run_dir}  (sample it: noisecraft sample {result.run_dir})")
