"""Masked (absorbing-state) diffusion for categorical columns.

Forward process: each category token is independently replaced by a [MASK] token with probability
m(t) = t, the absorbing-state D3PM of Austin et al. 2021 (sec. 3, "absorbing") in continuous time as in
Sahoo et al. 2024 (MDLM) and Shi et al. 2024 (MD4). At t = 1 every token is masked, so the prior needs no
category frequencies. Reverse step from t to s < t: a token still masked is revealed with probability
(m(t) - m(s)) / m(t), drawn from the network's categorical x0-prediction; revealed tokens never change
(MDLM, eq. 7, "carry-over unmasking").

Why absorbing rather than multinomial (uniform-noise) diffusion, which TabDDPM uses (Kotelnikov et al.
2023, after Hoogeboom et al. 2021): (1) conditional sampling is exact bookkeeping — a fixed column is
simply a token that is never masked, which the network has seen at every t during training; (2) the loss
is a cross-entropy on masked tokens only, with no per-step posterior over K categories to form; (3) in
the language-modelling comparisons of Austin et al. 2021 and Sahoo et al. 2024 absorbing noise gives
better likelihoods than uniform noise. The loss drops MDLM's ELBO weight 1/t (a positive reweighting over
t: the optimal x0-prediction, the posterior of each token given the noisy row, is unchanged), which keeps
the categorical term on the same scale as the Gaussian one.

Tokens of a row are a long tensor of shape (batch, columns); column j has categories 0 ... K_j - 1 and
its mask token is K_j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class MaskedDiffusion:
    """Absorbing-state diffusion over several categorical columns with cardinalities K_j."""

    def __init__(self, cardinalities: list[int]) -> None:
        if any(k < 1 for k in cardinalities):
            raise ValueError(f"every categorical column needs >= 1 category, got cardinalities {cardinalities}")
        self.cardinalities = list(cardinalities)
        self.mask_ids = torch.tensor(self.cardinalities, dtype=torch.long)
        # column j's one-hot input block has K_j + 1 entries (categories, then [MASK])
        self.widths = [k + 1 for k in self.cardinalities]
        self.offsets = torch.tensor([0, *torch.tensor(self.widths).cumsum(0).tolist()[:-1]], dtype=torch.long)

    @property
    def num_columns(self) -> int:
        return len(self.cardinalities)

    @property
    def input_dim(self) -> int:
        return sum(self.widths)

    @staticmethod
    def mask_rate(t: Tensor) -> Tensor:
        """m(t) = t: the probability that a token is masked at time t."""
        return t.clamp(0.0, 1.0)

    def is_masked(self, tokens: Tensor) -> Tensor:
        return tokens == self.mask_ids.to(tokens.device)

    def forward_mask(self, tokens: Tensor, t: Tensor, u: Tensor) -> Tensor:
        """q(z_t | x): mask each token where u < m(t); u ~ U(0, 1) of the tokens' shape, t of shape (batch,)."""
        masked = u < self.mask_rate(t).to(u.dtype).unsqueeze(1)
        return torch.where(masked, self.mask_ids.to(tokens.device).expand_as(tokens), tokens)

    def one_hot(self, tokens: Tensor) -> Tensor:
        """The network input: concatenated one-hot blocks of size K_j + 1 (float32)."""
        if tokens.shape[1] == 0:
            return torch.zeros(tokens.shape[0], 0, device=tokens.device)
        index = tokens + self.offsets.to(tokens.device)
        out = torch.zeros(tokens.shape[0], self.input_dim, device=tokens.device)
        return out.scatter_(1, index, 1.0)

    def split_logits(self, out: Tensor) -> list[Tensor]:
        """Per-column category logits from a network output laid out like `one_hot` (the [MASK] slot is dropped:
        the x0-prediction never puts mass on the mask, MDLM's "zero masking probabilities")."""
        blocks = torch.split(out, self.widths, dim=1)
        return [b[:, :-1] for b in blocks]

    def loss(self, logits: list[Tensor], tokens: Tensor, noisy: Tensor) -> Tensor:
        """Per-row cross-entropy of the x0-prediction on the masked tokens, averaged over columns, shape (batch,)."""
        if not logits:
            return torch.zeros(tokens.shape[0], device=tokens.device)
        masked = self.is_masked(noisy).float()
        ce = torch.stack([F.cross_entropy(lg.float(), tokens[:, j], reduction="none") for j, lg in enumerate(logits)], 1)
        return (ce * masked).sum(1) / self.num_columns

    def reverse_step(self, noisy: Tensor, logits: list[Tensor], t: float, s: float, u_reveal: Tensor,
                     u_draw: Tensor) -> Tensor:
        """One step z_t -> z_s: reveal masked tokens with probability (m(t) - m(s)) / m(t), drawing the category
        from softmax(logits) by inverse CDF with u_draw; u_reveal, u_draw ~ U(0, 1) of the tokens' shape."""
        if noisy.shape[1] == 0:
            return noisy
        return torch.where(self.reveal_mask(noisy, t, s, u_reveal), self.draw(logits, u_draw), noisy)

    def reveal_mask(self, noisy: Tensor, t: float, s: float, u_reveal: Tensor) -> Tensor:
        """The tokens the step z_t -> z_s reveals: masked ones with u_reveal < (m(t) - m(s)) / m(t) (MDLM, eq. 7)."""
        m_t, m_s = float(self.mask_rate(torch.tensor(t))), float(self.mask_rate(torch.tensor(s)))
        p_reveal = 1.0 if m_t <= 0 else (m_t - m_s) / m_t
        return self.is_masked(noisy) & (u_reveal < p_reveal)

    @staticmethod
    def draw(logits: list[Tensor], u: Tensor) -> Tensor:
        """A category per column from softmax(logits), by inverse CDF of u (so a per-sample stream decides it)."""
        return torch.stack([MaskedDiffusion.draw_column(lg, u[:, j]) for j, lg in enumerate(logits)], 1)

    @staticmethod
    def draw_column(logits: Tensor, u: Tensor) -> Tensor:
        """Categories of one column, (rows,), from its logits (rows, K) and u (rows,), by inverse CDF."""
        cdf = torch.softmax(logits.double(), dim=1).cumsum(1)
        idx = torch.searchsorted(cdf, u.unsqueeze(1).double() * cdf[:, -1:]).squeeze(1)
        return idx.clamp_max(logits.shape[1] - 1)
