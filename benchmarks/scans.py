"""Accelerated MRI with a diffusion patch prior: PSNR / SSIM of DPS, DDNM and moment matching against zero
filling (A^+ y) and total-variation reconstruction, at 4x and 8x acceleration, measured in the same run.

The prior is a small UNet trained here (CPU, a process-time budget) on 32x32 grayscale patches of the
micrographs and photographs scikit-image ships (noisecraft.data.scans); the test images are tiles of the
held-out strip of each (never seen in training) and the Shepp-Logan phantom. y = M F x + sigma_y n with a
fastMRI-style Cartesian mask or a radial one (noisecraft.guide.fourier). TV's lambda and DPS's zeta are chosen
on patches of the validation image (the cameraman), which is neither trained on nor tested. `--samples K`
scores the mean of K posterior samples per image (the posterior-mean estimate) instead of one sample.

    OMP_NUM_THREADS=1 python benchmarks/scans.py --masks cartesian --out cartesian.md   # trains runs/scans first
    OMP_NUM_THREADS=1 python benchmarks/scans.py --methods DDNM --samples 8 --out ddnm_mean.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import noisecraft as nc
from noisecraft.data.scans import heldout_patches, phantom, train_patches, validation_patches
from noisecraft.guide.fourier import Fourier, kspace_mask
from noisecraft.guide.measurements import Measurement, measure
from noisecraft.guide.tv import tv_reconstruct

METHODS = ("zero-filled", "TV", "DDNM", "DPS", "MMPS")
TV_WEIGHTS = (0.003, 0.01, 0.02, 0.04, 0.08)
DPS_ZETAS = (1.0, 3.0, 10.0, 30.0)


def train_prior(run: Path, minutes: float, seed: int = 0) -> None:
    """A 0.6M-parameter UNet (16/32/64 channels, no attention), EDM loss, on the training patches."""
    from noisecraft.nets import NetConfig
    from noisecraft.runs.config import TrainConfig, preset_config
    from noisecraft.runs.train import train
    from noisecraft.solvers.config import SolverConfig

    run.mkdir(parents=True, exist_ok=True)
    data = run.parent / f"{run.name}_patches.npy"
    np.save(data, train_patches())
    cfg = preset_config(str(data), "edm", minutes=minutes, batch_size=16, lr=2e-3, seed=seed)
    train_cfg = TrainConfig(**{**cfg.train.model_dump(), "clock": "process", "num_threads": 1, "checkpoint_every": 500})
    cfg = cfg.model_copy(update={"model": NetConfig(block_channels=[16, 32, 64], attention=[False] * 3, layers_per_block=1),
                                 "sample": SolverConfig(clip=1.0), "train": train_cfg})
    train(cfg, run, progress=False, overwrite=True)


def psnr_ssim(x: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM (Wang et al. 2004; skimage) on [0, 1] intensities."""
    from skimage.metrics import structural_similarity

    a = ((x.double().clamp(-1, 1) + 1) / 2).numpy()[:, 0]
    b = ((ref.double() + 1) / 2).numpy()[:, 0]
    mse = ((a - b) ** 2).mean((1, 2))
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-12))
    ssim = np.array([structural_similarity(u, v, data_range=1.0) for u, v in zip(a, b)])
    return psnr, ssim


def reconstruct(pipe, method: str, meas, n: int, steps: int, seed: int, lam: float, zeta: float,
                samples: int = 1) -> torch.Tensor:
    """One reconstruction per image; for a diffusion method with samples > 1, the mean of that many posterior
    samples (an estimate of the posterior mean, the PSNR-optimal answer)."""
    if method == "zero-filled":
        return meas.operator.pinv(meas.y).float()
    if method == "TV":
        return tv_reconstruct(meas, lam, (n, *pipe.sample_shape), iters=500).float()
    repeated = Measurement(meas.operator, meas.y.repeat_interleave(samples, 0), meas.sigma)
    x = pipe.restore(repeated, {"DDNM": "ddnm", "DPS": "dps", "MMPS": "mmps"}[method], n=n * samples, steps=steps,
                     seed=seed, zeta=zeta)
    return x.reshape(n, samples, *x.shape[1:]).mean(1)


def observe(x: torch.Tensor, mask: torch.Tensor, sigma_y: float, seed: int):
    return measure(Fourier(mask), x.double(), sigma_y, torch.Generator().manual_seed(seed))


def choose(pipe, method: str, grid, key: str, val: torch.Tensor, mask, args) -> float:
    """The value of `grid` with the best mean PSNR on the validation patches."""
    meas = observe(val, mask, args.sigma_y, 100)
    scores = []
    for v in grid:
        kw = {"lam": 0.0, "zeta": 1.0, key: v}
        x = reconstruct(pipe, method, meas, len(val), args.steps, 100, **kw)
        scores.append(psnr_ssim(x, val)[0].mean())
    return float(grid[int(np.argmax(scores))])


def save_figure(path: str, rows: dict[str, list[torch.Tensor]]) -> None:
    """One row per method (the first is the truth), one column block per (mask, R), 2x nearest upsampling."""
    from PIL import Image

    tiles = []
    for blocks in rows.values():
        row = [torch.cat(list(b[:, 0].float().clamp(-1, 1)), dim=1) for b in blocks]
        tiles.append(torch.cat([torch.nn.functional.pad(r, (0, 4), value=1.0) for r in row], dim=1))
    img = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, 2), value=1.0) for t in tiles], dim=0)
    arr = ((img.repeat_interleave(2, 0).repeat_interleave(2, 1) + 1) * 127.5).round().byte().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    print(f"wrote {path}: rows {list(rows)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/scans", help="run directory of the prior (trained if it has no checkpoint)")
    parser.add_argument("--minutes", type=float, default=7.0, help="training budget in process CPU minutes")
    parser.add_argument("--steps", type=int, default=100, help="DDPM steps of the diffusion methods")
    parser.add_argument("--accelerations", default="4,8")
    parser.add_argument("--masks", default="cartesian,radial", help="k-space masks, comma-separated")
    parser.add_argument("--sigma-y", type=float, default=0.01, help="k-space noise std in [-1, 1] pixel units")
    parser.add_argument("--per-image", type=int, default=4, help="held-out tiles per source image")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--samples", type=int, default=1, help="diffusion methods: average this many posterior samples")
    parser.add_argument("--out", default=None, help="markdown file for the tables")
    parser.add_argument("--figure", default="docs/benchmarks/scans/recon.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = Path(args.run)
    t0 = time.process_time()
    if not (run / "checkpoints").is_dir():
        train_prior(run, args.minutes)
    train_cpu = time.process_time() - t0
    pipe = nc.load_run(run)
    tiles, names = heldout_patches(per_image=args.per_image)
    test = torch.from_numpy(np.concatenate([tiles, phantom()]))
    names = [*names, "phantom"]
    is_phantom = np.array([n == "phantom" for n in names])
    val = torch.from_numpy(validation_patches(n=4))
    n, (h, w) = len(test), test.shape[-2:]

    train_cfg = pipe.config.train
    lines = ["# Accelerated MRI on held-out scan patches", "",
             (f"{datetime.date.today()}, {platform.machine()} CPU, 1 thread, torch {torch.__version__}; prior trained "
              f"{train_cfg.minutes:g} {train_cfg.clock}-clock minutes on {len(train_patches())} patches (run {run}); "
              f"{n - 1} held-out tiles of {len({s.split(':')[0] for s in names}) - 1} images + the phantom, "
              f"{h}x{w}; sigma_y = {args.sigma_y}; DDPM {args.steps} steps, "
              f"{'one sample' if args.samples == 1 else f'the mean of {args.samples} samples'} per image."),
             (f"Command: `OMP_NUM_THREADS=1 python benchmarks/scans.py --masks {args.masks} --steps {args.steps} "
              f"--methods {args.methods} --samples {args.samples} --out ...`"), ""]
    sources = list(dict.fromkeys(s.split(":")[0] for s in names))
    of = {src: [i for i, name in enumerate(names) if name.split(":")[0] == src] for src in sources}
    shown = [of[src][min(1, len(of[src]) - 1)] for src in sources]  # each source's second tile, if any
    figure: dict[str, list[torch.Tensor]] = {"truth": []}
    se = lambda v: v.std(ddof=1) / math.sqrt(len(v))
    for kind, R in [(k, float(r)) for k in args.masks.split(",") for r in args.accelerations.split(",")]:
        mask = kspace_mask(kind, (h, w), R, seed=0)
        methods = args.methods.split(",")
        lam = choose(pipe, "TV", TV_WEIGHTS, "lam", val, mask, args) if "TV" in methods else 0.0
        zeta = choose(pipe, "DPS", DPS_ZETAS, "zeta", val, mask, args) if "DPS" in methods else 1.0
        meas = observe(test, mask, args.sigma_y, 0)
        chosen = [f"{name} {v:g}" for name, v, m in (("TV lambda", lam, "TV"), ("DPS zeta", zeta, "DPS")) if m in methods]
        lines += [(f"## {kind} mask, R = {R:g} (measured share {float(mask.mean()):.3f}"
                   + (f"; {', '.join(chosen)}, chosen on the validation image)" if chosen else ")")), "",
                  "| method | PSNR scans (dB) | SSIM scans | PSNR phantom | SSIM phantom | CPU s |",
                  "|---|---|---|---|---|---|"]
        figure["truth"].append(test[shown])
        scores, paired = {}, []
        for method in methods:
            c = time.process_time()
            x = reconstruct(pipe, method, meas, n, args.steps, 0, lam, zeta, args.samples)
            if args.samples > 1 and method in ("DDNM", "DPS", "MMPS"):
                method = f"{method} (mean of {args.samples})"
            secs = time.process_time() - c
            psnr, ssim = psnr_ssim(x, test)
            s, p = ~is_phantom, is_phantom
            lines.append(f"| {method} | {psnr[s].mean():.2f} ± {se(psnr[s]):.2f} | {ssim[s].mean():.3f} ± "
                         f"{se(ssim[s]):.3f} | {psnr[p].mean():.2f} | {ssim[p].mean():.3f} | {secs:.0f} |")
            print(lines[-1], flush=True)
            figure.setdefault(method, []).append(x[shown])
            scores[method] = psnr[s]
        for method, v in scores.items():  # per-tile differences: the tiles' own spread cancels
            if "TV" in scores and method not in ("TV", "zero-filled"):
                d = v - scores["TV"]
                paired.append(f"{method} {d.mean():+.2f} ± {se(d):.2f} dB (better on {int((d > 0).sum())} of {len(d)})")
        lines += ["", "Paired against TV on the same tiles: " + "; ".join(paired) + "."] if paired else []
        lines.append("")
    lines += [(f"Training: {train_cpu / 60:.1f} CPU minutes in this process (0 if the run existed). "
               "± is the standard error over the held-out tiles."
               + (f" Figure: {args.figure}, one row per method, one column block per (mask, R) in table order; "
                  f"columns {', '.join(sources)}." if args.figure else ""))]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.figure:
        save_figure(args.figure, figure)


if __name__ == "__main__":
    main()
