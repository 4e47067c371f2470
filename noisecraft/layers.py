"""The import layers of noisecraft (docs/architecture.md), as data: tests/test_layers.py enforces them.

A module may import from its own layer or a lower one, never a higher one:

    core, io, validation  <-  solvers, nets, data, metrics  <-  guide, analysis  <-  viz  <-  runs
              <-  experiments, tabular, ddm, hf, signals  <-  serve  <-  cli

Two rules sit beside the ranks: ddm is a standalone app that imports only itself and io (numpy/scipy,
no torch), only cli may import typer, and only serve the web stack (FastAPI, uvicorn, Gradio, ...). The package root (`noisecraft/__init__.py`, the lazy
public facade) ranks with cli: library modules import from the module that defines a name.

This module imports nothing, so anything (tests, docs tooling) can read it without loading torch.
"""

from __future__ import annotations

#: rank of each top-level subpackage or module of noisecraft; higher may import lower, not the reverse
LAYERS: dict[str, int] = {
    "core": 0,
    "io": 0,
    "validation": 0,
    "layers": 0,
    "solvers": 1,
    "nets": 1,
    "data": 1,
    "metrics": 1,
    "guide": 2,
    "analysis": 2,
    "viz": 3,
    "runs": 4,
    "experiments": 5,
    "tabular": 5,
    "ddm": 5,
    "hf": 5,
    "signals": 5,
    "serve": 6,
    "cli": 7,
}

#: standalone layers: the only noisecraft layers each may import, whatever their rank
STANDALONE: dict[str, frozenset[str]] = {"ddm": frozenset({"ddm", "io"})}

#: layers that must not import torch (or torchvision, torchdiffeq, safetensors.torch, ...)
TORCH_FREE: frozenset[str] = frozenset({"ddm"})

#: third-party packages that only the listed layers may import
ONLY_IN: dict[str, frozenset[str]] = {
    "typer": frozenset({"cli"}),
    **{web: frozenset({"serve"}) for web in ("fastapi", "starlette", "uvicorn", "gradio", "prometheus_client",
                                             "bentoml")},
    **{ppl: frozenset({"ddm"}) for ppl in ("numpyro", "jax")},  # the hierarchical DDM's engine
    "opacus": frozenset({"tabular"}),  # DP-SGD for synthetic tables
}
