"""Bodies of `noisecraft likelihood`, `noisecraft compare` and `noisecraft plot ...`: argument checks at the
boundary, then the library calls (noisecraft.analysis.likelihood, noisecraft.experiments.compare, noisecraft.viz.figures), with
errors shown as one line naming the bad value. `register(app)` attaches them to the root CLI."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

plot_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Pictures of the theory: schedules, the forward process, reverse paths (PNG).")


def _fail(err: Exception | str) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _check_data(data: str) -> None:
    from noisecraft.data import BUILTIN

    if data not in BUILTIN:
        raise ValueError(f"unknown data {data!r}; expected one of {list(BUILTIN)}")


def _check_out(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- likelihood ------------------------------------------------------------------------------------
def likelihood_command(run: str, data: str, split: str, probes: int, n: int, exact: bool, rtol: float, atol: float,
                       seed: int) -> None:
    """NLL and bits/dim of held-out data under a run's PF-ODE, with a standard error and the offset used."""
    import torch

    from noisecraft.analysis.likelihood import bits_per_dim, dequantize, log_likelihood
    from noisecraft.experiments.compare import DIGITS_BIN, float64_denoise
    from noisecraft.runs.pipeline import load_run

    try:
        _check_data(data)
        if probes < 1:
            raise ValueError(f"--probes must be >= 1, got {probes}")
        if n < 2:
            raise ValueError(f"--n must be >= 2 (a standard error needs two points), got {n}")
        if split not in ("train", "test"):
            raise ValueError(f"--split must be 'train' or 'test', got {split!r}")
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"--rtol and --atol must be > 0, got {rtol} and {atol}")
        loaded = load_run(run)
        g = torch.Generator().manual_seed(seed)
        if data == "digits":
            from noisecraft.data import load_digits_split

            images, _ = load_digits_split(split)
            x = torch.from_numpy(images[:n]).double()
        else:
            from noisecraft.data import toy_2d

            x = torch.from_numpy(toy_2d(data, n, seed=0 if split == "train" else 10_000 + seed)).double()
        if tuple(x.shape[1:]) != tuple(loaded.sample_shape):
            raise ValueError(f"data {data!r} has samples of shape {tuple(x.shape[1:])}, but run {run!r} models "
                             f"shape {tuple(loaded.sample_shape)}")
        bin_width = DIGITS_BIN if data == "digits" else None
        if bin_width:
            x = dequantize(x, bin_width, g)
        start = time.perf_counter()
        result = log_likelihood(float64_denoise(loaded), loaded.denoiser.schedule, x,
                                divergence="exact" if exact else "hutchinson", probes=probes, rtol=rtol, atol=atol,
                                generator=g)
    except ValueError as err:
        _fail(err)
        return
    seconds = time.perf_counter() - start
    mean, se = result.mean_and_stderr()
    dim = result.dim
    bpd = float(bits_per_dim(mean, dim, bin_width))
    bpd_se = se / (dim * math.log(2.0))
    how = "exact divergence" if exact else f"Hutchinson, {probes} Rademacher probe(s), fresh at each quadrature node"
    typer.echo(f"run {run} (step {loaded.step}), {data} {split} split, n = {x.shape[0]}, D = {dim}")
    typer.echo(f"NLL       {mean:.4f} +- {se:.4f} nats per sample")
    typer.echo(f"bits/dim  {bpd:.4f} +- {bpd_se:.4f}")
    if bin_width:
        typer.echo(f"offset    dequantized with U(-{bin_width / 2:g}, {bin_width / 2:g}) (17 levels in [-1, 1], bin width "
                   f"2/16); bits/dim includes -log2({bin_width:g}) = +{-math.log2(bin_width):.3f} bits/dim")
    else:
        typer.echo("offset    none: continuous data, bits/dim of the density (no dequantization)")
    typer.echo(f"estimator {how}; rtol {rtol:g}, atol {atol:g}; {result.nfe} function evaluations; {seconds:.1f} s")


# -- compare ---------------------------------------------------------------------------------------
def compare_command(data: str, minutes: float | None, steps: int | None, out: str | None, nfe: str, solvers: str,
                    n_samples: int, n_likelihood: int, probes: int, seed: int, reuse: bool, threads: int | None) -> None:
    from noisecraft.experiments.compare import CompareSettings, command_line, compare

    try:
        _check_data(data)
        nfes = tuple(int(v) for v in nfe.split(",") if v.strip())
        settings = CompareSettings(
            data=data, out=Path(out or f"runs/compare-{data}"), minutes=minutes, train_steps=steps, seed=seed,
            nfes=nfes, solvers=tuple(s.strip() for s in solvers.split(",") if s.strip()), n_samples=n_samples,
            n_likelihood=n_likelihood, probes=probes, reuse=reuse, threads=threads)
        settings.check()
        results = compare(settings, command=command_line())
    except ValueError as err:
        _fail(err)
        return
    typer.echo(f"wrote {settings.out / 'report.md'} ({results['total_s']:.0f} s)")
    for line in results["findings"]:
        typer.echo(f"- {line}")


# -- plot ------------------------------------------------------------------------------------------
@plot_app.command("schedules")
def plot_schedules_cmd(out: str = typer.Option("schedules.png", help="Output PNG.")) -> None:
    """alpha, sigma and log-SNR of every schedule on shared axes."""
    from noisecraft.viz.figures import plot_schedules

    try:
        path = plot_schedules(_check_out(out))
    except ValueError as err:
        _fail(err)
        return
    typer.echo(f"wrote {path}")


def _schedule_by_name(name: str):
    from noisecraft.core.schedules import schedule_from_config

    return schedule_from_config({"name": name})


@plot_app.command("forward")
def plot_forward_cmd(
    run: str = typer.Option(None, help="A run directory: its data and schedule (overrides --data/--schedule)."),
    data: str = typer.Option("digits", help="digits or a 2-D toy (8gaussians, moons, swissroll, checkerboard)."),
    schedule: str = typer.Option("vp_cosine", help="vp_linear, vp_cosine, discrete_vp, sub_vp, ve, edm."),
    out: str = typer.Option("forward.png", help="Output PNG."),
) -> None:
    """A strip of data turning into noise under the forward process."""
    import torch

    from noisecraft.viz.figures import plot_forward

    try:
        path = _check_out(out)
        if run is not None:
            from noisecraft.runs.pipeline import load_run

            loaded = load_run(run)
            x0, sched = loaded.config.data.load().x, loaded.denoiser.schedule
        else:
            _check_data(data)
            from noisecraft.data import DataConfig

            x0, sched = DataConfig(name=data, n=3000).load().x, _schedule_by_name(schedule)
        plot_forward(path, torch.as_tensor(x0), sched)
    except ValueError as err:
        _fail(err)
        return
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
    from noisecraft.viz.figures import plot_trajectories

    try:
        path = _check_out(out)
        if run is not None:
            from noisecraft.runs.pipeline import load_run

            loaded = load_run(run)
            if loaded.sample_shape != (2,):
                raise ValueError(f"trajectories need a 2-D run; {run!r} models samples of shape {loaded.sample_shape}")
            from noisecraft.experiments.compare import float64_denoise

            plot_trajectories(path, float64_denoise(loaded), loaded.denoiser.schedule, data=loaded.config.data.load().x,
                              n_paths=paths, steps=steps, seed=seed, title=f"reverse paths of run {run}")
        else:
            from noisecraft.analysis.oracle import ring8

            sched = _schedule_by_name(schedule)
            oracle = ring8()
            plot_trajectories(path, oracle.denoiser(sched), sched, oracle=oracle, n_paths=paths, steps=steps, seed=seed)
    except ValueError as err:
        _fail(err)
        return
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Attach `likelihood`, `compare` and the `plot` group to the root CLI."""

    @app.command("likelihood")
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
        likelihood_command(run, data, split, probes, n, exact, rtol, atol, seed)

    @app.command("compare")
    def compare_(
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
        if minutes is None and steps is None:
            minutes = 2.0
        compare_command(data, minutes, steps, out, nfe, solvers, n_samples, n_likelihood, probes, seed, reuse, threads)

    app.add_typer(plot_app, name="plot", help="Pictures of the theory: schedules, forward process, reverse paths (PNG).")
