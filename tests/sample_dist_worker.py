"""Run by tests/test_sample_distributed.py under torchrun: every process samples the same run; each writes
the batch it received, so the test compares them with each other and with one process."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from noisecraft.runs.distributed import world
from noisecraft.runs.pipeline import load_run

if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank, size = world()
    fixed = load_run(run_dir, eval_batch=4).sample(7, steps=3, seed=5, solver="euler_maruyama")
    whole = load_run(run_dir).sample(7, steps=3, seed=5)
    save_file({"fixed": fixed, "whole": whole}, str(out / f"rank{rank}.safetensors"))
    from noisecraft.cli import app  # the commands: rank 0 writes, every rank samples its share

    common = ["--steps", "3", "--seed", "5", "--eval-batch", "4"]
    app(["sample", str(run_dir), "--n", "7", "--solver", "euler_maruyama", "--out", str(out / "cli.npy"), *common],
        standalone_mode=False)
    app(["eval", str(run_dir), "--n", "20", *common], standalone_mode=False)
