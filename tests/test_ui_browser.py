"""The web page in a real browser: Debian's headless Chromium driven by Playwright (never `playwright
install`). Sampling in the page shows the Python API's pixels; a downloaded PNG uploaded again draws the same
image and fills the controls; inpainting with a mask drawn by the mouse keeps the unmasked pixels; the Tabular
tab shows a tabular model's rows and downloads their CSV; a bad input is a one-line error in the page; and no
request leaves loopback (no CDN, no fonts, no telemetry).

Run as a script, it takes the screenshots of docs/ui.md from real runs:
    python tests/test_ui_browser.py --out docs/img /work/runs/digits /work/runs/student [TABULAR_MODEL]
"""

from __future__ import annotations

import base64
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

pytestmark = pytest.mark.xdist_group("browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves_loopback(url: str) -> bool:
    """Whether a request goes to another machine: anything but loopback http(s) or data:/blob: URLs."""
    parsed = urlparse(url)
    if parsed.scheme == "data":
        return False
    if parsed.scheme == "blob":  # blob:http://127.0.0.1:PORT/uuid: an object the page made itself
        parsed = urlparse(parsed.path)
    return parsed.hostname not in LOOPBACK


@contextmanager
def chromium():
    """Debian's Chromium, headless, under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, log: list[str], width: int = 1280, height: int = 900):
    """A new tab on the page, its requests appended to `log`, once Gradio has rendered."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    page.on("request", lambda request: log.append(request.url))
    page.goto(url)
    page.wait_for_selector("#nc-sample-run")
    return page


def set_number(page, selector: str, value: float) -> None:
    box = page.locator(f"{selector} input").first
    box.fill(str(value))
    box.press("Tab")


def fetch_bytes(page, src: str) -> bytes:
    """The bytes of an image URL as the page fetches them."""
    text = page.evaluate("""async (src) => {
        const buffer = await (await fetch(src)).arrayBuffer();
        let text = ''; for (const b of new Uint8Array(buffer)) text += String.fromCharCode(b);
        return btoa(text); }""", src)
    return base64.b64decode(text)


def shown_image(page, elem_id: str, contains: str) -> bytes:
    """The PNG an output image shows, once its file name contains `contains`."""
    img = page.locator(f"#{elem_id} img[src*='{contains}']")
    img.wait_for()
    return fetch_bytes(page, img.get_attribute("src"))


def sample_in_page(page, seed: int, n: int, steps: int | None = None) -> bytes:
    set_number(page, "#nc-sample-seed", seed)
    set_number(page, "#nc-sample-n", n)
    if steps is not None:
        set_number(page, "#nc-sample-steps", steps)
    page.click("#nc-sample-run")
    return shown_image(page, "nc-samples", f"_seed{seed}_")


def paint_rows(page) -> None:
    """One brush stroke across the middle of the image in the mask editor (the image is centred)."""
    canvas = page.locator("#nc-inpaint-editor canvas").first
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 100, y)
    page.mouse.down()
    page.mouse.move(x + 100, y, steps=12)
    page.mouse.up()


def paint_and_inpaint(page, tries: int = 3) -> None:
    """Paint a stroke and run inpainting; again if the editor had not drawn its new background yet (the
    stroke then lands nowhere and the page answers "no mask")."""
    done = page.locator("#nc-inpaint-result img[src*='_inpaint_']").or_(page.locator(".toast-body"))
    for _ in range(tries):
        paint_rows(page)
        page.click("#nc-inpaint-run")
        done.first.wait_for()
        toast = page.locator(".toast-body")
        if not toast.count():
            return
        assert "no mask" in toast.first.inner_text(), toast.first.inner_text()
        page.locator(".toast-close").first.click()
        toast.first.wait_for(state="detached")
        time.sleep(1.0)
    raise AssertionError(f"the mask editor took no stroke in {tries} tries")


def pick_training_image(page, index: int) -> None:
    page.get_by_role("tab", name="Inpaint").click()
    set_number(page, "#nc-inpaint-index", index)
    page.click("#nc-inpaint-pick")
    page.locator(f"#nc-inpaint-image img[src*='_train{index}_']").wait_for()
    time.sleep(0.5)  # the editor draws its new background (paint_and_inpaint tries again if it had not)


def _pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(data)))
    return image[..., None] if image.ndim == 2 else image


# -- the tests ----------------------------------------------------------------------------------------
def sample_table_in_page(page, n: int, seed: int, where: str) -> bytes:
    """Sample in the Tabular tab; the CSV the download button saves."""
    page.get_by_role("tab", name="Tabular").click()
    set_number(page, "#nc-tabular-n", n)
    set_number(page, "#nc-tabular-seed", seed)
    page.locator("#nc-tabular-where textarea").fill(where)
    page.click("#nc-tabular-run")
    page.wait_for_function("(text) => document.querySelector('#nc-tabular-text textarea').value.startsWith(text)",
                           arg=f"{n} rows x ")
    with page.expect_download() as download:
        page.click("#nc-tabular-download")
    return Path(download.value.path()).read_bytes()


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Path:
    """A tiny tabular model of the penguins table (tests/test_ui.py fits it the same way)."""
    pytest.importorskip("gradio")
    from tests.test_ui import fit_penguins

    return fit_penguins(tmp_path_factory.mktemp("ui_browser_table") / "penguins")


@pytest.fixture(scope="module")
def served(tmp_path_factory, penguins):
    """A tiny trained run and a tiny tabular model served by launch_ui on a free loopback port; the run's
    Python API beside it."""
    pytest.importorskip("gradio")
    pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright package")
    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    from noisecraft.runs.pipeline import load_run
    from noisecraft.serve.models import load_tabular
    from noisecraft.serve.ui import launch_ui
    from tests.test_pipeline import _train

    root = tmp_path_factory.mktemp("ui_browser")
    models = {"tiny": load_run(_train(root, "tiny"), eval_batch=16), **load_tabular([f"pen={penguins}"])}
    port = _free_port()
    blocks = launch_ui(models, port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", models["tiny"]
    finally:
        blocks.close()


@pytest.fixture(scope="module")
def browser(served):
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def requests() -> list[str]:
    return []


def test_sampling_shows_the_python_api_pixels(served, browser, requests) -> None:
    from noisecraft.runs.recipe import read_recipe, tile

    url, pipe = served
    page = open_page(browser, url, requests)
    data = sample_in_page(page, seed=5, n=4, steps=3)
    assert np.array_equal(_pixels(data), tile(pipe.sample(4, steps=3, seed=5)))  # pixel for pixel
    assert read_recipe(data).seed == 5
    with page.expect_download() as download:
        page.click("#nc-sample-download")
    png = Path(download.value.path()).read_bytes()
    assert png == data
    # the downloaded PNG, uploaded again, draws the same image and puts its settings back in the controls
    set_number(page, "#nc-sample-seed", 9)
    set_number(page, "#nc-sample-steps", 7)
    page.locator("#nc-sample-upload input[type=file]").set_input_files(
        files=[{"name": "again.png", "mimeType": "image/png", "buffer": png}])
    page.wait_for_function("() => document.querySelector('#nc-sample-seed input').value === '5'")
    assert page.locator("#nc-sample-steps input").input_value() == "3"
    assert shown_image(page, "nc-samples", "_seed5_") == data
    page.close()


def test_inpainting_keeps_the_unmasked_pixels(served, browser, requests) -> None:
    import torch

    from noisecraft.runs.recipe import tile, to_uint8, untile

    url, pipe = served
    page = open_page(browser, url, requests)
    pick_training_image(page, 2)
    set_number(page, "#nc-inpaint-n", 2)
    set_number(page, "#nc-inpaint-steps", 3)
    paint_and_inpaint(page)
    result = _pixels(shown_image(page, "nc-inpaint-result", "_inpaint_repaint_"))
    shown_mask = _pixels(shown_image(page, "nc-inpaint-mask", "_mask_"))
    unknown = np.all(shown_mask == (255, 0, 255), axis=-1)
    assert 0 < unknown.sum() < unknown.size and unknown.any(axis=1).sum() <= 3  # a stroke: a few rows
    image = to_uint8(torch.as_tensor(pipe.reference()[2:3]))[0]
    for completion in untile(result, 2, (1, 8, 8)):
        assert np.array_equal(completion[~unknown], image[~unknown])  # the known pixels' bytes, exactly
    expected = pipe.inpaint(torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1) / 127.5 - 1,
                            (~unknown).astype(float), "repaint", 2, "ddpm", 3, 0)
    assert np.array_equal(result, tile(expected))  # the page is the Python API
    page.close()


def test_a_bad_input_is_a_one_line_error_in_the_page(served, browser, requests) -> None:
    url, _ = served
    page = open_page(browser, url, requests)
    page.get_by_role("tab", name="Inpaint").click()
    page.click("#nc-inpaint-run")
    toast = page.locator(".toast-body").first
    toast.wait_for()
    assert "no image: upload one of the model's size or pick a training image" in toast.inner_text()
    assert "Traceback" not in page.content()
    page.close()


def test_the_tabular_tab_shows_the_library_rows(served, penguins, browser, requests) -> None:
    from noisecraft.tabular.model import TabularDiffusion

    url, _ = served
    page = open_page(browser, url, requests)
    csv = sample_table_in_page(page, n=30, seed=4, where="species=Gentoo")
    rows = TabularDiffusion.load(penguins).sample(30, where={"species": "Gentoo"}, seed=4)
    assert csv == rows.to_csv(index=False).encode()  # the file is the library's rows, as the CLI writes them
    shown = page.locator("#nc-tabular-table").inner_text()
    first = [str(v) for v in rows.iloc[0] if not pd.isna(v)]  # a missing value is an empty cell
    assert first and all(value in shown for value in first), (first, shown[:300])
    page.close()


def test_no_request_leaves_loopback(served, browser, requests) -> None:
    url, _ = served
    page = open_page(browser, url, requests)
    for tab in ("Inpaint", "Upscale", "Denoise", "Tabular", "DDM", "Theory"):
        page.get_by_role("tab", name=tab).click()
    page.click("#nc-theory-schedules")
    page.locator("#nc-theory-figure img[src*='schedules']").wait_for()
    page.close()
    assert len(requests) > 20, requests
    outside = sorted({u for u in requests if _leaves_loopback(u)})
    assert not outside, f"requests leaving loopback: {outside}"
    assert any("/gradio_api/file=" in u for u in requests)


def test_the_mounted_page_is_offline_too(served, browser) -> None:
    """mount_ui (the HTTP service's --ui) serves the same offline page under a path of a FastAPI app."""
    import uvicorn
    from fastapi import FastAPI

    from noisecraft.serve.ui import mount_ui

    _, pipe = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(mount_ui(FastAPI(), {"tiny": pipe}), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        log: list[str] = []
        page = open_page(browser, f"http://127.0.0.1:{port}/ui/", log)
        page.get_by_role("tab", name="Inpaint").click()
        page.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert log and not [u for u in log if _leaves_loopback(u)]


# -- the screenshots of docs/ui.md ----------------------------------------------------------------------
def screenshots(runs: list[str], out: Path) -> None:
    """docs/img/ui_sample.png and ui_inpaint.png from real runs (the first must be an image run), and
    ui_tabular.png where a tabular model is given."""
    from noisecraft.serve.models import load_page_models
    from noisecraft.serve.ui import launch_ui
    from noisecraft.tabular.model import TabularDiffusion

    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    models = load_page_models(runs)
    tabular = [name for name, model in models.items() if isinstance(model, TabularDiffusion)]
    blocks = launch_ui(models, port=port, block=False)
    try:
        with chromium() as browser:
            log: list[str] = []
            page = open_page(browser, f"http://127.0.0.1:{port}/", log, height=820)
            sample_in_page(page, seed=0, n=16)
            page.screenshot(path=str(out / "ui_sample.png"))
            pick_training_image(page, 0)
            paint_and_inpaint(page)
            time.sleep(0.5)
            page.screenshot(path=str(out / "ui_inpaint.png"))
            if tabular:
                sample_table_in_page(page, n=1000, seed=0, where="")
                page.screenshot(path=str(out / "ui_tabular.png"))
            outside = [u for u in log if _leaves_loopback(u)]
            print(f"wrote {out / 'ui_sample.png'}, {out / 'ui_inpaint.png'}; {len(log)} requests, "
                  f"{len(outside)} leaving loopback")
    finally:
        blocks.close()


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser(description=screenshots.__doc__)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    screenshots(args.runs, Path(args.out))
