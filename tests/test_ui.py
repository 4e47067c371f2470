"""The web page's callbacks (noisecraft.serve.ui.Page), without a browser: the PNG a tab shows is the Python
API's output quantised, pixel for pixel; a recipe PNG draws the same image again and fills the controls;
inpainting keeps the unmasked pixels' bytes; the Tabular tab shows the tabular model's rows and the CSV
`noisecraft tabular sample` writes; bad input is one line in a gr.Error."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("gradio")

import gradio as gr

from noisecraft.runs.pipeline import INPAINT_METHODS, load_run
from noisecraft.runs.recipe import read_recipe, tile, to_uint8, untile
from noisecraft.serve import ui
from tests.test_pipeline import _train

SIDE = 256  # the editor's canvas for 8x8 images: 32 canvas pixels a model pixel


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    _train(root, "plain")
    _train(root, "cond", num_classes=10, label_dropout=0.2)
    Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(root / "x.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "big.png")
    return root


def fit_penguins(folder: Path) -> Path:
    """A tiny tabular model of the penguins table in `folder`, fitted as a user fits it (a second or two)."""
    from noisecraft.cli import app
    from noisecraft.tabular.data import example_path

    res = CliRunner().invoke(app, ["tabular", "fit", str(example_path("penguins")), "--target", "species", "--steps",
                                   "40", "--width", "32", "--depth", "1", "--out", str(folder)])
    assert res.exit_code == 0, res.output
    return folder


@pytest.fixture(scope="module")
def table_dir(root: Path) -> Path:
    return fit_penguins(root / "penguins")


@pytest.fixture(scope="module")
def tables(table_dir: Path, tmp_path_factory) -> ui.Page:
    from noisecraft.serve.models import load_tabular

    return ui.Page(load_tabular([f"pen={table_dir}"]), tmp_path_factory.mktemp("tables"))


@pytest.fixture(scope="module")
def page(root: Path, tmp_path_factory) -> ui.Page:
    models = {name: load_run(root / name, eval_batch=16) for name in ("plain", "cond")}
    return ui.Page(models, tmp_path_factory.mktemp("page"))


def _pixels(path: str | Path, n: int) -> np.ndarray:
    """The n 8-bit images (n, 8, 8, C) of a tiled PNG the page wrote."""
    sheet = np.asarray(Image.open(path))
    return untile(sheet[..., None] if sheet.ndim == 2 else sheet, n, (sheet.shape[-1] if sheet.ndim == 3 else 1, 8, 8))


def _editor(rows: slice, cols: slice = slice(None)) -> dict:
    """An editor value with canvas pixels [rows, cols] painted (alpha 255) on a 256x256 layer."""
    layer = np.zeros((SIDE, SIDE, 4), np.uint8)
    layer[rows, cols] = (255, 0, 255, 255)
    return {"background": None, "layers": [layer], "composite": None}


def _error(fn, *args) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args)
    message = info.value.message
    assert "\n" not in message and "Traceback" not in message
    return message


# -- sample -------------------------------------------------------------------------------------------
def test_the_sample_png_is_the_python_api_quantised(page: ui.Page) -> None:
    shown, download, text = page.sample("plain", None, 4, "", 3, 5)
    assert shown == download and Path(shown).suffix == ".png"
    pipe = page.models["plain"]
    x = pipe.sample(5, steps=4, seed=3)
    assert np.array_equal(_pixels(shown, 5), to_uint8(x))  # pixel for pixel
    assert np.array_equal(np.asarray(Image.open(shown)), tile(x)[..., 0])
    recipe = read_recipe(shown)
    assert (recipe.model, recipe.n, recipe.steps, recipe.seed, recipe.solver) == ("plain", 5, 4, 3,
                                                                                pipe.config.sample.solver)
    assert "Seed: 3" in text and "Steps: 4" in text
    other = page.sample("plain", None, 4, "", 4, 5)[0]
    assert not np.array_equal(_pixels(other, 5), _pixels(shown, 5))  # the seed reaches the sampler


def test_class_and_guidance_reach_the_sampler(page: ui.Page) -> None:
    shown = page.sample("cond", "ddim", 3, "", 2, 4, 7, None, 2.5)[0]
    pipe = page.models["cond"]
    assert np.array_equal(_pixels(shown, 4), to_uint8(pipe.sample(4, "ddim", 3, seed=2, label=7, guidance=2.5)))
    assert read_recipe(shown).label == 7 and read_recipe(shown).guidance == 2.5
    assert not np.array_equal(_pixels(page.sample("cond", "ddim", 3, "", 2, 4, 1, None, 2.5)[0], 4),
                              _pixels(shown, 4))


def test_the_controls_follow_the_model(page: ui.Page) -> None:
    solver, steps, grid, label, prompt, guidance = page.controls("cond")
    cfg = page.models["cond"].config
    assert (solver, steps, grid) == (cfg.sample.solver, cfg.sample.steps, "")
    assert label["visible"] and label["choices"] == list(range(10)) and guidance["visible"]
    assert not prompt["visible"]
    _, _, _, label, _, guidance = page.controls("plain")
    assert not label["visible"] and not guidance["visible"]


# -- recipe round trip --------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["", "karras", "0.95, 0.6, 0.3, 0.05"])
def test_a_recipe_png_draws_the_same_image_and_fills_the_controls(page: ui.Page, grid: str) -> None:
    first, _, text = page.sample("cond", "heun", 3, grid, 11, 3, 4, None, 1.5)
    out = page.redraw(Path(first).read_bytes())
    shown, _, text_again, model, solver, steps, grid_again, seed, n, label, prompt, guidance, threshold = out
    assert Path(shown).read_bytes() == Path(first).read_bytes() and text_again == text
    assert (model, solver, steps, seed, n, threshold) == ("cond", "heun", 3, 11, 3, None)
    assert label["value"] == 4 and label["visible"] and guidance["value"] == 1.5 and prompt["value"] is None
    if grid:
        assert ui.parse_grid(grid_again) == ui.parse_grid(grid)
    # the filled controls, sampled again, give the same pixels
    again = page.sample(model, solver, steps, grid_again, seed, n, label["value"], None, guidance["value"], threshold)
    assert np.array_equal(_pixels(again[0], 3), _pixels(first, 3))


def test_grid_text_round_trips_exactly() -> None:
    times = [0.9999999999999, 0.123456789012345678, 1e-3]
    assert ui.parse_grid(ui.grid_text(times)) == times
    assert ui.parse_grid(" ") is None and ui.parse_grid("log_snr") == "log_snr"


# -- inpaint ------------------------------------------------------------------------------------------
def test_the_painted_region_is_read_by_area() -> None:
    assert not ui.painted_region(None, (8, 8)).any()
    assert not ui.painted_region({"layers": []}, (8, 8)).any()
    # model pixel (1, 2) is canvas [32:64, 64:96]: 40% painted is known, 60% is filled in
    low = ui.painted_region(_editor(slice(32, 45), slice(64, 96)), (8, 8))
    high = ui.painted_region(_editor(slice(32, 52), slice(64, 96)), (8, 8))
    assert not low.any()
    assert high[1, 2] and high.sum() == 1
    # several layers are painted together; a faint (antialiased) edge does not count
    a, b = _editor(slice(0, 32), slice(0, 32)), _editor(slice(224, 256), slice(224, 256))
    faint = np.zeros((SIDE, SIDE, 4), np.uint8)
    faint[100:140, 100:140, 3] = 60
    region = ui.painted_region({"layers": [a["layers"][0], b["layers"][0], faint]}, (8, 8))
    assert region[0, 0] and region[7, 7] and region.sum() == 2


@pytest.mark.parametrize("method", INPAINT_METHODS)
def test_inpainting_keeps_the_unmasked_pixels_exactly(page: ui.Page, root: Path, method: str) -> None:
    editor = _editor(slice(64, 160))  # canvas rows 64..160: model rows 2, 3, 4
    result, shown_mask = page.inpaint("plain", str(root / "x.png"), editor, method, "ddim", 3, 4, 5)
    image = np.asarray(Image.open(root / "x.png"))
    out = _pixels(result, 3)[..., 0]
    unknown = np.zeros((8, 8), bool)
    unknown[2:5] = True
    assert np.array_equal(out[:, ~unknown], np.broadcast_to(image[~unknown], (3, (~unknown).sum())))
    assert (out[:, unknown] != image[unknown]).any()  # the painted pixels were drawn anew
    pipe = page.models["plain"]
    x = pipe.inpaint(str(root / "x.png"), (~unknown).astype(float), method, 3, "ddim", 4, 5)
    assert np.array_equal(out, to_uint8(x)[..., 0])  # the page is the Python API
    mask = np.asarray(Image.open(shown_mask))
    assert np.array_equal(np.all(mask == ui.MAGENTA, axis=-1), unknown)
    assert np.array_equal(mask[~unknown][:, 0], image[~unknown])


def test_a_training_image_is_an_8_bit_input(page: ui.Page) -> None:
    path = page.training_image("plain", 3)
    data = page.models["plain"].reference()
    assert np.array_equal(np.asarray(Image.open(path)), to_uint8(torch.as_tensor(data[3:4]))[0, ..., 0])
    background = page.editor_image(path, "plain")["background"]
    assert background.shape == (SIDE, SIDE, 4) and (background[::32, ::32, 0] == np.asarray(Image.open(path))).all()


# -- upscale, denoise ---------------------------------------------------------------------------------
def test_upscale_and_denoise_show_the_python_api(page: ui.Page) -> None:
    pipe = page.models["plain"]
    small = page.low_resolution("plain", 0, 2)
    assert Image.open(small).size == (4, 4)
    shown = page.upscale("plain", small, 2, "ddnm", 2, 3, 1, 0.0)
    assert np.array_equal(_pixels(shown, 2), to_uint8(pipe.upscale(small, 2, "ddnm", 2, 3, 1)))
    noisy = page.noisy_image("plain", 0, 0.2, 0)
    shown = page.denoise("plain", noisy, 0.2, "posterior", 2, 3, 1)
    assert np.array_equal(_pixels(shown, 2), to_uint8(pipe.denoise(noisy, 0.2, "posterior", 2, 3, 1)))


# -- theory -------------------------------------------------------------------------------------------
def test_the_theory_tab_lists_every_schedule() -> None:
    from noisecraft.core.schedules import schedule_from_config
    from noisecraft.runs.config import RunConfig

    for name in ui.SCHEDULES:
        schedule_from_config({"name": name})
    models = RunConfig.model_json_schema()["$defs"].values()  # the schedules a run config accepts
    named = {d["properties"]["name"].get("const") for d in models if "name" in d.get("properties", {})} - {None}
    assert named == set(ui.SCHEDULES)


def test_the_theory_figures_are_pngs(page: ui.Page) -> None:
    for path in (page.schedules_figure(), page.forward_figure("moons", "ve"), page.forward_figure("plain", "ve"),
                 page.trajectories_figure("vp_linear", 3, 4, 0)):
        assert Image.open(path).format == "PNG"


# -- drift-diffusion model ----------------------------------------------------------------------------
def test_the_ddm_tab_fits_an_uploaded_csv_as_the_library_does(page: ui.Page, tmp_path: Path) -> None:
    from noisecraft.ddm import fit, simulate

    trials = simulate(400, v=1.2, a=1.1, z=0.5, t0=0.3, seed=3)
    trials.to_csv(tmp_path / "trials.csv", index=False)
    table, summary = page.fit_ddm(ui.DDM_UPLOAD, str(tmp_path / "trials.csv"), "rt", "response", "", "", "ml")
    expected = fit(trials, method="ml").table().round(4)
    assert table.equals(expected) and "NLL=" in summary
    assert abs(table.set_index("parameter").loc["v[0]", "estimate"] - 1.2) < 0.3  # the drift is recovered
    assert "no CSV uploaded" in _error(page.fit_ddm, ui.DDM_UPLOAD, None, "rt", "response", "", "", "ml")
    assert "spec file" not in _error(page.fit_ddm, ui.DDM_UPLOAD, str(tmp_path / "trials.csv"), "rt", "response",
                                     "", "/etc/passwd.json", "ml")  # a spec is text, never a file read


# -- synthetic tables ---------------------------------------------------------------------------------
def _cli_table(table_dir: Path, out: Path, *args: str) -> bytes:
    from noisecraft.cli import app

    res = CliRunner().invoke(app, ["tabular", "sample", str(table_dir), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return out.read_bytes()


def test_the_tabular_tab_shows_the_library_rows_and_the_cli_csv(tables: ui.Page, table_dir: Path,
                                                                  tmp_path: Path) -> None:
    from noisecraft.tabular.model import TabularDiffusion

    shown, csv, text = tables.sample_table("pen", 150, 3, " species=Adelie , body_mass_g=4000", "", None)
    model = TabularDiffusion.load(table_dir)  # loaded afresh: the page holds no other state
    rows = model.sample(150, where={"species": "Adelie", "body_mass_g": 4000}, seed=3)
    assert len(shown) == ui.SHOWN_ROWS and shown.equals(rows.head(ui.SHOWN_ROWS))
    assert Path(csv).parent == tables.folder and Path(csv).suffix == ".csv"
    assert Path(csv).read_bytes() == _cli_table(table_dir, tmp_path / "cli.csv", "--n", "150", "--seed", "3",
                                                "--where", "species=Adelie,body_mass_g=4000")
    assert (rows["species"] == "Adelie").all() and (rows["body_mass_g"] == 4000).all()
    assert text.startswith("150 rows x 7 columns of pen, seed 3, 30 steps, species=Adelie, body_mass_g=4000")
    # the seed, the steps and balance reach the sampler
    other = tables.sample_table("pen", 150, 4, "species=Adelie, body_mass_g=4000", "", None)[0]
    assert not other.equals(shown)
    few = tables.sample_table("pen", 12, 0, "", "island", 5)
    assert few[0].equals(model.sample(12, balance="island", steps=5, seed=0)) and "first" not in few[2]
    assert Path(few[1]).read_bytes() == _cli_table(table_dir, tmp_path / "b.csv", "--n", "12", "--balance", "island",
                                                   "--steps", "5")
    assert list(few[0]["island"][:3]) == model.schema.column("island").categories


def test_the_balance_control_lists_the_categorical_columns(tables: ui.Page) -> None:
    update, steps = tables.table_controls("pen")
    assert update["choices"] == ["", "species", "island", "sex"] and update["value"] == ""
    assert steps == tables.tables["pen"].config.sample_steps == 30


def test_parse_where_reads_the_cli_syntax() -> None:
    assert ui.parse_where(None) == {} and ui.parse_where("  ") == {}
    assert ui.parse_where("a=1, b = x=y ,c=") == {"a": "1", "b": "x=y", "c": ""}


def test_bad_tabular_input_is_one_line(tables: ui.Page) -> None:
    sample = tables.sample_table
    assert "n must be between 1 and 10000, got 0" in _error(sample, "pen", 0, 0, "", "", None)
    assert "n must be between 1 and 10000, got 10001" in _error(sample, "pen", ui.MAX_ROWS + 1, 0, "", "", None)
    assert "condition expects column=value pairs separated by commas, got 'species'" in _error(
        sample, "pen", 5, 0, "species", "", None)
    assert "condition expects column=value" in _error(sample, "pen", 5, 0, "species=Adelie,", "", None)
    assert "column 'species' has no category 'Martian'" in _error(sample, "pen", 5, 0, "species=Martian", "", None)
    assert "cannot fix column 'nope': not in the table" in _error(sample, "pen", 5, 0, "nope=1", "", None)
    assert "expected a number, got 'heavy'" in _error(sample, "pen", 5, 0, "body_mass_g=heavy", "", None)
    assert "outside the observed range" in _error(sample, "pen", 5, 0, "body_mass_g=99999", "", None)
    assert "balance needs a categorical column, got 'bill_length_mm'" in _error(sample, "pen", 5, 0, "",
                                                                                 "bill_length_mm", None)
    assert "steps must be >= 1, got 0" in _error(sample, "pen", 5, 0, "", "", 0)
    assert "tabular model 'ghost' is not served here; choose one of ['pen']" in _error(sample, "ghost", 5, 0, "", "",
                                                                                       None)
    assert "'pen' is a tabular model; sample it in the Tabular tab" in _error(tables.sample, "pen", None, 3, "", 0, 4)


def test_the_ui_command_loads_runs_and_tabular_models_apart(root: Path, table_dir: Path, monkeypatch) -> None:
    from noisecraft.cli.ui import app
    from noisecraft.runs.pipeline import Pipeline
    from noisecraft.serve import models
    from noisecraft.tabular.model import TabularDiffusion

    assert models.is_tabular(str(table_dir)) and not models.is_tabular(str(root / "plain"))
    assert not models.is_tabular(f"hf:{table_dir}")
    specs = [f"pen={table_dir}", str(root / "plain")]
    assert models.split_models(specs) == ([str(root / "plain")], [f"pen={table_dir}"])
    shown = {}
    monkeypatch.setattr(ui, "launch_ui", lambda served, **options: shown.update(served))
    res = CliRunner().invoke(app, specs)
    assert res.exit_code == 0, res.output
    assert list(shown) == ["pen", "plain"]  # in the order given
    assert isinstance(shown["pen"], TabularDiffusion) and isinstance(shown["plain"], Pipeline)
    res = CliRunner().invoke(app, [f"plain={table_dir}", str(root / "plain")])
    assert res.exit_code == 2 and "two models are named 'plain'" in res.output
    with pytest.raises(ValueError, match="is not a tabular model folder: expected schema.json and model.json"):
        models.load_tabular([str(root / "plain")])


def test_the_http_service_refuses_a_tabular_model_in_one_line(root: Path, table_dir: Path) -> None:
    pytest.importorskip("fastapi")
    from noisecraft.cli.serve import app

    res = CliRunner().invoke(app, [str(root / "plain"), str(table_dir)])
    assert res.exit_code == 2, res.output
    expected = (f"error: {str(table_dir)!r} is a tabular model (noisecraft tabular fit); the HTTP service serves "
                "diffusion runs; open it with noisecraft ui")
    assert res.output.strip().splitlines() == [expected]


def test_a_page_of_tabular_models_alone_opens_on_the_tabular_tab(tables: ui.Page) -> None:
    blocks = ui.build_ui(tables.tables, tables.folder)
    labels = {getattr(block, "label", None) for block in blocks.blocks.values()}
    assert {"Sample", "Tabular", "Theory", "DDM"} <= labels
    assert [b.selected for b in blocks.blocks.values() if isinstance(b, gr.Tabs)] == ["tabular"]


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_input_is_one_line_in_the_page(page: ui.Page, root: Path) -> None:
    x, big = str(root / "x.png"), str(root / "big.png")
    assert "steps must be >= 1" in _error(page.sample, "plain", None, 0, "", 0, 4)
    assert "n must be between 1 and 64" in _error(page.sample, "plain", None, 3, "", 0, 0)
    assert "unknown solver 'nope'" in _error(page.sample, "plain", "nope", 3, "", 0, 4)
    assert "'ghost' is not served here" in _error(page.sample, "ghost", None, 3, "", 0, 4)
    assert "neither a grid name nor a list" in _error(page.sample, "plain", None, 3, "0.5, x", 0, 4)
    assert "no PNG uploaded" in _error(page.redraw, None)
    assert "not a readable PNG" in _error(page.redraw, b"GIF89a not a png")
    plain = io.BytesIO()
    Image.new("L", (8, 8)).save(plain, format="PNG")
    assert "carries no noisecraft parameters" in _error(page.redraw, plain.getvalue())
    foreign = ui.Page({"other": page.models["plain"]}, page.folder)
    drawn = Path(page.sample("plain", None, 2, "", 0, 1)[0]).read_bytes()
    assert "drawn by model 'plain'; this page serves ['other']" in _error(foreign.redraw, drawn)
    assert "no image" in _error(page.inpaint, "plain", None, _editor(slice(0, 32)), "repaint", "ddpm", 1, 2, 0)
    assert "no mask" in _error(page.inpaint, "plain", x, None, "repaint", "ddpm", 1, 2, 0)
    assert "no mask" in _error(page.inpaint, "plain", x, _editor(slice(0, 5)), "repaint", "ddpm", 1, 2, 0)
    assert "is 16x16; expected 8x8" in _error(page.inpaint, "plain", big, _editor(slice(0, 32)), "repaint", "ddpm",
                                               1, 2, 0)
    assert "unknown inpainting method" in _error(page.inpaint, "plain", x, _editor(slice(0, 32)), "magic", "ddpm",
                                                 1, 2, 0)
    assert "expected 4x4" in _error(page.upscale, "plain", x, 2, "ddnm", 1, 2, 0, 0.0)
    assert "sigma must be > 0" in _error(page.denoise, "plain", x, 0.0, "posterior", 1, 2, 0)
    assert "training image 99999 does not exist" in _error(page.training_image, "plain", 99999)
    assert "paths must be between 1 and 200" in _error(page.trajectories_figure, "ve", 0, 10, 0)
    assert "unknown schedule" in _error(page.forward_figure, "moons", "nope")


# -- page, command, imports ---------------------------------------------------------------------------
def test_build_ui_makes_the_tabs_offline(page: ui.Page) -> None:
    blocks = ui.build_ui(page.models, page.folder)
    assert isinstance(blocks, gr.Blocks) and not blocks.analytics_enabled
    labels = {getattr(block, "label", None) for block in blocks.blocks.values()}
    assert {"Sample", "Inpaint", "Upscale", "Denoise", "Theory", "DDM"} <= labels
    assert "Tabular" not in labels  # shown where a tabular model is served
    theme = ui.page_options()["theme"]
    assert "googleapis" not in theme._get_theme_css() and "system-ui" in theme._get_theme_css()


def test_the_command_names_a_bad_run(tmp_path: Path) -> None:
    from noisecraft.cli.ui import app

    res = CliRunner().invoke(app, [str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert "is not a run directory" in res.output and "Traceback" not in res.output


def test_importing_noisecraft_does_not_import_gradio() -> None:
    code = ("import sys, noisecraft, noisecraft.serve, noisecraft.serve.models, noisecraft.cli.ui; "
            "assert 'gradio' not in sys.modules, 'gradio imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
