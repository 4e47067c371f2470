"""Evaluation: each metric behaves as it should at its extremes; the copula baseline; plots; the examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import association_matrix, evaluate, marginal_distances
from noisecraft.tabular.plots import plot_associations, plot_marginals


@pytest.fixture(scope="module")
def penguins() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_table(load_example("penguins"), "species")


def test_split_is_fixed_and_stratified(penguins):
    train, test = penguins
    assert len(train) == 275 and len(test) == 69
    again = split_table(load_example("penguins"), "species")[1]
    pd.testing.assert_frame_equal(test, again)
    shares = train["species"].value_counts(normalize=True) - test["species"].value_counts(normalize=True)
    assert shares.abs().max() < 0.02


def test_a_copy_of_the_train_rows_is_flagged_as_memorised(penguins):
    train, test = penguins
    report = evaluate(train, test, train.copy(), target="species")
    assert report.value("exact-copy rate").synthetic == 1.0
    assert report.value("median DCR to train").synthetic < 1e-6
    assert report.value("exact-copy rate").reference < 0.05
    assert report.value("mean KS (numeric)").synthetic == 0.0
    assert report.value("detection ROC-AUC").synthetic < 0.6
    assert report.value("detection ROC-AUC").reference < 0.7
    assert report.value("macro_f1 (train-on-synthetic)").synthetic > 0.9
    assert "real test" in report.format_table()


def test_noise_is_detected_and_useless(penguins):
    train, test = penguins
    rng = np.random.default_rng(0)
    noise = train.apply(lambda col: col.sample(frac=1.0, random_state=int(rng.integers(1e6))).to_numpy())
    report = evaluate(train, test, noise, target="species")
    assert report.value("detection ROC-AUC").synthetic > 0.8
    assert report.value("association difference").synthetic > 3 * report.value("association difference").reference
    assert report.value("macro_f1 (train-on-synthetic)").synthetic < 0.6


def test_marginals_and_associations_on_known_cases():
    a = pd.DataFrame({"x": np.arange(100.0), "c": ["p"] * 50 + ["q"] * 50})
    b = pd.DataFrame({"x": np.arange(100.0) + 100, "c": ["p"] * 100})
    dist = marginal_distances(a, b, ["x"], ["c"])
    assert dist["x"] == 1.0 and dist["c"] == 0.5
    mat = association_matrix(pd.DataFrame({"x": np.arange(10.0), "y": -np.arange(10.0) ** 3,
                                           "c": list("ababababab")}), ["x", "y"], ["c"])
    assert mat.loc["x", "y"] == pytest.approx(1.0) and 0 <= mat.loc["x", "c"] <= 1


def test_copula_baseline_and_plots(penguins, tmp_path):
    train, test = penguins
    synth = GaussianCopula().fit(train, target="species").sample(300, seed=0)
    assert list(synth.columns) == list(train.columns)
    assert abs(synth["sex"].isna().mean() - train["sex"].isna().mean()) < 0.04
    report = evaluate(train, test, synth, target="species")
    assert 0.5 <= report.value("detection ROC-AUC").synthetic <= 1.0
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    categorical = ["species", "island", "sex"]
    for plot in (plot_marginals, plot_associations):
        path = plot(train, synth, numeric, categorical, tmp_path / f"{plot.__name__}.png")
        assert path.stat().st_size > 5000


def test_titanic_example_drops_the_respelled_target():
    frame = load_example("titanic")
    assert "alive" not in frame.columns and frame.shape == (891, 14)


def test_a_column_with_more_categories_than_the_boosted_trees_take():
    """300 tail numbers (HistGradientBoosting takes at most 255 categories): the evaluation keeps the 254 most
    frequent labels and OTHER, so utility, detection, distances and attacks all run; a copy of the train rows
    is still flagged as memorised."""
    from noisecraft.tabular.evaluate import MAX_LEVELS, OTHER, feature_levels, ordinal_features

    rng = np.random.default_rng(0)
    n = 1200
    tail = np.r_[np.arange(300), rng.zipf(1.3, n - 300) % 300]  # every one of 300 labels, then a long tail
    frame = pd.DataFrame({"tail": [f"N{t:03d}" for t in tail], "x": rng.normal(size=n) + (tail % 2),
                          "y": rng.integers(0, 2, n)})
    assert frame["tail"].nunique() > MAX_LEVELS
    levels = feature_levels([frame], "tail")
    assert len(levels) == MAX_LEVELS and levels[-1] == OTHER
    codes = ordinal_features([frame], [], ["tail"])[0][:, 0]
    assert codes.max() == MAX_LEVELS - 1 and (codes >= 0).all()
    train, test = split_table(frame, "y")
    copy = evaluate(train, test, train.copy(), "y")
    assert copy.value("exact-copy rate").synthetic == 1.0
    assert copy.value("membership AUC (distance)").synthetic > 0.9
    assert 0.3 < copy.value("membership AUC (distance)").reference < 0.7  # fresh real rows: near chance
    assert copy.value("detection ROC-AUC").synthetic < 0.6
