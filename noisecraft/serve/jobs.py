"""What the service computes, apart from HTTP: a sample request checked and reduced to its batch key and its
part, and the batch function that draws merged parts in one solver call (Pipeline.sample_parts). The
micro-batcher (noisecraft.serve.batching) and the BentoML service (noisecraft.serve.bento) call the same
function."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from torch import Tensor

from noisecraft.runs.pipeline import Part, Pipeline
from noisecraft.runs.recipe import Recipe, recipe_of
from noisecraft.validation import describe


@dataclass(frozen=True)
class SampleKey:
    """What requests must share to be drawn in one solver call."""

    model: str
    solver: str
    steps: int
    grid: str | tuple[float, ...]
    guidance: float
    threshold: float | None
    labelled: bool
    prompt: str | None  # a text run's prompt (a prompt routed to a class becomes a label)


@dataclass(frozen=True)
class RestoreKey:
    """A restoration request: never merged (each has its own measurement)."""

    model: str
    ident: int


@contextmanager
def field_errors(field: str) -> Iterator[None]:
    """A ValueError from the library, in one line naming its field: the one it names in backticks, the pydantic
    field it failed on, or `field`."""
    try:
        yield
    except ValidationError as err:
        raise ValueError(describe(err, lambda path: f"`{path or field}`")) from None
    except ValueError as err:
        if "`" not in str(err):
            raise ValueError(f"`{field}`: {err}") from None
        raise


def pick_model(models: Mapping[str, Pipeline], name: str | None) -> tuple[str, Pipeline]:
    """(name, pipeline) of a request's `model` (the first served one when None); a ValueError naming it."""
    if name is None:
        name = next(iter(models))
    if name not in models:
        raise ValueError(f"`model` {name!r} is not served; expected one of {sorted(models)}")
    return name, models[name]


def sample_job(models: Mapping[str, Pipeline], request: Any) -> tuple[SampleKey, Part]:
    """A sample request's batch key and part, with every check that can fail done now, before any work: the
    model, solver, steps, grid, label or prompt, guidance and thresholding (ValueErrors naming the field)."""
    name, pipe = pick_model(models, request.model)
    run = pipe.with_threshold(request.threshold)
    with field_errors("solver"):
        cfg = run.solver(request.solver, request.steps, request.grid)
    condition = "prompt" if request.prompt is not None else "label"
    with field_errors(condition):
        route = run.route(request.label, request.prompt)
        run._check_drawable(route)
        denoise = run.denoiser(guidance=request.guidance, route=route)  # checks label and guidance against the run
    with field_errors("n"):
        run.check_n(request.n, denoise)
    if getattr(request, "format", None) == "png" and not pipe.is_image:
        raise ValueError("`format` png needs an image model; this one models vectors (use npy or json)")
    label = route.label if route.kind == "class" else None
    prompt = request.prompt if route.kind == "text" else None
    grid = tuple(cfg.grid) if not isinstance(cfg.grid, str) else cfg.grid
    if isinstance(request.grid, str) and request.grid in pipe.grids:
        grid = request.grid
    key = SampleKey(name, cfg.solver, cfg.steps, grid, float(request.guidance), request.threshold,
                    label is not None, prompt)
    return key, Part(request.n, request.seed, label)


def draw_parts(models: Mapping[str, Pipeline], key: SampleKey, parts: list[Part]) -> list[Tensor]:
    """The batch function: every part of one key drawn in one solver call and split back; part k's samples are
    bit for bit those it gets alone (Pipeline.sample_parts with a fixed eval_batch)."""
    grid = list(key.grid) if isinstance(key.grid, tuple) else key.grid
    return models[key.model].sample_parts(parts, key.solver, key.steps, grid, key.guidance, key.threshold,
                                          key.prompt)


def draw_requests(models: Mapping[str, Pipeline], requests: list[Any]) -> list[Tensor]:
    """The samples of each request, in order: requests merged by arrival (BentoML) grouped by batch key, each
    group drawn in one solver call (draw_parts), the results put back in the requests' order."""
    jobs = [sample_job(models, request) for request in requests]
    groups: dict[SampleKey, list[int]] = {}
    for k, (key, _) in enumerate(jobs):
        groups.setdefault(key, []).append(k)
    samples: list[Tensor] = [None] * len(requests)  # type: ignore[list-item]
    for key, members in groups.items():
        for k, x in zip(members, draw_parts(models, key, [jobs[k][1] for k in members]), strict=True):
            samples[k] = x
    return samples


def recipe(pipe: Pipeline, key: SampleKey, request: Any) -> Recipe:
    """The recipe PNG parameters of a sample request as drawn (its key's resolved sampler)."""
    grid = list(key.grid) if isinstance(key.grid, tuple) else key.grid
    return recipe_of(pipe, key.model, request.n, key.solver, key.steps, grid, request.seed, request.label,
                     request.prompt, key.guidance, key.threshold, request.columns)


def execute(models: Mapping[str, Pipeline], key: Hashable, payloads: list[Any]) -> list[Any]:
    """The micro-batcher's execute: merged sample parts, or one restoration thunk."""
    if isinstance(key, SampleKey):
        return draw_parts(models, key, payloads)
    return [payload() for payload in payloads]


__all__ = ["RestoreKey", "SampleKey", "draw_parts", "draw_requests", "execute", "field_errors", "pick_model", "recipe",
           "sample_job"]
