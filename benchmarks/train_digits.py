"""Benchmark (not a test): noisecraft's digits trainer against the diffusers training recipe, same network,
same batch, same wall-clock budget, run in turn on one machine.

diffusers recipe: UNet2DModel (channels 32/64/64, attention at 2x2, 1.6M parameters), DDPMScheduler
(1000 linear betas, eps-prediction, uniform timesteps, MSE), AdamW, EMAModel with warm-up (decay 0.9999,
inv_gamma 1, power 3/4), as in diffusers' examples/unconditional_image_generation. noisecraft: the demo
config (EDM loss and preconditioning, EMA with warm-up, x0 clipping at sampling). Both share the learning
rate, warm-up and cosine-over-the-budget schedule and gradient clipping. Both are sampled with noisecraft's
DPM-Solver++(2M) at 10, 20 and 50 steps (the diffusers model through Denoiser(time_input="timestep")),
500 samples, seed 0, and scored with the digits metrics (noisecraft.metrics.digits).

    .venv/bin/python benchmarks/train_digits.py --minutes 8 --threads 1 [--clock process]

On a machine shared with other work, `--clock process` gives each recipe the same CPU time instead of
the same wall-clock time (with one thread they coincide on an idle machine); images/s is then per
CPU-second.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import torch

from noisecraft.config import RunConfig
from noisecraft.demo import demo_config
from noisecraft.denoiser import Denoiser
from noisecraft.metrics.digits import evaluate_digits, floor
from noisecraft.nets import count_parameters
from noisecraft.sampling import draw, load_run
from noisecraft.schedules import DiscreteVP
from noisecraft.solvers import sample
from noisecraft.train import batch_indices, learning_rate, train

STEPS = (10, 20, 50)


def _clock(cfg: RunConfig):
    return time.perf_counter if cfg.train.clock == "wall" else time.process_time


def run_noisecraft(cfg: RunConfig, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    clock = _clock(cfg)
    start = clock()
    result = train(cfg, out)
    seconds = clock() - start
    run = load_run(out)
    scores = {s: evaluate_digits(draw(run, 500, "dpm++2m", s, seed=0)) for s in STEPS}
    return {"steps_trained": result.step, "images_per_s": result.step * cfg.train.batch_size / seconds,
            "params": count_parameters(run.net), "scores": scores}


def run_diffusers(cfg: RunConfig) -> dict:
    """The diffusers unconditional-training recipe, trained for the same budget."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    from noisecraft.data.digits import load_digits_split

    tc = cfg.train
    torch.manual_seed(tc.seed)
    x, _ = load_digits_split("train")
    data = torch.from_numpy(x)
    model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                        layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    budget = 60.0 * tc.minutes
    clock = _clock(cfg)
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
    scores = {}
    with torch.no_grad():
        for s in STEPS:
            xs = sample(den, schedule, "dpm++2m", s, shape=(500, 1, 8, 8), generator=torch.Generator().manual_seed(0))
            scores[s] = evaluate_digits(xs)
    return {"steps_trained": step, "images_per_s": step * tc.batch_size / seconds,
            "params": count_parameters(model), "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    parser.add_argument("--out", default="runs/bench_train_digits")
    parser.add_argument("--sigma-data", type=float, default=None,
                        help="override EDM's sigma_data for noisecraft (the digits' pixel std is 0.75)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = demo_config(args.minutes)
    if args.sigma_data is not None:
        cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"sigma_data": args.sigma_data})})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_threads": args.threads, "clock": args.clock})})
    out = Path(args.out)
    results = {"date": str(date.today()), "machine": f"{platform.machine()} {platform.processor() or ''} "
               f"{torch.get_num_threads()} thread(s), torch {torch.__version__}", "minutes": args.minutes, "clock": args.clock,
               "floor": floor()}
    results["diffusers"] = run_diffusers(cfg)
    results["noisecraft"] = run_noisecraft(cfg, out / "noisecraft")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{results['date']}, {results['machine']}, {args.minutes:g} min ({args.clock} clock) each, floor FD {results['floor']['digits_fd']:.2f}")
    print("| recipe | params | train img/s | steps | FD@10 | FD@20 | FD@50 | P@20 | R@20 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("diffusers", "noisecraft"):
        r = results[name]
        sc = r["scores"]
        print(f"| {name} | {r['params'] / 1e6:.2f}M | {r['images_per_s']:.0f} | {r['steps_trained']} | "
              + " | ".join(f"{sc[s]['digits_fd']:.1f}" for s in STEPS)
              + f" | {sc[20]['precision']:.2f} | {sc[20]['recall']:.2f} |")
    d, n = results["diffusers"], results["noisecraft"]
    print(f"FD@20 ratio noisecraft/diffusers {n['scores'][20]['digits_fd'] / d['scores'][20]['digits_fd']:.2f} (target <= 0.8), "
          f"throughput ratio {n['images_per_s'] / d['images_per_s']:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
