"""Optimised time grids kept in a run: `grids.json` in the run directory, one entry per (solver, steps), each with
the method that found it, its NFE, its times and its measured errors (noisecraft.solvers.grid_search).

`Pipeline.solver` reads them: when the caller gives no grid, a stored grid for the solver and step count in use
replaces the config's named grid. The file is small JSON, written atomically (read, merge, replace).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from noisecraft.io import write_text_atomic
from noisecraft.solvers.grid_search import GridInfo, optimize_grid

GRIDS_FILE = "grids.json"


@dataclass(frozen=True)
class StoredGrid:
    """One optimised grid as a run keeps it."""

    solver: str
    steps: int
    method: str
    nfe: int
    times: list[float]
    error: float
    default_error: float
    fd: float
    default_fd: float

    @property
    def note(self) -> str:
        """One line for a person: where the grid came from and what it measured."""
        return (f"optimised grid ({self.method}, NFE {self.nfe}) from {GRIDS_FILE}: end-point error vs a fine "
                f"teacher {self.error:.4g} (default grid {self.default_error:.4g})")


def grid_key(solver: str, steps: int) -> str:
    return f"{solver}/{steps}"


def read_grids(run_dir: str | Path) -> dict[str, StoredGrid]:
    """The run's stored grids by key ({} when it has none); a damaged file is a ValueError naming it."""
    path = Path(run_dir) / GRIDS_FILE
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return dict(_parse_grids(path, stat.st_ino, stat.st_mtime_ns, stat.st_size))  # an atomic rewrite: a new inode


@functools.lru_cache(maxsize=16)
def _parse_grids(path: Path, _inode: int, _mtime_ns: int, _size: int) -> dict[str, StoredGrid]:
    """The grids file at `path`, parsed once per version of it (a sampler reads it on every draw)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {key: StoredGrid(**entry) for key, entry in raw.items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{str(path)!r} is not a grids file written by `noisecraft grid optimize`: {err}") from None


def stored_grid(run_dir: str | Path | None, solver: str, steps: int) -> StoredGrid | None:
    """The run's optimised grid for `solver` at `steps` intervals, or None."""
    if run_dir is None:
        return None
    return read_grids(run_dir).get(grid_key(solver, steps))


def save_grid(run_dir: str | Path, info: GridInfo) -> StoredGrid:
    """Keep `info`'s grid in the run (replacing one for the same solver and steps), atomically."""
    entry = StoredGrid(info.solver, info.steps, info.method, info.nfe, [float(t) for t in info.times], info.error,
                       info.default_error, info.fd, info.default_fd)
    grids = {**read_grids(run_dir), grid_key(info.solver, info.steps): entry}
    text = json.dumps({key: asdict(value) for key, value in sorted(grids.items())}, indent=1)
    write_text_atomic(Path(run_dir) / GRIDS_FILE, text + "\n")
    return entry


def optimize_run_grid(pipe: Any, nfe: int, solver: str | None = None, method: str = "fd", batch: int = 256,
                      seed: int = 0, **kw: Any) -> StoredGrid:
    """Optimise a grid for a run's unconditional denoiser (bounded as it samples) and keep it in the run.
    AYS draws its data samples from the run's training data. `pipe` is a noisecraft.runs.pipeline.Pipeline."""
    if pipe.run_dir is None:
        raise ValueError("this pipeline has no run directory to keep the grid in")
    solver = solver or pipe.config.sample.solver
    network, device = pipe.denoiser(), pipe.device

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return network(x.to(device), t.to(device)).to(x.device)

    data = pipe.config.data.load().x if method == "ays" else None
    _, info = optimize_grid(denoise, pipe.schedule, nfe, solver, data, method, shape=pipe.sample_shape, batch=batch,
                            seed=seed, return_info=True, dtype=torch.float32, **kw)
    return save_grid(pipe.run_dir, info)


__all__ = ["GRIDS_FILE", "StoredGrid", "grid_key", "optimize_run_grid", "read_grids", "save_grid", "stored_grid"]
