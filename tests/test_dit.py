"""The DiT (Peebles & Xie 2023): adaLN-Zero starts every block as the identity and the output at zero, each
output patch is computed from its own input patch until attention mixes them, class labels condition it, and a
DiT run trains, samples and resumes like a UNet run (pixels and latents: NetConfig.kind "dit")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import noisecraft as nc
from noisecraft.nets import NetConfig, count_parameters
from noisecraft.nets.dit import DiT, sincos_2d
from noisecraft.runs.config import config_from_dict, preset_config
from noisecraft.runs.train import train


def _randomise(net: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def test_adaln_zero_starts_at_zero_and_blocks_as_identity() -> None:
    torch.manual_seed(0)
    net = DiT(8, 2, width=32, depth=2, heads=4, patch_size=2, num_classes=3)
    x = torch.randn(5, 2, 8, 8)
    assert torch.equal(net(x, torch.tensor(0.3), torch.tensor([0, 1, 2, 0, 1])), torch.zeros_like(x))
    h, c = torch.randn(5, 16, 32), torch.randn(5, 32)
    assert torch.equal(net.blocks[0](h, c), h)


def test_each_output_patch_reads_its_own_patch_without_blocks() -> None:
    net = DiT(8, 1, width=16, depth=0, heads=4, patch_size=2)
    _randomise(net)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    for i, j in [(0, 0), (3, 6), (7, 7), (4, 1)]:
        (grad,) = torch.autograd.grad(net(x, torch.tensor(0.5))[0, 0, i, j], x)
        rows, cols = grad[0, 0].abs().gt(0).nonzero(as_tuple=True)
        assert set(rows.tolist()) <= {i // 2 * 2, i // 2 * 2 + 1} and set(cols.tolist()) <= {j // 2 * 2, j // 2 * 2 + 1}
        assert grad[0, 0, i, j] != 0


def test_positions_differ_and_classes_condition() -> None:
    pos = sincos_2d(16, 4, 4)
    assert pos.shape == (16, 16) and torch.cdist(pos, pos).add(torch.eye(16)).min() > 0
    net = NetConfig(kind="dit", width=32, depth=1, num_classes=3, label_dropout=0.1).build((2, 8, 8))
    _randomise(net)
    x = torch.randn(2, 2, 8, 8)
    a, b = net(x, torch.tensor(0.4), torch.tensor([0, 0])), net(x, torch.tensor(0.4), torch.tensor([3, 3]))
    assert a.shape == x.shape and not torch.allclose(a, b)  # label 3 is the null label of guidance
    with pytest.raises(ValueError, match="square images"):
        NetConfig(kind="dit").build((1, 8, 6))
    with pytest.raises(ValueError, match="divisible by patch_size 3"):
        NetConfig(kind="dit", patch_size=3).build((1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(batch, 2, 8, 8\)"):
        net(torch.zeros(1, 1, 8, 8), torch.tensor(0.1))


def test_a_dit_run_trains_samples_and_resumes(tmp_path: Path) -> None:
    raw = preset_config("digits", "edm", max_steps=3, batch_size=8, checkpoint_every=1).model_dump(mode="json")
    raw["model"].update(kind="dit", width=32, depth=2, num_classes=10, label_dropout=0.2)
    cfg = config_from_dict(raw)
    train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "cut", stop_at=2, progress=False)
    train(None, tmp_path / "cut", resume=True, progress=False)
    a, b = nc.load_run(tmp_path / "full"), nc.load_run(tmp_path / "cut")
    assert a.digest == b.digest  # resume reproduces the uninterrupted run
    x = a.sample(4, steps=3, label=2, guidance=2.0)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    assert count_parameters(a.net) > 0
