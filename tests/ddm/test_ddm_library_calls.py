"""What the `noisecraft ddm` commands do, as the library calls a Python user makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.ddm import (
    Lapse,
    ModelSpec,
    load_roitman,
    read_trials,
    simulate,
    simulate_conditions,
)


def test_read_trials_shipped_csv_query_and_missing_file(tmp_path):
    df = read_trials("roitman", "monkey == 2 and coh >= 0.128")
    full = load_roitman()
    expected = full[(full.monkey == 2) & (full.coh >= 0.128)]
    pd.testing.assert_frame_equal(df, expected)
    path = tmp_path / "trials.csv"
    pd.DataFrame({"rt": [0.5, 0.6, 0.7], "response": [1, 0, 1]}).to_csv(path, index=False)
    assert len(read_trials(path)) == 3 and len(read_trials(str(path), "response == 1")) == 2
    with pytest.raises(
        ValueError, match=r"data file 'nope\.csv' not found; expected a CSV path or 'roitman'"
    ):
        read_trials("nope.csv")


def test_spec_from_options_overrides_the_spec(tmp_path):
    assert ModelSpec.from_options().to_dict() == ModelSpec().to_dict()
    spec = ModelSpec.from_options("v=linear, lapse=0.02, s=1", lapse=0.05, lapse_range="0:3", s=0.1)
    assert spec.rules["v"].kind == "linear" and spec.rules["lapse"].value == 0.05
    assert spec.lapse_range == (0.0, 3.0) and spec.s == 0.1
    f = tmp_path / "spec.json"
    f.write_text('{"a": "free", "lapse_range": [0, 2]}')
    from_file = ModelSpec.from_options(f, lapse_range=(0.1, 1.5))
    assert from_file.rules["a"].kind == "free" and from_file.lapse_range == (0.1, 1.5)
    with pytest.raises(ValueError, match="expected lo < hi"):
        ModelSpec.from_options(lapse_range="3:1")
    with pytest.raises(ValueError, match="noise scale s=0"):
        ModelSpec.from_options("v=free", s=0)


def test_simulate_conditions_is_one_seeded_block_per_condition():
    kw = {"z": 0.45, "t0": 0.2, "sv": 0.3, "s": 1.0, "lapse": 0.1, "lapse_range": (0.0, 3.0)}
    df = simulate_conditions(200, 2.0, 1.2, conditions=[0.5, -1.0], seed=4, **kw)
    assert list(df.columns) == ["rt", "response", "condition", "contaminant"] and len(df) == 400
    for i, c in enumerate([0.5, -1.0]):
        block = df[df.condition == c].drop(columns="condition").reset_index(drop=True)
        alone = simulate(
            200, 2.0 * c, 1.2, 0.45, 0.2, 0.3, lapse=Lapse(0.1, 0.0, 3.0), seed=4 + 1000 * i
        )
        pd.testing.assert_frame_equal(block, alone)
    # drift v * c: the positive condition goes mostly up, the negative one mostly down
    ups = df[~df.contaminant].groupby("condition").response.mean()
    assert ups[0.5] > 0.5 > ups[-1.0]
    single = simulate_conditions(100, 1.0, 1.0, t0=0.3, seed=2)
    assert (
        list(single.columns) == ["rt", "response", "contaminant"] and not single.contaminant.any()
    )
    pd.testing.assert_frame_equal(single, simulate(100, 1.0, 1.0, t0=0.3, seed=2))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"conditions": []}, r"conditions=\[\]; expected one or more finite numbers"),
        ({"conditions": [0.5, np.nan]}, "expected one or more finite numbers"),
        ({"lapse": 0.1, "lapse_range": (2.0, 1.0)}, r"lapse range \[2.0, 1.0\]; expected hi > lo"),
        ({"lapse_range": (0.0,)}, "expected a pair"),
        ({"method": "rk4"}, "method='rk4'"),
    ],
)
def test_simulate_conditions_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        simulate_conditions(10, 1.0, 1.0, **kw)


def test_select_rows_parses_clauses_and_never_evaluates():
    import pandas as pd

    from noisecraft.ddm.data import select_rows

    df = pd.DataFrame({"monkey": [1, 1, 2, 2], "coh": [0.0, 0.256, 0.128, 0.512], "conf": ["HC", "LC", "HC", "LC"]})
    assert list(select_rows(df, "monkey == 2 and coh >= 0.128").index) == [2, 3]
    assert list(select_rows(df, "conf == 'HC' AND coh < 0.2").index) == [0, 2]
    assert list(select_rows(df, "conf != LC").index) == [0, 2]
    for bad, message in [("__import__('os').system('true')", "is not 'column OP value'"),
                         ("monkey == 1 or coh > 0", "joined by 'and' only"),
                         ("species == 1", "not in the data"),
                         ("conf > 1", "compares column 'conf'")]:
        with pytest.raises(ValueError, match=message):
            select_rows(df, bad)
