"""The time range at few steps: within-mode W2 on the 16-D mixture oracle (exact denoiser, DDPM's discrete
schedule) for each deterministic solver at NFE 5, 10 and 20, with the schedule's whole range (t 1.0 -> 0.001),
with ranges cut to a log-SNR span of `steps * h` starting at t_max, and with the step-aware default.

This is the measurement behind the default range (noisecraft.core.timesteps.step_aware_range, issue 17):
the whole range spans 19.3 nats of log-SNR, which a 4-step sampler crosses in steps of ~4.8, far beyond
where second-order updates are accurate. The default, sigma~ in [n^-1.25, max(25, n^1.25)] for n
evaluations, is compared here with the spans tried.

Run:  .venv/bin/python benchmarks/few_step_range.py            (4,000 samples, about 30 s on 2 cores)
      .venv/bin/python benchmarks/few_step_range.py --n 20000  (the issue's sample size)
"""

from __future__ import annotations

import argparse

import torch

import noisecraft as nc
from noisecraft.metrics.distribution import within_mode_w2

SCHEDULE = nc.schedules.DiscreteVP()
SOLVERS = ("ddim", "euler", "heun", "dpm++2m", "dpm++2s", "unipc", "dpm++3m")


def log_snr(t: float) -> float:
    return float(SCHEDULE.log_snr(torch.tensor(t, dtype=torch.float64)))


def steps_for(solver: str, nfe: int) -> int:
    """Solver steps that spend `nfe` evaluations, the final x0 estimate included."""
    return (nfe - 1) // nc.SOLVERS[solver].evaluations_per_step()


def t_min_for(solver: str, nfe: int, t_max: float, h: float) -> float:
    """The end of a log-SNR span of steps * h from t_max (at most the schedule's own end)."""
    end = min(log_snr(t_max) + steps_for(solver, nfe) * h, log_snr(SCHEDULE.t_min))
    return max(SCHEDULE.t_min, float(SCHEDULE.t_from_log_snr(torch.tensor(end, dtype=torch.float64))))


def within(mixture, solver: str, nfe: int, n: int, t_max: float | None = None, t_min: float | None = None) -> float:
    """Within-mode W2 of n samples (inf when the sampler diverged or lost a mode)."""
    if steps_for(solver, nfe) < 1:
        return float("nan")
    x = nc.sample(mixture.denoiser(SCHEDULE), SCHEDULE, solver=solver, steps=steps_for(solver, nfe),
                  shape=(n, mixture.dim), generator=torch.Generator().manual_seed(1), t_min=t_min, t_max=t_max,
                  dtype=torch.float64)
    if not torch.isfinite(x).all():
        return float("inf")
    try:
        return within_mode_w2(x, mixture)
    except ValueError:
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--t-max", type=float, nargs="+", default=[1.0, 0.8])
    parser.add_argument("--h", type=float, nargs="+", default=[1.0, 1.5, 2.0, 2.5, 3.0])
    args = parser.parse_args()
    mixture = nc.oracle.mixture16d()
    print(f"within-mode W2, {args.n} samples, 16-D mixture, DiscreteVP; log-SNR from {log_snr(1.0):.1f} (t 1) "
          f"to {log_snr(SCHEDULE.t_min):.1f} (t {SCHEDULE.t_min})")
    print("| NFE | range | " + " | ".join(SOLVERS) + " |")
    print("|---|---|" + "---:|" * len(SOLVERS))
    for nfe in args.nfe:
        row = [within(mixture, s, nfe, args.n) for s in SOLVERS]
        print(f"| {nfe} | step-aware default | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
        row = [within(mixture, s, nfe, args.n, SCHEDULE.t_max, SCHEDULE.t_min) for s in SOLVERS]
        print(f"| {nfe} | whole range | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
        for t_max in args.t_max:
            for h in args.h:
                row = [within(mixture, s, nfe, args.n, t_max, t_min_for(s, nfe, t_max, h)) for s in SOLVERS]
                print(f"| {nfe} | t_max {t_max:g}, span steps x {h:g} | " + " | ".join(f"{v:.3f}" for v in row) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
