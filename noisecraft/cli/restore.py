"""Bodies of the guided `noisecraft sample` (--class, --guidance, --prompt, --classifier) and of `inpaint`,
`upscale` and `denoise`: inputs checked at the boundary (image and mask sizes, class, scale), then the
wrappers of noisecraft.guide.guidance and noisecraft.guide.inverse around a trained run's denoiser. Each command writes
one PNG with the input, mask or measurement and the results side by side."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from torch import Tensor

INPAINT_METHODS = ("repaint", "replacement", "dps", "mmps")
UPSCALE_METHODS = ("ddnm", "dps", "mmps")
DENOISE_METHODS = ("posterior", "mmps", "ddnm")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(choices)}")
    return value


def load_image(path: str | Path, shape: tuple[int, ...], what: str = "image") -> Tensor:
    """A PNG/JPEG as (1, C, H, W) in [-1, 1]; its size and channels must be `shape`."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if shape[0] == 1 else "RGB"), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"{what} {path.name} is {arr.shape[1]}x{arr.shape[2]}; expected {shape[1]}x{shape[2]}")
    return torch.from_numpy(arr / 127.5 - 1.0)[None]


def _loaded(run: str, ema: bool):
    from noisecraft.runs.pipeline import load_run

    loaded = load_run(run, ema=ema)
    if not loaded.is_image:
        raise ValueError(f"run {run!r} models vectors of shape {loaded.sample_shape}; these commands need images")
    return loaded


def _bounds(loaded) -> tuple[float | None, float | None]:
    """The run's x0_hat bounds for noisecraft.runs.pipeline.bound: (clip, threshold)."""
    return loaded.config.sample.clip, loaded.config.sample.threshold


def base_denoiser(loaded, bounded: bool = True) -> Callable[..., Tensor]:
    """The run's unconditional x0_hat(x, t): the null label for a classifier-free model, clipped as configured
    (bounded=False: as the network gives it)."""
    from noisecraft.runs.pipeline import clipped

    denoise = clipped(loaded.denoiser, *_bounds(loaded)) if bounded else loaded.denoiser
    model = loaded.config.model
    if model.num_classes is None:
        return denoise
    if not model.guidable:
        raise ValueError(f"this run is {model.cond}-conditional without a null condition (model.label_dropout = 0): "
                         f"pass --{'prompt' if model.text else 'class'} to sample it")

    def unconditional(x: Tensor, t: Tensor) -> Tensor:
        return denoise(x, t, model.null_cond(x.shape[0], x.device))

    return unconditional


def moment_matched_denoiser(loaded, measurement, cg_steps: int = 4) -> Callable[..., Tensor]:
    """Moment matching (Rozet et al. 2024) on the run's unbounded x0_hat, bounded after the correction.

    Its covariance is the denoiser's Jacobian (Tweedie); clipping x0_hat first would zero that Jacobian at
    every saturated pixel (the digits' background) and leave the known pixels uncorrected. Four CG steps:
    on a learned network more make it worse (docs/benchmarks/guidance.md), as its Jacobian is not exactly
    symmetric positive definite."""
    from noisecraft.guide.inverse import moment_matched
    from noisecraft.runs.pipeline import clipped

    corrected = moment_matched(base_denoiser(loaded, bounded=False), measurement, loaded.denoiser.schedule, cg_steps)
    return clipped(corrected, *_bounds(loaded))


def class_denoiser(loaded, label: int, guidance: float, classifier: str | None) -> Callable[..., Tensor]:
    """x0_hat(x, t) steered to `label`: classifier-free guidance with scale `guidance`, or, with a
    classifier folder, classifier guidance of the unconditional model with that scale."""
    from noisecraft.guide.classifier import load_classifier
    from noisecraft.guide.guidance import (
        check_labels,
        check_scale,
        classifier_free,
        classifier_guidance,
    )
    from noisecraft.runs.pipeline import bound, clipped

    scale = check_scale(guidance, "--guidance")
    if classifier is not None:
        clf = load_classifier(classifier)
        check_labels(label, clf.net.num_classes)
        guided = classifier_guidance(base_denoiser(loaded), clf.log_prob, loaded.denoiser.schedule, scale)
        return lambda x, t: guided(x, t, torch.full((x.shape[0],), label, dtype=torch.long))
    model = loaded.config.model
    if model.num_classes is None:
        raise ValueError("this run is unconditional (model.num_classes is not set): --class needs a class-conditional "
                         "run, or a noisy classifier via --classifier")
    if model.text:
        raise ValueError("this run is text-conditioned (model.cond = 'text'): pass --prompt instead of --class")
    check_labels(label, model.num_classes)
    if model.null_label is None and scale != 1.0:
        raise ValueError(f"--guidance {guidance} needs a run trained with label dropout (model.label_dropout > 0); "
                         "this one can only sample with --guidance 1")
    denoise = clipped(loaded.denoiser, *_bounds(loaded))
    if model.null_label is None:
        return lambda x, t: denoise(x, t, torch.full((x.shape[0],), label, dtype=torch.long, device=x.device))
    guided = classifier_free(loaded.denoiser, scale, model.null_label)
    bounds = _bounds(loaded)

    def cfg(x: Tensor, t: Tensor) -> Tensor:
        out = guided(x, t, torch.full((x.shape[0],), label, dtype=torch.long, device=x.device))
        return bound(out, *bounds)

    return cfg


def text_denoiser(loaded, embedding: Tensor, guidance: float) -> Callable[..., Tensor]:
    """x0_hat(x, t) of a text-conditioned run steered to a prompt's sentence embedding (Reimers & Gurevych
    2019): classifier-free guidance (Ho & Salimans 2022) against the zero embedding, clipped as configured."""
    from noisecraft.guide.guidance import check_scale, classifier_free
    from noisecraft.runs.pipeline import bound

    scale = check_scale(guidance, "--guidance")
    model = loaded.config.model
    if not model.guidable and scale != 1.0:
        raise ValueError(f"--guidance {guidance} needs a run trained with label dropout (model.label_dropout > 0); "
                         "this one can only sample with --guidance 1")
    embedding = embedding.reshape(1, -1)
    if embedding.shape[1] != model.text_dim:
        raise ValueError(f"the prompt embedding has {embedding.shape[1]} dimensions; the run expects {model.text_dim}")
    bounds = _bounds(loaded)
    if model.guidable:
        guided = classifier_free(loaded.denoiser, scale, torch.zeros(model.text_dim))
    else:
        guided = loaded.denoiser

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        out = guided(x, t, embedding.to(x.device).expand(x.shape[0], -1))
        return bound(out, *bounds)

    return denoise


def _sample(denoise: Callable, loaded, n: int, solver: str, steps: int, seed: int) -> Tensor:
    from noisecraft.solvers import sample

    with torch.no_grad():
        x = sample(denoise, loaded.denoiser.schedule, solver=solver, steps=steps, shape=(n, *loaded.sample_shape),
                   grid=loaded.config.sample.grid, generator=torch.Generator().manual_seed(seed), progress=True)
    return x.float()


def _write(out: Path, panels: list[tuple[str, Any]]) -> None:
    from noisecraft.viz.plots import save_image_grids

    if out.suffix != ".png":
        raise ValueError(f"output {str(out)!r} must end in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image_grids(out, [(title, np.asarray(x, dtype=np.float32)) for title, x in panels], scale=0.25)
    typer.echo(f"wrote {out}")


def guided_sample_command(run: str, label: int | None, prompt: str | None, guidance: float, classifier: str | None,
                          solver: str, steps: int, n: int, seed: int, out: str | None, ema: bool,
                          threshold: float | None = None) -> None:
    from noisecraft.guide.guidance import check_scale
    from noisecraft.runs.pipeline import with_threshold

    try:
        check_scale(guidance, "--guidance")
        loaded = with_threshold(_loaded(run, ema), threshold)
        title = ""
        if prompt is not None and label is not None:
            raise ValueError("pass --class or --prompt, not both")
        if prompt is not None and loaded.config.model.text and classifier is None:
            from noisecraft.guide.text import embed

            denoise = text_denoiser(loaded, embed([prompt]), guidance)
            typer.echo(f"prompt {prompt!r} -> its sentence embedding (text-conditioned run)")
            x = _sample(denoise, loaded, n, solver, steps, seed)
            path = Path(out) if out else Path(run) / f"samples_text_w{guidance:g}.png"
            _write(path, [(f"{prompt!r}, CFG w={guidance:g}", x)])
            return
        if prompt is not None:
            from noisecraft.guide.text import prompt_to_class

            label, similarity = prompt_to_class(prompt)
            typer.echo(f"prompt {prompt!r} -> nearest class {label} (similarity {similarity:.2f}; class-conditioned run)")
            title = f"{prompt!r} -> "
        if label is None:
            raise ValueError("--guidance and --classifier need --class or --prompt")
        x = _sample(class_denoiser(loaded, label, guidance, classifier), loaded, n, solver, steps, seed)
        kind = "classifier" if classifier else "CFG"
        path = Path(out) if out else Path(run) / f"samples_class{label}_w{guidance:g}.png"
        bounded = "" if threshold is None else f", threshold {threshold:g}"
        _write(path, [(f"{title}class {label}, {kind} w={guidance:g}{bounded}", x)])
    except ValueError as err:
        _fail(err)


def _panel_row(x: Tensor, n: int) -> Tensor:
    return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x


def inpaint_command(run: str, image: str, mask: str, method: str, n: int, solver: str, steps: int, seed: int,
                    jump_length: int, jump_count: int, zeta: float, out: str | None, ema: bool) -> None:
    from noisecraft.guide.inverse import dps, projection, repaint
    from noisecraft.guide.measurements import mask_from_png, measure

    try:
        _check_choice(method, INPAINT_METHODS, "inpainting method")
        loaded = _loaded(run, ema)
        x_in = load_image(image, loaded.sample_shape)
        m = mask_from_png(mask, loaded.sample_shape)
        meas = measure(m, x_in)
        denoise, schedule = base_denoiser(loaded), loaded.denoiser.schedule
        if method == "repaint":
            with torch.no_grad():
                x = repaint(denoise, schedule, meas, (n, *loaded.sample_shape), steps, jump_length, jump_count,
                            torch.Generator().manual_seed(seed)).float()
        else:
            wrapped = {"replacement": lambda: projection(denoise, meas),
                       "dps": lambda: dps(denoise, meas, schedule, zeta),
                       "mmps": lambda: moment_matched_denoiser(loaded, meas)}[method]()
            x = _sample(wrapped, loaded, n, solver if method == "replacement" else "ddpm", steps, seed)
        shown_mask = 1.0 - 2.0 * m.mask.float()[None]  # filled-in pixels dark
        _write(Path(out) if out else Path(run) / f"inpaint_{method}.png",
               [("input", x_in), ("mask (dark = fill)", shown_mask), ("known pixels", meas.y), (method, x)])
    except ValueError as err:
        _fail(err)


def upscale_command(run: str, image: str, factor: int, method: str, n: int, steps: int, seed: int, sigma: float,
                    zeta: float, out: str | None, ema: bool) -> None:
    from noisecraft.guide.inverse import dps, projection
    from noisecraft.guide.measurements import AvgPool, Measurement

    try:
        _check_choice(method, UPSCALE_METHODS, "super-resolution method")
        if factor not in (2, 4):
            raise ValueError(f"--factor must be 2 or 4, got {factor}")
        if sigma < 0:
            raise ValueError(f"--sigma must be >= 0, got {sigma}")
        loaded = _loaded(run, ema)
        c, h, w = loaded.sample_shape
        if h % factor:
            raise ValueError(f"the model's {h}x{w} images are not divisible by --factor {factor}")
        small = load_image(image, (c, h // factor, w // factor), "low-resolution image")
        op = AvgPool(factor)
        meas = Measurement(op, small, sigma)
        denoise, schedule = base_denoiser(loaded), loaded.denoiser.schedule
        wrapped = {"ddnm": lambda: projection(denoise, meas, schedule),
                   "dps": lambda: dps(denoise, meas, schedule, zeta),
                   "mmps": lambda: moment_matched_denoiser(loaded, meas)}[method]()
        x = _sample(wrapped, loaded, n, "ddpm", steps, seed)
        _write(Path(out) if out else Path(run) / f"upscale_x{factor}_{method}.png",
               [(f"input {h // factor}x{w // factor}", op.pinv(small)), (f"x{factor} {method}", x),
                ("results pooled", op.pinv(op(x)))])
    except ValueError as err:
        _fail(err)


def denoise_command(run: str, image: str, sigma: float, method: str, n: int, steps: int, seed: int,
                    out: str | None, ema: bool) -> None:
    from noisecraft.guide.inverse import denoise_observation, projection
    from noisecraft.guide.measurements import Identity, Measurement

    try:
        _check_choice(method, DENOISE_METHODS, "denoising method")
        if not sigma > 0:
            raise ValueError(f"--sigma must be > 0 (the noise std in [-1, 1] units), got {sigma}")
        loaded = _loaded(run, ema)
        y = load_image(image, loaded.sample_shape, "noisy image")
        denoise, schedule = base_denoiser(loaded), loaded.denoiser.schedule
        if method == "posterior":
            with torch.no_grad():
                x = denoise_observation(denoise, schedule, _panel_row(y, n), sigma, "ddpm", steps,
                                        torch.Generator().manual_seed(seed)).float()
        else:
            meas = Measurement(Identity(), y, sigma)
            wrapped = moment_matched_denoiser(loaded, meas) if method == "mmps" else projection(denoise, meas, schedule)
            x = _sample(wrapped, loaded, n, "ddpm", steps, seed)
        _write(Path(out) if out else Path(run) / f"denoise_{method}.png",
               [(f"noisy (sigma={sigma:g})", y), (f"{method} samples", x), ("sample mean", x.mean(0, keepdim=True))])
    except ValueError as err:
        _fail(err)


def register(app: typer.Typer) -> None:
    """Attach `inpaint`, `upscale` and `denoise` to the root CLI."""

    @app.command("inpaint")
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
        out: str = typer.Option(None, help="Output PNG (default RUN/inpaint_METHOD.png)."),
        ema: bool = typer.Option(True, help="Use the EMA weights."),
    ) -> None:
        """Fill in the masked pixels of an image; writes input, mask, known pixels and the completions."""
        inpaint_command(run, image, mask, method, n, solver, steps, seed, jump_length, jump_count, zeta, out, ema)

    @app.command("upscale")
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
        out: str = typer.Option(None, help="Output PNG (default RUN/upscale_xF_METHOD.png)."),
        ema: bool = typer.Option(True, help="Use the EMA weights."),
    ) -> None:
        """Super-resolution: high-resolution images whose average pooling is the input."""
        upscale_command(run, image, factor, method, n, steps, seed, sigma, zeta, out, ema)

    @app.command("denoise")
    def denoise(
        run: str = typer.Argument(..., help="Run directory of an image model."),
        image: str = typer.Option(..., help="Noisy PNG of the model's size."),
        sigma: float = typer.Option(..., help="Noise std in [-1, 1] units (0.2 = 10% of the pixel range)."),
        method: str = typer.Option("posterior", help=f"One of {', '.join(DENOISE_METHODS)}."),
        n: int = typer.Option(8, help="Number of posterior samples."),
        steps: int = typer.Option(50, help="DDPM steps."),
        seed: int = typer.Option(0, help="Sampling seed."),
        out: str = typer.Option(None, help="Output PNG (default RUN/denoise_METHOD.png)."),
        ema: bool = typer.Option(True, help="Use the EMA weights."),
    ) -> None:
        """Posterior samples of the clean image given a noisy one of known noise level."""
        denoise_command(run, image, sigma, method, n, steps, seed, out, ema)
