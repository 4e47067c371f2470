"""`noisecraft inpaint`, `upscale` and `denoise`: parse the options, call the run's Pipeline
(noisecraft.runs.pipeline), and write one PNG with the input, mask or measurement and the results side by
side."""

from __future__ import annotations

from pathlib import Path

import typer

from noisecraft.cli._common import user_errors
from noisecraft.runs.tasks import DENOISE_METHODS, INPAINT_METHODS, RESTORE_METHODS, UPSCALE_METHODS

app = typer.Typer()


def _output(out: str | None, default: Path | None) -> Path | None:
    """The output file, checked before any work: a .png of panels, or a .npy of the results alone (the
    default, in the run directory, is checked by loading the run)."""
    from noisecraft.io import check_output

    return check_output(out, (".png", ".npy")) if out else default


def _write(path: Path, x, panels) -> None:
    """The results as .npy, or the panels (a callable, so nothing is drawn for .npy) as one PNG; on several
    processes (torchrun) rank 0 writes."""
    from noisecraft.runs.distributed import is_main
    from noisecraft.viz.plots import save_panels, save_samples

    if not is_main():
        return
    if path.suffix == ".npy":
        save_samples(x, path, is_image=True)
    else:
        save_panels(path, panels())
    typer.echo(f"wrote {path}")


@app.command()
def inpaint(
    run: str = typer.Argument(..., help="Run directory of an image model."),
    image: str = typer.Option(..., help="The image (PNG) of the model's size."),
    mask: str = typer.Option(..., help="Mask PNG of the same size: white = known, black = fill in."),
    method: str = typer.Option("repaint", help=f"One of {', '.join(INPAINT_METHODS)}."),
    n: int = typer.Option(8, help="Number of completions."),
    solver: str = typer.Option("ddpm", help="Solver for replacement (the others use DDPM steps)."),
    steps: int = typer.Option(50, help="Grid steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    jump_length: int = typer.Option(5, help="RePaint: steps between jumps back."),
    jump_count: int = typer.Option(5, help="RePaint: passes over each block of steps."),
    zeta: float = typer.Option(1.0, help="DPS step size."),
    out: str = typer.Option(None, help="Output .png of panels or .npy of the completions (default RUN/inpaint_METHOD.png)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
) -> None:
    """Fill in the masked pixels of an image; writes input, mask, known pixels and the completions."""
    from noisecraft.hf.load import load_pipeline, run_folder

    with user_errors():
        path = _output(out, run_folder(run) / f"inpaint_{method}.png")
        pipe = load_pipeline(run, ema=ema)
        x_in, m = pipe.image(image), pipe.mask(mask)
        x = pipe.inpaint(x_in, m, method=method, n=n, solver=solver, steps=steps, seed=seed, jump_length=jump_length,
                         jump_count=jump_count, zeta=zeta)
        shown_mask = 1.0 - 2.0 * m.mask.float()[None]  # filled-in pixels dark
        _write(path, x, lambda: [("input", x_in), ("mask (dark = fill)", shown_mask), ("known pixels", m(x_in)),
                                 (method, x)])


@app.command()
def upscale(
    run: str = typer.Argument(..., help="Run directory of an image model."),
    image: str = typer.Option(..., help="Low-resolution PNG: the model's size divided by --factor."),
    factor: int = typer.Option(2, help="2 or 4 (average pooling)."),
    method: str = typer.Option("ddnm", help=f"One of {', '.join(UPSCALE_METHODS)}."),
    n: int = typer.Option(8, help="Number of samples."),
    steps: int = typer.Option(50, help="DDPM steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    sigma: float = typer.Option(0.0, help="Noise std of the low-resolution image, in [-1, 1] units."),
    zeta: float = typer.Option(1.0, help="DPS step size."),
    out: str = typer.Option(None, help="Output .png of panels or .npy of the samples (default RUN/upscale_xF_METHOD.png)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
) -> None:
    """Super-resolution: high-resolution images whose average pooling is the input."""
    from noisecraft.guide.measurements import AvgPool
    from noisecraft.hf.load import load_pipeline, run_folder

    with user_errors():
        path = _output(out, run_folder(run) / f"upscale_x{factor}_{method}.png")
        pipe = load_pipeline(run, ema=ema)
        x = pipe.upscale(image, factor=factor, method=method, n=n, steps=steps, seed=seed, sigma=sigma, zeta=zeta)
        (c, h, w), op = pipe.image_shape("low-resolution image"), AvgPool(factor)
        small = pipe.image(image, (c, h // factor, w // factor), "low-resolution image")
        _write(path, x, lambda: [(f"input {h // factor}x{w // factor}", op.pinv(small)), (f"x{factor} {method}", x),
                                 ("results pooled", op.pinv(op(x)))])


@app.command()
def denoise(
    run: str = typer.Argument(..., help="Run directory of an image model."),
    image: str = typer.Option(..., help="Noisy PNG of the model's size."),
    sigma: float = typer.Option(..., help="Noise std in [-1, 1] units (0.2 = 10% of the pixel range)."),
    method: str = typer.Option(None, help=f"One of {', '.join(DENOISE_METHODS)} (default: posterior; ddnm on a latent run)."),
    n: int = typer.Option(8, help="Number of posterior samples."),
    steps: int = typer.Option(50, help="DDPM steps."),
    seed: int = typer.Option(0, help="Sampling seed."),
    out: str = typer.Option(None, help="Output .png of panels or .npy of the samples (default RUN/denoise_METHOD.png)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
) -> None:
    """Posterior samples of the clean image given a noisy one of known noise level."""
    from noisecraft.hf.load import load_pipeline, run_folder

    with user_errors():
        path = _output(out, None)
        pipe = load_pipeline(run, ema=ema)
        method = method or pipe.default_method("denoise")
        path = path or run_folder(run) / f"denoise_{method}.png"
        y = pipe.image(image, what="noisy image")
        x = pipe.denoise(y, sigma, method=method, n=n, steps=steps, seed=seed)
        _write(path, x, lambda: [(f"noisy (sigma={sigma:g})", y),
                                 (f"{method} samples", x), ("sample mean", x.mean(0, keepdim=True))])


@app.command()
def restore(
    run: str = typer.Argument(..., help="Run directory of an image model."),
    image: str = typer.Option(..., help="A clean PNG of the model's size; it is measured, then reconstructed."),
    operator: str = typer.Option("fourier", help="fourier (k-space subsampling, MRI), blur or pool."),
    acceleration: float = typer.Option(4.0, help="fourier: acceleration factor R (a 1/R share of k-space)."),
    mask: str = typer.Option("cartesian", help="fourier: cartesian (random lines, fastMRI) or radial (spokes)."),
    blur_std: float = typer.Option(1.0, help="blur: Gaussian kernel std in pixels (periodic boundary)."),
    sigma: float = typer.Option(0.01, help="Measurement noise std, in [-1, 1] pixel units."),
    method: str = typer.Option(None, help=f"One of {', '.join(RESTORE_METHODS)} (default: mmps; ddnm on a latent run)."),
    n: int = typer.Option(4, help="Number of posterior samples."),
    steps: int = typer.Option(50, help="DDPM steps."),
    seed: int = typer.Option(0, help="Seed of the mask, the measurement noise and the sampling."),
    zeta: float = typer.Option(1.0, help="DPS step size."),
    out: str = typer.Option(None, help="Output .png of panels or .npy of the samples (default RUN/restore_OPERATOR_METHOD.png)."),
    ema: bool = typer.Option(True, help="Use the EMA weights."),
) -> None:
    """Measure an image with a linear operator (y = A x + sigma n) and draw posterior samples of it."""
    import torch

    from noisecraft.guide.measurements import measure
    from noisecraft.guide.operators import operator_by_name
    from noisecraft.hf.load import load_pipeline, run_folder

    with user_errors():
        path = _output(out, None)
        pipe = load_pipeline(run, ema=ema)
        method = method or pipe.default_method("restore")
        path = path or run_folder(run) / f"restore_{operator}_{method}.png"
        op = operator_by_name(operator, pipe.image_shape(), acceleration, mask, blur_std, seed=seed)
        if not sigma >= 0:
            raise ValueError(f"`sigma` must be >= 0, got {sigma}")
        x_in = pipe.image(image)
        meas = measure(op, x_in.double(), sigma, torch.Generator().manual_seed(seed))
        x = pipe.restore(meas, method, n=n, steps=steps, seed=seed, zeta=zeta)
        _write(path, x, lambda: [("input", x_in), ("A^+ y (zero-filled)", op.pinv(meas.y).float()), (method, x),
                                 ("sample mean", x.mean(0, keepdim=True))])
