"""Synthetic tables: mixed-type tabular diffusion (numeric Gaussian + categorical discrete diffusion).

A TabDDPM-style model (Kotelnikov et al. 2023) with absorbing-state diffusion for categories (Austin et
al. 2021; Sahoo et al. 2024), differentially private fitting (DP-SGD through Opacus, private
preprocessing), exact constraints between columns, its evaluation (utility, fidelity, privacy, attacks)
and a Gaussian-copula baseline. See docs/tabular.md.
"""

from noisecraft.tabular.constraints import Constraints, detect_constraints
from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import (  # the function, not its module
    EvalReport,
    TableEvaluation,
    evaluate,
    evaluate_files,
)
from noisecraft.tabular.model import TabularConfig, TabularDiffusion, fit_table
from noisecraft.tabular.privacy import DPConfig, PrivacyRecord
from noisecraft.tabular.schema import TableSchema, infer_schema, read_table

__all__ = ["Constraints", "DPConfig", "EvalReport", "GaussianCopula", "PrivacyRecord", "TableEvaluation", "TableSchema",
           "TabularConfig", "TabularDiffusion", "detect_constraints", "evaluate", "evaluate_files", "fit_table",
           "infer_schema", "load_example", "read_table", "split_table"]
