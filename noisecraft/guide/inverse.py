"""Inverse problems with a diffusion prior: y = A x + sigma_y n (noisecraft.guide.measurements), solved by wrapping
the denoise function (DESIGN.md section 2), or, where the method changes the time path, by a short loop
over the schedule that reuses the solvers' own steps.

Denoise wrappers (work with every solver):
- `projection`: x0_hat <- x0_hat + lambda_t A^+ (y - A x0_hat), the range/null-space split of DDNM
  (Wang et al. 2023, eq. 13). For a mask this is inpainting by replacement (the known pixels of x0_hat
  are y; Song et al. 2021, app. I; Lugmayr et al. 2022's baseline). Noisy y: lambda_t =
  sigma~_t^2 / (sigma~_t^2 + sigma_y^2), a shrinkage we use in place of DDNM+'s noise-aware step.
- `dps`: diffusion posterior sampling (Chung et al. 2023, Alg. 1): the likelihood p(y | x_t) is taken as
  p(y | x0_hat(x_t)), and its score is -zeta grad_x ||y - A x0_hat(x_t)|| (their step normalised by the
  residual norm), added to the prior score, so x0_hat <- x0_hat + sigma^2/alpha * that score.
- `moment_matched`: p(y | x_t) = N(y; A x0_hat, A C A^T + sigma_y^2 I) with the Tweedie covariance
  C = Cov[x_0 | x_t] = sigma^2/alpha d x0_hat / d x_t (Boys et al. 2023; Rozet et al. 2024, "MMPS"), solved by
  conjugate gradients with vector-Jacobian products. This gives x0_hat <- E[x_0 | x_t, y] under a Gaussian
  p(x_0 | x_t): exact for Gaussian data, so samples follow the exact posterior up to discretisation.

Sampler-level:
- `repaint`: RePaint (Lugmayr et al. 2022, Alg. 1): DDPM steps with the projection wrapper, and every
  `jump_length` steps a jump back up the grid by forward noising q(x_s | x_t), `jump_count` passes in all.
- `sdedit`: SDEdit (Meng et al. 2022): noise a rough input to time t0, then solve down with any solver.
- `denoise_observation`: y = x + sigma_y n is x_t / alpha at the time where sigma/alpha = sigma_y, so
  running a stochastic solver (the reverse SDE) from there samples p(x_0 | y) exactly for any prior,
  up to discretisation (Kadkhodaie & Simoncelli 2021 use the same identity).

Which are exact: for Gaussian data and linear A, `moment_matched` (any A, any sigma_y) and
`denoise_observation` (A = I); `projection`/replacement only when the observed and unobserved parts are
independent under the prior; `repaint` and `dps` are approximate (their errors are in
docs/benchmarks/guidance.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from noisecraft.core.noise import SampleNoise, randn_like
from noisecraft.core.schedules import Schedule
from noisecraft.core.tensors import as_time, expand_like, per_time
from noisecraft.core.timesteps import make_grid
from noisecraft.guide.measurements import Measurement
from noisecraft.solvers import CountingDenoise, final_step, prior_sample, solve
from noisecraft.solvers.ancestral import ddpm

DenoiseFn = Callable[..., Tensor]


def _call(denoise: DenoiseFn, x: Tensor, t: Tensor, cond: Any) -> Tensor:
    return denoise(x, t) if cond is None else denoise(x, t, cond)


def _alpha_sigma(schedule: Schedule, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return expand_like(per_time(schedule.alpha, t), x), expand_like(per_time(schedule.sigma, t), x)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner products, shape (batch,)."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, steps: int) -> Tensor:
    """Solve K z = b per sample (K symmetric positive semi-definite), `steps` CG iterations from z = 0."""
    z = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rs = _dot(r, r)
    for _ in range(steps):
        kp = apply(p)
        pkp = _dot(p, kp)
        ok = pkp > 1e-30 * rs.clamp_min(1e-300)  # converged or degenerate samples stop moving
        a = torch.where(ok, rs / torch.where(ok, pkp, torch.ones_like(pkp)), torch.zeros_like(pkp))
        a = expand_like(a, b)
        z, r = z + a * p, r - a * kp
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        p = r + expand_like(beta, b) * p
        rs = rs_new
    return z


class Projection:
    """x0_hat + lambda_t A^+ (y - A x0_hat): DDNM's range/null-space split; replacement for a mask."""

    def __init__(self, denoise: DenoiseFn, measurement: Measurement, schedule: Schedule | None = None) -> None:
        if measurement.sigma > 0 and schedule is None:
            raise ValueError(f"a noisy measurement (sigma_y={measurement.sigma}) needs the schedule for its shrinkage")
        self.denoise, self.measurement, self.schedule = denoise, measurement, schedule

    def __call__(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        t = as_time(t, x.shape[0])
        x0 = _call(self.denoise, x, t, cond)
        correction = self.measurement.operator.pinv(self.measurement.residual(x0))
        if self.measurement.sigma > 0:
            alpha, sigma = _alpha_sigma(self.schedule, x, t)
            var = (sigma / alpha) ** 2
            correction = var / (var + self.measurement.sigma**2) * correction
        return x0 + correction


def projection(denoise: DenoiseFn, measurement: Measurement, schedule: Schedule | None = None) -> Projection:
    """DDNM projection (Wang et al. 2023); with a Mask, inpainting by replacement."""
    return Projection(denoise, measurement, schedule)


replacement = projection


class DPS:
    """x0_hat - zeta sigma^2/alpha grad_x ||y - A x0_hat(x_t)|| (Chung et al. 2023, Alg. 1, as a score)."""

    def __init__(self, denoise: DenoiseFn, measurement: Measurement, schedule: Schedule, zeta: float = 1.0) -> None:
        if not zeta >= 0:
            raise ValueError(f"DPS step size zeta must be >= 0, got {zeta}")
        self.denoise, self.measurement, self.schedule, self.zeta = denoise, measurement, schedule, float(zeta)

    def __call__(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        t = as_time(t, x.shape[0])
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = _call(self.denoise, x_in, t, cond)
            norm = self.measurement.residual(x0).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(norm.sum(), x_in)
        alpha, sigma = _alpha_sigma(self.schedule, x, t)
        return x0.detach() - self.zeta * sigma**2 / alpha * self.step_scale(x0.detach()) * grad

    def step_scale(self, x0: Tensor) -> Tensor | float:
        """The factor on zeta at x0_hat: 1 here, where zeta is in the units of x (noisecraft.runs.latent.DecodedDPS
        measures it in decoded pixels)."""
        return 1.0


def dps(denoise: DenoiseFn, measurement: Measurement, schedule: Schedule, zeta: float = 1.0) -> DPS:
    """Diffusion posterior sampling (Chung et al. 2023) with step size zeta."""
    return DPS(denoise, measurement, schedule, zeta)


class MomentMatched:
    """E[x_0 | x_t, y] under p(x_0 | x_t) ~ N(x0_hat, C), C = sigma^2/alpha dx0_hat/dx_t (Rozet et al. 2024).

    x0_hat + C A^T (A C A^T + sigma_y^2 I)^{-1} (y - A x0_hat), with C v from one vector-Jacobian product
    (the Jacobian of a denoiser is symmetric: it is sigma^2/alpha times a covariance) and the inverse by
    `cg_steps` conjugate-gradient iterations; CG is exact after as many steps as y has dimensions.
    """

    def __init__(self, denoise: DenoiseFn, measurement: Measurement, schedule: Schedule, cg_steps: int = 8) -> None:
        if cg_steps < 1:
            raise ValueError(f"cg_steps must be >= 1, got {cg_steps}")
        self.denoise, self.measurement, self.schedule, self.cg_steps = denoise, measurement, schedule, cg_steps

    def __call__(self, x: Tensor, t: float | Tensor, cond: Any = None) -> Tensor:
        t = as_time(t, x.shape[0])
        A, sigma_y = self.measurement.operator, self.measurement.sigma
        alpha, sigma = _alpha_sigma(self.schedule, x, t)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = _call(self.denoise, x_in, t, cond)

            def cov(v: Tensor) -> Tensor:  # C v = sigma^2/alpha J^T v
                (g,) = torch.autograd.grad(x0, x_in, grad_outputs=v, retain_graph=True)
                return sigma**2 / alpha * g

            residual = self.measurement.residual(x0).detach()
            z = conjugate_gradient(lambda u: A(cov(A.adjoint(u))) + sigma_y**2 * u, residual, self.cg_steps)
            correction = cov(A.adjoint(z))
        return (x0 + correction).detach()


def moment_matched(denoise: DenoiseFn, measurement: Measurement, schedule: Schedule, cg_steps: int = 8) -> MomentMatched:
    """Moment-matching posterior guidance: exact for Gaussian data (see MomentMatched)."""
    return MomentMatched(denoise, measurement, schedule, cg_steps)


# -- sampler-level methods ---------------------------------------------------------------------------------

def resampling_path(steps: int, jump_length: int, jump_count: int) -> list[int]:
    """Grid indices visited by RePaint (Lugmayr et al. 2022, sec. 4.2): down one index per step; after each
    block of `jump_length` steps, back up `jump_length` indices, until each block is passed `jump_count` times.
    Index 0 is t_max, index `steps` is t_min; the last block is never repeated."""
    if steps < 1 or jump_length < 1 or jump_count < 1:
        raise ValueError(f"steps, jump_length and jump_count must be >= 1, got {steps}, {jump_length}, {jump_count}")
    remaining = {k: jump_count - 1 for k in range(jump_length, steps, jump_length)}
    path, i = [0], 0
    while i < steps:
        i += 1
        path.append(i)
        if remaining.get(i, 0) > 0:
            remaining[i] -= 1
            for _ in range(jump_length):
                i -= 1
                path.append(i)
    return path


def repaint(
    denoise: DenoiseFn,
    schedule: Schedule,
    measurement: Measurement,
    shape: Sequence[int],
    steps: int = 50,
    jump_length: int = 10,
    jump_count: int = 10,
    generator: torch.Generator | None = None,
    grid: str = "log_snr",
    cond: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1) on `steps` grid intervals; NFE ~ steps * jump_count.

    Each step down is the DDPM ancestral step (noisecraft.solvers.ancestral.ddpm) of the projection
    wrapper, so the known region follows q(x_s | x_t, x_0 = y), which has RePaint's marginals
    alpha_s y + sigma_s eps; each step up draws q(x_s | x_t) with the schedule's transition. With a Mask
    this is RePaint; with another operator, DDNM with its "time travel" (Wang et al. 2023, sec. 3.3).
    """
    shape = tuple(int(s) for s in shape)
    times = make_grid(schedule, steps, grid)
    noise = SampleNoise.from_generator(generator, shape[0])
    x = prior_sample(schedule, shape, noise, dtype, device, float(times[0]))
    counted = CountingDenoise(projection(denoise, measurement, schedule), cond)
    path = resampling_path(steps, jump_length, jump_count)
    for i, k in itertools.pairwise(path):
        if k > i:
            x = ddpm(counted, schedule, x, times[i:k + 1], noise)
        else:
            a, s = schedule.transition(times[i], times[k])
            x = float(a) * x + float(s) * randn_like(x, noise)
    return final_step(counted, schedule, x, float(times[-1]), True)


def _from_time(denoise: DenoiseFn, schedule: Schedule, x_t0: Tensor, t0: float, solver: str, steps: int,
               noise: SampleNoise, grid: str, cond: Any) -> Tensor:
    times = make_grid(schedule, steps, grid, t_max=t0)
    x, _ = solve(denoise, schedule, x_t0, times, solver, noise, cond=cond)
    return x


def sdedit(
    denoise: DenoiseFn,
    schedule: Schedule,
    x_in: Tensor,
    strength: float = 0.5,
    solver: str = "ddpm",
    steps: int = 50,
    generator: torch.Generator | None = None,
    grid: str = "log_snr",
    cond: Any = None,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Alg. 1): x_t0 = alpha x_in + sigma eps at t0 = strength, then solve to t_min.

    strength near 0 keeps the input; near 1 draws almost a fresh sample. Any solver of noisecraft.SOLVERS.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"SDEdit strength must be in (0, 1], got {strength}")
    t0 = max(float(strength) * schedule.t_max, schedule.t_min + 1e-6)
    noise = SampleNoise.from_generator(generator, x_in.shape[0])
    alpha, sigma = float(schedule.alpha(t0)), float(schedule.sigma(t0))
    x_t0 = alpha * x_in + sigma * noise.randn(tuple(x_in.shape[1:]), x_in.dtype, x_in.device)
    return _from_time(denoise, schedule, x_t0, t0, solver, steps, noise, grid, cond)


def denoise_observation(
    denoise: DenoiseFn,
    schedule: Schedule,
    y: Tensor,
    sigma_y: float,
    solver: str = "ddpm",
    steps: int = 50,
    generator: torch.Generator | None = None,
    grid: str = "log_snr",
    cond: Any = None,
) -> Tensor:
    """Samples of p(x_0 | y) for y = x_0 + sigma_y n: start the reverse SDE at x_t = alpha(t) y where
    sigma(t)/alpha(t) = sigma_y. Exact for any prior up to discretisation with a stochastic solver; an ODE
    solver returns one deterministic estimate instead."""
    if not sigma_y > 0:
        raise ValueError(f"noise level sigma must be > 0, got {sigma_y}")
    t0 = float(schedule.t_from_sigma_tilde(sigma_y))
    lo, hi = float(schedule.sigma_tilde(schedule.t_min)), float(schedule.sigma_tilde(schedule.t_max))
    if not schedule.t_min < t0 <= schedule.t_max:
        raise ValueError(f"noise level sigma={sigma_y} is outside the model's range ({lo:.3g}, {hi:.3g}]")
    noise = SampleNoise.from_generator(generator, y.shape[0])
    return _from_time(denoise, schedule, float(schedule.alpha(t0)) * y, t0, solver, steps, noise, grid, cond)


__all__ = ["DPS", "MomentMatched", "Projection", "conjugate_gradient", "denoise_observation", "dps",
           "moment_matched", "projection", "repaint", "replacement", "resampling_path", "sdedit"]
