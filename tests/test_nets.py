"""Networks: shapes, noise-level conditioning, class embeddings, and the denoiser contract."""

from __future__ import annotations

import pytest
import torch

from noisecraft.core.losses import preset
from noisecraft.nets import MLP, NetConfig, UNet, count_parameters


def test_mlp_shapes_and_zero_init_output() -> None:
    net = MLP(3, width=16, depth=2)
    out = net(torch.randn(5, 3), torch.rand(5))
    assert out.shape == (5, 3) and torch.all(out == 0)  # zero-initialised last layer
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        net(torch.randn(5, 4), torch.rand(5))


def test_mlp_depends_on_noise_level_and_class() -> None:
    torch.manual_seed(0)
    net = MLP(2, width=16, depth=1, num_classes=3)
    torch.nn.init.normal_(net.out[-1].weight)
    x = torch.randn(4, 2)
    a = net(x, torch.full((4,), 0.1), torch.zeros(4, dtype=torch.long))
    b = net(x, torch.full((4,), 0.9), torch.zeros(4, dtype=torch.long))
    c = net(x, torch.full((4,), 0.1), torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_unet_default_size_and_shapes() -> None:
    net = NetConfig().build((1, 8, 8))
    assert isinstance(net, UNet)
    assert count_parameters(net) == 1_623_169  # channels 32/64/64, attention at 2x2, as the benchmark anchor
    small = NetConfig(block_channels=[8, 16], attention=[False, True], layers_per_block=1, num_classes=10).build((3, 8, 8))
    out = small(torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([1, 2]))
    assert out.shape == (2, 3, 8, 8)


def test_unet_behind_the_denoiser_contract() -> None:
    net = NetConfig(block_channels=[8, 16], attention=[False, False], layers_per_block=1).build((1, 8, 8), "c_noise")
    den = preset("edm").denoiser(net)
    x0_hat = den(torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.9]))
    assert x0_hat.shape == (3, 1, 8, 8) and torch.isfinite(x0_hat).all()


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="one flag per level"):
        NetConfig(block_channels=[8, 16], attention=[True])
    with pytest.raises(ValueError, match="divisible by 2\\^2"):
        NetConfig(block_channels=[8, 16, 16], attention=[False] * 3).build((1, 6, 6))
    with pytest.raises(ValueError, match="takes vectors"):
        NetConfig(kind="mlp").build((1, 8, 8))
