"""noisecraft's sampling as a BentoML service (BentoML 1.4 `@bentoml.service`): BentoML merges requests as they
arrive (adaptive batching), and inside each merged batch noisecraft groups them by batch key and draws each group
in one solver call with the same batch function as the HTTP service (noisecraft.serve.jobs.draw_parts).

    NOISECRAFT_MODELS="digits=runs/digits,student=runs/student" bentoml serve noisecraft.serve.bento:NoiseCraft

Environment: NOISECRAFT_MODELS (required: comma-separated RUN or NAME=RUN, as `noisecraft serve` takes them),
NOISECRAFT_EVAL_BATCH (rows per network call, default 32; 0: whole batches), NOISECRAFT_DEVICE (default cpu),
NOISECRAFT_WORKERS (worker processes, default 1; each holds its own copy of the models). BentoML's usage
tracking is off unless BENTOML_DO_NOT_TRACK is set otherwise. How to run it and its replicas: docs/serve_bento.md.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # read by bentoml when it would send usage events

import bentoml  # after the environment variable above
from pydantic import model_validator
from torch import Tensor

from noisecraft.serve import schemas
from noisecraft.serve.encode import encode
from noisecraft.serve.jobs import draw_requests, recipe, sample_job
from noisecraft.serve.limits import Limits
from noisecraft.serve.models import load_models

MODELS_ENV, EVAL_BATCH_ENV, DEVICE_ENV, WORKERS_ENV = (
    "NOISECRAFT_MODELS", "NOISECRAFT_EVAL_BATCH", "NOISECRAFT_DEVICE", "NOISECRAFT_WORKERS")
LIMITS = Limits()
#: the models this worker process serves ({name: Pipeline}), set when the service starts; requests are checked
#: against them one by one as they arrive, before BentoML merges them (see SampleRequest)
SERVED: dict[str, Any] = {}


def model_specs(value: str) -> list[str]:
    """The RUN / NAME=RUN arguments of a comma-separated NOISECRAFT_MODELS value."""
    specs = [spec.strip() for spec in value.split(",") if spec.strip()]
    if not specs:
        raise ValueError(f"{MODELS_ENV} is empty; expected comma-separated RUN or NAME=RUN, e.g. "
                         f"{MODELS_ENV}=digits=runs/digits")
    return specs


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip() or str(default)
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


class SampleRequest(schemas.sample_request(LIMITS)):  # type: ignore[misc]
    """One draw: the HTTP service's POST /sample body, bounded by the default Limits, and checked against the
    served models (model, solver, label, ...) when it arrives. A bad request is refused alone (HTTP 400 naming
    the field) instead of failing the batch it would have been merged into."""

    @model_validator(mode="after")
    def _drawable(self) -> SampleRequest:
        if SERVED:
            sample_job(SERVED, self)
        return self


def encode_request(models: Mapping[str, Any], request: Any, x: Tensor) -> bytes:
    """One request's samples as the HTTP service answers them: the recipe PNG, .npy or JSON."""
    key, _ = sample_job(models, request)
    pipe = models[key.model]
    return encode(x, request.format, recipe(pipe, key, request), pipe.is_image)


@bentoml.service(name="noisecraft", workers=_int_env(WORKERS_ENV, 1) or 1,
                 traffic={"timeout": LIMITS.timeout_s})
class NoiseCraft:
    """Sampling from the runs named by NOISECRAFT_MODELS."""

    def __init__(self) -> None:
        eval_batch = _int_env(EVAL_BATCH_ENV, LIMITS.eval_batch or 0) or None
        self.models = load_models(model_specs(os.environ.get(MODELS_ENV, "")), eval_batch=eval_batch,
                                  device=os.environ.get(DEVICE_ENV, "cpu"))
        SERVED.clear()
        SERVED.update(self.models)

    @bentoml.api(batchable=True, max_batch_size=LIMITS.max_batch_rows, max_latency_ms=int(LIMITS.timeout_s * 1000))
    def sample(self, requests: list[SampleRequest]) -> list[str]:
        """Each request's samples, base64: the PNG with its recipe, .npy or JSON bytes; requests that share model,
        solver, steps, grid and guidance are drawn in one solver call."""
        return [base64.b64encode(encode_request(self.models, request, x)).decode("ascii")
                for request, x in zip(requests, draw_requests(self.models, requests), strict=True)]


__all__ = ["MODELS_ENV", "NoiseCraft", "SampleRequest", "draw_requests", "encode_request", "model_specs"]
