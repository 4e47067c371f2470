"""The models a service or page serves: `NAME=RUN` or `RUN` arguments (a run directory, a distilled student,
or `hf:PATH` for a diffusers folder) loaded as Pipelines under unique names; for the page also tabular model
folders (written by `noisecraft tabular fit`), loaded as TabularDiffusion models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: rows per network call in served pipelines: every call has one shape, so an image is the same bits whether
#: it was drawn alone or in a merged batch (noisecraft.nets.batching)
EVAL_BATCH = 16
#: the files that make a folder a saved tabular model (TabularDiffusion.save); a run has config.yaml
TABULAR_FILES = ("schema.json", "model.json")


def model_name(spec: str) -> tuple[str, str]:
    """(name, run) of a `NAME=RUN` or `RUN` argument; the name defaults to the folder's name."""
    name, sep, run = spec.partition("=")
    if not sep:
        run = spec
        name = Path(run.removeprefix("hf:").rstrip("/")).name or run
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"model name {name!r} (from {spec!r}) must be letters, digits, '-', '_' or '.'; "
                         "spell it NAME=RUN")
    return name, run


def is_tabular(run: str) -> bool:
    """Whether a RUN is a tabular model folder (schema.json and model.json, no config.yaml) rather than a
    diffusion run (config.yaml) or a diffusers folder (hf:PATH)."""
    folder = Path(run)
    return (not run.startswith("hf:") and all((folder / name).is_file() for name in TABULAR_FILES)
            and not (folder / "config.yaml").is_file())


def _named(specs: list[str]) -> list[tuple[str, str]]:
    """[(name, run)] of the arguments, in order; a ValueError for none, a bad name or a repeated one."""
    if not specs:
        raise ValueError("no model given; expected one or more RUN or NAME=RUN arguments")
    named = [model_name(spec) for spec in specs]
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise ValueError(f"two models are named {name!r}; name them apart with NAME=RUN")
        seen.add(name)
    return named


def split_models(specs: list[str]) -> tuple[list[str], list[str]]:
    """(the diffusion runs, the tabular model folders) among the RUN / NAME=RUN arguments, each as given and
    in order; a ValueError naming a bad or repeated name across both."""
    _named(specs)
    tables = [spec for spec in specs if is_tabular(model_name(spec)[1])]
    return [spec for spec in specs if spec not in tables], tables


def load_models(specs: list[str], eval_batch: int = EVAL_BATCH, device: str = "cpu") -> dict[str, Any]:
    """{name: Pipeline} for the RUN / NAME=RUN arguments, in order; a ValueError naming a bad or repeated one
    (or a tabular model folder, which the HTTP service does not serve) before anything is served."""
    from noisecraft.hf.load import load_pipeline

    named = _named(specs)
    for _, run in named:
        if is_tabular(run):
            raise ValueError(f"{run!r} is a tabular model (noisecraft tabular fit); the HTTP service serves "
                             "diffusion runs; open it with noisecraft ui")
    return {name: load_pipeline(run, device=device, eval_batch=eval_batch) for name, run in named}


def load_tabular(specs: list[str]) -> dict[str, Any]:
    """{name: TabularDiffusion} for RUN / NAME=RUN arguments naming tabular model folders, in order; a
    ValueError naming one that is not such a folder before anything is loaded."""
    from noisecraft.tabular.model import TabularDiffusion

    named = _named(specs)
    for _, run in named:
        if not is_tabular(run):
            raise ValueError(f"{run!r} is not a tabular model folder: expected {' and '.join(TABULAR_FILES)} "
                             "(made by noisecraft tabular fit)")
    return {name: TabularDiffusion.load(run) for name, run in named}


def load_page_models(specs: list[str], eval_batch: int = EVAL_BATCH, device: str = "cpu") -> dict[str, Any]:
    """What the web page shows, in the order given: {name: Pipeline} for diffusion runs and {name:
    TabularDiffusion} for tabular model folders, names unique across both."""
    runs, tables = split_models(specs)
    models = {**(load_models(runs, eval_batch, device) if runs else {}), **(load_tabular(tables) if tables else {})}
    return {name: models[name] for name, _ in _named(specs)}


__all__ = ["EVAL_BATCH", "TABULAR_FILES", "is_tabular", "load_models", "load_page_models", "load_tabular",
           "model_name", "split_models"]
