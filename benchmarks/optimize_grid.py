"""Optimised time grids at few steps: within-mode W2 on the 16-D mixture oracle (exact denoiser, DDPM's discrete
schedule) for dpm++2m and unipc at NFE 5 and 10, with the default grid (no grid argument), GITS, Align Your Steps
and noisecraft's Frechet-distance search ("fd"), beside diffusers' best configuration and the floor (a fresh
true sample of the same size).

The grids are optimised on their own noise (and, for AYS, their own data sample); the W2 is measured on a fresh
sample of `--n` draws. Anchors (issue 17, docs/benchmarks/solvers.md): diffusers' best 0.43 at NFE 5 and 0.10
at NFE 10, floor 0.027 at 20,000 samples.

Run:  .venv/bin/python benchmarks/optimize_grid.py               (20,000 samples, a few minutes on 2 cores)
      .venv/bin/python benchmarks/optimize_grid.py --n 4000 --batch 256   (quick)
"""

from __future__ import annotations

import argparse
import time

import torch

import noisecraft as nc
from noisecraft.metrics.distribution import within_mode_w2
from noisecraft.solvers.grid_search import steps_for_nfe

SCHEDULE = nc.schedules.DiscreteVP()
SOLVERS = ("dpm++2m", "unipc")
METHODS = ("default", "gits", "ays", "fd")
#: diffusers' best configuration per NFE on this oracle (issue 17's measurement, 20,000 samples)
DIFFUSERS_BEST = {5: 0.43, 10: 0.10}
DIFFUSERS_FLOOR = 0.027


def within(mixture, solver: str, nfe: int, n: int, grid: torch.Tensor | None) -> float:
    """Within-mode W2 of n fresh samples on `grid` (the default grid when None); inf if a mode was lost."""
    kw = {} if grid is None else {"grid": grid}
    x = nc.sample(mixture.denoiser(SCHEDULE), SCHEDULE, solver, steps_for_nfe(solver, nfe), shape=(n, mixture.dim),
                  generator=torch.Generator().manual_seed(12345), dtype=torch.float64, **kw)
    try:
        return within_mode_w2(x, mixture)
    except ValueError:
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--batch", type=int, default=1024, help="noise / data samples each search uses")
    parser.add_argument("--fine-steps", type=int, default=120)
    args = parser.parse_args()
    mixture = nc.oracle.mixture16d()
    denoise = mixture.denoiser(SCHEDULE)
    data = mixture.sample(args.batch, torch.Generator().manual_seed(777))[0]
    floor = within_mode_w2(mixture.sample(args.n, torch.Generator().manual_seed(4242))[0], mixture)
    print(f"within-mode W2, {args.n} samples, 16-D mixture, DiscreteVP; floor {floor:.4f} (diffusers' floor "
          f"{DIFFUSERS_FLOOR} at 20,000); searches on {args.batch} draws, teacher {args.fine_steps} log-SNR steps")
    print("| NFE | solver | diffusers best | " + " | ".join(METHODS) + " | best / diffusers | best / default |")
    print("|---|---|---:|" + "---:|" * len(METHODS) + "---:|---:|")
    grids = []
    for nfe in args.nfe:
        for solver in SOLVERS:
            row = {"default": within(mixture, solver, nfe, args.n, None)}
            for method in METHODS[1:]:
                start = time.perf_counter()
                times, info = nc.optimize_grid(denoise, SCHEDULE, nfe, solver, data=data, method=method, shape=(16,),
                                               batch=args.batch, fine_steps=args.fine_steps, return_info=True)
                row[method] = within(mixture, solver, nfe, args.n, times)
                grids.append((nfe, solver, method, time.perf_counter() - start, info))
            best = min(row[m] for m in METHODS[1:])
            anchor = DIFFUSERS_BEST.get(nfe, float("nan"))
            print(f"| {nfe} | {solver} | {anchor:.2f} | " + " | ".join(f"{row[m]:.4f}" for m in METHODS)
                  + f" | {best / anchor:.2f} | {best / row['default']:.2f} |", flush=True)
    print("\n| NFE | solver | method | search s | grid | end-point RMS (default) | Frechet (default) |")
    print("|---|---|---|---:|---|---:|---:|")
    for nfe, solver, method, seconds, info in grids:
        print(f"| {nfe} | {solver} | {method} | {seconds:.1f} | " + " ".join(f"{t:.4g}" for t in info.times.tolist())
              + f" | {info.error:.4f} ({info.default_error:.4f}) | {info.fd:.4f} ({info.default_fd:.4f}) |")


if __name__ == "__main__":
    main()
