"""Training of the joint model: Gaussian denoising loss on the numbers plus masked-diffusion cross-entropy on
the categories, one shared time t per row (TabDDPM's sum of the two losses, Kotelnikov et al. 2023, eq. 4,
with absorbing instead of multinomial noise).

A row here is a pair (numbers, tokens) whose categorical part needs its own corruption and loss, so this
module supplies the step's loss (`joint_loss`) and hands it to the toolkit's one training loop
(noisecraft.runs.loop), which owns the optimiser, learning-rate schedule, clipping, EMA, budget and NaN stop.

With `DPSGD` the same loop runs DP-SGD (Abadi et al. 2016, Alg. 1) through Opacus: each step's rows are a
Poisson sample (every row in with probability q, as the subsampled-Gaussian accountant assumes), the MLP is
wrapped in Opacus' GradSampleModule for per-row gradients and the optimiser in its DPOptimizer, which clips
each row's gradient to C and adds N(0, (sigma C)^2) to their sum. The loop's own global clipping is then
off (the per-row clipping replaces it); the EMA of the noisy iterates is post-processing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from noisecraft.core.losses import DenoisingLoss
from noisecraft.runs.config import TrainConfig
from noisecraft.runs.ema import EMA
from noisecraft.runs.loop import Loop, LoopState, batch_indices, make_optimizer, step_generator
from noisecraft.runs.threads import use_threads
from noisecraft.tabular.network import JointNet, NumericHead


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD's settings: noise multiplier sigma, per-row clipping norm C, Poisson sample rate q."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float


@dataclass
class FitStats:
    steps: int
    seconds: float
    loss: float  # mean total loss over the last 10% of steps
    numeric_loss: float
    categorical_loss: float


def joint_loss(head: NumericHead, loss: DenoisingLoss, x_num: Tensor, tokens: Tensor,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(numeric loss, categorical loss) per row for one batch, at times t ~ p(t) shared by both parts."""
    net: JointNet = head.net
    batch = tokens.shape[0]
    t = loss.sample_t(batch, generator)
    eps = torch.randn(x_num.shape, generator=generator)
    u = torch.rand(tokens.shape, generator=generator)
    noisy = net.discrete.forward_mask(tokens, t, u)
    if net.num_dim:
        num = loss.per_sample(loss.denoiser(head), x_num, cond=noisy, t=t, eps=eps)
    else:  # an all-categorical table: only the category logits are learned
        head(x_num, t.float(), noisy)
        num = torch.zeros(batch)
    cat = net.discrete.loss(head.logits, tokens, noisy)
    return num, cat


def poisson_batch(n: int, sample_rate: float, generator: torch.Generator) -> Tensor:
    """Indices of a Poisson sample: each of n rows independently with probability `sample_rate`."""
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).squeeze(1)


def fit_joint(net: JointNet, loss: DenoisingLoss, x_num: Tensor, tokens: Tensor, cfg: TrainConfig,
              progress: bool = True, dp: DPSGD | None = None) -> tuple[EMA, FitStats]:
    """Train `net` on rows (x_num, tokens) for cfg.max_steps and/or cfg.minutes, with DP-SGD when `dp` is
    given; returns the EMA (of the unwrapped network's parameter names) and stats."""
    threads = use_threads(cfg.num_threads)  # one per CPU other processes leave free (runs.threads)
    if progress:
        print(threads, flush=True)
    n = tokens.shape[0]
    torch.manual_seed(cfg.seed)
    head = NumericHead(net)
    history: list[tuple[float, float]] = []

    optimizer = make_optimizer(cfg, net)
    if dp is not None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        cfg = cfg.model_copy(update={"grad_clip": None})
        net.mlp = GradSampleModule(net.mlp)
        optimizer = DPOptimizer(optimizer, noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
                                expected_batch_size=max(1, round(dp.sample_rate * n)), loss_reduction="mean",
                                generator=torch.Generator().manual_seed(cfg.seed + 0x5EED))

    def step_loss(step: int) -> Tensor:
        generator = step_generator(cfg.seed, step)
        if dp is None:
            idx = batch_indices(n, cfg.batch_size, step, cfg.seed)
        else:
            idx = poisson_batch(n, dp.sample_rate, generator)
            if idx.numel() == 0:  # probability (1 - q)^n: the step is the noise alone, from a zero gradient
                idx = torch.zeros(1, dtype=torch.long)
                num, cat = joint_loss(head, loss, x_num[idx], tokens[idx].long(), generator)
                (0.0 * (num + cat)).mean().backward()
                return torch.zeros(())
        num, cat = joint_loss(head, loss, x_num[idx], tokens[idx].long(), generator)
        total = (num + cat).mean()
        if torch.isfinite(total):
            total.backward()
        history.append((float(num.detach().mean()), float(cat.detach().mean())))
        return total.detach()

    ema = EMA(net, cfg.ema_decay, cfg.ema_power)
    loop = Loop(cfg, net, optimizer, ema, step_loss, items_per_step=cfg.batch_size)
    try:
        state = loop.run(LoopState(), progress=progress, desc="fit table")
    finally:
        if dp is not None:
            net.mlp = net.mlp.to_standard_module()
            ema.shadow = {k.replace("mlp._module.", "mlp."): v for k, v in ema.shadow.items()}
    net.eval()
    tail = history[-max(1, len(history) // 10):] or [(math.nan, math.nan)]
    num_l = sum(h[0] for h in tail) / len(tail)
    cat_l = sum(h[1] for h in tail) / len(tail)
    return ema, FitStats(state.step, state.elapsed, num_l + cat_l, num_l, cat_l)
