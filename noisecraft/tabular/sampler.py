"""Joint reverse process of a mixed table: the numbers follow a registered solver over the whole time grid, and
the categories take one absorbing-state reveal step per grid interval, from the network evaluation the solver
makes at the interval's start (x_t, t, tokens_t) (TabDDPM's joint sampler, Kotelnikov et al. 2023, sec. 3;
MDLM reveal step, Sahoo et al. 2024, eq. 7).

The solver is the toolkit's own, called once on the whole grid (every solver is a pure function of a grid), so
multistep solvers such as DPM-Solver++(2M) keep their history, and the last step is the toolkit's `final_step`;
nothing of the step arithmetic is rewritten here. The reveal steps ride on the solver's evaluations: the
tokens are z_{t_k} until the solver first evaluates at (or below) the next grid time t_{k+1}, and then that step
z_{t_k} -> z_{t_{k+1}} is taken with the logits of the latest evaluation at t_k (the interval's start point; for
Heun, the corrected one). A solver of one evaluation per step (ddpm, ddim, euler, dpm++2m...) and the
singlestep DPM-Solvers (whose midpoint sees z_{t_k}) thus step exactly as a per-interval joint sampler; Heun's
end-point evaluation sees z_{t_{k+1}}. Conditioning on fixed column values is
inpainting: a fixed category is a token never masked, a fixed number replaces the denoiser's x0-estimate in its
coordinate (the replacement method of Song et al. 2021, appendix I.2, on x0_hat).

Two reveal rules. "independent" is MDLM's step: each masked token is revealed with probability (m(t) - m(s)) /
m(t), each drawn from its own marginal given the row, so two tokens revealed in one step lose their dependence.
"one_per_step" (`one_at_a_time`, the default of `TabularConfig`) keeps MDLM's proposals but reveals at most one
per row and step, unless the steps left would not reach every token: each token is then drawn given the ones
revealed before it, the any-order autoregressive reading of absorbing diffusion (Zheng et al. 2024, "first-hitting"
sampler; Shi et al. 2024). Masks are drawn independently of the data, so revealing later or one at a time leaves
the network's conditionals p(x_0 | x_t, z_t) exact: the categories carry no discretisation error of their own,
which lets a few-step grid keep their joint distribution. "target_first" (the default) is "one_per_step" with
one token, the target's, revealed at the first step for every row, from the first evaluation (numbers pure noise,
every token masked: the model's marginal of the target); the rest of the row, numbers included, is then drawn
given it, p(y) p(x | y): the class-conditional sampling of TabDDPM (Kotelnikov et al. 2023, sec. 3), with the
class drawn from the model rather than the data. It is another order of the same any-order factorisation.

Why the joint ODE is a valid sampler: the forward process noises numbers and masks tokens independently, so
the generator of (x, z) is the sum of the two parts' generators; the probability-flow drift for x given z
(score grad_x log p_t(x, z)) and the reversed masking jumps each reproduce their part of dp_t/dt, and the sum
keeps p_t(x, z) (the same argument as for the reverse SDE of TabDDPM).

Per-sample seeding (DESIGN.md section 4): the Gaussian noise and the uniforms that reveal and draw
categories come from per-row streams, so row i depends only on (seed, i) and its conditions, whatever the
batch size rows are sampled in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy.special import ndtr
from torch import Tensor

from noisecraft.core.losses import DenoisingLoss
from noisecraft.core.noise import SampleNoise, base_seed
from noisecraft.core.timesteps import make_grid, step_aware_range
from noisecraft.solvers import final_step, get_solver, prior_sample
from noisecraft.tabular.discrete import MaskedDiffusion
from noisecraft.tabular.network import CategoryLogits, DenseLogits, JointNet, NumericHead

#: solvers that evaluate every grid time t_k at the start of the interval from it, before any time below it
#: (the reveal steps need that evaluation); adaptive, corrector and consistency solvers do not
JOINT_SOLVERS: tuple[str, ...] = ("ddpm", "ddim", "euler", "heun", "euler_maruyama", "dpm2s", "dpm++2s", "dpm++1m",
                                  "dpm++2m", "dpm++3m")
#: grids: the named grids over the schedule's whole range, and "step_aware", uniform in log-SNR over the range
#: that the evaluations spend (noisecraft.core.timesteps.step_aware_range, docs/few_steps.md)
JOINT_GRIDS: tuple[str, ...] = ("uniform", "log_snr", "karras", "step_aware")
#: how a reveal step picks the tokens it draws: "independent", each masked token with probability
#: (m(t) - m(s)) / m(t) (MDLM); "one_per_step", at most one of those per row (see `one_at_a_time`);
#: "target_first", one_per_step after the `first` token (the target's) is drawn at the first step
REVEALS: tuple[str, ...] = ("independent", "one_per_step", "target_first")
#: rows per network call: large enough that a call's fixed costs vanish, small enough that its activations
#: (rows x width floats per layer) stay in a few MB of cache-friendly memory
DEFAULT_BATCH = 4096


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

    def rows(self, start: int, stop: int) -> Conditions:
        """The conditions of rows start .. stop - 1 (a batch of a larger draw)."""
        part = Conditions.__new__(Conditions)
        part.num_mask, part.num_values = self.num_mask[start:stop], self.num_values[start:stop]
        part.tokens = self.tokens[start:stop]
        part.allowed = {j: mask[start:stop] for j, mask in self.allowed.items()}
        return part

    def mask_column(self, j: int, logits: Tensor, rows: Tensor) -> Tensor:
        """Column j's logits for `rows`, with the categories those rows may not take set to -inf."""
        if j not in self.allowed:
            return logits
        return logits.masked_fill(~self.allowed[j][rows], float("-inf"))

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


class _Reveals:
    """The categorical chain z_{t_0} -> z_{t_1} -> ... -> z_0 along the grid, one reveal step per interval,
    each from the logits of the latest evaluation at the interval's start time (MDLM, Sahoo et al. 2024, eq. 7)."""

    def __init__(self, discrete: MaskedDiffusion, times: Tensor, tokens: Tensor, conditions: Conditions,
                 uniforms: _Uniforms, reveal: str = "one_per_step", first: int | None = None) -> None:
        self.discrete, self.conditions, self.uniforms, self.reveal = discrete, conditions, uniforms, reveal
        self.first = first if reveal == "target_first" else None
        self.times = [float(t) for t in times] + [0.0]
        self.k = 0  # the tokens are z at times[k]
        self.tokens = tokens
        self.logits: CategoryLogits | DenseLogits | None = None  # of the latest evaluation at times[k]

    def advance_to(self, t: float) -> None:
        """Before an evaluation at t: reveal z_{t_k} -> z_{t_{k+1}} once t reaches the next grid time t_{k+1}, so
        that a step's inner evaluations (a midpoint) see the step's own tokens z_{t_k}."""
        last = len(self.times) - 2  # the index of t_min; its step, to 0, is taken after the final evaluation
        while self.k < last and (t < self.times[self.k + 1] or _same_time(t, self.times[self.k + 1])):
            self.step()

    def seen(self, t: float, logits: CategoryLogits | DenseLogits) -> None:
        if _same_time(t, self.times[self.k]):
            self.logits = logits

    def step(self) -> None:
        if self.logits is None:
            raise RuntimeError(f"no network evaluation at t={self.times[self.k]:.6g} to reveal categories from; "
                               f"the solver skipped a grid time")
        t, s = self.times[self.k], self.times[self.k + 1]
        u_reveal, u_draw = self.uniforms.draw(), self.uniforms.draw()
        if self.reveal == "independent" or not self.discrete.num_columns:
            chosen = self.discrete.reveal_mask(self.tokens, t, s, u_reveal)
        elif self.k == 0 and self.first is not None:  # the target's token alone, for every row
            chosen = torch.zeros_like(self.tokens, dtype=torch.bool)
            chosen[:, self.first] = self.discrete.is_masked(self.tokens)[:, self.first]
        else:
            chosen = one_at_a_time(self.discrete, self.tokens, t, s, u_reveal, len(self.times) - 1 - self.k)
        # Which tokens reveal does not depend on the logits, so each column's are formed and drawn from only for
        # the rows that reveal it: every token is drawn once, not at every step.
        revealed = self.tokens.clone()
        for j in range(self.discrete.num_columns):
            rows = chosen[:, j].nonzero().squeeze(1)
            if rows.numel():
                logits = self.conditions.mask_column(j, self.logits.column(j, rows), rows)
                revealed[rows, j] = self.discrete.draw_column(logits, u_draw[rows, j])
        self.tokens = self.conditions.apply_tokens(revealed)
        self.k += 1
        self.logits = None


def _same_time(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def one_at_a_time(discrete: MaskedDiffusion, tokens: Tensor, t: float, s: float, u: Tensor, left: int) -> Tensor:
    """Which masked tokens to reveal from t to s: those MDLM's step would reveal (u < (m(t) - m(s)) / m(t)), but at
    most one per row, the one of smallest u, unless fewer than `left` reveal steps (this one included) remain for
    the row's masked tokens, then as many as it takes, so that every token is drawn by the last step."""
    masked = discrete.is_masked(tokens)
    m_t, m_s = float(discrete.mask_rate(torch.tensor(t))), float(discrete.mask_rate(torch.tensor(s)))
    p = 1.0 if m_t <= 0 else (m_t - m_s) / m_t
    u = torch.where(masked, u.to(torch.float64), torch.inf)
    proposed = (u < p).sum(1)
    need = (masked.sum(1) - (left - 1)).clamp_min(0)
    count = torch.maximum(proposed.clamp_max(1), need)
    rank = u.argsort(1).argsort(1)
    return masked & (rank < count.unsqueeze(1))


def joint_grid(loss: DenoisingLoss, steps: int, solver: str, grid: str) -> Tensor:
    """The time grid of `steps` intervals: a named grid over the whole range, or "step_aware" (uniform in log-SNR
    over the range the solver's evaluations spend, capped at its longest accurate step)."""
    if grid not in JOINT_GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {JOINT_GRIDS}")
    schedule = loss.schedule
    if grid != "step_aware":
        return make_grid(schedule, steps, grid)
    spec = get_solver(solver)
    t_min, t_max = step_aware_range(schedule, steps * spec.evaluations_per_step(),
                                    spec.max_log_snr_step and steps * spec.max_log_snr_step)
    return make_grid(schedule, steps, "log_snr", t_min, t_max)


@torch.no_grad()
def sample_rows(net: JointNet, loss: DenoisingLoss, n: int, conditions: Conditions, steps: int = 100,
                solver: str = "ddpm", seed: int = 0, grid: str = "uniform", batch_size: int = DEFAULT_BATCH,
                reveal: str = "independent", first: int | None = None) -> tuple[Tensor, Tensor]:
    """n rows (numeric scores (n, d_num), tokens (n, d_tok)) from the joint reverse process, `batch_size` rows
    per network call; row i depends only on (seed, i) and its conditions. The defaults here are the sampler of
    models saved before the fast default; `TabularConfig` holds the default. `first`: the token column that
    "target_first" reveals at the first step (None: as "one_per_step")."""
    if solver not in JOINT_SOLVERS:
        raise ValueError(f"solver {solver!r} cannot drive the joint process; expected one of {JOINT_SOLVERS}")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    if reveal not in REVEALS:
        raise ValueError(f"unknown reveal rule {reveal!r}; expected one of {REVEALS}")
    times = joint_grid(loss, steps, solver, grid)
    root = torch.Generator().manual_seed(int(seed))
    gauss_seed, uniform_seed = base_seed(root), base_seed(root)  # what SampleNoise.from_generator draws, in order
    parts = [_sample_batch(net, loss, conditions.rows(start, min(start + batch_size, n)), times, solver,
                           SampleNoise(gauss_seed, min(batch_size, n - start), first=start),
                           SampleNoise(uniform_seed, min(batch_size, n - start), first=start), reveal, first)
             for start in range(0, n, batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _sample_batch(net: JointNet, loss: DenoisingLoss, conditions: Conditions, times: Tensor, solver: str,
                  gauss: SampleNoise, uniform_noise: SampleNoise, reveal: str,
                  first: int | None = None) -> tuple[Tensor, Tensor]:
    """One batch of rows: the solver over the whole grid, the reveal steps on its evaluations."""
    n, discrete, schedule = gauss.batch, net.discrete, loss.schedule
    spec = get_solver(solver)
    head = NumericHead(net, lazy=True)
    denoiser = loss.denoiser(head)
    start = conditions.apply_tokens(discrete.mask_ids.expand(n, -1).clone())
    chain = _Reveals(discrete, times, start, conditions, _Uniforms(uniform_noise, discrete.num_columns), reveal,
                     first)
    x = prior_sample(schedule, (n, net.num_dim), gauss, torch.float32, "cpu", float(times[0]))

    def denoise(x_t: Tensor, t: float) -> Tensor:
        t = float(t)
        chain.advance_to(t)
        x0 = conditions.apply_numeric(denoiser(x_t, t, chain.tokens))
        chain.seen(t, head.logits)
        return x0

    if net.num_dim:
        x = spec.fn(denoise, schedule, x, times, gauss, **spec.options) if len(times) > 1 else x
        x = final_step(denoise, schedule, x, float(times[-1]), True)
    else:  # no numbers: one evaluation per grid time for the logits alone
        _logits_only(head, chain, times, n)
    chain.step()  # t_min -> 0 from the last evaluation: every token left masked is drawn
    return x, chain.tokens


def _logits_only(head: Callable, chain: _Reveals, times: Tensor, n: int) -> None:
    empty = torch.zeros(n, 0)
    for t in times.tolist():
        chain.advance_to(t)
        head(empty, torch.full((n,), t, dtype=torch.float32), chain.tokens)
        chain.seen(t, head.logits)
