"""Synthetic tables: mixed-type tabular diffusion (numeric Gaussian + categorical discrete diffusion).

A TabDDPM-style model (Kotelnikov et al. 2023) with absorbing-state diffusion for categories (Austin et
al. 2021; Sahoo et al. 2024), its evaluation (utility, fidelity, privacy) and a Gaussian-copula
baseline. See docs/tabular.md.
"""

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import (  # the function, not its module
    EvalReport,
    TableEvaluation,
    evaluate,
    evaluate_files,
)
from noisecraft.tabular.model import TabularConfig, TabularDiffusion, fit_table
from noisecraft.tabular.schema import TableSchema, infer_schema, read_table

__all__ = ["EvalReport", "GaussianCopula", "TableEvaluation", "TableSchema", "TabularConfig", "TabularDiffusion",
           "evaluate", "evaluate_files", "fit_table", "infer_schema", "load_example", "read_table", "split_table"]
