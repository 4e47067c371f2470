"""`noisecraft tabular fit | sample | eval` as a user runs them, and their errors."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from noisecraft.cli import app
from noisecraft.tabular.data import example_path

runner = CliRunner()


def test_fit_sample_eval_end_to_end(tmp_path):
    data = example_path("penguins")
    model = tmp_path / "model"
    res = runner.invoke(app, ["tabular", "fit", str(data), "--target", "species", "--steps", "40", "--width", "32",
                              "--depth", "1", "--out", str(model)])
    assert res.exit_code == 0, res.output
    assert (model / "schema.json").is_file() and (model / "model.json").is_file()
    synth = tmp_path / "synth.csv"
    res = runner.invoke(app, ["tabular", "sample", str(model), "--n", "120", "--out", str(synth),
                              "--where", "species=Adelie,body_mass_g=4000", "--steps", "10"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(synth)
    assert len(frame) == 120 and (frame["species"] == "Adelie").all() and (frame["body_mass_g"] == 4000).all()
    res = runner.invoke(app, ["tabular", "eval", str(data), str(synth), "--target", "species"])
    assert res.exit_code == 0, res.output
    assert "detection ROC-AUC" in res.output and "median DCR to train" in res.output
    assert (tmp_path / "synth_marginals.png").is_file() and (tmp_path / "synth_associations.png").is_file()


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('a,b\n1,2\n3,4,5,6\n"open\n')
    res = runner.invoke(app, ["tabular", "fit", str(bad), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "cannot parse" in res.output
    res = runner.invoke(app, ["tabular", "fit", str(example_path("titanic")), "--target", "nope", "--out",
                              str(tmp_path / "m")])
    assert res.exit_code == 2 and "target column 'nope' is not in the table" in res.output
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    res = runner.invoke(app, ["tabular", "fit", str(empty), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "no rows" in res.output
    res = runner.invoke(app, ["tabular", "sample", str(tmp_path), "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 2 and "not a saved tabular model" in res.output


def test_fit_names_the_numbers_drawn_from_their_values_and_sample_holds_them(tmp_path):
    from tests.test_tabular_model import _parity_table

    data = tmp_path / "levels.csv"
    _parity_table(n=3000).to_csv(data, index=False)  # 2,400 train rows: 120 a level
    model = tmp_path / "model"
    res = runner.invoke(app, ["tabular", "fit", str(data), "--target", "label", "--steps", "30", "--width", "32",
                              "--depth", "1", "--out", str(model)])
    assert res.exit_code == 0, res.output
    assert "drawn from their observed values: x (20)" in res.output
    synth = tmp_path / "synth.csv"
    res = runner.invoke(app, ["tabular", "sample", str(model), "--n", "50", "--out", str(synth), "--where", "x=3"])
    assert res.exit_code == 0, res.output
    assert (pd.read_csv(synth)["x"] == 3.0).all()
    res = runner.invoke(app, ["tabular", "sample", str(model), "--n", "50", "--out", str(synth), "--where", "x=3.2"])
    assert res.exit_code != 0
    assert "column 'x' takes only the 20 values seen in training; 3.2 is not one of them (nearest: 3, 3.5)" in res.output
