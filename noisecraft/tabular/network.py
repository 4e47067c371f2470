"""The joint network of a mixed table: one MLP over [numeric x_t, one-hot categorical z_t] (TabDDPM's design,
Kotelnikov et al. 2023, sec. 3), returning the numeric prediction and per-column category logits.

The toolkit's residual MLP (noisecraft.nets.MLP) maps a vector to a vector of the same size, so its
output is read in the input's layout: the first d_num entries are the numeric prediction (in the loss's
parameterization), and each categorical block of K_j + 1 entries gives K_j logits (its [MASK] slot is
dropped, see noisecraft.tabular.discrete).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from noisecraft.nets import MLP
from noisecraft.tabular.discrete import MaskedDiffusion


class JointNet(nn.Module):
    """F(x_num, t, tokens) -> (numeric output (batch, d_num), [logits of column j (batch, K_j)])."""

    def __init__(self, num_dim: int, discrete: MaskedDiffusion, width: int = 256, depth: int = 3,
                 time_scale: float = 1000.0) -> None:
        super().__init__()
        self.num_dim = num_dim
        self.discrete = discrete
        self.mlp = MLP(num_dim + discrete.input_dim, width, depth, time_scale=time_scale)

    def forward(self, x_num: Tensor, time_in: Tensor, tokens: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = torch.cat([x_num, self.discrete.one_hot(tokens).to(x_num.dtype)], dim=1)
        out = self.mlp(h, time_in)
        return out[:, :self.num_dim], self.discrete.split_logits(out[:, self.num_dim:])


class NumericHead:
    """The network as a denoiser callable `fn(x_in, time_in, tokens) -> numeric output`, keeping the category
    logits of its latest evaluation in `.logits`, so one forward pass serves both parts of the loss and of
    each sampling step. Read them right after the call they belong to: a solver may evaluate again."""

    def __init__(self, net: JointNet) -> None:
        self.net = net
        self.logits: list[Tensor] = []

    def __call__(self, x_in: Tensor, time_in: Tensor, tokens: Tensor) -> Tensor:
        num, self.logits = self.net(x_in, time_in, tokens)
        return num
