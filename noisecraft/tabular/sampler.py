"""Joint reverse process of a mixed table: per interval of the time grid, one Gaussian step for the numbers by a
registered single-step solver, and one absorbing-state reveal step for the categories, from the same network
evaluation, the solver's first, at (x_t, t, tokens_t) (TabDDPM's joint sampler, Kotelnikov et al. 2023, sec. 3;
MDLM reveal step, Sahoo et al. 2024).

The Gaussian step is the toolkit's own solver, called on the two-point grid [t_k, t_{k+1}] (every solver is a
pure function of a grid), and the last step is the toolkit's `final_step`; nothing of the step arithmetic is
rewritten here. Conditioning on fixed column values is inpainting: a fixed category is a token never masked,
a fixed number replaces the denoiser's x0-estimate in its coordinate (the replacement method of Song et al.
2021, appendix I.2, on x0_hat).

Per-sample seeding (DESIGN.md section 4): the Gaussian noise and the uniforms that reveal and draw
categories come from per-row streams, so row i depends only on (seed, i) and its conditions.
"""

from __future__ import annotations

import torch
from scipy.special import ndtr
from torch import Tensor

from noisecraft.core.losses import DenoisingLoss
from noisecraft.core.noise import SampleNoise
from noisecraft.core.timesteps import make_grid
from noisecraft.solvers import final_step, get_solver, prior_sample
from noisecraft.tabular.network import JointNet, NumericHead

#: solvers whose step on one interval uses no history from earlier intervals
SINGLE_STEP_SOLVERS: tuple[str, ...] = ("ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpm2s", "dpm++2s")


class Conditions:
    """Fixed values per row: numeric scores (mask, values) of shape (n, d_num) and tokens (n, d_tok), -1 = free;
    and per token column j, optionally, the categories a row may take (`allowed[j]`, bool (n, K_j)): the others'
    logits are set to -inf, so the draw is from the model's conditional over the allowed categories."""

    def __init__(self, n: int, num_dim: int, tok_dim: int) -> None:
        self.num_mask = torch.zeros(n, num_dim, dtype=torch.bool)
        self.num_values = torch.zeros(n, num_dim)
        self.tokens = torch.full((n, tok_dim), -1, dtype=torch.long)
        self.allowed: dict[int, Tensor] = {}

    def allow(self, j: int, mask: Tensor) -> None:
        """Restrict token column j to the categories where `mask` (K_j,) or (n, K_j) is True."""
        mask = mask.expand(self.tokens.shape[0], -1) if mask.ndim == 1 else mask
        self.allowed[j] = self.allowed[j] & mask if j in self.allowed else mask.clone()

    def mask_logits(self, logits: list[Tensor]) -> list[Tensor]:
        if not self.allowed:
            return logits
        return [lg.masked_fill(~self.allowed[j], float("-inf")) if j in self.allowed else lg
                for j, lg in enumerate(logits)]

    def apply_tokens(self, tokens: Tensor) -> Tensor:
        return torch.where(self.tokens >= 0, self.tokens, tokens)

    def apply_numeric(self, x0: Tensor) -> Tensor:
        return torch.where(self.num_mask, self.num_values.to(x0.dtype), x0)


class _Uniforms:
    """U(0, 1) draws of shape (n, k) from per-row normal streams, through the normal CDF."""

    def __init__(self, noise: SampleNoise, k: int) -> None:
        self.noise, self.k = noise, k

    def draw(self) -> Tensor:
        if self.k == 0:
            return torch.zeros(self.noise.batch, 0, dtype=torch.float64)
        return torch.from_numpy(ndtr(self.noise.randn((self.k,), torch.float64, "cpu").numpy()))


@torch.no_grad()
def sample_rows(net: JointNet, loss: DenoisingLoss, n: int, conditions: Conditions, steps: int = 100,
                solver: str = "ddpm", seed: int = 0, grid: str = "uniform") -> tuple[Tensor, Tensor]:
    """n rows (numeric scores (n, d_num), tokens (n, d_tok)) from the joint reverse process."""
    if solver not in SINGLE_STEP_SOLVERS:
        raise ValueError(f"solver {solver!r} cannot step the joint process one interval at a time; "
                         f"expected one of {SINGLE_STEP_SOLVERS}")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    spec = get_solver(solver)
    discrete = net.discrete
    head = NumericHead(net)
    denoiser = loss.denoiser(head)
    schedule = loss.schedule
    times = make_grid(schedule, steps, grid)
    root = torch.Generator().manual_seed(int(seed))
    gauss = SampleNoise.from_generator(root, n)
    uniforms = _Uniforms(SampleNoise.from_generator(root, n), discrete.num_columns)
    x = prior_sample(schedule, (n, net.num_dim), gauss, torch.float32, "cpu", float(times[0]))
    tokens = conditions.apply_tokens(discrete.mask_ids.expand(n, -1).clone())

    seen: list[tuple[float, list[Tensor]]] = []  # (t, category logits) of the current step's evaluations

    def denoise(x_t: Tensor, t: float) -> Tensor:
        x0 = conditions.apply_numeric(denoiser(x_t, t, tokens))
        seen.append((t, head.logits))
        return x0

    def logits_at(x_t: Tensor, t: float) -> list[Tensor]:
        """The category logits at the step's start (x_t, t, tokens_t), which its reveal step z_t -> z_s needs
        (MDLM, Sahoo et al. 2024, eq. 7). Every single-step solver evaluates there first (DDPM Alg. 2, DDIM
        eq. 12, Euler on Song et al. 2021 eq. 13, Heun: Karras et al. 2022 Alg. 1, DPM-Solver-2 and ++(2S):
        Lu et al. 2022a/b Alg. 1); heun, dpm2s and dpm++2s then evaluate again, at t_{k+1} or a midpoint, so
        the step's first evaluation is used, not the latest. One more call only where the step made none at t
        (a table with no numeric part)."""
        if seen and seen[0][0] == t:
            return seen[0][1]
        head(x_t, torch.full((n,), t, dtype=torch.float32), tokens)
        return head.logits

    for k in range(len(times) - 1):
        t, s = float(times[k]), float(times[k + 1])
        seen.clear()
        x_s = spec.fn(denoise, schedule, x, times[k:k + 2], gauss, **spec.options) if net.num_dim else x
        tokens = conditions.apply_tokens(discrete.reverse_step(tokens, conditions.mask_logits(logits_at(x, t)), t, s,
                                                               uniforms.draw(), uniforms.draw()))
        x = x_s
    t_last = float(times[-1])
    seen.clear()
    x_0 = final_step(denoise, schedule, x, t_last, True) if net.num_dim else x
    tokens = discrete.reverse_step(tokens, conditions.mask_logits(logits_at(x, t_last)), t_last, 0.0, uniforms.draw(),
                                   uniforms.draw())
    return x_0, conditions.apply_tokens(tokens)
