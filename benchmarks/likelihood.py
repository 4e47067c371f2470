"""Likelihood benchmark on the oracles (issue 4). Not a test: prints tables and writes docs.

1. Accuracy: mean NLL error (nats/dim) with the exact denoiser of the 16-D mixture.
2. Spread: per-sample standard deviation of the NLL estimate (bits/dim) against function evaluations,
   for the single-probe Hutchinson ODE estimator (score_sde's and k-diffusion's method), k probes,
   the exact divergence, fresh-probe quadrature, and the Gaussian control variate; on the 16-D mixture
   and on a rotated 16-D Gaussian (the anchor's case).

    python benchmarks/likelihood.py [--n 256]
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
from noisecraft.analysis.likelihood import GaussianFit, log_likelihood

SCHED = nc.schedules.VPLinear(t_min=1e-5)


def rotated_gaussian(dim: int = 16) -> nc.oracle.GaussianMixture:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    cov = (q * torch.logspace(-2, 0, dim, dtype=torch.float64)) @ q.T
    return nc.oracle.gaussian(torch.zeros(dim), cov)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--out", default="docs/benchmarks/likelihood.md")
    args = parser.parse_args()
    lines = ["# Likelihood benchmark\n",
             f"`python benchmarks/likelihood.py --n {args.n}` on {platform.machine()}, {datetime.date.today()}, "
             f"torch {torch.__version__}. Schedule VP linear (t_min 1e-5), exact oracle denoiser, rtol = atol = 1e-5. "
             "Spread = per-sample standard deviation of (estimated - true) log-likelihood, in bits/dim. "
             "NFE counts denoiser calls (a call with a vector-Jacobian product counts once).\n"]
    for name, oracle in (("16-D mixture", nc.oracle.mixture16d()), ("rotated 16-D Gaussian", rotated_gaussian())):
        x, _ = oracle.sample(args.n, torch.Generator().manual_seed(1))
        truth = oracle.log_prob(x)
        fit = GaussianFit.from_data(oracle.sample(20000, torch.Generator().manual_seed(2))[0])
        configs = [
            ("single probe, fixed along the ODE (anchor method)", dict(probes=1, estimator="ode")),
            ("4 probes, fixed along the ODE", dict(probes=4, estimator="ode")),
            ("exact divergence (ODE)", dict(divergence="exact", estimator="ode")),
            ("fresh probe per node, 16 x 4 Gauss-Legendre", dict(probes=1, estimator="quadrature", panels=16)),
            ("fresh probe per node, 32 x 4 Gauss-Legendre", dict(probes=1, estimator="quadrature", panels=32)),
            ("fresh probes + Gaussian control variate, 32 x 4", dict(probes=1, estimator="quadrature", panels=32, control_variate=fit)),
            ("single probe, ODE + Gaussian control variate", dict(probes=1, estimator="ode", control_variate=fit)),
        ]
        lines.append(f"\n## {name}\n")
        lines.append("| estimator | NFE | mean error (nats/dim) | spread (bits/dim) | spread vs anchor | NFE vs anchor | seconds |")
        lines.append("|---|---|---|---|---|---|---|")
        anchor = None
        for label, kw in configs:
            t0 = time.time()
            result = log_likelihood(oracle.denoiser(SCHED), SCHED, x, generator=torch.Generator().manual_seed(3), **kw)
            err = result.log_prob - truth
            spread = float(err.std()) / (16 * math.log(2))
            if anchor is None:
                anchor = (spread, result.nfe)
            lines.append(f"| {label} | {result.nfe} | {float(err.mean()) / 16:+.4f} | {spread:.4f} | "
                         f"{anchor[0] / max(spread, 1e-12):.1f}x smaller | {result.nfe / anchor[1]:.2f}x | {time.time() - t0:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
