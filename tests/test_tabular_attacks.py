"""Privacy attacks against releases whose leakage is known: a "generator" that copies its training rows (every
attack near AUC 1) and fresh real rows from the same population (every attack near 0.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from noisecraft.tabular.attacks import attribute_attack, membership_attacks, split_for_attacks
from noisecraft.tabular.evaluate import column_kinds, evaluate
from noisecraft.tabular.schema import infer_schema


def _population(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n) + (group == "b") * 1.5
    return pd.DataFrame({"group": group, "x": x, "y": 0.5 * x + rng.normal(size=n), "flag": rng.random(n) < 0.3,
                         "z": rng.gamma(2.0, size=n)})


def _copier(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The most leaky generator there is: it releases its training rows."""
    return rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def tables():
    train, holdout = _population(1500, 0), _population(900, 1)
    numeric, categorical = column_kinds(infer_schema(train))
    return train, holdout, numeric, categorical


def test_split_keeps_targets_apart(tables):
    train, holdout, _, _ = tables
    split = split_for_attacks(train, holdout, max_targets=200)
    assert len(split.members) == len(split.non_members) == 200
    assert split.labels.sum() == 200 and len(split.targets) == 400
    held = {tuple(r) for r in holdout.itertuples(index=False)}
    assert all(tuple(r) in held for r in split.non_members.itertuples(index=False))
    assert not {tuple(r) for r in split.non_members.itertuples(index=False)} & \
        {tuple(r) for r in split.fresh.itertuples(index=False)}


def test_copying_generator_is_caught_and_fresh_rows_are_not(tables):
    train, holdout, numeric, categorical = tables
    results = membership_attacks(train, holdout, _copier(train, 0), numeric, categorical, fit_sample=_copier,
                                 max_targets=300, n_shadows=3)
    assert [r.name for r in results] == ["membership AUC (distance)", "membership AUC (DOMIAS)",
                                         "membership AUC (shadow)"]
    for r in results:
        assert r.synthetic > 0.95, r  # a copy of the training rows gives members away
        assert abs(r.reference - 0.5) < 0.1, r  # fresh real rows tell nothing: chance at 300 + 300 targets


def test_release_of_fresh_rows_scores_chance(tables):
    train, holdout, numeric, categorical = tables
    fresh = _population(1500, 2)  # the same population, none of the training rows
    for r in membership_attacks(train, holdout, fresh, numeric, categorical, max_targets=300):
        assert abs(r.synthetic - 0.5) < 0.1, r


def test_attribute_inference(tables):
    train, holdout, numeric, categorical = tables
    copied = attribute_attack(train, holdout, _copier(train, 0), "group", numeric, categorical, max_targets=300)
    assert copied.synthetic > 0.95 and copied.reference < 0.8  # members' secrets are read off their copies
    fresh = attribute_attack(train, holdout, _population(1500, 3), "group", numeric, categorical, max_targets=300)
    assert abs(fresh.synthetic - fresh.reference) < 0.1
    number = attribute_attack(train, holdout, _copier(train, 0), "z", numeric, categorical, max_targets=300)
    assert number.synthetic > 0.95 and number.reference < number.synthetic
    with pytest.raises(ValueError, match="sensitive column 'nope'"):
        attribute_attack(train, holdout, train, "nope", numeric, categorical)


def test_evaluate_reports_attacks(tables):
    train, holdout, _, _ = tables
    report = evaluate(train, holdout, _copier(train, 0), target="group", sensitive="flag")
    names = [m.name for m in report.metrics if m.group == "attack"]
    assert names == ["membership AUC (distance)", "membership AUC (DOMIAS)", "attribute inference accuracy (flag)"]
    assert report.value("membership AUC (distance)").synthetic > 0.95
    assert "differential privacy: none" in report.format_table()
    with pytest.raises(ValueError, match="sensitive column 'nope'"):
        evaluate(train, holdout, train, sensitive="nope")
