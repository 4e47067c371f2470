"""What one service accepts and holds: bounds on every request field, on uploads and on the queue, and the
micro-batcher's settings. Every bound is configurable (`noisecraft serve --max-n ...`); the request schemas
(noisecraft.serve.schemas) are built from them, so the OpenAPI schema states the bounds in force."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Bounds of one service. Sizes are checked before any decoding or network evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_n: int = Field(64, ge=1, description="images (or rows) per request")
    max_steps: int = Field(250, ge=1, description="solver steps per request")
    max_guidance: float = Field(20.0, ge=0, description="largest guidance scale w")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="bytes of one request body (uploads included)")
    max_image_side: int = Field(1024, ge=8, description="pixels per side of an uploaded image, before decoding")
    max_batch_rows: int = Field(64, ge=1, description="rows merged into one solver call; 1 turns batching off")
    max_wait_ms: float = Field(100.0, ge=0, le=1000, description="the longest a busy service's batch waits for "
                                                                 "more requests (it waits wait_fraction of the "
                                                                 "last batch's time, up to this)")
    wait_fraction: float = Field(0.1, ge=0, le=1, description="a busy service's batch waits this fraction of the "
                                                             "last batch's time for more requests")
    max_queue: int = Field(128, ge=1, description="requests waiting or running; more get 429 with Retry-After")
    timeout_s: float = Field(120.0, gt=0, description="a request still unanswered after this gets 504")
    eval_batch: int | None = Field(32, ge=1, description="rows per network call (bitwise batch invariance); None: "
                                                         "whole batches, images then vary ~1e-6 with batching")


__all__ = ["Limits"]
