"""Tables longer than memory (issue 16, part 5): streamed from CSV or Parquet in chunks, never held whole.

MAX_MEMORY_ROWS and CHUNK_ROWS are lowered here so that a 3,000-row file is a "long" table read in chunks
of 700 rows with a 500-row sample; the production values are 100,000 and 50,000.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import noisecraft.tabular.data as table_data
from noisecraft.cli import app
from noisecraft.tabular import stream
from noisecraft.tabular.constraints import parse_constraints
from noisecraft.tabular.data import split_table
from noisecraft.tabular.model import TabularConfig, TabularDiffusion, fit_table
from noisecraft.tabular.stream import TableSource, as_source, encode_to_disk
from tests._helpers import routes

N = 3000
SAMPLE, CHUNK = 500, 700


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    monkeypatch.setattr(table_data, "MAX_MEMORY_ROWS", SAMPLE)
    monkeypatch.setattr(stream, "CHUNK_ROWS", CHUNK)


def make_table() -> pd.DataFrame:
    """code -> label holds except in one row; x <= y holds everywhere; z is zero-inflated with missing cells;
    one category of `grp` and one value of `label` occur once, far from most samples of 500 rows."""
    rng = np.random.default_rng(0)
    code = rng.integers(0, 6, N)
    frame = pd.DataFrame({
        "code": code,
        "label": np.array(list("abcdef"))[code],
        "x": rng.gamma(2.0, size=N),
        "grp": rng.choice(["u", "v", "w"], N),
        "z": np.where(rng.random(N) < 0.3, 0.0, rng.exponential(size=N)),
    })
    frame["y"] = frame.x + rng.exponential(size=N)
    frame.loc[rng.random(N) < 0.1, "z"] = np.nan
    frame.loc[2990, "grp"] = "rare"
    frame.loc[2995, "label"] = "zz"
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    frame = make_table()
    frame.to_csv(folder / "t.csv", index=False)
    frame.to_parquet(folder / "t.parquet", row_group_size=450)
    return frame, folder / "t.csv", folder / "t.parquet"


def test_the_split_of_a_streamed_file_is_split_tables(files):
    """The train/test rows chosen chunk by chunk are those split_table picks on the whole table."""
    frame, csv, _ = files
    train, test = split_table(frame, "grp")
    for part, expected in (("train", train), ("test", test)):
        got = pd.concat(TableSource(csv, part=part).chunks()).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert len(test) == pytest.approx(0.2 * N, abs=4 * np.sqrt(0.16 * N))


def test_the_sample_is_uniform_bounded_and_in_file_order(files):
    frame, csv, _ = files
    source = TableSource(csv)
    sample, n = source.sample(SAMPLE, seed=3)
    assert n == N and len(sample) == SAMPLE
    assert sample.index.is_monotonic_increasing and sample.index.is_unique
    pd.testing.assert_frame_equal(sample, frame.loc[sample.index], check_dtype=False)
    assert source.peak_rows <= SAMPLE + CHUNK  # never more than the sample and one chunk in memory
    # uniform: each chunk's share of the sample is near its share of the file (binomial, 4 sd)
    counts = np.bincount(sample.index // CHUNK, minlength=5)[:4]
    assert np.all(np.abs(counts - SAMPLE * CHUNK / N) < 4 * np.sqrt(SAMPLE * CHUNK / N))
    again, _ = TableSource(csv).sample(SAMPLE, seed=3)
    assert again.index.equals(sample.index)
    whole, _ = TableSource(csv).sample(N, seed=3)  # a table no longer than the sample is read whole, in order
    pd.testing.assert_frame_equal(whole, frame, check_dtype=False)


@pytest.fixture(scope="module")
def streamed(files):
    _, csv, _ = files
    small = pytest.MonkeyPatch()
    small.setattr(table_data, "MAX_MEMORY_ROWS", SAMPLE)
    small.setattr(stream, "CHUNK_ROWS", CHUNK)
    try:
        model = TabularDiffusion().fit(TableSource(csv), target="grp", steps=60, progress=False)
    finally:
        small.undo()
    return model


def test_the_schema_covers_every_row_not_only_the_sample(streamed, files):
    frame = files[0]
    schema = streamed.schema
    assert schema.n_rows == N
    assert schema.column("grp").categories == ["rare", "u", "v", "w"]
    assert "zz" in schema.column("label").categories
    assert schema.column("z").missing_rate == pytest.approx(frame.z.isna().mean())
    assert schema.column("x").min == pytest.approx(frame.x.min()) and schema.column("x").max == frame.x.max()


def test_constraints_found_on_the_sample_are_kept_only_if_every_row_holds_them(streamed):
    cons = streamed.constraints
    assert ("label", "code") in cons.dependencies  # holds everywhere
    assert ("code", "label") not in cons.dependencies  # broken by one row outside most samples
    assert ("x", "y") in cons.inequalities
    rows = streamed.sample(1500, seed=1)
    assert (rows.x <= rows.y).all()
    assert rows.groupby("label")["code"].nunique().max() == 1
    assert rows.grp.isin(["rare", "u", "v", "w"]).all() and rows.z.isna().any()


def test_a_declared_constraint_broken_outside_the_sample_is_an_error(files):
    _, csv, _ = files
    with pytest.raises(ValueError, match="code -> label does not hold"):
        TabularDiffusion().fit(TableSource(csv), target="grp", steps=2, progress=False,
                               constraints=parse_constraints(["code -> label"]))


def test_the_encoded_file_equals_the_table_encoded_in_memory(streamed, files, tmp_path):
    frame = files[0]
    from noisecraft.tabular.constraints import to_model_frame

    x_num, tokens = encode_to_disk(TableSource(files[1]), streamed.constraints, streamed.codec, N, tmp_path)
    x_ref, t_ref = streamed.codec.encode(to_model_frame(frame, streamed.constraints))
    assert (tmp_path / "x_num.npy").is_file() and (tmp_path / "tokens.npy").is_file()
    np.testing.assert_array_equal(x_num.numpy(), x_ref.numpy())
    np.testing.assert_array_equal(tokens.numpy(), t_ref.numpy())


def test_parquet_streams_like_csv(files, streamed):
    _, _, parquet = files
    source = as_source(parquet)
    assert source is not None  # longer than MAX_MEMORY_ROWS: streamed
    model = TabularDiffusion().fit(source, target="grp", steps=60, progress=False)
    assert model.schema == streamed.schema and model.constraints == streamed.constraints
    pd.testing.assert_frame_equal(model.sample(50, seed=2), streamed.sample(50, seed=2))


def test_a_short_file_is_read_whole_as_a_frame_is(files, tmp_path, monkeypatch):
    monkeypatch.setattr(table_data, "MAX_MEMORY_ROWS", 100_000)
    frame, csv, parquet = files
    assert as_source(csv) is None and as_source(parquet) is None
    from_file = TabularDiffusion().fit(parquet, target="grp", steps=5, progress=False)
    from_frame = TabularDiffusion().fit(frame, target="grp", steps=5, progress=False)
    assert from_file.schema == from_frame.schema


def test_fit_table_and_the_cli_stream_a_long_file(files, tmp_path):
    _, csv, _ = files
    model, train = fit_table(csv, "grp", steps=5, progress=False)
    expected = len(split_table(files[0], "grp")[0])
    assert model.schema.n_rows == expected and len(train) == SAMPLE
    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["tabular", "fit", str(csv), "--target", "grp", "--steps", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "fit.json").read_text())["rows"] == expected
    assert f"fitted {expected} rows" in result.output
    sampled = CliRunner().invoke(app, ["tabular", "sample", str(out), "--n", "20", "--out", str(tmp_path / "s.csv")])
    assert sampled.exit_code == 0, sampled.output
    assert len(pd.read_csv(tmp_path / "s.csv")) == 20


def test_bad_long_inputs_are_named_before_training(files, tmp_path):
    _, csv, _ = files
    from noisecraft.tabular.privacy import DPConfig

    with pytest.raises(ValueError, match="needs the table in memory.*t.csv"):
        TabularDiffusion().fit(csv, target="grp", steps=2, progress=False, dp=DPConfig(epsilon=1.0))
    with pytest.raises(ValueError, match="`drop` names column.*'nope'"):
        fit_table(csv, "grp", drop=["nope"], steps=2, progress=False)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match="cannot read .*broken.parquet.* as Parquet"):
        as_source(broken)
    with pytest.raises(FileNotFoundError, match="no such"):
        as_source(tmp_path / "absent.csv")


@pytest.mark.parametrize("strays, kept", [(0, "dependencies"), (2, "approximate"), (30, None)])
def test_a_numeric_dependency_is_measured_over_every_row(tmp_path, strays, kept):
    """(origin, dest) -> distance holds in the sample; outside it `strays` rows fly another distance: none keeps
    it exact, 2 in 3,000 (0.07%) approximate, 30 (1%) is no dependency (distance stays numeric)."""
    frame = routes(N, strays=0)
    csv = tmp_path / "routes.csv"
    frame.to_csv(csv, index=False)
    sampled, _ = TableSource(csv).sample(SAMPLE, seed=0)
    outside = np.setdiff1d(np.arange(N), sampled.index)[:strays]
    frame.loc[outside, "distance"] += 7
    frame.to_csv(csv, index=False)
    model = TabularDiffusion().fit(TableSource(csv), steps=20, seed=0, progress=False)
    found = {"dependencies": model.constraints.dependencies, "approximate": model.constraints.approximate}
    for name, deps in found.items():
        assert (("origin & dest", "distance") in deps) == (name == kept), name
    rows = model.sample(300, seed=0)
    on_routes = all(t in set(zip(frame.origin, frame.dest, frame.distance))
                    for t in zip(rows.origin, rows.dest, rows.distance))
    assert on_routes if kept else not on_routes


def test_a_column_on_levels_is_completed_over_every_row_or_left_numeric(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"lv": rng.integers(0, 4, N) + 0.5, "u": rng.normal(size=N), "g": rng.choice(["a", "b"], N)})
    frame.loc[2993, "lv"] = 9.5  # a fifth level in one row
    frame.to_csv(tmp_path / "t.csv", index=False)
    sample, _ = TableSource(tmp_path / "t.csv").sample(SAMPLE, 0, "g")
    assert 9.5 not in set(sample.lv)  # the fit's sample (seed 0) sees four levels, 125 rows each
    model = TabularDiffusion().fit(TableSource(tmp_path / "t.csv"), target="g", steps=5, seed=0, progress=False)
    spec = model.codec.schema.column("lv")
    assert spec.kind == "categorical" and spec.categories == [0.5, 1.5, 2.5, 3.5, 9.5]
    assert model.schema.column("lv").kind == "numeric" and model.schema.column("lv").max == 9.5
    assert set(model.sample(200, seed=0).lv) <= {0.5, 1.5, 2.5, 3.5, 9.5}
    # at most four levels: a candidate on the sample, five over every row, so diffused as a number
    capped = TabularDiffusion(TabularConfig(max_levels=4)).fit(TableSource(tmp_path / "t.csv"), target="g", steps=5,
                                                               seed=0, progress=False)
    assert capped.codec.schema.column("lv").kind == "numeric" and capped.codec.schema.column("lv").max == 9.5
