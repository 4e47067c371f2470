"""`noisecraft sample` and `noisecraft eval`: parse the options, call the run's Pipeline
(noisecraft.runs.pipeline), write the samples (PNG grid or scatter, .npy) or the scores."""

from __future__ import annotations

from pathlib import Path

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()

EVAL_BATCH_HELP = ("Rows per network call: samples are then bitwise the same for any --n and process count "
                   "(default: whole batches, equal to ~1e-6).")
LORA_HELP = ("A LoRA adapter folder (noisecraft finetune) merged into the run; repeat for several. Default outputs "
             "then go to the first adapter's folder.")
LORA_SCALE_HELP = "Weight of the --lora adapters: one for all, or one per adapter (default 1; 0 samples the base)."


@app.command()
def sample(
    run: str = typer.Argument(..., help="Run directory, or hf:PATH for a diffusers model folder."),
    solver: str = typer.Option(None, help="Solver name (see noisecraft.SOLVERS); default: the run's sample.solver."),
    steps: int = typer.Option(None, help="Solver steps; default: the run's sample.steps."),
    grid: str = typer.Option(None, help="Time grid: uniform, log_snr, karras, or diffusers (an hf: folder's scheduler "
                                        "timesteps); default: the run's sample.grid."),
    n: int = typer.Option(100, help="Number of samples."),
    seed: int = typer.Option(0, help="Sampling seed: sample i depends only on (seed, i)."),
    out: str = typer.Option(None, help="Output file, .png or .npy (default RUN/samples.png and RUN/samples.npy; "
                                       "guided: RUN/samples_classK_wW.png)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
    class_: int = typer.Option(None, "--class", help="Sample this class (class-conditional run or --classifier)."),
    guidance: float = typer.Option(1.0, help="Guidance scale w >= 0: 1 is the plain conditional model, 0 unconditional."),
    prompt: str = typer.Option(None, help="A text prompt: a text-conditioned run's condition, else routed to a class "
                                          "(noisecraft[text])."),
    classifier: str = typer.Option(None, help="A noisy-classifier folder: classifier guidance instead of classifier-free."),
    threshold: float = typer.Option(None, help="Dynamic thresholding of x0 at this quantile, e.g. 0.95, in place of the "
                                               "run's clip (Saharia et al. 2022)."),
    eval_batch: int = typer.Option(None, help=EVAL_BATCH_HELP),
    lora: list[str] = typer.Option(None, help=LORA_HELP),  # noqa: B008 (typer reads the list default)
    lora_scale: list[float] = typer.Option(None, help=LORA_SCALE_HELP),  # noqa: B008 (typer reads the list default)
    from_png: str = typer.Option(None, "--from-png", help="Draw again the samples of a PNG from noisecraft serve or "
                                                          "ui: its parameters replace the sampling options."),
) -> None:
    """Draw samples from a trained run: a PNG grid (images) or scatter (2-D) and a .npy in the data's range."""
    if from_png is not None:
        given = {"--solver": solver, "--steps": steps, "--grid": grid, "--class": class_, "--prompt": prompt,
                 "--classifier": classifier, "--threshold": threshold, "--eval-batch": eval_batch, "--lora": lora}
        return _sample_from_png(run, from_png, out, ema, [name for name, value in given.items() if value])
    from noisecraft.hf.load import load_pipeline
    from noisecraft.io import check_output
    from noisecraft.runs.distributed import is_main
    from noisecraft.viz.plots import save_samples

    with user_errors(label="--class"):
        if out is not None:
            check_output(out, (".png", ".npy"))
        from noisecraft.hf.lora import base_run_of, with_lora

        if not lora and base_run_of(run) is not None:  # an adapter folder (noisecraft finetune): its base with it
            lora, run = [run], base_run_of(run)
        pipe = load_pipeline(run, ema=ema, eval_batch=eval_batch).with_threshold(threshold)
        if lora:
            pipe = with_lora(pipe, lora, lora_scale or 1.0)
        home = Path(lora[0]) if lora else pipe.run_dir or Path(".")  # where default outputs go (hf: its folder)
        route = pipe.route(class_, prompt, classifier)
        if route.note:
            typer.echo(route.note)
        typer.echo(f"grid: {pipe.grid_source(solver, steps, grid)}")
        x = pipe.sample(n, solver=solver, steps=steps, seed=seed, grid=grid, label=class_, prompt=prompt,
                        guidance=guidance, classifier=classifier, progress=True, route=route)
        if not is_main():  # on several processes (torchrun) every rank holds all samples; rank 0 writes
            return
        if route.kind == "none":
            outs = [Path(out)] if out else [home / "samples.png", home / "samples.npy"]
            for path in outs:
                save_samples(x, path, pipe.is_image, pipe.reference())
        else:
            outs = [Path(out) if out else home / _guided_name(route, guidance)]
            save_samples(x, outs[0], pipe.is_image, title=_guided_title(route, prompt, guidance, classifier, threshold))
    typer.echo("wrote " + ", ".join(str(p) for p in outs))


def _sample_from_png(run: str, png: str, out: str | None, ema: bool, given: list[str]) -> None:
    """`sample RUN --from-png X.png`: the PNG's recipe (noisecraft.runs.recipe) drawn again from RUN, written as
    the same kind of PNG (default X_again.png), or as .npy."""
    import numpy as np

    from noisecraft.hf.load import load_pipeline
    from noisecraft.io import check_output
    from noisecraft.runs.recipe import draw, read_recipe, write_png

    with user_errors():
        if given:
            raise ValueError(f"--from-png takes the sampling options from the PNG; drop {', '.join(given)}")
        path = Path(out) if out else Path(png).with_name(Path(png).stem + "_again.png")
        check_output(path, (".png", ".npy"))
        recipe = read_recipe(png, "--from-png")
        typer.echo(f"{png}: {recipe.text()}")
        x = draw(load_pipeline(run, ema=ema, eval_batch=recipe.eval_batch), recipe)
        if path.suffix == ".npy":
            from noisecraft.io import atomic_path

            with atomic_path(path) as tmp:
                np.save(tmp, x.numpy(), allow_pickle=False)
        else:
            write_png(x, recipe, path)
    typer.echo(f"wrote {path}")


def _guided_name(route, guidance: float) -> str:
    return f"samples_text_w{guidance:g}.png" if route.kind == "text" else f"samples_class{route.label}_w{guidance:g}.png"


def _guided_title(route, prompt: str | None, guidance: float, classifier: str | None, threshold: float | None) -> str:
    if route.kind == "text":
        return f"{prompt!r}, CFG w={guidance:g}"
    bounded = "" if threshold is None else f", threshold {threshold:g}"
    head = f"{prompt!r} -> " if prompt is not None else ""
    return f"{head}class {route.label}, {'classifier' if classifier else 'CFG'} w={guidance:g}{bounded}"


@app.command("eval")
def eval_(
    run: str = typer.Argument(..., help="Run directory of a digits model."),
    n: int = typer.Option(500, help="Number of samples scored."),
    solver: str = typer.Option(None, help="Solver name; default: the run's sample.solver."),
    steps: int = typer.Option(None, help="Solver steps; default: the run's sample.steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    eval_batch: int = typer.Option(None, help=EVAL_BATCH_HELP),
) -> None:
    """Score a digits run: digits-FD, precision/recall, class histogram, beside the floor; writes RUN/eval.json."""
    from noisecraft.runs.distributed import is_main
    from noisecraft.runs.evaluate import evaluate_run, format_result

    with user_errors():
        result = evaluate_run(run, n, solver, steps, seed, eval_batch=eval_batch)
    if not is_main():
        return
    typer.echo(f"{result['solver']}, {result['steps']} steps, {n} samples: {format_result(result)}")
    typer.echo(f"wrote {Path(run) / 'eval.json'}")
