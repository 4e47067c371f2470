"""Benchmark (not a test): distillation to 1, 2 and 4 network evaluations (noisecraft.runs.distill).

Two suites, each printing a table and writing JSON beside it:

- `oracle`: the ring of eight Gaussians (2-D) and the 16-D mixture (noisecraft.analysis.oracle) under the EDM
  schedule. The teacher is the exact denoiser, so every student is measured against the true mixture:
  within-mode W2, sliced W2 and mode-weight TV of 10,000 samples, beside the teacher's default 10-evaluation
  sampler (DPM-Solver++(2M), 9 steps, step-aware range), the teacher's DDIM at the same evaluations, and the
  floor (fresh true samples). The students' network (MLP 256 x 3; `--width`, `--depth`) starts from a denoiser
  trained briefly on mixture samples (`--init-steps`), as a real student starts from its teacher's weights. A
  reference for the 1-step rows: the exact flow map (the teacher's ODE solved finely from the same prior, what a
  perfect 1-step student would draw). The consistency student is also sampled at 1 NFE from sigma_max (its start
  before the step-aware start, noisecraft.runs.distill.consistency_times).
- `digits`: the trained digits run `--teacher` (default /work/runs/digits, `noisecraft demo`'s model). Digits-FD
  of 500 samples (noisecraft.metrics.digits) at 1, 2, 4 evaluations, beside the teacher's FD at 20 steps (its
  default sampler) and at 1, 2, 4 evaluations. Consistency distils one student, sampled at each count;
  progressive distils one student per count; regression (onto the teacher's ODE ends, `--pairs` of them) one
  1-evaluation student. Each distillation has `--minutes` of this process's
  CPU time (train.clock "process") on one thread, so a budget holds on a shared machine.

    .venv/bin/python benchmarks/distill.py oracle --max-steps 3000
    .venv/bin/python benchmarks/distill.py oracle --methods regression --cases mixture16d --width 512 --depth 4 \
        --max-steps 10000
    .venv/bin/python benchmarks/distill.py digits --minutes 10
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import noisecraft as nc
from noisecraft.core.schedules import EDM
from noisecraft.core.timesteps import make_grid
from noisecraft.metrics.distribution import distribution_report, sliced_w2
from noisecraft.nets import NetConfig
from noisecraft.runs.config import preset_config
from noisecraft.runs.distill import Teacher, consistency_times, distill
from noisecraft.runs.pipeline import load_run
from noisecraft.solvers.driver import solve

NFES = (1, 2, 4)
METHODS = ("consistency", "progressive", "regression")


def _machine() -> str:
    return f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, {date.today()}"


def _students(make: callable, root: Path, methods: tuple[str, ...], reuse: bool = False
              ) -> dict[tuple[str, int], tuple[Path, dict]]:
    """(method, nfe) -> (student run, distillation record): one consistency student for every count (its
    training does not depend on the count), one progressive student per count. `reuse` keeps a student
    already distilled in its folder (record.json)."""
    out = {}
    for method in methods:
        for k in {"consistency": (2,), "regression": (1,)}.get(method, NFES):
            path = root / f"{method}_{k}"
            if reuse and (path / "record.json").is_file():
                record = json.loads((path / "record.json").read_text())
            else:
                shutil.rmtree(path, ignore_errors=True)
                start = time.process_time()
                result = make(method, k, path)
                record = {"optimizer_steps": result.step, "cpu_s": round(time.process_time() - start, 1),
                          "wall_s": round(result.seconds, 1), "rounds": len(result.rounds)}
                (path / "record.json").write_text(json.dumps(record))
            print(f"  {method} K={k}: {record}", flush=True)
            for nfe in NFES if method == "consistency" else (k,):
                out[(method, nfe)] = (path, record)
    return out


def student_sample(path: Path, method: str, nfe: int, n: int, seed: int, times: list[float] | None = None
                   ) -> torch.Tensor:
    """n samples of a student in `nfe` evaluations: a progressive student on its own grid; the consistency
    student on the times it would have been given for that count (consistency_times over the schedule's
    range), or on `times`."""
    pipe = load_run(path)
    with torch.no_grad():
        if method != "consistency":
            return pipe.sample(n, seed=seed)
        base = pipe.config.sample.model_copy(update={"t_min": None, "t_max": None})
        times = consistency_times(pipe.schedule, nfe, base).tolist() if times is None else times
        return pipe.sample(n, steps=nfe - 1, grid=times, seed=seed)


# -- oracle ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def flow_map(mixture: nc.oracle.GaussianMixture, schedule: EDM, x: torch.Tensor, t_from: float) -> torch.Tensor:
    """The exact denoiser's probability-flow ODE from x at t_from to the clean end: DPM-Solver++(2M), 200 steps
    uniform in log-SNR (on both oracles within 0.0005 of the floor's within-mode W2 from sigma~ 80)."""
    times = make_grid(schedule, 200, "log_snr", None, t_from)
    return solve(mixture.denoiser(schedule), schedule, x.double(), times, "dpm++2m")[0]


def oracle_suite(args: argparse.Namespace) -> dict:
    cases = {"ring8": nc.oracle.ring8, "mixture16d": nc.oracle.mixture16d}
    return {name: oracle_case(args, name, cases[name]()) for name in args.cases}


def oracle_case(args: argparse.Namespace, name: str, mixture: nc.oracle.GaussianMixture) -> dict:
    """Students of the exact denoiser of `mixture` beside the teacher's samplers and the floor."""
    schedule, root = EDM(), Path(args.out) / name
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "data.npy", mixture.sample(50_000, torch.Generator().manual_seed(0))[0].float().numpy())
    config = preset_config(str(root / "data.npy"), "edm", max_steps=args.init_steps, batch_size=512)
    config = config.model_copy(update={"model": NetConfig(width=args.width, depth=args.depth)})
    if not (args.reuse and (root / "init" / "checkpoints").is_dir()):
        shutil.rmtree(root / "init", ignore_errors=True)
        nc.train(config, root / "init", progress=False)
    teacher = Teacher(mixture.denoiser(schedule), schedule, config, weights=load_run(root / "init").net.state_dict(),
                      source=f"exact {name} denoiser")
    reference = mixture.sample(args.n, torch.Generator().manual_seed(5))[0]

    def report(x: torch.Tensor) -> dict:
        try:
            return {k: round(v, 4) for k, v in distribution_report(x, mixture, reference).items()}
        except ValueError:  # a component got no samples (a collapsed sampler): within-mode W2 is undefined
            return {"within_w2": "collapsed", "sliced_w2": round(sliced_w2(x, reference), 4)}

    def make(method: str, k: int, path: Path):
        return distill(teacher, path, method, k, max_steps=args.max_steps, batch_size=512, warmup_steps=50,
                       progress=False, **({"pairs": args.pairs} if method == "regression" and args.pairs else {}))

    students = _students(make, root, tuple(args.methods), args.reuse)
    shape = (args.n, mixture.dim)
    rows = {"floor": report(mixture.sample(args.n, torch.Generator().manual_seed(6))[0]),
            "teacher dpm++2m 10 NFE (default)": report(nc.sample(teacher.denoise, schedule, steps=9, shape=shape,
                                                                 generator=torch.Generator().manual_seed(3)))}
    for nfe in NFES:
        x = nc.sample(teacher.denoise, schedule, "ddim", nfe - 1, shape, torch.Generator().manual_seed(3))
        rows[f"teacher ddim {nfe} NFE"] = report(x)
    prior = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for sigma in (80.0, 25.0):
        t = float(schedule.t_from_sigma_tilde(torch.tensor(sigma, dtype=torch.float64)))
        rows[f"exact flow map from sigma~ {sigma:g} (1-step ideal)"] = report(flow_map(mixture, schedule, sigma * prior, t))
    for (method, nfe), (path, record) in students.items():
        rows[f"{method} {nfe} NFE"] = {**report(student_sample(path, method, nfe, args.n, 3)), **record}
        if method == "consistency" and nfe == 1:
            old = student_sample(path, method, 1, args.n, 3, times=[schedule.t_max])
            rows["consistency 1 NFE from sigma~ 80 (sigma_max)"] = {**report(old), **record}
    _table(f"{name} (within-mode W2, sliced W2, mode TV; {args.n} samples; {args.max_steps} steps per distillation, "
           f"students start from a denoiser trained {args.init_steps} steps)", rows,
           ("within_w2", "sliced_w2", "mode_tv", "optimizer_steps", "cpu_s"))
    return rows


# -- digits ---------------------------------------------------------------------------------------------------
def digits_suite(args: argparse.Namespace) -> dict:
    from noisecraft.metrics.digits import evaluate_digits, floor

    teacher_dir = Path(args.teacher)
    if not (teacher_dir / "checkpoints").is_dir():
        raise SystemExit(f"no trained teacher at {teacher_dir}: run `noisecraft demo --out {teacher_dir}` first")
    torch.set_num_threads(1)
    teacher = load_run(teacher_dir)
    trained = json.loads((teacher_dir / "metrics.jsonl").read_text().splitlines()[-1])

    def fd(draw: callable) -> dict:
        """Digits-FD of 500 samples, mean and spread over the seeds (one seed's 500 samples vary by +-3)."""
        values = [evaluate_digits(draw(seed))["digits_fd"] for seed in args.seeds]
        return {"fd": round(float(np.mean(values)), 2), "fd_std": round(float(np.std(values)), 2),
                "fd_seeds": [round(v, 2) for v in values]}

    rows = {"floor (500 train images)": {"fd": round(floor()["digits_fd"], 2)},
            "teacher dpm++2m 20 steps": fd(lambda seed: teacher.sample(500, seed=seed))}
    for nfe in NFES:
        rows[f"teacher dpm++2m {nfe} NFE"] = fd(lambda seed, nfe=nfe: teacher.sample(500, steps=nfe - 1, seed=seed))
    _table("teacher", rows, ("fd", "fd_std"))

    def make(method: str, k: int, path: Path):
        extra = {"lr": args.lr} if args.lr else {}
        return distill(teacher_dir, path, method, k, minutes=args.minutes, clock="process", num_threads=1,
                       progress=False, **extra)

    students = _students(make, Path(args.out), tuple(args.methods), args.reuse)
    for (method, nfe), (path, record) in students.items():
        rows[f"{method} {nfe} NFE"] = {**fd(lambda seed, p=path, m=method, k=nfe: student_sample(p, m, k, 500, seed)),
                                       **record}
    reference = rows["teacher dpm++2m 20 steps"]["fd"]
    for row in rows.values():
        row["x_teacher20"] = round(row["fd"] / reference, 2)
    _table(f"digits-FD, 500 samples; teacher trained {trained['step']} steps in {trained['elapsed_s']:.0f} s wall; "
           f"each distillation {args.minutes} CPU-min on 1 thread; FD mean over seeds {args.seeds}", rows,
           ("fd", "fd_std", "x_teacher20", "optimizer_steps", "cpu_s"))
    return {"teacher_train_s": trained["elapsed_s"], "rows": rows}


def _table(title: str, rows: dict, keys: tuple[str, ...]) -> None:
    print(f"\n{title}\n| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("oracle", "digits"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", default="runs/bench_distill")
    parser.add_argument("--max-steps", type=int, default=3000, help="oracle: optimiser steps per distillation")
    parser.add_argument("--init-steps", type=int, default=1000, help="oracle: steps of the students' initial denoiser")
    parser.add_argument("--cases", nargs="+", default=["ring8", "mixture16d"], choices=["ring8", "mixture16d"])
    parser.add_argument("--width", type=int, default=256, help="oracle: the students' MLP width")
    parser.add_argument("--depth", type=int, default=3, help="oracle: the students' MLP depth")
    parser.add_argument("--n", type=int, default=10_000, help="oracle: samples per measurement")
    parser.add_argument("--teacher", default="/work/runs/digits", help="digits: the teacher run")
    parser.add_argument("--minutes", type=float, default=10.0, help="digits: CPU minutes per distillation")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the teacher's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits: sampling seeds")
    parser.add_argument("--reuse", action="store_true", help="keep students already distilled in --out")
    parser.add_argument("--pairs", type=int, default=None, help="regression: pairs (default: the library's)")
    args = parser.parse_args()
    out = Path(args.out) / args.suite
    args.out = str(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = oracle_suite(args) if args.suite == "oracle" else digits_suite(args)
    summary = {"command": vars(args), "machine": _machine(), "wall_s": round(time.perf_counter() - start), **results}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nwrote {out / 'results.json'} ({summary['wall_s']} s)")


if __name__ == "__main__":
    main()
