"""The Hugging Face commands (`noisecraft export`, ...): parse the options, call noisecraft.hf, print what was
written. Each command is one `@app.command()` on this module's app, attached at the top level."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()

#: the formats `noisecraft export` writes
EXPORT_FORMATS = ("diffusers",)


@app.command()
def export(
    run: str = typer.Argument(..., help="A trained run directory (or hf:FOLDER, a diffusers folder)."),
    out: str = typer.Argument(..., help="The folder to write (new or empty)."),
    fmt: str = typer.Option("diffusers", "--format", help=f"One of {', '.join(EXPORT_FORMATS)}."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it holds an earlier export."),
    ema: bool = typer.Option(True, help="Export the EMA weights."),
) -> None:
    """Export a run as a diffusers folder: unet/ (UNet2DModel), scheduler/, model_index.json where DDPMPipeline
    samples it, and noisecraft.json (docs/hf.md)."""
    from noisecraft.hf.export import export_diffusers

    with user_errors(out="OUT", run="RUN"):
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown `format` {fmt!r}; expected one of {list(EXPORT_FORMATS)}")
        result = export_diffusers(run, out, force=force, ema=ema)
    plan = result.plan
    typer.echo(f"exported {run} (step {result.step}) to {result.path}: unet/ (UNet2DModel), scheduler/ "
               f"({plan.scheduler_class})" + (f", model_index.json ({plan.pipeline_class})" if plan.pipeline_class else ""))
    for note in plan.notes:
        typer.echo(f"note: {note}")
