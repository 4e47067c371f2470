"""One short GPU check (not a test; CI has no GPU): the CUDA path gives the CPU's answers, and how fast it is.

1. every solver on the 16-D oracle: CUDA float64 against CPU float64 (same seeds), max difference;
2. the likelihood estimator on CUDA against CPU;
3. the digits trainer on CUDA with mixed precision for a fixed number of seconds: images/s, then
   DPM-Solver++ sampling throughput on the GPU and digits-FD of 500 samples.

    python benchmarks/gpu_check.py --seconds 60 --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import torch

import noisecraft as nc


def solver_parity() -> dict:
    mix = nc.oracle.mixture16d()
    sched = nc.schedules.DiscreteVP()
    out = {}
    for solver in sorted(nc.SOLVERS):
        runs = {}
        for device in ("cpu", "cuda"):
            x = nc.sample(mix.denoiser(sched), sched, solver=solver, steps=8, shape=(512, 16), dtype=torch.float64,
                          device=device, generator=torch.Generator().manual_seed(0))
            runs[device] = x.cpu()
        out[solver] = float((runs["cpu"] - runs["cuda"]).abs().max())
    return out


def likelihood_parity() -> dict:
    from noisecraft.analysis.likelihood import log_likelihood

    mix = nc.oracle.mixture16d()
    sched = nc.schedules.VPLinear(t_min=1e-5)
    x, _ = mix.sample(128, torch.Generator().manual_seed(1))
    res = {}
    for device in ("cpu", "cuda"):
        t0 = time.time()
        r = log_likelihood(mix.denoiser(sched), sched, x.to(device), probes=1, generator=torch.Generator().manual_seed(2))
        res[device] = (r.log_prob.cpu(), time.time() - t0)
    truth = mix.log_prob(x)
    return {"max_cpu_cuda_diff": float((res["cpu"][0] - res["cuda"][0]).abs().max()),
            "mean_error_cuda_nats_per_dim": float((res["cuda"][0] - truth).mean() / 16),
            "seconds_cpu": res["cpu"][1], "seconds_cuda": res["cuda"][1]}


def train_and_sample(seconds: float, out_dir: str) -> dict:
    from noisecraft.metrics.digits import evaluate_digits
    from noisecraft.runs.config import preset_config
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.train import train

    config = preset_config("digits", "edm", minutes=seconds / 60.0)
    t0 = time.time()
    result = train(config, out_dir, progress=False)
    wall = time.time() - t0
    run = load_run(out_dir, device="cuda")
    torch.cuda.synchronize()
    t1 = time.time()
    x = run.sample(2000, solver="dpm++2m", steps=20, seed=0)
    torch.cuda.synchronize()
    sample_s = time.time() - t1
    metrics = evaluate_digits(x[:500])
    return {"train_wall_s": wall, "train_result": {k: v for k, v in vars(result).items() if isinstance(v, (int, float, str))},
            "sample_images_per_s_dpm2m_20": 2000 / sample_s, "digits": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--run-dir", default="/tmp/gpu_run")
    args = parser.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, fn in (("solver_parity_max_abs_diff", solver_parity), ("likelihood", likelihood_parity),
                     ("digits_training", lambda: train_and_sample(args.seconds, args.run_dir))):
        t0 = time.time()
        try:
            report[name] = fn()
        except Exception:  # report and go on: one broken part must not hide the others
            report[name] = {"error": traceback.format_exc()[-2000:]}
        report[name + "_seconds"] = time.time() - t0
        print(json.dumps({name: report[name]}, indent=1, default=str), flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
