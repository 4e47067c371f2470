"""The joint reverse process: each categorical reveal step z_t -> z_s draws from the logits the network gave at
that step's own state (x_t, t, tokens_t) (MDLM, Sahoo et al. 2024, eq. 7) (for Heun, whose previous step ends
with an evaluation at t too, the later one, at the corrected x_t), whatever the numeric solver evaluates after it,
with either reveal rule, and with no network evaluation beyond the solver's own."""

from __future__ import annotations

import math

import pytest
import torch

from noisecraft.core.losses import preset
from noisecraft.solvers import get_solver
from noisecraft.tabular.discrete import MaskedDiffusion
from noisecraft.tabular.network import JointNet
from noisecraft.tabular.sampler import REVEALS, Conditions, _Reveals, one_at_a_time, sample_rows

STEPS = 5


def _trace(monkeypatch, solver: str, num_dim: int, reveal: str) -> list[tuple]:
    """Sample with a random-weight net (logits that change with t) and return its events in order:
    ("net", t, tokens, logits) per network evaluation, ("step", t, tokens_t, logits) per reveal step."""
    discrete = MaskedDiffusion([3, 2, 4])
    torch.manual_seed(0)
    net = JointNet(num_dim, discrete, width=16, depth=1).eval()
    for weight in net.parameters():  # the MLP's last layer starts at zero: then every evaluation's logits agree
        torch.nn.init.normal_(weight, std=0.5)
    events: list[tuple] = []
    forward = net.forward_lazy  # the sampler's evaluation

    def recorded_forward(x_num, time_in, tokens):
        num, logits = forward(x_num, time_in, tokens)
        events.append(("net", float(time_in[0]), tokens.clone(), logits))
        return num, logits

    def recorded_step(self):  # the chain's tokens and logits as its step is taken
        events.append(("step", self.times[self.k], self.tokens.clone(), self.logits))
        return step(self)

    step = _Reveals.step
    monkeypatch.setattr(net, "forward_lazy", recorded_forward)
    monkeypatch.setattr(_Reveals, "step", recorded_step)
    conditions = Conditions(16, num_dim, discrete.num_columns)
    conditions.tokens[:4, 1] = 0
    sample_rows(net, preset("v"), 16, conditions, steps=STEPS, solver=solver, seed=1, reveal=reveal)
    return events


@pytest.mark.parametrize("reveal", REVEALS)
@pytest.mark.parametrize("solver, num_dim", [("heun", 2), ("dpm2s", 2), ("dpm++2s", 2), ("ddim", 2), ("ddpm", 2),
                                             ("euler", 2), ("dpm++2m", 2), ("dpm++3m", 2), ("heun", 0)])
def test_reveal_step_uses_the_logits_at_its_own_start(monkeypatch, solver, num_dim, reveal):
    events = _trace(monkeypatch, solver, num_dim, reveal)
    steps = [i for i, e in enumerate(events) if e[0] == "step"]
    assert len(steps) == STEPS + 1
    previous = -1
    for i in steps:
        _, t, tokens_t, used = events[i]
        at_t = [e for e in events[previous + 1:i] if math.isclose(e[1], t, rel_tol=1e-6)]
        assert len(at_t) == (2 if solver == "heun" and num_dim and previous >= 0 else 1), \
            f"{solver}: {len(at_t)} evaluations at t={t} in the step from t"
        _, _, tokens_eval, logits_eval = at_t[-1]
        assert torch.equal(tokens_eval, tokens_t)
        assert used is logits_eval, \
            f"{solver}: the reveal step from t={t:.4g} used logits not evaluated at t"
        previous = i
    evaluations = sum(e[0] == "net" for e in events)
    assert evaluations == (get_solver(solver).nfe(STEPS) if num_dim else STEPS + 1)


def _random_net(num_dim: int, cardinalities: list[int]) -> JointNet:
    torch.manual_seed(3)
    net = JointNet(num_dim, MaskedDiffusion(cardinalities), width=32, depth=2).eval()
    for weight in net.parameters():
        torch.nn.init.normal_(weight, std=0.3)
    return net


def test_lazy_forward_is_the_forward():
    """The sampler's evaluation (input layer by weight columns, logits formed per column and row) is the network's
    forward: the same numbers and, for any rows, the same logits of every column."""
    net = _random_net(3, [5, 300, 2])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    t = torch.rand(64, generator=g)
    tokens = torch.stack([torch.randint(0, k + 1, (64,), generator=g) for k in (5, 300, 2)], 1)  # masks included
    num, logits = net(x, t, tokens)
    lazy_num, lazy = net.forward_lazy(x, t, tokens)
    torch.testing.assert_close(lazy_num, num, atol=1e-5, rtol=1e-5)
    rows = torch.tensor([3, 17, 40])
    for j, full in enumerate(logits):
        torch.testing.assert_close(lazy.column(j), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lazy.column(j, rows), full[rows], atol=1e-5, rtol=1e-5)


class _FixedUniforms:
    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws = list(draws)

    def draw(self) -> torch.Tensor:
        return self.draws.pop(0)


@pytest.mark.parametrize("reveal", REVEALS)
def test_reveal_step_draws_each_revealed_token_as_from_every_logit(reveal):
    """A reveal step forms a column's logits only for the rows that reveal it; the tokens are those of drawing every
    column for every row from the full logits and keeping the revealed ones (MDLM's step, eq. 7, or one at a time),
    with a row's allowed categories respected."""
    cards = [4, 200, 3]
    net = _random_net(2, cards)
    discrete = net.discrete
    n = 256
    g = torch.Generator().manual_seed(1)
    tokens = torch.where(torch.rand(n, 3, generator=g) < 0.7, discrete.mask_ids.expand(n, -1),
                         torch.stack([torch.randint(0, k, (n,), generator=g) for k in cards], 1))
    conditions = Conditions(n, 2, 3)
    allowed = torch.zeros(n, 200, dtype=torch.bool)
    allowed[:, :10] = True  # column 1 may only take its first ten categories
    conditions.allow(1, allowed)
    _, logits = net.forward_lazy(torch.randn(n, 2, generator=g), torch.full((n,), 0.6), tokens)
    u_reveal = torch.rand(n, 3, generator=g, dtype=torch.float64)
    u_draw = torch.rand(n, 3, generator=g, dtype=torch.float64)
    times = torch.tensor([0.6, 0.4, 0.2])
    chain = _Reveals(discrete, times, tokens.clone(), conditions, _FixedUniforms([u_reveal, u_draw]), reveal)
    chain.logits = logits
    chain.step()
    full = logits.all()
    full[1] = full[1].masked_fill(~allowed, float("-inf"))
    if reveal == "independent":
        expected = discrete.reverse_step(tokens, full, 0.6, 0.4, u_reveal, u_draw)
    else:
        chosen = one_at_a_time(discrete, tokens, 0.6, 0.4, u_reveal, 3)
        expected = torch.where(chosen, discrete.draw(full, u_draw), tokens)
    assert torch.equal(chain.tokens, expected)
    revealed = tokens != chain.tokens
    assert revealed.sum() > 20 and revealed[:, 1].any() and (chain.tokens[revealed[:, 1], 1] < 10).all()
