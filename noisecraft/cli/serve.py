"""`noisecraft serve`: parse the options, load the models, run the HTTP service (noisecraft.serve.app)."""

from __future__ import annotations

import typer

from noisecraft.cli._common import host_option, models_argument, user_errors

app = typer.Typer()

SERVE_EXTRA = "the service needs noisecraft's serve extra: pip install 'noisecraft[serve]'"


@app.command()
def serve(
    runs: list[str] = models_argument("serve"),  # noqa: B008 (typer reads the default)
    host: str = host_option(),
    port: int = typer.Option(8000, help="Port to listen on."),
    ui: bool = typer.Option(False, "--ui", help="Also serve the web page at /ui."),
    max_n: int = typer.Option(64, help="Most images per request."),
    max_steps: int = typer.Option(250, help="Most solver steps per request."),
    max_batch: int = typer.Option(64, help="Most rows merged into one solver call; 1 turns batching off."),
    max_wait_ms: float = typer.Option(100.0, help="The longest a busy service's batch waits for more requests (it "
                                                  "waits a tenth of the last batch's time, up to this; 0: never)."),
    max_queue: int = typer.Option(128, help="Requests waiting or running; more get 429 with Retry-After."),
    timeout: float = typer.Option(120.0, help="Seconds before an unanswered request gets 504."),
    eval_batch: int = typer.Option(32, help="Rows per network call: an image is then the same bits whether it was "
                                            "drawn alone or merged (0: whole batches, equal only to ~1e-6)."),
) -> None:
    """Serve trained models over HTTP (FastAPI under uvicorn) with diffusion-aware micro-batching; OpenAPI
    schema at /openapi.json, Prometheus metrics at /metrics (docs/serve.md)."""
    with user_errors(max_batch_rows="--max-batch", timeout_s="--timeout"):
        try:
            from noisecraft.serve.app import serve as run_service
            from noisecraft.serve.limits import Limits
        except ImportError as err:
            raise ValueError(f"{SERVE_EXTRA} ({err})") from None
        from noisecraft.serve.models import load_models

        limits = Limits(max_n=max_n, max_steps=max_steps, max_batch_rows=max_batch, max_wait_ms=max_wait_ms,
                        max_queue=max_queue, timeout_s=timeout, eval_batch=eval_batch or None)
        models = load_models(runs, eval_batch=limits.eval_batch)
    typer.echo(f"serving {', '.join(models)} on http://{host}:{port}" + (f" (page: http://{host}:{port}/ui)" if ui else ""))
    run_service(models, limits, host=host, port=port, ui=ui)
