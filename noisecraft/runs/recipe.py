"""A sample PNG that carries its own recipe: the generation parameters (model, solver, steps, grid, seed,
class or prompt, guidance, threshold) written into PNG text chunks, as AUTOMATIC1111's web UI does, so that
`noisecraft sample RUN --from-png x.png`, the service and the web page draw the same pixels again.

Two chunks are written: `parameters`, a human-readable line in AUTOMATIC1111's style, and `noisecraft`, the
same as JSON, which is what is read back (validated by pydantic; nothing is evaluated). The image is the
samples tiled at their own resolution (one grey pixel apart), quantised to 8 bits as ((x + 1) / 2 * 255)
rounded: the pixels a user sees are exactly the Python API's samples, quantised.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

CHUNK = "noisecraft"  # the PNG text chunk read back
MAX_PNG_BYTES = 64 * 2**20  # a recipe PNG larger than this is refused before decoding
MAX_PIXELS = 64 * 2**20


class Recipe(BaseModel):
    """What draws a sample PNG again: Pipeline.sample's arguments, resolved (no field left to a run default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the model's name (a service name, or the run folder's name)")
    step: int = Field(0, ge=0, description="the checkpoint's training step")
    digest: str = Field("", max_length=64, description="the weights' digest (Pipeline.digest)")
    n: int = Field(ge=1)
    solver: str
    steps: int = Field(ge=1)
    grid: str | list[float]
    seed: int
    label: int | None = None
    prompt: str | None = None
    guidance: float = 1.0
    threshold: float | None = None
    eval_batch: int | None = None
    columns: int | None = Field(None, ge=1, description="images per row of the tiled PNG")

    def text(self, shape: tuple[int, ...] | None = None) -> str:
        """The AUTOMATIC1111-style `parameters` line (with the image size when `shape` (C, H, W) is given)."""
        head = f"{self.prompt}\n" if self.prompt else ""
        grid = self.grid if isinstance(self.grid, str) else f"{len(self.grid) - 1}-step list"
        fields = [f"Steps: {self.steps}", f"Sampler: {self.solver}", f"Grid: {grid}", f"CFG scale: {self.guidance:g}",
                  f"Seed: {self.seed}", f"Model: {self.model}", f"Step: {self.step}", f"Images: {self.n}"]
        if shape:
            fields.insert(-3, f"Size: {shape[-1]}x{shape[-2]}")
        if self.label is not None:
            fields.insert(4, f"Class: {self.label}")
        if self.threshold is not None:
            fields.insert(4, f"Threshold: {self.threshold:g}")
        return head + ", ".join(fields)

    def sample_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of Pipeline.sample that draw this recipe (a prompt, if any, routes the class)."""
        label = None if self.prompt is not None else self.label
        return {"n": self.n, "solver": self.solver, "steps": self.steps, "grid": self.grid, "seed": self.seed,
                "label": label, "prompt": self.prompt, "guidance": self.guidance, "threshold": self.threshold}


def recipe_of(pipe: Any, model: str, n: int, solver: str | None = None, steps: int | None = None,
              grid: str | list[float] | None = None, seed: int = 0, label: int | None = None,
              prompt: str | None = None, guidance: float = 1.0, threshold: float | None = None,
              columns: int | None = None) -> Recipe:
    """The Recipe of `pipe.sample(n, solver, steps, seed, grid, label, prompt, guidance, threshold)` with the run's
    defaults resolved, so the recipe still draws the same samples if the run's config changes."""
    run = pipe.with_threshold(threshold)
    cfg = run.solver(solver, steps, grid)
    grid = grid if isinstance(grid, str) and grid in pipe.grids else cfg.grid
    return Recipe(model=model, step=pipe.step, digest=pipe.digest, n=n, solver=cfg.solver, steps=cfg.steps,
                  grid=grid if isinstance(grid, str) else [float(t) for t in grid], seed=seed, label=label,
                  prompt=prompt, guidance=guidance, threshold=threshold, eval_batch=pipe.eval_batch, columns=columns)


def to_uint8(x: Tensor) -> np.ndarray:
    """Samples in [-1, 1], (n, C, H, W), as 8-bit pixels (n, H, W, C): round((x + 1) / 2 * 255)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


#: pixels between tiles, and their grey: the digits fill their 8x8 cells edge to edge on black
GAP, GAP_VALUE = 1, 96


def _grid(n: int, columns: int | None) -> tuple[int, int]:
    columns = min(columns or math.ceil(math.sqrt(n)), n)
    return math.ceil(n / columns), columns


def tile(x: Tensor, columns: int | None = None) -> np.ndarray:
    """n images (n, C, H, W) in [-1, 1] as one 8-bit picture, row by row, `GAP` grey pixels apart; the default
    `columns` is ceil(sqrt(n)). Unused cells are grey."""
    pixels = to_uint8(x)
    n, h, w, c = pixels.shape
    rows, columns = _grid(n, columns)
    sheet = np.full((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP, c), GAP_VALUE, dtype=np.uint8)
    for i in range(n):
        top, left = (i // columns) * (h + GAP), (i % columns) * (w + GAP)
        sheet[top:top + h, left:left + w] = pixels[i]
    return sheet


def untile(sheet: np.ndarray, n: int, shape: tuple[int, int, int], columns: int | None = None) -> np.ndarray:
    """The n 8-bit images (n, H, W, C) of a picture made by `tile` (the inverse of tile)."""
    _, h, w = shape
    _, columns = _grid(n, columns)
    sheet = sheet.reshape(*sheet.shape[:2], -1)
    tops = [(i // columns) * (h + GAP) for i in range(n)]
    lefts = [(i % columns) * (w + GAP) for i in range(n)]
    return np.stack([sheet[top:top + h, left:left + w] for top, left in zip(tops, lefts, strict=True)])


def png_bytes(x: Tensor, recipe: Recipe) -> bytes:
    """The samples x (n, C, H, W) in [-1, 1] tiled into one PNG that carries `recipe` in its text chunks."""
    from PIL import Image, PngImagePlugin

    sheet = tile(x, recipe.columns)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", recipe.text(tuple(x.shape[1:])))
    info.add_text(CHUNK, recipe.model_dump_json())
    image = Image.fromarray(sheet[..., 0] if sheet.shape[-1] == 1 else sheet)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(x: Tensor, recipe: Recipe, path: str | Path) -> Path:
    """png_bytes written to `path` atomically (a temporary file renamed into place)."""
    from noisecraft.io import atomic_path

    path = Path(path)
    data = png_bytes(x, recipe)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_recipe(source: str | Path | bytes, what: str = "PNG") -> Recipe:
    """The Recipe in a PNG written by noisecraft (a path or the file's bytes); a ValueError naming `what` when
    it is not a PNG, is truncated, or carries no noisecraft parameters."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{what} {str(path)!r} does not exist")
        if path.stat().st_size > MAX_PNG_BYTES:
            raise ValueError(f"{what} {str(path)!r} is larger than {MAX_PNG_BYTES >> 20} MiB")
        what, source = f"{what} {str(path)!r}", path.read_bytes()
    if len(source) > MAX_PNG_BYTES:
        raise ValueError(f"{what} is larger than {MAX_PNG_BYTES >> 20} MiB")
    try:
        with Image.open(io.BytesIO(source)) as image:
            if image.format != "PNG":
                raise ValueError(f"{what} is a {image.format} file; expected a PNG written by noisecraft")
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"{what} has {image.width}x{image.height} pixels; at most {MAX_PIXELS} are read")
            image.load()  # reads to the end: a truncated file fails here, and text chunks after the pixels are seen
            text = image.text.get(CHUNK)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{what} is not a readable PNG ({err})") from None
    if text is None:
        raise ValueError(f"{what} carries no noisecraft parameters (no '{CHUNK}' text chunk); expected a PNG "
                         "written by noisecraft sample, serve or ui")
    try:
        return Recipe.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{what}: its '{CHUNK}' parameters are malformed ({first})") from None


def draw(pipe: Any, recipe: Recipe) -> Tensor:
    """The samples of `recipe` from `pipe` (its eval_batch as recorded, so the bits match); a ValueError when
    `pipe` holds other weights than the model that drew the recipe."""
    if recipe.digest and recipe.digest != pipe.digest:
        raise ValueError(f"the PNG was drawn by {recipe.model!r} (step {recipe.step}, weights {recipe.digest}); this "
                         f"model has other weights (step {pipe.step}, weights {pipe.digest}), so the samples would "
                         "differ")
    return pipe.with_eval_batch(recipe.eval_batch).sample(**recipe.sample_kwargs())


__all__ = ["CHUNK", "Recipe", "draw", "png_bytes", "read_recipe", "recipe_of", "tile", "to_uint8", "untile",
           "write_png"]
