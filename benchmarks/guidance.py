"""Guidance and inverse-problem benchmark; prints markdown tables and writes them to --out.

1. Oracle (exact answer known): Gaussian data in 16-D, y = A x + noise; the error of each method's sample
   mean and covariance against the closed-form Gaussian posterior, beside the Monte-Carlo floor.
2. Digits, class guidance: the shipped digits classifier's agreement with the requested class and the
   digits-FD against the test set, against the CFG scale w and the classifier-guidance scale s.
3. Digits, inpainting of held-out test images (right half missing): PSNR on the masked region and the
   digits-FD of the completions, for replacement, RePaint, DPS and moment matching.

    python benchmarks/guidance.py --run runs/digits-cond --out docs/benchmarks/guidance.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time

import numpy as np
import torch

import noisecraft as nc
from noisecraft.guide.inverse import denoise_observation, dps, moment_matched, projection, repaint
from noisecraft.guide.measurements import Mask, Matrix, measure


def gaussian16(seed: int = 0, dim: int = 16):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = (q * np.exp(rng.uniform(np.log(0.02), np.log(1.0), size=dim))) @ q.T
    return nc.oracle.gaussian(rng.normal(size=dim) * 0.5, 0.5 * (cov + cov.T))


def posterior(prior, A, y, sigma_y):
    mu, S = prior.means[0], prior.covariances[0]
    K = A @ S @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=torch.float64)
    gain = S @ A.T @ torch.linalg.inv(K)
    return mu + gain @ (y - A @ mu), S - gain @ A @ S


def moment_errors(x, mean, cov):
    """(||mean error|| / sqrt(tr cov), ||cov error||_F / ||cov||_F)."""
    return (float((x.mean(0) - mean).norm() / cov.trace().sqrt()),
            float((torch.cov(x.T) - cov).norm() / cov.norm()))


def oracle_section(n: int) -> list[str]:
    sched = nc.schedules.VPCosine()
    prior = gaussian16()
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    x_true, _ = prior.sample(1, g(1))
    D = prior.dim
    rows = []
    # exact draws: the Monte-Carlo floor of both errors at this n
    inpaint_A = torch.eye(D, dtype=torch.float64)[: D // 2]
    mask = Mask(torch.cat([torch.ones(D // 2), torch.zeros(D - D // 2)]).double())
    meas_mask = measure(mask, x_true)
    mean, cov = posterior(prior, inpaint_A, x_true[0, : D // 2], 1e-6)
    floor = torch.distributions.MultivariateNormal(mean, cov + 1e-12 * torch.eye(D)).sample((n,))
    rows.append(("inpainting, half of 16 coords", "exact draws (MC floor)", *moment_errors(floor, mean, cov), 0))
    den = prior.denoiser(sched)
    kw = dict(shape=(n, D), generator=g(2), dtype=torch.float64)
    for name, fn in [
        ("replacement (DDNM), ddpm 100", lambda: nc.sample(projection(den, meas_mask), sched, "ddpm", 100, **kw)),
        ("RePaint 50 steps, jump 5 x 10", lambda: repaint(den, sched, meas_mask, (n, D), 50, 5, 10, g(2), dtype=torch.float64)),
        ("DPS zeta=1, ddpm 100", lambda: nc.sample(dps(den, meas_mask, sched, 1.0), sched, "ddpm", 100, **kw)),
        ("moment matched, dpm++2m 40", lambda: nc.sample(moment_matched(den, meas_mask, sched, 8), sched, "dpm++2m", 40, **kw)),
    ]:
        rows.append(("inpainting, half of 16 coords", name, *moment_errors(fn(), mean, cov), 1))
    A = torch.randn(4, D, generator=g(3), dtype=torch.float64) / 2
    meas = measure(Matrix(A), x_true, 0.1, g(4))
    mean, cov = posterior(prior, A, meas.y[0], 0.1)
    for name, fn in [
        ("DDNM (shrinkage), ddpm 100", lambda: nc.sample(projection(den, meas, sched), sched, "ddpm", 100, **kw)),
        ("DPS zeta=1, ddpm 100", lambda: nc.sample(dps(den, meas, sched, 1.0), sched, "ddpm", 100, **kw)),
        ("moment matched, dpm++2m 40", lambda: nc.sample(moment_matched(den, meas, sched, 4), sched, "dpm++2m", 40, **kw)),
    ]:
        rows.append(("4 random projections, sigma_y 0.1", name, *moment_errors(fn(), mean, cov), 1))
    y = x_true + 0.3 * torch.randn(1, D, generator=g(5), dtype=torch.float64)
    mean, cov = posterior(prior, torch.eye(D, dtype=torch.float64), y[0], 0.3)
    x = denoise_observation(den, sched, y.expand(n, D), 0.3, "ddpm", 200, g(6))
    rows.append(("denoising, sigma_y 0.3", "reverse SDE from y, ddpm 200", *moment_errors(x, mean, cov), 1))
    out = [f"Gaussian data, 16-D, n = {n} samples; errors of the sample mean (/ sqrt(tr S_post)) and "
           "covariance (relative Frobenius) against the exact posterior.", "",
           "| problem | method | mean error | covariance error |", "|---|---|---|---|"]
    out += [f"| {p} | {m} | {a:.3f} | {b:.3f} |" for p, m, a, b, _ in rows]
    return out


def guided_digits(run, denoise, labels: torch.Tensor) -> tuple[float, dict]:
    """Scores of one guided draw of digits: dpm++2m 20 steps, seed 0, sample i of class labels[i];
    returns the share the shipped classifier puts in the requested class, and the digits metrics."""
    from noisecraft.metrics.digits import evaluate_digits, features_and_classes

    with torch.no_grad():
        x = nc.sample(denoise, run.schedule, "dpm++2m", 20, (len(labels), *run.sample_shape),
                      torch.Generator().manual_seed(0), cond=labels).float()
    _, pred = features_and_classes(x)
    return float((pred == labels.numpy()).mean()), evaluate_digits(x)


def digits_guidance_section(run_dir: str, n: int, classifier: str | None) -> list[str]:
    from noisecraft.core.bounds import clipped
    from noisecraft.guide.classifier import load_classifier
    from noisecraft.guide.guidance import classifier_free, classifier_guidance
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.steer import base_denoiser

    run = load_run(run_dir)
    labels = torch.arange(n) % 10
    rows = []
    for w in (0.0, 1.0, 2.0, 3.0, 5.0):
        agreement, ev = guided_digits(run, clipped(classifier_free(run.network, w, run.config.model.null_label), 1.0), labels)
        rows.append((f"CFG w = {w:g}", agreement, ev["digits_fd"]))
    if classifier:
        clf = load_classifier(classifier)
        base = base_denoiser(run)
        for s in (1.0, 3.0, 10.0):
            guided = clipped(classifier_guidance(base, clf.log_prob, run.schedule, s), 1.0)
            agreement, ev = guided_digits(run, guided, labels)
            rows.append((f"classifier s = {s:g}", agreement, ev["digits_fd"]))
    out = [f"{n} samples (classes 0-9 in turn), dpm++2m 20 steps, x0 clipped to [-1, 1]; agreement = share the "
           "shipped digits classifier puts in the requested class; digits-FD against the 500 test images "
           "(the floor for 500 train images is 8.6; with fewer samples FD is biased upward).", "",
           "| guidance | class agreement | digits-FD |", "|---|---|---|"]
    out += [f"| {name} | {acc:.3f} | {fd:.1f} |" for name, acc, fd in rows]
    return out


def digits_threshold_section(run_dir: str, n: int) -> list[str]:
    """CFG at growing w with x0_hat clipped to [-1, 1] or dynamically thresholded (Saharia et al. 2022)."""
    from noisecraft.core.bounds import clipped
    from noisecraft.guide.guidance import classifier_free
    from noisecraft.runs.pipeline import load_run

    run = load_run(run_dir)
    labels = torch.arange(n) % 10
    bounds = (("clip 1", 1.0, None), ("threshold 0.995", None, 0.995), ("threshold 0.995, clip 2", 2.0, 0.995),
              ("threshold 0.95", None, 0.95))
    out = [f"{n} samples (classes 0-9 in turn), dpm++2m 20 steps, seed 0; x0_hat bounded at every step by static "
           "clipping or by dynamic thresholding at quantile p (s = max(1, p-quantile of |x0_hat|) per sample, "
           "capped at clip if set).", "",
           "| CFG w | x0_hat bound | class agreement | digits-FD | precision | recall |", "|---|---|---|---|---|---|"]
    for w in (3.0, 6.0, 10.0):
        for name, clip, threshold in bounds:
            denoise = clipped(classifier_free(run.network, w, run.config.model.null_label), clip, threshold)
            agreement, ev = guided_digits(run, denoise, labels)
            out.append(f"| {w:g} | {name} | {agreement:.3f} | {ev['digits_fd']:.1f} | "
                       f"{ev['precision']:.2f} | {ev['recall']:.2f} |")
    return out


def digits_inpainting_section(run_dir: str, n: int) -> list[str]:
    from noisecraft.data import load_digits_split
    from noisecraft.metrics.digits import evaluate_digits
    from noisecraft.runs.pipeline import load_run
    from noisecraft.runs.steer import base_denoiser, moment_matched_denoiser

    run = load_run(run_dir)
    sched = run.schedule
    den = base_denoiser(run)
    x_test, _ = load_digits_split("test")
    x_true = torch.from_numpy(x_test[:n])
    m = torch.ones(1, 8, 8)
    m[:, :, 4:] = 0
    meas = measure(Mask(m), x_true)
    hole = (1 - m).bool().expand(n, 1, 8, 8)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    shape = (n, 1, 8, 8)
    methods = [
        ("replacement, ddpm 50", lambda: nc.sample(projection(den, meas), sched, "ddpm", 50, shape, g())),
        ("RePaint 25 steps, jump 5 x 4", lambda: repaint(den, sched, meas, shape, 25, 5, 4, g())),
        ("DPS zeta=1, ddpm 50", lambda: nc.sample(dps(den, meas, sched, 1.0), sched, "ddpm", 50, shape, g())),
        ("moment matched (cg 4), ddpm 30", lambda: nc.sample(moment_matched_denoiser(run, meas, 4), sched, "ddpm", 30, shape, g())),
    ]
    rows = []
    for name, fn in methods:
        start = time.perf_counter()
        x = fn().float().clamp(-1, 1).detach()
        mse = float(((x - x_true)[hole] ** 2).mean())
        rows.append((name, 10 * math.log10(4.0 / mse), evaluate_digits(x)["digits_fd"], time.perf_counter() - start))
    out = [f"{n} held-out test digits, right half (32 pixels) missing; PSNR on the missing pixels (peak-to-peak 2); "
           "digits-FD of the completed images against the test set; seconds on this machine.", "",
           "| method | PSNR (dB), masked region | digits-FD | seconds |", "|---|---|---|---|"]
    out += [f"| {name} | {psnr:.2f} | {fd:.1f} | {sec:.0f} |" for name, psnr, fd, sec in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/digits-cond", help="a class-conditional digits run with label dropout")
    parser.add_argument("--classifier", default=None, help="noisy classifier folder (default RUN/classifier if present)")
    parser.add_argument("--n-oracle", type=int, default=4000)
    parser.add_argument("--n-guidance", type=int, default=200)
    parser.add_argument("--n-inpaint", type=int, default=100)
    parser.add_argument("--n-threshold", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", nargs="+", default=["oracle", "guidance", "threshold", "inpainting"],
                        choices=["oracle", "guidance", "threshold", "inpainting"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pathlib import Path

    classifier = args.classifier or (str(Path(args.run) / "classifier") if (Path(args.run) / "classifier").is_dir() else None)
    lines = ["# Guidance and inverse problems: benchmark", "",
             f"{datetime.date.today()}, {platform.machine()} CPU, {args.threads} thread(s), torch {torch.__version__}; "
             f"digits run `{args.run}`."]
    sections = {
        "oracle": ("Oracle: exact posterior known", lambda: oracle_section(args.n_oracle)),
        "guidance": ("Digits: class guidance", lambda: digits_guidance_section(args.run, args.n_guidance, classifier)),
        "threshold": ("Digits: clipping against dynamic thresholding under strong guidance",
                      lambda: digits_threshold_section(args.run, args.n_threshold)),
        "inpainting": ("Digits: inpainting held-out test images", lambda: digits_inpainting_section(args.run, args.n_inpaint)),
    }
    print("\n".join(lines), flush=True)
    for key in args.sections:
        title, section = sections[key]
        new = ["", f"## {title}", ""] + section()
        print("\n".join(new), flush=True)
        lines += new
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
