"""`noisecraft grid optimize RUN --nfe 5`: find a sampling time grid for the run's model (GITS, Align Your Steps or
noisecraft's Frechet-distance search; noisecraft.solvers.grid_search), keep it in RUN/grids.json, and report it.
`noisecraft sample` then uses it for that solver and step count."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer(no_args_is_help=True)


@app.command()
def optimize(
    run: str = typer.Argument(..., help="Run directory."),
    nfe: int = typer.Option(5, help="Network evaluations per sample, the final clean estimate included."),
    solver: str = typer.Option(None, help="Solver the grid is for (see noisecraft.SOLVERS); default: the run's."),
    method: str = typer.Option("fd", help="fd (default: Frechet distance to a fine teacher, started at GITS and the "
                                          "default grid; best measured: mix16 NFE 5 dpm++2m W2 0.173 vs default 0.277, "
                                          "docs/benchmarks/optimize_grid.md), gits (Chen et al. 2024, DP; multistep "
                                          "solvers priced with their history) or ays (Sabour et al. 2024, uses the run's data)."),
    batch: int = typer.Option(256, help="Prior (or data) samples the search uses."),
    seed: int = typer.Option(0, help="Seed of those samples."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
) -> None:
    """Optimise the time grid of RUN's sampler at --nfe evaluations and keep it in RUN/grids.json."""
    from noisecraft.runs.grids import GRIDS_FILE, optimize_run_grid
    from noisecraft.runs.pipeline import load_run

    with user_errors():
        pipe = load_run(run, ema=ema)
        stored = optimize_run_grid(pipe, nfe, solver, method, batch=batch, seed=seed)
    typer.echo(f"{stored.method} grid for {stored.solver}, {stored.steps} steps (NFE {stored.nfe}): "
               + ", ".join(f"{t:.4g}" for t in stored.times))
    typer.echo(f"end-point error vs a fine teacher {stored.error:.4g} (default grid {stored.default_error:.4g}); "
               f"Frechet distance {stored.fd:.4g} (default {stored.default_fd:.4g})")
    typer.echo(f"wrote {run}/{GRIDS_FILE}; used by `noisecraft sample {run} --solver {stored.solver} --steps {stored.steps}`")
