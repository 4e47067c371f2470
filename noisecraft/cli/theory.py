"""`noisecraft likelihood`, `noisecraft compare` and `noisecraft plot ...`: parse the options, call the library
(the run's Pipeline, noisecraft.experiments.compare, noisecraft.viz.figures), print or write the results."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()
plot_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Pictures of the theory: schedules, the forward process, reverse paths (PNG).")


def _check_out(out: str) -> Path:
    """The output PNG, checked before any work (noisecraft.io.check_output); its folder is made."""
    from noisecraft.io import check_output

    path = check_output(out, (".png",))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- likelihood ------------------------------------------------------------------------------------
@app.command()
def likelihood(
    run: str = typer.Argument(..., help="Run directory."),
    data: str = typer.Option("digits", help="digits or a 2-D toy; must match the run's data shape."),
    split: str = typer.Option("test", help="train or test (toys: test draws use a fresh seed)."),
    probes: int = typer.Option(4, help="Hutchinson probes per divergence evaluation."),
    n: int = typer.Option(200, help="Number of data points."),
    exact: bool = typer.Option(False, help="Exact divergence (D vector-Jacobian products) instead of Hutchinson."),
    rtol: float = typer.Option(1e-5, help="ODE relative tolerance."),
    atol: float = typer.Option(1e-5, help="ODE absolute tolerance."),
    seed: int = typer.Option(0, help="Seed of the dequantization noise and the probes."),
) -> None:
    """Exact NLL through the probability-flow ODE: nats and bits/dim with a standard error."""
    from noisecraft.analysis.likelihood import bits_per_dim
    from noisecraft.data import heldout
    from noisecraft.hf.load import load_pipeline

    with user_errors():
        if n < 2:
            raise ValueError(f"`n` must be >= 2 (a standard error needs two points), got {n}")
        if probes < 1:
            raise ValueError(f"`probes` must be >= 1, got {probes}")
        x, bin_width = heldout(data, split, n, seed)
        pipe = load_pipeline(run)
        start = time.perf_counter()
        result = pipe.likelihood(x, probes=probes, exact=exact, rtol=rtol, atol=atol, seed=seed, bin_width=bin_width)
    seconds = time.perf_counter() - start
    mean, se = result.mean_and_stderr()
    dim = result.dim
    bpd = float(bits_per_dim(mean, dim, bin_width))
    bpd_se = se / (dim * math.log(2.0))
    how = "exact divergence" if exact else f"Hutchinson, {probes} Rademacher probe(s), fresh at each quadrature node"
    typer.echo(f"run {run} (step {pipe.step}), {data} {split} split, n = {x.shape[0]}, D = {dim}")
    typer.echo(f"NLL       {mean:.4f} +- {se:.4f} nats per sample")
    typer.echo(f"bits/dim  {bpd:.4f} +- {bpd_se:.4f}")
    if bin_width:
        typer.echo(f"offset    dequantized with U(-{bin_width / 2:g}, {bin_width / 2:g}) (17 levels in [-1, 1], bin width "
                   f"2/16); bits/dim includes -log2({bin_width:g}) = +{-math.log2(bin_width):.3f} bits/dim")
    else:
        typer.echo("offset    none: continuous data, bits/dim of the density (no dequantization)")
    typer.echo(f"estimator {how}; rtol {rtol:g}, atol {atol:g}; {result.nfe} function evaluations; {seconds:.1f} s")


# -- compare ---------------------------------------------------------------------------------------
@app.command()
def compare(
    data: str = typer.Option("digits", help="digits or a 2-D toy (8gaussians, moons, swissroll, checkerboard)."),
    minutes: float = typer.Option(None, help="Wall-clock training budget per model (default 2 unless --steps)."),
    steps: int = typer.Option(None, help="Optimiser-step budget per model."),
    out: str = typer.Option(None, help="Output directory (default runs/compare-<data>)."),
    nfe: str = typer.Option("10,20,50", help="Comma-separated NFE budgets for the fixed-step solvers."),
    solvers: str = typer.Option("ddpm,ddim,pc,heun,dpm++2m,rk45", help="Comma-separated solvers."),
    n_samples: int = typer.Option(500, help="Samples per quality measurement."),
    n_likelihood: int = typer.Option(200, help="Held-out points for NLL and ELBO."),
    probes: int = typer.Option(4, help="Hutchinson probes (data of more than 2 dimensions)."),
    seed: int = typer.Option(0, help="Training and sampling seed."),
    reuse: bool = typer.Option(False, help="Measure runs already trained in the output directory."),
    threads: int = typer.Option(None, help="torch threads for training (CPU)."),
) -> None:
    """Train DDPM and score-based models with one network and budget; write a report (markdown + PNG)."""
    from noisecraft.experiments.compare import CompareSettings, command_line
    from noisecraft.experiments.compare import compare as run_compare

    with user_errors():
        settings = CompareSettings.from_options(data, minutes, steps, out, nfe, solvers, n_samples, n_likelihood,
                                                probes, seed, reuse, threads)
        results = run_compare(settings, command=command_line())
    typer.echo(f"wrote {settings.out / 'report.md'} ({results['total_s']:.0f} s)")
    for line in results["findings"]:
        typer.echo(f"- {line}")


# -- plot ------------------------------------------------------------------------------------------
@plot_app.command("schedules")
def plot_schedules_cmd(out: str = typer.Option("schedules.png", help="Output PNG.")) -> None:
    """alpha, sigma and log-SNR of every schedule on shared axes."""
    from noisecraft.viz.figures import plot_schedules

    with user_errors():
        path = plot_schedules(_check_out(out))
    typer.echo(f"wrote {path}")


@plot_app.command("forward")
def plot_forward_cmd(
    run: str = typer.Option(None, help="A run directory: its data and schedule (overrides --data/--schedule)."),
    data: str = typer.Option("digits", help="digits or a 2-D toy (8gaussians, moons, swissroll, checkerboard)."),
    schedule: str = typer.Option("vp_cosine", help="vp_linear, vp_cosine, discrete_vp, sub_vp, ve, edm."),
    out: str = typer.Option("forward.png", help="Output PNG."),
) -> None:
    """A strip of data turning into noise under the forward process."""
    import torch

    from noisecraft.core.schedules import schedule_from_config
    from noisecraft.data import DataConfig, check_builtin
    from noisecraft.hf.load import load_pipeline
    from noisecraft.viz.figures import plot_forward

    with user_errors():
        path = _check_out(out)
        if run is not None:
            pipe = load_pipeline(run)
            x0, sched = pipe.config.data.load().x, pipe.schedule
        else:
            x0, sched = DataConfig(name=check_builtin(data), n=3000).load().x, schedule_from_config({"name": schedule})
        plot_forward(path, torch.as_tensor(x0), sched)
    typer.echo(f"wrote {path}")


@plot_app.command("trajectories")
def plot_trajectories_cmd(
    run: str = typer.Option(None, help="A 2-D run directory; without it, the exact denoiser of eight Gaussians."),
    schedule: str = typer.Option("vp_linear", help="Schedule of the oracle when no --run is given."),
    paths: int = typer.Option(24, help="Number of paths."),
    steps: int = typer.Option(60, help="Solver steps along each path."),
    seed: int = typer.Option(0, help="Seed of the prior draws and the SDE noise."),
    out: str = typer.Option("trajectories.png", help="Output PNG."),
) -> None:
    """Reverse-SDE and PF-ODE paths over the density p_t, from the same prior draws."""
    from noisecraft.analysis.oracle import ring8
    from noisecraft.core.schedules import schedule_from_config
    from noisecraft.hf.load import load_pipeline
    from noisecraft.viz.figures import plot_trajectories

    with user_errors():
        path = _check_out(out)
        if run is not None:
            pipe = load_pipeline(run)
            if pipe.sample_shape != (2,):
                raise ValueError(f"trajectories need a 2-D run; {run!r} models samples of shape {pipe.sample_shape}")
            plot_trajectories(path, pipe.float64_denoiser(), pipe.schedule, data=pipe.config.data.load().x,
                              n_paths=paths, steps=steps, seed=seed, title=f"reverse paths of run {run}")
        else:
            sched, oracle = schedule_from_config({"name": schedule}), ring8()
            plot_trajectories(path, oracle.denoiser(sched), sched, oracle=oracle, n_paths=paths, steps=steps, seed=seed)
    typer.echo(f"wrote {path}")
