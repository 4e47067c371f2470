"""DPM-Solver family: exponential integrators of the probability-flow ODE in eta = log(alpha / sigma).

Data prediction (DPM-Solver++, Lu et al. 2022b):
x_t = (sigma_t / sigma_s) x_s + alpha_t [phi_1 x0 + phi_2 x0' + phi_3 x0''] with h = eta_t - eta_s,
the derivatives of x0_hat in eta taken from the interpolating polynomial through the last 1-3 points
(multistep, Lu et al. 2022b Alg. 2 in its Taylor form; order 2 equals diffusers' solver_type="heun"; with
midpoint=True, order 2 is Alg. 2 as printed, D = x0_s + (x0_s - x0_prev) / (2 r), diffusers' default
solver_type="midpoint").
Singlestep DPM-Solver-2 (noise prediction, Lu et al. 2022a Alg. 1, r = 1/2) and DPM-Solver++(2S)
(Lu et al. 2022b Alg. 1) take an intermediate evaluation instead of history.
"""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from noisecraft.core.noise import Generator
from noisecraft.core.schedules import Schedule
from noisecraft.solvers._steps import (
    Point,
    eps_of,
    exponential_step,
    exponential_taylor_step,
    phi,
    point,
)


def multistep(
    denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None,
    order: int = 2, corrector: bool = False, midpoint: bool = False,
) -> Tensor:
    """DPM-Solver++(kM), k = order in {1, 2, 3}, one evaluation per step, warming up with lower orders.

    corrector=True adds the UniPC idea (Zhao et al. 2023): once x0_hat is evaluated at the newly reached
    point, the step that led there is redone with a polynomial through that point too (an exponential
    Adams-Moulton step of order k + 1), and the evaluation is reused, so the NFE is unchanged. The weights
    are the exact phi-function integrals of the interpolating polynomial (not UniPC's B(h) variants).
    The last interval has no corrector: its evaluation is the driver's final clean estimate.
    midpoint=True (order 2 only) takes the second-order term of Lu et al. 2022b, Alg. 2 as printed.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if midpoint and (order != 2 or corrector):
        raise ValueError("midpoint=True is the second-order rule of DPM-Solver++(2M); expected order 2 without corrector")
    history: list[tuple[float, Tensor]] = []
    previous: tuple[Point, Tensor] | None = None  # (point, state) one grid time back, for the corrector
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        x0_s = denoise(x, s.t)
        if corrector and previous is not None:
            r, x_r = previous
            x = exponential_taylor_step(x_r, r, s, [(s.eta, x0_s)] + history[-order:])
        history = (history + [(s.eta, x0_s)])[-order:]
        previous = (s, x)
        x = midpoint_step(x, s, t, history) if midpoint and len(history) == 2 else \
            exponential_taylor_step(x, s, t, history[::-1])
    return x


def midpoint_step(x: Tensor, s: Point, t: Point, history: list[tuple[float, Tensor]]) -> Tensor:
    """DPM-Solver++(2M) as printed (Lu et al. 2022b, Alg. 2): x_t = (sigma_t/sigma_s) x_s + alpha_t phi_1(h) D,
    D = x0_s + (x0_s - x0_prev) / (2 r), r = h_prev / h; `history` is [(eta_prev, x0_prev), (eta_s, x0_s)]."""
    (eta_prev, x0_prev), (_, x0_s) = history
    h = t.eta - s.eta
    r = (s.eta - eta_prev) / h
    return exponential_step(x, s, t, phi(h, 1)[0] * (x0_s + (x0_s - x0_prev) / (2.0 * r)))


def _midpoint(schedule: Schedule, s: Point, t: Point, r: float) -> Point:
    lam = 2.0 * (s.eta + r * (t.eta - s.eta))
    return point(schedule, schedule.t_from_log_snr(lam))


def singlestep_2s(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None, r: float = 0.5) -> Tensor:
    """DPM-Solver-2 with noise prediction (Lu et al. 2022a, Alg. 1); two evaluations per step."""
    if not 0.0 < r < 1.0:
        raise ValueError(f"r must be in (0, 1), got {r}")
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        m = _midpoint(schedule, s, t, r)
        h = t.eta - s.eta
        eps_s = eps_of(x, denoise(x, s.t), s)
        u = (m.alpha / s.alpha) * x - m.sigma * math.expm1(r * h) * eps_s
        eps_m = eps_of(u, denoise(u, m.t), m)
        x = (t.alpha / s.alpha) * x - t.sigma * math.expm1(h) * (eps_s + (eps_m - eps_s) / (2.0 * r))
    return x


def singlestep_pp2s(denoise: Callable, schedule: Schedule, x: Tensor, times: Tensor, generator: Generator = None, r: float = 0.5) -> Tensor:
    """DPM-Solver++(2S) with data prediction (Lu et al. 2022b, Alg. 1); two evaluations per step."""
    if not 0.0 < r < 1.0:
        raise ValueError(f"r must be in (0, 1), got {r}")
    for s_time, t_time in zip(times[:-1], times[1:]):
        s, t = point(schedule, s_time), point(schedule, t_time)
        m = _midpoint(schedule, s, t, r)
        x0_s = denoise(x, s.t)
        u = exponential_step(x, s, m, phi(m.eta - s.eta)[0] * x0_s)
        x0_m = denoise(u, m.t)
        x = exponential_step(x, s, t, phi(t.eta - s.eta)[0] * (x0_s + (x0_m - x0_s) / (2.0 * r)))
    return x
