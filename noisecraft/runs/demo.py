"""The main demo (`noisecraft demo`, `make demo`): train the default digits model for 1,600 steps (about five
minutes on two free CPU cores), draw digits with DPM-Solver++(2M) in 20 steps (Lu et al. 2022b), save them
beside real digits, and print digits-FD with its floor.

The budget is a step count, not a time: on a machine shared with other work the demo takes longer (the
progress bar shows the ETA) but trains the same model, so its result does not depend on the load (a
5-minute budget trained 308 steps instead of 1,278 beside one busy process, FD 30 instead of 9.7; issue 13)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from noisecraft.runs.config import RunConfig, preset_config

DEMO_STEPS = 1600


def demo_config(steps: int = DEMO_STEPS, minutes: float | None = None) -> RunConfig:
    """The default digits model: a 1.6M-parameter UNet (32/64/64, attention at 2x2), EDM loss, EMA; `steps`
    optimiser steps (or a `minutes` budget instead, for benchmarks)."""
    return preset_config("digits", "edm", max_steps=None if minutes else steps, minutes=minutes, checkpoint_every=250)


def run_demo(out: str | Path = "runs/demo", steps: int | None = None) -> dict:
    """Train, sample, score and report; returns the evaluation dict. NOISECRAFT_DEMO_STEPS overrides the budget."""
    import shutil

    from noisecraft.data.digits import load_digits_split
    from noisecraft.metrics.digits import evaluate_digits, floor
    from noisecraft.runs.evaluate import format_result
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.train import train
    from noisecraft.viz.plots import save_image_grids

    out = Path(out)
    steps = steps or int(os.environ.get("NOISECRAFT_DEMO_STEPS", DEMO_STEPS))
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    start = time.perf_counter()
    print(f"noisecraft demo: training a diffusion model on 8x8 digits for {steps} steps (about 5 minutes on two "
          "free cores; the same model on a busy machine, only slower) ...")
    result = train(demo_config(steps), out)
    run = load_run(out)
    x = run.sample(500, "dpm++2m", 20, seed=0)
    real, _ = load_digits_split("test")
    save_image_grids(out / "samples.png", [("100 samples (DPM-Solver++, 20 steps)", x[:100].numpy()),
                                           ("100 real test digits", real[:100])])
    import numpy as np

    from noisecraft.io import atomic_path

    with atomic_path(out / "samples.npy") as tmp:
        np.save(tmp, x[:100].numpy())
    scores = {**evaluate_digits(x), "floor": floor()}
    print(f"\ntrained {result.step} steps ({result.images_per_s:.0f} images/s) in {time.perf_counter() - start:.0f} s")
    print(f"500 samples: {format_result(scores)}")
    print(f"samples:     {out / 'samples.png'}  (beside real digits), {out / 'samples.npy'}")
    print(f"run:         {out}/  (config.yaml, checkpoints/, metrics.jsonl)")
    print(f"more:        noisecraft sample {out} --steps 10 ; noisecraft eval {out}")
    return scores
