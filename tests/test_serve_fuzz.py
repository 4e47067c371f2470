"""The HTTP service (noisecraft.serve.app) against hostile input: property-based requests generated from its own
OpenAPI schema (schemathesis, schema-valid and schema-violating) never get a 5xx and answer as the schema says;
and hand-written requests over loopback (oversized bodies and uploads, a chunked body, truncated images, NaN and
huge numbers, unknown models and fields, wrong content types) each get their 4xx naming the field at fault.

Small Limits keep every request cheap. Derandomized, so CI sees the same examples on every run.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from noisecraft.serve.app import create_app
from noisecraft.serve.limits import Limits
from noisecraft.serve.models import load_models
from tests.test_pipeline import _train

pytestmark = pytest.mark.xdist_group("serve")

LIMITS = Limits(max_n=4, max_steps=8, max_body_bytes=64 * 1024, max_image_side=64, max_batch_rows=8,
                max_wait_ms=1.0, max_queue=32, timeout_s=60.0, eval_batch=4)
SIDE = 8  # the digits runs' images are 1 x 8 x 8
MODELS = ("plain", "cond")
FUZZ = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _png(side: int | tuple[int, int] = SIDE, fill: int | None = None) -> bytes:
    """A grayscale PNG (a ramp, or one gray level `fill`) of `side` pixels, or (width, height)."""
    w, h = (side, side) if isinstance(side, int) else side
    pixels = (np.arange(w * h) * 3 % 256 if fill is None else np.full(w * h, fill)).astype(np.uint8).reshape(h, w)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _half_mask(side: int = SIDE) -> bytes:
    """White (known) left half, black (unknown) right half."""
    mask = np.full((side, side), 255, np.uint8)
    mask[:, side // 2:] = 0
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serve_fuzz")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    return load_models([f"{name}={root / name}" for name in MODELS], eval_batch=LIMITS.eval_batch)


# -- property-based: the OpenAPI schema drives the requests ---------------------------------------------------
OPERATIONS = [("GET", "/health"), ("GET", "/ready"), ("GET", "/models"), ("GET", "/models/{name}"),
              ("GET", "/metrics"), ("POST", "/sample"), ("POST", "/inpaint"), ("POST", "/upscale"),
              ("POST", "/denoise")]
CASES = [(m, p, "positive") for m, p in OPERATIONS] + [(m, p, "negative") for m, p in OPERATIONS if m == "POST"]
#: what a refused request may get: unparsable body, size limits, a bad field, a full queue
REFUSALS = {400, 404, 413, 422, 429}


@pytest.fixture
def api_schema(models):
    """The schema of a fresh in-process app (schemathesis drives it over ASGI and ends its lifespan after each
    test; an app does not start twice, see test_an_app_serves_again_after_its_lifespan_restarts)."""
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(models, LIMITS))


def _resolve(raw: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = raw["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _declared(case) -> set[str]:
    """The field names the multipart body of `case`'s operation declares (the form's and the files)."""
    raw = case.operation.schema.raw_schema
    body = _resolve(raw, case.operation.definition.raw["requestBody"]["content"]["multipart/form-data"]["schema"])
    return {name for part in [body, *body.get("allOf", [])] for name in _resolve(raw, part).get("properties", {})}


def _with_real_images(case) -> None:
    """A schema-valid multipart case made well-formed: real PNGs of the size the model takes for its images
    (random bytes never get past decoding, so the restoration paths would go unfuzzed), and only the declared
    fields (the schema allows extra ones, which the service refuses) naming a served model or none, and steps
    within Limits (a restoration without steps runs 50: test_a_restoration_without_steps_stays_within_max_steps)."""
    body = case.body
    if isinstance(body, dict) and "image" in body:
        side = SIDE // body.get("factor", 2) if case.operation.path == "/upscale" else SIDE
        body = {k: v for k, v in body.items() if k in _declared(case) and not (k == "model" and v not in MODELS)}
        body["steps"] = body.get("steps") or LIMITS.max_steps
        case.body = {**body, "image": _png(side), **({"mask": _half_mask()} if "mask" in body else {})}


def _check(case, response, mode: str) -> None:
    """No 5xx; a success as documented; a refusal one of REFUSALS, in the service's error shape (or FastAPI's
    for a body it cannot parse); a schema-violating request never accepted."""
    assert response.status_code < 500, (case.body, case.path_parameters, response.status_code, response.text[:300])
    checks = [not_a_server_error, response_schema_conformance, response_headers_conformance]
    checks += [negative_data_rejection] if mode == "negative" else []
    checks += [content_type_conformance, status_code_conformance]
    if response.status_code >= 300:
        assert response.status_code in REFUSALS, (case.body, response.status_code, response.text[:300])
        body = response.json()
        error = body.get("error", body.get("detail") if response.status_code == 400 else None)
        assert isinstance(error, str) and error, body
    case.validate_response(response, checks=checks)


def test_the_schema_lists_every_operation(api_schema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[" ".join(c) for c in CASES])
def test_generated_requests_never_get_a_server_error(api_schema, method: str, path: str, mode: str) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @FUZZ
    @given(case=operation.as_strategy(GenerationMode(mode)), real_images=st.sampled_from([True, True, True, False]))
    def run(case, real_images: bool) -> None:
        if real_images and mode == "positive":
            _with_real_images(case)
        response = case.call()
        statuses.append(response.status_code)
        _check(case, response, mode)

    run()
    if mode == "positive" and method == "POST":
        assert 200 in statuses, statuses  # the fuzz reached the models, not only the validators
    if mode == "negative":
        assert statuses and all(400 <= s < 500 for s in statuses), statuses


# -- hand-written: a real server on loopback ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(models) -> Iterator[httpx.Client]:
    """The service under uvicorn on 127.0.0.1 (a free port), in a thread; stopped (requests drained) after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(models, LIMITS), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    srv.should_exit = True
    thread.join(30)
    sock.close()


def _refused(response, status: int, field: str | None = None) -> str:
    """The error message of a refusal with `status`, naming `field` (the `field` key and the message)."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert isinstance(body.get("error"), str) and "\n" not in body["error"], body
    if field is not None:
        assert body.get("field") == field and field in body["error"], body
    return body["error"]


def _files(image: bytes = b"", mask: bytes | None = None) -> dict:
    files = {"image": ("image.png", image or _png(), "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


def test_the_server_answers_on_loopback(server) -> None:
    assert server.get("/health").json() == {"status": "ok"}
    response = server.post("/sample", json={"model": "cond", "n": 2, "steps": 2, "label": 3, "format": "npy"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert np.load(io.BytesIO(response.content), allow_pickle=False).shape == (2, 1, SIDE, SIDE)


@pytest.mark.parametrize(("route", "field"), [("/denoise", "image"), ("/inpaint", "image"), ("/inpaint", "mask")])
def test_an_upload_over_the_side_limit_is_413_naming_it(server, route: str, field: str) -> None:
    big = _png(LIMITS.max_image_side + 1, fill=128)  # a few hundred bytes: under the body limit, over the side limit
    files = _files(mask=_half_mask()) if route == "/inpaint" else _files()
    files[field] = (f"{field}.png", big, "image/png")
    data = {"steps": "2"} if route == "/inpaint" else {"sigma": "0.5", "steps": "2"}
    error = _refused(server.post(route, data=data, files=files), 413, field)
    assert str(LIMITS.max_image_side) in error


def test_a_body_over_the_limit_is_413_by_its_length(server) -> None:
    padding = "x" * LIMITS.max_body_bytes
    _refused(server.post("/sample", content=json.dumps({"prompt": padding}),
                         headers={"content-type": "application/json"}), 413)
    noise = np.random.default_rng(0).integers(0, 256, LIMITS.max_body_bytes + 1, dtype=np.uint8).tobytes()
    _refused(server.post("/denoise", data={"sigma": "0.5"}, files={"image": ("a.png", noise, "image/png")}), 413)


def _chunked(body: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def _post_chunked(server, route: str, body: bytes, content_type: str):
    response = server.post(route, content=_chunked(body), headers={"content-type": content_type})
    assert "content-length" not in response.request.headers  # sent as Transfer-Encoding: chunked
    return response


def test_a_chunked_body_under_the_limit_is_served(server) -> None:
    ok = json.dumps({"model": "plain", "n": 1, "steps": 2, "format": "npy"}).encode()
    assert _post_chunked(server, "/sample", ok, "application/json").status_code == 200


@pytest.mark.parametrize("route", ["/sample", "/denoise"])
def test_a_chunked_body_over_the_limit_is_413(server, route: str) -> None:
    if route == "/sample":
        body, content_type = json.dumps({"prompt": "x" * (2 * LIMITS.max_body_bytes)}).encode(), "application/json"
    else:
        noise = np.random.default_rng(0).integers(0, 256, 2 * LIMITS.max_body_bytes, dtype=np.uint8).tobytes()
        request = httpx.Request("POST", "http://127.0.0.1/denoise", data={"sigma": "0.5"},
                                files={"image": ("a.png", noise, "image/png")})
        body, content_type = request.read(), request.headers["content-type"]
    _refused(_post_chunked(server, route, body, content_type), 413)


@pytest.mark.parametrize("field", ["image", "mask"])
def test_a_truncated_png_is_422_naming_it(server, field: str) -> None:
    files = _files(mask=_half_mask())
    whole = files[field][1]
    files[field] = (f"{field}.png", whole[: len(whole) // 2], "image/png")
    _refused(server.post("/inpaint", data={"steps": "2"}, files=files), 422, field)
    files[field] = (f"{field}.png", b"GIF89a not an image", "image/png")
    _refused(server.post("/inpaint", data={"steps": "2"}, files=files), 422, field)


def test_a_mask_of_the_wrong_size_is_422_naming_it(server) -> None:
    error = _refused(server.post("/inpaint", data={"steps": "2"}, files=_files(mask=_half_mask(SIDE * 2))),
                     422, "mask")
    assert f"{SIDE * 2}x{SIDE * 2}" in error
    _refused(server.post("/denoise", data={"sigma": "0.5"}, files=_files(_png((SIDE, SIDE + 1)))), 422, "image")


@pytest.mark.parametrize(("raw", "field"), [
    ('{"guidance": Infinity}', "guidance"), ('{"guidance": -Infinity}', "guidance"),
    ('{"guidance": 1e400}', "guidance"), ('{"threshold": NaN}', "threshold"), ('{"n": 1e300}', "n"),
    ('{"n": ' + "9" * 400 + "}", "n"), ('{"seed": 1' + "0" * 30 + "}", "seed"), ('{"steps": 1e18}', "steps"),
    ('{"label": -1}', "label"), ('{"columns": 0}', "columns"),
])
def test_nan_and_huge_numbers_are_422_naming_the_field(server, raw: str, field: str) -> None:
    _refused(server.post("/sample", content=raw, headers={"content-type": "application/json"}), 422, field)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1"])
def test_nan_and_huge_numbers_in_forms_are_422_naming_the_field(server, value: str) -> None:
    _refused(server.post("/denoise", data={"sigma": value}, files=_files()), 422, "sigma")


def test_unknown_models_are_refused_naming_the_model(server) -> None:
    error = _refused(server.post("/denoise", data={"model": "nope", "sigma": "0.5"}, files=_files()), 422, "model")
    assert "cond" in error and "plain" in error  # the served ones are listed
    _refused(server.get("/models/nope"), 404, "name")


def test_unknown_form_fields_are_422_naming_them(server) -> None:
    _refused(server.post("/denoise", data={"sigma": "0.5", "colour": "red"}, files=_files()), 422, "colour")


@pytest.mark.parametrize(("data", "field"), [({"sigma": "1e-5"}, "sigma"), ({"sigma": "0.5", "Colour": "red"}, "Colour")])
def test_every_422_names_its_field(server, data: dict, field: str) -> None:
    _refused(server.post("/denoise", data={"steps": "2", **data}, files=_files()), 422, field)


@pytest.mark.parametrize("body", ["[1, 2]", '"png"', "null", "{", "{\"n\": 1,}"])
def test_json_that_is_not_an_object_is_refused(server, body: str) -> None:
    _refused(server.post("/sample", content=body, headers={"content-type": "application/json"}), 422)


def test_a_wrong_content_type_is_refused(server) -> None:
    ok = json.dumps({"n": 1, "steps": 2})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream"):
        response = server.post("/sample", content=ok, headers={"content-type": content_type})
        assert response.status_code in (415, 422), (content_type, response.status_code, response.text)
        _refused(response, response.status_code)
    response = server.post("/denoise", json={"sigma": 0.5})  # a restoration needs multipart with its image
    assert response.status_code in (415, 422), response.text
    _refused(response, response.status_code)


# -- what the schema documents, and an app's life -------------------------------------------------------------
@pytest.fixture
def openapi(models) -> dict:
    return create_app(models, LIMITS).openapi()


def test_multipart_bodies_are_satisfiable(openapi) -> None:
    """A form model that forbade extra fields beside FastAPI's file properties (allOf) would admit no body."""
    for route in ("/inpaint", "/upscale", "/denoise"):
        body = _resolve(openapi, openapi["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]
                        ["schema"])
        for part in body.get("allOf", []):
            form = _resolve(openapi, part)
            extra = set(body.get("properties", {})) - set(form.get("properties", {}))
            assert form.get("additionalProperties", True) is not False or not extra, (route, extra)


def test_refusals_are_documented_as_answered(openapi) -> None:
    for route in ("/sample", "/inpaint", "/upscale", "/denoise"):
        responses = openapi["paths"][route]["post"]["responses"]
        for status in ("413", "422", "429", "503", "504"):
            assert status in responses, (route, status)
            schema = _resolve(openapi, responses[status]["content"]["application/json"]["schema"])
            assert "error" in schema.get("properties", {}), (route, status, schema)


def test_metrics_are_documented_as_text(openapi) -> None:
    assert "text/plain" in openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_an_app_serves_again_after_its_lifespan_restarts(models) -> None:
    from fastapi.testclient import TestClient

    app = create_app(models, LIMITS)
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get("/ready").status_code == 200
            assert client.post("/sample", json={"n": 1, "steps": 2, "format": "npy"}).status_code == 200


def test_a_restoration_without_steps_stays_within_max_steps(server) -> None:
    response = server.post("/denoise", data={"sigma": "0.5", "n": "1"}, files=_files())
    assert response.status_code == 200, response.text
    parameters = Image.open(io.BytesIO(response.content)).text["parameters"]
    steps = int(parameters.split("Steps: ")[1].split(",")[0])
    assert steps <= LIMITS.max_steps, parameters
