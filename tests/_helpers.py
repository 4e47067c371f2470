"""Helpers importable from test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
