"""Checkpoints: safetensors for every tensor, JSON for everything else; never pickle (DESIGN.md section 4).

A checkpoint is a directory `step_XXXXXXXX/` holding model.safetensors, ema.safetensors,
optimizer.safetensors, rng.safetensors and state.json. It is written under a temporary name, flushed
to disk and renamed, and the run's `latest` pointer is replaced the same way, so a crash at any moment
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from noisecraft.io import write_text_atomic

GROUPS = ("model", "ema", "optimizer", "rng")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(folder: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write folder/step_XXXXXXXX atomically, point folder/latest at it, keep the newest `keep` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for group, state in tensors.items():
        if group not in GROUPS:
            raise ValueError(f"unknown checkpoint group {group!r}; expected one of {GROUPS}")
        # clone: safetensors refuses tensors that share storage
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp / f"{group}.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, **meta}, indent=1))
    for child in tmp.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # re-saving a step: move the old copy aside first so a whole one always exists
        old = folder / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(folder)
    write_text_atomic(folder / "latest", final.name)
    for stale in sorted(p for p in folder.glob("step_*") if p.is_dir())[:-keep] if keep > 0 else []:
        shutil.rmtree(stale)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint `latest` points at, or None when the folder has none."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: str | Path, groups: tuple[str, ...] = GROUPS) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(tensors by group, state.json) of a checkpoint directory."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise ValueError(f"{str(path)!r} is not a checkpoint: expected a directory with state.json")
    meta = json.loads((path / "state.json").read_text())
    tensors = {g: load_file(str(path / f"{g}.safetensors")) for g in groups if (path / f"{g}.safetensors").is_file()}
    return tensors, meta


# -- optimizer and RNG state as tensors + JSON ---------------------------------------------------
def optimizer_to_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors ("state.<param>.<key>") and JSON-able metadata."""
    tensors, scalars = {}, {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_to_tensors() -> tuple[dict[str, torch.Tensor], dict]:
    """torch (CPU and CUDA), numpy and Python RNG states."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                     "python": [version, list(internal), gauss]}


def rng_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
