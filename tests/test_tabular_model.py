"""The tabular diffusion model on synthetic tables with known structure (small MLPs, a few hundred steps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.model import TabularConfig, TabularDiffusion

N = 3000


def _config(steps: int = 600) -> TabularConfig:
    train = TrainConfig(max_steps=steps, batch_size=256, lr=3e-3, warmup_steps=50, ema_decay=0.99,
                        mixed_precision="no")
    return TabularConfig(width=64, depth=2, train=train, sample_steps=40)


def _known_table(n: int = N, seed: int = 0) -> pd.DataFrame:
    """group determines y's mean; `rare` has a 1% category; z and w have missing values; k is constant."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    means = {"a": -2.0, "b": 0.0, "c": 3.0}
    y = np.array([means[g] for g in group]) + 0.5 * rng.normal(size=n)
    z = rng.exponential(size=n)
    z[rng.random(n) < 0.2] = np.nan
    w = rng.choice(["u", "v"], n).astype(object)
    w[rng.random(n) < 0.1] = None
    rare = np.where(rng.random(n) < 0.01, "r", "common")
    return pd.DataFrame({"group": group, "y": y, "z": z, "w": w, "rare": rare, "k": "same",
                         "n_items": rng.integers(0, 40, n)})


@pytest.fixture(scope="module")
def fitted() -> tuple[TabularDiffusion, pd.DataFrame, pd.DataFrame]:
    real = _known_table()
    model = TabularDiffusion(_config()).fit(real, target="group", progress=False)
    return model, real, model.sample(N, seed=0)


def test_schema_and_types_are_reproduced(fitted):
    _, real, synth = fitted
    assert list(synth.columns) == list(real.columns)
    assert (synth["k"] == "same").all()
    assert synth["n_items"].dtype == np.int64
    assert synth["n_items"].between(real["n_items"].min(), real["n_items"].max()).all()
    assert synth["y"].between(real["y"].min(), real["y"].max()).all()
    assert set(synth["group"]) <= {"a", "b", "c"}


def test_categorical_determines_numeric_mean(fitted):
    _, _, synth = fitted
    means = synth.groupby("group")["y"].mean()
    for g, target in {"a": -2.0, "b": 0.0, "c": 3.0}.items():
        assert abs(means[g] - target) < 0.35, (g, means[g])
    shares = synth["group"].value_counts(normalize=True)
    assert abs(shares["a"] - 0.5) < 0.06 and abs(shares["c"] - 0.2) < 0.05


def test_rare_category_appears_at_about_its_rate(fitted):
    _, real, synth = fitted
    real_rate = (real["rare"] == "r").mean()
    rate = (synth["rare"] == "r").mean()
    assert 0.3 * real_rate <= rate <= 2.5 * real_rate, (rate, real_rate)


def test_missing_rates_are_preserved(fitted):
    _, real, synth = fitted
    for col in ("z", "w"):
        assert abs(synth[col].isna().mean() - real[col].isna().mean()) < 0.04, col
    assert synth["group"].notna().all() and synth["y"].notna().all()


def test_conditional_and_balanced_sampling(fitted):
    model, _, _ = fitted
    fixed = model.sample(400, where={"group": "c"}, seed=1)
    assert (fixed["group"] == "c").all()
    assert abs(fixed["y"].mean() - 3.0) < 0.5
    numeric = model.sample(50, where={"y": 1.25, "w": None}, seed=2)
    assert (numeric["y"] == 1.25).all() and numeric["w"].isna().all()
    balanced = model.sample(300, balance="group", seed=3)
    assert balanced["group"].value_counts().to_dict() == {"a": 100, "b": 100, "c": 100}
    with pytest.raises(ValueError, match="has no category 'd'"):
        model.sample(5, where={"group": "d"})
    with pytest.raises(ValueError, match="outside the observed range"):
        model.sample(5, where={"y": 1e6})


def test_rows_depend_only_on_seed_and_index(fitted):
    model, _, _ = fitted
    a = model.sample(30, seed=7)
    b = model.sample(10, seed=7)
    pd.testing.assert_frame_equal(a.iloc[:10], b)


def test_save_load_round_trip(fitted, tmp_path):
    model, _, _ = fitted
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "schema.json").is_file()
    again = TabularDiffusion.load(tmp_path / "m")
    assert again.schema == model.schema
    pd.testing.assert_frame_equal(model.sample(64, seed=5, where={"group": "b"}),
                                  again.sample(64, seed=5, where={"group": "b"}))


def _parity_table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """x sits on 20 levels (0, 0.5, ..., 9.5; 200 rows each) and names its label: the parity of its index."""
    rng = np.random.default_rng(seed)
    level = rng.integers(0, 20, n)
    return pd.DataFrame({"x": level * 0.5, "label": np.where(level % 2 == 0, "even", "odd"),
                         "u": rng.normal(size=n)})


def _parity_held(synth: pd.DataFrame) -> float:
    return float((synth["label"] == np.where(np.round(synth["x"] / 0.5) % 2 == 0, "even", "odd")).mean())


def test_a_numeric_column_on_few_levels_is_drawn_from_its_levels(tmp_path):
    real = _parity_table()
    model = TabularDiffusion(_config()).fit(real, target="label", progress=False)
    assert model.schema.column("x").kind == "numeric"  # the user's kind; the network draws a category
    assert model.codec.schema.column("x").kind == "categorical" and model.codec.schema.column("u").kind == "numeric"
    assert model.levels() == {"x": 20}
    synth = model.sample(2000, seed=0)
    assert synth["x"].dtype == np.float64 and set(synth["x"]) <= set(real["x"])
    held = _parity_held(synth)
    assert held > 0.97, held
    fixed = model.sample(200, where={"x": 3.0}, seed=1)
    assert (fixed["x"] == 3.0).all() and (fixed["label"] == "even").mean() > 0.9
    with pytest.raises(ValueError, match=r"^column 'x' takes only the 20 values seen in training; 3.25 is not one "
                                         r"of them \(nearest: 3, 3.5\)$"):
        model.sample(5, where={"x": 3.25})
    model.save(tmp_path / "m")
    again = TabularDiffusion.load(tmp_path / "m")
    pd.testing.assert_frame_equal(again.sample(64, seed=5), model.sample(64, seed=5))
    # the same table with x diffused as a real number (declared, or the rule off) loses the parity
    declared = TabularDiffusion(_config()).fit(real, target="label", types={"x": "numeric"}, progress=False)
    off = TabularDiffusion(_config().model_copy(update={"max_levels": 0})).fit(real, target="label", progress=False)
    for other in (declared, off):
        assert other.codec.schema.column("x").kind == "numeric"
    assert _parity_held(off.sample(2000, seed=0)) < held - 0.2


@pytest.mark.parametrize("table", ["all_categorical", "all_numeric", "single_value"])
def test_degenerate_tables_work(table):
    rng = np.random.default_rng(0)
    n = 300
    frame = {
        "all_categorical": pd.DataFrame({"a": rng.choice(["x", "y"], n), "b": rng.choice([True, False], n)}),
        "all_numeric": pd.DataFrame({"a": rng.normal(size=n), "b": rng.gamma(2.0, size=n)}),
        "single_value": pd.DataFrame({"only": np.full(n, 4.5), "other": rng.normal(size=n)}),
    }[table]
    model = TabularDiffusion(_config(steps=60)).fit(frame, progress=False)
    synth = model.sample(50, seed=0)
    assert list(synth.columns) == list(frame.columns) and len(synth) == 50
    if table == "single_value":
        assert (synth["only"] == 4.5).all()
    if table == "all_categorical":
        assert synth["b"].dtype == bool


def test_bad_input_gets_clear_errors(tmp_path):
    model = TabularDiffusion(_config(steps=10))
    with pytest.raises(ValueError, match="no rows"):
        model.fit(pd.DataFrame({"a": []}), progress=False)
    with pytest.raises(ValueError, match="target column 'survived' is not in the table"):
        model.fit(_known_table(50), target="survived", progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text('a,b\n1,2\n3,4,5,6\n"open quote\n')
    with pytest.raises(ValueError, match="cannot parse"):
        model.fit(bad, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.sample(5)
