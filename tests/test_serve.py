"""`noisecraft serve` as a user runs it: uvicorn started on 127.0.0.1 by the test and stopped by it. Requests
merge and each gets exactly the images the Python API gives for its seed; limits answer 422 / 429 / 504; a
client that leaves frees its place; SIGTERM finishes the work in flight."""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import noisecraft as nc
from noisecraft.runs import recipe as R
from tests.test_pipeline import _train

pytestmark = pytest.mark.xdist_group("serve")
EVAL_BATCH = 8
#: uvicorn finishes its work on SIGTERM, then re-raises the signal, so a clean stop exits 0 or -SIGTERM
GRACEFUL = (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    mask = np.full((8, 8), 255, np.uint8)
    mask[:, 4:] = 0
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(root / "x.png")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`noisecraft serve` in a subprocess on 127.0.0.1; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, runs: Path, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "noisecraft.cli", "serve", f"plain={runs / 'plain'}", f"cond={runs / 'cond'}",
             "--port", str(self.port), "--eval-batch", str(EVAL_BATCH), "--max-n", "16", *options],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the service did not become ready in 90 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def post(self, path: str = "/sample", **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=60, **kwargs)

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def server(runs: Path):
    srv = Server(runs, "--max-queue", "6")
    yield srv
    assert srv.stop() in GRACEFUL


def _pixels(response: httpx.Response, n: int) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return R.untile(np.asarray(Image.open(io.BytesIO(response.content)))[..., None], n, (1, 8, 8))


def _api(runs: Path, name: str, n: int, **kwargs) -> np.ndarray:
    return R.to_uint8(nc.load_run(runs / name, eval_batch=EVAL_BATCH).sample(n, **kwargs))


def test_health_models_schema_and_metrics(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = httpx.get(server.url + "/models").json()
    assert [m["name"] for m in models] == ["plain", "cond"] and models[1]["num_classes"] == 10
    config = httpx.get(server.url + "/models/cond").json()
    assert config["config"]["model"]["num_classes"] == 10
    schema = httpx.get(server.url + "/openapi.json").json()
    body = schema["components"]["schemas"]["SampleRequest"]["properties"]
    assert body["n"]["maximum"] == 16  # the limits in force are in the schema
    assert httpx.get(server.url + "/docs").status_code == 404  # no page that would load scripts from a CDN
    assert "noisecraft_queue_depth" in httpx.get(server.url + "/metrics").text


def test_a_sample_is_the_python_api_output_with_its_recipe(server: Server, runs: Path) -> None:
    response = server.post(json={"model": "cond", "n": 5, "seed": 3, "steps": 3, "label": 7, "guidance": 2.0})
    assert np.array_equal(_pixels(response, 5), _api(runs, "cond", 5, seed=3, steps=3, label=7, guidance=2.0))
    recipe = R.read_recipe(response.content)
    assert (recipe.model, recipe.label, recipe.guidance, recipe.eval_batch) == ("cond", 7, 2.0, EVAL_BATCH)
    npy = server.post(json={"n": 3, "seed": 1, "steps": 3, "format": "npy"})
    x = np.load(io.BytesIO(npy.content), allow_pickle=False)
    pipe = nc.load_run(runs / "plain", eval_batch=EVAL_BATCH)
    assert np.array_equal(x, pipe.sample(3, seed=1, steps=3).numpy())
    body = server.post(json={"n": 2, "seed": 1, "steps": 3, "format": "json"}).json()
    assert np.array_equal(np.asarray(body["samples"], np.float32), x[:2]) and body["recipe"]["seed"] == 1


def test_concurrent_requests_merge_and_each_gets_its_own_images(server: Server, runs: Path) -> None:
    before = (server.metric("noisecraft_batch_requests_sum"), server.metric("noisecraft_batch_requests_count"))
    seeds = [11, 12, 13, 14]
    with cf.ThreadPoolExecutor(len(seeds) + 1) as pool:
        holder = pool.submit(server.post, json={"n": 16, "seed": 0, "steps": 60})  # keeps the worker busy
        time.sleep(0.3)
        futures = {s: pool.submit(server.post, json={"n": 2, "seed": s, "steps": 4}) for s in seeds}
        results = {s: f.result() for s, f in futures.items()}
        assert holder.result().status_code == 200
    for s, response in results.items():
        assert np.array_equal(_pixels(response, 2), _api(runs, "plain", 2, seed=s, steps=4))
    merged = server.metric("noisecraft_batch_requests_sum") - before[0]
    batches = server.metric("noisecraft_batch_requests_count") - before[1]
    assert merged == len(seeds) + 1 and batches < merged  # at least two requests shared one solver call


def test_merged_class_requests_keep_their_labels(server: Server, runs: Path) -> None:
    with cf.ThreadPoolExecutor(3) as pool:
        holder = pool.submit(server.post, json={"model": "cond", "n": 16, "label": 0, "steps": 60})
        time.sleep(0.3)
        a = pool.submit(server.post, json={"model": "cond", "n": 2, "seed": 5, "label": 3, "steps": 4})
        b = pool.submit(server.post, json={"model": "cond", "n": 3, "seed": 5, "label": 8, "steps": 4})
        assert holder.result().status_code == 200
        assert np.array_equal(_pixels(a.result(), 2), _api(runs, "cond", 2, seed=5, label=3, steps=4))
        assert np.array_equal(_pixels(b.result(), 3), _api(runs, "cond", 3, seed=5, label=8, steps=4))


@pytest.mark.parametrize(("body", "field"), [
    ({"n": 17}, "n"), ({"steps": 0}, "steps"), ({"model": "nope"}, "model"), ({"label": 3}, "label"),
    ({"model": "cond"}, "label"), ({"model": "cond", "label": 10}, "label"), ({"solver": "magic"}, "solver"),
    ({"guidance": 1e300}, "guidance"), ({"seed": -1}, "seed"), ({"colour": "red"}, "colour"),
])
def test_bad_fields_are_422_naming_the_field(server: Server, body: dict, field: str) -> None:
    response = server.post(json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and field in response.json()["error"]


def test_nan_in_json_is_refused(server: Server) -> None:
    response = server.post(content=b'{"n": 1, "guidance": NaN}', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "guidance"


def test_inpainting_keeps_the_known_pixels(server: Server, runs: Path) -> None:
    files = {"image": (runs / "x.png").read_bytes(), "mask": (runs / "mask.png").read_bytes()}
    response = server.post("/inpaint", files=files, data={"n": "2", "steps": "5", "method": "dps"})
    pixels = _pixels(response, 2)[..., 0]
    source = np.asarray(Image.open(runs / "x.png"))
    assert np.array_equal(pixels[:, :, :4], np.broadcast_to(source[:, :4], (2, 8, 4)))
    assert "Inpaint: dps" in Image.open(io.BytesIO(response.content)).text["parameters"]
    wrong = server.post("/inpaint", files={**files, "mask": (runs / "x.png").read_bytes()[:30]}, data={"n": "1"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "mask"


def test_a_full_queue_answers_429_with_retry_after(server: Server) -> None:
    with cf.ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(server.post, json={"n": 16, "seed": s, "steps": 40 + s}) for s in range(10)]
        codes = [f.result() for f in futures]
    refused = [r for r in codes if r.status_code == 429]
    assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.status_code for r in codes} <= {200, 429}


def test_clients_that_leave_free_their_places(server: Server) -> None:
    """Six requests (the queue's size) sent and abandoned: the next request is served, not refused."""
    body = b'{"n": 16, "steps": 200, "seed": 1}'
    socks = []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.close()
    time.sleep(0.5)
    response = server.post(json={"n": 1, "steps": 2})
    assert response.status_code == 200, response.text


def test_timeout_is_504_and_shutdown_finishes_work_in_flight(runs: Path) -> None:
    srv = Server(runs, "--timeout", "0.05")
    try:
        assert srv.post(json={"n": 16, "steps": 200}).status_code == 504
    finally:
        srv.stop()
    srv = Server(runs)
    with cf.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(srv.post, json={"n": 16, "steps": 120, "seed": 2})
        time.sleep(0.5)
        assert srv.stop() in GRACEFUL  # SIGTERM while the request runs
        response = slow.result()
    assert response.status_code == 200
    assert np.array_equal(_pixels(response, 16), _api(runs, "plain", 16, seed=2, steps=120))
