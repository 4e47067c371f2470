"""The fast default sampler of the tabular model: on a table whose exact denoiser is known in closed form its
rows follow the table's distribution (joint of the categories, numbers per category), as the old 100-step
ancestral sampler's do, and the same few steps with MDLM's independent reveals do not; at most one category is
revealed per row and step, and all by the end; rows do not depend on the batch size; constraints hold on every
row; models saved before the sampler's grid and reveal rule were fields load and sample as they did."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from noisecraft.core.losses import preset
from noisecraft.core.parameterization import v_from_x0
from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.discrete import MaskedDiffusion
from noisecraft.tabular.model import (
    GRID,
    REVEAL,
    SAMPLE_STEPS,
    SOLVER,
    TabularConfig,
    TabularDiffusion,
)
from noisecraft.tabular.sampler import (
    JOINT_GRIDS,
    JOINT_SOLVERS,
    REVEALS,
    Conditions,
    _Reveals,
    one_at_a_time,
    sample_rows,
)

#: p(a, b) of two dependent categorical columns, and the mean of the numbers (2-D) in each (a, b) cell
PI = np.array([[0.40, 0.05, 0.05], [0.02, 0.08, 0.40]])
MU = np.array([[[0.0, 0.0], [1.0, -0.5], [-1.0, 1.0]], [[1.5, 1.0], [-0.5, -1.5], [0.5, 0.5]]])
STD = 0.4


class TableOracle:
    """The exact network of the table above under the "v" preset: numbers x | (a, b) ~ N(MU[a, b], STD^2 I).

    Given (x_t, z_t), the cells consistent with the revealed tokens have posterior weights
    w_ab ~ PI[a, b] N(x_t; alpha MU[a, b], (alpha^2 STD^2 + sigma^2) I); within a cell x_0 is Gaussian with mean
    (MU / STD^2 + alpha x_t / sigma^2) / (1 / STD^2 + alpha^2 / sigma^2). x0_hat is the weighted mean of those and
    each column's logits are the log of its marginal weights: the exact E[x_0 | x_t, z_t] and p(x_0's category |
    x_t, z_t), returned as a v-prediction (Salimans & Ho 2022)."""

    num_dim = 2

    def __init__(self) -> None:
        self.discrete = MaskedDiffusion(list(PI.shape))
        self.schedule = preset("v").schedule
        self.log_pi = torch.as_tensor(np.log(PI)).reshape(-1)
        self.mu = torch.as_tensor(MU).reshape(-1, 2)
        self.cells = torch.cartesian_prod(torch.arange(PI.shape[0]), torch.arange(PI.shape[1]))

    def __call__(self, x_in: torch.Tensor, time_in: torch.Tensor, tokens: torch.Tensor):
        t = time_in.double()
        alpha, sigma = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        x = x_in.double()
        var = alpha**2 * STD**2 + sigma**2
        log_w = self.log_pi - 0.5 * ((x[:, None] - alpha[..., None] * self.mu) ** 2).sum(-1) / var
        for j in range(2):
            revealed = tokens[:, j:j + 1] != PI.shape[j]  # K_j is column j's mask token
            log_w = log_w.masked_fill(revealed & (self.cells[:, j] != tokens[:, j:j + 1]), float("-inf"))
        w = torch.softmax(log_w, 1)
        mean = (self.mu / STD**2 + (alpha * x / sigma**2)[:, None]) / (1 / STD**2 + alpha**2 / sigma**2)[..., None]
        x0 = (w[..., None] * mean).sum(1)
        cube = w.reshape(-1, *PI.shape)
        logits = [cube.sum(2).log().float(), cube.sum(1).log().float()]
        return v_from_x0(x, x0, alpha, sigma).float(), logits


def _errors(steps: int, solver: str, grid: str, reveal: str, n: int = 6000, seed: int = 0,
            first: int | None = None) -> tuple[float, float, float]:
    """(total variation of the sampled (a, b) from PI, largest error of a cell's mean, of the pooled std)."""
    x, tokens = sample_rows(TableOracle(), preset("v"), n, Conditions(n, 2, 2), steps, solver, seed, grid,
                            reveal=reveal, first=first)
    counts = np.zeros(PI.shape)
    np.add.at(counts, (tokens[:, 0].numpy(), tokens[:, 1].numpy()), 1)
    tv = 0.5 * np.abs(counts / n - PI).sum()
    cell = tokens[:, 0] * PI.shape[1] + tokens[:, 1]
    means = torch.stack([x[cell == c].double().mean(0) for c in range(PI.size)])
    resid = x.double() - means[cell]
    mean_err = float((means - torch.as_tensor(MU).reshape(-1, 2)).abs().max())
    return tv, mean_err, abs(float(resid.std()) - STD)


# sampling error at n = 6000: TV of a 6-cell table ~0.01, a rare cell's mean (120 rows) ~0.04 (max of 12 ~0.1)
TV_TOL, MEAN_TOL, STD_TOL = 0.03, 0.125, 0.03


@pytest.mark.parametrize("steps, solver, grid, reveal", [(SAMPLE_STEPS, SOLVER, GRID, REVEAL),
                                                         (100, "ddpm", "uniform", "independent")])
def test_the_default_and_the_old_sampler_draw_the_table(steps, solver, grid, reveal):
    """Measured at seed 0: default (0.005, 0.070, 0.010), old default (0.008, 0.101, 0.016)."""
    tv, mean_err, std_err = _errors(steps, solver, grid, reveal)
    assert tv < TV_TOL and mean_err < MEAN_TOL and std_err < STD_TOL, (tv, mean_err, std_err)


@pytest.mark.parametrize("first", [0, 1])
def test_target_first_draws_the_table_with_the_target_revealed_at_the_first_step(monkeypatch, first):
    """Exact conditionals give the same joint in any reveal order: with column `first` (the target) drawn at the
    first step, from the first evaluation alone, the rows still follow the table. Measured (TV, mean error, std
    error) at seed 0: first=0 (0.006, 0.048, 0.020), first=1 (0.019, 0.054, 0.022); seeds 1-3 TV 0.006-0.013,
    beside one_per_step's (0.014, 0.047, 0.015) at seed 0 and TV 0.009-0.013 at seeds 1-3."""
    steps_seen = []
    step = _Reveals.step

    def recorded(self):
        before = self.tokens.clone()
        step(self)
        steps_seen.append(before != self.tokens)

    monkeypatch.setattr(_Reveals, "step", recorded)
    tv, mean_err, std_err = _errors(SAMPLE_STEPS, SOLVER, GRID, "target_first", first=first)
    assert tv < TV_TOL and mean_err < MEAN_TOL and std_err < STD_TOL, (tv, mean_err, std_err)
    revealed = steps_seen[0]  # the first batch's first step: the target in every row, nothing else
    assert revealed[:, first].all() and not revealed[:, 1 - first].any()


def test_the_check_fails_the_default_steps_with_independent_reveals():
    """Few intervals reveal a and b together in a share of the rows, each from its own marginal: the rare cells
    fill with rows whose numbers belong to another cell (mean error 0.151 at seed 0, 0.16-0.18 at seeds 1-2); one
    interval loses the dependence of a and b altogether (TV 0.37)."""
    assert _errors(SAMPLE_STEPS, SOLVER, GRID, "independent")[1] > MEAN_TOL
    assert _errors(1, SOLVER, GRID, "independent")[0] > 3 * TV_TOL


def test_one_at_a_time_reveals_one_proposed_token_unless_the_steps_left_run_short():
    discrete = MaskedDiffusion([3, 3, 3, 3])
    masked = discrete.mask_ids.expand(4, -1).clone()
    masked[3, :2] = 0  # row 3: two tokens left
    u = torch.tensor([[0.9, 0.1, 0.2, 0.9], [0.9, 0.9, 0.9, 0.9], [0.05, 0.9, 0.9, 0.9], [0.0, 0.0, 0.9, 0.9]])
    # t 1 -> 0.7: MDLM proposes tokens with u < 0.3
    chosen = one_at_a_time(discrete, masked, 1.0, 0.7, u, left=10)
    assert chosen.tolist() == [[False, True, False, False], [False] * 4, [True, False, False, False], [False] * 4]
    # two reveal steps left for four masked tokens: three now, whatever MDLM proposes
    chosen = one_at_a_time(discrete, masked, 1.0, 0.7, u, left=2)
    assert chosen.sum(1).tolist() == [3, 3, 3, 1] and not chosen[3, :2].any()
    assert one_at_a_time(discrete, masked, 0.1, 0.0, u, left=1).sum(1).tolist() == [4, 4, 4, 2]


def test_every_token_is_drawn_and_conditions_kept():
    n = 200
    conditions = Conditions(n, 2, 2)
    conditions.tokens[:50, 1] = 2
    x, tokens = sample_rows(TableOracle(), preset("v"), n, conditions, 2, SOLVER, 0, GRID, reveal=REVEAL)
    assert (tokens[:, 0] < 2).all() and (tokens[:, 1] < 3).all() and (tokens[:50, 1] == 2).all()
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("solver", ["dpm++2m", "heun", "ddim"])
def test_rows_do_not_depend_on_the_batch_size(solver):
    conditions = Conditions(50, 2, 2)
    conditions.tokens[:20, 0] = 1
    whole = sample_rows(TableOracle(), preset("v"), 50, conditions, 6, solver, 3, "step_aware", 50, REVEAL)
    parts = sample_rows(TableOracle(), preset("v"), 50, conditions, 6, solver, 3, "step_aware", 7, REVEAL)
    assert torch.allclose(whole[0], parts[0], atol=1e-5) and torch.equal(whole[1], parts[1])
    assert (whole[1][:20, 0] == 1).all()


def test_unknown_solver_grid_and_batch_are_refused():
    oracle, cond = TableOracle(), Conditions(4, 2, 2)
    with pytest.raises(ValueError, match="cannot drive the joint process"):
        sample_rows(oracle, preset("v"), 4, cond, 5, "unipc")
    with pytest.raises(ValueError, match="unknown grid"):
        sample_rows(oracle, preset("v"), 4, cond, 5, "ddim", grid="cosine")
    with pytest.raises(ValueError, match="batch_size"):
        sample_rows(oracle, preset("v"), 4, cond, 5, "ddim", batch_size=0)
    with pytest.raises(ValueError, match="unknown reveal rule"):
        sample_rows(oracle, preset("v"), 4, cond, 5, "ddim", reveal="all")
    with pytest.raises(ValueError, match="expected one of"):
        TabularConfig(solver="rk45")
    assert GRID in JOINT_GRIDS and SOLVER in JOINT_SOLVERS and REVEAL in REVEALS


# -- the model ------------------------------------------------------------------------------------------------
def _table(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """code -> label (a functional dependency), low <= high, a free category."""
    rng = np.random.default_rng(seed)
    code = rng.integers(0, 4, n)
    low = rng.normal(size=n)
    return pd.DataFrame({"code": code.astype(str), "label": np.array(["a", "b", "c", "d"])[code], "low": low,
                         "high": low + rng.exponential(0.5, n), "kind": rng.choice(["x", "y"], n)})


@pytest.fixture(scope="module")
def fitted() -> tuple[TabularDiffusion, pd.DataFrame]:
    train = TrainConfig(max_steps=150, batch_size=256, lr=3e-3, warmup_steps=20, ema_decay=0.99, mixed_precision="no")
    frame = _table()
    model = TabularDiffusion(TabularConfig(width=32, depth=1, train=train)).fit(frame, progress=False)
    return model, frame


def test_constraints_hold_on_every_row_of_the_default_path_in_any_batch(fitted):
    model, _ = fitted
    assert (model.config.sample_steps, model.config.solver, model.config.sample_reveal) == (SAMPLE_STEPS, SOLVER, REVEAL)
    for kwargs in ({}, {"where": {"label": "c"}}, {"where": {"high": 1.5}}, {"balance": "code"}):
        whole = model.sample(300, seed=2, **kwargs)
        parts = model.sample(300, seed=2, batch_size=64, **kwargs)
        pd.testing.assert_frame_equal(whole, parts)
        assert (whole["label"] == whole["code"].map(dict(zip("0123", "abcd")))).all()
        assert (whole["low"] <= whole["high"]).all()


def test_a_model_saved_before_the_grid_field_samples_as_before(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["config"].pop("sample_grid"), meta["config"].pop("sample_reveal")
    meta["config"].update(sample_steps=100, solver="ddpm")  # what every model saved before held
    (tmp_path / "model.json").write_text(json.dumps(meta))
    old = TabularDiffusion.load(tmp_path)
    assert (old.config.sample_steps, old.config.solver, old.config.sample_grid, old.config.sample_reveal) == \
        (100, "ddpm", "uniform", "independent")
    pd.testing.assert_frame_equal(old.sample(40, seed=1), model.sample(40, seed=1, steps=100, solver="ddpm",
                                                                         grid="uniform", reveal="independent"))
    meta["config"]["solver"] = "rk45"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.json.*rk45"):
        TabularDiffusion.load(tmp_path)


@pytest.mark.parametrize("target, token", [("cabin", "cabin & fee"), ("origin", "origin & dest & distance"),
                                           ("seats", None), ("delay", None), (None, None)])
def test_the_model_reveals_its_target_token_first(monkeypatch, target, token):
    """`sample` hands the sampler the target's token (its group's when a constraint groups it); a numeric target
    or none gives no token, and target_first is then one_per_step."""
    from noisecraft.tabular import model as model_module
    from tests._helpers import routes

    real = routes(600, strays=0)
    types = {"seats": "numeric"}
    model = TabularDiffusion(TabularConfig(width=16, depth=1)).fit(real, target=target, types=types, steps=3,
                                                                   progress=False)
    seen = {}

    def spy(*args, **kwargs):
        seen["first"] = args[-1]
        return sample_rows(*args, **kwargs)

    monkeypatch.setattr(model_module, "sample_rows", spy)
    model.sample(10, seed=0)
    assert model.config.sample_reveal == "target_first"
    assert seen["first"] == (None if token is None else model.codec.token_index(token))
