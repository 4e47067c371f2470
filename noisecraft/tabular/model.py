"""`TabularDiffusion`: fit a mixed-type table, sample a synthetic one of the same schema, save and load.

A TabDDPM-style model (Kotelnikov et al. 2023): Gaussian diffusion on quantile-normalised numbers and, in
place of TabDDPM's multinomial diffusion (Hoogeboom et al. 2021), absorbing-state diffusion on categories
(Austin et al. 2021; Sahoo et al. 2024), one MLP for both. Sampling can fix column values (inpainting) and
balance a categorical column's classes.

A saved model is a folder: schema.json (column kinds, categories, ranges, missing rates), model.json (this
config, the quantile transforms, fit statistics) and checkpoints/ (EMA weights, safetensors, written
atomically by noisecraft.runs.checkpoint). Loading needs no training data and no pickle.

`fit_table` is what `noisecraft tabular fit` runs: read, drop columns, check, split off the test rows, fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from noisecraft.core.losses import DenoisingLoss, preset
from noisecraft.io import write_text_atomic
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.data import split_table
from noisecraft.tabular.discrete import MaskedDiffusion
from noisecraft.tabular.network import JointNet
from noisecraft.tabular.sampler import Conditions, sample_rows
from noisecraft.tabular.schema import TableSchema, check_table, infer_schema, is_missing, read_table
from noisecraft.tabular.trainer import FitStats, fit_joint
from noisecraft.tabular.transform import QuantileNormal, TableCodec
from noisecraft.validation import check_field


def _default_train() -> TrainConfig:
    return TrainConfig(max_steps=4000, batch_size=256, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                       mixed_precision="no")


class TabularConfig(BaseModel):
    """Network size, training and sampling defaults of a tabular model (a plain, JSON-serialisable config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    width: int = Field(256, ge=2)
    depth: int = Field(3, ge=1)
    #: integer columns with at most this many distinct values are categorical
    max_categories: int = Field(10, ge=1)
    n_quantiles: int = Field(1000, ge=2)
    #: the numeric part's diffusion: VP cosine schedule, v-prediction (Salimans & Ho 2022)
    loss: DenoisingLoss = Field(default_factory=lambda: preset("v"))
    train: TrainConfig = Field(default_factory=_default_train)
    #: stop after this many passes over the rows, whatever the step or time budget: past a few hundred
    #: epochs the denoiser starts reproducing training rows (docs/benchmarks/tabular.md); None: no cap
    max_epochs: float | None = Field(300.0, gt=0)
    sample_steps: int = Field(100, ge=1)
    solver: str = "ddpm"


class TabularDiffusion:
    """Fit on a CSV path or DataFrame; `sample(n, where=..., balance=...)` returns a DataFrame."""

    def __init__(self, config: TabularConfig | None = None) -> None:
        self.config = config or TabularConfig()
        self.schema: TableSchema | None = None
        self.codec: TableCodec | None = None
        self.net: JointNet | None = None
        self.stats: FitStats | None = None

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, data: str | Path | pd.DataFrame, target: str | None = None, types: dict[str, str] | None = None,
            minutes: float | None = None, steps: int | None = None, seed: int | None = None,
            progress: bool = True) -> TabularDiffusion:
        """Infer the schema (with `types` overrides), fit the transforms and train the network."""
        check_field(TrainConfig, "max_steps", steps, "steps")  # before any work, named as the argument
        check_field(TrainConfig, "minutes", minutes)
        frame = read_table(data)
        self.schema = infer_schema(frame, target, types, self.config.max_categories)
        self.codec = TableCodec.fit(frame, self.schema, self.config.n_quantiles)
        x_num, tokens = self.codec.encode(frame)
        self.net = self._build()
        train = self.config.train
        updates: dict[str, Any] = {}
        if minutes is not None:
            updates["minutes"] = minutes
            if steps is None:
                updates["max_steps"] = None
        if steps is not None:
            updates["max_steps"] = steps
        if seed is not None:
            updates["seed"] = seed
        if self.config.max_epochs is not None:
            cap = max(1, math.ceil(self.config.max_epochs * len(frame) / train.batch_size))
            current = updates.get("max_steps", train.max_steps)
            updates["max_steps"] = cap if current is None else min(current, cap)
        if updates:
            train = TrainConfig.model_validate({**train.model_dump(), **updates})
            self.config = self.config.model_copy(update={"train": train})
        ema, self.stats = fit_joint(self.net, self.config.loss, x_num, tokens, train, progress)
        ema.copy_to(self.net)
        return self

    def _build(self) -> JointNet:
        torch.manual_seed(self.config.train.seed)
        discrete = MaskedDiffusion(self.codec.cardinalities)
        return JointNet(self.codec.num_dim, discrete, self.config.width, self.config.depth).eval()

    def _require_fitted(self) -> None:
        if self.net is None or self.codec is None or self.schema is None:
            raise RuntimeError("the model is not fitted: call fit(...) or TabularDiffusion.load(folder) first")

    # -- sampling ---------------------------------------------------------------------------------
    def parse_value(self, column: str, text: str) -> Any:
        """A value written as text read as the column's own type ('survived=1' fixes the integer 1; 'nan', 'na',
        'none' or '' is missing)."""
        self._require_fitted()
        if column not in self.schema.names:
            raise ValueError(f"cannot fix column {column!r}: not in the table; columns are {self.schema.names}")
        spec = self.schema.column(column)
        if text.lower() in ("nan", "na", "none", ""):
            return None
        if spec.kind == "numeric":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"column {column!r} is numeric; expected a number, got {text!r}") from None
        for value in spec.categories:
            if str(value) == text or (spec.value_type == "bool" and str(value).lower() == text.lower()):
                return value
        raise ValueError(f"column {column!r} has no category {text!r}; expected one of {spec.categories}")

    def conditions(self, n: int, where: dict[str, Any] | None = None, balance: str | None = None) -> Conditions:
        """Per-row fixed values: `where` fixes columns for every row; `balance` spreads a categorical column's
        observed categories evenly over the rows (row i gets category i mod K)."""
        self._require_fitted()
        codec = self.codec
        cond = Conditions(n, codec.num_dim, len(codec.tokens))
        for name, value in (where or {}).items():
            if name not in self.schema.names:
                raise ValueError(f"cannot fix column {name!r}: not in the table; columns are {self.schema.names}")
            spec = self.schema.column(name)
            if spec.kind == "categorical":
                cond.tokens[:, codec.token_index(name)] = codec.category_code(name, value)
            elif spec.kind == "numeric":
                self._fix_numeric(cond, name, value)
            elif not _same(value, spec.categories[0]):
                raise ValueError(f"column {name!r} is constant {spec.categories[0]!r} in the training data; "
                                 f"cannot fix it to {value!r}")
        if balance is not None:
            if balance not in self.schema.names or self.schema.column(balance).kind != "categorical":
                cats = [c.name for c in self.schema.of_kind("categorical")]
                raise ValueError(f"balance needs a categorical column, got {balance!r}; categorical columns are {cats}")
            if where and balance in where:
                raise ValueError(f"column {balance!r} is both fixed by where and balanced; expected one or the other")
            k = len(self.schema.column(balance).categories)
            cond.tokens[:, codec.token_index(balance)] = torch.arange(n) % k
        return cond

    def _fix_numeric(self, cond: Conditions, name: str, value: Any) -> None:
        spec = self.schema.column(name)
        j = [c.name for c in self.codec.numeric].index(name)
        indicator = next((i for i, t in enumerate(self.codec.tokens) if t.source == name and t.role == "missing"), None)
        if is_missing(value):
            if indicator is None:
                raise ValueError(f"column {name!r} was never missing in the training data; expected a number")
            cond.tokens[:, indicator] = 1
            return
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {name!r} is numeric; expected a number, got {value!r}") from None
        if spec.value_type == "int" and not number.is_integer():
            raise ValueError(f"column {name!r} holds integers; expected an integer, got {value!r}")
        if not spec.min <= number <= spec.max:
            raise ValueError(f"column {name!r} = {number} lies outside the observed range [{spec.min}, {spec.max}]")
        cond.num_mask[:, j] = True
        cond.num_values[:, j] = float(self.codec.encode_numeric(name, np.array([number]))[0])
        if indicator is not None:
            cond.tokens[:, indicator] = 0

    def sample(self, n: int, where: dict[str, Any] | None = None, balance: str | None = None, seed: int = 0,
               steps: int | None = None, solver: str | None = None) -> pd.DataFrame:
        """n synthetic rows with the training table's columns and dtypes; row i depends only on (seed, i)."""
        self._require_fitted()
        if n < 1:
            raise ValueError(f"`n` must be >= 1, got {n}")
        cond = self.conditions(n, where, balance)
        steps = self.config.sample_steps if steps is None else steps
        x_num, tokens = sample_rows(self.net, self.config.loss, n, cond, steps,
                                    solver or self.config.solver, seed)
        frame = self.codec.decode(x_num, tokens)
        for name, value in (where or {}).items():  # exact values, not their round trip through the transform
            if self.schema.column(name).kind == "numeric" and not is_missing(value):
                frame[name] = pd.Series([float(value)] * n).astype(frame[name].dtype)
        return frame

    # -- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write schema.json, model.json and checkpoints/ (safetensors) into `folder`."""
        self._require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / "checkpoints", self.stats.steps if self.stats else 0,
                        {"ema": self.net.state_dict()}, {"kind": "tabular"}, keep=1)
        write_text_atomic(folder / "schema.json", self.schema.to_json())
        meta = {"config": self.config.model_dump(mode="json"),
                "transforms": {k: v.model_dump() for k, v in self.codec.transforms.items()},
                "stats": None if self.stats is None else vars(self.stats)}
        write_text_atomic(folder / "model.json", json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TabularDiffusion:
        folder = Path(folder)
        for name in ("schema.json", "model.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{str(folder)!r} is not a saved tabular model: it has no {name}")
        meta = json.loads((folder / "model.json").read_text())
        model = cls(TabularConfig.model_validate(meta["config"]))
        model.schema = TableSchema.from_json((folder / "schema.json").read_text())
        transforms = {k: QuantileNormal.model_validate(v) for k, v in meta["transforms"].items()}
        model.codec = TableCodec(model.schema, transforms)
        model.stats = FitStats(**meta["stats"]) if meta.get("stats") else None
        path = latest_checkpoint(folder / "checkpoints")
        if path is None:
            raise FileNotFoundError(f"{str(folder)!r} has no checkpoint under checkpoints/")
        tensors, _ = load_checkpoint(path, ("ema",))
        model.net = model._build()
        model.net.load_state_dict(tensors["ema"])
        return model


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """column=value pairs, several per item separated by commas ('species=Adelie, body_mass_g=4000'), as text:
    what `tabular sample --where`, `fit --type` and the page's condition take; a ValueError naming `what`."""
    out = {}
    for item in items:
        for part in item.split(","):
            if "=" not in part:
                raise ValueError(f"{what} expects column=value pairs separated by commas, got {part.strip()!r}")
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def fit_table(data: str | Path | pd.DataFrame, target: str | None = None, *, test_size: float = 0.2,
              drop: Sequence[str] = (), types: dict[str, str] | None = None, minutes: float | None = None,
              steps: int | None = None, seed: int = 0, width: int = 256, depth: int = 3,
              max_epochs: float | None = 300.0, progress: bool = True) -> tuple[TabularDiffusion, pd.DataFrame]:
    """Fit a model on the train part of a table, as `noisecraft tabular fit` does: (model, train rows).

    Reads the CSV (or copies the frame), leaves out the `drop` columns, checks the table, keeps the fixed
    train split of `split_table` (all rows when `test_size` is 0, so `evaluate_files` on the same table
    tests on rows the model never saw) and fits a `TabularDiffusion` of the given width and depth; `types`
    overrides column kinds, `max_epochs` 0 or None means no epoch cap.
    """
    drop = [drop] if isinstance(drop, str) else list(drop)
    frame = read_table(data)
    unknown = [c for c in drop if c not in frame.columns]
    if unknown:
        raise ValueError(f"`drop` names column(s) {unknown} that are not in the table; columns are {list(frame.columns)}")
    frame = frame.drop(columns=drop)
    check_table(frame, target)
    train = frame if test_size == 0 else split_table(frame, target, test_size)[0]
    model = TabularDiffusion(TabularConfig(width=width, depth=depth, max_epochs=max_epochs or None))
    model.fit(train, target=target, types=types, minutes=minutes, steps=steps, seed=seed, progress=progress)
    return model, train


def _same(a: Any, b: Any) -> bool:
    try:
        return a == b or str(a) == str(b) or float(a) == float(b)
    except (TypeError, ValueError):
        return False
