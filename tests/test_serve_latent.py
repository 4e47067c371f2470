"""`noisecraft serve` with latent diffusion runs, as a user runs it (uvicorn on 127.0.0.1, started and stopped by
the test): the service draws through the Pipeline, which decodes, so the answers are the decoded images of the
Python API, bit for bit, and the model list gives the image shape, not the latent one."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import noisecraft as nc
from noisecraft.runs import recipe as R
from noisecraft.runs.train import train
from tests.test_latent import _latent_config, _vae
from tests.test_serve import EVAL_BATCH, GRACEFUL, Server

pytestmark = pytest.mark.xdist_group("serve")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A tiny autoencoder and two tiny latent runs on it, named as tests.test_serve.Server serves them."""
    root = tmp_path_factory.mktemp("serve_latent")
    _vae(root / "vae")
    train(_latent_config(root / "vae"), root / "plain", progress=False)
    train(_latent_config(root / "vae", num_classes=10, label_dropout=0.2), root / "cond", progress=False)
    small = np.linspace(0, 255, 256).reshape(16, 16).astype(np.uint8)
    Image.fromarray(small).save(root / "small.png")
    return root


@pytest.fixture(scope="module")
def server(runs: Path):
    srv = Server(runs)
    yield srv
    assert srv.stop() in GRACEFUL


def _decoded(runs: Path, name: str, n: int, **kwargs) -> np.ndarray:
    return nc.load_run(runs / name, eval_batch=EVAL_BATCH).sample(n, **kwargs).numpy()


def test_the_model_list_gives_the_image_shape(server: Server) -> None:
    models = {m["name"]: m for m in httpx.get(server.url + "/models").json()}
    assert models["plain"]["shape"] == [1, 32, 32] and models["cond"]["shape"] == [1, 32, 32]


def test_a_sample_is_the_decoded_output_of_the_python_api(server: Server, runs: Path) -> None:
    expected = _decoded(runs, "plain", 3, seed=2, steps=3)
    assert expected.shape == (3, 1, 32, 32)
    npy = server.post(json={"n": 3, "seed": 2, "steps": 3, "format": "npy"})
    assert npy.status_code == 200, npy.text
    assert np.array_equal(np.load(io.BytesIO(npy.content), allow_pickle=False), expected)
    png = server.post(json={"model": "cond", "n": 2, "seed": 4, "steps": 3, "label": 5, "guidance": 2.0})
    assert png.status_code == 200, png.text
    assert "Size: 32x32" in Image.open(io.BytesIO(png.content)).text["parameters"]
    pixels = R.untile(np.asarray(Image.open(io.BytesIO(png.content)))[..., None], 2, (1, 32, 32))
    assert np.array_equal(pixels, R.to_uint8(nc.load_run(runs / "cond", eval_batch=EVAL_BATCH).sample(
        2, seed=4, steps=3, label=5, guidance=2.0)))


def test_upscaling_and_denoising_a_latent_run_answer_decoded_images(server: Server, runs: Path) -> None:
    response = server.post("/upscale", files={"image": (runs / "small.png").read_bytes()},
                           data={"n": "2", "steps": "3", "method": "dps", "format": "npy"})
    assert response.status_code == 200, response.text
    x = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert x.shape == (2, 1, 32, 32) and np.isfinite(x).all()
    noisy = runs / "noisy.png"
    Image.fromarray(np.linspace(0, 255, 1024).reshape(32, 32).astype(np.uint8)).save(noisy)
    response = server.post("/denoise", files={"image": noisy.read_bytes()},
                           data={"n": "1", "steps": "3", "sigma": "0.2", "method": "ddnm", "format": "npy"})
    assert response.status_code == 200, response.text
    ddnm = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert ddnm.shape == (1, 1, 32, 32)
    default = server.post("/denoise", files={"image": noisy.read_bytes()},  # a latent run's default is DDNM
                          data={"n": "1", "steps": "3", "sigma": "0.2", "format": "npy"})
    assert default.status_code == 200, default.text
    assert np.array_equal(np.load(io.BytesIO(default.content), allow_pickle=False), ddnm)
    refused = server.post("/denoise", files={"image": noisy.read_bytes()},
                          data={"n": "1", "sigma": "0.2", "method": "posterior"})
    assert refused.status_code == 422 and "latent diffusion run" in refused.json()["error"]
    assert refused.json()["field"] == "method"
