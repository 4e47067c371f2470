"""`noisecraft eval RUN`: sample a trained digits run and score it with the digits metrics
(noisecraft.metrics.digits) beside the floor; writes eval.json in the run directory. A 32x32 digits run (digits32,
pixel or latent) is scored on its samples taken back to 8x8 (noisecraft.data.digits.to_digits8)."""

from __future__ import annotations

import json
from pathlib import Path

from noisecraft.io import write_text_atomic
from noisecraft.runs.distributed import is_main
from noisecraft.runs.pipeline import load_run


def evaluate_run(run_dir: str | Path, n: int = 500, solver: str | None = None, steps: int | None = None,
                 seed: int = 0, ema: bool = True, eval_batch: int | None = None) -> dict:
    """Sample n digits from the run and score them beside the floor; writes run_dir/eval.json (rank 0 when
    launched on several processes, which share the sampling)."""
    from noisecraft.metrics.digits import evaluate_digits, floor

    run = load_run(run_dir, ema=ema, eval_batch=eval_batch)
    run.solver(solver, steps)  # the options first, named as given
    shape = tuple(run.output_shape)  # a latent run's decoded images
    if shape not in ((1, 8, 8), (1, 32, 32)):
        raise ValueError(f"noisecraft eval scores digits runs (8x8, or digits32 taken back to 8x8); this run's "
                         f"samples have shape {shape}")
    if run.config.model.num_classes is not None:
        raise ValueError(f"noisecraft eval scores unconditional digits runs; {str(run_dir)!r} is "
                         f"{run.config.model.cond}-conditional: draw each class with `noisecraft sample --class K`")
    x = run.sample(n, solver, steps, seed)
    if shape == (1, 32, 32):
        from noisecraft.data.digits import to_digits8

        x = to_digits8(x)
    result = {
        "run": str(run_dir), "step": run.step, "solver": solver or run.config.sample.solver,
        "steps": steps or run.config.sample.steps, "seed": seed, "ema": ema,
        **evaluate_digits(x), "floor": floor(),
    }
    if is_main():
        write_text_atomic(Path(run_dir) / "eval.json", json.dumps(result, indent=1))
    return result


def format_result(r: dict) -> str:
    f = r["floor"]
    return (f"digits-FD {r['digits_fd']:.2f} (floor {f['digits_fd']:.2f}), precision {r['precision']:.3f} "
            f"(floor {f['precision']:.3f}), recall {r['recall']:.3f} (floor {f['recall']:.3f}), "
            f"classes {r['class_histogram']}")
