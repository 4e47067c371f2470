"""Run by tests/test_train_distributed.py under torchrun: a few steps of a tiny MLP; each process then
writes its own final weights and what it saw, so the test compares processes with each other and with
a single process trained on the same global batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.train import train


def tiny_config():
    cfg = preset_config("moons", "v", max_steps=3, batch_size=16, checkpoint_every=2, log_every=1)
    return cfg.model_copy(update={"model": NetConfig(width=16, depth=1)})


if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    result = train(tiny_config(), run_dir, progress=False)
    from accelerate import PartialState  # the state the trainer set up

    state = PartialState()
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{state.process_index}.safetensors"))
    (out / f"rank{state.process_index}.json").write_text(json.dumps(
        {"world": state.num_processes, "type": str(state.distributed_type), "backend": state.backend}))
