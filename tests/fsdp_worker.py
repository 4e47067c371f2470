"""Run by tests/test_train_fsdp.py under torchrun: a tiny run trained with the sharding named on the command line."""

from __future__ import annotations

import json
import sys

from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.train import train


def tiny_config(sharding: str, steps: int = 50, image: bool = False):
    if image:
        cfg = preset_config("digits", "edm", max_steps=steps, batch_size=8, checkpoint_every=steps, log_every=5)
        model = NetConfig(block_channels=[16, 32], attention=[False, True], layers_per_block=1)
    else:
        cfg = preset_config("moons", "v", max_steps=steps, batch_size=16, checkpoint_every=25, log_every=5)
        model = NetConfig(width=32, depth=2)
    train_cfg = cfg.train.model_copy(update={"sharding": sharding, "ema_decay": 0.9, "lr": 5e-3})
    return cfg.model_copy(update={"model": model, "train": train_cfg})


if __name__ == "__main__":
    result = train(tiny_config(sys.argv[2], image=sys.argv[3] == "image"), sys.argv[1], progress=False)
    params = list(result.model.parameters())
    local = sum(getattr(p, "to_local", lambda p=p: p)().numel() for p in params)  # this process's share
    whole = sum(p.numel() for p in params)
    with open(f"{sys.argv[1]}/shares.jsonl", "a") as f:
        f.write(json.dumps({"local": local, "whole": whole, "ema": sum(
            getattr(v, "to_local", lambda v=v: v)().numel() for v in result.ema.shadow.values())}) + "\n")
