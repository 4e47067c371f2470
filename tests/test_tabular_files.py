"""What `noisecraft tabular fit` and `eval` do, as the library calls a Python user makes."""

from __future__ import annotations

import pandas as pd
import pytest

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import example_path, load_example, split_table
from noisecraft.tabular.evaluate import evaluate, evaluate_files
from noisecraft.tabular.model import fit_table
from noisecraft.tabular.plots import write_plots
from noisecraft.tabular.schema import infer_schema


def test_fit_table_trains_on_the_split_without_dropped_columns():
    model, train = fit_table(example_path("penguins"), "species", drop=["island"], steps=5, width=16, depth=1,
                             progress=False)
    expected = split_table(load_example("penguins").drop(columns=["island"]), "species")[0]
    pd.testing.assert_frame_equal(train, expected)
    assert model.schema.names == list(expected.columns) and model.stats.steps == 5
    assert model.config.width == 16 and model.config.depth == 1
    whole, rows = fit_table(load_example("penguins"), test_size=0, types={"flipper_length_mm": "categorical"}, steps=2,
                            width=16, depth=1, max_epochs=0, seed=1, progress=False)
    assert len(rows) == 344 and whole.schema.column("flipper_length_mm").kind == "categorical"
    assert whole.config.max_epochs is None


def test_fit_table_bad_input():
    with pytest.raises(ValueError, match=r"`drop` names column\(s\) \['nope'\] that are not in the table"):
        fit_table(load_example("penguins"), drop=["nope"], steps=1, progress=False)
    with pytest.raises(ValueError, match="target column 'nope' is not in the table"):
        fit_table(load_example("penguins"), "nope", steps=1, progress=False)
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        fit_table("missing.csv", steps=1, progress=False)


@pytest.fixture(scope="module")
def copula_synth() -> pd.DataFrame:
    train = split_table(load_example("penguins"), "species")[0]
    return GaussianCopula().fit(train, target="species").sample(200, seed=0)


def test_evaluate_files_splits_as_fit_did(copula_synth, tmp_path):
    synth_csv = tmp_path / "synth.csv"
    copula_synth.to_csv(synth_csv, index=False)
    result = evaluate_files(example_path("penguins"), synth_csv, "species", drop=["nope"])
    train, test = split_table(load_example("penguins"), "species")
    pd.testing.assert_frame_equal(result.train, train)
    pd.testing.assert_frame_equal(result.test, test)
    assert len(result.synthetic) == 200 and result.schema.names == list(train.columns)
    again = evaluate(train, test, pd.read_csv(synth_csv), "species", result.schema)
    assert result.report.to_json() == again.to_json()

    # a separate test table: the real table is the whole train part; dropped columns leave every table
    separate = evaluate_files(train, copula_synth, test=test, drop=["island"])
    assert len(separate.train) == len(train) and len(separate.test) == len(test)
    assert "island" not in separate.schema.names and "island" not in separate.synthetic.columns


def test_evaluate_files_bad_input(copula_synth):
    with pytest.raises(ValueError, match="target column 'nope' is not in the table"):
        evaluate_files(load_example("penguins"), copula_synth, "nope")
    with pytest.raises(ValueError, match=r"column\(s\) \['sex'\] of the real table are missing"):
        evaluate_files(load_example("penguins"), copula_synth.drop(columns=["sex"]))


def test_write_plots(copula_synth, tmp_path):
    train = split_table(load_example("penguins"), "species")[0]
    paths = write_plots(train, copula_synth, infer_schema(train, "species"), tmp_path / "new" / "folder", "s")
    assert [p.name for p in paths] == ["s_marginals.png", "s_associations.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
