"""The `noisecraft` command line (typer). Sub-applications live beside the code they drive."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Diffusion models from their mathematics.")


def _register_subapps() -> None:
    """Attach sub-command groups; each lives in its own module so the CLI stays one file per concept."""
    from noisecraft.ddm.cli import app as ddm_app

    app.add_typer(ddm_app, name="ddm", help="The drift-diffusion model of decisions (response times).")


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Directory for the demo outputs.")) -> None:
    """Run the main demo on built-in data."""
    from noisecraft.demo import run_demo

    run_demo(out)


_register_subapps()
