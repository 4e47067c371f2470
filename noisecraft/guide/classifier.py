"""A noise-conditional classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

The classifier sees what a denoiser sees: x_t scaled to unit variance, c_in x_t / alpha with
c_in = 1 / sqrt(sigma~^2 + sigma_data^2), and the noise level c_noise = log(sigma~) / 4 (Karras et al. 2022,
Table 1), so one network serves every schedule. Training draws t with log-SNR uniform over the schedule's
range (the range a sampler's default grid walks) and minimises cross-entropy on noisy training data.
Small: a conv net for images, an MLP for vectors, both with the noise level added after the first layer.
Weights are safetensors plus a JSON config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import FLOAT64, as_time, expand_like, per_time
from noisecraft.nets.embedding import NoiseLevelEmbedding


class NoisyClassifier(nn.Module):
    """logits(x_in, c_noise) for images (batch, C, H, W) or vectors (batch, D)."""

    def __init__(self, sample_shape: tuple[int, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.sample_shape, self.num_classes, self.width = tuple(sample_shape), int(num_classes), int(width)
        self.embed = NoiseLevelEmbedding(width, scale=250.0)  # c_noise spans about -1.5 ... 1.1
        act = nn.SiLU()
        if len(self.sample_shape) == 3:
            self.stem = nn.Conv2d(self.sample_shape[0], width, 3, padding=1)
            self.body = nn.Sequential(act, nn.Conv2d(width, width, 3, padding=1), act, nn.AvgPool2d(2),
                                      nn.Conv2d(width, width, 3, padding=1), act, nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        elif len(self.sample_shape) == 1:
            self.stem = nn.Linear(self.sample_shape[0], width)
            self.body = nn.Sequential(act, nn.Linear(width, width), act, nn.Linear(width, width), act)
        else:
            raise ValueError(f"the classifier takes images (C, H, W) or vectors (D,), got samples of shape {sample_shape}")
        self.head = nn.Linear(width, self.num_classes)

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        h = self.stem(x)
        emb = self.embed(noise_level.expand(x.shape[0]))
        h = h + emb.reshape(emb.shape + (1,) * (h.ndim - 2))
        return self.head(self.body(h))


@dataclass
class ClassifierModel:
    """A trained noisy classifier with the schedule and sigma_data it was trained under."""

    net: NoisyClassifier
    schedule: Schedule
    sigma_data: float = 0.5

    def inputs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = as_time(t, x.shape[0])
        alpha = expand_like(per_time(self.schedule.alpha, t), x)
        sigma_tilde = per_time(self.schedule.sigma_tilde, t)
        c_in = expand_like(1.0 / torch.sqrt(sigma_tilde**2 + self.sigma_data**2), x)
        return c_in * x / alpha, (0.25 * torch.log(sigma_tilde)).to(device=x.device, dtype=x.dtype)

    def logits(self, x: Tensor, t: float | Tensor) -> Tensor:
        x_in, level = self.inputs(x, as_time(t, x.shape[0]))
        return self.net(x_in.to(next(self.net.parameters()).dtype), level.to(next(self.net.parameters()).dtype))

    def log_prob(self, x: Tensor, t: float | Tensor, labels: Tensor) -> Tensor:
        """log p(y | x_t, t), shape (batch,): the `log_prob` that classifier guidance takes."""
        logp = torch.log_softmax(self.logits(x, t), dim=1)
        return logp.gather(1, labels.long().reshape(-1, 1).to(logp.device))[:, 0].to(x.dtype)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        from noisecraft.io import write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "model.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(tmp))
        tmp.replace(folder / "model.safetensors")
        config = {"sample_shape": list(self.net.sample_shape), "num_classes": self.net.num_classes,
                  "width": self.net.width, "sigma_data": self.sigma_data, "schedule": self.schedule.to_config()}
        write_text_atomic(folder / "config.json", json.dumps(config, indent=1))
        return folder


def load_classifier(folder: str | Path) -> ClassifierModel:
    """A classifier written by `ClassifierModel.save` (folder with config.json and model.safetensors)."""
    from safetensors.torch import load_file

    from noisecraft.core.schedules import schedule_from_config

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} holds no noisy classifier: expected config.json and model.safetensors "
                         "(made by noisecraft.guide.classifier.train_classifier)")
    config = json.loads((folder / "config.json").read_text())
    net = NoisyClassifier(tuple(config["sample_shape"]), config["num_classes"], config["width"])
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return ClassifierModel(net.eval(), schedule_from_config(config["schedule"]), config["sigma_data"])


def sample_log_snr_times(schedule: Schedule, n: int, generator: torch.Generator) -> Tensor:
    """n times with log-SNR uniform between lambda(t_max) and lambda(t_min)."""
    lo, hi = float(schedule.log_snr(schedule.t_max)), float(schedule.log_snr(schedule.t_min))
    lam = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=FLOAT64)
    return schedule.t_from_log_snr(lam).clamp(schedule.t_min, schedule.t_max)


def train_classifier(x: Tensor, labels: Tensor, schedule: Schedule, steps: int = 2000, batch_size: int = 256,
                     lr: float = 2e-3, width: int = 64, sigma_data: float = 0.5, seed: int = 0,
                     progress: bool = False) -> ClassifierModel:
    """Cross-entropy on x_t = alpha x + sigma eps with t drawn log-SNR-uniform; AdamW, cosine decay."""
    from tqdm.auto import tqdm

    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"got {x.shape[0]} samples but {labels.shape[0]} labels")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    num_classes = int(labels.max()) + 1
    model = ClassifierModel(NoisyClassifier(tuple(x.shape[1:]), num_classes, width), schedule, sigma_data)
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.net.train()
    for _ in tqdm(range(steps), disable=not progress, desc="noisy classifier", unit="step"):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        t = sample_log_snr_times(schedule, batch_size, g)
        x0 = x[idx].float()
        alpha = expand_like(schedule.alpha(t), x0)
        sigma = expand_like(schedule.sigma(t), x0)
        x_t = alpha * x0 + sigma * torch.randn(x0.shape, generator=g)
        loss = nn.functional.cross_entropy(model.logits(x_t, t), labels[idx].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.net.eval()
    return model


__all__ = ["ClassifierModel", "NoisyClassifier", "load_classifier", "sample_log_snr_times", "train_classifier"]
