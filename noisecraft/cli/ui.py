"""`noisecraft ui`: parse the options, load the models, serve the web page (noisecraft.serve.ui)."""

from __future__ import annotations

import typer

from noisecraft.cli._common import user_errors

app = typer.Typer()

UI_EXTRA = "the web page needs gradio: pip install 'noisecraft[serve]'"


@app.command()
def ui(
    runs: list[str] = typer.Argument(..., metavar="RUN...", help="Models to show: RUN or NAME=RUN (a run directory, a "  # noqa: B008
                                               "distilled student, or hf:PATH for a diffusers folder)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(7860, help="Port to listen on."),
) -> None:
    """Serve the web page: sample, draw a noisecraft PNG again, inpaint, upscale, denoise, theory figures
    (Gradio, offline: system fonts, no telemetry, no share link; docs/ui.md)."""
    with user_errors():
        try:
            from noisecraft.serve.ui import launch_ui
        except ImportError as err:
            raise ValueError(f"{UI_EXTRA} ({err})") from None
        from noisecraft.serve.models import load_models

        models = load_models(runs)
    typer.echo(f"serving {', '.join(models)} on http://{host}:{port}")
    launch_ui(models, host=host, port=port)
