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
from noisecraft.tabular.sampler import REVEALS, Conditions, _Reveals, sample_rows

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
    forward = net.forward

    def recorded_forward(x_num, time_in, tokens):
        num, logits = forward(x_num, time_in, tokens)
        events.append(("net", float(time_in[0]), tokens.clone(), logits))
        return num, logits

    def recorded_step(self):  # the chain's tokens and logits as its step is taken
        events.append(("step", self.times[self.k], self.tokens.clone(), self.logits))
        return step(self)

    step = _Reveals.step
    monkeypatch.setattr(net, "forward", recorded_forward)
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
        assert all(torch.equal(a, b) for a, b in zip(used, logits_eval, strict=True)), \
            f"{solver}: the reveal step from t={t:.4g} used logits not evaluated at t"
        previous = i
    evaluations = sum(e[0] == "net" for e in events)
    assert evaluations == (get_solver(solver).nfe(STEPS) if num_dim else STEPS + 1)
