"""Synthetic tables: mixed-type tabular diffusion (numeric Gaussian + categorical discrete diffusion).

A TabDDPM-style model (Kotelnikov et al. 2023) with absorbing-state diffusion for categories (Austin et
al. 2021; Sahoo et al. 2024), its evaluation (utility, fidelity, privacy) and a Gaussian-copula
baseline. See docs/tabular.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# imported on first use, so that `noisecraft --help` (which registers tabular.cli) stays quick
_EXPORTS = {
    "GaussianCopula": "copula",
    "load_example": "data",
    "split_table": "data",
    "EvalReport": "evaluate",
    "evaluate": "evaluate",
    "TabularConfig": "model",
    "TabularDiffusion": "model",
    "TableSchema": "schema",
    "infer_schema": "schema",
    "read_table": "schema",
}
__all__ = ["EvalReport", "GaussianCopula", "TableSchema", "TabularConfig", "TabularDiffusion", "evaluate",
           "infer_schema", "load_example", "read_table", "split_table"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'noisecraft.tabular' has no attribute {name!r}")
    return getattr(importlib.import_module(f"noisecraft.tabular.{_EXPORTS[name]}"), name)
