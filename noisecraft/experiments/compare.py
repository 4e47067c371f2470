"""DDPM against score-based, side by side: same network, same data, same budget, then every measure.

The two models are the loss presets `ddpm` (discrete VP with 1000 linear betas, eps-prediction,
L_simple; Ho et al. 2020) and `score` (VE SDE, score-prediction, denoising score matching weighted by
sigma^2; Song et al. 2021), trained by noisecraft.runs.train with the same network config, batch, learning
rate, seed and wall-clock (or step) budget. Each is then measured with:

- sample quality against function evaluations (NFE) for each solver: digits-FD (noisecraft.metrics.digits)
  on 8x8 digits, sliced W2 (noisecraft.metrics.distribution) on 2-D toys, beside the floor that real data
  reach against real data;
- NLL through the probability-flow ODE (noisecraft.analysis.likelihood) and the ELBO (noisecraft.analysis.elbo), in bits/dim;
  for digits (17 levels in [-1, 1], bin width 2/16) on uniformly dequantized test images, with the offset
  -log2(2/16) = +3 bits/dim stated (Theis et al. 2016);
- training curves from each run's metrics.jsonl, wall time, the loss per noise level on held-out data
  (noisecraft.analysis.diagnostics), and on `8gaussians`, whose oracle is known, the KL bound beside the KL measured.

`compare(...)` writes report.md, results.json and PNGs in the output directory; its closing section is
generated from the numbers.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.bounds import clipped
from noisecraft.core.tensors import FLOAT64
from noisecraft.data.digits import BIN_WIDTH as DIGITS_BIN
from noisecraft.io import save_figure, write_text_atomic
from noisecraft.runs.pipeline import Pipeline

MODELS: dict[str, str] = {
    "ddpm": "DDPM (discrete VP, eps-prediction)",
    "score": "score-based (VE SDE, score-prediction)",
}
DEFAULT_SOLVERS: tuple[str, ...] = ("ddpm", "ddim", "pc", "heun", "dpm++2m", "rk45")
STOCHASTIC = ("ddpm", "pc")


@dataclass
class CompareSettings:
    """What `compare` trains and measures. minutes and/or train_steps set the shared budget."""

    data: str = "digits"
    out: Path = Path("runs/compare")
    minutes: float | None = 2.0
    train_steps: int | None = None
    seed: int = 0
    nfes: tuple[int, ...] = (10, 20, 50)
    solvers: tuple[str, ...] = DEFAULT_SOLVERS
    rk45_tols: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    n_samples: int = 500
    n_likelihood: int = 200
    probes: int = 4
    rtol: float = 1e-5
    atol: float = 1e-5
    elbo_samples: int = 64
    batch_size: int | None = None
    threads: int | None = None
    reuse: bool = False
    device: str = "auto"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_options(cls, data: str, minutes: float | None, steps: int | None, out: str | None, nfe: str,
                     solvers: str, n_samples: int, n_likelihood: int, probes: int, seed: int, reuse: bool,
                     threads: int | None) -> CompareSettings:
        """Settings from `noisecraft compare`'s options (comma-separated lists; 2 minutes when no budget),
        checked."""
        from noisecraft.data import check_builtin
        from noisecraft.io import check_output_folder

        check_builtin(data)
        settings = cls(data=data, out=Path(out or f"runs/compare-{data}"),
                       minutes=2.0 if minutes is None and steps is None else minutes, train_steps=steps, seed=seed,
                       nfes=tuple(int(v) for v in nfe.split(",") if v.strip()),
                       solvers=tuple(s.strip() for s in solvers.split(",") if s.strip()), n_samples=n_samples,
                       n_likelihood=n_likelihood, probes=probes, reuse=reuse, threads=threads)
        settings.check()
        check_output_folder(settings.out)  # before the models train
        return settings

    def check(self) -> None:
        from noisecraft.data import BUILTIN
        from noisecraft.solvers import SOLVERS

        if self.data not in BUILTIN:
            raise ValueError(f"compare runs on built-in data; expected one of {list(BUILTIN)}, got {self.data!r}")
        if self.minutes is None and self.train_steps is None:
            raise ValueError("compare needs a budget: minutes, train_steps, or both")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train steps must be >= 1, got {self.train_steps}")
        if not self.nfes or min(self.nfes) < 2:
            raise ValueError(f"every NFE must be >= 2 (one step plus the final clean estimate), got {list(self.nfes)}")
        unknown = [s for s in self.solvers if s not in SOLVERS]
        if unknown:
            raise ValueError(f"unknown solver(s) {unknown}; expected names from {sorted(SOLVERS)}")
        for name, value in (("n_samples", self.n_samples), ("n_likelihood", self.n_likelihood), ("probes", self.probes)):
            if value < (2 if name != "probes" else 1):
                raise ValueError(f"{name} must be >= {2 if name != 'probes' else 1}, got {value}")

    @property
    def is_digits(self) -> bool:
        return self.data == "digits"


# -- pieces ----------------------------------------------------------------------------------------
def solver_settings(solver: str, nfes: tuple[int, ...], tols: tuple[float, ...]) -> list[tuple[int, dict]]:
    """(steps, options) per requested budget: steps = (NFE - 1) / evaluations per step; rk45 by tolerance."""
    from noisecraft.solvers import SOLVERS

    per_step = SOLVERS[solver].evaluations_per_step()
    if per_step == 0:
        return [(1, {"rtol": tol, "atol": tol}) for tol in tols]
    steps = sorted({max(1, round((nfe - 1) / per_step)) for nfe in nfes})
    return [(s, {}) for s in steps]


def reference_data(settings: CompareSettings, n: int, seed_offset: int) -> Tensor:
    """Held-out data: the digits test split, or fresh toy draws (a seed the training set never used)."""
    from noisecraft.data import load_digits_split, toy_2d

    if settings.is_digits:
        x, _ = load_digits_split("test")
        return torch.from_numpy(x[:n])
    return torch.from_numpy(toy_2d(settings.data, n, seed=settings.seed + 1000 + seed_offset))


def quality(settings: CompareSettings, x: Tensor) -> float:
    """digits-FD against the test split, or sliced W2 against fresh toy draws."""
    if settings.is_digits:
        from noisecraft.metrics.digits import evaluate_digits

        return evaluate_digits(x)["digits_fd"]
    from noisecraft.metrics.distribution import sliced_w2

    return sliced_w2(x, reference_data(settings, x.shape[0], 0), generator=torch.Generator().manual_seed(0))


def quality_floor(settings: CompareSettings) -> float:
    """The same metric between two sets of real data (what a perfect model would score)."""
    if settings.is_digits:
        from noisecraft.metrics.digits import floor

        return floor(min(settings.n_samples, 500))["digits_fd"]
    from noisecraft.metrics.distribution import sliced_w2

    a = reference_data(settings, settings.n_samples, 0)
    b = reference_data(settings, settings.n_samples, 1)
    return sliced_w2(a, b, generator=torch.Generator().manual_seed(0))


def _device(choice: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice


def train_models(settings: CompareSettings) -> dict[str, dict]:
    """Train (or reuse) one run per model in out/<model>; returns wall time, steps and throughput."""
    from noisecraft.runs.checkpoint import latest_checkpoint
    from noisecraft.runs.config import preset_config
    from noisecraft.runs.train import train

    info = {}
    for name in MODELS:
        run_dir = settings.out / name
        cfg = preset_config(settings.data, name, minutes=settings.minutes, max_steps=settings.train_steps,
                            seed=settings.seed, batch_size=settings.batch_size, num_threads=settings.threads)
        if latest_checkpoint(run_dir / "checkpoints") is not None:
            if not settings.reuse:
                raise ValueError(f"{str(run_dir)!r} already holds a trained run; pass reuse to measure it again "
                                 "or choose another output directory")
            info[name] = {"reused": True}
            continue
        start = time.perf_counter()
        result = train(cfg, run_dir, progress=settings.progress)
        info[name] = {"reused": False, "wall_s": time.perf_counter() - start, "steps": result.step,
                      "final_loss": result.loss}
    return info


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure_quality(settings: CompareSettings, run: Pipeline, model: str, device: str) -> tuple[list[dict], dict]:
    """Quality at each (solver, budget); returns the rows and the samples of each row (for grids)."""
    from noisecraft.solvers import sample

    rows, samples = [], {}
    denoise = clipped(run.network, run.config.sample.clip)
    for solver in settings.solvers:
        for steps, options in solver_settings(solver, settings.nfes, settings.rk45_tols):
            start = time.perf_counter()
            with torch.no_grad():
                x, info = sample(denoise, run.schedule, solver=solver, steps=steps,
                                 shape=(settings.n_samples, *run.sample_shape), grid=run.config.sample.grid,
                                 generator=torch.Generator().manual_seed(settings.seed), device=device,
                                 return_info=True, **options)
            x = x.float().cpu()
            seconds = time.perf_counter() - start
            finite = bool(torch.isfinite(x).all())
            score = quality(settings, x) if finite else float("nan")
            row = {"model": model, "solver": solver, "steps": steps, "nfe": info.nfe, "quality": score,
                   "sample_s": seconds, **({"tol": options["rtol"]} if options else {})}
            rows.append(row)
            samples[(solver, info.nfe)] = x
    return rows, samples


def measure_likelihood(settings: CompareSettings, run: Pipeline, model: str) -> dict:
    """NLL (PF-ODE), continuous ELBO, and for DDPM its own discrete chain's ELBO, in nats and bits/dim."""
    from noisecraft.analysis.elbo import elbo_continuous, elbo_discrete
    from noisecraft.analysis.likelihood import bits_per_dim, dequantize, log_likelihood
    from noisecraft.core.schedules import DiscreteVP

    g = torch.Generator().manual_seed(settings.seed + 7)
    denoise = run.float64_denoiser()
    schedule = run.schedule
    oracle = _oracle(settings)
    if oracle is not None:
        x, _ = oracle.sample(settings.n_likelihood, g)
    else:
        x = reference_data(settings, settings.n_likelihood, 2).to(FLOAT64)
    dim = x[0].numel()
    bin_width = DIGITS_BIN if settings.is_digits else None
    x_cont = dequantize(x, bin_width, g) if bin_width else x
    divergence = "exact" if dim <= 2 else "hutchinson"
    start = time.perf_counter()
    ll = log_likelihood(denoise, schedule, x_cont, divergence=divergence, probes=settings.probes,
                        rtol=settings.rtol, atol=settings.atol, generator=g)
    ll_s = time.perf_counter() - start

    def summary(nll: Tensor) -> dict:
        nll = nll.detach()
        mean, se = float(nll.mean()), float(nll.std() / math.sqrt(nll.numel()))
        return {"nats": mean, "nats_se": se, "bpd": float(bits_per_dim(mean, dim, bin_width)),
                "bpd_se": se / (dim * math.log(2.0))}

    out: dict[str, Any] = {"model": model, "dim": dim, "n": x.shape[0], "divergence": divergence,
                           "probes": settings.probes if divergence == "hutchinson" else 0, "nfe": ll.nfe,
                           "seconds": ll_s, "nll": summary(ll.nll), "bin_width": bin_width,
                           "offset_bpd": 0.0 if bin_width is None else -math.log2(bin_width)}
    # the ELBO on the grid uses the discretised decoder: a bound on -log P(bin), no offset needed
    with torch.no_grad():
        cont = elbo_continuous(denoise, schedule, x, samples=settings.elbo_samples, bin_width=bin_width, generator=g)
    out["elbo_continuous"] = _elbo_summary(cont.total, dim)
    if isinstance(schedule, DiscreteVP):
        with torch.no_grad():
            disc = elbo_discrete(denoise, schedule, x, bin_width=bin_width, generator=g)
        out["elbo_discrete"] = _elbo_summary(disc.total, dim)
    if oracle is not None:
        true_lp = oracle.log_prob(x)
        out["true_nll"] = summary(-true_lp)
        kl = true_lp - ll.log_prob
        out["measured_kl"] = {"nats": float(kl.mean()), "se": float(kl.std() / math.sqrt(kl.numel()))}
    return out


def _elbo_summary(total: Tensor, dim: int) -> dict:
    mean, se = float(total.mean()), float(total.std() / math.sqrt(total.numel()))
    return {"nats": mean, "nats_se": se, "bpd": mean / (dim * math.log(2.0)), "bpd_se": se / (dim * math.log(2.0))}


def _oracle(settings: CompareSettings):
    """The exact mixture behind a toy, where there is one (8gaussians = ring8 with radius 2, std 0.15)."""
    if settings.data == "8gaussians":
        from noisecraft.analysis.oracle import ring8

        return ring8(2.0, 0.15)
    return None


# -- figures ---------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def matplotlib_ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def plot_quality(path: Path, rows: list[dict], metric: str, floor: float) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(6 * len(MODELS), 4.3), sharey=True, squeeze=False)
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    for ax, model in zip(axes[0], MODELS):
        for i, solver in enumerate(solvers):
            pts = sorted((r["nfe"], r["quality"]) for r in rows if r["model"] == model and r["solver"] == solver)
            if pts:
                ax.plot(*zip(*pts), "o-" if solver not in STOCHASTIC else "s--", color=f"C{i}", label=solver, ms=4)
        ax.axhline(floor, color="gray", ls=":", label="real vs real (floor)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib_ticker().ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib_ticker().NullFormatter())
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_title(MODELS[model], fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{metric} (lower is better)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def plot_training(path: Path, curves: dict[str, list[dict]]) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (model, records) in enumerate(curves.items()):
        if not records:
            continue
        steps = [r["step"] for r in records]
        axes[0].plot(steps, [r["loss"] for r in records], color=f"C{i}", label=MODELS[model])
        axes[1].plot([r["elapsed_s"] for r in records], [r["loss"] for r in records], color=f"C{i}", label=MODELS[model])
    axes[0].set_xlabel("optimiser step")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("training loss (eps-MSE; each model under its own p(t))")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def save_sample_panels(path: Path, settings: CompareSettings, panels: list[tuple[str, np.ndarray]]) -> Path:
    from noisecraft.viz.plots import save_image_grids, save_scatter

    real = reference_data(settings, 100 if settings.is_digits else settings.n_samples, 0).numpy()
    label = "real test digits" if settings.is_digits else "real data"
    if settings.is_digits:
        return save_image_grids(path, [(t, x[:100]) for t, x in panels] + [(label, real)])
    return save_scatter(path, panels + [(label, real)])


# -- the narrative ---------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def findings(results: dict) -> list[str]:
    """Sentences drawn from the numbers: which model is ahead where, by how much, and how sure that is."""
    lines = []
    metric, floor = results["metric"], results["floor"]
    train = results["training"]
    steps = {m: train[m].get("steps") for m in MODELS}
    if all(steps.values()):
        a, b = steps["ddpm"], steps["score"]
        lines.append(f"In the same budget DDPM took {a} optimiser steps and the score model {b}"
                     + (f" ({max(a, b) / min(a, b):.2f}x as many for the {'DDPM' if a > b else 'score'} model)." if a != b else "."))
    rows = [r for r in results["quality"] if math.isfinite(r["quality"])]
    best = {m: min((r for r in rows if r["model"] == m), key=lambda r: r["quality"], default=None) for m in MODELS}
    if all(best.values()):
        d, s = best["ddpm"], best["score"]
        winner, loser = (d, s) if d["quality"] < s["quality"] else (s, d)
        lines.append(f"Best {metric}: DDPM {_fmt(d['quality'])} ({d['solver']}, {d['nfe']} NFE), score model "
                     f"{_fmt(s['quality'])} ({s['solver']}, {s['nfe']} NFE); the floor (real against real) is "
                     f"{_fmt(floor)}. The {_name(winner['model'])} is ahead by a factor "
                     f"{loser['quality'] / max(winner['quality'], 1e-12):.2f}, "
                     f"{'still ' + format(winner['quality'] / max(floor, 1e-12), '.1f') + 'x the floor' if winner['quality'] > 1.5 * floor else 'close to the floor'}.")
    fixed = [r for r in rows if r["solver"] != "rk45"]
    if fixed:
        low = min(r["nfe"] for r in fixed)
        at_low = {m: min((r for r in fixed if r["model"] == m and r["nfe"] <= low + 1), key=lambda r: r["quality"], default=None) for m in MODELS}
        if all(at_low.values()):
            d, s = at_low["ddpm"], at_low["score"]
            lead = "DDPM" if d["quality"] < s["quality"] else "the score model"
            lines.append(f"At the smallest budget ({low} NFE) the best solvers are {d['solver']} for DDPM "
                         f"({_fmt(d['quality'])}) and {s['solver']} for the score model ({_fmt(s['quality'])}): {lead} leads.")
        for m in MODELS:
            top = max(r["nfe"] for r in fixed if r["model"] == m)
            at_top = [r for r in fixed if r["model"] == m and r["nfe"] >= top - 1]
            sto = min((r for r in at_top if r["solver"] in STOCHASTIC), key=lambda r: r["quality"], default=None)
            det = min((r for r in at_top if r["solver"] not in STOCHASTIC), key=lambda r: r["quality"], default=None)
            if sto and det:
                better = "stochastic" if sto["quality"] < det["quality"] else "deterministic"
                lines.append(f"{_name(m, capital=True)} at ~{top} NFE: best stochastic sampler {sto['solver']} "
                             f"{_fmt(sto['quality'])}, best deterministic {det['solver']} {_fmt(det['quality'])}; "
                             f"the {better} one is better here.")
    broken = [r for r in results["quality"] if not math.isfinite(r["quality"])]
    if broken:
        lines.append("Non-finite samples (diverged) for: " + ", ".join(f"{r['model']}/{r['solver']}@{r['nfe']}" for r in broken) + ".")
    lik = {r["model"]: r for r in results["likelihood"]}
    if all(m in lik for m in MODELS):
        d, s = lik["ddpm"]["nll"], lik["score"]["nll"]
        diff = d["bpd"] - s["bpd"]
        se = math.hypot(d["bpd_se"], s["bpd_se"])  # different test points would add variance; here they are shared
        unit = "bits/dim"
        if abs(diff) > 2 * se:
            who = "DDPM" if diff < 0 else "the score model"
            lines.append(f"NLL (PF-ODE): DDPM {d['bpd']:.3f} +- {d['bpd_se']:.3f}, score model {s['bpd']:.3f} +- "
                         f"{s['bpd_se']:.3f} {unit}; {who} assigns the test data higher likelihood by "
                         f"{abs(diff):.3f} {unit} ({abs(diff) / se:.1f} standard errors).")
        else:
            lines.append(f"NLL (PF-ODE): DDPM {d['bpd']:.3f} +- {d['bpd_se']:.3f}, score model {s['bpd']:.3f} +- "
                         f"{s['bpd_se']:.3f} {unit}: the difference ({diff:+.3f}) is within two standard errors, "
                         "not resolved at this sample size.")
        for m in MODELS:
            e = lik[m]["elbo_continuous"]
            gap = e["bpd"] - lik[m]["nll"]["bpd"]
            gap_se = math.hypot(e["bpd_se"], lik[m]["nll"]["bpd_se"])
            if gap < -2 * gap_se:
                lines.append(f"For the {_name(m)} the continuous ELBO ({e['bpd']:.3f} bits/dim) lies below the ODE NLL by "
                             f"{-gap:.3f}: the PF-ODE density of an imperfect score is not the model the ELBO bounds "
                             "(Song et al. 2021a), so the two need not be ordered.")
            else:
                where = "above its ODE NLL" if gap > 2 * gap_se else "from its ODE NLL, within two standard errors"
                lines.append(f"For the {_name(m)} the continuous ELBO is {e['bpd']:.3f} bits/dim, "
                             f"{gap:+.3f} +- {gap_se:.3f} {where}.")
        if "true_nll" in lik["ddpm"]:
            t = lik["ddpm"]["true_nll"]
            kls = ", ".join(f"{_name(m)} {lik[m]['measured_kl']['nats']:.3f} +- {lik[m]['measured_kl']['se']:.3f}" for m in MODELS)
            lines.append(f"The true density gives {t['nats']:.3f} nats per sample on the same points; the measured "
                         f"KL(p_0 || p_theta) is {kls} nats.")
    bounds = results.get("kl_bound") or {}
    for m, b in bounds.items():
        mk = lik.get(m, {}).get("measured_kl")
        if mk:
            relation = "above" if b["total"] >= mk["nats"] - 2 * mk["se"] else "below"
            lines.append(f"The reverse-SDE KL bound for the {_name(m)} is {b['total']:.3f} nats, {relation} the "
                         f"measured {mk['nats']:.3f} +- {mk['se']:.3f}.")
    lines.append("One seed and one short budget: these are measurements of this run, not of the methods in general.")
    return lines


def _name(model: str, capital: bool = False) -> str:
    return "DDPM model" if model == "ddpm" else ("Score model" if capital else "score model")


# -- the report ------------------------------------------------------------------------------------
def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu})"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text + f"; Python {platform.python_version()}, torch {torch.__version__}"


def write_report(settings: CompareSettings, results: dict) -> Path:
    out = settings.out
    metric = results["metric"]
    lines = [f"# DDPM against score-based on `{settings.data}`", "",
             (f"Generated by `noisecraft compare` on {results['date']}; machine: {results['machine']}; "
             f"total wall time {results['total_s']:.0f} s."), "",
             f"Command: `{results['command']}`", "", "## Setup", "",
             "| | schedule | network predicts | loss | parameters | budget | steps trained | training wall time | images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, description in MODELS.items():
        t = results["training"][m]
        lines.append(f"| {description} | {t['schedule']} | {t['parameterization']} | {t['loss']} | {t['parameters']:,} | "
                     f"{results['budget']} | {t.get('steps', '?')} | {t.get('wall_s', float('nan')):.0f} s | "
                     f"{t.get('images_per_s', float('nan')):.0f} |")
    lines += ["", "Same network config, batch size, learning rate schedule, EMA and seed for both; "
              "samples use the EMA weights" + (" and x0 clipped to [-1, 1]." if settings.is_digits else "."), "",
              "## Samples", "", f"![samples]({results['figures']['samples']})", "",
              f"Each panel: the lowest-{metric} setting of that model ({results['sample_captions']}).", "",
              f"## Quality against NFE ({metric}, {settings.n_samples} samples, lower is better)", "",
              f"![quality]({results['figures']['quality']})", "",
              f"Floor (real data against real data, same sample size): {_fmt(results['floor'])}.", "",
              "| solver | steps | " + " | ".join(f"{m}: NFE | {m}: {metric} | {m}: s" for m in MODELS) + " |",
              "|---|---|" + "---|---|---|" * len(MODELS)]
    keyed = {(r["model"], r["solver"], r["steps"], r.get("tol")): r for r in results["quality"]}
    for solver in settings.solvers:
        for steps, options in solver_settings(solver, settings.nfes, settings.rk45_tols):
            tol = options.get("rtol")
            cells = []
            for m in MODELS:
                r = keyed.get((m, solver, steps, tol))
                cells.append(f"{r['nfe']} | {_fmt(r['quality'])} | {r['sample_s']:.1f}" if r else "- | - | -")
            label = f"tol {tol:g}" if tol is not None else str(steps)
            lines.append(f"| {solver} | {label} | " + " | ".join(cells) + " |")
    lik = results["likelihood"]
    first = lik[0]
    if first["bin_width"]:
        offset = (f"Test images are dequantized with uniform noise of one bin (17 levels in [-1, 1], bin width "
                  f"2/16 = {first['bin_width']:g}); bits/dim = (NLL + D ln(16/2)) / (D ln 2), i.e. the density's "
                  f"bits/dim plus the offset -log2(bin width) = +{first['offset_bpd']:.3f} bits/dim, so it bounds "
                  "the discrete data's -log2 P. The ELBOs use the discretised Gaussian decoder on the same bins "
                  "(Ho et al. 2020, eq. 13): already a probability of the bin, no offset.")
    else:
        offset = "Continuous data: bits/dim = NLL / (D ln 2) of the density, no dequantization and no offset (it can be negative)."
    lines += ["", f"## Likelihood ({first['n']} held-out points, D = {first['dim']})", "",
              "| model | NLL nats/sample | NLL bits/dim | ELBO (continuous, VDM) bits/dim | ELBO (DDPM's 1000-step chain) bits/dim | divergence | NFE | s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in lik:
        disc = r.get("elbo_discrete")
        disc_text = "{bpd:.3f} +- {bpd_se:.3f}".format(**disc) if disc else "n/a (not a discrete chain)"
        probes = f" ({r['probes']} probes)" if r["probes"] else ""
        lines.append(f"| {MODELS[r['model']]} | {r['nll']['nats']:.2f} +- {r['nll']['nats_se']:.2f} | "
                     f"{r['nll']['bpd']:.3f} +- {r['nll']['bpd_se']:.3f} | "
                     f"{r['elbo_continuous']['bpd']:.3f} +- {r['elbo_continuous']['bpd_se']:.3f} | "
                     f"{disc_text} | {r['divergence']}{probes} | {r['nfe']} | {r['seconds']:.0f} |")
    if "true_nll" in first:
        lines.append(f"| true density (oracle) | {first['true_nll']['nats']:.2f} +- {first['true_nll']['nats_se']:.2f} | "
                     f"{first['true_nll']['bpd']:.3f} | | | | | |")
    lines += ["", offset, "",
              "## Training curves", "", f"![training]({results['figures']['training']})", "",
              ("Both losses are mean squared eps errors (the score preset's sigma^2 weighting makes its loss the eps "
              "error), each under its own distribution of t, so levels are comparable only roughly."), "",
              "## Loss by noise level (held-out data)", "", f"![levels]({results['figures']['levels']})", ""]
    if "kl" in results["figures"]:
        lines += ["## The theory, measured (oracle of 8gaussians)", "", f"![kl]({results['figures']['kl']})", "",
                  "| model | KL(p_T, prior) | score-matching term | bound | measured KL (PF-ODE) |", "|---|---|---|---|---|"]
        for m, b in results["kl_bound"].items():
            mk = next(r for r in lik if r["model"] == m)["measured_kl"]
            lines.append(f"| {MODELS[m]} | {b['prior_kl']:.4f} | {b['score_term']:.3f} +- {b['stderr']:.3f} | "
                         f"{b['total']:.3f} | {mk['nats']:.3f} +- {mk['se']:.3f} |")
        lines.append("")
    lines += ["## What this run shows", ""] + [f"- {s}" for s in results["findings"]] + [""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def compare(settings: CompareSettings, command: str | None = None) -> dict:
    """Train both models, measure them, write report.md, results.json and PNGs in settings.out."""
    from noisecraft.analysis.diagnostics import (
        denoising_error,
        kl_bound,
        loss_per_level,
        plot_diagnostics,
    )
    from noisecraft.nets import count_parameters
    from noisecraft.runs.pipeline import load_run

    settings.check()
    settings.out.mkdir(parents=True, exist_ok=True)
    device = _device(settings.device)
    start = time.perf_counter()
    training = train_models(settings)
    runs = {m: load_run(settings.out / m, device=device) for m in MODELS}
    metric = "digits-FD" if settings.is_digits else "sliced W2"
    quality_rows, grids, curves, level_curves, oracle_curves, bounds = [], [], {}, [], [], {}
    likelihood = []
    for m, run in runs.items():
        records = read_metrics(settings.out / m)
        curves[m] = records
        loss = run.config.loss
        training[m].update({"schedule": type(loss.schedule).__name__, "parameterization": loss.parameterization,
                            "loss": f"{loss.weighting}, t {loss.time_distribution}", "parameters": count_parameters(run.net),
                            "steps": run.step})
        if records:
            training[m].setdefault("wall_s", records[-1]["elapsed_s"])
            training[m]["images_per_s"] = float(np.median([r["images_per_s"] for r in records[1:]] or [records[0]["images_per_s"]]))
        rows, samples = measure_quality(settings, run, m, device)
        quality_rows += rows
        finite = [r for r in rows if math.isfinite(r["quality"])]
        if finite:
            top = min(finite, key=lambda r: r["quality"])
            grids.append((f"{m}: {top['solver']}, {top['nfe']} NFE", samples[(top["solver"], top["nfe"])].numpy()))
        likelihood.append(measure_likelihood(settings, run, m))
        held_out = reference_data(settings, min(settings.n_likelihood, 500), 3)
        level_curves.append(loss_per_level(run.network, run.schedule, held_out.to(next(run.net.parameters()).device),
                                           generator=torch.Generator().manual_seed(settings.seed), label=MODELS[m]))
        oracle = _oracle(settings)
        if oracle is not None:
            denoise = run.float64_denoiser()
            g = torch.Generator().manual_seed(settings.seed + 11)
            oracle_curves.append(denoising_error(denoise, oracle, run.schedule, n=256, generator=g, label=MODELS[m]))
            b = kl_bound(denoise, oracle, run.schedule, n=256, generator=g)
            bounds[m] = {"prior_kl": b.prior_kl, "score_term": b.score_term, "stderr": b.stderr, "total": b.total,
                         "_bound": b}
    figures = {"quality": "quality_vs_nfe.png", "training": "training.png", "levels": "loss_by_level.png",
               "samples": "samples.png"}
    floor = quality_floor(settings)
    plot_quality(settings.out / figures["quality"], quality_rows, metric, floor)
    plot_training(settings.out / figures["training"], curves)
    plot_diagnostics(settings.out / figures["levels"], level_curves, title=f"{settings.data}: loss by noise level, held-out data")
    save_sample_panels(settings.out / figures["samples"], settings, grids)
    if bounds:
        figures["kl"] = "kl_bound.png"
        # one bound panel per model would crowd the figure; show the DDPM bound and both error curves
        b = bounds["ddpm"].pop("_bound")
        mk = next(r for r in likelihood if r["model"] == "ddpm")["measured_kl"]
        b.measured, b.measured_stderr = mk["nats"], mk["se"]
        bounds["score"].pop("_bound")
        plot_diagnostics(settings.out / figures["kl"], oracle_curves, b, title="8gaussians oracle: denoising error of both models; KL bound of the DDPM model")
    results = {
        "data": settings.data, "date": datetime.date.today().isoformat(), "machine": machine_description(),
        "command": command or "compare(...)", "metric": metric, "floor": floor,
        "budget": (f"{settings.minutes:g} min" if settings.minutes else "") + (" / " if settings.minutes and settings.train_steps else "")
        + (f"{settings.train_steps} steps" if settings.train_steps else ""),
        "training": training, "quality": quality_rows, "likelihood": likelihood, "kl_bound": bounds,
        "figures": figures, "sample_captions": "; ".join(t for t, _ in grids),
    }
    results["findings"] = findings(results)
    results["total_s"] = time.perf_counter() - start
    write_text_atomic(settings.out / "results.json", json.dumps(results, indent=1, default=float))
    write_report(settings, results)
    return results


def command_line() -> str:
    return "noisecraft " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("noisecraft") else " ".join(sys.argv)
