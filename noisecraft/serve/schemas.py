"""The service's request bodies, built from its Limits so that the OpenAPI schema states the bounds in force and a
field out of bounds is a 422 naming it before any work. NaN, inf and unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from noisecraft.serve.limits import Limits

FORMATS = ("png", "npy", "json")
MAX_SEED = 2**63 - 1
MAX_PROMPT = 500

Format = Literal["png", "npy", "json"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FormFields(BaseModel):
    """Form fields beside file uploads: FastAPI hands the files to the form model too, so unknown fields are
    refused by the endpoint (noisecraft.serve.app), not here."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


def _common(limits: Limits, n_default: int) -> dict:
    """Fields every drawing request has: which model, how many, the seed, the output format."""
    return {
        "model": (str | None, Field(None, max_length=200, description="a served model's name; default: the first")),
        "n": (int, Field(n_default, ge=1, le=limits.max_n, description="how many samples")),
        "seed": (int, Field(0, ge=0, le=MAX_SEED, description="sample i depends only on (seed, i)")),
        "steps": (int | None, Field(None, ge=1, le=limits.max_steps, description="solver steps")),
        "format": (Format, Field("png", description="png: tiled 8-bit image with its parameters; npy; json")),
    }


def sample_request(limits: Limits) -> type[BaseModel]:
    """POST /sample: Pipeline.sample's arguments, bounded."""
    return create_model(
        "SampleRequest", __base__=Strict,
        **_common(limits, 16),
        solver=(str | None, Field(None, max_length=40, description="a solver name; default: the model's")),
        grid=(str | None, Field(None, max_length=40, description="uniform, log_snr, karras, ...; default: the model's")),
        label=(int | None, Field(None, ge=0, le=100_000, description="class of a class-conditional model")),
        prompt=(str | None, Field(None, min_length=1, max_length=MAX_PROMPT, description="text condition")),
        guidance=(float, Field(1.0, ge=0, le=limits.max_guidance, description="guidance scale w")),
        threshold=(float | None, Field(None, gt=0, lt=1, description="dynamic thresholding quantile")),
        columns=(int | None, Field(None, ge=1, le=limits.max_n, description="images per row of the PNG")),
    )


def inpaint_form(limits: Limits) -> type[BaseModel]:
    """POST /inpaint form fields (the image and mask files come beside them)."""
    return create_model(
        "InpaintForm", __base__=FormFields, **_common(limits, 4),
        method=(Literal["repaint", "replacement", "dps", "mmps"], Field("repaint")),
    )


def upscale_form(limits: Limits) -> type[BaseModel]:
    """POST /upscale form fields."""
    return create_model(
        "UpscaleForm", __base__=FormFields, **_common(limits, 4),
        factor=(Literal[2, 4], Field(2)),
        method=(Literal["ddnm", "dps", "mmps"], Field("ddnm")),
        sigma=(float, Field(0.0, ge=0, le=10, description="noise std of the low-resolution image, [-1, 1] units")),
    )


def denoise_form(limits: Limits) -> type[BaseModel]:
    """POST /denoise form fields."""
    return create_model(
        "DenoiseForm", __base__=FormFields, **_common(limits, 4),
        method=(Literal["posterior", "mmps", "ddnm"] | None,
                Field(None, description="default: posterior, or ddnm for a latent model")),
        sigma=(Annotated[float, Field(gt=0, le=10)], Field(description="noise std of the image, [-1, 1] units")),
    )


__all__ = ["FORMATS", "MAX_SEED", "denoise_form", "inpaint_form", "sample_request", "upscale_form"]
