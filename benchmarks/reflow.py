"""Benchmark (not a test): reflow (Liu et al. 2022, "Flow Straight and Fast", sec. 2.3) on 8x8 digits.

Stages (each reuses what an earlier one left on disk; `all` runs them in order):
- `teacher`: the digits demo's config (noisecraft.runs.demo.demo_config: 1,600 steps of batch 128, the
  1.6M-parameter UNet, EMA, x0 clipped to [-1, 1] while sampling) with the loss preset "flow" (rectified
  flow, velocity prediction, logit-normal times), trained once into /work/runs/digits_flow.
- `reflow`: noisecraft.runs.reflow.reflow on that teacher: `--pairs` pairs from its ODE (its own DPM-Solver++(2M),
  `--pair-steps` steps), then `--max-steps` training steps from its weights (uniform times), into
  /work/runs/digits_flow_reflow. The budget is set so that pairs + training take at most the teacher's time.
- `eval`: digits-FD (noisecraft.metrics.digits.evaluate_digits, 500 samples, seed 0) at 1, 2 and 4 network
  evaluations for the flow teacher and the reflowed run (Euler on a uniform grid in t, the reflowed run's
  default sampler, and DPM-Solver++(2M), the teacher's), the flow teacher and the EDM demo teacher
  (/work/runs/digits, trained by `noisecraft demo`'s config) at 20 steps; the straightness (Liu et al. 2022,
  S(Z)) of both flow models on 200 noise vectors; results to /work/runs/reflow_bench.json.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/reflow.py all

NFE k means k - 1 solver steps and the final clean estimate (Euler: k Euler steps, the last to t = 0).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from noisecraft.runs.config import preset_config
from noisecraft.runs.demo import DEMO_STEPS

ROOT = Path("/work/runs")
TEACHER, REFLOWED, EDM = ROOT / "digits_flow", ROOT / "digits_flow_reflow", ROOT / "digits"
RESULTS = ROOT / "reflow_bench.json"
NFES = (1, 2, 4)


def flow_demo_config():
    """demo_config with the flow preset: same data, network, budget and checkpoints, loss 'flow'."""
    return preset_config("digits", "flow", max_steps=DEMO_STEPS, checkpoint_every=250)


def seconds_trained(run: Path) -> float:
    """The training time a run's newest checkpoint records (state.json elapsed_s)."""
    from noisecraft.runs.checkpoint import checkpoints

    return json.loads((checkpoints(run / "checkpoints")[0] / "state.json").read_text())["elapsed_s"]


def train_teacher() -> None:
    from noisecraft.runs.checkpoint import checkpoints
    from noisecraft.runs.train import train

    if checkpoints(TEACHER / "checkpoints"):
        print(f"teacher {TEACHER} exists ({seconds_trained(TEACHER):.0f} s of training); reused")
        return
    start = time.perf_counter()
    result = train(flow_demo_config(), TEACHER)
    print(f"teacher: {result.step} steps in {time.perf_counter() - start:.0f} s")


def run_reflow(pairs: int, pair_steps: int, max_steps: int, pair_seconds: float | None = None) -> None:
    from noisecraft.runs.checkpoint import checkpoints
    from noisecraft.runs.reflow import Pairs, reflow

    if checkpoints(REFLOWED / "checkpoints"):
        print(f"reflowed run {REFLOWED} exists; reused")
        return
    made = REFLOWED / "pairs.safetensors"
    if made.is_file():  # pairs of an attempt whose training was stopped: reused, with the time they took then
        pairs = Pairs.load(made)
        print(f"reusing {len(pairs)} pairs from {made} ({pair_seconds} s to make)")
    result = reflow(TEACHER, REFLOWED, pairs=pairs, steps=pair_steps, max_steps=max_steps)
    pair_seconds = result.pair_seconds if pair_seconds is None else pair_seconds
    record = {"pairs": len(pairs) if isinstance(pairs, Pairs) else pairs, "pair_steps": pair_steps,
              "max_steps": max_steps, "pair_s": pair_seconds, "train_s": seconds_trained(REFLOWED),
              "teacher_s": seconds_trained(TEACHER)}
    (REFLOWED / "reflow_time.json").write_text(json.dumps(record))
    print(json.dumps(record))


def _fd(run, solver: str, nfe: int, grid: str | None = None, seed: int = 0) -> float:
    from noisecraft.metrics.digits import evaluate_digits

    x = run.sample(500, solver=solver, steps=nfe - 1, seed=seed, grid=grid)
    return evaluate_digits(x)["digits_fd"]


def evaluate() -> dict:
    from noisecraft.metrics.digits import floor
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.reflow import straightness

    teacher, reflowed, edm = load_run(TEACHER), load_run(REFLOWED), load_run(EDM)
    rows: dict[str, dict[str, float]] = {}
    for name, run in (("flow teacher", teacher), ("flow + reflow", reflowed)):
        rows[f"{name}, euler"] = {str(k): _fd(run, "euler", k, "uniform") for k in NFES}
        rows[f"{name}, dpm++2m"] = {str(k): _fd(run, "dpm++2m", k, "log_snr") for k in NFES}
        print(name, rows[f"{name}, euler"], rows[f"{name}, dpm++2m"], flush=True)
    rows["flow teacher, dpm++2m"]["21"] = _fd(teacher, "dpm++2m", 21)
    rows["edm demo teacher, dpm++2m"] = {str(k): _fd(edm, "dpm++2m", k) for k in (*NFES, 21)}
    # digits-FD of 500 samples moves by several points with the seed: the key cells again at seeds 1 and 2
    spread = {f"{name}, {solver} {nfe}": [_fd(run, solver, nfe, grid, seed) for seed in (0, 1, 2)]
              for name, run, solver, nfe, grid in (("flow + reflow", reflowed, "euler", 1, "uniform"),
                                                   ("flow + reflow", reflowed, "euler", 2, "uniform"),
                                                   ("flow teacher", teacher, "dpm++2m", 21, None),
                                                   ("edm demo teacher", edm, "dpm++2m", 21, None))}
    z = torch.randn(200, *teacher.sample_shape, generator=torch.Generator().manual_seed(1))
    bent = {name: straightness(run.denoiser(), run.schedule, z, steps=32)
            for name, run in (("flow teacher", teacher), ("flow + reflow", reflowed))}
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "fd": rows, "fd_seeds_0_1_2": spread, "straightness": bent, "floor": floor()["digits_fd"],
           "time": json.loads((REFLOWED / "reflow_time.json").read_text())}
    RESULTS.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["teacher", "reflow", "eval", "all"])
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--pair-steps", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=800)
    parser.add_argument("--pair-seconds", type=float, default=None, help="time the reused pairs took to make")
    args = parser.parse_args()
    if args.stage in ("teacher", "all"):
        train_teacher()
    if args.stage in ("reflow", "all"):
        run_reflow(args.pairs, args.pair_steps, args.max_steps, args.pair_seconds)
    if args.stage in ("eval", "all"):
        evaluate()
