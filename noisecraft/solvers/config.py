"""A sampler as a plain config (STYLE.md): what a run stores and what `sample` uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from noisecraft.core.bounds import check_threshold
from noisecraft.core.schedules import Schedule
from noisecraft.core.timesteps import GRIDS, check_time_list
from noisecraft.solvers.driver import SampleInfo, sample
from noisecraft.solvers.registry import check_options, get_solver
from noisecraft.validation import check_field


class SolverConfig(BaseModel):
    """A sampler as a plain config (STYLE.md): solver name, steps, grid, time range, solver options, and the
    bounds on x0_hat (clip, threshold; noisecraft.core.bounds), as diffusers' schedulers carry
    `clip_sample` and `thresholding`.

    Round-trips to YAML; a run stores one (`RunConfig.sample`) and `run` draws samples with it. Unknown
    solvers, grids or options are errors naming them, raised when the config is built.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    solver: str = "dpm++2m"
    steps: int = Field(20, ge=0)
    grid: str | list[float] = "log_snr"
    t_min: float | None = Field(None, ge=0, le=1)
    t_max: float | None = Field(None, ge=0, le=1)
    denoise_final: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    #: static clipping of x0_hat to [-clip, clip] (Ho et al. 2020, sec. 3.3)
    clip: float | None = Field(None, gt=0)
    #: dynamic thresholding of x0_hat at this quantile, capped at clip (Saharia et al. 2022)
    threshold: float | None = None

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, grid: str | list[float]) -> str | list[float]:
        if isinstance(grid, str) and grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; expected one of {list(GRIDS)} or a list of times")
        if not isinstance(grid, str):
            check_time_list(grid)  # when the run is configured, not after it has trained
        return grid

    @field_validator("threshold")
    @classmethod
    def _check_threshold(cls, threshold: float | None) -> float | None:
        return check_threshold(threshold)

    @model_validator(mode="after")
    def _check(self) -> "SolverConfig":
        get_solver(self.solver)
        check_options(self.solver, self.options)
        return self

    def override(self, **changes: Any) -> "SolverConfig":
        """This config with the given fields changed (None leaves a field as it is), validated again; a bad
        value is named as its argument ("`steps` must be >= 1, got 0"). A new solver without new options drops
        the stored ones, which belong to the old solver."""
        changes = {k: check_field(SolverConfig, k, v) for k, v in changes.items() if v is not None}
        if "solver" in changes and changes["solver"] != self.solver and "options" not in changes:
            changes["options"] = {}
        return SolverConfig.model_validate({**self.model_dump(), **changes})

    @property
    def spec(self):
        return get_solver(self.solver)

    def nfe(self) -> int | None:
        """The evaluations one `run` takes (None for the adaptive rk45)."""
        return self.spec.nfe(self.steps, self.options, self.denoise_final)

    def run(self, denoise: Callable, schedule: Schedule, shape: Sequence[int], generator: torch.Generator | None = None,
            **kw: Any) -> Tensor | tuple[Tensor, SampleInfo]:
        """`sample` with this configuration; keyword arguments (cond, dtype, device, return_info...) pass through."""
        return sample(denoise, schedule, self.solver, self.steps, shape, generator, self.grid, self.t_min, self.t_max,
                      denoise_final=self.denoise_final, clip=self.clip, threshold=self.threshold, **kw, **self.options)
