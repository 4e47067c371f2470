"""Benchmark (not a test): noisecraft's digits trainer against the diffusers training recipe, same network,
same batch, same budget, on one machine.

Recipes (one job each per seed):
- `diffusers`: diffusers' examples/unconditional_image_generation/train_unconditional.py with its own
  defaults: UNet2DModel (channels 32/64/64, attention at 2x2, 1.6M parameters), DDPMScheduler (1000 linear
  betas, eps-prediction, uniform timesteps, MSE), AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6),
  500 warm-up steps then cosine to 0 over the budget, gradient clipping at 1, EMAModel with warm-up (max
  decay 0.9999, inv_gamma 1, power 3/4). This is the issue's anchor recipe.
- `diffusers-matched`: the same model, scheduler, loss and EMA, but noisecraft's optimiser settings (lr 2e-3,
  betas 0.9/0.999, 100 warm-up steps, cosine to 5%): isolates what the loss and parameterisation add.
- `noisecraft`: `noisecraft demo`'s config (EDM loss and preconditioning, EMA with warm-up, x0 clipped to
  [-1, 1] while sampling); `--set key=value` overrides any of its config keys (e.g. `train.lr=3e-3`).

Every model is sampled with noisecraft's DPM-Solver++(2M) at 10, 20 and 50 steps (the diffusers models
through Denoiser(time_input="timestep") on their DiscreteVP table), 500 samples with the job's seed, and
scored by noisecraft.metrics.digits against the 500 test images.

    .venv/bin/python benchmarks/train_digits.py --minutes 8 --seeds 0 1 2 --jobs 2

Jobs run in `--jobs` processes of one thread each. With `--clock process` (the default) each job's budget
is CPU time, so jobs running side by side, or beside other work, still get the same compute; images/s is
then per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import yaml

from noisecraft.core.denoiser import Denoiser
from noisecraft.core.schedules import DiscreteVP
from noisecraft.metrics.digits import evaluate_digits, floor
from noisecraft.nets import count_parameters
from noisecraft.runs.config import RunConfig, TrainConfig, config_from_dict
from noisecraft.runs.demo import demo_config
from noisecraft.runs.loop import batch_indices, learning_rate
from noisecraft.runs.pipeline import load_run
from noisecraft.runs.train import train
from noisecraft.solvers import sample
from noisecraft.viz.plots import save_image_grids

STEPS = (10, 20, 50)
RECIPES = ("diffusers", "diffusers-matched", "noisecraft")
EXAMPLE_OPTIMISER = {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "warmup_steps": 500, "min_lr_ratio": 0.0}


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply dotted `section.key=value` overrides (values parsed as YAML) and re-validate."""
    raw = cfg.model_dump(mode="json")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return config_from_dict(raw, source="overrides")


def _clock(tc: TrainConfig):
    return time.perf_counter if tc.clock == "wall" else time.process_time


def score(draw_at, out: Path, title: str) -> dict:
    """Digits metrics of 500 samples at each step count; the first 100 at 20 steps saved as out/samples20.png."""
    scores = {}
    for s in STEPS:
        x = draw_at(s)
        scores[s] = evaluate_digits(x)
        if s == 20:
            out.mkdir(parents=True, exist_ok=True)
            save_image_grids(out / "samples20.png", [(f"{title}, DPM-Solver++ 20 steps", x[:100].numpy())])
    return scores


def run_noisecraft(cfg: RunConfig, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    clock = _clock(cfg.train)
    start = clock()
    result = train(cfg, out, progress=False)
    seconds = clock() - start
    run = load_run(out)
    scores = score(lambda s: run.sample(500, "dpm++2m", s, seed=cfg.train.seed), out, f"noisecraft, seed {cfg.train.seed}")
    return {"steps_trained": result.step, "images_per_s": result.step * cfg.train.batch_size / seconds,
            "params": count_parameters(run.net), "scores": scores}


def run_diffusers(tc: TrainConfig, out: Path, title: str) -> dict:
    """The diffusers unconditional-training loop with optimiser settings `tc`, trained for tc.minutes."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    from noisecraft.data.digits import load_digits_split

    torch.manual_seed(tc.seed)
    x, _ = load_digits_split("train")
    data = torch.from_numpy(x)
    model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                        layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay, eps=1e-8)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    budget = 60.0 * tc.minutes
    clock = _clock(tc)
    g = torch.Generator().manual_seed(tc.seed)
    start, step = clock(), 0
    while clock() - start < budget:
        for group in opt.param_groups:
            group["lr"] = learning_rate(tc, step, (clock() - start) / budget)
        clean = data[batch_indices(len(data), tc.batch_size, step, tc.seed)]
        noise = torch.randn(clean.shape, generator=g)
        timesteps = torch.randint(0, 1000, (clean.shape[0],), generator=g)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(model(noisy, timesteps).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        ema.step(model.parameters())
        step += 1
    seconds = clock() - start
    ema.copy_to(model.parameters())
    model.eval()
    schedule = DiscreteVP()
    den = Denoiser.from_eps(lambda xt, n: model(xt, n).sample, schedule, time_input="timestep")
    with torch.no_grad():
        scores = score(lambda s: sample(den, schedule, "dpm++2m", s, shape=(500, 1, 8, 8),
                                        generator=torch.Generator().manual_seed(tc.seed)).float(), out, title)
    return {"steps_trained": step, "images_per_s": step * tc.batch_size / seconds,
            "params": count_parameters(model), "scores": scores}


def run_job(job: tuple[str, RunConfig, str]) -> dict:
    """One (recipe, config) job in its own process, on one thread."""
    recipe, cfg, out = job
    torch.set_num_threads(1)
    tc = cfg.train
    if recipe == "noisecraft":
        result = run_noisecraft(cfg, Path(out))
    elif recipe == "diffusers":
        result = run_diffusers(tc.model_copy(update=EXAMPLE_OPTIMISER), Path(out), f"{recipe}, seed {tc.seed}")
    else:
        result = run_diffusers(tc, Path(out), f"{recipe}, seed {tc.seed}")
    print(f"done: {recipe} seed {tc.seed}: FD@20 {result['scores'][20]['digits_fd']:.2f}", flush=True)
    return {"recipe": recipe, "seed": tc.seed, **result}


def summary(rows: list[dict], recipe: str) -> dict:
    """Mean and (n>1) standard deviation over seeds of every reported figure."""
    mine = [{**r, "scores": {int(k): v for k, v in r["scores"].items()}} for r in rows if r["recipe"] == recipe]
    figures = {"images_per_s": [r["images_per_s"] for r in mine], "steps": [r["steps_trained"] for r in mine]}
    for s in STEPS:
        figures[f"fd{s}"] = [r["scores"][s]["digits_fd"] for r in mine]
    figures["p20"] = [r["scores"][20]["precision"] for r in mine]
    figures["r20"] = [r["scores"][20]["recall"] for r in mine]
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in figures.items()}


def cell(mean_sd: tuple[float, float], fmt: str, spread: bool) -> str:
    mean, sd = mean_sd
    return f"{mean:{fmt}}" + (f" ± {sd:{fmt}}" if spread else "")


def print_table(results: dict) -> None:
    rows = results["jobs"]
    print(f"\n{results['date']}, {results['machine']}, {results['minutes']:g} min ({results['clock']} clock) per job, "
          f"seeds {results['seeds']}, floor FD {results['floor']['digits_fd']:.2f}")
    print("| recipe | params | train img/s | steps | FD@10 | FD@20 | FD@50 | P@20 | R@20 |")
    print("|---|---|---|---|---|---|---|---|---|")
    stats = {}
    for recipe in results["recipes"]:
        st = stats[recipe] = summary(rows, recipe)
        params = next(r["params"] for r in rows if r["recipe"] == recipe)
        cells = [cell(st[key], fmt, len(results["seeds"]) > 1) for key, fmt in (
            ("images_per_s", ".0f"), ("steps", ".0f"), ("fd10", ".1f"), ("fd20", ".1f"), ("fd50", ".1f"),
            ("p20", ".2f"), ("r20", ".2f"))]
        print(f"| {recipe} | {params / 1e6:.2f}M | " + " | ".join(cells) + " |")
    if "noisecraft" in stats:
        n = stats["noisecraft"]
        for base in ("diffusers", "diffusers-matched"):
            if base in stats:
                d = stats[base]
                print(f"noisecraft / {base}: FD@20 {n['fd20'][0] / d['fd20'][0]:.2f} (target <= 0.8), "
                      f"throughput {n['images_per_s'][0] / d['images_per_s'][0]:.2f} (target >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per job")
    parser.add_argument("--clock", choices=("wall", "process"), default="process")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--jobs", type=int, default=1, help="jobs run side by side, one thread each")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override noisecraft's config, e.g. --set train.lr=3e-3 --set loss.p_mean=-0.8")
    parser.add_argument("--out", default="runs/bench_train_digits")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the table of a saved results.json and stop")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    base = with_overrides(demo_config(minutes=args.minutes), args.overrides)
    out = Path(args.out)
    jobs = []
    for seed in args.seeds:
        cfg = base.model_copy(update={"train": base.train.model_copy(
            update={"num_threads": 1, "clock": args.clock, "seed": seed})})
        jobs += [(recipe, cfg, str(out / f"{recipe}-seed{seed}")) for recipe in args.recipes]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        rows = pool.map(run_job, jobs, chunksize=1)
    results = {"date": str(date.today()), "machine": f"{platform.machine()} {platform.processor() or ''}, "
               f"one thread per job, {args.jobs} job(s) at a time, torch {torch.__version__}",
               "minutes": args.minutes, "clock": args.clock, "seeds": args.seeds, "recipes": args.recipes,
               "overrides": args.overrides, "floor": floor(), "jobs": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results)


if __name__ == "__main__":
    main()
