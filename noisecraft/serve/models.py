"""The models a service or page serves: `NAME=RUN` or `RUN` arguments (a run directory, a distilled student,
or `hf:PATH` for a diffusers folder) loaded as Pipelines under unique names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: rows per network call in served pipelines: every call has one shape, so an image is the same bits whether
#: it was drawn alone or in a merged batch (noisecraft.nets.batching)
EVAL_BATCH = 16


def model_name(spec: str) -> tuple[str, str]:
    """(name, run) of a `NAME=RUN` or `RUN` argument; the name defaults to the folder's name."""
    name, sep, run = spec.partition("=")
    if not sep:
        run = spec
        name = Path(run.removeprefix("hf:").rstrip("/")).name or run
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"model name {name!r} (from {spec!r}) must be letters, digits, '-', '_' or '.'; "
                         "spell it NAME=RUN")
    return name, run


def load_models(specs: list[str], eval_batch: int = EVAL_BATCH, device: str = "cpu") -> dict[str, Any]:
    """{name: Pipeline} for the RUN / NAME=RUN arguments, in order; a ValueError naming a bad or repeated one
    before anything is served."""
    from noisecraft.hf.load import load_pipeline

    if not specs:
        raise ValueError("no model given; expected one or more RUN or NAME=RUN arguments")
    named = [model_name(spec) for spec in specs]
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise ValueError(f"two models are named {name!r}; name them apart with NAME=RUN")
        seen.add(name)
    return {name: load_pipeline(run, device=device, eval_batch=eval_batch) for name, run in named}


__all__ = ["EVAL_BATCH", "load_models", "model_name"]
