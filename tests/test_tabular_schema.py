"""Schema inference, the quantile transform and the codec, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.tabular.schema import TableSchema, infer_schema, lattice_columns, read_table
from noisecraft.tabular.transform import QuantileNormal, TableCodec


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame({
        "name": rng.choice(["x", "y", "z"], n),
        "flag": rng.random(n) < 0.3,
        "small_int": rng.integers(1, 4, n),
        "count": rng.integers(0, 500, n),
        "real": rng.normal(size=n),
        "const": np.full(n, 7),
        "holes": np.where(rng.random(n) < 0.25, np.nan, rng.normal(size=n)),
    })


def test_kinds_are_inferred_and_overridable():
    schema = infer_schema(_frame())
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"name": "categorical", "flag": "categorical", "small_int": "categorical", "count": "numeric",
                     "real": "numeric", "const": "constant", "holes": "numeric"}
    assert schema.column("count").value_type == "int"
    assert schema.column("holes").missing_rate == pytest.approx(_frame()["holes"].isna().mean())
    over = infer_schema(_frame(), types={"small_int": "numeric", "count": "categorical"})
    assert over.column("small_int").kind == "numeric" and over.column("count").kind == "categorical"


def test_schema_json_round_trip():
    schema = infer_schema(_frame(), target="name")
    again = TableSchema.from_json(schema.to_json())
    assert again == schema
    assert again.column("flag").categories == [False, True]


def test_quantile_transform_is_inverted_inside_the_observed_range():
    x = np.random.default_rng(1).lognormal(size=1000)
    q = QuantileNormal.fit(x)
    z = q.forward(x)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.1
    inner = (x > np.quantile(x, 0.005)) & (x < np.quantile(x, 0.995))
    np.testing.assert_allclose(q.inverse(z)[inner], x[inner], rtol=0.05)
    far = q.inverse(np.array([-40.0, 40.0]))
    assert far[0] == pytest.approx(x.min()) and far[1] == pytest.approx(x.max())


def test_codec_round_trip_keeps_values_types_and_missing():
    frame = _frame()
    schema = infer_schema(frame)
    codec = TableCodec.fit(frame, schema)
    x_num, tokens = codec.encode(frame)
    back = codec.decode(x_num, tokens)
    assert list(back.columns) == list(frame.columns)
    for c in ("name", "flag", "small_int", "const"):
        assert back[c].tolist() == frame[c].tolist()
    assert back["count"].dtype == np.int64 and (back["count"] - frame["count"]).abs().max() <= 10
    assert back["holes"].isna().tolist() == frame["holes"].isna().tolist()


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("a,b\n", "no rows"),
    ('a,b\n1,2\n3,4,5,6\n"x,\n', "cannot parse"),
])
def test_bad_csv_files_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        infer_schema(read_table(path))


def test_missing_file_and_missing_target_and_unknown_override():
    with pytest.raises(FileNotFoundError, match="no such CSV"):
        read_table("/nonexistent/table.csv")
    with pytest.raises(ValueError, match="target column 'nope' is not in the table"):
        infer_schema(_frame(), target="nope")
    with pytest.raises(ValueError, match="unknown column"):
        infer_schema(_frame(), types={"nope": "numeric"})
    with pytest.raises(ValueError, match="kind must be one of"):
        infer_schema(_frame(), types={"real": "text"})
    with pytest.raises(ValueError, match="no columns"):
        infer_schema(pd.DataFrame())


def test_lattice_columns_are_numeric_columns_on_few_well_filled_levels():
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame({
        "depth": rng.integers(600, 620, n) / 10,  # 20 levels of 0.1, 100 rows each
        "count": rng.integers(0, 40, n),  # 40 levels, 50 rows each: too few rows per level
        "price": rng.gamma(2.0, size=n),  # continuous
        "grade": rng.integers(0, 5, n) * 1.5,  # a numeric target on 5 levels stays the target's kind
        "kept": rng.integers(0, 4, n) + 0.5,  # on levels, but its kind is declared
    })
    schema = infer_schema(frame, target="grade")
    assert lattice_columns(frame, schema, 256, 100, exclude={"kept"}) == ["depth"]
    assert lattice_columns(frame, schema, 256, 50) == ["depth", "count", "kept"]
    assert lattice_columns(frame, schema, 19, 100, exclude={"kept"}) == []  # depth has 20 levels
