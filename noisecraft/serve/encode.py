"""Bytes in and out of the service: uploaded images decoded with their size checked from the header before any
pixel is decoded, and samples encoded as the recipe PNG, .npy or JSON."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from torch import Tensor

from noisecraft.runs.recipe import Recipe, png_bytes

MEDIA = {"png": "image/png", "npy": "application/octet-stream", "json": "application/json"}


class TooLarge(ValueError):
    """An upload over the service's limits (HTTP 413)."""


def decode_image(data: bytes, what: str, max_side: int, mode: str) -> np.ndarray:
    """An uploaded PNG/JPEG as float32 pixels (H, W) or (H, W, C) in 0..255: its size read from the header and
    checked against `max_side` first (TooLarge), then decoded (a ValueError naming `what` if it is not a
    readable image, e.g. truncated)."""
    from PIL import Image

    from noisecraft.data.files import read_image

    if not data:
        raise ValueError(f"`{what}` is empty; expected a PNG or JPEG file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"`{what}` is not a readable image ({err})") from None
    if max(width, height) > max_side:
        raise TooLarge(f"`{what}` is {width}x{height} pixels; at most {max_side} per side are accepted")
    return read_image(io.BytesIO(data), mode, f"`{what}`")  # type: ignore[arg-type] (PIL reads file objects)


def image_input(data: bytes, shape: tuple[int, int, int], max_side: int, what: str = "image") -> np.ndarray:
    """An uploaded image as (C, H, W) in [-1, 1], of the model's `shape` (C, H, W) exactly."""
    c, h, w = shape
    pixels = decode_image(data, what, max_side, "L" if c == 1 else "RGB")
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if pixels.shape[1:] != (h, w):
        raise ValueError(f"`{what}` is {pixels.shape[2]}x{pixels.shape[1]} pixels; this model takes {w}x{h}")
    return pixels / 127.5 - 1.0


def mask_input(data: bytes, shape: tuple[int, int, int], max_side: int) -> np.ndarray:
    """An uploaded grayscale mask (white = known) as (H, W) in 0..1, of the model's height and width."""
    pixels = decode_image(data, "mask", max_side, "L")
    if pixels.shape != shape[1:]:
        raise ValueError(f"`mask` is {pixels.shape[1]}x{pixels.shape[0]} pixels; expected the image's "
                         f"{shape[2]}x{shape[1]}")
    return pixels / 255.0


def encode(x: Tensor, fmt: str, recipe: Recipe | None, is_image: bool, parameters: str = "") -> bytes:
    """Samples as the response body: the recipe PNG (images only), .npy, or JSON {shape, samples, recipe}. A
    restoration result has no recipe (it needs its input image); its PNG carries `parameters` as text."""
    if fmt == "png":
        if not is_image:
            raise ValueError("`format` png needs an image model; this one models vectors (use npy or json)")
        if recipe is None:
            from noisecraft.runs.recipe import tile

            return _plain_png(tile(x), parameters)
        return png_bytes(x, recipe)
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, x.numpy(), allow_pickle=False)
        return buffer.getvalue()
    body: dict[str, Any] = {"shape": list(x.shape), "samples": x.tolist(), "parameters": parameters}
    if recipe is not None:
        body["recipe"] = recipe.model_dump()
        body["parameters"] = recipe.text(tuple(x.shape[1:]))
    return json.dumps(body).encode()


def _plain_png(sheet: np.ndarray, parameters: str) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.fromarray(sheet[..., 0] if sheet.shape[-1] == 1 else sheet).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


__all__ = ["MEDIA", "TooLarge", "decode_image", "encode", "image_input", "mask_input"]
