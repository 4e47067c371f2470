"""Issue 13, one clear error at the boundary: every bad input a user can type ends as one line naming the
file or option and what was expected (exit 2; exit 1 for a failure while working), before any work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.cli._common import user_errors
from noisecraft.runs.config import preset_config

runner = CliRunner()


def _fails(args: list[str], *needles: str, code: int = 2) -> str:
    """Run a command that must fail with exactly one `error:` line holding every needle; return that line."""
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    assert "Traceback" not in res.output and "validation error" not in res.output, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny class-conditional (guidable) digits run, a moons config, and good and bad images."""
    root = tmp_path_factory.mktemp("errors")
    cfg = preset_config("digits", "edm", max_steps=2, batch_size=16, checkpoint_every=2)
    raw = cfg.model_dump(mode="json")
    raw["model"].update(width=16, block_channels=[8, 16], attention=[False, False], layers_per_block=1,
                        num_classes=10, label_dropout=0.2)
    (root / "c.yaml").write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["train", "--config", str(root / "c.yaml"), "--run", str(root / "run")])
    assert res.exit_code == 0, res.output
    Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(root / "x.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "small.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good = (root / "x.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture
def no_work(monkeypatch):
    """Make any sampling fail loudly: a check that must come first is then proven to come first."""
    from noisecraft.runs.pipeline import Pipeline

    def refuse(*_args, **_kwargs):
        raise AssertionError("work started before the inputs were checked")

    for name in ("sample", "inpaint", "upscale", "denoise"):
        monkeypatch.setattr(Pipeline, name, refuse)


# -- 1. the config file ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ("train: [1, 2\n  x: :\n", "is not valid YAML: line"),
    ("train:\n\tmax_steps: 3\n", "is not valid YAML: line"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("", "must be a mapping"),
    ("train:\n  max_steps: 2\n  batchsize: 3\n", "unknown key 'train.batchsize'"),
    ("train:\n  max_steps: abc\n", "train.max_steps must be a valid integer"),
    ("train:\n  max_steps: 0\n", "train.max_steps must be >= 1"),
    ("sample:\n  grid: []\n", "sample.grid: a time grid needs at least 1 point"),
    ("model:\n  block_channels: [0, -1]\n", "model.block_channels.0 must be >= 1"),
    ("loss:\n  schedule: {name: ve, sigma_min: .inf}\n", "sigma_min must be a finite number"),
    ("sample:\n  grid: [0.2, 0.5]\n", "sample.grid: time grid must be strictly decreasing"),
    ("sample:\n  grid: [.nan, 0.5]\n", "sample.grid.0 must be a finite number, got nan"),
    ("sample:\n  grid: [1.5, 0.5]\n", "sample.grid: time grid must lie in [0, 1]"),
])
def test_config_file_errors_are_one_line_naming_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    _fails(["train", "--config", path, "--run", tmp_path / "r"], "bad.yaml", needle)
    assert not (tmp_path / "r").exists()


def test_config_file_that_is_not_text(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 binary")
    _fails(["train", "--config", path, "--run", tmp_path / "r"], "bin.yaml", "UTF-8")


# -- 2. images ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["broken.png", "truncated.png"])
def test_corrupt_png_in_a_data_folder(root, tmp_path, bad):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes((root / "x.png").read_bytes())
    (folder / bad).write_bytes((root / bad).read_bytes())
    _fails(["train", "--data", folder, "--steps", "1", "--run", tmp_path / "r"], bad, "is not a readable image")


@pytest.mark.parametrize("bad", ["broken.png", "truncated.png"])
@pytest.mark.parametrize("command", [["inpaint", "--mask", "{x}"], ["inpaint", "--mask", "{bad}", "--image", "{x}"],
                                     ["upscale"], ["denoise", "--sigma", "0.2"]])
def test_corrupt_png_as_image_or_mask(root, command, bad):
    args = [a.format(x=root / "x.png", bad=root / bad) for a in command]
    if "--image" not in args:
        args += ["--image", str(root / bad)]
    _fails([args[0], root / "run", *args[1:]], bad, "is not a readable image")


# -- 3. outputs, checked before the work ------------------------------------------------------------------
def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores permission bits: use a read-only system folder)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        return folder
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_create(Path("/sys")):
        pytest.skip("no folder here is unwritable for root")
    return Path("/sys")


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.mark.parametrize("command", [
    ["sample", "{run}", "--class", "3", "--n", "2", "--steps", "2"],
    ["inpaint", "{run}", "--image", "{x}", "--mask", "{x}"],
    ["upscale", "{run}", "--image", "{small}"],
    ["denoise", "{run}", "--image", "{x}", "--sigma", "0.2"],
])
@pytest.mark.parametrize("case", ["directory", "under_a_file", "unwritable", "suffix"])
def test_bad_out_is_refused_before_any_work(root, tmp_path, no_work, command, case):
    args = [a.format(run=root / "run", x=root / "x.png", small=root / "small.png") for a in command]
    if case == "directory":
        out, needle = tmp_path / "dir.png", "is a directory"
        out.mkdir()
    elif case == "under_a_file":
        (tmp_path / "file").write_text("x")
        out, needle = tmp_path / "file" / "x.png", "not a directory"
    elif case == "unwritable":
        out, needle = _unwritable(tmp_path) / "x.png", "cannot write"
    else:
        out, needle = tmp_path / "x.jpg", "must end in .png or .npy"
    _fails([*args, "--out", out], "--out", str(out), needle)


@pytest.mark.parametrize("command", [["tabular", "sample", "{model}", "--n", "5"], ["ddm", "fit", "{csv}"],
                                     ["ddm", "simulate", "--n", "5"]])
@pytest.mark.parametrize("case", ["directory", "under_a_file", "suffix"])
def test_bad_csv_out_is_refused(tmp_path, command, case):
    csv = tmp_path / "d.csv"
    csv.write_text("rt,response\n" + "".join(f"{0.4 + 0.01 * i},{i % 2}\n" for i in range(40)))
    args = [a.format(model=tmp_path / "no_model", csv=csv) for a in command]
    if case == "directory":
        out, needle = tmp_path / "out.csv", "is a directory"
        out.mkdir()
    elif case == "under_a_file":
        out, needle = csv / "out.csv", "not a directory"
    else:
        out, needle = tmp_path / "out.txt", "must end in .csv"
    _fails([*args, "--out", out], "--out", needle)


def test_out_in_a_missing_folder_is_made(root, tmp_path):
    """As before: a missing parent folder of --out is made by the writer (the check only proves it can be)."""
    out = tmp_path / "new" / "deeper" / "g.npy"
    res = runner.invoke(app, ["sample", str(root / "run"), "--class", "3", "--n", "2", "--steps", "2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (2, 1, 8, 8)


def test_guided_sample_writes_npy(root, tmp_path):
    out = tmp_path / "g.npy"
    res = runner.invoke(app, ["sample", str(root / "run"), "--class", "3", "--guidance", "2", "--n", "3",
                              "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    x = np.load(out)
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all()


# -- 4. a loss that blows up ----------------------------------------------------------------------------
def test_non_finite_loss_is_one_line_with_a_hint(tmp_path):
    line = _fails(["train", "--data", "moons", "--steps", "5", "--lr", "1e30", "--batch-size", "16",
                   "--run", tmp_path / "r"], "loss became", "at step", "--lr", code=1)
    assert "train.lr" not in line


# -- 5. empty CSV files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "rt,response\n"])
@pytest.mark.parametrize("command", [["ddm", "fit"], ["tabular", "fit", "--out", "{tmp}/m"]])
def test_empty_csv_names_the_file(tmp_path, content, command):
    path = tmp_path / "empty_trials.csv"
    path.write_text(content)
    args = [a.format(tmp=tmp_path) for a in command]
    _fails([*args, path], "empty_trials.csv")


# -- 6. options named as typed ---------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, needle", [
    ("--steps", "0", "--steps must be >= 1, got 0"),
    ("--steps", "-3", "--steps must be >= 1, got -3"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--lr", "0", "--lr must be > 0, got 0"),
    ("--lr", "-1", "--lr must be > 0"),
    ("--lr", "nan", "--lr must be"),
    ("--lr", "inf", "--lr must be a finite number"),
    ("--minutes", "0", "--minutes must be > 0"),
    ("--minutes", "-2", "--minutes must be > 0"),
])
def test_train_options_are_named_as_typed(tmp_path, option, value, needle):
    line = _fails(["train", "--data", "moons", "--run", tmp_path / "r", option, value], needle)
    assert "max_steps" not in line and "Input should" not in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [
    (["sample", "{run}", "--class", "1", "--steps", "-1"], "--steps must be >= 0, got -1"),
    (["sample", "{run}", "--class", "1", "--n", "0"], "--n must be >= 1, got 0"),
    (["eval", "{run}", "--steps", "-2"], "--steps must be >= 0, got -2"),
])
def test_sample_options_are_named_as_typed(root, args, needle):
    _fails([a.format(run=root / "run") for a in args], needle)


def test_tabular_steps_zero_is_an_error(tmp_path):
    from noisecraft.tabular.data import example_path

    _fails(["tabular", "fit", example_path("penguins"), "--steps", "0", "--out", tmp_path / "m"],
           "--steps must be >= 1, got 0")
    _fails(["tabular", "fit", example_path("penguins"), "--minutes", "0", "--out", tmp_path / "m"],
           "--minutes must be > 0")
    model = tmp_path / "m2"
    res = runner.invoke(app, ["tabular", "fit", str(example_path("penguins")), "--steps", "2", "--width", "16",
                              "--depth", "1", "--out", str(model)])
    assert res.exit_code == 0, res.output
    _fails(["tabular", "sample", model, "--n", "5", "--steps", "0", "--out", tmp_path / "s.csv"],
           "--steps must be >= 1, got 0")
    _fails(["tabular", "sample", model, "--n", "0", "--out", tmp_path / "s.csv"], "--n must be >= 1, got 0")


# -- 7. a memory-aware bound on --n ----------------------------------------------------------------------
def test_sample_n_beyond_memory_is_refused_before_work(root):
    line = _fails(["sample", root / "run", "--class", "3", "--n", "100000000", "--steps", "2"], "--n", "memory")
    assert "100000000" in line


def test_pipeline_sample_refuses_n_beyond_memory(root):
    from noisecraft.runs.pipeline import load_run

    pipe = load_run(root / "run")
    with pytest.raises(ValueError, match="`n` = 1000000000 samples need about"):
        pipe.sample(10**9, steps=2, label=1)
    assert pipe.sample(4, steps=2, label=1).shape == (4, 1, 8, 8)


# -- 8. inf in a table -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["inf", "-inf"])
def test_tabular_inf_names_column_and_row(tmp_path, cell):
    path = tmp_path / "t.csv"
    rows = [f"{i},{i * 0.5}" for i in range(30)]
    rows[7] = f"7,{cell}"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    _fails(["tabular", "fit", path, "--steps", "2", "--out", tmp_path / "m"], "column 'b'", "row 7", cell)
    assert not (tmp_path / "m" / "model.json").exists()


def test_infer_schema_rejects_inf():
    import pandas as pd

    from noisecraft.tabular.schema import infer_schema

    with pytest.raises(ValueError, match=r"column 'x' holds -inf in row 2"):
        infer_schema(pd.DataFrame({"x": [0.1, 0.2, -np.inf, 0.4]}))


# -- 9. the safety net for failures on output paths ---------------------------------------------------------
@pytest.mark.parametrize("err", [PermissionError(13, "Permission denied", "/data/out.png"),
                                 IsADirectoryError(21, "Is a directory", "/data/out.png"),
                                 OSError(28, "No space left on device", "/data/out.png")])
def test_os_errors_become_one_line_naming_the_path(capsys, err):
    with pytest.raises(typer.Exit) as exc, user_errors():
        raise err
    assert exc.value.exit_code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "/data/out.png" in message and err.strerror in message


def test_programming_errors_are_not_hidden():
    with pytest.raises(TypeError), user_errors():
        raise TypeError("a bug")


# -- commands with outputs of their own, checked before their work --------------------------------------
def test_plot_out_that_is_a_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    _fails(["plot", "schedules", "--out", tmp_path / "d.png"], "--out", "is a directory")


def test_demo_out_under_a_file_is_refused_before_training(tmp_path, monkeypatch):
    import noisecraft.runs.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    (tmp_path / "file").write_text("x")
    _fails(["demo", "--out", tmp_path / "file" / "demo"], "--out", "is a file")


def test_eval_of_a_conditional_run_says_what_to_do(root):
    _fails(["eval", root / "run", "--n", "4"], "class-conditional", "noisecraft sample --class K")
