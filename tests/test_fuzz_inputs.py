"""Property-based fuzz (Hypothesis) of what users type: the run-config loader and the command-line parsers.

Every input ends either in a result or in one clear rejection that names its field, option or file; never in
another exception type or a traceback. Derandomized, so CI sees the same examples on every run.
"""

from __future__ import annotations

import contextlib
import tempfile
import typing
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.runs.config import RunConfig, config_from_dict, load_config

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
runner = CliRunner()

# -- values and keys a careless or hostile config holds ----------------------------------------------------
def _section_model(annotation):
    """The config model of a section, optional sections (`distill: DistillConfig | None`) included."""
    return next(a for a in (annotation, *typing.get_args(annotation)) if hasattr(a, "model_fields"))


SECTIONS = {name: list(_section_model(info.annotation).model_fields) for name, info in RunConfig.model_fields.items()}
KEYS = st.sampled_from([*SECTIONS, *(f for fields in SECTIONS.values() for f in fields)]) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.sampled_from([0, -1, 1, 2**63])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["edm", "ddpm", "vp_cosine", "moons", "dpm++2m", "unet", "mlp", "cosine"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)


@st.composite
def configs(draw) -> dict:
    """Mostly well-shaped configs (known sections and fields, wild values), sometimes anything at all."""
    sections = {}
    for name in draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=5, unique=True)):
        fields = st.sampled_from(SECTIONS[name]) | KEYS
        sections[name] = draw(st.dictionaries(fields, VALUES, max_size=4) | VALUES)
    return sections | draw(st.dictionaries(KEYS, VALUES, max_size=2))


def _named(message: str, source: str) -> None:
    assert source in message and message.strip(), message
    assert "\n" not in message, message


@FUZZ
@given(raw=configs() | VALUES)
def test_config_from_dict_accepts_or_names_the_problem(raw) -> None:
    try:
        cfg = config_from_dict(raw, source="fuzz.yaml")
    except ValueError as err:
        _named(str(err), "fuzz.yaml")
    else:
        assert isinstance(cfg, RunConfig)


def _yaml_of(raw) -> str:
    return yaml.safe_dump(raw, allow_unicode=True)


@FUZZ
@given(content=st.binary(max_size=200) | st.text(max_size=200) | configs().map(_yaml_of))
def test_load_config_accepts_or_names_the_file(content) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            cfg = load_config(path)
        except ValueError as err:
            _named(str(err), str(path))
        else:
            assert isinstance(cfg, RunConfig)


# -- the command line: random option values on commands that must fail fast ----------------------------------
TEXT = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=10)
NUMBERS = (st.integers(-(10**20), 10**20).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
           | st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e400", "1e-320"]))
OPTION_VALUES = NUMBERS | TEXT

COMMANDS = {
    "train": (["train", "--data", "missing_data.npy", "--run", "fuzz_run"],
              ["--steps", "--batch-size", "--lr", "--minutes", "--seed", "--preset", "--loss"]),
    "sample": (["sample", "missing_run"],
               ["--n", "--steps", "--seed", "--solver", "--out", "--class", "--guidance", "--threshold",
                "--eval-batch"]),
    "ddm fit": (["ddm", "fit", "missing_trials.csv"],
                ["--rt", "--method", "--rt-min", "--rt-max", "--lapse", "--lapse-range", "--s", "--where", "--spec",
                 "--out"]),
    "eval": (["eval", "missing_run"], ["--n", "--steps", "--seed", "--solver", "--eval-batch"]),
    "inpaint": (["inpaint", "missing_run", "--image", "missing_x.png", "--mask", "missing_m.png"],
                ["--method", "--n", "--steps", "--seed", "--jump-length", "--jump-count", "--zeta", "--out"]),
    "upscale": (["upscale", "missing_run", "--image", "missing_x.png"],
                ["--factor", "--method", "--n", "--steps", "--sigma", "--zeta", "--out"]),
    "denoise": (["denoise", "missing_run", "--image", "missing_x.png", "--sigma", "0.1"],
                ["--sigma", "--method", "--n", "--steps", "--seed", "--out"]),
    "likelihood": (["likelihood", "missing_run"], ["--n", "--probes", "--seed", "--rtol", "--atol"]),
    "tabular fit": (["tabular", "fit", "missing_table.csv", "--out", "fuzz_model"],
                    ["--steps", "--minutes", "--test-size", "--width", "--depth", "--max-epochs", "--seed",
                     "--target", "--type", "--drop"]),
}


@st.composite
def invocations(draw) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    base, options = COMMANDS[command]
    chosen = draw(st.lists(st.sampled_from(options), min_size=1, max_size=4, unique=True))
    args = list(base)
    for option in chosen:
        value = draw(OPTION_VALUES)
        if option == "--out":  # a file name in the isolated folder, sometimes with the right suffix
            value += draw(st.sampled_from(["", ".png", ".npy", ".csv"]))
        args += [option, value]
    return command, args


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(invocation=invocations())
def test_cli_rejects_any_option_value_in_one_line(invocation) -> None:
    _command, args = invocation
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):  # --out names land in a scratch folder
        res = runner.invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code != 0, (args, res.output)
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    if errors:  # ours: one line naming an option (as typed) or the missing file
        assert len(errors) == 1, res.output
        named = [a for a in args if a.startswith("--") and a in errors[0]] or ["missing_" in errors[0]]
        assert any(named), (args, errors[0])
    else:  # click's own parse errors name the option
        assert "Invalid value" in res.output and "--" in res.output, (args, res.output)
