"""Benchmark (not a test): latent against pixel diffusion on 32x32 digits, and the DiT against the UNet on latents.

Jobs, each one thread in its own process, budgets in CPU seconds (`clock: process`), up to three at a time
(a model is sampled as soon as it is trained; `--reuse` keeps runs a previous call finished):
1. the autoencoder (noisecraft.runs.vae, default config, batch 32) for `--vae-minutes`; its reconstruction PSNR on the
   500 test images (peak-to-peak 2, the [-1, 1] range);
2. beside it, the pixel model: the default UNet (32/64/64) and EDM preset on digits32, `--minutes`, batch
   `--batch-size` (64) as every diffusion model;
3. then the latent UNet (the same default NetConfig, on the 4 x 8 x 8 scaled latents) and a latent DiT
   (patch 1, width 128, depth chosen for the UNet's parameter count), `--minutes` each.

Each model draws `--n` samples (kept as OUT/NAME-samples.npy) with the default solver (DPM-Solver++(2M),
20 steps) in batches of 100 in a fresh process: CPU seconds per image (one thread) and the peak resident
memory the sampling adds (the kernel's peak-RSS mark, reset after a warm-up draw, minus the resident size
before). Samples are scored with the digits metrics (noisecraft.metrics.digits) after `to_digits8`, the
least-squares inverse of the 8 -> 32 upsampling (exact on digits32, so the floor is the 8x8 one: 500 train
images through the round trip).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --minutes 3 --vae-minutes 3
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

OUT = Path("runs/bench-latent")
DOC = Path("docs/benchmarks/latent.md")
PICTURE = Path("docs/benchmarks/latent/side_by_side.png")


def _status_mb(key: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def vae_job(run: str, minutes: float, seed: int) -> dict:
    from noisecraft.runs.vae import train_vae, vae_config

    torch.set_num_threads(1)
    cfg = vae_config("digits32", minutes=minutes, seed=seed, clock="process", checkpoint_every=10_000)
    result = train_vae(cfg, run, overwrite=True, progress=False)
    return {"steps": result.step, "scaling_factor": result.scaling_factor}


def diffusion_job(run: str, minutes: float, seed: int, latent: str | None, model: dict, batch: int) -> dict:
    from noisecraft.nets import count_parameters
    from noisecraft.runs.config import config_from_dict, preset_config
    from noisecraft.runs.latent import latent_run
    from noisecraft.runs.train import train

    torch.set_num_threads(1)
    raw = preset_config("digits32", "edm", minutes=minutes, seed=seed, clock="process", batch_size=batch,
                        checkpoint_every=10_000).model_dump(mode="json")
    raw["model"].update(model)
    cfg = config_from_dict(raw)
    cfg = latent_run(cfg, latent) if latent else cfg
    result = train(cfg, run, overwrite=True, progress=False)
    return {"steps": result.step, "parameters": count_parameters(result.model)}


def sample_job(run: str, n: int, seed: int) -> dict:
    """In a fresh process: n samples in batches of 100, CPU seconds per image, and the peak resident memory that
    sampling adds: after a warm-up draw (lazy imports, first-call allocations), the kernel's peak-RSS mark is
    reset (/proc/self/clear_refs 5) and read again after the batches."""
    torch.set_num_threads(1)
    from noisecraft.runs.pipeline import load_run

    pipe = load_run(run)
    pipe.sample(2, seed=10_000)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS:")
    start, parts = time.process_time(), []
    for k in range(math.ceil(n / 100)):
        parts.append(pipe.sample(min(100, n - 100 * k), seed=seed + k))
    seconds = time.process_time() - start
    peak = _status_mb("VmHWM:")
    return {"x": torch.cat(parts).numpy(), "s_per_image": seconds / n, "peak_mb": max(peak - before, 0.0)}


def finished(run: Path) -> dict | None:
    """What a job returns, read from a run that a previous invocation finished (`--reuse`), else None."""
    from noisecraft.runs.checkpoint import latest_checkpoint

    last = latest_checkpoint(run / "checkpoints")
    if last is None or not (run / "config.yaml").is_file():
        return None
    steps = json.loads((last / "state.json").read_text())["step"]
    if (run / "data.json").is_file() and run.name == "vae":
        from noisecraft.runs.vae import load_vae_config

        scale = load_vae_config(run / "config.yaml").scaling_factor
        return None if scale is None else {"steps": steps, "scaling_factor": scale}
    from noisecraft.nets import count_parameters
    from noisecraft.runs.pipeline import load_run

    return {"steps": steps, "parameters": count_parameters(load_run(run).net)}


class _Done:
    """A finished job's result behind the AsyncResult call `get()`."""

    def __init__(self, value: dict) -> None:
        self.value = value

    def get(self) -> dict:
        return self.value


def reconstruction_psnr(vae_run: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """PSNR (peak-to-peak 2) of the autoencoder's reconstructions of the 500 test images; the first 16 of them
    and of their reconstructions."""
    from noisecraft.data.digits import load_digits_split
    from noisecraft.runs.latent import codec_from_run

    codec = codec_from_run(vae_run)
    x = torch.from_numpy(load_digits_split("test", 32)[0])
    recon = codec.decode(codec.encode(x))
    mse = float((recon - x).double().square().mean())
    return 10 * math.log10(4.0 / mse), x[:16].numpy(), recon[:16].numpy()


def dit_model_matching(unet_params: int, latent_shape: tuple[int, int, int], num: int = 128) -> dict:
    """A DiT (patch 1, width `num`) whose depth brings its parameter count closest to the UNet's."""
    from noisecraft.nets import NetConfig, count_parameters

    def params(depth: int) -> int:
        return count_parameters(NetConfig(kind="dit", width=num, depth=depth, patch_size=1).build(latent_shape))

    depth = min(range(1, 24), key=lambda d: abs(params(d) - unet_params))
    return {"kind": "dit", "width": num, "depth": depth, "patch_size": 1, "heads": 4}


def score(x: np.ndarray) -> dict:
    from noisecraft.data.digits import to_digits8
    from noisecraft.metrics.digits import evaluate_digits

    return evaluate_digits(to_digits8(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU minutes per diffusion model")
    parser.add_argument("--vae-minutes", type=float, default=3.0, help="CPU minutes for the autoencoder")
    parser.add_argument("--n", type=int, default=500, help="samples per model")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch of every diffusion model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--reuse", action="store_true", help="keep runs in --out that a previous call finished")
    args = parser.parse_args()
    from noisecraft.data.digits import load_digits_split, upsample32
    from noisecraft.viz.plots import save_image_grids

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    from noisecraft.nets import NetConfig, count_parameters

    latent_shape = (4, 8, 8)
    dit_model = dit_model_matching(count_parameters(NetConfig().build(latent_shape)), latent_shape)
    jobs = {"vae": (vae_job, (str(out / "vae"), args.vae_minutes, args.seed)),
            "pixel": (diffusion_job, (str(out / "pixel"), args.minutes, args.seed, None, {}, args.batch_size)),
            "latent-unet": (diffusion_job, (str(out / "latent-unet"), args.minutes, args.seed, str(out / "vae"), {},
                                            args.batch_size)),
            "latent-dit": (diffusion_job, (str(out / "latent-dit"), args.minutes, args.seed, str(out / "vae"),
                                           dit_model, args.batch_size))}
    # a fresh process per task (sampling memory is measured per process); a model is sampled as soon as it is
    # trained, beside the training still running
    with ctx.Pool(3, maxtasksperchild=1) as pool:
        def start(name: str):
            done = finished(out / name) if args.reuse else None
            return _Done(done) if done is not None else pool.apply_async(*jobs[name])

        def draw(name: str):
            return pool.apply_async(sample_job, (str(out / name), args.n, args.seed))

        vae, pixel = start("vae"), start("pixel")
        trained = {"pixel": pixel.get()}
        draws = {"pixel": draw("pixel")}
        vae = vae.get()
        latent = {name: start(name) for name in ("latent-unet", "latent-dit")}
        for name, job in latent.items():
            trained[name] = job.get()
            draws[name] = draw(name)
        draws = {name: job.get() for name, job in draws.items()}
    psnr, originals, recons = reconstruction_psnr(out / "vae")
    rows, samples = {}, {}
    for name, info in trained.items():
        drawn = draws[name]
        samples[name] = drawn.pop("x")
        np.save(out / f"{name}-samples.npy", samples[name])
        rows[name] = {**info, **drawn, **score(samples[name])}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "class_histogram"}), flush=True)
    train8 = load_digits_split("train")[0]
    pick = np.random.default_rng(0).choice(len(train8), size=500, replace=False)
    floor = score(upsample32(train8[pick]))
    save_image_grids(PICTURE if args.doc == DOC else args.out / "side_by_side.png", [
        ("test images", originals), ("VAE reconstructions", recons),
        ("latent diffusion (UNet)", samples["latent-unet"][:16]), ("pixel diffusion (UNet)", samples["pixel"][:16]),
        ("latent diffusion (DiT)", samples["latent-dit"][:16])], scale=0.05)
    result = {"psnr": psnr, "vae": vae, "rows": rows, "floor": floor, "dit": dit_model, "args": vars(args),
              "wall_s": time.perf_counter() - wall}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    write_doc(args.doc, result)
    print(args.doc.read_text())


def write_doc(path: Path, r: dict) -> None:
    px, lu, ld = (r["rows"][k] for k in ("pixel", "latent-unet", "latent-dit"))
    a = r["args"]
    line = ("| {name} | {parameters:,} | {steps} | {digits_fd:.2f} | {precision:.3f} | {recall:.3f} | "
            "{ms:.1f} | {ips:.1f} | {peak_mb:.0f} |")
    table = "\n".join(line.format(name=name, ms=1000 * row["s_per_image"], ips=1 / row["s_per_image"], **row)
                      for name, row in (("pixel UNet (1 x 32 x 32)", px), ("latent UNet (4 x 8 x 8)", lu),
                                        ("latent DiT (4 x 8 x 8)", ld)))
    fd_ratio, time_ratio, mem_ratio = (lu["digits_fd"] / px["digits_fd"], lu["s_per_image"] / px["s_per_image"],
                                       lu["peak_mb"] / max(px["peak_mb"], 1e-9))
    text = f"""# Latent against pixel diffusion on 32x32 digits

`benchmarks/latent.py`, {date.today().isoformat()}, {platform.machine()}, torch {torch.__version__}, up to three
one-thread jobs side by side; budgets are CPU time (`clock: process`), so other work on the machine slows the
wall clock, not the compute each model gets, and times per image are CPU seconds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --minutes {a['minutes']:g} --vae-minutes {a['vae_minutes']:g}

Data: `digits32`, scikit-learn's 8x8 digits (1,297 train images) upsampled 4x by bilinear interpolation.
Autoencoder: the default `noisecraft vae train` (AutoencoderKL, channels 16/32/32, 4 latent channels,
factor 4, KL weight 1e-3, batch 32), {a['vae_minutes']:g} CPU minutes, {r['vae']['steps']} steps; latent
scaling factor {r['vae']['scaling_factor']:.4f}; reconstruction PSNR on the 500 test images
**{r['psnr']:.2f} dB**.

Each diffusion model: the `edm` preset, batch {a['batch_size']}, {a['minutes']:g} CPU minutes. Sampling: DPM-Solver++(2M), 20 steps
(the run default), {a['n']} samples in batches of 100, one thread; time is CPU seconds per image (the
latent rows include decoding); peak memory is what sampling batches of 100 adds to the process's resident
size (peak RSS reset after a warm-up draw). digits-FD is on the samples taken back to 8x8 by the
least-squares inverse of the bilinear upsampling (`noisecraft.data.digits.to_digits8`); floor (500 train
images through the 8 -> 32 -> 8 round trip, which that inverse makes exact): FD {r['floor']['digits_fd']:.2f}, precision {r['floor']['precision']:.3f},
recall {r['floor']['recall']:.3f}.

| model | parameters | train steps | digits-FD | precision | recall | ms / image | images / s | peak MB |
|---|---|---|---|---|---|---|---|---|
{table}

Latent UNet against the pixel UNet (the anchor): FD ratio {fd_ratio:.2f} (target <= 1.2), sampling time
ratio {time_ratio:.2f} (target <= 0.5), peak memory ratio {mem_ratio:.2f} (target <= 0.5).

DiT against UNet on the same latents at about equal parameters (DiT: patch 1, width {r['dit']['width']},
depth {r['dit']['depth']}, 4 heads, adaLN-Zero) and equal CPU time: FD {ld['digits_fd']:.2f} against
{lu['digits_fd']:.2f}, {1 / ld['s_per_image']:.1f} against {1 / lu['s_per_image']:.1f} images/s.

![test images, reconstructions, latent and pixel samples](latent/side_by_side.png)

Wall time of the whole benchmark: {r['wall_s'] / 60:.1f} min.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
