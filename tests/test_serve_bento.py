"""The BentoML service (noisecraft.serve.bento): requests merged by arrival are grouped by batch key and drawn
with the HTTP service's batch function, each getting bit for bit the samples it gets alone; a bad request is
refused alone; and `bentoml serve`, started on 127.0.0.1 by the test, answers a PNG whose pixels are
Pipeline.sample's for the same seed. Skipped when bentoml is not installed (the `bento` extra)."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

pytest.importorskip("bentoml", reason="bentoml is not installed (pip install 'noisecraft[bento]')")

import noisecraft as nc
from noisecraft.runs import recipe as R
from noisecraft.serve import bento, jobs
from noisecraft.serve.models import load_models
from tests.test_pipeline import _train

pytestmark = pytest.mark.xdist_group("serve")
EVAL_BATCH = 4
SHAPE = (1, 8, 8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bento")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    return root


@pytest.fixture(scope="module")
def models(runs: Path) -> dict:
    return load_models([f"plain={runs / 'plain'}", f"cond={runs / 'cond'}"], eval_batch=EVAL_BATCH)


@pytest.fixture
def served(models: dict):
    """The models as a started service holds them (SampleRequest checks requests against them)."""
    bento.SERVED.update(models)
    yield models
    bento.SERVED.clear()


def _request(**fields):
    return bento.SampleRequest(**fields)


# -- in-process: the batch function over arrival-merged requests ----------------------------------------------
def test_merged_requests_are_grouped_by_key_and_each_gets_its_own_samples(served: dict, monkeypatch) -> None:
    requests = [_request(model="plain", n=2, steps=2, seed=1), _request(model="cond", n=1, steps=2, seed=4, label=3),
                _request(model="plain", n=3, steps=3, seed=2), _request(model="plain", n=1, steps=2, seed=7),
                _request(model="cond", n=2, steps=2, seed=5, label=8)]
    calls = []
    draw_parts = jobs.draw_parts
    monkeypatch.setattr(jobs, "draw_parts", lambda models, key, parts: calls.append((key, parts))
                        or draw_parts(models, key, parts))
    samples = bento.draw_requests(served, requests)
    # three keys: plain at 2 steps (requests 0 and 3), cond at 2 steps (1 and 4, labels per row), plain at 3 steps
    assert sorted(len(parts) for _, parts in calls) == [1, 2, 2]
    for request, x in zip(requests, samples, strict=True):
        alone = served[request.model].sample(request.n, steps=request.steps, seed=request.seed, label=request.label)
        assert torch.equal(x, alone), request


def test_a_png_answer_carries_its_recipe_and_draws_again(served: dict) -> None:
    request = _request(model="cond", n=3, steps=2, seed=9, label=5)
    (x,) = bento.draw_requests(served, [request])
    png = bento.encode_request(served, request, x)
    recipe = R.read_recipe(png)
    assert (recipe.model, recipe.n, recipe.seed, recipe.label, recipe.eval_batch) == ("cond", 3, 9, 5, EVAL_BATCH)
    assert torch.equal(R.draw(served["cond"], recipe), x)


@pytest.mark.parametrize(("fields", "field"), [
    ({"model": "nope"}, "model"), ({"model": "cond"}, "label"), ({"model": "plain", "solver": "magic"}, "solver"),
    ({"n": 10_000}, "n"), ({"guidance": float("nan")}, "guidance"), ({"colour": "red"}, "colour"),
])
def test_a_bad_request_is_refused_on_arrival_naming_the_field(served: dict, fields: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        _request(**fields)


def test_models_come_from_the_environment_variable() -> None:
    assert bento.model_specs(" a=runs/a, runs/b ,") == ["a=runs/a", "runs/b"]
    with pytest.raises(ValueError, match="NOISECRAFT_MODELS is empty"):
        bento.model_specs(" , ")


# -- `bentoml serve` on loopback ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs: Path, tmp_path_factory):
    """`bentoml serve noisecraft.serve.bento:NoiseCraft` on 127.0.0.1, its own process group, stopped after."""
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")), "BENTOML_DO_NOT_TRACK": "True",
           "NOISECRAFT_MODELS": f"plain={runs / 'plain'},cond={runs / 'cond'}", "NOISECRAFT_EVAL_BATCH": str(EVAL_BATCH),
           "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("bentoml_log") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "noisecraft.serve.bento:NoiseCraft",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"bentoml serve exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"bentoml serve was not ready in 120 s: {log.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started: bentoml's arbiter and its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _post(url: str, *requests: dict) -> httpx.Response:
    return httpx.post(url + "/sample", json={"requests": list(requests)}, timeout=120)


def _pixels(answer: str, n: int) -> np.ndarray:
    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer))))
    return R.untile(sheet[..., None] if sheet.ndim == 2 else sheet, n, SHAPE)


def _api(runs: Path, name: str, n: int, **kwargs) -> np.ndarray:
    return R.to_uint8(nc.load_run(runs / name, eval_batch=EVAL_BATCH).sample(n, **kwargs))


def test_a_served_png_is_pipeline_sample_pixel_for_pixel(server: str, runs: Path) -> None:
    response = _post(server, {"model": "plain", "n": 3, "steps": 2, "seed": 11})
    assert response.status_code == 200, response.text
    (answer,) = response.json()
    assert R.read_recipe(base64.b64decode(answer)).eval_batch == EVAL_BATCH
    assert np.array_equal(_pixels(answer, 3), _api(runs, "plain", 3, steps=2, seed=11))


def test_concurrent_requests_each_get_their_own_images_and_a_bad_one_fails_alone(server: str, runs: Path) -> None:
    bodies = [{"model": "plain", "n": 2, "steps": 2, "seed": 1}, {"model": "cond", "n": 2, "steps": 2, "seed": 2,
              "label": 6}, {"model": "plain", "n": 1, "steps": 3, "seed": 3}, {"model": "cond", "steps": 2},
              {"model": "plain", "n": 2, "steps": 2, "seed": 4}]
    with cf.ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: _post(server, body), bodies))
    bad = responses.pop(3)
    assert bad.status_code == 400 and "label" in bad.text, bad.text
    for body, response in zip(bodies[:3] + bodies[4:], responses, strict=True):
        assert response.status_code == 200, response.text
        kwargs = {k: v for k, v in body.items() if k in ("steps", "seed", "label")}
        assert np.array_equal(_pixels(response.json()[0], body["n"]), _api(runs, body["model"], body["n"], **kwargs))
