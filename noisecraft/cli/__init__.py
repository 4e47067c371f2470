"""The `noisecraft` command line (typer). Sub-applications live beside the code they drive."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Diffusion models from their mathematics.")


def _register_subapps() -> None:
    """Attach sub-command groups; each lives in its own module so the CLI stays one file per concept."""
    from noisecraft.cli.ddm import app as ddm_app
    from noisecraft.cli.tabular import app as tabular_app

    app.add_typer(ddm_app, name="ddm", help="The drift-diffusion model of decisions (response times).")
    app.add_typer(tabular_app, name="tabular", help="Synthetic tables: fit, sample, evaluate fidelity, utility, privacy.")
    from noisecraft.cli.theory import register as register_theory

    register_theory(app)  # likelihood, compare, plot


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
    from noisecraft.cli.train import train_command

    train_command(data, preset, loss, config, run, minutes, steps, batch_size, lr, seed, resume)


@app.command()
def sample(
    run: str = typer.Argument(..., help="Run directory."),
    solver: str = typer.Option("dpm++2m", help="Solver name (see noisecraft.SOLVERS)."),
    steps: int = typer.Option(20, help="Solver steps."),
    n: int = typer.Option(100, help="Number of samples."),
    seed: int = typer.Option(0, help="Sampling seed: sample i depends only on (seed, i)."),
    out: str = typer.Option(None, help="Output file, .png or .npy (default RUN/samples.png and RUN/samples.npy)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
    class_: int = typer.Option(None, "--class", help="Sample this class (class-conditional run or --classifier)."),
    guidance: float = typer.Option(1.0, help="Guidance scale w >= 0: 1 is the plain conditional model, 0 unconditional."),
    prompt: str = typer.Option(None, help="A text prompt routed to a class, e.g. 'a handwritten seven' (noisecraft[text])."),
    classifier: str = typer.Option(None, help="A noisy-classifier folder: classifier guidance instead of classifier-free."),
    threshold: float = typer.Option(None, help="Dynamic thresholding of x0 at this quantile, e.g. 0.95, in place of the run's clip (Saharia et al. 2022)."),
) -> None:
    """Draw samples from a trained run: a PNG grid (images) or scatter (2-D) and a .npy in the data's range."""
    if class_ is not None or prompt is not None or classifier is not None or guidance != 1.0:
        from noisecraft.cli.restore import guided_sample_command

        return guided_sample_command(run, class_, prompt, guidance, classifier, solver, steps, n, seed, out, ema,
                                     threshold)
    from noisecraft.cli.train import sample_command

    sample_command(run, solver, steps, n, seed, out, ema, threshold)


@app.command("eval")
def eval_(
    run: str = typer.Argument(..., help="Run directory of a digits model."),
    n: int = typer.Option(500, help="Number of samples scored."),
    solver: str = typer.Option("dpm++2m", help="Solver name."),
    steps: int = typer.Option(20, help="Solver steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Score a digits run: digits-FD, precision/recall, class histogram, beside the floor; writes RUN/eval.json."""
    from noisecraft.cli.train import eval_command

    eval_command(run, n, solver, steps, seed)


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Directory for the demo outputs.")) -> None:
    """Run the main demo on built-in data."""
    from noisecraft.runs.demo import run_demo

    run_demo(out)


from noisecraft.cli.restore import register as _register_inverse  # noqa: E402

_register_inverse(app)  # inpaint, upscale, denoise


_register_subapps()




