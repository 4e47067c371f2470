"""Pictures of the theory: the schedules, the forward process, and reverse paths over the evolving density.

- `plot_schedules`: alpha(t), sigma(t) and the log-SNR lambda(t) of every schedule on shared axes
  (DESIGN.md section 1; Kingma et al. 2021, Fig. 1 plots lambda the same way).
- `plot_forward`: x_t = alpha(t) x_0 + sigma(t) eps at a few times: image strips or 2-D scatters.
- `plot_trajectories`: paths of the reverse SDE (ancestral steps; Ho et al. 2020, Song et al. 2021) and
  of the probability-flow ODE (Heun; Karras et al. 2022) from the same prior draws, in the plane and as
  the first coordinate against time over the density p_t (Song et al. 2021, Fig. 1 and 2).

Every function writes a PNG and returns its path; the paths are advanced one grid interval at a time
with `noisecraft.solve`, so the pictures show the toolkit's own solvers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noisecraft.analysis.oracle import GaussianMixture
from noisecraft.core.forward import q_sample
from noisecraft.core.noise import SampleNoise
from noisecraft.core.schedules import EDM, VE, DiscreteVP, Schedule, SubVP, VPCosine, VPLinear
from noisecraft.core.tensors import FLOAT64
from noisecraft.core.timesteps import make_grid
from noisecraft.io import save_figure
from noisecraft.solvers import solve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def all_schedules() -> dict[str, Schedule]:
    """One instance of every schedule in noisecraft.core.schedules, with its default parameters."""
    return {"VP linear": VPLinear(), "VP cosine": VPCosine(), "DDPM discrete (1000)": DiscreteVP(),
            "sub-VP": SubVP(), "VE": VE(), "EDM": EDM()}


def plot_schedules(path: str | Path, schedules: dict[str, Schedule] | None = None, points: int = 400) -> Path:
    """alpha(t), sigma(t) (log scale) and lambda(t) of each schedule over its own [t_min, t_max]."""
    plt = _pyplot()
    schedules = schedules or all_schedules()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, (name, s) in enumerate(schedules.items()):
        t = torch.linspace(s.t_min, s.t_max, points, dtype=FLOAT64)
        style = {"color": f"C{i}", "label": name, "lw": 1.8, "ls": "--" if isinstance(s, (VE, EDM)) else "-"}
        axes[0].plot(t, s.alpha(t), **style)
        axes[1].plot(t, s.sigma(t), **style)
        axes[2].plot(t, s.log_snr(t), **style)
    axes[0].set_title("alpha(t)  (signal scale)")
    axes[1].set_title("sigma(t)  (noise scale, log axis)")
    axes[1].set_yscale("log")
    axes[2].set_title("log-SNR  lambda(t) = log(alpha^2 / sigma^2)")
    axes[2].axhline(0.0, color="gray", lw=0.8)
    for ax in axes:
        ax.set_xlabel("t")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("x_t = alpha(t) x_0 + sigma(t) eps: every schedule on shared axes (dashed: alpha = 1, variance exploding)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def plot_forward(path: str | Path, x0: Tensor, schedule: Schedule, times: Sequence[float] | None = None,
                 rows: int = 6, seed: int = 0) -> Path:
    """A strip of data turning into noise: rows of images (one column per time) or one 2-D scatter per time."""
    plt = _pyplot()
    from noisecraft.viz.plots import grid_array

    if x0.ndim not in (2, 4) or (x0.ndim == 2 and x0.shape[1] != 2):
        raise ValueError(f"plot_forward takes images (n, c, h, w) or 2-D points (n, 2), got shape {tuple(x0.shape)}")
    times = list(times) if times is not None else np.linspace(schedule.t_min, schedule.t_max, 7).tolist()
    is_image = x0.ndim == 4
    x0 = x0[:rows] if is_image else x0
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g, dtype=FLOAT64)
    fig, axes = plt.subplots(1, len(times), figsize=(1.7 * len(times) if is_image else 2.4 * len(times),
                                                   1.7 * rows / 2 + 0.6 if is_image else 2.8), squeeze=False)
    for ax, t in zip(axes[0], times):
        a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
        x_t = a * x0.to(FLOAT64) + s * eps
        if is_image:
            # each column shown at its own scale: x_t / sqrt(alpha^2 + sigma^2) keeps VE's large sigma visible
            ax.imshow(grid_array((x_t / (a**2 + s**2) ** 0.5).numpy(), ncol=1), cmap="gray_r", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.axis("off")
        else:
            pts = x_t.numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.4)
            r = 3.0 * (a**2 + s**2) ** 0.5
            ax.set_xlim(-r, r)
            ax.set_ylim(-r, r)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
        ax.set_title(f"t={t:.2f}\nlambda={float(schedule.log_snr(t)):.1f}", fontsize=9)
    fig.suptitle(f"forward process q(x_t | x_0), {type(schedule).__name__}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def reverse_paths(denoise: Callable, schedule: Schedule, x_T: Tensor, times: Tensor, solver: str,
                  seed: int = 0) -> Tensor:
    """States of `solver` at every grid time, shape (len(times), *x_T.shape): one `solve` call per interval.

    `solve(..., denoise_final=False)` returns x / alpha at the interval's end, so alpha is put back.
    """
    noise = SampleNoise(seed, x_T.shape[0])
    states, x = [x_T], x_T
    for s, t in zip(times[:-1].tolist(), times[1:].tolist()):
        x_scaled, _ = solve(denoise, schedule, x, [s, t], solver, generator=noise, denoise_final=False)
        x = float(schedule.alpha(t)) * x_scaled
        states.append(x)
    return torch.stack(states)


def _marginal_density(t_values: np.ndarray, ys: np.ndarray, schedule: Schedule, oracle: GaussianMixture | None,
                      data: Tensor | None) -> np.ndarray:
    """p_t of the first coordinate, scaled by sqrt(alpha^2 + sigma^2), on ys for each t: exact from the
    oracle's first-coordinate marginal, else a histogram of noised data."""
    out = np.zeros((len(ys), len(t_values)))
    edges = np.concatenate([ys - 0.5 * (ys[1] - ys[0]), ys[-1:] + 0.5 * (ys[1] - ys[0])])
    first = None if oracle is None else GaussianMixture(oracle.weights, oracle.means[:, :1], oracle.covariances[:, :1, :1])
    for j, t in enumerate(t_values):
        scale = float((schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2).sqrt())
        if first is not None:
            y = torch.as_tensor(ys * scale, dtype=FLOAT64).reshape(-1, 1)
            out[:, j] = first.log_prob_t(y, float(t), schedule).exp().numpy() * scale
        else:
            x_t, _ = q_sample(schedule, data.to(FLOAT64), float(t), torch.Generator().manual_seed(j))
            out[:, j], _ = np.histogram(x_t[:, 0].numpy() / scale, bins=edges, density=True)
    return out


def plot_trajectories(path: str | Path, denoise: Callable, schedule: Schedule, oracle: GaussianMixture | None = None,
                      data: Tensor | None = None, n_paths: int = 24, steps: int = 60, seed: int = 0,
                      title: str = "") -> Path:
    """Reverse-SDE (ancestral) and PF-ODE (Heun) paths on 2-D data from the same prior draws.

    Left: the ODE and SDE end points over the data density p_0 in the plane, with the ODE paths. Middle and
    right: the first coordinate against t over p_t (exact from `oracle`, else a histogram of noised `data`),
    in units of sqrt(alpha^2 + sigma^2) so that VE and VP schedules share one picture.
    """
    plt = _pyplot()
    if oracle is None and data is None:
        raise ValueError("plot_trajectories needs an oracle or data to show the density")
    dim = oracle.dim if oracle is not None else data[0].numel()
    if dim != 2:
        raise ValueError(f"trajectories are drawn for 2-D data, got dimension {dim}")
    if n_paths < 1 or steps < 2:
        raise ValueError(f"need n_paths >= 1 and steps >= 2, got n_paths={n_paths}, steps={steps}")
    times = make_grid(schedule, steps, "log_snr")
    g = torch.Generator().manual_seed(seed)
    x_T = float(schedule.sigma(times[0])) * torch.randn((n_paths, 2), generator=g, dtype=FLOAT64)
    with torch.no_grad():
        ode = reverse_paths(denoise, schedule, x_T, times, "heun", seed)
        sde = reverse_paths(denoise, schedule, x_T, times, "ddpm", seed + 1)
    scale = (schedule.alpha(times) ** 2 + schedule.sigma(times) ** 2).sqrt().numpy()

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1.4, 1.4]})
    lim = 3.2
    grid = np.linspace(-lim, lim, 200)
    if oracle is not None:
        xx, yy = np.meshgrid(grid, grid)
        pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=FLOAT64)
        dens = oracle.log_prob(pts).exp().reshape(xx.shape).numpy()
    else:
        dens, _, _ = np.histogram2d(data[:, 1].numpy(), data[:, 0].numpy(), bins=100, range=[[-lim, lim], [-lim, lim]], density=True)
    ax = axes[0]
    ax.imshow(dens, extent=(-lim, lim, -lim, lim), origin="lower", cmap="Greys", aspect="equal")
    for i in range(n_paths):
        ax.plot(ode[:, i, 0].numpy() / scale, ode[:, i, 1].numpy() / scale, color="C0", lw=0.7, alpha=0.7)
    ax.scatter(ode[-1, :, 0], ode[-1, :, 1], s=12, color="C0", label="PF-ODE end", zorder=3)
    ax.scatter(sde[-1, :, 0], sde[-1, :, 1], s=12, color="C3", marker="x", label="reverse SDE end", zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_title("p_0 and the ODE paths (x_t / sqrt(alpha^2+sigma^2))", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    ys = np.linspace(-lim, lim, 160)
    lam = schedule.log_snr(times).numpy()
    lam_img = np.linspace(lam.min(), lam.max(), 120)
    t_img = schedule.t_from_log_snr(torch.as_tensor(lam_img, dtype=FLOAT64)).numpy()
    density = _marginal_density(t_img, ys, schedule, oracle, data)
    for ax, states, name, color in ((axes[1], sde, "reverse SDE (ancestral)", "C3"), (axes[2], ode, "probability-flow ODE (Heun)", "C0")):
        ax.imshow(density, extent=(lam_img[0], lam_img[-1], ys[0], ys[-1]), origin="lower", aspect="auto", cmap="Greys",
                  vmax=np.percentile(density, 99.5))
        for i in range(n_paths):
            ax.plot(lam, states[:, i, 0].numpy() / scale, color=color, lw=0.8, alpha=0.8)
        ax.set_xlim(lam.min(), lam.max())  # log-SNR rises from noise (left) to data (right)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("log-SNR lambda(t)   (noise -> data)")
        ax.set_ylabel("x_t[0] / sqrt(alpha^2 + sigma^2)")
        ax.set_title(f"{name} over p_t", fontsize=9)
    fig.suptitle(title or f"reverse paths, {type(schedule).__name__}, {steps} steps from the same {n_paths} prior draws", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)
