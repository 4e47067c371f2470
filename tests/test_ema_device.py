"""EMA shadows follow the model when it moves device after the EMA was made (found on the GPU check)."""

from __future__ import annotations

import torch

from noisecraft.runs.ema import EMA


def test_shadow_moves_with_the_model():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    model.to("meta")  # stands in for .cuda(): a device other than the shadows' CPU
    ema.update(model)
    assert all(s.device.type == "meta" for s in ema.state_dict().values())
