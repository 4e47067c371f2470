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

4. last, the default autoencoder on `skimage32` (patches of scikit-image's public-domain photographs) for
   `--skimage-minutes`: its reconstruction PSNR on the held-out test tiles beside two codes with as many numbers
   per image, PCA fitted on the training patches and bilinear down/upsampling (the anchors). `--skimage-only`
   runs this part alone and rewrites only its section of the page.
5. `--restoration-only` (alone, on the pixel and latent runs a previous call left in `--out`): x2 super-resolution
   of digits32 test images by the latent UNet through its decoder (DDNM, DPS, moment matching) against the pixel
   UNet (the anchor) and bilinear upsampling: PSNR, residual, CPU time per image; rewrites only its section.
6. `--pixel-dit-only` (alone): a DiT on pixels against the pixel UNet of the last full run in `--out`, at equal
   parameters and CPU budget; rewrites only its section.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --minutes 3 --vae-minutes 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --skimage-only --skimage-minutes 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --restoration-only --restoration-images 6
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --pixel-dit-only
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
#: the markers around the skimage32 section of the page, which `--skimage-only` rewrites alone
SKIMAGE = ("<!-- skimage32 -->", "<!-- /skimage32 -->")
#: the markers around the super-resolution section, which `--restoration-only` rewrites alone
RESTORATION = ("<!-- restoration -->", "<!-- /restoration -->")
#: the markers around the pixel DiT section, which `--pixel-dit-only` rewrites alone
PIXEL_DIT = ("<!-- pixel-dit -->", "<!-- /pixel-dit -->")


def _status_mb(key: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def vae_job(run: str, minutes: float, seed: int, data: str = "digits32") -> dict:
    from noisecraft.runs.vae import train_vae, vae_config

    torch.set_num_threads(1)
    cfg = vae_config(data, minutes=minutes, seed=seed, clock="process", checkpoint_every=10_000)
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
    if (run / "data.json").is_file() and run.name.startswith("vae"):
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


def _psnr(recon: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR in dB with peak-to-peak 2 (the [-1, 1] range)."""
    return 10 * math.log10(4.0 / float((recon.double() - x.double()).square().mean()))


def patch_psnr(vae_run: Path) -> dict:
    """PSNR on the skimage32 test tiles of the autoencoder and of two codes with as many numbers per image as its
    latent (the anchors): PCA fitted on the training patches (the best linear code of that size in squared
    error on its own data) and antialiased bilinear downsampling to a 1-channel image of that size and back."""
    import torch.nn.functional as F

    from noisecraft.data import load_patches
    from noisecraft.runs.latent import codec_from_run

    codec = codec_from_run(vae_run)
    train = torch.from_numpy(load_patches("skimage32", "train")).double().flatten(1)
    test = torch.from_numpy(load_patches("skimage32", "test"))
    k = math.prod(codec.latent_shape)
    mean = train.mean(0)
    basis = torch.linalg.svd(train - mean, full_matrices=False).Vh[:k]
    pca = ((test.double().flatten(1) - mean) @ basis.T @ basis + mean).reshape(test.shape).clamp(-1, 1)
    side = math.isqrt(k // test.shape[1])
    small = F.interpolate(test, size=side, mode="bilinear", antialias=True)
    bilinear = F.interpolate(small, size=test.shape[-1], mode="bilinear").clamp(-1, 1)
    return {"n_train": train.shape[0], "n_test": test.shape[0], "numbers": k, "side": side,
            "vae": _psnr(codec.decode(codec.encode(test)), test), "pca": _psnr(pca, test),
            "bilinear": _psnr(bilinear, test)}


def skimage_section(r: dict) -> str:
    """The skimage32 part of the page (between the SKIMAGE markers)."""
    p, a = r["psnr"], r["args"]
    return f"""{SKIMAGE[0]}
## A second real image set: skimage32

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --skimage-only --skimage-minutes {a['skimage_minutes']:g}

{r['date']}, {r['machine']}. `skimage32` ({p['n_train']:,} training patches, {p['n_test']} test tiles): 32x32 grayscale
patches of scikit-image's public-domain and CC0 photographs (docs/latent.md). The default autoencoder (as
above) trained {a['skimage_minutes']:g} CPU minutes ({r['vae']['steps']} steps, scaling factor
{r['vae']['scaling_factor']:.4f}); reconstruction PSNR on the held-out test tiles, against two codes with the same
{p['numbers']} numbers per image (the anchors, measured in the same call):

| code ({p['numbers']} numbers per 32x32 image) | test PSNR (dB) |
|---|---|
| autoencoder (4 x 8 x 8 latent) | **{p['vae']:.2f}** |
| PCA, {p['numbers']} components fitted on the training patches | {p['pca']:.2f} |
| bilinear down to {p['side']}x{p['side']} and back (antialiased) | {p['bilinear']:.2f} |

The autoencoder is {_versus(p['vae'], p['pca'])} PCA and {_versus(p['vae'], p['bilinear'])} bilinear resampling at
this budget. PCA is the best linear code of that size in squared error on the training patches, and these
textures and photographs hold much more high-frequency detail than the digits (whose autoencoder reaches
36.75 dB above); whether a longer budget closes the gap is not measured. Latent diffusion on `skimage32` is
not benchmarked here.

Wall time: {r['wall_s'] / 60:.1f} min{' (the autoencoder kept from an earlier call, `--reuse`)' if r.get('reused') else ''}.
{SKIMAGE[1]}"""


def _versus(a: float, b: float) -> str:
    return f"{abs(a - b):.2f} dB {'above' if a > b else 'below'}"


def restoration(out: Path, images: int, steps: int, seed: int) -> dict:
    """x2 super-resolution of the first `images` digits32 test images (y = 2x2 average pooling, noise-free) by
    the latent UNet (each method through the decoder) and by the pixel UNet (the anchor), one sample each, and
    bilinear upsampling of y: PSNR (peak-to-peak 2) against the true images, the residual ||A x - y|| (rms per
    measured pixel) and CPU seconds per image, one thread."""
    import torch.nn.functional as F

    from noisecraft.data.digits import load_digits_split
    from noisecraft.guide.measurements import AvgPool
    from noisecraft.runs.pipeline import load_run

    torch.set_num_threads(1)
    x = torch.from_numpy(load_digits_split("test", 32)[0][:images])
    A = AvgPool(2)
    y = A(x)
    rows = {}

    def record(name: str, recon: torch.Tensor, seconds: float) -> None:
        rms = float((A(recon) - y).square().mean().sqrt())
        rows[name] = {"psnr": _psnr(recon, x), "residual_rms": rms, "s_per_image": seconds / images}

    record("bilinear upsampling of y", F.interpolate(y, scale_factor=2, mode="bilinear").clamp(-1, 1), 0.0)
    for run, methods in (("pixel", (("ddnm", 1.0), ("dps", 1.0), ("mmps", 1.0))),
                         ("latent-unet", (("ddnm", 1.0), ("dps", 1.0), ("mmps", 1.0)))):
        pipe = load_run(out / run)
        for method, zeta in methods:
            start, parts = time.process_time(), []
            for i in range(images):
                parts.append(pipe.upscale(y[i], 2, method, n=1, steps=steps, seed=seed + i, zeta=zeta))
            name = f"{run} {method}" + (f" (zeta {zeta:g})" if method == "dps" else "")
            record(name, torch.cat(parts), time.process_time() - start)
    return {"rows": rows, "images": images, "steps": steps}


def restoration_section(r: dict, args: argparse.Namespace, wall_s: float) -> str:
    """The restoration part of the page (between the RESTORATION markers)."""
    table = "\n".join(f"| {name} | {row['psnr']:.2f} | {row['residual_rms']:.4f} | {1000 * row['s_per_image']:.0f} |"
                       for name, row in r["rows"].items())
    return f"""{RESTORATION[0]}
## x2 super-resolution through the decoder

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --restoration-only --restoration-images {r['images']}

{date.today().isoformat()}, {platform.machine()}, torch {torch.__version__}, one thread. The first {r['images']} digits32
test images, measured by 2x2 average pooling (16x16, noise-free); each model draws one sample per image with
`Pipeline.upscale` ({r['steps']} DDPM steps; DPS at its default zeta 1, which a latent run measures in pixels), the latent UNet through its decoder
(docs/latent.md) and the pixel UNet, both the runs of the table above, on pixels (the anchor). PSNR against the
true images (peak-to-peak 2); residual: the rms of A x - y over the 16x16 measurement; ms: CPU time per image.

| method | PSNR (dB) | residual rms | ms / image |
|---|---|---|---|
{table}

Wall time: {wall_s / 60:.1f} min.
{RESTORATION[1]}"""


def _replace_section(path: Path, markers: tuple[str, str], section: str) -> None:
    """`section` in place of the text between `markers` in the page at `path` (appended when absent)."""
    text = path.read_text() if path.is_file() else ""
    if markers[0] in text:
        head, rest = text.split(markers[0], 1)
        text = head + section + rest.split(markers[1], 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def dit_model_matching(unet_params: int, shape: tuple[int, int, int], num: int = 128, patch: int = 1) -> dict:
    """A DiT (patch `patch`, width `num`) whose depth brings its parameter count closest to the UNet's."""
    from noisecraft.nets import NetConfig, count_parameters

    def params(depth: int) -> int:
        return count_parameters(NetConfig(kind="dit", width=num, depth=depth, patch_size=patch).build(shape))

    depth = min(range(1, 24), key=lambda d: abs(params(d) - unet_params))
    return {"kind": "dit", "width": num, "depth": depth, "patch_size": patch, "heads": 4}


def pixel_dit(args: argparse.Namespace) -> dict:
    """A DiT on the 1 x 32 x 32 pixels (patch 4: 64 tokens, as many as the latent DiT's) at the pixel UNet's
    parameter count, trained `--minutes` CPU minutes in a fresh one-thread process, sampled and scored like the
    other models; beside it the pixel UNet's row of the last full run (result.json, same budget and sampler)."""
    from noisecraft.nets import NetConfig, count_parameters

    shape = (1, 32, 32)
    model = dit_model_matching(count_parameters(NetConfig().build(shape)), shape, patch=4)
    run = args.out / "pixel-dit"
    wall = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        done = finished(run) if args.reuse else None
        trained = done or pool.apply(diffusion_job, (str(run), args.minutes, args.seed, None, model, args.batch_size))
        drawn = pool.apply(sample_job, (str(run), args.n, args.seed))
    x = drawn.pop("x")
    np.save(args.out / "pixel-dit-samples.npy", x)
    row = {**trained, **drawn, **score(x)}
    unet = json.loads((args.out / "result.json").read_text())["rows"]["pixel"]
    return {"dit": row, "unet": unet, "model": model, "wall_s": time.perf_counter() - wall,
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, torch {torch.__version__}"}


def pixel_dit_section(r: dict) -> str:
    """The pixel DiT part of the page (between the PIXEL_DIT markers)."""
    line = "| {name} | {parameters:,} | {steps} | {digits_fd:.2f} | {precision:.3f} | {recall:.3f} | {ips:.1f} | {peak_mb:.0f} |"
    rows = "\n".join(line.format(name=name, ips=1 / row["s_per_image"], **row)
                     for name, row in (("pixel UNet (the run above)", r["unet"]), ("pixel DiT", r["dit"])))
    m = r["model"]
    return f"""{PIXEL_DIT[0]}
## DiT against UNet on pixels

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent.py --pixel-dit-only

{r['date']}, {r['machine']}, one thread. A DiT on the 1 x 32 x 32 pixels (patch {m['patch_size']}, so 64 tokens
as the latent DiT has; width {m['width']}, depth {m['depth']}, {m['heads']} heads, adaLN-Zero), depth chosen for the
pixel UNet's parameter count, trained with the same preset, batch and CPU budget, sampled and scored the same
way; the UNet's row is the pixel model of the full run above.

| model | parameters | train steps | digits-FD | precision | recall | images / s | peak MB |
|---|---|---|---|---|---|---|---|
{rows}

Wall time: {r['wall_s'] / 60:.1f} min.
{PIXEL_DIT[1]}"""


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
    parser.add_argument("--skimage-minutes", type=float, default=3.0, help="CPU minutes for the skimage32 autoencoder")
    parser.add_argument("--skimage-only", action="store_true",
                        help="only the skimage32 autoencoder; rewrite only its section of --doc")
    parser.add_argument("--restoration-only", action="store_true",
                        help="only x2 super-resolution by the pixel and latent runs already in --out; rewrite only "
                             "its section of --doc")
    parser.add_argument("--restoration-images", type=int, default=32, help="test images super-resolved per method")
    parser.add_argument("--pixel-dit-only", action="store_true",
                        help="only a DiT on pixels against the pixel UNet of the last full run in --out; rewrite only "
                             "its section of --doc")
    args = parser.parse_args()
    if args.pixel_dit_only:
        result = pixel_dit(args)
        (args.out / "pixel_dit.json").write_text(json.dumps(result, indent=1, default=str))
        section = pixel_dit_section(result)
        print(section)
        _replace_section(args.doc, PIXEL_DIT, section)
        return
    if args.skimage_only:
        section = skimage_section(run_skimage(args))
        print(section)
        _replace_section(args.doc, SKIMAGE, section)
        return
    if args.restoration_only:
        start = time.perf_counter()
        result = restoration(args.out, args.restoration_images, 50, args.seed)
        (args.out / "restoration.json").write_text(json.dumps(result, indent=1))
        section = restoration_section(result, args, time.perf_counter() - start)
        print(section)
        _replace_section(args.doc, RESTORATION, section)
        return
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
              "wall_s": time.perf_counter() - wall, "skimage": run_skimage(args)}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    write_doc(args.doc, result)
    print(args.doc.read_text())


def run_skimage(args: argparse.Namespace) -> dict:
    """The skimage32 autoencoder, trained in a fresh one-thread process (or kept, with --reuse), and its PSNR."""
    wall = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / "vae-skimage32"
    vae = finished(run) if args.reuse else None
    reused = vae is not None
    if vae is None:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            vae = pool.apply(vae_job, (str(run), args.skimage_minutes, args.seed, "skimage32"))
    result = {"vae": vae, "psnr": patch_psnr(run), "args": vars(args), "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, torch {torch.__version__}", "reused": reused,
              "wall_s": time.perf_counter() - wall}
    (args.out / "skimage.json").write_text(json.dumps(result, indent=1, default=str))
    return result


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

{skimage_section(r['skimage'])}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
