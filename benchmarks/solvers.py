"""Solver benchmark on the analytic oracles (issue 2, section 8). Not a test: prints tables, writes docs.

For NFE in {5, 10, 20, 50, 100}, every noisecraft solver x time grid, and (when diffusers is installed)
diffusers' schedulers with each spacing and with Karras sigmas, all driven by the same exact eps under
the same DDPM schedule (1000 linear betas). Metrics against the true mixture: sliced W2 (two-sample floor
printed beside it), the mode-weight error, and the within-mode W2. Plus a pathwise table: error against
the exact PF-ODE solution on Gaussian data, and the order measured from it.

    python benchmarks/solvers.py                 # full run, 10,000 samples (about 40 min on 2 cores)
    python benchmarks/solvers.py --n 4000 --quick
    python benchmarks/solvers.py --defaults      # what a user gets with no grid or range (issue 17), 20,000
                                                 # samples, NFE 5/10/20, beside every diffusers config (~15 min)
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from pathlib import Path

import torch

import noisecraft as nc
from noisecraft.metrics.distribution import mode_weight_error, sliced_w2, within_mode_w2

SCHED = nc.schedules.DiscreteVP()
NFES = (5, 10, 20, 50, 100)
OURS = {  # solver -> grids tried
    "unipc": ("log_snr", "karras"),
    "dpm++2m": ("log_snr", "karras"),
    "dpm++3m": ("log_snr", "karras"),
    "dpm++2s": ("log_snr", "karras"),
    "dpm2s": ("log_snr", "karras"),
    "heun": ("karras", "log_snr"),
    "ddim": ("uniform", "log_snr"),
    "euler": ("uniform", "log_snr"),
    "ddpm": ("uniform",),
    "euler_maruyama": ("uniform",),
    "pc": ("uniform",),
}
# (t_max, t_min): the schedule's full range, and a shorter one. t_max 0.8 is DDPM timestep 799, where
# diffusers' "leading" spacing starts too; a larger t_min trades the last step's size for its shrinkage.
RANGES = ((1.0, 0.001), (0.8, 0.004), (0.8, 0.01), (0.8, 0.03))
DIFFUSERS = {
    "DDIM": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}),
    "DPM++2M": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
    "DPM++3M": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "DPM++2S": ("DPMSolverSinglestepScheduler", {"solver_order": 2}),
    "DPM++3S": ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS-2": ("DEISMultistepScheduler", {"solver_order": 2}),
    "DEIS-3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
}
SPACINGS = ("linspace", "leading", "trailing", "karras")


def metrics(x: torch.Tensor, mixture, truth: torch.Tensor) -> dict[str, float]:
    try:
        within = within_mode_w2(x, mixture)
    except ValueError:
        within = float("nan")  # a component got < 2 samples: the sampler collapsed
    if not torch.isfinite(x).all():
        return {"sw2": float("nan"), "tv": float("nan"), "within": float("nan")}
    return {"sw2": sliced_w2(x, truth, generator=torch.Generator().manual_seed(7)),
            "tv": mode_weight_error(x, mixture), "within": within}


def run_ours(mixture, n: int, nfe: int, solver: str, grid: str, t_min: float, t_max: float) -> tuple[torch.Tensor, int] | None:
    per_step = nc.SOLVERS[solver].evaluations_per_step()
    steps = (nfe - 1) // per_step if per_step else 1
    if steps < 1:
        return None
    x, info = nc.sample(mixture.denoiser(SCHED), SCHED, solver=solver, steps=steps, shape=(n, mixture.dim),
                        generator=torch.Generator().manual_seed(1), grid=grid, t_min=t_min, t_max=t_max, dtype=torch.float64, return_info=True)
    return x, info.nfe


def diffusers_run(mixture, n: int, nfe: int, name: str, spacing: str) -> tuple[torch.Tensor, int] | None:
    import diffusers

    cls_name, extra = DIFFUSERS[name]
    cls = getattr(diffusers, cls_name)
    base = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **extra)
    if spacing == "karras":
        if "use_karras_sigmas" not in cls.__init__.__code__.co_varnames:
            return None
        base["use_karras_sigmas"] = True
    else:
        base["timestep_spacing"] = spacing
    exact = mixture.denoiser(SCHED)
    calls = {"n": 0}

    def eps_model(x: torch.Tensor, timestep) -> torch.Tensor:
        calls["n"] += 1
        t = SCHED.t_of_timestep(torch.as_tensor(float(timestep), dtype=torch.float64)).expand(x.shape[0])
        return exact.eps(x, t)

    def loop(scheduler, x):
        sample = x * scheduler.init_noise_sigma
        for timestep in scheduler.timesteps:
            model_in = scheduler.scale_model_input(sample, timestep)
            sample = scheduler.step(eps_model(model_in, timestep), timestep, sample).prev_sample
        return sample

    best = None
    for steps in range(1, nfe + 1):  # the most inference steps whose evaluation count fits the budget
        try:
            sch = cls(**base)
            sch.set_timesteps(steps)
        except Exception:
            continue
        count = len(sch.timesteps)
        if count <= nfe:
            best = steps
    if best is None:
        return None
    sch = cls(**base)
    sch.set_timesteps(best)
    noise = torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    try:
        with torch.no_grad():
            x = loop(sch, noise)
    except Exception as err:  # a scheduler that cannot run this configuration
        print(f"  {name}/{spacing}: {type(err).__name__}: {err}")
        return None
    return x, calls["n"]


def record(table: list[str], best: dict, nfe: int, out: tuple[torch.Tensor, int], mixture, truth: torch.Tensor,
           sampler: str, config: str, label: str) -> dict[str, float]:
    """Score one run, add its table row, and keep it as best[nfe] if its within-mode W2 is the lowest so far."""
    x, used = out
    m = metrics(x, mixture, truth)
    table.append(f"| {sampler} | {config} | {used} | {m['sw2']:.4f} | {m['tv']:.4f} | {m['within']:.4f} |")
    if not math.isnan(m["within"]) and (nfe not in best or m["within"] < best[nfe][0]):
        best[nfe] = (m["within"], label, m)
    return m


def pathwise_table(steps_list=(5, 10, 20, 40, 80)) -> list[str]:
    gauss = nc.oracle.gaussian(torch.zeros(16), torch.from_numpy(nc.oracle.mixture16d().covariances[0].numpy()))
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SCHED.prior_std()
    rows = ["| solver | " + " | ".join(f"steps {s}" for s in steps_list) + " | measured order (last two) | nominal |",
            "|---|" + "---|" * (len(steps_list) + 2)]
    for solver in ("ddim", "euler", "heun", "dpm++2m", "dpm++3m", "unipc", "dpm2s", "dpm++2s"):
        errs = []
        for steps in steps_list:
            times = nc.timesteps.make_grid(SCHED, steps, "log_snr")
            exact = gauss.flow(x, float(times[0]), float(times[-1]), SCHED)
            out, _ = nc.solve(gauss.denoiser(SCHED), SCHED, x, times, solver=solver, denoise_final=False)
            errs.append(float((out * float(SCHED.alpha(times[-1])) - exact).norm(dim=1).mean()))
        order = math.log(errs[-2] / errs[-1]) / math.log(steps_list[-1] / steps_list[-2])
        rows.append(f"| {solver} | " + " | ".join(f"{e:.2e}" for e in errs) + f" | {order:.2f} | {nc.SOLVERS[solver].order} |")
    return rows


DETERMINISTIC = ("ddim", "euler", "heun", "dpm++2m", "dpm++3m", "dpm++2s", "dpm2s", "unipc")
STOCHASTIC_NFES = (10, 20, 50, 100, 200)


def run_default(mixture, n: int, nfe: int, solver: str) -> tuple[torch.Tensor, int] | None:
    """`nc.sample` as a user calls it: the solver and a step count spending `nfe` evaluations, nothing else."""
    steps = (nfe - 1) // nc.SOLVERS[solver].evaluations_per_step()
    if steps < 1:
        return None
    x, info = nc.sample(mixture.denoiser(SCHED), SCHED, solver=solver, steps=steps, shape=(n, mixture.dim),
                        generator=torch.Generator().manual_seed(1), dtype=torch.float64, return_info=True)
    return x, info.nfe


def defaults_report(n: int, nfes: list[int]) -> list[str]:
    """Every deterministic solver with its defaults beside the best of every diffusers configuration, per NFE,
    on the 16-D mixture; then the stochastic solvers with the evaluations they need."""
    mixture = nc.oracle.mixture16d()
    truth = mixture.sample(n, torch.Generator().manual_seed(100))[0]
    floor = metrics(mixture.sample(n, torch.Generator().manual_seed(101))[0], mixture, truth)["within"]
    lines = [f"\n## Defaults: `nc.sample(denoise, schedule, solver=S, steps=N)`, no grid or range (16-D mixture, "
             f"{n} samples, floor within-mode W2 {floor:.4f})\n",
             "| NFE | " + " | ".join(DETERMINISTIC) + " | worst / best | diffusers best (config) | ours best / theirs | ours / floor |",
             "|---|" + "---:|" * (len(DETERMINISTIC) + 4)]
    for nfe in nfes:
        ours = {}
        for solver in DETERMINISTIC:
            out = run_default(mixture, n, nfe, solver)
            ours[solver] = metrics(out[0], mixture, truth)["within"] if out else float("nan")
            print(f"defaults NFE {nfe} {solver:8s} within {ours[solver]:.4f}", flush=True)
        theirs = (float("inf"), "-")
        for name in DIFFUSERS:
            for spacing in SPACINGS:
                out = diffusers_run(mixture, n, nfe, name, spacing)
                if out is not None and out[1] <= nfe:
                    within = metrics(out[0], mixture, truth)["within"]
                    theirs = min(theirs, (within, f"{name}, {spacing}"), key=lambda v: (math.isnan(v[0]), v[0]))
        valid = [v for v in ours.values() if not math.isnan(v)]
        best, worst = min(valid), max(valid)
        lines.append(f"| {nfe} | " + " | ".join(f"{ours[s]:.4f}" for s in DETERMINISTIC) + f" | {worst / best:.2f} | "
                     f"{theirs[0]:.4f} ({theirs[1]}) | {best / theirs[0]:.2f} ({theirs[0] / best:.2f}x better) | {best / floor:.2f} |")
    lines += ["\nStochastic solvers with their defaults, by evaluations (within-mode W2):\n",
              "| solver | " + " | ".join(f"NFE {v}" for v in STOCHASTIC_NFES) + " |", "|---|" + "---:|" * len(STOCHASTIC_NFES)]
    for solver in ("ddpm", "euler_maruyama", "pc"):
        row = []
        for nfe in STOCHASTIC_NFES:
            out = run_default(mixture, n, nfe, solver)
            row.append(f"{metrics(out[0], mixture, truth)['within']:.4f}" if out else "-")
        lines.append(f"| {solver} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="samples per configuration")
    parser.add_argument("--nfe", type=int, nargs="*", default=list(NFES))
    parser.add_argument("--oracle", choices=["mix16", "ring8", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="fewer grids and t_min values")
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--out", default=None, help="markdown file (docs/benchmarks/solvers.md, or "
                        "solvers_defaults.md with --defaults)")
    parser.add_argument("--defaults", action="store_true", help="only the defaults table (issue 17)")
    args = parser.parse_args()
    if args.defaults:
        n = 20000 if args.n == 10000 else args.n
        lines = [f"# Solvers with their defaults\n\n`python benchmarks/solvers.py --defaults --n {n}` on "
                 f"{platform.machine()} ({torch.get_num_threads()} threads), {datetime.date.today()}, torch "
                 f"{torch.__version__}; schedule DDPM's 1000 linear betas, model the oracle's exact eps.",
                 *defaults_report(n, args.nfe if args.nfe != list(NFES) else [5, 10, 20])]
        return _write("\n".join(lines) + "\n", args.out or "docs/benchmarks/solvers_defaults.md")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lines = ["# Solver benchmark\n", f"`python benchmarks/solvers.py --n {args.n}` on {platform.machine()} "
             f"({torch.get_num_threads()} threads), {datetime.date.today()}, torch {torch.__version__}. "
             "Schedule: DDPM's 1000 linear betas (DiscreteVP) for every sampler; model: the oracle's exact eps. "
             "Lower is better; the floor is the same metric for a fresh true sample of the same size.\n"]
    oracles = {"mix16": nc.oracle.mixture16d(), "ring8": nc.oracle.ring8()}
    chosen = ["mix16", "ring8"] if args.oracle == "both" else [args.oracle]
    for key in chosen:
        mixture = oracles[key]
        truth = mixture.sample(args.n, torch.Generator().manual_seed(100))[0]
        floor = metrics(mixture.sample(args.n, torch.Generator().manual_seed(101))[0], mixture, truth)
        lines.append(f"\n## {key}: floor sliced W2 {floor['sw2']:.4f}, mode TV {floor['tv']:.4f}, within-mode W2 {floor['within']:.4f}\n")
        best_ours: dict[int, tuple] = {}
        best_theirs: dict[int, tuple] = {}
        table = ["| sampler | config | NFE | sliced W2 | mode TV | within-mode W2 |", "|---|---|---|---|---|---|"]
        for nfe in args.nfe:
            for solver, grids in OURS.items():
                stochastic = nc.SOLVERS[solver].stochastic
                ranges = RANGES[:1] if stochastic else RANGES[1:] if args.quick else RANGES if nfe <= 10 else RANGES[:2]
                for grid in grids[:1] if args.quick or nfe >= 50 else grids:
                    for t_max, t_min in ranges:
                        t0 = time.time()
                        out = run_ours(mixture, args.n, nfe, solver, grid, t_min, t_max)
                        if out is None:
                            continue
                        m = record(table, best_ours, nfe, out, mixture, truth, f"noisecraft {solver}",
                                   f"{grid}, t {t_max} to {t_min}", f"{solver} ({grid}, t {t_max} to {t_min})")
                        print(f"{key} NFE {out[1]:3d} {solver:15s} {grid:8s} t {t_max} to {t_min:<6} within {m['within']:.4f} ({time.time() - t0:.1f}s)", flush=True)
            if args.no_diffusers:
                continue
            try:
                import diffusers  # noqa: F401
            except ImportError:
                continue
            for name in DIFFUSERS:
                for spacing in SPACINGS if nfe <= 20 else ("leading", "karras"):
                    out = diffusers_run(mixture, args.n, nfe, name, spacing)
                    if out is None:
                        continue
                    m = record(table, best_theirs, nfe, out, mixture, truth, f"diffusers {name}", spacing, f"{name} ({spacing})")
                    print(f"{key} NFE {out[1]:3d} diffusers {name:8s} {spacing:8s} within {m['within']:.4f}", flush=True)
        lines.append("### Best per NFE (by within-mode W2)\n")
        lines.append("| NFE | noisecraft best | within-mode W2 (mode TV) | diffusers best | within-mode W2 (mode TV) | ratio ours/theirs | ours / floor |")
        lines.append("|---|---|---|---|---|---|---|")
        for nfe in args.nfe:
            ours = best_ours.get(nfe)
            theirs = best_theirs.get(nfe)
            ratio = f"{ours[0] / theirs[0]:.2f}" if ours and theirs else "-"
            if not ours:
                lines.append(f"| {nfe} | - | - | - | - | - | - |")
                continue
            theirs_text = f"{theirs[1]} | {theirs[0]:.4f} ({theirs[2]['tv']:.3f})" if theirs else "- | -"
            lines.append(f"| {nfe} | {ours[1]} | {ours[0]:.4f} ({ours[2]['tv']:.3f}) | {theirs_text} | {ratio} | {ours[0] / floor['within']:.2f} |")
        lines.append("\n### All configurations\n")
        lines.extend(table)
    lines.append("\n## Pathwise error against the exact PF-ODE solution (16-D Gaussian, log-SNR grid, mean L2 at t_min)\n")
    lines.extend(pathwise_table())
    _write("\n".join(lines) + "\n", args.out or "docs/benchmarks/solvers.md")


def _write(text: str, out: str) -> None:
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
