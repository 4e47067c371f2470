"""Absorbing-state diffusion: the forward mask rate, the reveal rate of a reverse step, and exact draws."""

from __future__ import annotations

import torch

from noisecraft.tabular.discrete import MaskedDiffusion


def test_forward_masks_at_rate_t_and_keeps_the_rest():
    d = MaskedDiffusion([3, 5])
    g = torch.Generator().manual_seed(0)
    tokens = torch.stack([torch.randint(0, 3, (20000,), generator=g), torch.randint(0, 5, (20000,), generator=g)], 1)
    t = torch.full((20000,), 0.3, dtype=torch.float64)
    noisy = d.forward_mask(tokens, t, torch.rand(tokens.shape, generator=g))
    masked = d.is_masked(noisy)
    assert abs(masked.float().mean().item() - 0.3) < 0.01
    assert torch.equal(noisy[~masked], tokens[~masked])
    assert d.one_hot(noisy).sum(1).eq(2).all()


def test_reverse_step_reveals_the_right_share_with_softmax_frequencies():
    d = MaskedDiffusion([3])
    n = 40000
    g = torch.Generator().manual_seed(1)
    noisy = torch.full((n, 1), 3)
    logits = [torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(n, 3)]
    out = d.reverse_step(noisy, logits, 0.8, 0.6, torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g))
    revealed = ~d.is_masked(out)
    assert abs(revealed.float().mean().item() - 0.25) < 0.01  # (0.8 - 0.6) / 0.8
    freq = torch.bincount(out[revealed], minlength=3).float() / revealed.sum()
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.02)
    final = d.reverse_step(out, logits, 0.6, 0.0, torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g))
    assert not d.is_masked(final).any()
    assert torch.equal(final[revealed], out[revealed])  # revealed tokens never change
