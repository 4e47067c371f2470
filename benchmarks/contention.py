"""Throughput beside busy neighbours: images/s for training and sampling the digits UNet with 0 and 1 busy
processes next to it, at the old thread policy (one thread per core, torch's default, with the passive
OpenMP wait policy that importing noisecraft used to set) and the new one (noisecraft.runs.threads: one thread
per CPU that other processes leave free, threads that spin 2,000 times before they sleep), in one run.

Run:  .venv/bin/python benchmarks/contention.py             (writes docs/benchmarks/contention.md)
      .venv/bin/python benchmarks/contention.py --seconds 8  (shorter)

Each measurement is a fresh subprocess (thread settings and OpenMP's wait policy are read at start); a
neighbour is a Python busy loop. The rows between them vary how long an OpenMP thread spins at a barrier
before it sleeps (OMP_WAIT_POLICY, GOMP_SPINCOUNT; libgomp reads them at start), the choice noisecraft makes
when it is imported (noisecraft/__init__.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {  # name -> (env, threads passed to the job: None lets runs.threads choose)
    "1 per core, OMP active (spin forever)": ({"OMP_WAIT_POLICY": "ACTIVE"}, "cores"),
    "1 per core, libgomp default (300,000 spins)": ({"GOMP_SPINCOUNT": "300000"}, "cores"),
    "1 per core, 20,000 spins": ({"GOMP_SPINCOUNT": "20000"}, "cores"),
    "old: 1 per core, OMP passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, "cores"),
    "1 per core, 2,000 spins (new wait policy)": ({}, "cores"),
    "new: free CPUs, 2,000 spins (default)": ({}, None),
}
OLD, NEW = "old: 1 per core, OMP passive", "new: free CPUs, 2,000 spins (default)"


def _train(seconds: float, threads: int | None) -> float:
    from noisecraft.runs.config import preset_config
    from noisecraft.runs.train import train

    cfg = preset_config("digits", "edm", minutes=seconds / 60, checkpoint_every=10**6, num_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, Path(tmp) / "run", progress=False).images_per_s


def _sample(seconds: float, threads: int | None) -> float:
    from noisecraft.runs.config import preset_config
    from noisecraft.runs.pipeline import Pipeline
    from noisecraft.runs.threads import use_threads

    use_threads(threads)
    cfg = preset_config("digits", "edm", max_steps=1)
    net = cfg.model.build((1, 8, 8), cfg.loss.time_input).eval()  # speed does not depend on the weights
    pipe = Pipeline(cfg, net, (1, 8, 8), True)
    pipe.sample(100, steps=20)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += pipe.sample(100, steps=20, seed=done).shape[0]
    return done / (time.perf_counter() - start)


def _worker(kind: str, seconds: float, threads: str) -> None:
    n = None if threads == "auto" else int(threads)
    rate = (_train if kind == "train" else _sample)(seconds, n)
    import torch

    print(json.dumps({"rate": rate, "threads": torch.get_num_threads()}))


def _measure(kind: str, policy: str, neighbours: int, seconds: float) -> dict:
    env_extra, threads = POLICIES[policy]
    cores = os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(neighbours)]
    try:
        time.sleep(1.0)  # let the neighbours show in the load
        out = subprocess.run([sys.executable, __file__, "--worker", kind, "--seconds", str(seconds), "--threads",
                              "auto" if threads is None else str(cores)], env=env, capture_output=True, text=True,
                             check=True, cwd=ROOT)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(kind: str, seconds: float) -> list[str]:
    lines = [f"### {kind}: images/s (threads used)", "",
             "| policy | 0 busy neighbours | 1 busy neighbour | loaded / idle |", "|---|---:|---:|---:|"]
    rates = {}
    for policy in POLICIES:
        r = [_measure(kind, policy, k, seconds) for k in (0, 1)]
        rates[policy] = r
        lines.append(f"| {policy} | {r[0]['rate']:.0f} ({r[0]['threads']}) | {r[1]['rate']:.0f} ({r[1]['threads']}) | "
                     f"{r[1]['rate'] / r[0]['rate']:.2f} |")
        print(lines[-1], flush=True)
    old, new = rates[OLD], rates[NEW]
    ratio = (f"new / old: idle {new[0]['rate'] / old[0]['rate']:.2f}x, "
             f"one busy neighbour {new[1]['rate'] / old[1]['rate']:.2f}x")
    lines += ["", ratio, ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per cell")
    parser.add_argument("--kinds", default="train,sample")
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/contention.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker, args.seconds, args.threads)
    how = (f"`python benchmarks/contention.py --seconds {args.seconds:g}`, {dt.date.today()}, "
           f"{platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()}.")
    what = "Training: the default digits UNet (EDM preset, batch 128). Sampling: 100 digits, DPM-Solver++(2M), 20 steps."
    lines = ["# Throughput beside busy neighbours", "", how, what, ""]
    for kind in args.kinds.split(","):
        lines += _table(kind, args.seconds)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
