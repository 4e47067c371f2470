"""Exact constraints: detected or declared functional dependencies, fixed combinations and inequalities hold in
every sampled row, with and without `where` and `balance`, through save and load, from the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.constraints import (
    Constraints,
    check_constraints,
    detect_constraints,
    parse_constraints,
)
from noisecraft.tabular.model import TabularConfig, TabularDiffusion
from noisecraft.tabular.schema import infer_schema
from tests._helpers import ROUTES, routes

CITIES = {"Paris": "FR", "Lyon": "FR", "Nice": "FR", "Berlin": "DE", "Bonn": "DE", "Rome": "IT"}


def _table(n: int = 2400, seed: int = 0) -> pd.DataFrame:
    """city -> country; size and colour only in three combinations; start <= end (integers), low <= high
    (floats); `noise` is independent of everything."""
    rng = np.random.default_rng(seed)
    city = rng.choice(list(CITIES), n)
    combo = rng.integers(0, 3, n)
    start = rng.integers(1990, 2015, n)
    low = rng.normal(size=n)
    return pd.DataFrame({"city": city, "country": [CITIES[c] for c in city],
                         "size": np.array(["S", "M", "L"])[combo], "colour": np.array(["red", "red", "blue"])[combo],
                         "start": start, "end": start + rng.integers(0, 8, n), "low": low,
                         "high": low + rng.exponential(0.3, n), "noise": rng.choice(["u", "v", "w"], n)})


def _config(steps: int = 250) -> TabularConfig:
    train = TrainConfig(max_steps=steps, batch_size=256, lr=3e-3, warmup_steps=20, ema_decay=0.99,
                        mixed_precision="no")
    return TabularConfig(width=64, depth=2, train=train, sample_steps=20)


def _holds(frame: pd.DataFrame, real: pd.DataFrame) -> None:
    """Every row: the city's country, an observed (size, colour), start <= end, low <= high."""
    assert (frame["country"] == frame["city"].map(CITIES)).all()
    seen = set(zip(real["size"], real["colour"]))
    assert all(pair in seen for pair in zip(frame["size"], frame["colour"]))
    assert (frame["start"] <= frame["end"]).all() and (frame["low"] <= frame["high"]).all()


def test_detection_finds_the_constraints_and_no_others():
    frame = _table()
    found = detect_constraints(frame, infer_schema(frame))
    assert sorted(map(sorted, found.combinations)) == [["city", "country"], ["colour", "size"]]
    assert ("city", "country") in found.dependencies and ("size", "colour") in found.dependencies
    assert sorted(found.inequalities) == [("low", "high"), ("start", "end")]
    assert not any("noise" in g for g in found.combinations)


def test_an_inequality_that_only_outliers_make_informative_is_left_to_the_marginals():
    """As y (mm) <= depth (%) in ggplot2's diamonds: it holds in every row and the ranges overlap, but only
    through one outlying width, so random pairs of values break it in 1 of n^2 (< IMPLIED_SHARE)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"width": rng.normal(5.7, 1.1, 2000), "depth": rng.normal(61.7, 1.4, 2000)})
    frame.loc[0, "width"], frame.loc[1, "depth"] = 58.9, 58.0
    assert (frame.width <= frame.depth).all() and frame.width.max() > frame.depth.min()
    assert detect_constraints(frame, infer_schema(frame)).inequalities == []
    frame["depth"] = frame.width + rng.exponential(1.0, 2000)  # now the pairing matters
    assert detect_constraints(frame, infer_schema(frame)).inequalities == [("width", "depth")]


def test_declared_constraints_are_checked():
    frame = _table(200)
    schema = infer_schema(frame)
    with pytest.raises(ValueError, match="constraint high <= low does not hold in the data: row"):
        check_constraints(Constraints(inequalities=[("high", "low")]), schema, frame)
    with pytest.raises(ValueError, match="'nowhere' is not a categorical or numeric column"):
        check_constraints(Constraints(combinations=[["city", "nowhere"]]), schema, frame)
    with pytest.raises(ValueError, match="'start' is in two constraints"):
        check_constraints(Constraints(combinations=[["city", "start"]], inequalities=[("start", "end")]), schema,
                          frame)
    parsed = parse_constraints(["city -> country", "start <= end", "size & colour"])
    assert parsed.inequalities == [("start", "end")] and sorted(map(sorted, parsed.combinations)) == \
        [["city", "country"], ["colour", "size"]]
    with pytest.raises(ValueError, match="expects 'a -> b'"):
        parse_constraints(["city country"])


@pytest.fixture(scope="module")
def fitted():
    real = _table()
    return TabularDiffusion(_config()).fit(real, progress=False), real


def test_constraints_hold_in_every_sampled_row(fitted):
    model, real = fitted
    synth = model.sample(3000, seed=0)
    assert list(synth.columns) == list(real.columns)
    assert synth["start"].dtype == np.int64 and synth["end"].dtype == np.int64
    _holds(synth, real)
    assert synth["city"].nunique() == 6 and synth["size"].nunique() == 3  # all combinations still drawn


@pytest.mark.parametrize("where", [{"country": "FR"}, {"city": "Bonn"}, {"colour": "red"}, {"end": 2001},
                                   {"start": 2000, "end": 2003}, {"high": 0.5}, {"low": -0.2, "size": "L"}])
def test_constraints_hold_under_where(fitted, where):
    model, real = fitted
    synth = model.sample(500, where=where, seed=1)
    _holds(synth, real)
    for column, value in where.items():
        assert (synth[column] == value).all(), column
    if "country" in where:
        assert set(synth["city"]) <= {"Paris", "Lyon", "Nice"}


def test_balance_on_a_grouped_column_and_bad_conditions(fitted):
    model, real = fitted
    synth = model.sample(300, balance="country", seed=2)
    assert synth["country"].value_counts().to_dict() == {"DE": 100, "FR": 100, "IT": 100}
    _holds(synth, real)
    with pytest.raises(ValueError, match="no combination of"):
        model.sample(5, where={"city": "Rome", "country": "FR"})
    with pytest.raises(ValueError, match="has no category 'Oslo'"):
        model.sample(5, where={"city": "Oslo"})
    with pytest.raises(ValueError, match="end - start = -3.0 lies outside"):
        model.sample(5, where={"start": 2003, "end": 2000})


def test_constraints_survive_save_and_load(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "m")
    again = TabularDiffusion.load(tmp_path / "m")
    assert again.constraints == model.constraints
    pd.testing.assert_frame_equal(again.sample(200, seed=4, where={"city": "Paris"}),
                                  model.sample(200, seed=4, where={"city": "Paris"}))


def test_cli_declared_constraint_under_where(tmp_path):
    real = _table(600)
    data = tmp_path / "t.csv"
    real.to_csv(data, index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["tabular", "fit", str(data), "--out", str(tmp_path / "m"), "--steps", "30", "--width",
                              "32", "--depth", "1", "--no-detect-constraints", "--constraint", "start <= end",
                              "--constraint", "city -> country"])
    assert res.exit_code == 0, res.output
    assert "constraints: city -> country" in res.output
    out = tmp_path / "s.csv"
    res = runner.invoke(app, ["tabular", "sample", str(tmp_path / "m"), "--n", "200", "--out", str(out), "--where",
                              "end=2000", "--steps", "5"])
    assert res.exit_code == 0, res.output
    synth = pd.read_csv(out)
    assert (synth["start"] <= 2000).all() and (synth["end"] == 2000).all()
    assert (synth["country"] == synth["city"].map(CITIES)).all()
    res = runner.invoke(app, ["tabular", "fit", str(data), "--out", str(tmp_path / "m2"), "--constraint",
                              "end <= start"])
    assert res.exit_code == 2 and "does not hold in the data" in res.output


def test_without_constraints_the_same_model_breaks_them():
    """The check above is not vacuous: a model of the same size fitted without the constraints breaks each in
    some rows (5-10% of rows at 250 steps)."""
    real = _table()
    synth = TabularDiffusion(_config(100)).fit(real, progress=False, detect=False).sample(1000, seed=0)
    assert (synth["country"] != synth["city"].map(CITIES)).any()
    assert (synth["start"] > synth["end"]).any() or (synth["low"] > synth["high"]).any()


# -- numeric columns determined by one categorical column or a pair ------------------------------------------
def test_numeric_dependencies_on_a_pair_are_detected_exact_or_approximate():
    frame = routes()
    found = detect_constraints(frame, infer_schema(frame))
    assert found.approximate == [("origin & dest", "distance")]
    assert ("cabin", "fee") in found.dependencies
    assert sorted(map(sorted, found.combinations)) == [["cabin", "fee"], ["dest", "distance", "origin"]]
    assert "origin & dest -> distance (in at least 99.9% of rows)" in found.describe()
    exact = routes(strays=0)
    found = detect_constraints(exact, infer_schema(exact))
    assert ("origin & dest", "distance") in found.dependencies and not found.approximate
    # one stray row in a hundred is not a dependency: distance stays numeric, free of the route
    loose = routes(strays=60)
    found = detect_constraints(loose, infer_schema(loose))
    assert not found.approximate and ["cabin", "fee"] in found.combinations and len(found.combinations) == 1


@pytest.fixture(scope="module")
def routed():
    real = routes()
    return TabularDiffusion(_config(200)).fit(real, progress=False), real


def _on_routes(frame: pd.DataFrame, real: pd.DataFrame) -> bool:
    seen = set(zip(real.origin, real.dest, real.distance))
    return all(t in seen for t in zip(frame.origin, frame.dest, frame.distance))


def test_a_pair_determined_number_holds_its_observed_values_in_every_row(routed):
    model, real = routed
    synth = model.sample(2000, seed=0)
    assert synth["distance"].dtype == np.int64 and synth["fee"].dtype == np.float64
    assert _on_routes(synth, real) and set(synth.fee) <= {20.0, 90.5}
    assert (synth.fee == np.where(synth.cabin == "business", 90.5, 20.0)).all()
    assert synth.groupby(["origin", "dest"]).ngroups >= 20  # the routes are drawn, not one of them
    rows = model.sample(200, where={"distance": ROUTES["B", "R"]}, seed=1)  # one route is that long
    assert (rows.distance == 650).all() and set(zip(rows.origin, rows.dest)) == {("B", "R")}
    rows = model.sample(100, where={"origin": "C", "distance": float(ROUTES["C", "W"])}, seed=2)
    assert (rows.distance == 1270).all() and (rows.dest == "W").all()
    rows = model.sample(100, where={"dest": "P"}, seed=3)
    assert _on_routes(rows, real) and (rows.dest == "P").all()  # 300, 470 or 640, or the stray 477
    with pytest.raises(ValueError, match="no combination of"):
        model.sample(5, where={"distance": 651})
    with pytest.raises(ValueError, match="holds integers"):
        model.sample(5, where={"distance": 640.5})


def test_a_declared_group_may_hold_a_numeric_column():
    real = routes(600)
    model = TabularDiffusion(_config(30)).fit(real, progress=False, detect=False,
                                             constraints=parse_constraints(["origin & dest & distance"]))
    assert model.constraints.combinations == [["origin", "dest", "distance"]]
    assert _on_routes(model.sample(300, seed=0), real)


def test_without_the_route_the_same_model_samples_distances_off_it():
    """The checks above are not vacuous: with distance left numeric it is sampled near, not at, its route's."""
    real = routes()
    synth = TabularDiffusion(_config(200)).fit(real, progress=False, detect=False).sample(500, seed=0)
    assert not _on_routes(synth, real)
