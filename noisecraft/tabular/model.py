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
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

import noisecraft.tabular.data as table_data
from noisecraft.core.losses import DenoisingLoss, preset
from noisecraft.io import write_text_atomic
from noisecraft.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from noisecraft.runs.config import TrainConfig
from noisecraft.tabular.constraints import (
    Constraints,
    allowed_combinations,
    check_constraints,
    detect_constraints,
    from_model_frame,
    group_name,
    merge,
    model_types,
    to_model_frame,
    user_schema,
)
from noisecraft.tabular.data import split_table
from noisecraft.tabular.discrete import MaskedDiffusion
from noisecraft.tabular.network import JointNet
from noisecraft.tabular.privacy import (
    DPConfig,
    Mechanism,
    PrivacyRecord,
    noise_for_epsilon,
    private_preprocessing,
    rows_in_schema,
)
from noisecraft.tabular.sampler import (
    DEFAULT_BATCH,
    JOINT_GRIDS,
    JOINT_SOLVERS,
    REVEALS,
    Conditions,
    sample_rows,
)
from noisecraft.tabular.schema import (
    TableSchema,
    check_table,
    infer_schema,
    is_missing,
    lattice_columns,
    read_table,
)
from noisecraft.tabular.stream import (
    TableSource,
    as_source,
    complete,
    encode_to_disk,
    holding,
    summarise,
)
from noisecraft.tabular.trainer import DPSGD, FitStats, fit_joint
from noisecraft.tabular.transform import QuantileNormal, TableCodec
from noisecraft.validation import check_field

#: the default sampler (docs/benchmarks/tabular_speed.md)
SAMPLE_STEPS, SOLVER, GRID, REVEAL = 30, "ddim", "uniform", "target_first"
#: the network's width, and its width under DP-SGD: the noise added to a clipped gradient has the same
#: standard deviation in every weight, so its norm grows with the square root of the number of weights while
#: the clipped signal does not (Tramer & Boneh 2021; De et al. 2022); at width 64 the 4,000 planned steps also
#: fit the suite's 10-minute budget, which width 256 does not (docs/benchmarks/tabular_privacy.md)
WIDTH, DP_WIDTH = 256, 64
#: DP-SGD's default plans: the longest whose noise multiplier stays at most DP_KNEE_SIGMA, else the first. Below
#: sigma ~ 1 the subsampled Gaussian's privacy cost grows slowly with the steps (its RDP is about q^2 alpha /
#: sigma^2 per step there; Mironov et al. 2019), so a long table (small sample rate q) buys three times the
#: steps for a little more noise: Fertility (203,723 rows, epsilon 3) plans 12,000 at sigma 0.84 against 4,000
#: at 0.73, macro-F1 0.537 against 0.508 (docs/benchmarks/tabular_privacy.md); a short one keeps 4,000
DP_PLANS, DP_KNEE_SIGMA = (4000, 8000, 12000), 1.0
#: the grid and reveal rule of models saved before those were fields (their config holds the steps and solver)
LEGACY_SAMPLER = {"sample_grid": "uniform", "sample_reveal": "independent"}


def _default_train() -> TrainConfig:
    return TrainConfig(max_steps=4000, batch_size=256, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                       mixed_precision="no")


class TabularConfig(BaseModel):
    """Network size, training and sampling defaults of a tabular model (a plain, JSON-serialisable config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: the MLP's width; None: WIDTH, or DP_WIDTH when fitted with DP (set at fit, so a saved config holds it)
    width: int | None = Field(None, ge=2)
    depth: int = Field(3, ge=1)
    #: integer columns with at most this many distinct values are categorical
    max_categories: int = Field(10, ge=1)
    #: a numeric column with at most this many distinct values, seen at least min_rows_per_level times each on
    #: average, is modelled as categories of its values (noisecraft.tabular.schema.lattice_columns; not with
    #: DP, where the value list would be read from the data); 0: never
    max_levels: int = Field(256, ge=0)
    min_rows_per_level: float = Field(100.0, gt=0)
    n_quantiles: int = Field(1000, ge=2)
    #: the numeric part's diffusion: VP cosine schedule, v-prediction (Salimans & Ho 2022)
    loss: DenoisingLoss = Field(default_factory=lambda: preset("v"))
    train: TrainConfig = Field(default_factory=_default_train)
    #: stop after this many passes over the rows, whatever the step or time budget: past a few hundred
    #: epochs the denoiser starts reproducing training rows (docs/benchmarks/tabular.md); None: no cap
    max_epochs: float | None = Field(300.0, gt=0)
    #: the default sampler: 30 DDIM steps on a grid uniform in t, at most one category revealed per row and step,
    #: the target's first
    #: (noisecraft.tabular.sampler; docs/benchmarks/tabular_speed.md); models saved before it keep theirs:
    #: ddpm, 100 steps, uniform grid, independent reveals
    sample_steps: int = Field(SAMPLE_STEPS, ge=1)
    solver: str = SOLVER
    sample_grid: str = GRID
    sample_reveal: str = REVEAL

    @field_validator("solver", "sample_grid", "sample_reveal")
    @classmethod
    def _known_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = {"solver": JOINT_SOLVERS, "sample_grid": JOINT_GRIDS, "sample_reveal": REVEALS}[info.field_name]
        if value not in choices:
            raise ValueError(f"unknown {info.field_name} {value!r} for the joint sampler; expected one of {choices}")
        return value


class TabularDiffusion:
    """Fit on a CSV path or DataFrame; `sample(n, where=..., balance=...)` returns a DataFrame."""

    def __init__(self, config: TabularConfig | None = None) -> None:
        self.config = config or TabularConfig()
        self.schema: TableSchema | None = None
        self.codec: TableCodec | None = None
        self.net: JointNet | None = None
        self.stats: FitStats | None = None
        #: what a differentially private fit spent (None: not fitted with DP)
        self.privacy: PrivacyRecord | None = None
        #: the constraints every sampled row holds
        self.constraints = Constraints()

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, data: str | Path | pd.DataFrame, target: str | None = None, types: dict[str, str] | None = None,
            minutes: float | None = None, steps: int | None = None, seed: int | None = None,
            progress: bool = True, dp: DPConfig | None = None, public: TableSchema | None = None,
            constraints: Constraints | None = None, detect: bool = True) -> TabularDiffusion:
        """Infer the schema (with `types` overrides), fit the transforms and train the network.

        With `dp`, the whole fit is (dp.epsilon, dp.delta)-DP (noisecraft.tabular.privacy): private
        categories, ranges and quantiles, unless `public` declares them, then DP-SGD; `self.privacy` records it.
        `constraints` (declared) and, with `detect` and without `dp`, the constraints found in the data are held
        in every sampled row (noisecraft.tabular.constraints).
        """
        check_field(TrainConfig, "max_steps", steps, "steps")  # before any work, named as the argument
        check_field(TrainConfig, "minutes", minutes)
        if self.config.width is None:
            self.config = self.config.model_copy(update={"width": WIDTH if dp is None else DP_WIDTH})
        source = as_source(data)
        if source is not None and dp is not None:
            raise ValueError(f"--dp-epsilon needs the table in memory, and {str(source.path)!r} has more than "
                             f"{table_data.MAX_MEMORY_ROWS} rows; expected a shorter table with DP")
        with tempfile.TemporaryDirectory(prefix="noisecraft-table-") as folder:
            if source is None:
                x_num, tokens, prep = self._prepare(read_table(data), target, types, dp, public, constraints,
                                                    detect, seed)
            else:
                x_num, tokens = self._prepare_stream(source, target, types, constraints, detect, seed, Path(folder))
                prep = None
            return self._train(x_num, tokens, minutes, steps, seed, progress, dp, prep)

    def _prepare(self, frame: pd.DataFrame, target: str | None, types: dict[str, str] | None, dp: DPConfig | None,
                 public: TableSchema | None, constraints: Constraints | None, detect: bool,
                 seed: int | None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Schema, constraints and codec of a table in memory, and its rows encoded; DP's preprocessing record."""
        self.schema = infer_schema(frame, target, types, self.config.max_categories)
        cons = constraints or Constraints()
        check_constraints(cons, self.schema, frame)
        if dp is not None and cons.combinations:
            raise ValueError("fixed combinations and functional dependencies are read from the data, which DP does "
                             "not allow yet; expected only inequality constraints with --dp-epsilon")
        if detect and dp is None:
            cons = merge(cons, detect_constraints(frame, self.schema))
        self.constraints = cons
        model_frame = to_model_frame(frame, cons)
        model_target = target if target in model_frame.columns else None
        model_schema = self._model_schema(model_frame, model_target, model_types(cons, types), dp is None)
        self.privacy, prep = None, None
        if dp is None:
            self.codec = TableCodec.fit(model_frame, model_schema, self.config.n_quantiles)
        else:
            seed_ = self.config.train.seed if seed is None else seed
            model_schema, transforms, mechanisms, sources, delta_sel = private_preprocessing(
                model_frame, model_schema, dp, self.config.n_quantiles, public, seed_)
            self.schema = user_schema(model_schema, self.schema, cons)
            keep = rows_in_schema(model_frame, model_schema)
            if not keep.any():
                raise ValueError("no row fits the private schema (every row holds a category or missing cell that "
                                 "did not pass the threshold); declare the categories in a public schema")
            model_frame = model_frame[keep].reset_index(drop=True)
            self.codec = TableCodec(model_schema, transforms)
            prep = (mechanisms, sources, delta_sel, int((~keep).sum()))
        return *self.codec.encode(model_frame), prep

    def _model_schema(self, model_frame: pd.DataFrame, model_target: str | None, kinds: dict[str, str],
                      lattice: bool) -> TableSchema:
        """The network's table schema: `kinds` (declared types, groups, gaps) and, with `lattice`, the numeric
        columns on few levels as categories (noisecraft.tabular.schema.lattice_columns)."""
        schema = infer_schema(model_frame, model_target, kinds, self.config.max_categories)
        if not lattice or not self.config.max_levels:
            return schema
        levels = lattice_columns(model_frame, schema, self.config.max_levels, self.config.min_rows_per_level, kinds)
        if not levels:
            return schema
        return infer_schema(model_frame, model_target, {**kinds, **dict.fromkeys(levels, "categorical")},
                            self.config.max_categories)

    def _prepare_stream(self, source: TableSource, target: str | None, types: dict[str, str] | None,
                        constraints: Constraints | None, detect: bool, seed: int | None,
                        folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """`_prepare` for a file longer than MAX_MEMORY_ROWS, never held whole (noisecraft.tabular.stream): infer
        on a uniform sample, complete over every row, encode to memory-mapped arrays in `folder`."""
        seed_ = self.config.train.seed if seed is None else seed
        sample, _ = source.sample(table_data.MAX_MEMORY_ROWS, seed_, target)
        schema = infer_schema(sample, target, types, self.config.max_categories)
        declared = constraints or Constraints()
        check_constraints(declared, schema, sample)
        proposed = merge(declared, detect_constraints(sample, schema)) if detect else declared
        candidates = lattice_columns(sample, schema, self.config.max_levels, self.config.min_rows_per_level,
                                     types or {}) if self.config.max_levels else []
        summary = summarise(source, schema, proposed, dict.fromkeys(candidates, self.config.max_levels))
        cons = holding(proposed, declared, summary, schema)
        self.constraints = cons
        self.schema = complete(schema, summary, cons, proposed, model=False)
        model_sample = to_model_frame(sample, cons)
        model_target = target if target in model_sample.columns else None
        model_schema = self._model_schema(model_sample, model_target, model_types(cons, types), True)
        model_schema = complete(model_schema, summary, cons, proposed, model=True)
        self.codec = TableCodec.fit(model_sample, model_schema, self.config.n_quantiles)
        self.privacy = None
        return encode_to_disk(source, cons, self.codec, summary.n, folder)

    def _train(self, x_num: torch.Tensor, tokens: torch.Tensor, minutes: float | None, steps: int | None,
               seed: int | None, progress: bool, dp: DPConfig | None, prep: Any) -> TabularDiffusion:
        """Train the network on the encoded rows for the budget given (DP-SGD with `dp`)."""
        n_rows = tokens.shape[0] if tokens.ndim == 2 and tokens.shape[1] else x_num.shape[0]
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
        # DP-SGD's noise is set for a planned number of steps, which a time budget can only end early: with no
        # steps chosen (none given, the default config's), the default plan, not the epoch cap alone
        default_plan = dp is not None and steps is None and train.max_steps == _default_train().max_steps
        cap = None
        if self.config.max_epochs is not None:
            cap = max(1, math.ceil(self.config.max_epochs * n_rows / train.batch_size))
            current = updates.get("max_steps", train.max_steps)
            updates["max_steps"] = cap if current is None else min(current, cap)
        dpsgd = None
        if dp is not None:
            mechanisms, sources, delta_sel, dropped = prep
            q = min(1.0, train.batch_size / n_rows)
            prefix = [(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms]
            plans = [min(t, cap or t) for t in DP_PLANS] if default_plan else [updates.get("max_steps",
                                                                                           train.max_steps)]
            updates["max_steps"], sigma = dp_plan(plans, prefix, q, dp, dp.delta - delta_sel)
            dpsgd = DPSGD(sigma, dp.max_grad_norm, q)
        if updates:
            train = TrainConfig.model_validate({**train.model_dump(), **updates})
            self.config = self.config.model_copy(update={"train": train})
        ema, self.stats = fit_joint(self.net, self.config.loss, x_num, tokens, train, progress, dpsgd)
        ema.copy_to(self.net)
        if dp is not None:
            mechanisms = [*mechanisms, Mechanism(name="DP-SGD", noise_multiplier=dpsgd.noise_multiplier,
                                                 sample_rate=dpsgd.sample_rate, steps=self.stats.steps)]
            self.privacy = _record(dp, mechanisms, sources, delta_sel, dropped)
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
        observed categories evenly over the rows (row i gets category i mod K). A column of a fixed-combination
        group restricts the group's token to the combinations holding the value; the `high` column of an
        inequality fixes the gap when `low` is fixed too (else `sample` derives `low`)."""
        self._require_fitted()
        codec, cons = self.codec, self.constraints
        where = dict(where or {})
        cond = Conditions(n, codec.num_dim, len(codec.tokens))
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in where.items():
            if name not in self.schema.names:
                raise ValueError(f"cannot fix column {name!r}: not in the table; columns are {self.schema.names}")
            spec = self.schema.column(name)
            group = cons.group_of(name)
            if group is not None:
                if spec.kind == "numeric" and not is_missing(value):
                    value = self._number(name, value)
                else:
                    _check_category(spec, value)
                grouped.setdefault(group_name(group), {})[name] = value
            elif cons.lower_of(name) is not None:
                self._fix_high(cond, name, value, where)
            elif spec.kind == "categorical":
                cond.tokens[:, codec.token_index(name)] = codec.category_code(name, value)
            elif spec.kind == "numeric" and self._on_levels(name):
                self._fix_level(cond, name, value)
            elif spec.kind == "numeric":
                self._fix_numeric(cond, name, value)
            elif not _same(value, spec.categories[0]):
                raise ValueError(f"column {name!r} is constant {spec.categories[0]!r} in the training data; "
                                 f"cannot fix it to {value!r}")
        for key, fixed in grouped.items():
            j = codec.token_index(key)
            mask = allowed_combinations(cons, key.split(" & "), codec.schema.column(key).categories, fixed)
            if not mask.any():
                raise ValueError(f"no combination of ({key}) seen in training holds {fixed}; the constraint "
                                 f"allows only observed combinations")
            cond.allow(j, torch.as_tensor(mask))
        if balance is not None:
            self._balance(cond, n, balance, where)
        return cond

    def _balance(self, cond: Conditions, n: int, balance: str, where: dict[str, Any]) -> None:
        if balance not in self.schema.names or self.schema.column(balance).kind != "categorical":
            cats = [c.name for c in self.schema.of_kind("categorical")]
            raise ValueError(f"balance needs a categorical column, got {balance!r}; categorical columns are {cats}")
        if balance in where:
            raise ValueError(f"column {balance!r} is both fixed by where and balanced; expected one or the other")
        categories = self.schema.column(balance).categories
        k = len(categories)
        group = self.constraints.group_of(balance)
        if group is None:
            cond.tokens[:, self.codec.token_index(balance)] = torch.arange(n) % k
            return
        key = group_name(group)
        combos = self.codec.schema.column(key).categories
        per_category = torch.stack([torch.as_tensor(allowed_combinations(self.constraints, group, combos,
                                                                         {balance: c})) for c in categories])
        cond.allow(self.codec.token_index(key), per_category[torch.arange(n) % k])

    def _fix_high(self, cond: Conditions, name: str, value: Any, where: dict[str, Any]) -> None:
        """`high` of low <= high fixed: with `low` fixed too, the gap high - low is fixed (it must lie in the
        observed gap range); alone, `sample` sets low = high - gap."""
        number = self._number(name, value)
        low = self.constraints.lower_of(name)
        if low in where and not is_missing(where[low]):
            gap = number - self._number(low, where[low])
            self._fix_numeric(cond, name, gap, model_space=True)

    def _number(self, name: str, value: Any) -> float:
        spec = self.schema.column(name)
        if is_missing(value):
            raise ValueError(f"column {name!r} was never missing in the training data; expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {name!r} is numeric; expected a number, got {value!r}") from None
        if spec.value_type == "int" and not number.is_integer():
            raise ValueError(f"column {name!r} holds integers; expected an integer, got {value!r}")
        if not spec.min <= number <= spec.max:
            raise ValueError(f"column {name!r} = {number} lies outside the observed range [{spec.min}, {spec.max}]")
        return number

    def levels(self) -> dict[str, int]:
        """The numeric columns drawn as categories of their observed values, with how many values each."""
        self._require_fitted()
        return {c.name: len(self.codec.schema.column(c.name).categories) for c in self.schema.columns
                if self._on_levels(c.name)}

    def _on_levels(self, name: str) -> bool:
        """Whether a numeric column of the user's table is drawn as a category of its observed values."""
        return (self.schema.column(name).kind == "numeric" and name in self.codec.schema.names
                and self.codec.schema.column(name).kind == "categorical")

    def _fix_level(self, cond: Conditions, name: str, value: Any) -> None:
        """`where` on a numeric column modelled on its levels: the value must be one of them."""
        codec = self.codec
        if not is_missing(value):
            number = self._number(name, value)
            categories = codec.schema.column(name).categories
            distance = np.abs(np.asarray(categories, dtype=float) - number)
            if distance.min() > 1e-9 * max(1.0, abs(number)):
                near = sorted(float(categories[i]) for i in np.argsort(distance)[:2])
                raise ValueError(f"column {name!r} takes only the {len(categories)} values seen in training; {number:g} "
                                 f"is not one of them (nearest: {', '.join(f'{v:g}' for v in near)})")
            value = categories[int(distance.argmin())]
        cond.tokens[:, codec.token_index(name)] = codec.category_code(name, value)

    def _fix_numeric(self, cond: Conditions, name: str, value: Any, model_space: bool = False) -> None:
        j = [c.name for c in self.codec.numeric].index(name)
        indicator = next((i for i, t in enumerate(self.codec.tokens) if t.source == name and t.role == "missing"), None)
        if is_missing(value):
            if indicator is None:
                raise ValueError(f"column {name!r} was never missing in the training data; expected a number")
            cond.tokens[:, indicator] = 1
            return
        if model_space:  # a gap high - low: inside the observed gap range, or the inequality's model cannot hold it
            spec = self.codec.schema.column(name)
            number = float(value)
            if not spec.min <= number <= spec.max:
                low = self.constraints.lower_of(name)
                raise ValueError(f"{name} - {low} = {number} lies outside the observed range [{spec.min}, {spec.max}]")
        else:
            number = self._number(name, value)
        cond.num_mask[:, j] = True
        cond.num_values[:, j] = float(self.codec.encode_numeric(name, np.array([number]))[0])
        if indicator is not None:
            cond.tokens[:, indicator] = 0

    def _target_token(self) -> int | None:
        """The token column of the target (or of the group holding it); None for a numeric or no target."""
        target = self.schema.target
        if target is None:
            return None
        group = self.constraints.group_of(target)
        try:
            return self.codec.token_index(group_name(group) if group else target)
        except KeyError:
            return None

    def sample(self, n: int, where: dict[str, Any] | None = None, balance: str | None = None, seed: int = 0,
               steps: int | None = None, solver: str | None = None, grid: str | None = None,
               reveal: str | None = None, batch_size: int = DEFAULT_BATCH) -> pd.DataFrame:
        """n synthetic rows with the training table's columns and dtypes; row i depends only on (seed, i), not on
        `batch_size` (rows per network call). `steps`, `solver`, `grid`, `reveal`: the config's sampler unless
        given (noisecraft.tabular.sampler.sample_rows)."""
        self._require_fitted()
        if n < 1:
            raise ValueError(f"`n` must be >= 1, got {n}")
        where = dict(where or {})
        cond = self.conditions(n, where, balance)
        steps = self.config.sample_steps if steps is None else steps
        x_num, tokens = sample_rows(self.net, self.config.loss, n, cond, steps, solver or self.config.solver, seed,
                                    grid or self.config.sample_grid, batch_size, reveal or self.config.sample_reveal,
                                    self._target_token())
        frame = self.codec.decode(x_num, tokens)
        cons = self.constraints
        highs_last = sorted(where.items(), key=lambda item: cons.lower_of(item[0]) is not None)
        for name, value in highs_last:  # exact values, not their round trip through the transform
            if self.schema.column(name).kind != "numeric" or is_missing(value):
                continue
            low = cons.lower_of(name)
            if low is not None:  # high fixed: low = high - gap keeps low <= high exactly
                if low not in where:
                    frame[low] = _cast(float(value) - frame[name].to_numpy(float), frame[low].dtype)
                frame[name] = float(value) - frame[low].to_numpy(float)
            elif name in frame.columns:
                frame[name] = pd.Series([float(value)] * n).astype(frame[name].dtype)
        if not cons.empty:
            frame = from_model_frame(frame, cons, self.schema)
            for name, value in where.items():
                if cons.lower_of(name) is not None and not is_missing(value):
                    frame[name] = pd.Series([float(value)] * n).astype(frame[name].dtype)
        return frame

    def refit_sampler(self, steps: int | None = None, minutes: float | None = None
                      ) -> Callable[[pd.DataFrame, int], pd.DataFrame]:
        """(rows, seed) -> as many synthetic rows from a fresh model of this one's config, schema kinds and
        privacy budget, trained on `rows` for `steps` (default: this model's) or `minutes`: the generator a
        shadow-model attack refits (noisecraft.tabular.attacks.shadow_attack)."""
        self._require_fitted()
        # the kinds of this fit, columns on levels left to the same rule on the shadow's rows
        types = {c.name: c.kind for c in self.schema.columns if not self._on_levels(c.name)}
        dp = None
        if self.privacy is not None:
            dp = DPConfig(epsilon=self.privacy.target_epsilon, delta=self.privacy.delta,
                          accountant=self.privacy.accountant, max_grad_norm=self.privacy.max_grad_norm)
        steps = steps if steps is not None or minutes is not None else self.config.train.max_steps

        def fit_sample(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
            shadow = TabularDiffusion(self.config).fit(rows, self.schema.target, types, minutes, steps, seed,
                                                       progress=False, dp=dp, constraints=self.constraints,
                                                       detect=False)
            return shadow.sample(len(rows), seed=seed)

        return fit_sample

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
                "stats": None if self.stats is None else vars(self.stats),
                "privacy": None if self.privacy is None else self.privacy.model_dump(mode="json"),
                "constraints": self.constraints.model_dump(mode="json"),
                # the network's table (groups merged, gaps for highs, columns on levels) when it differs
                "model_schema": None if self.codec.schema == self.schema else json.loads(self.codec.schema.to_json())}
        write_text_atomic(folder / "model.json", json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TabularDiffusion:
        folder = Path(folder)
        for name in ("schema.json", "model.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{str(folder)!r} is not a saved tabular model: it has no {name}")
        meta = json.loads((folder / "model.json").read_text())
        config = {**LEGACY_SAMPLER, **meta["config"]}  # saved before the sampler's grid and reveal were fields
        try:
            model = cls(TabularConfig.model_validate(config))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{str(folder / 'model.json')!r}: config field {field!r}: {first['msg']}") from None
        model.schema = TableSchema.from_json((folder / "schema.json").read_text())
        model.constraints = Constraints.model_validate(meta.get("constraints") or {})
        model_schema = TableSchema.model_validate(meta["model_schema"]) if meta.get("model_schema") else model.schema
        transforms = {k: QuantileNormal.model_validate(v) for k, v in meta["transforms"].items()}
        model.codec = TableCodec(model_schema, transforms)
        model.stats = FitStats(**meta["stats"]) if meta.get("stats") else None
        if meta.get("privacy"):  # validated: a record claiming less epsilon than its mechanisms spend is refused
            try:
                model.privacy = PrivacyRecord.model_validate(meta["privacy"])
            except ValueError as err:
                raise ValueError(f"{str(folder / 'model.json')!r}: {err}") from None
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
              steps: int | None = None, seed: int = 0, width: int | None = None, depth: int = 3,
              max_epochs: float | None = 300.0, progress: bool = True, dp: DPConfig | None = None,
              public: TableSchema | None = None, constraints: Constraints | None = None,
              detect: bool = True) -> tuple[TabularDiffusion, pd.DataFrame]:
    """Fit a model on the train part of a table, as `noisecraft tabular fit` does: (model, train rows; for a
    file longer than MAX_MEMORY_ROWS, streamed, a uniform sample of MAX_MEMORY_ROWS of them).

    Reads the CSV (or copies the frame), leaves out the `drop` columns, checks the table, keeps the fixed
    train split of `split_table` (all rows when `test_size` is 0, so `evaluate_files` on the same table
    tests on rows the model never saw) and fits a `TabularDiffusion` of the given width (None: the config's
    default, WIDTH or DP_WIDTH with `dp`) and depth; `types`
    overrides column kinds, `max_epochs` 0 or None means no epoch cap; `dp` makes the fit differentially
    private, with `public` declaring category lists and ranges (noisecraft.tabular.privacy); `constraints`
    and `detect` are `TabularDiffusion.fit`'s.
    """
    drop = [drop] if isinstance(drop, str) else list(drop)
    source = as_source(data)
    if source is not None:  # a file longer than MAX_MEMORY_ROWS: streamed, its train rows chosen chunk by chunk
        train = source = TableSource(source.path, drop=drop, part="all" if test_size == 0 else "train",
                                     test_size=test_size)
    else:
        frame = read_table(data)
        unknown = [c for c in drop if c not in frame.columns]
        if unknown:
            raise ValueError(f"`drop` names column(s) {unknown} that are not in the table; columns are "
                             f"{list(frame.columns)}")
        frame = frame.drop(columns=drop)
        check_table(frame, target)
        train = frame if test_size == 0 else split_table(frame, target, test_size)[0]
    model = TabularDiffusion(TabularConfig(width=width, depth=depth, max_epochs=max_epochs or None))
    model.fit(train, target=target, types=types, minutes=minutes, steps=steps, seed=seed, progress=progress, dp=dp,
              public=public, constraints=constraints, detect=detect)
    return model, train if source is None else source.sample(table_data.MAX_MEMORY_ROWS, seed, target)[0]


def dp_plan(plans: list[int], prefix: list[tuple[float, float, int]], sample_rate: float, dp: DPConfig,
            delta: float) -> tuple[int, float]:
    """(steps, noise multiplier) of DP-SGD: the longest of `plans` whose multiplier (the smallest keeping the
    total at dp.epsilon after `prefix`) is at most DP_KNEE_SIGMA, else the first (DP_PLANS)."""
    best = None
    for steps in sorted(set(plans)):
        sigma = noise_for_epsilon(prefix, sample_rate, steps, dp.epsilon, delta, dp.accountant)
        if best is None or sigma <= DP_KNEE_SIGMA:
            best = (steps, sigma)
        if sigma > DP_KNEE_SIGMA:
            break
    return best


def _record(dp: DPConfig, mechanisms: list[Mechanism], sources: dict[str, str], delta_sel: float,
            dropped: int) -> PrivacyRecord:
    """The privacy record of a DP fit, its epsilon what the accountant says the mechanisms spent."""
    draft = {"delta": dp.delta, "target_epsilon": dp.epsilon, "accountant": dp.accountant,
             "delta_selection": delta_sel, "max_grad_norm": dp.max_grad_norm, "mechanisms": mechanisms,
             "preprocessing": sources, "rows_dropped": dropped}
    spent = PrivacyRecord.model_construct(epsilon=0.0, **draft).spent()
    return PrivacyRecord(epsilon=spent, **draft)


def _cast(values: np.ndarray, dtype: Any) -> pd.Series:
    """Numbers in a column's dtype (an integer column stays integer)."""
    return pd.Series(np.round(values) if pd.api.types.is_integer_dtype(dtype) else values).astype(dtype)


def _check_category(spec: Any, value: Any) -> None:
    """A value of a grouped categorical column must be one of its categories (or missing where it was)."""
    if is_missing(value):
        if not spec.has_missing:
            raise ValueError(f"column {spec.name!r} was never missing in the training data; expected one of "
                             f"{spec.categories}")
        return
    if not any(_same_category(value, c) for c in spec.categories):
        raise ValueError(f"column {spec.name!r} has no category {value!r}; expected one of {spec.categories}")


def _same_category(a: Any, b: Any) -> bool:
    from noisecraft.tabular.transform import _key

    return _key(a) == _key(b)


def _same(a: Any, b: Any) -> bool:
    try:
        return a == b or str(a) == str(b) or float(a) == float(b)
    except (TypeError, ValueError):
        return False
