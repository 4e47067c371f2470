"""`noisecraft ui`: parse the options, load the models, serve the web page (noisecraft.serve.ui)."""

from __future__ import annotations

import typer

from noisecraft.cli._common import host_option, models_argument, user_errors

app = typer.Typer()

UI_EXTRA = "the web page needs gradio: pip install 'noisecraft[serve]'"


@app.command()
def ui(
    runs: list[str] = models_argument("show"),  # noqa: B008 (typer reads the default)
    host: str = host_option(),
    port: int = typer.Option(7860, help="Port to listen on."),
) -> None:
    """Serve the web page: sample, draw a noisecraft PNG again, inpaint, upscale, denoise, theory figures;
    a RUN may also be a tabular model folder (noisecraft tabular fit), sampled in the Tabular tab (Gradio,
    offline: system fonts, no telemetry, no share link; docs/ui.md)."""
    with user_errors():
        try:
            from noisecraft.serve.ui import launch_ui
        except ImportError as err:
            raise ValueError(f"{UI_EXTRA} ({err})") from None
        from noisecraft.serve.models import load_page_models

        models = load_page_models(runs)
    typer.echo(f"serving {', '.join(models)} on http://{host}:{port}")
    launch_ui(models, host=host, port=port)
