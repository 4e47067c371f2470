"""`noisecraft serve`: trained runs behind an HTTP API (FastAPI under uvicorn) with diffusion-aware micro-batching.

Endpoints: POST /sample (JSON), /inpaint, /upscale, /denoise (multipart uploads); GET /models, /models/{name},
/health, /ready, /metrics (Prometheus), /openapi.json. Every request is checked against the service's Limits
before any work: a bad field is a 422 naming it, an oversized body or image a 413, a full queue a 429 with
Retry-After, a shutting-down service a 503, a request past its timeout a 504. A client that goes away frees its
place in the queue. Sample PNGs carry their recipe (noisecraft.runs.recipe), so they reproduce themselves.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time, and the request
# models are built per service (from its Limits) inside create_app

import asyncio
import itertools
import math
import re
import time
from collections.abc import Hashable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from noisecraft.runs.pipeline import Pipeline
from noisecraft.serve import schemas
from noisecraft.serve.batching import Closed, MicroBatcher, QueueFull
from noisecraft.serve.encode import MEDIA, TooLarge, encode, image_input, mask_input
from noisecraft.serve.jobs import (
    RestoreKey,
    execute,
    field_errors,
    pick_model,
    recipe,
    sample_job,
)
from noisecraft.serve.limits import Limits
from noisecraft.serve.metrics import Metrics

CLIENT_GONE = 499  # nginx's status for a client that closed the connection; logged, never read


class ClientGone(Exception):
    pass


class FieldError(ValueError):
    """A bad request field, named explicitly (any spelling a client sent)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _field_of(message: str) -> str | None:
    """The first `name` a library error message names (noisecraft names arguments in backticks)."""
    found = re.search(r"`([a-z][a-z0-9_]*)", message)
    return found[1] if found else None


class ErrorBody(BaseModel):
    """A refusal: one line, and the request field at fault when there is one."""

    error: str
    field: str | None = None


REFUSALS = {status: {"model": ErrorBody, "description": what} for status, what in [
    (400, "the body is not parsable"), (413, "the body or an uploaded image is too large"),
    (422, "a field is out of bounds, of the wrong type, or unknown"), (429, "the queue is full (Retry-After)"),
    (503, "the service is shutting down (Retry-After)"), (504, "the request timed out")]}


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message.replace("`", "")}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is a 413 before it is read into memory (by its
    Content-Length, or by counting a chunked body as it arrives)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _error(413, f"the request body is {length.decode(errors='replace')} bytes; at most "
                                     f"{self.limit} are accepted")(scope, receive, send)
        seen, refused = 0, False

        async def counted() -> dict:
            # an exception raised here would reach FastAPI's body reading, which turns any error into a 400
            # (and BaseHTTPMiddleware wraps it in an ExceptionGroup): answer 413 now, then tell the app the client
            # left, and drop whatever it answers
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                await _error(413, f"the request body is over {self.limit} bytes")(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)


def _describe(name: str, pipe: Pipeline) -> dict[str, Any]:
    model, sample = pipe.config.model, pipe.config.sample
    return {"name": name, "shape": list(pipe.output_shape), "is_image": pipe.is_image, "step": pipe.step,
            "conditioning": model.cond if model.num_classes is not None else "none",
            "num_classes": model.num_classes, "guidable": bool(model.guidable),
            "solver": sample.solver, "steps": sample.steps,
            "grid": sample.grid if isinstance(sample.grid, str) else "list", "eval_batch": pipe.eval_batch}


def create_app(models: Mapping[str, Pipeline], limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving `models` ({name: Pipeline}) under `limits`."""
    if not models:
        raise ValueError("no model to serve; expected at least one")
    limits = limits or Limits()
    models = {name: pipe.with_eval_batch(limits.eval_batch) for name, pipe in models.items()}
    state: dict[str, Any] = {"closing": False}
    batcher = MicroBatcher(lambda key, payloads: execute(models, key, payloads), limits.max_batch_rows,
                           limits.max_wait_ms / 1000, limits.max_queue, wait_fraction=limits.wait_fraction)
    metrics = Metrics(lambda: batcher.depth)
    batcher.on_batch = metrics.on_batch
    idents = itertools.count()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["closing"] = False
        await batcher.start()
        yield
        state["closing"] = True
        await batcher.stop(drain=True)  # uvicorn has stopped accepting; what was accepted finishes

    app = FastAPI(title="noisecraft", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Diffusion models from their mathematics: sampling and restoration with "
                              "diffusion-aware micro-batching.")
    app.state.batcher, app.state.metrics, app.state.models, app.state.limits = batcher, metrics, models, limits

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, err: ValueError) -> JSONResponse:
        if isinstance(err, TooLarge):
            return _error(413, str(err), _field_of(str(err)))
        return _error(422, str(err), getattr(err, "field", None) or _field_of(str(err)))

    async def submit(request: Request, key: Hashable, rows: int, payload: Any) -> Any:
        """The job's result; ClientGone when the client disconnects first (its queued job is dropped)."""
        work = asyncio.ensure_future(asyncio.wait_for(batcher.submit(key, rows, payload), limits.timeout_s))
        gone = asyncio.ensure_future(_disconnect(request))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise ClientGone
        gone.cancel()
        return work.result()

    async def answer(request: Request, key: Hashable, rows: int, payload: Any) -> Any:
        try:
            return await submit(request, key, rows, payload)
        except QueueFull as err:
            retry = max(1, math.ceil(batcher.drain_seconds()))
            return _error(429, f"the service is busy: {err}; retry later", headers={"Retry-After": str(retry)})
        except Closed as err:
            return _error(503, str(err), headers={"Retry-After": "5"})
        except TimeoutError:
            return _error(504, f"the request took longer than the timeout of {limits.timeout_s:g} s")
        except ClientGone:
            return Response(status_code=CLIENT_GONE)

    # -- models and health --------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: models loaded and the batcher taking requests (503 while shutting down)."""
        if state["closing"] or batcher.closed:
            return _error(503, "shutting down")
        return JSONResponse({"status": "ready", "models": list(models), "queue": batcher.depth})

    @app.get("/models")
    async def list_models() -> list[dict[str, Any]]:
        """The models served, with their shape, conditioning and default sampler."""
        return [_describe(name, pipe) for name, pipe in models.items()]

    @app.get("/models/{name}", responses={404: {"model": ErrorBody, "description": "the model is not served"}})
    async def model_config(name: str) -> Any:
        """One model's description and its full run config (404 for a model not served)."""
        if name not in models:
            return _error(404, f"name {name!r}: no such model is served; expected one of {sorted(models)}", "name")
        pipe = models[name]
        return {**_describe(name, pipe), "config": pipe.config.model_dump(mode="json")}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latency, batch sizes, queue depth."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    # -- sampling -----------------------------------------------------------------------------------
    SampleRequest = schemas.sample_request(limits)
    media = {MEDIA[f]: {} for f in schemas.FORMATS}

    @app.post("/sample", responses={200: {"content": media, "description": "the samples"}, **REFUSALS})
    async def sample(body: SampleRequest, request: Request) -> Response:  # type: ignore[valid-type]
        """Draw n samples; requests sharing model, solver, steps, grid and guidance are merged into one solver
        call, and each gets exactly the images it would get alone."""
        key, part = sample_job(models, body)
        pipe = models[key.model]
        x = await answer(request, key, part.n, part)
        if isinstance(x, Response):
            return x
        data = await run_in_threadpool(encode, x, body.format, recipe(pipe, key, body), pipe.is_image)
        return Response(data, media_type=MEDIA[body.format])

    # -- restoration --------------------------------------------------------------------------------
    async def restore(request: Request, name: str | None, fmt: str, work: Any, parameters: str) -> Response:
        name, pipe = pick_model(models, name)
        x = await answer(request, RestoreKey(name, next(idents)), 1, work)
        if isinstance(x, Response):
            return x
        data = await run_in_threadpool(encode, x, fmt, None, pipe.is_image, parameters)
        return Response(data, media_type=MEDIA[fmt])

    async def check_form(request: Request, form: Any, files: tuple[str, ...]) -> None:
        """A 422 naming the first form field that is neither a field of `form` nor one of the `files`."""
        allowed = set(type(form).model_fields) | set(files)
        unknown = sorted(set((await request.form()).keys()) - allowed)
        if unknown:
            raise FieldError(unknown[0], f"{unknown[0]!r}: unknown field; expected {sorted(allowed)}")

    async def upload(file: UploadFile, pipe: Pipeline, what: str, mask: bool = False) -> Any:
        shape = pipe.image_shape(what)
        data = await file.read()
        if mask:
            return mask_input(data, shape, limits.max_image_side)
        return image_input(data, shape, limits.max_image_side, what)

    InpaintForm = schemas.inpaint_form(limits)
    UpscaleForm = schemas.upscale_form(limits)
    DenoiseForm = schemas.denoise_form(limits)

    @app.post("/inpaint", responses={200: {"content": media, "description": "the completions"}, **REFUSALS})
    async def inpaint(form: Annotated[InpaintForm, Form()], image: Annotated[UploadFile, File()],  # type: ignore
                      mask: Annotated[UploadFile, File()], request: Request) -> Response:
        """n completions of the unknown pixels (mask black) of `image`; the known pixels are kept exactly."""
        await check_form(request, form, ("image", "mask"))
        _, pipe = pick_model(models, form.model)
        x0, known = await upload(image, pipe, "image"), await upload(mask, pipe, "mask", mask=True)
        steps = form.steps or min(50, limits.max_steps)

        def work() -> Any:
            return pipe.inpaint(x0, known, form.method, form.n, steps=steps, seed=form.seed)

        return await restore(request, form.model, form.format, work,
                             f"Inpaint: {form.method}, Steps: {steps}, Seed: {form.seed}, Images: {form.n}")

    @app.post("/upscale", responses={200: {"content": media, "description": "the high-resolution images"}, **REFUSALS})
    async def upscale(form: Annotated[UpscaleForm, Form()], image: Annotated[UploadFile, File()],  # type: ignore
                      request: Request) -> Response:
        """n images whose factor x average pooling is the uploaded low-resolution `image`."""
        await check_form(request, form, ("image",))
        _, pipe = pick_model(models, form.model)
        c, h, w = pipe.image_shape("low-resolution image")
        if h % form.factor or w % form.factor:
            raise ValueError(f"`factor` {form.factor} does not divide the model's {w}x{h} images")
        small = image_input(await image.read(), (c, h // form.factor, w // form.factor), limits.max_image_side)
        steps = form.steps or min(50, limits.max_steps)

        def work() -> Any:
            return pipe.upscale(small, form.factor, form.method, form.n, steps=steps, seed=form.seed, sigma=form.sigma)

        return await restore(request, form.model, form.format, work,
                             f"Upscale: {form.method} x{form.factor}, Steps: {steps}, Seed: {form.seed}")

    @app.post("/denoise", responses={200: {"content": media, "description": "posterior samples of the clean image"}, **REFUSALS})
    async def denoise(form: Annotated[DenoiseForm, Form()], image: Annotated[UploadFile, File()],  # type: ignore
                      request: Request) -> Response:
        """n posterior samples of the clean image given the uploaded noisy `image` (noise std `sigma`)."""
        await check_form(request, form, ("image",))
        _, pipe = pick_model(models, form.model)
        y = await upload(image, pipe, "image")
        steps = form.steps or min(50, limits.max_steps)
        method = form.method or pipe.default_method("denoise")

        def work() -> Any:
            with field_errors("sigma"):  # the noise level outside the model's range names no field
                return pipe.denoise(y, form.sigma, method, form.n, steps=steps, seed=form.seed)

        return await restore(request, form.model, form.format, work,
                             f"Denoise: {method}, sigma {form.sigma:g}, Steps: {steps}, Seed: {form.seed}")

    return app


async def _disconnect(request: Request) -> None:
    """Returns when the client has disconnected (the body is already read, so the next ASGI message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noisecraft")
    except PackageNotFoundError:
        return "unknown"


def serve(models: Mapping[str, Pipeline], limits: Limits | None = None, host: str = "127.0.0.1", port: int = 8000,
          ui: bool = False, log_level: str = "info") -> None:
    """Run the service under uvicorn until interrupted; SIGINT/SIGTERM stop accepting, finish the requests in
    flight (up to 30 s), then stop. `ui` mounts the web page (noisecraft.serve.ui) at /ui."""
    import uvicorn

    app = create_app(models, limits)
    if ui:
        from noisecraft.serve.ui import mount_ui

        app = mount_ui(app, app.state.models, "/ui")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


__all__ = ["create_app", "serve"]
