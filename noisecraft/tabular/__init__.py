"""Synthetic tables: mixed-type tabular diffusion (numeric Gaussian + categorical discrete diffusion).

A TabDDPM-style model (Kotelnikov et al. 2023) with absorbing-state diffusion for categories (Austin et
al. 2021; Sahoo et al. 2024), its evaluation (utility, fidelity, privacy) and a Gaussian-copula
baseline. See docs/tabular.md.
"""

from noisecraft.tabular.copula import GaussianCopula
from noisecraft.tabular.data import load_example, split_table
from noisecraft.tabular.evaluate import EvalReport, evaluate  # the function, not its module
from noisecraft.tabular.model import TabularConfig, TabularDiffusion
from noisecraft.tabular.schema import TableSchema, infer_schema, read_table

__all__ = ["EvalReport", "GaussianCopula", "TableSchema", "TabularConfig", "TabularDiffusion", "evaluate",
           "infer_schema", "load_example", "read_table", "split_table"]
