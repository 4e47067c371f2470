"""Checkpoints: safetensors for every tensor, JSON for everything else; never pickle (DESIGN.md section 4).

A checkpoint is a directory `step_XXXXXXXX/` holding model.safetensors, ema.safetensors,
optimizer.safetensors, rng.safetensors and state.json. It is written under a temporary name, flushed
to disk and renamed, so a crash at any moment leaves the previous checkpoint whole.

Checkpoints are found from the step folders themselves, newest first: the `latest` file is written for
people and older tools but never read, since a crash can leave it stale and a hand edit can point it
anywhere. A save at step k supersedes any folder of a later step (left by a run resumed from an earlier
checkpoint), so the newest folder is always the last one saved.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from noisecraft.io import process_alive, remove_stale_temps, write_text_atomic

GROUPS = ("model", "ema", "optimizer", "rng")
STEP_NAME = re.compile(r"step_(\d{8,})")
#: a checkpoint being written (.tmp), replaced (.old) or deleted (.del) by process PID
ORPHAN_NAME = re.compile(r"\.(tmp|old|del)-(step_\d{8,})-(\d+)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step(path: Path) -> int:
    return int(STEP_NAME.fullmatch(path.name)[1])


def checkpoints(folder: str | Path) -> list[Path]:
    """The step folders of `folder`, newest first: plain directories named step_XXXXXXXX (never a symlink)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=_step, reverse=True)


def check_new_run_dir(run_dir: Path, name: str, what: str) -> None:
    """A ValueError naming `name` unless `run_dir` can receive a new derived run (`what`: "the student", ...):
    absent, or a folder without checkpoints."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"`{name}` {str(run_dir)!r} is a file; expected a new directory for {what}")
    found = checkpoints(run_dir / "checkpoints")
    if found:
        raise ValueError(f"`{name}` {str(run_dir)!r} already holds a trained run ({found[0].name}); choose a new "
                         f"directory for {what}")


def remove_orphans(folder: str | Path) -> None:
    """Remove the .tmp-/.old-/.del- folders a crashed save or prune left (of this process or a dead one); an
    .old copy whose step folder is gone is the last whole copy of that step and is put back instead. A
    half-written `latest` goes too."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    remove_stale_temps(folder)
    for path in folder.iterdir():
        match = ORPHAN_NAME.fullmatch(path.name)
        if match is None or (int(match[3]) != os.getpid() and process_alive(int(match[3]))):
            continue
        kind, name = match[1], match[2]
        if kind == "old" and not (folder / name).exists() and (path / "state.json").is_file():
            os.rename(path, folder / name)
        else:
            shutil.rmtree(path, ignore_errors=True)


def remove_checkpoint(path: Path) -> None:
    """Delete a step folder: renamed out of sight first, so a crash midway never leaves a partial one."""
    gone = path.with_name(f".del-{path.name}-{os.getpid()}")
    os.rename(path, gone)
    shutil.rmtree(gone)


def _write_tmp(tmp: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> None:
    """Every file of a checkpoint into `tmp`, each flushed to disk."""
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


def _prune(folder: Path, final: Path, keep: int) -> None:
    """Keep `final` and the keep - 1 checkpoints before it (all of them if keep <= 0); later ones are
    superseded by `final`."""
    older = [p for p in checkpoints(folder) if _step(p) < _step(final)]
    newer = [p for p in checkpoints(folder) if _step(p) > _step(final)]
    for stale in newer + (older[keep - 1:] if keep > 0 else []):
        remove_checkpoint(stale)


def save_checkpoint(folder: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write folder/step_XXXXXXXX atomically, point folder/latest at it, keep the newest `keep` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_orphans(folder)
    final = folder / f"step_{step:08d}"
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    _write_tmp(tmp, step, tensors, meta)
    if final.exists():  # re-saving a step: move the old copy aside first so a whole one always exists
        old = folder / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)  # a crash here leaves an orphan that the next save removes
    else:
        os.rename(tmp, final)
    _fsync_dir(folder)
    write_text_atomic(folder / "latest", final.name)
    _prune(folder, final, keep)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest step folder holding a state.json, or None when the folder has none (contents unchecked:
    `newest_intact` reads them)."""
    return next((p for p in checkpoints(folder) if (p / "state.json").is_file()), None)


def _read_state(path: Path) -> dict:
    """state.json of checkpoint `path`: a JSON object with an integer step."""
    file = path / "state.json"
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {file} is damaged (expected JSON with an integer 'step'): {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise ValueError(  # noqa: TRY004 (a damaged file, not a caller's wrong type)
            f"checkpoint {file} is damaged: expected a JSON object with an integer 'step'")
    return meta


def training_seconds(folder: str | Path) -> float | None:
    """The training time recorded in the newest checkpoint's state.json (elapsed_s: all sessions of a resumed
    run, on its config's clock), or None when there is no checkpoint, it records none, or its state.json is
    damaged (load_run then skips that checkpoint with a warning; its time is no reason to refuse the run)."""
    path = latest_checkpoint(folder)
    try:
        seconds = _read_state(path).get("elapsed_s") if path is not None else None
    except ValueError:
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0 else None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {file} is damaged (truncated or not safetensors): {err}") from None


def load_checkpoint(path: str | Path, groups: tuple[str, ...] | None = None) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(tensors by group, state.json) of a checkpoint directory: the given groups, each required, or all
    present; a ValueError naming the file when one is damaged."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise ValueError(f"{str(path)!r} is not a checkpoint: expected a directory with state.json")
    meta = _read_state(path)
    if groups is None:
        groups = tuple(g for g in GROUPS if (path / f"{g}.safetensors").is_file())
    missing = [f"{g}.safetensors" for g in groups if not (path / f"{g}.safetensors").is_file()]
    if missing:
        raise ValueError(f"checkpoint {path} is damaged: it lacks {', '.join(missing)}")
    return {g: _read_tensors(path / f"{g}.safetensors") for g in groups}, meta


def newest_intact(folder: str | Path, groups: tuple[str, ...] | None = None) -> tuple[Path, dict, dict]:
    """(path, tensors, state) of the newest checkpoint in `folder` that reads whole; damaged newer ones are
    skipped with a warning naming them. A ValueError when there is none, or none intact."""
    folder, skipped = Path(folder), []
    for path in checkpoints(folder):
        try:
            tensors, meta = load_checkpoint(path, groups)
        except ValueError as err:
            skipped.append((path, err))
            continue
        for bad, err in skipped:
            warnings.warn(f"checkpoint {bad} is damaged, using {path.name} instead: {err}", stacklevel=2)
        return path, tensors, meta
    if skipped:
        raise ValueError(f"{folder} holds no intact checkpoint; the newest: {skipped[0][1]}")
    raise ValueError(f"{folder} holds no checkpoint yet: train it first")


def weights_digest(state: dict[str, torch.Tensor], extra: str = "") -> str:
    """The first 16 hex digits of the SHA-256 of a state dict (names, dtypes, shapes, values) and `extra`: which
    weights these are, whatever folder they were loaded from."""
    import hashlib

    sha = hashlib.sha256()
    for name, tensor in state.items():
        value = tensor.detach().cpu().contiguous()
        sha.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        sha.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    sha.update(extra.encode())
    return sha.hexdigest()[:16]


def _listed(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_weights(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str | Path,
                  partial: bool = False) -> None:
    """A ValueError naming `source` when `found` (from a file) is not a state of the network `expected`
    describes: missing keys (unless `partial`), unexpected keys, shape mismatches."""
    missing = [] if partial else [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: {tuple(found[k].shape)} in the file, expected {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    problems = [f"{what} {_listed(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch for", shapes)) if keys]
    if problems:
        raise ValueError(f"{source} holds weights of another network: {'; '.join(problems)}. Expected the "
                         "network of the run's config.yaml")


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
