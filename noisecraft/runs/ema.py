"""Exponential moving average of weights with warm-up (Polyak & Juditsky 1992; Song & Ermon 2020, sec. 3.4).

decay_k = min(decay, 1 - (1 + k)^(-power)) at update k: early updates average over a window that
grows with training (power 2/3 is the "power" EMA of Karras et al. 2024 applied as a warm-up); power 0
turns the warm-up off. The shadow weights are kept in float32 whatever the training precision.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of a module's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float = 0.999, power: float = 2 / 3) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if power < 0:
            raise ValueError(f"EMA warm-up power must be >= 0, got {power}")
        self.decay, self.power, self.updates = decay, power, 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        if self.power == 0:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + self.updates) ** (-self.power))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        state = model.state_dict()
        for key, shadow in self.shadow.items():
            value = state[key].detach()
            if shadow.device != value.device:  # the model moved (e.g. to the GPU) after the EMA was made
                shadow = self.shadow[key] = shadow.to(value.device)
            shadow.lerp_(value.float(), 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:3]}; expected the model's floating-point tensors")
        for key in self.shadow:
            self.shadow[key].copy_(state[key])
        self.updates = updates

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones."""
        state = model.state_dict()
        for key, shadow in self.shadow.items():
            state[key].copy_(shadow.to(state[key].dtype))
