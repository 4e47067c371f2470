"""The main demo (`noisecraft demo`, `make demo`): train the default digits model for about five minutes
on the CPU, draw 100 digits with DPM-Solver++(2M) in 20 steps (Lu et al. 2022b), save them beside real
digits, and print digits-FD with its floor."""

from __future__ import annotations

import os
import time
from pathlib import Path

from noisecraft.runs.config import RunConfig, preset_config

DEMO_MINUTES = 5.0


def demo_config(minutes: float = DEMO_MINUTES) -> RunConfig:
    """The default digits model: a 1.6M-parameter UNet (32/64/64, attention at 2x2), EDM loss, EMA."""
    return preset_config("digits", "edm", minutes=minutes, checkpoint_every=250)


def run_demo(out: str | Path = "runs/demo", minutes: float | None = None) -> dict:
    """Train, sample, score and report; returns the evaluation dict. NOISECRAFT_DEMO_MINUTES overrides the budget."""
    import shutil

    from noisecraft.data.digits import load_digits_split
    from noisecraft.metrics.digits import evaluate_digits, floor
    from noisecraft.runs.evaluate import format_result
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.train import train
    from noisecraft.viz.plots import save_image_grids

    out = Path(out)
    minutes = minutes or float(os.environ.get("NOISECRAFT_DEMO_MINUTES", DEMO_MINUTES))
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    start = time.perf_counter()
    print(f"noisecraft demo: training a diffusion model on 8x8 digits for {minutes:g} minutes ...")
    result = train(demo_config(minutes), out)
    run = load_run(out)
    x = run.sample(500, "dpm++2m", 20, seed=0)
    real, _ = load_digits_split("test")
    save_image_grids(out / "samples.png", [("100 samples (DPM-Solver++, 20 steps)", x[:100].numpy()),
                                           ("100 real test digits", real[:100])])
    import numpy as np

    np.save(out / "samples.npy", x[:100].numpy())
    scores = {**evaluate_digits(x), "floor": floor()}
    print(f"\ntrained {result.step} steps ({result.images_per_s:.0f} images/s) in {time.perf_counter() - start:.0f} s")
    print(f"500 samples: {format_result(scores)}")
    print(f"samples:     {out / 'samples.png'}  (beside real digits), {out / 'samples.npy'}")
    print(f"run:         {out}/  (config.yaml, checkpoints/, metrics.jsonl)")
    print(f"more:        noisecraft sample {out} --steps 10 ; noisecraft eval {out}")
    return scores
