"""`noisecraft reflow`: parse the options, call noisecraft.runs.reflow.reflow, print where the new run went."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()


@app.command()
def reflow(
    run: str = typer.Argument(..., help="The teacher: a trained run directory (a flow run, or any diffusion run)."),
    out: str = typer.Option(..., "--run", help="Directory of the reflowed run (new)."),
    pairs: int = typer.Option(5000, help="Coupled (noise, sample) pairs drawn from the teacher's ODE."),
    steps: int = typer.Option(32, help="Solver steps of the teacher's ODE for each pair."),
    minutes: float = typer.Option(None, help="Training budget in minutes (default: the teacher's budget)."),
    max_steps: int = typer.Option(None, help="Or a budget in optimiser steps."),
    solver: str = typer.Option(None, help="Solver of the teacher's ODE (default: the teacher's own, if deterministic)."),
    batch_size: int = typer.Option(None, help="Global batch size (default: the teacher's)."),
    lr: float = typer.Option(None, help="Peak learning rate (default: the teacher's)."),
    seed: int = typer.Option(0, help="Seed of the pairs' noise and labels."),
) -> None:
    """Reflow a trained run (Liu et al. 2022): pair noise with the teacher's ODE samples, then train a run on the
    straight paths between them, so that 1-2 Euler steps sample it."""
    from noisecraft.runs.reflow import reflow as reflow_run

    with user_errors(out_dir="--run"):
        result = reflow_run(run, out, pairs, steps, minutes, max_steps, solver=solver, seed=seed,
                            batch_size=batch_size, lr=lr)
    typer.echo(f"reflowed {run}: {result.pairs} pairs in {result.pair_seconds:.0f} s, then {result.train.step} "
               f"training steps, loss {result.train.loss:.4g} ({result.seconds:.0f} s in all)")
    typer.echo(f"reflowed run: {result.run_dir}  (sample it: noisecraft sample {result.run_dir} --steps 1)")
