"""The forward process, from a schedule's alpha(t) and sigma(t).

Forward marginal q(x_t | x_0) = N(alpha x_0, sigma^2 I); the discrete Markov chain
q(x_n | x_{n-1}) = N(sqrt(1 - beta_n) x_{n-1}, beta_n I) (Ho et al. 2020, eq. 2). Its reverse in time, the
reverse SDE and the probability-flow ODE, is noisecraft.core.sde.
"""

from __future__ import annotations

from torch import Tensor

from noisecraft.core.noise import Generator, randn_like
from noisecraft.core.schedules import DiscreteVP, Schedule
from noisecraft.core.tensors import as_time, expand_like


def q_sample(schedule: Schedule, x0: Tensor, t: float | Tensor, generator: Generator = None) -> tuple[Tensor, Tensor]:
    """Draw x_t ~ q(x_t | x_0); returns (x_t, eps)."""
    t = as_time(t, x0.shape[0])
    eps = randn_like(x0, generator)
    alpha, sigma = expand_like(schedule.alpha(t), x0), expand_like(schedule.sigma(t), x0)
    return alpha * x0 + sigma * eps, eps


def chain_step(schedule: DiscreteVP, x_prev: Tensor, n: int, generator: Generator = None) -> Tensor:
    """One step of the discrete chain: x_n = sqrt(1 - beta_n) x_{n-1} + sqrt(beta_n) z (Ho et al. 2020, eq. 2)."""
    if not isinstance(schedule, DiscreteVP):
        raise ValueError(f"the Markov chain needs a DiscreteVP schedule, got {type(schedule).__name__}")
    if not 0 <= n < schedule.N:
        raise ValueError(f"timestep must be in [0, {schedule.N - 1}], got {n}")
    beta = float(schedule.beta_table()[n])
    return (1.0 - beta) ** 0.5 * x_prev + beta**0.5 * randn_like(x_prev, generator)


def run_chain(schedule: DiscreteVP, x0: Tensor, n_last: int, generator: Generator = None) -> Tensor:
    """x_{n_last} by running the chain from x_0 through timesteps 0..n_last."""
    x = x0
    for n in range(n_last + 1):
        x = chain_step(schedule, x, n, generator)
    return x
