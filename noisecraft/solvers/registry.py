"""The registry of solvers: each is `solver(denoise, schedule, x_T, times, generator, **options) -> x at
times[-1]`, registered with its fixed options, its evaluations per step, its order and whether it is random."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from noisecraft.solvers.ancestral import ddim, ddpm
from noisecraft.solvers.consistency import consistency
from noisecraft.solvers.dpm import multistep, singlestep_2s, singlestep_pp2s
from noisecraft.solvers.ode import euler, heun, rk45
from noisecraft.solvers.stochastic import euler_maruyama, predictor_corrector

_CONTRACT = {"denoise", "schedule", "x", "times", "generator"}


def _default(fn: Callable, option: str) -> object:
    return inspect.signature(fn).parameters[option].default


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its function, fixed options, evaluations per step (at its default options; 0 for
    an adaptive solver), whether it is random, its order, and `nfe_rule` where options change the count."""

    fn: Callable[..., Tensor]
    options: dict = field(default_factory=dict)
    nfe_per_step: int = 1
    stochastic: bool = False
    order: int = 1
    doc: str = ""
    nfe_rule: Callable[[dict], int] | None = None
    #: the longest step in log-SNR the solver takes in a default range (None: no limit); see step_aware_range
    max_log_snr_step: float | None = None
    #: what `denoise` must be: "denoiser", x0_hat = E[x_0 | x_t]; "consistency", a consistency model (Song et
    #: al. 2023) mapping x_t to its probability-flow path's clean end; a denoiser solver samples either
    model: str = "denoiser"

    def evaluations_per_step(self, options: dict | None = None) -> int:
        """Network evaluations per grid interval with these options (0: adaptive, chosen by the solver)."""
        return self.nfe_rule({**self.options, **(options or {})}) if self.nfe_rule else self.nfe_per_step

    def nfe(self, steps: int, options: dict | None = None, denoise_final: bool = True) -> int | None:
        """The evaluations a run of `steps` intervals takes, the final clean estimate included; None if adaptive."""
        per_step = self.evaluations_per_step(options)
        return per_step * steps + int(denoise_final) if per_step else None

    def accepted_options(self) -> set[str]:
        return _parameters(self.fn) - _CONTRACT - set(self.options)


@functools.lru_cache(maxsize=64)
def _parameters(fn: Callable) -> frozenset[str]:
    """The parameter names of a solver function, read once (inspect.signature is slow on every draw)."""
    return frozenset(inspect.signature(fn).parameters)


def _pc_evaluations(options: dict) -> int:
    """Predictor-corrector: one predictor evaluation plus one per Langevin corrector step."""
    return 1 + int(options.get("corrector_steps", _default(predictor_corrector, "corrector_steps")))


SOLVERS: dict[str, SolverSpec] = {
    "ddpm": SolverSpec(ddpm, nfe_per_step=1, stochastic=True, doc="DDPM ancestral (Ho et al. 2020)"),
    "ddim": SolverSpec(ddim, nfe_per_step=1, order=1, doc="DDIM, eta option (Song et al. 2021a)"),
    "euler_maruyama": SolverSpec(euler_maruyama, stochastic=True, doc="Euler-Maruyama on the reverse SDE"),
    "pc": SolverSpec(predictor_corrector, nfe_per_step=_pc_evaluations({}), stochastic=True,
                     doc="predictor-corrector (Song et al. 2021)", nfe_rule=_pc_evaluations),
    "euler": SolverSpec(euler, order=1, doc="Euler on the PF-ODE in t (Song et al. 2021)"),
    "heun": SolverSpec(heun, nfe_per_step=2, order=2, doc="Heun in log-SNR (space=\"sigma\": Karras et al. 2022, Alg. 2), optional churn"),
    "dpm++1m": SolverSpec(multistep, {"order": 1}, order=1, doc="DPM-Solver++ first order (= DDIM)"),
    "dpm++2m": SolverSpec(multistep, {"order": 2}, order=2, doc="DPM-Solver++(2M) (Lu et al. 2022b)"),
    "dpm++3m": SolverSpec(multistep, {"order": 3}, order=3, doc="DPM-Solver++(3M) (Lu et al. 2022b)"),
    "unipc": SolverSpec(multistep, {"order": 2, "corrector": True}, order=3, doc="DPM-Solver++(2M) + UniPC-style corrector"),
    # noise prediction: its second-order term is eps's error times sigma_t (e^h - 1), which outgrows the data-
    # prediction form's at long steps (Lu et al. 2022b, sec. 3); two steps of 5 nats gave W2 1.05 on the 16-D
    # oracle, capped at 4 nats 0.52 (DPM-Solver++(2S): 0.33)
    "dpm2s": SolverSpec(singlestep_2s, nfe_per_step=2, order=2, doc="DPM-Solver-2 singlestep (Lu et al. 2022a)",
                        max_log_snr_step=4.0),
    "dpm++2s": SolverSpec(singlestep_pp2s, nfe_per_step=2, order=2, doc="DPM-Solver++(2S) (Lu et al. 2022b)"),
    "rk45": SolverSpec(rk45, nfe_per_step=0, order=5, doc="adaptive Dormand-Prince on the PF-ODE (torchdiffeq)"),
    "consistency": SolverSpec(consistency, stochastic=True, doc="multistep consistency sampling (Song et al. 2023, "
                              "Alg. 1); for consistency models", model="consistency"),
}


def get_solver(name: str) -> SolverSpec:
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[name]


def check_options(name: str, options: dict) -> None:
    """Options `solver` accepts, or a ValueError naming the unknown ones and the accepted ones."""
    accepted = get_solver(name).accepted_options()
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"solver {name!r} does not take option(s) {sorted(unknown)}; it accepts {sorted(accepted)}")
