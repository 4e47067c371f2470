"""The joint network of a mixed table: one MLP over [numeric x_t, one-hot categorical z_t] (TabDDPM's design,
Kotelnikov et al. 2023, sec. 3), returning the numeric prediction and per-column category logits.

The toolkit's residual MLP (noisecraft.nets.MLP) maps a vector to a vector of the same size, so its
output is read in the input's layout: the first d_num entries are the numeric prediction (in the loss's
parameterization), and each categorical block of K_j + 1 entries gives K_j logits (its [MASK] slot is
dropped, see noisecraft.tabular.discrete).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        out = self.mlp(h, time_in)  # called as a module: Opacus' per-sample gradients (DP training) hook its layers
        return out[:, :self.num_dim], self.discrete.split_logits(out[:, self.num_dim:])

    def _input(self, x_num: Tensor, tokens: Tensor) -> Tensor:
        """The input layer on [x_num, one_hot(tokens)] without forming the one-hot rows: the numbers' product plus,
        per token, its column of the weight (the same sum; its cost does not grow with the categories)."""
        weight, bias = self.mlp.inp.weight, self.mlp.inp.bias
        h = F.linear(x_num, weight[:, :self.num_dim], bias)
        if not tokens.shape[1]:
            return h
        index = tokens + self.discrete.offsets.to(tokens.device)
        return h + F.embedding_bag(index, weight[:, self.num_dim:].t().contiguous(), mode="sum").to(h.dtype)

    @torch.no_grad()
    def forward_lazy(self, x_num: Tensor, time_in: Tensor, tokens: Tensor) -> tuple[Tensor, CategoryLogits]:
        """`forward` for sampling, the same function in a cost per step that does not grow with the categories: the
        category logits are left to `CategoryLogits`, which forms a column's only for the rows that draw it."""
        features = self.mlp.features(self._input(x_num, tokens), time_in)
        out = self.mlp.out[-1]
        num = F.linear(features, out.weight[:self.num_dim], out.bias[:self.num_dim])
        return num, CategoryLogits(features, out.weight[self.num_dim:], out.bias[self.num_dim:], self.discrete)


class CategoryLogits:
    """The category logits of one evaluation, formed on demand: column j's for some rows is the output layer's
    block of column j (its [MASK] slot dropped, as in `split_logits`) applied to those rows' features."""

    def __init__(self, features: Tensor, weight: Tensor, bias: Tensor, discrete: MaskedDiffusion) -> None:
        self.features, self.weight, self.bias = features, weight, bias
        self.starts = discrete.offsets.tolist()
        self.cardinalities = discrete.cardinalities

    def column(self, j: int, rows: Tensor | None = None) -> Tensor:
        """Logits of column j, (rows, K_j); every row when `rows` is None."""
        start, k = self.starts[j], self.cardinalities[j]
        x = self.features if rows is None else self.features[rows]
        return F.linear(x, self.weight[start:start + k], self.bias[start:start + k])

    def all(self) -> list[Tensor]:
        return [self.column(j) for j in range(len(self.cardinalities))]


class DenseLogits:
    """`CategoryLogits`' reading of logits already formed, (batch, K_j) per column: from a network without
    `forward_lazy` (an exact oracle in the tests, say)."""

    def __init__(self, logits: list[Tensor]) -> None:
        self.logits = logits

    def column(self, j: int, rows: Tensor | None = None) -> Tensor:
        return self.logits[j] if rows is None else self.logits[j][rows]

    def all(self) -> list[Tensor]:
        return list(self.logits)


class NumericHead:
    """The network as a denoiser callable `fn(x_in, time_in, tokens) -> numeric output`, keeping the category
    logits of its latest evaluation in `.logits`, so one forward pass serves both parts of the loss and of
    each sampling step (with `lazy`, the sampler's head: logits per column on demand, `JointNet.forward_lazy`'s
    `CategoryLogits`, or `DenseLogits` for a network without it).
    Read them right after the call they belong to: a solver may evaluate again."""

    def __init__(self, net: JointNet, lazy: bool = False) -> None:
        self.net, self.lazy = net, lazy
        self.logits: list[Tensor] | CategoryLogits | DenseLogits = []

    def __call__(self, x_in: Tensor, time_in: Tensor, tokens: Tensor) -> Tensor:
        if self.lazy and hasattr(self.net, "forward_lazy"):
            num, self.logits = self.net.forward_lazy(x_in, time_in, tokens)
        else:
            num, logits = self.net(x_in, time_in, tokens)
            self.logits = DenseLogits(logits) if self.lazy else logits
        return num
