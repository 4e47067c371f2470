"""The web page of noisecraft (Gradio Blocks): sample a run, draw a noisecraft PNG again from its recipe,
inpaint, upscale and denoise an image, sample a synthetic table from a tabular model (noisecraft.tabular),
look at the theory figures, and fit the drift-diffusion model to a CSV of trials. `launch_ui(models)` serves
it on loopback, `mount_ui(app, models)` under a FastAPI app (the HTTP service's --ui); `build_ui(models)`
returns the Blocks for embedding or testing.

Every callback is a method of `Page` that calls the run's Pipeline (noisecraft.runs.pipeline) and writes PNG
files the page shows as they are: the sample PNG is `png_bytes(x, recipe)` (noisecraft.runs.recipe), the 8-bit
samples tiled at their own resolution and carrying the recipe, so the pixels in the browser are the Python
API's samples quantised, and the page only scales them up with CSS (`image-rendering: pixelated`). A
ValueError from the library is shown in the page as one line (gr.Error), not a traceback.

The page works with no internet: the theme names the system's fonts (a Gradio theme may load Google fonts;
6.x's default bundles its own), telemetry is off (GRADIO_ANALYTICS_ENABLED is set to False before gradio is
imported, and the Blocks are built with analytics_enabled=False, which also skips Gradio's version check),
and there is no share link.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and when Blocks are built

import gradio as gr  # after the environment variable above
import numpy as np
import torch

from noisecraft.runs.recipe import Recipe, draw, png_bytes, read_recipe, recipe_of, tile, to_uint8
from noisecraft.tabular.model import TabularDiffusion, parse_pairs

#: system font stacks: no font is fetched from the internet
FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
FONTS_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
#: the mask editor shows the image scaled up (nearest neighbour) to about this many pixels a side
EDITOR_SIDE = 256
#: a model pixel is to be filled in when at least this fraction of its area is painted in the editor
PAINTED = 0.5
MAX_N = 64
MAX_ROWS = 10_000  # rows of a synthetic table: one batch through the tabular network (~30 s, default net, 1 thread)
SHOWN_ROWS = 100  # the table shows the first rows; the CSV holds them all
MAX_UPLOAD = 16 * 2**20  # bytes: an image of the model's size or a CSV of trials is far smaller
DDM_UPLOAD = "uploaded CSV"
MAGENTA = (255, 0, 255)  # the brush, and the pixels to fill in on the mask shown back
SCHEDULES = ("vp_linear", "vp_cosine", "discrete_vp", "sub_vp", "ve", "edm", "rectified_flow")
CSS = """
.nc-pixels img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain;
                 box-sizing: border-box; padding: 30px 4px 4px 4px; }
"""


def _message(err: Exception) -> str:
    """A library message for the page, one line: `name` (the library's argument names) spelled as the page's
    controls; a pydantic error that escaped the library's own checks named by its fields."""
    from pydantic import ValidationError

    from noisecraft.validation import describe

    text = describe(err) if isinstance(err, ValidationError) else str(err)
    names = {"label": "class"}
    text = re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: names.get(m[1], m[1].replace("_", " ")), text)
    return " ".join(text.split())


def _shown(method: Callable) -> Callable:
    """A callback whose bad input (ValueError, a missing file) shows as one line in the page (gr.Error)."""

    @wraps(method)
    def callback(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(_message(err), print_exception=False) from None

    return callback


def parse_grid(text: str | None) -> str | list[float] | None:
    """The grid control: empty for the run's own grid, a name (uniform, log_snr, karras, ...) or the times of
    an explicit grid separated by commas (as a recipe with an optimised grid fills it)."""
    text = (text or "").strip()
    if not text:
        return None
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        return text
    try:
        return [float(part) for part in text.strip("[]").split(",")]
    except ValueError:
        raise ValueError(f"grid {text!r} is neither a grid name nor a list of times separated by commas") from None


def grid_text(grid: str | list[float]) -> str:
    """The grid control's text for a recipe's grid (a name, or its times at full precision)."""
    return grid if isinstance(grid, str) else ", ".join(repr(float(t)) for t in grid)


def painted_region(editor: dict | None, size: tuple[int, int]) -> np.ndarray:
    """(H, W) booleans, True where the model pixel is to be filled in: the layers painted in the editor
    (alpha > 0.5), reduced to the model's size by area (Image.BOX); a pixel counts when at least PAINTED
    of its area is painted."""
    from PIL import Image

    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    if not layers:
        return np.zeros(size, dtype=bool)
    paint = np.zeros(layers[0].shape[:2], dtype=bool)
    for layer in layers:
        if layer.ndim != 3 or layer.shape[-1] != 4 or layer.shape[:2] != paint.shape:
            raise ValueError(f"the mask editor sent layers of shape {layer.shape}; expected (height, width, 4) "
                             "of one size")
        paint |= layer[..., 3] > 127
    coverage = Image.fromarray(paint.astype(np.float32)).resize(size[::-1], Image.BOX)
    return np.asarray(coverage) >= PAINTED


def _png(pixels: np.ndarray) -> bytes:
    """An 8-bit picture (H, W, C) as PNG bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """An 8-bit image (H, W, C) as RGB (H, W, 3)."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3].copy()


def _upscaled(pixels: np.ndarray, side: int = EDITOR_SIDE) -> np.ndarray:
    """An 8-bit image (H, W, C) as RGBA scaled up by the integer factor that brings it nearest `side`."""
    k = max(1, round(side / max(pixels.shape[:2])))
    rgb = _rgb(pixels.repeat(k, 0).repeat(k, 1))
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)


def parse_where(text: str | None) -> dict[str, str]:
    """The Tabular tab's condition: column=value pairs separated by commas, as `noisecraft tabular sample
    --where` takes them ('species=Adelie, body_mass_g=4000'); the values as text, each read by the model as its
    column's type (TabularDiffusion.parse_value). Empty: no condition."""
    text = (text or "").strip()
    return parse_pairs([text] if text else [], "condition")


class Page:
    """The page's callbacks over served models {name: Pipeline or TabularDiffusion}: each takes the controls'
    values and returns what the page shows (paths of PNG and CSV files written under `folder`, a temporary
    folder by default)."""

    def __init__(self, models: dict[str, Any], folder: str | Path | None = None) -> None:
        if not models:
            raise ValueError("no model to serve; expected one or more RUN or NAME=RUN arguments")
        self.models = {name: m for name, m in models.items() if not isinstance(m, TabularDiffusion)}
        self.tables = {name: m for name, m in models.items() if isinstance(m, TabularDiffusion)}
        if folder is None:
            folder = tempfile.mkdtemp(prefix="noisecraft-ui-")
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, np.ndarray] = {}

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def image_models(self) -> list[str]:
        return [name for name, pipe in self.models.items() if pipe.is_image]

    def pipe(self, model: str | None, what: str = "sample") -> Any:
        """The served Pipeline named `model` (an image run for anything but the theory figures)."""
        if model in self.tables:
            raise ValueError(f"model {model!r} is a tabular model; sample it in the Tabular tab")
        if model not in self.models:
            raise ValueError(f"model {model!r} is not served here; choose one of {list(self.models)}")
        pipe = self.models[model]
        if not pipe.is_image:
            raise ValueError(f"model {model!r} models vectors of shape {pipe.sample_shape}; the page can {what} "
                             "image runs only")
        return pipe

    def write(self, stem: str, data: bytes, suffix: str = ".png") -> str:
        """`data` written atomically to FOLDER/STEM_HASH.png (or `suffix`; named by content: one file per
        picture or table); its path."""
        path = self.folder / f"{stem}_{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return str(path)

    def training_pixels(self, model: str, index: int) -> np.ndarray:
        """Training image `index` of the run, 8-bit (H, W, C)."""
        pipe = self.pipe(model, "read training images of")
        if model not in self._data:
            data = pipe.reference()
            if data is None:
                raise ValueError(f"the training data of model {model!r} cannot be read here")
            self._data[model] = data
        data = self._data[model]
        index = int(index if index is not None else 0)
        if not 0 <= index < len(data):
            raise ValueError(f"training image {index} does not exist; model {model!r} has {len(data)} (0..{len(data) - 1})")
        return to_uint8(torch.as_tensor(data[index:index + 1]))[0]

    # -- sample -------------------------------------------------------------------------------------
    def recipe(self, model: str, solver: str | None, steps: int | None, grid: str | None, seed: int | None,
               n: int | None, label: int | None, prompt: str | None, guidance: float | None,
               threshold: float | None) -> Recipe:
        """The controls of the Sample tab as a Recipe: the run's own settings where a control is left empty."""
        pipe = self.pipe(model)
        cfg = pipe.config.model
        n = int(n if n is not None else 16)
        if not 1 <= n <= MAX_N:
            raise ValueError(f"`n` must be between 1 and {MAX_N}, got {n}")
        classes = cfg.num_classes is not None and not cfg.text
        label = int(label) if classes and label not in (None, "") else None
        prompt = ((prompt or "").strip() or None) if cfg.text else None
        if cfg.text and prompt is None:
            raise ValueError(f"model {model!r} is text-conditioned; write a prompt")
        guidance = float(guidance) if guidance is not None and cfg.guidable else 1.0
        threshold = float(threshold) if threshold is not None else None
        return recipe_of(pipe, model, n, solver or None, None if steps is None else int(steps), parse_grid(grid),
                         int(seed or 0), label, prompt, guidance, threshold)

    def draw(self, recipe: Recipe) -> tuple[str, str]:
        """The recipe's samples as a recipe PNG: (its path, the recipe's parameters line)."""
        pipe = self.pipe(recipe.model)
        x = draw(pipe, recipe)
        stem = f"{recipe.model}_seed{recipe.seed}"
        return self.write(stem, png_bytes(x, recipe)), recipe.text(tuple(x.shape[1:]))

    @_shown
    def sample(self, model: str, solver: str | None, steps: int | None, grid: str | None, seed: int | None,
               n: int | None, label: int | None = None, prompt: str | None = None, guidance: float | None = 1.0,
               threshold: float | None = None) -> tuple[str, str, str]:
        """Sample tab: (the recipe PNG shown, the same file to download, its parameters line)."""
        path, text = self.draw(self.recipe(model, solver, steps, grid, seed, n, label, prompt, guidance, threshold))
        return path, path, text

    @_shown
    def redraw(self, data: bytes | None) -> tuple:
        """A noisecraft PNG drawn again from its recipe: the sample outputs, then the controls filled from it
        (model, solver, steps, grid, seed, n, class, prompt, guidance, threshold)."""
        if data is None:
            raise ValueError("no PNG uploaded; drop a PNG written by noisecraft")
        recipe = read_recipe(bytes(data), "the uploaded PNG")  # the file's bytes, never a path named by a client
        if recipe.model not in self.models:
            raise ValueError(f"the PNG was drawn by model {recipe.model!r}; this page serves {list(self.models)}")
        path, text = self.draw(recipe)
        controls = self.controls(recipe.model)
        return (path, path, text, recipe.model, recipe.solver, recipe.steps, grid_text(recipe.grid), recipe.seed,
                recipe.n, {**controls[3], "value": recipe.label}, {**controls[4], "value": recipe.prompt},
                {**controls[5], "value": recipe.guidance}, recipe.threshold)

    def controls(self, model: str) -> tuple:
        """The Sample tab's controls for a model: solver, steps, grid (the run's), then class, prompt and
        guidance shown only where the run takes them."""
        pipe = self.models[model]
        cfg, sample = pipe.config.model, pipe.config.sample
        classes = cfg.num_classes is not None and not cfg.text
        choices = list(range(cfg.num_classes)) if classes else []
        return (sample.solver, sample.steps, "",
                gr.update(visible=classes, choices=choices, value=0 if classes else None),
                gr.update(visible=cfg.text, value="" if cfg.text else None),
                gr.update(visible=cfg.guidable, value=1.0))

    # -- inverse problems -------------------------------------------------------------------------
    @_shown
    def training_image(self, model: str, index: int | None) -> str:
        """Training image `index` as a PNG of the model's size (an input of the Inpaint tab)."""
        return self.write(f"{model}_train{int(index or 0)}", _png(self.training_pixels(model, index)))

    @_shown
    def editor_image(self, image: str | None, model: str) -> dict | None:
        """The mask editor's background: the input image scaled up, nothing painted."""
        if not image:
            return None
        pipe = self.pipe(model, "inpaint with")
        pixels = to_uint8(pipe.image(image))[0]
        return {"background": _upscaled(pixels), "layers": [], "composite": None}

    @_shown
    def inpaint(self, model: str, image: str | None, editor: dict | None, method: str, solver: str,
                n: int | None, steps: int | None, seed: int | None) -> tuple[str, str]:
        """Inpaint tab: the completions of the painted pixels, tiled, and the input with those pixels in
        magenta.

        The known pixels of every completion are the input's exactly, also in 8 bits: Pipeline.inpaint pastes
        them back into its final output (DPS and moment matching alone only approach them), and the input is
        an 8-bit image, so quantising gives its bytes back."""
        pipe = self.pipe(model, "inpaint with")
        if not image:
            raise ValueError("no image: upload one of the model's size or pick a training image")
        x_in = pipe.image(image)
        _, h, w = pipe.image_shape("inpainting")
        unknown = painted_region(editor, (h, w))
        if not unknown.any():
            raise ValueError("no mask: paint the pixels to fill in with the brush")
        known = ~unknown
        x = pipe.inpaint(x_in, known.astype(np.float64), method=method, n=int(n or 1), solver=solver or "ddpm",
                         steps=int(steps or 0), seed=int(seed or 0))
        shown = _rgb(to_uint8(x_in)[0])
        shown[unknown] = MAGENTA
        return self.write(f"{model}_inpaint_{method}", _png(tile(x))), self.write(f"{model}_mask", _png(shown))

    @_shown
    def low_resolution(self, model: str, index: int | None, factor: int) -> str:
        """Training image `index` average-pooled by `factor`: an input of the Upscale tab."""
        pixels = torch.as_tensor(self.training_pixels(model, index)).permute(2, 0, 1)[None].double()
        small = torch.nn.functional.avg_pool2d(pixels, int(factor)).round().to(torch.uint8)
        return self.write(f"{model}_train{int(index or 0)}_x{int(factor)}", _png(small[0].permute(1, 2, 0).numpy()))

    @_shown
    def upscale(self, model: str, image: str | None, factor: int, method: str, n: int | None, steps: int | None,
                seed: int | None, sigma: float | None) -> str:
        """Upscale tab: high-resolution images whose average pooling is the input, tiled."""
        pipe = self.pipe(model, "upscale with")
        if not image:
            raise ValueError("no image: upload a low-resolution image or make one from a training image")
        x = pipe.upscale(image, factor=int(factor), method=method, n=int(n or 1), steps=int(steps or 0),
                         seed=int(seed or 0), sigma=float(sigma or 0.0))
        return self.write(f"{model}_upscale_{method}", _png(tile(x)))

    @_shown
    def noisy_image(self, model: str, index: int | None, sigma: float | None, seed: int | None) -> str:
        """Training image `index` plus Gaussian noise of std sigma ([-1, 1] units), clipped and quantised to
        8 bits: an input of the Denoise tab."""
        pixels = self.training_pixels(model, index)
        x = torch.as_tensor(pixels, dtype=torch.float64).permute(2, 0, 1)[None] / 127.5 - 1.0
        eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(seed or 0)), dtype=torch.float64)
        noisy = to_uint8(x + float(sigma or 0.0) * eps)[0]
        return self.write(f"{model}_train{int(index or 0)}_noisy", _png(noisy))

    def denoise_method(self, model: str | None) -> str:
        """The Denoise tab's method for `model`: its Pipeline's default (the reverse SDE; DDNM on a latent run)."""
        from noisecraft.runs.pipeline import PIXEL_DEFAULTS

        pipe = self.models.get(model)
        return PIXEL_DEFAULTS["denoise"] if pipe is None or not pipe.is_image else pipe.default_method("denoise")

    @_shown
    def denoise(self, model: str, image: str | None, sigma: float | None, method: str, n: int | None,
                steps: int | None, seed: int | None) -> str:
        """Denoise tab: posterior samples of the clean image, tiled."""
        pipe = self.pipe(model, "denoise with")
        if not image:
            raise ValueError("no image: upload a noisy image of the model's size or make one from a training image")
        x = pipe.denoise(image, sigma=float(sigma or 0.0), method=method, n=int(n or 1), steps=int(steps or 0),
                         seed=int(seed or 0))
        return self.write(f"{model}_denoise_{method}", _png(tile(x)))

    # -- theory -----------------------------------------------------------------------------------
    def _figure(self, name: str, plot: Callable[[Path], Any]) -> str:
        path = self.folder / f"{name}.png"
        plot(path)
        return str(path)

    @_shown
    def schedules_figure(self) -> str:
        """alpha, sigma and log-SNR of every schedule (noisecraft.viz.figures.plot_schedules)."""
        from noisecraft.viz.figures import plot_schedules

        return self._figure("schedules", plot_schedules)

    @_shown
    def forward_figure(self, source: str, schedule: str) -> str:
        """Data turning into noise (plot_forward): a served run's data and schedule, or built-in data under
        `schedule`."""
        from noisecraft.core.schedules import schedule_from_config
        from noisecraft.data import DataConfig, check_builtin
        from noisecraft.viz.figures import plot_forward

        if source in self.models:
            pipe = self.models[source]
            x0, sched = pipe.config.data.load().x, pipe.schedule
        else:
            x0 = DataConfig(name=check_builtin(source), n=3000).load().x
            sched = schedule_from_config({"name": schedule})
        name = f"forward_{source}_{schedule}"
        return self._figure(name, lambda path: plot_forward(path, torch.as_tensor(x0), sched))

    @_shown
    def trajectories_figure(self, schedule: str, paths: int | None, steps: int | None, seed: int | None) -> str:
        """Reverse-SDE and PF-ODE paths over p_t on eight Gaussians, with their exact denoiser
        (plot_trajectories on the oracle)."""
        from noisecraft.analysis.oracle import ring8
        from noisecraft.core.schedules import schedule_from_config
        from noisecraft.viz.figures import plot_trajectories

        sched, oracle = schedule_from_config({"name": schedule}), ring8()
        paths, steps, seed = int(paths or 0), int(steps or 0), int(seed or 0)
        if not 1 <= paths <= 200:
            raise ValueError(f"paths must be between 1 and 200, got {paths}")
        if not 2 <= steps <= 500:
            raise ValueError(f"steps must be between 2 and 500, got {steps}")
        return self._figure(f"trajectories_{schedule}_{paths}_{steps}_{seed}",
                            lambda path: plot_trajectories(path, oracle.denoiser(sched), sched, oracle=oracle,
                                                           n_paths=paths, steps=steps, seed=seed))

    # -- synthetic tables -------------------------------------------------------------------------
    def table(self, model: str | None) -> TabularDiffusion:
        """The served tabular model named `model`."""
        if model not in self.tables:
            raise ValueError(f"tabular model {model!r} is not served here; choose one of {list(self.tables)}")
        return self.tables[model]

    @_shown
    def table_controls(self, model: str) -> tuple[dict, int]:
        """The Tabular tab's controls for a model: balance (empty, or one of its categorical columns) and its
        own number of steps."""
        table = self.table(model)
        columns = [c.name for c in table.schema.of_kind("categorical")]
        return gr.update(choices=["", *columns], value=""), table.config.sample_steps

    @_shown
    def sample_table(self, model: str, n: int | None, seed: int | None, where: str | None,
                     balance: str | None = None, steps: int | None = None) -> tuple[Any, str, str]:
        """Tabular tab: TabularDiffusion.sample with the condition read as `noisecraft tabular sample --where`
        reads it; (the first SHOWN_ROWS rows, the CSV of all rows to download, a line saying what was drawn)."""
        table = self.table(model)
        n, seed = int(n if n is not None else 0), int(seed or 0)
        if not 1 <= n <= MAX_ROWS:
            raise ValueError(f"`n` must be between 1 and {MAX_ROWS}, got {n}")
        fixed = {column: table.parse_value(column, value) for column, value in parse_where(where).items()}
        steps = table.config.sample_steps if steps is None else int(steps)
        frame = table.sample(n, where=fixed, balance=balance or None, seed=seed, steps=steps)
        path = self.write(f"{model}_seed{seed}_n{n}", frame.to_csv(index=False).encode(), ".csv")
        text = (f"{n} rows x {frame.shape[1]} columns of {model}, seed {seed}, {steps} steps"
                + "".join(f", {c}={v}" for c, v in fixed.items()) + (f", balanced on {balance}" if balance else "")
                + (f"; the first {SHOWN_ROWS} are shown" if n > SHOWN_ROWS else ""))
        return frame.head(SHOWN_ROWS), path, text

    # -- drift-diffusion model --------------------------------------------------------------------
    @_shown
    def fit_ddm(self, source: str, csv: str | None, rt: str, response: str, condition: str | None, spec: str | None,
                method: str) -> tuple[Any, str]:
        """DDM tab: the drift-diffusion model (noisecraft.ddm.fit) fitted to an uploaded CSV of trials or a
        shipped data set; (the parameter table, the fit's summary). The spec is text only (never a file)."""
        from noisecraft.ddm.data import read_trials
        from noisecraft.ddm.fit import fit
        from noisecraft.ddm.spec import ModelSpec

        if source == DDM_UPLOAD and not csv:
            raise ValueError("no CSV uploaded; expected a CSV with one row a trial (columns rt and response)")
        data = read_trials(csv if source == DDM_UPLOAD else source)
        res = fit(data, rt=(rt or "rt").strip(), response=(response or "response").strip(),
                  condition=(condition or "").strip() or None,
                  spec=ModelSpec.parse(spec) if (spec or "").strip() else None, method=method)
        return res.table().round(4), res.summary()


def _number(label: str, value: float | None, **options: Any) -> Any:
    return gr.Number(label=label, value=value, precision=0, **options)


def _sample_tab(page: Page, models: list[str]) -> None:
    from noisecraft.solvers import SOLVERS

    first = page.controls(models[0])
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(models, value=models[0], label="model", elem_id="nc-sample-model")
            with gr.Row():
                solver = gr.Dropdown(list(SOLVERS), value=first[0], label="solver")
                steps = _number("steps", first[1], minimum=1, maximum=1000, elem_id="nc-sample-steps")
            with gr.Row():
                seed = _number("seed", 0, elem_id="nc-sample-seed")
                n = gr.Slider(1, MAX_N, value=16, step=1, label="n (images)", elem_id="nc-sample-n")
            label = gr.Dropdown(label="class", **_update_kwargs(first[3]), elem_id="nc-sample-class")
            prompt = gr.Textbox(label="prompt", **_update_kwargs(first[4]), elem_id="nc-sample-prompt")
            guidance = gr.Slider(0.0, 10.0, step=0.1, label="guidance scale w (1: the plain conditional model)",
                                 **_update_kwargs(first[5]), elem_id="nc-sample-guidance")
            with gr.Accordion("more", open=False):
                grid = gr.Textbox(label="grid: empty for the run's, a name (uniform, log_snr, karras) or times "
                                        "separated by commas", value="", elem_id="nc-sample-grid")
                threshold = gr.Number(label="dynamic threshold quantile, e.g. 0.995 (empty: the run's clip)",
                                      value=None, elem_id="nc-sample-threshold")
            go = gr.Button("Sample", variant="primary", elem_id="nc-sample-run")
            upload = gr.File(label="Draw a noisecraft PNG again (its recipe fills the controls)",
                             file_types=[".png"], type="binary", elem_id="nc-sample-upload")
        with gr.Column(scale=1):
            shown = gr.Image(label="samples (8-bit, scaled up in the browser)", type="filepath", format="png",
                             interactive=False, elem_id="nc-samples", elem_classes="nc-pixels", height=420)
            download = gr.DownloadButton("Download the PNG (it carries its recipe)", elem_id="nc-sample-download")
            text = gr.Textbox(label="parameters", interactive=False, elem_id="nc-sample-text")
    inputs = [model, solver, steps, grid, seed, n, label, prompt, guidance, threshold]
    go.click(page.sample, inputs, [shown, download, text])
    model.input(page.controls, model, [solver, steps, grid, label, prompt, guidance])
    upload.upload(page.redraw, upload, [shown, download, text, *inputs])


def _update_kwargs(update: dict) -> dict:
    return {k: v for k, v in update.items() if k != "__type__"}


def _image_input(label: str, elem_id: str) -> Any:
    return gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                    format="png", elem_id=elem_id, elem_classes="nc-pixels", height=200)


def _inpaint_tab(page: Page, models: list[str]) -> None:
    from noisecraft.runs.pipeline import INPAINT_METHODS
    from noisecraft.solvers import SOLVERS

    h = page.models[models[0]].output_shape[-2]
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(models, value=models[0], label="model", elem_id="nc-inpaint-model")
            image = _image_input("image (the model's size)", "nc-inpaint-image")
            with gr.Row():
                index = _number("training image", 0, minimum=0, elem_id="nc-inpaint-index")
                pick = gr.Button("Use this training image", elem_id="nc-inpaint-pick")
            with gr.Row():
                method = gr.Dropdown(list(INPAINT_METHODS), value="repaint", label="method")
                solver = gr.Dropdown(list(SOLVERS), value="ddpm", label="solver (replacement only)",
                                     elem_id="nc-inpaint-solver")
            with gr.Row():
                n = gr.Slider(1, 16, value=4, step=1, label="n", elem_id="nc-inpaint-n")
                steps = _number("steps", 50, minimum=1, elem_id="nc-inpaint-steps")
                seed = _number("seed", 0, elem_id="nc-inpaint-seed")
        with gr.Column(scale=1):
            editor = gr.ImageEditor(label="mask: paint the pixels to fill in", type="numpy", image_mode="RGBA",
                                    sources=(), transforms=(), layers=False, format="png", canvas_size=(256, 256),
                                    brush=gr.Brush(colors=["#{:02x}{:02x}{:02x}".format(*MAGENTA)], color_mode="fixed",
                                                   default_size=max(2, EDITOR_SIDE // h // 2)),  # a radius: one pixel wide
                                    elem_id="nc-inpaint-editor")
            go = gr.Button("Inpaint", variant="primary", elem_id="nc-inpaint-run")
        with gr.Column(scale=1):
            result = gr.Image(label="completions (known pixels are the input's)", type="filepath", format="png",
                              interactive=False, elem_id="nc-inpaint-result", elem_classes="nc-pixels", height=300)
            mask = gr.Image(label="the input, pixels filled in (magenta)", type="filepath", format="png", interactive=False,
                            elem_id="nc-inpaint-mask", elem_classes="nc-pixels", height=120)
    pick.click(page.training_image, [model, index], image)
    image.change(page.editor_image, [image, model], editor)
    go.click(page.inpaint, [model, image, editor, method, solver, n, steps, seed], [result, mask])


def _upscale_tab(page: Page, models: list[str]) -> None:
    from noisecraft.runs.pipeline import UPSCALE_METHODS

    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="model")
            factor = gr.Radio([2, 4], value=2, label="factor (average pooling)")
            image = _image_input("low-resolution image (the model's size / factor)", "nc-upscale-image")
            with gr.Row():
                index = _number("training image", 0, minimum=0)
                pick = gr.Button("Pool this training image")
            with gr.Row():
                method = gr.Dropdown(list(UPSCALE_METHODS), value="ddnm", label="method")
                sigma = gr.Number(label="noise std of the low-resolution image", value=0.0, minimum=0.0)
            with gr.Row():
                n = gr.Slider(1, 16, value=4, step=1, label="n")
                steps = _number("steps", 50, minimum=1)
                seed = _number("seed", 0)
            go = gr.Button("Upscale", variant="primary", elem_id="nc-upscale-run")
        with gr.Column():
            result = gr.Image(label="high-resolution samples", type="filepath", format="png", interactive=False,
                              elem_classes="nc-pixels", height=400)
    pick.click(page.low_resolution, [model, index, factor], image)
    go.click(page.upscale, [model, image, factor, method, n, steps, seed, sigma], result)


def _denoise_tab(page: Page, models: list[str]) -> None:
    from noisecraft.runs.pipeline import DENOISE_METHODS

    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(models, value=models[0], label="model")
            image = _image_input("noisy image (the model's size)", "nc-denoise-image")
            sigma = gr.Number(label="noise std sigma in [-1, 1] units", value=0.3, minimum=0.0)
            with gr.Row():
                index = _number("training image", 0, minimum=0)
                noise_seed = _number("noise seed", 0)
                pick = gr.Button("Add noise to this training image (clipped to 8 bits)")
            with gr.Row():
                method = gr.Dropdown(list(DENOISE_METHODS), value=page.denoise_method(models[0]), label="method")
                n = gr.Slider(1, 16, value=4, step=1, label="n")
                steps = _number("steps", 50, minimum=1)
                seed = _number("seed", 0)
            go = gr.Button("Denoise", variant="primary", elem_id="nc-denoise-run")
        with gr.Column():
            result = gr.Image(label="posterior samples", type="filepath", format="png", interactive=False,
                              elem_classes="nc-pixels", height=400)
    model.change(page.denoise_method, model, method)
    pick.click(page.noisy_image, [model, index, sigma, noise_seed], image)
    go.click(page.denoise, [model, image, sigma, method, n, steps, seed], result)


def _theory_tab(page: Page) -> None:
    from noisecraft.data import BUILTIN

    gr.Markdown("x_t = alpha(t) x_0 + sigma(t) eps: the pictures `noisecraft plot ...` draws.")
    with gr.Row():
        schedules = gr.Button("Schedules: alpha, sigma and log-SNR", elem_id="nc-theory-schedules")
    with gr.Row():
        source = gr.Dropdown([*page.models, *BUILTIN], value=next(iter(page.models), BUILTIN[0]),
                             label="forward process of")
        schedule = gr.Dropdown(list(SCHEDULES), value="vp_cosine", label="schedule (built-in data; a run its own)")
        forward = gr.Button("Forward process")
    with gr.Row():
        paths = _number("paths", 24, minimum=1, maximum=200)
        steps = _number("steps", 60, minimum=2, maximum=500)
        seed = _number("seed", 0)
        trajectories = gr.Button("Trajectories on eight Gaussians (exact denoiser)")
    figure = gr.Image(label="figure", type="filepath", format="png", interactive=False, elem_id="nc-theory-figure")
    schedules.click(page.schedules_figure, None, figure)
    forward.click(page.forward_figure, [source, schedule], figure)
    trajectories.click(page.trajectories_figure, [schedule, paths, steps, seed], figure)


def _ddm_tab(page: Page) -> None:
    gr.Markdown("The drift-diffusion model of two-choice decisions (docs/ddm.md): one row a trial, the response "
                "time in seconds and the response (1 = upper boundary, 0 = lower).")
    with gr.Row():
        with gr.Column():
            source = gr.Radio([DDM_UPLOAD, "roitman", "cavanagh"], value=DDM_UPLOAD, label="trials")
            csv = gr.File(label="CSV of trials", file_types=[".csv"], type="filepath", elem_id="nc-ddm-csv")
            with gr.Row():
                rt = gr.Textbox(value="rt", label="rt column")
                response = gr.Textbox(value="response", label="response column")
                condition = gr.Textbox(value="", label="condition column (optional)")
            spec = gr.Textbox(value="", label="spec, e.g. v=linear, a=shared, t0=shared, z=0.5 (empty: the defaults)")
            method = gr.Radio(["ml", "chisq", "ez"], value="ml", label="method")
            go = gr.Button("Fit", variant="primary", elem_id="nc-ddm-run")
        with gr.Column():
            table = gr.Dataframe(label="parameters", interactive=False, elem_id="nc-ddm-table")
            summary = gr.Textbox(label="fit", lines=8, interactive=False, elem_id="nc-ddm-summary")
    go.click(page.fit_ddm, [source, csv, rt, response, condition, spec, method], [table, summary])


def _tabular_tab(page: Page) -> None:
    tables = list(page.tables)
    balance_choices, default_steps = page.table_controls(tables[0])
    gr.Markdown("A synthetic table from a tabular model (noisecraft tabular fit; docs/tabular.md): its columns "
                "and types, row i depending only on the seed and i.")
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(tables, value=tables[0], label="model", elem_id="nc-tabular-model")
            with gr.Row():
                n = _number(f"n (rows, 1 to {MAX_ROWS})", 1000, elem_id="nc-tabular-n")
                seed = _number("seed", 0, elem_id="nc-tabular-seed")
            where = gr.Textbox(value="", label="condition: column=value pairs separated by commas, as "
                                                "--where (empty: none)", elem_id="nc-tabular-where")
            balance = gr.Dropdown(label="balance the classes of (empty: no)", elem_id="nc-tabular-balance",
                                  **_update_kwargs(balance_choices))
            steps = _number("steps (the model's own to start with)", default_steps, minimum=1,
                            elem_id="nc-tabular-steps")
            go = gr.Button("Sample", variant="primary", elem_id="nc-tabular-run")
        with gr.Column(scale=2):
            rows = gr.Dataframe(label=f"rows (the first {SHOWN_ROWS})", interactive=False, elem_id="nc-tabular-table")
            download = gr.DownloadButton("Download the CSV (all rows)", elem_id="nc-tabular-download")
            text = gr.Textbox(label="drawn", interactive=False, elem_id="nc-tabular-text")
    go.click(page.sample_table, [model, n, seed, where, balance, steps], [rows, download, text])
    model.input(page.table_controls, model, [balance, steps])


def build_ui(models: dict[str, Any], folder: str | Path | None = None) -> Any:
    """The page (gradio.Blocks) over served models {name: Pipeline or TabularDiffusion}: Sample, Inpaint,
    Upscale, Denoise, Tabular (where a tabular model is served; opened first where no image run is), Theory
    and DDM tabs; the image tabs list the image runs. Launch it with `launch_ui` (system fonts, loopback)."""
    page = Page(models, folder)
    images = page.image_models
    with gr.Blocks(analytics_enabled=False, title="noisecraft") as blocks:
        gr.Markdown("## noisecraft\nSamples are shown at their own resolution, scaled up by the browser.")
        with gr.Tabs(selected="tabular" if page.tables and not images else None):
            with gr.Tab("Sample"):
                if images:
                    _sample_tab(page, images)
                else:
                    gr.Markdown("No image run is served: the page draws image runs.")
            for name, tab in (("Inpaint", _inpaint_tab), ("Upscale", _upscale_tab), ("Denoise", _denoise_tab)):
                with gr.Tab(name):
                    if images:
                        tab(page, images)
                    else:
                        gr.Markdown("No image run is served.")
            if page.tables:
                with gr.Tab("Tabular", id="tabular"):
                    _tabular_tab(page)
            with gr.Tab("Theory"):
                _theory_tab(page)
            with gr.Tab("DDM"):
                _ddm_tab(page)
    blocks.noisecraft_page = page  # the callbacks, for tests and embedding
    return blocks


def theme() -> Any:
    """Gradio's default theme on the system's fonts: nothing to download, whatever Gradio bundles."""
    return gr.themes.Default(font=FONTS, font_mono=FONTS_MONO)


def page_options() -> dict[str, Any]:
    """What `launch` and `mount_gradio_app` take to serve the page offline: the system-font theme, its CSS,
    a footer without the link to gradio.app, and the largest upload."""
    return {"theme": theme(), "css": CSS, "footer_links": ["api", "settings"], "max_file_size": MAX_UPLOAD}


def launch_ui(models: dict[str, Any], host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve the page on http://HOST:PORT with nothing fetched from the internet: system fonts, no telemetry,
    no share link. With block=False it returns the running Blocks (stop it with .close())."""
    blocks = build_ui(models)
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(server_name=host, server_port=int(port), share=False, inbrowser=False, prevent_thread_lock=not block,
                  quiet=True, show_error=False, **page_options())
    return blocks


def mount_ui(app: Any, models: dict[str, Any], path: str = "/ui") -> Any:
    """The FastAPI `app` with the page mounted at `path` (the HTTP service's --ui), served offline as
    launch_ui serves it."""
    return gr.mount_gradio_app(app, build_ui(models), path=path, show_error=False, **page_options())


__all__ = ["CSS", "FONTS", "FONTS_MONO", "Page", "build_ui", "grid_text", "launch_ui", "mount_ui", "page_options",
           "painted_region", "parse_grid", "parse_where", "theme"]
