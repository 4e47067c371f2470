"""Benchmark (not a test): wall time of few-step sampling against diffusers' 20-step loop on the same network.

Issue 17, part 5. For each CPU thread count (each in a fresh subprocess that calls torch.set_num_threads first,
OMP_NUM_THREADS set to match) and each batch size (1 and 16), every row draws `n` samples `repeats` times after
one untimed warm-up call; the table gives the median milliseconds per call and images per second. The calls of
all rows are interleaved (each repeat times every row in turn), so load that changes during the run reaches every
row alike. Each turn times two calls of its row in a row: the second is the steady state the table reports, the
first (right after another row's network ran) is reported beside the ratios.

Rows, all on the one torch module of the run (its EMA network, CPU, float32):
- `noisecraft` at NFE 1, 2, 4: `nc.load_run(RUN).sample(n, steps=s, seed=...)`, the public call a user makes,
  end to end (input checks, sampler, the run's clip on x0_hat). Without `--student` it is the run's own sampler
  (its solver, grid and step-aware range) with s = (NFE - 1) / evaluations per step, the final clean estimate
  being the last evaluation (s = 0: x0_hat(x_T, t_max) alone). With `--student DIR` (a run made by
  `noisecraft distill RUN --method consistency --steps 2 ...`) these rows are the student's own sampler at s.
- `noisecraft NFE 20`: the teacher's sampler at 19 steps + final estimate, the same NFE as diffusers' row.
- `diffusers DPM++2M 20 steps`: the standard loop `for t in scheduler.timesteps: eps = model(x, t);
  x = scheduler.step(eps, t, x).prev_sample` with DPMSolverMultistepScheduler in its default configuration
  (dpmsolver++, order 2, midpoint, lower_order_final, linspace spacing, final sigma 0) on a 1000-entry DDPM
  table made from the run's schedule: node n sits at run time t_n = t_min + (n + 1)/1000 (t_max - t_min), with
  alphas_cumprod_n = sigmoid(log_snr(t_n)), so every timestep diffusers visits is a noise level the network
  was trained on. The "model" is the run's bounded denoiser (the same x0_hat noisecraft samples with, clip
  included) seen as an eps-predictor: at timestep n with table (alpha_n, sigma_n), the run time t of equal
  log-SNR, x0 = x0_hat(x alpha(t) / alpha_n, t) and eps = (x - alpha_n x0) / sigma_n: one network call per
  step, 20 in all (diffusers' last step to sigma 0 needs none beyond them).

NFE is measured: a forward hook on the network counts its calls during the timed repeats. With `--fd`, each
row also draws 500 samples at each of seeds 0-4 (on the first thread count), scored by noisecraft.metrics.digits
(digits-FD, their mean; lower is better). Times on a shared machine are noisy: compare the ratios, measured in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency.py --student /work/runs/digits-cd2 --fd \\
        --out docs/benchmarks/latency.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Self

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
NFES = (1, 2, 4)
BATCHES = (1, 16)
THREADS = (1, 2)
DIFFUSERS_STEPS = 20
TABLE_SIZE = 1000
FD_SAMPLES = 500
#: FD is the mean over these sampling seeds: one 500-sample draw of a 2-call sampler moves by +-3 (docs/few_steps.md)
FD_SEEDS = (0, 1, 2, 3, 4)

Draw = Callable[[int, int], Tensor]  # (n, seed) -> n samples


@dataclass(frozen=True)
class Sampler:
    """One row: a name, the network evaluations a draw should take and how to draw."""

    name: str
    nfe: int
    draw: Draw


# -- the diffusers side ----------------------------------------------------------------------------------------
def ddpm_table(schedule, size: int = TABLE_SIZE):
    """A DDPM beta table (diffusers' trained_betas) whose node n has the log-SNR of `schedule` at
    t_n = t_min + (n + 1) / size (t_max - t_min): alphas_cumprod_n = sigmoid(lambda(t_n)) (Ho et al. 2020, eq. 4)."""
    from noisecraft.core.schedules import DiscreteVP

    t = schedule.t_min + torch.arange(1, size + 1, dtype=torch.float64) / size * (schedule.t_max - schedule.t_min)
    alphas_cumprod = torch.sigmoid(schedule.log_snr(t))
    betas = 1.0 - alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return DiscreteVP(betas=betas.tolist())


def eps_model(denoise: Callable[[Tensor, Tensor], Tensor], schedule, table) -> Callable[[Tensor, Tensor], Tensor]:
    """x0_hat(x, t) on `schedule` as diffusers' eps-predictor on `table`: the run time of equal log-SNR, the
    sample rescaled by alpha(t) / alpha_n, eps = (x - alpha_n x0) / sigma_n (one call of `denoise`)."""
    from noisecraft.core.parameterization import eps_from_x0

    def eps(x: Tensor, timestep: Tensor) -> Tensor:
        t_table = table.t_of_timestep(timestep)
        alpha_n, sigma_n = float(table.alpha(t_table)), float(table.sigma(t_table))
        t = schedule.t_from_log_snr(table.log_snr(t_table))
        x0 = denoise(x * (float(schedule.alpha(t)) / alpha_n), t.expand(x.shape[0]))
        return eps_from_x0(x, x0.to(x.dtype), alpha_n, sigma_n)

    return eps


def diffusers_draw(run, steps: int = DIFFUSERS_STEPS) -> Draw:
    """n samples from diffusers' DPMSolverMultistepScheduler (default DPM++2M) loop on the run's network."""
    from diffusers import DPMSolverMultistepScheduler

    table = ddpm_table(run.schedule)
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=table.N, trained_betas=table.beta_table().tolist())
    model = eps_model(run.denoiser(), run.schedule, table)

    @torch.no_grad()
    def draw(n: int, seed: int) -> Tensor:
        scheduler.set_timesteps(steps)
        x = torch.randn((n, *run.sample_shape), generator=torch.Generator().manual_seed(seed))
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        return x

    return draw


# -- the noisecraft side ---------------------------------------------------------------------------------------
def steps_for(run, nfe: int) -> int:
    """Solver steps of the run's sampler that spend exactly `nfe` evaluations, the final estimate included."""
    per_step = run.solver().spec.evaluations_per_step(run.config.sample.options)
    steps = 0 if nfe == 1 else (nfe - 1) // max(per_step, 1)
    if nfe < 1 or run.solver(steps=steps).nfe() != nfe:
        raise ValueError(f"`nfe` {nfe} is not reachable with solver {run.config.sample.solver!r} "
                         f"({per_step} evaluation(s) a step + 1 final)")
    return steps


def noisecraft_draw(run, nfe: int) -> Draw:
    steps = steps_for(run, nfe)
    return lambda n, seed: run.sample(n, steps=steps, seed=seed)


def samplers(run, student=None, nfes=NFES, reference_nfe: int = DIFFUSERS_STEPS) -> list[Sampler]:
    """The rows: few-step noisecraft (the student's sampler when given, else the run's), the run's sampler at
    `reference_nfe`, and diffusers' DPM++2M loop at `reference_nfe` steps."""
    fast = student or run
    who = f"student ({fast.config.sample.solver})" if student else f"teacher ({run.config.sample.solver})"
    rows = [Sampler(f"noisecraft {who}", k, noisecraft_draw(fast, k)) for k in nfes]
    rows.append(Sampler(f"noisecraft teacher ({run.config.sample.solver})", reference_nfe,
                        noisecraft_draw(run, reference_nfe)))
    rows.append(Sampler("diffusers DPM++2M (DPMSolverMultistepScheduler)", reference_nfe,
                        diffusers_draw(run, reference_nfe)))
    return rows


# -- timing ----------------------------------------------------------------------------------------------------
class CallCounter:
    """Counts forward calls of some modules (forward hooks) inside a `with` block."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.modules, self.calls, self.handles = modules, 0, []

    def __enter__(self) -> Self:
        self.handles = [m.register_forward_hook(self._count) for m in self.modules]
        return self

    def _count(self, *_: object) -> None:
        self.calls += 1

    def __exit__(self, *_: object) -> None:
        for handle in self.handles:
            handle.remove()


def time_draws(nets: list[torch.nn.Module], draws: list[Draw], batches, repeats: int) -> list[dict]:
    """Per draw and batch size n: median wall milliseconds of draw(n) over `repeats` calls, and the network calls
    per draw. The calls are interleaved (repeat r times every draw in turn), so a change in the machine's load
    during the run reaches every row alike and the ratios stay fair. Each turn times two calls in a row: `cold_ms`,
    the first, right after another row ran (another network's weights in the CPU caches), and `ms`, the second,
    the steady state of a caller who samples one model again and again (a service, a preview loop)."""
    keys = [(i, n) for i in range(len(draws)) for n in batches]
    for i, n in keys:
        draws[i](n, 0)
    seconds = {key: ([], []) for key in keys}
    calls = {key: [] for key in keys}
    for r in range(repeats):
        for i, n in keys:
            for times in seconds[i, n]:
                with CallCounter(nets) as counter:
                    start = time.perf_counter()
                    draws[i](n, r + 1)
                    times.append(time.perf_counter() - start)
                calls[i, n].append(counter.calls)
    out = [{} for _ in draws]
    for i, n in keys:
        cold, warm = (1e3 * statistics.median(times) for times in seconds[i, n])
        nfe = calls[i, n][0] if len(set(calls[i, n])) == 1 else calls[i, n]
        out[i][str(n)] = {"ms": warm, "cold_ms": cold, "images_per_s": 1e3 * n / warm, "nfe": nfe}
    return out


def measure(run_dir: str | Path, student_dir: str | Path | None = None, nfes=NFES, batches=BATCHES,
            repeats: int = 10, reference_nfe: int = DIFFUSERS_STEPS, fd: bool = False) -> dict:
    """Every row at every batch size on the current thread setting (the benchmark's core; no subprocess)."""
    from noisecraft.runs.pipeline import load_run

    run = load_run(run_dir)
    student = load_run(student_dir) if student_dir else None
    nets = [run.net] + ([student.net] if student else [])
    rows = samplers(run, student, nfes, reference_nfe)
    timed = time_draws(nets, [s.draw for s in rows], batches, repeats)
    rows = [{"name": s.name, "nfe": s.nfe, "batches": t} for s, t in zip(rows, timed, strict=True)]
    if fd:
        from noisecraft.metrics.digits import evaluate_digits

        for s, row in zip(samplers(run, student, nfes, reference_nfe), rows, strict=True):
            row["fd"] = statistics.mean(evaluate_digits(s.draw(FD_SAMPLES, seed))["digits_fd"] for seed in FD_SEEDS)
    return {"threads": torch.get_num_threads(), "rows": rows}


def in_subprocess(threads: int, args: argparse.Namespace, fd: bool) -> dict:
    """`measure` in a fresh interpreter on `threads` threads (its JSON is the last line of its output)."""
    cmd = [sys.executable, __file__, "--worker", str(threads), "--run", str(args.run), "--repeats", str(args.repeats),
           "--nfe", *map(str, args.nfe), "--batch", *map(str, args.batch), "--reference-nfe", str(args.reference_nfe)]
    cmd += ["--student", str(args.student)] if args.student else []
    cmd += ["--fd"] if fd else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"the {threads}-thread worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()}"


def ratio_lines(per_threads: list[dict], batch: str, nfe: int = 2) -> list[str]:
    """diffusers' time over noisecraft's at `nfe` (few-step rows) for `batch`, per thread count."""
    lines = []
    for result in per_threads:
        rows = result["rows"]
        fast = next((r for r in rows if r["name"].startswith("noisecraft") and r["nfe"] == nfe), None)
        ref = rows[-1]
        if fast is None or batch not in ref["batches"]:
            continue
        ratio = ref["batches"][batch]["ms"] / fast["batches"][batch]["ms"]
        cold = ref["batches"][batch]["cold_ms"] / fast["batches"][batch]["cold_ms"]
        lines.append(f"- {result['threads']} thread(s), batch {batch}: {ref['name']} {ref['nfe']} steps / "
                     f"{fast['name']} NFE {nfe} = **{ratio:.1f}x** (target >= 10x); first call after another "
                     f"row: {cold:.1f}x")
    return lines


def table(per_threads: list[dict]) -> str:
    """Markdown: rows sampler x NFE, columns threads x batch (ms per call, images/s), measured NFE and FD."""
    batches = list(per_threads[0]["rows"][0]["batches"])
    head = [f"{r['threads']} thr, batch {b}" for r in per_threads for b in batches]
    has_fd = "fd" in per_threads[0]["rows"][0]
    fd_head = f"FD ({FD_SAMPLES}, mean of {len(FD_SEEDS)} seeds) | " if has_fd else ""
    lines = ["| sampler | NFE | measured NFE | " + fd_head + " | ".join(head) + " |",
             "|---|---|---|" + ("---|" if has_fd else "") + "---|" * len(head)]
    for i, row in enumerate(per_threads[0]["rows"]):
        measured = {json.dumps(r["rows"][i]["batches"][b]["nfe"]) for r in per_threads for b in batches}
        cells = [f"{r['rows'][i]['batches'][b]['ms']:.1f} ms ({r['rows'][i]['batches'][b]['images_per_s']:.0f} img/s)"
                 for r in per_threads for b in batches]
        fd = [f"{row['fd']:.2f}"] if has_fd else []
        lines.append(" | ".join([f"| {row['name']}", str(row["nfe"]), ", ".join(sorted(measured)), *fd, *cells]) + " |")
    return "\n".join(lines)


def report(per_threads: list[dict], args: argparse.Namespace) -> str:
    import diffusers

    student = f", student `{args.student}`" if args.student else " (no student: few-step rows are the teacher's sampler)"
    out = ["# Latency of few-step sampling", "",
           (f"`python benchmarks/latency.py {' '.join(sys.argv[1:])}` on {machine()}, {date.today()}, torch "
            f"{torch.__version__}, diffusers {diffusers.__version__}; run `{args.run}`{student}. Median of "
            f"{args.repeats} calls after one warm-up, the rows' calls interleaved; each thread count in a fresh "
            "process. Each turn of a row times two calls in a row; the table gives the second (a caller sampling "
            "one model again and again), the ratios also the first (right after another row, whose network pushed "
            "this one's weights out of the CPU caches, a cost that a 2-call draw carries ten times more of than a "
            "20-step loop). The machine may be shared: read the ratios, measured side by side, rather than the "
            "absolute times."), "",
           table(per_threads), "", "Ratios (diffusers' loop time over noisecraft's few-step time, same network):"]
    for batch in map(str, args.batch):
        out += ratio_lines(per_threads, batch)
    rows = per_threads[0]["rows"]
    if "fd" in rows[0]:
        fast = next((r for r in rows if r["nfe"] == 2), None)
        ref = rows[-2]
        if fast is not None:
            out += ["", (f"FD at 2 NFE {fast['fd']:.2f} vs the teacher's {ref['nfe']}-NFE sampler {ref['fd']:.2f}: "
                         f"{fast['fd'] / ref['fd']:.2f}x (issue 17 target for the student <= 1.5x).")]
    loop = __doc__.split("- `diffusers DPM++2M 20 steps`: ")[1].split("\n\n")[0]
    out += ["", "What the diffusers row does: " + " ".join(loop.split()).replace("20", str(args.reference_nfe))]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, default=Path("/work/runs/digits"), help="the teacher run directory")
    p.add_argument("--student", type=Path, default=None, help="a distilled student run timed at the few-step NFEs")
    p.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    p.add_argument("--batch", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--threads", type=int, nargs="+", default=list(THREADS))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--reference-nfe", type=int, default=DIFFUSERS_STEPS, help="diffusers' steps (and the teacher's NFE)")
    p.add_argument("--fd", action="store_true", help=f"score a {FD_SAMPLES}-sample draw of each row (slower)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    for name in ("nfe", "batch", "threads"):
        if any(v < 1 for v in getattr(args, name)):
            raise SystemExit(f"--{name} values must be >= 1, got {getattr(args, name)}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.worker is not None:
        torch.set_num_threads(args.worker)
        print(json.dumps(measure(args.run, args.student, args.nfe, args.batch, args.repeats, args.reference_nfe,
                                 args.fd)))
        return
    per_threads = []
    for i, k in enumerate(args.threads):
        print(f"timing on {k} thread(s)...", flush=True)
        per_threads.append(in_subprocess(k, args, fd=args.fd and i == 0))
    text = report(per_threads, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
