"""Optimised time grids at few steps, default grid (no grid argument) vs GITS (one-step costs, the paper's, and
with the multistep history), Align Your Steps and noisecraft's Frechet-distance search ("fd"), for dpm++2m and
unipc at NFE 5 and 10.

- `--oracle mix16` (16-D mixture) or `--oracle ring8` (2-D ring of 8): exact denoiser under DDPM's discrete
  schedule; within-mode W2 of `--n` fresh samples (lower is better) beside the floor (a fresh true sample of
  the same size) and, on mix16, diffusers' best configuration (issue 17: 0.43 at NFE 5, 0.10 at NFE 10, floor
  0.027 at 20,000 samples).
- `--run DIR` (a trained digits run): the run's denoiser as it samples (bounded); digits-FD of 500 samples,
  the mean over sampling seeds 0-4 (`--seeds`; one seed's FD moves by 1-3 points; noisecraft.metrics.digits) beside its floor (500 real train images). Grids are searched on the
  run's model alone; the default is `Pipeline.sample` with no grid (the run keeps no grids.json: checked).

Grids are optimised on their own noise (and, for AYS, their own data); every score is on fresh noise.

Run:  .venv/bin/python benchmarks/optimize_grid.py                        (mix16, 20,000 samples)
      .venv/bin/python benchmarks/optimize_grid.py --oracle ring8
      OMP_NUM_THREADS=1 .venv/bin/python benchmarks/optimize_grid.py --run /work/runs/digits --batch 128 --fine-steps 60
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import noisecraft as nc
from noisecraft.metrics.distribution import within_mode_w2
from noisecraft.solvers.grid_search import steps_for_nfe

SCHEDULE = nc.schedules.DiscreteVP()
SOLVERS = ("dpm++2m", "unipc")
METHODS = ("gits1", "gits", "ays", "fd")  # gits1: GITS with one-step costs (history=False)
ORACLES = {"mix16": nc.oracle.mixture16d, "ring8": nc.oracle.ring8}
#: diffusers' best configuration per NFE on the 16-D mixture (issue 17's measurement, 20,000 samples)
DIFFUSERS_BEST = {"mix16": {5: 0.43, 10: 0.10}}


def oracle_problem(name: str, n: int, batch: int) -> tuple[Callable, tuple[int, ...], torch.Tensor, Callable, str]:
    """(denoise, shape, data, score(solver, steps, grid) -> within-mode W2 of n fresh samples, header)."""
    mixture = ORACLES[name]()
    denoise = mixture.denoiser(SCHEDULE)

    def score(solver: str, steps: int, grid: torch.Tensor | None) -> float:
        kw = {} if grid is None else {"grid": grid}
        x = nc.sample(denoise, SCHEDULE, solver, steps, shape=(n, mixture.dim), generator=torch.Generator().manual_seed(12345),
                      dtype=torch.float64, **kw)
        try:
            return within_mode_w2(x, mixture)
        except ValueError:  # a mode lost
            return float("inf")

    floor = within_mode_w2(mixture.sample(n, torch.Generator().manual_seed(4242))[0], mixture)
    header = f"within-mode W2, {n} samples, {name} oracle, DiscreteVP; floor {floor:.4f}"
    return denoise, (mixture.dim,), mixture.sample(batch, torch.Generator().manual_seed(777))[0], score, header


def run_problem(run_dir: str, seeds: list[int]) -> tuple[Callable, tuple[int, ...], torch.Tensor, Callable, str,
                                                          object]:
    """The same for a trained digits run, scored by digits-FD of 500 samples, the mean over `seeds`."""
    from noisecraft.metrics.digits import evaluate_digits, floor
    from noisecraft.runs.grids import read_grids

    pipe = nc.load_run(run_dir)
    if read_grids(run_dir):
        raise SystemExit(f"{run_dir} keeps optimised grids (grids.json): its default would not be the default")
    network = pipe.denoiser()

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(x.float(), t).to(x.dtype)

    def score(solver: str, steps: int, grid: torch.Tensor | None) -> float:
        times = None if grid is None else grid.tolist()
        return sum(evaluate_digits(pipe.sample(500, solver, steps, seed=seed, grid=times))["digits_fd"]
                   for seed in seeds) / len(seeds)

    header = f"digits-FD, 500 samples (mean over seeds {seeds}), run {run_dir}; floor {floor()['digits_fd']:.3f}"
    return denoise, pipe.sample_shape, pipe.config.data.load().x, score, header, pipe.schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", choices=sorted(ORACLES), default="mix16")
    parser.add_argument("--run", default=None, help="a trained run directory (digits) instead of an oracle")
    parser.add_argument("--n", type=int, default=20_000, help="fresh samples scored on an oracle")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch", type=int, default=1024, help="noise / data samples each search uses")
    parser.add_argument("--fine-steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits: sampling seeds")
    args = parser.parse_args()
    if args.run:
        denoise, shape, data, score, header, schedule = run_problem(args.run, args.seeds)
        anchors = {}
    else:
        denoise, shape, data, score, header = oracle_problem(args.oracle, args.n, args.batch)
        schedule, anchors = SCHEDULE, DIFFUSERS_BEST.get(args.oracle, {})
    print(f"{header}; searches on {args.batch} draws, teacher {args.fine_steps} log-SNR steps")
    print("| NFE | solver | diffusers best | default | " + " | ".join(args.methods) + " | best / default |")
    print("|---|---|---:|---:|" + "---:|" * len(args.methods) + "---:|")
    found = []
    for nfe in args.nfe:
        for solver in args.solvers:
            steps = steps_for_nfe(solver, nfe)
            row = {"default": score(solver, steps, None)}
            for method in args.methods:
                start = time.perf_counter()
                times, info = nc.optimize_grid(denoise, schedule, nfe, solver, data=data, method=method.rstrip("1"),
                                               shape=shape, batch=args.batch, fine_steps=args.fine_steps,
                                               history=method != "gits1", return_info=True)
                row[method] = score(solver, steps, times)
                found.append((nfe, solver, method, time.perf_counter() - start, info))
            best = min(row[m] for m in args.methods)
            anchor = f"{anchors[nfe]:.2f}" if nfe in anchors else "-"
            print(f"| {nfe} | {solver} | {anchor} | {row['default']:.4f} | " + " | ".join(f"{row[m]:.4f}" for m in args.methods)
                  + f" | {best / row['default']:.2f} |", flush=True)
    print("\n| NFE | solver | method | search s | grid | end-point RMS (default) | Frechet (default) |")
    print("|---|---|---|---:|---|---:|---:|")
    for nfe, solver, method, seconds, info in found:
        print(f"| {nfe} | {solver} | {method} | {seconds:.1f} | " + " ".join(f"{t:.4g}" for t in info.times.tolist())
              + f" | {info.error:.4f} ({info.default_error:.4f}) | {info.fd:.4f} ({info.default_fd:.4f}) |")


if __name__ == "__main__":
    main()
