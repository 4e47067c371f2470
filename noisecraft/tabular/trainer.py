"""The training loop of the joint model: Gaussian denoising loss on the numbers plus masked-diffusion
cross-entropy on the categories, one shared time t per row (TabDDPM's sum of the two losses, Kotelnikov et
al. 2023, eq. 4, with absorbing instead of multinomial noise).

The shared trainer (noisecraft.runs.train) drives one `DenoisingLoss` over a tensor dataset; a row here is a
pair (numbers, tokens) whose categorical part needs its own corruption and loss, so this is a small
focused loop. It reuses the trainer's pieces rather than rewriting them: the learning-rate schedule and
the seeded batch order (`learning_rate`, `batch_indices`), `TrainConfig`, the EMA, and the loss's own
`sample_t` and `per_sample` (the numeric regression target comes from the parameterization module).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from noisecraft.core.losses import DenoisingLoss
from noisecraft.runs.config import TrainConfig
from noisecraft.core.noise import stream_generator
from noisecraft.runs.ema import EMA
from noisecraft.runs.train import batch_indices, learning_rate
from noisecraft.tabular.network import JointNet, NumericHead


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


def fit_joint(net: JointNet, loss: DenoisingLoss, x_num: Tensor, tokens: Tensor, cfg: TrainConfig,
              progress: bool = True) -> tuple[EMA, FitStats]:
    """Train `net` on rows (x_num, tokens) for cfg.max_steps and/or cfg.minutes; returns the EMA and stats."""
    from tqdm.auto import tqdm

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    n = tokens.shape[0]
    torch.manual_seed(cfg.seed)
    head = NumericHead(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema_decay, cfg.ema_power)
    budget = None if cfg.minutes is None else 60.0 * cfg.minutes
    bar = tqdm(total=cfg.max_steps, disable=not progress, unit="step", desc="fit table", dynamic_ncols=True)
    start, step = time.perf_counter(), 0
    history: list[tuple[float, float]] = []
    net.train()
    while True:
        elapsed = time.perf_counter() - start
        if (cfg.max_steps is not None and step >= cfg.max_steps) or (budget is not None and elapsed >= budget):
            break
        frac = max(step / cfg.max_steps if cfg.max_steps else 0.0, elapsed / budget if budget else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, frac)
        g = stream_generator(cfg.seed, step + 1)
        idx = batch_indices(n, cfg.batch_size, step, cfg.seed)
        num, cat = joint_loss(head, loss, x_num[idx], tokens[idx], g)
        total = (num + cat).mean()
        if not torch.isfinite(total):
            raise FloatingPointError(f"the loss became {float(total)} at step {step}; expected a finite number "
                                     "(try a lower learning rate)")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        ema.update(net)
        history.append((float(num.detach().mean()), float(cat.detach().mean())))
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{sum(history[-1]):.4f}")
    bar.close()
    net.eval()
    tail = history[-max(1, len(history) // 10):] or [(math.nan, math.nan)]
    num_l = sum(h[0] for h in tail) / len(tail)
    cat_l = sum(h[1] for h in tail) / len(tail)
    return ema, FitStats(step, time.perf_counter() - start, num_l + cat_l, num_l, cat_l)
