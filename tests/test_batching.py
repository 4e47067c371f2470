"""Batch invariance of image sampling: with a fixed evaluation batch, sample i is the same bits whatever n;
on whole batches it agrees to the documented tolerance (docs/reproducibility.md)."""

from __future__ import annotations

import pytest
import torch

from noisecraft.nets import NetConfig
from noisecraft.nets.batching import FixedBatch
from noisecraft.runs.config import preset_config
from noisecraft.runs.pipeline import Pipeline

SHAPE = (1, 8, 8)


def _pipeline(num_classes: int | None = None, eval_batch: int | None = None) -> Pipeline:
    """An untrained class-guidable digits UNet with random weights (what matters here is the arithmetic)."""
    cfg = preset_config("digits", "edm", max_steps=1)
    model = NetConfig(block_channels=[16, 32], attention=[False, True], layers_per_block=1, num_classes=num_classes,
                      label_dropout=0.1 if num_classes else 0.0)
    cfg = cfg.model_copy(update={"model": model})
    torch.manual_seed(0)
    net = model.build(SHAPE, cfg.loss.time_input).eval()
    with torch.no_grad():  # weights away from init so every layer matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Pipeline(cfg, net, SHAPE, True, eval_batch=eval_batch)


def test_fixed_batch_rows_are_independent_of_batch_and_position() -> None:
    net = _pipeline().net
    wrapped = FixedBatch(net, 8)
    x, level = torch.randn(70, *SHAPE), torch.rand(70)  # whole batches of 70 and of 1..13 differ here
    with torch.no_grad():
        whole = wrapped(x, level)
        for n in (1, 3, 8, 13):
            assert torch.equal(wrapped(x[:n], level[:n]), whole[:n])
        perm = torch.randperm(70)
        assert torch.equal(wrapped(x[perm], level[perm]), whole[perm])
        assert torch.allclose(whole, net(x, level), atol=1e-5)  # the same function as the network


def test_fixed_batch_passes_gradients_and_conditions() -> None:
    net = _pipeline(num_classes=3).net
    x = torch.randn(5, *SHAPE, requires_grad=True)
    level, cond = torch.rand(5), torch.tensor([0, 1, 2, 3, 1])
    (g_fixed,) = torch.autograd.grad(FixedBatch(net, 2)(x, level, cond).square().sum(), x)
    (g_plain,) = torch.autograd.grad(net(x, level, cond).square().sum(), x)
    assert torch.allclose(g_fixed, g_plain, atol=1e-5)


@pytest.mark.parametrize("solver", ["dpm++2m", "euler_maruyama"])
def test_pipeline_samples_are_bitwise_batch_invariant_with_eval_batch(solver: str) -> None:
    pipe = _pipeline(eval_batch=4)
    big = pipe.sample(70, solver=solver, steps=4, seed=3)
    for n in (1, 5):
        assert torch.equal(pipe.sample(n, solver=solver, steps=4, seed=3), big[:n])


def test_guided_samples_are_bitwise_batch_invariant_with_eval_batch() -> None:
    pipe = _pipeline(num_classes=3, eval_batch=4)
    big = pipe.sample(40, steps=3, seed=1, label=2, guidance=2.0)
    assert torch.equal(pipe.sample(2, steps=3, seed=1, label=2, guidance=2.0), big[:2])


def test_whole_batch_samples_agree_to_the_documented_tolerance() -> None:
    pipe = _pipeline()
    big, small = pipe.sample(70, steps=6, seed=0), pipe.sample(3, steps=6, seed=0)
    assert (big[:3] - small).abs().max() < 1e-4


def test_eval_batch_is_checked() -> None:
    with pytest.raises(ValueError, match="`eval_batch` must be >= 1"):
        _pipeline().with_eval_batch(0)
