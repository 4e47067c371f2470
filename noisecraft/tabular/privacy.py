"""Differential privacy for a tabular fit: the budget, private preprocessing, DP-SGD's noise and the accountant.

A model fitted with `DPConfig(epsilon, delta)` is (epsilon, delta)-differentially private with respect to
adding or removing one row of the training table (Dwork & Roth 2014, def. 2.4), for everything it saves:

- **Preprocessing** (`private_preprocessing`). A quantile transform fitted on the raw rows leaks them
  (its quantiles are order statistics of the data), and so do category lists and ranges. Here two Gaussian
  mechanisms (Dwork & Roth 2014, thm. A.1) release what the codec needs. Round 1: one noisy histogram per
  column (a row adds 1 to one bin of each, so the L2 sensitivity is sqrt(number of columns)): numbers over a
  fixed, data-independent grid of signed powers of two, from which the range is read, and a missing count;
  categories over their observed values plus "missing", kept where the noisy count exceeds a threshold
  (partition selection over an unknown domain; Korolova et al. 2009, Wilson et al. 2020, sec. 3: a category
  held by one row passes with probability at most `delta_selection` per column). Round 2: one noisy
  histogram per numeric column over 200 bins inside its private range, whose cumulative sums give the
  quantiles. What a `public` schema declares (a column's categories, its min and max) is taken as given and
  not released from the data; the record says which source each column's preprocessing used.
- **Training** is DP-SGD (Abadi et al. 2016, Alg. 1) through Opacus (Yousefpour et al. 2021): Poisson
  sampling of rows with rate q, per-row gradients clipped to `max_grad_norm`, Gaussian noise of standard
  deviation noise_multiplier * max_grad_norm on their sum.
- **Accounting** composes all of it in one accountant, Opacus' RDP (Mironov 2017; Mironov et al. 2019 for
  the subsampled Gaussian) or PRV (Gopi et al. 2021): the preprocessing rounds are Gaussian mechanisms with
  sample rate 1 and one step. The noise of DP-SGD is the smallest that keeps the total at `epsilon` with
  `delta - delta_selection`; the epsilon actually spent (fewer steps when a time budget stops training early)
  is recomputed from the stored history, and a record claiming less than its history spends is refused.

Treated as public, as Opacus does: the number of rows (it sets q) and the table's structure (column names,
kinds, value types; override kinds with `types` or declare a schema). Not private: nothing else.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import ndtri

from noisecraft.tabular.schema import TableSchema, _python
from noisecraft.tabular.transform import QuantileNormal, _key, _numbers

Accountant = Literal["rdp", "prv"]
#: (noise multiplier, sample rate, steps): one entry of an Opacus accountant's history
Entry = tuple[float, float, int]
#: bins of the round-2 histogram of a numeric column (its private quantiles)
QUANTILE_BINS = 200
#: the data-independent grid of round 1: 0 and +-2^k, k = -8 ... 48
_POWERS = 2.0 ** np.arange(-8, 49)
UNIVERSAL_EDGES = np.concatenate([-_POWERS[::-1], [0.0], _POWERS])
#: a round-1 bin starts a column's private range above this many noise std, and widens it above this many
RANGE_SEED_STD, RANGE_GROW_STD = 5.0, 2.0


class DPConfig(BaseModel):
    """The privacy budget of a fit and how it is spent."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    epsilon: float = Field(gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: Accountant = "rdp"
    #: C: each row's gradient is clipped to this L2 norm (Abadi et al. 2016, Alg. 1)
    max_grad_norm: float = Field(1.0, gt=0)
    #: the preprocessing's noise is set so that it alone would spend this share of epsilon
    preprocess_share: float = Field(0.1, gt=0, lt=1)
    #: share of delta spent on partition selection of undeclared category lists
    selection_share: float = Field(0.1, gt=0, lt=1)


class Mechanism(BaseModel):
    """One released quantity: what it is and its Gaussian noise (noise multiplier = std / L2 sensitivity)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1


class PrivacyRecord(BaseModel):
    """What a DP fit spent, saved in model.json; `epsilon` must be at least what `mechanisms` spend."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float
    delta: float
    target_epsilon: float
    accountant: Accountant
    delta_selection: float = 0.0
    max_grad_norm: float
    mechanisms: list[Mechanism]
    #: per column: "declared" (public schema), "dp" (released by the mechanisms above)
    preprocessing: dict[str, str]
    rows_dropped: int = 0

    @property
    def history(self) -> list[Entry]:
        return [(m.noise_multiplier, m.sample_rate, m.steps) for m in self.mechanisms]

    def spent(self) -> float:
        """The epsilon the mechanisms spend at delta - delta_selection, recomputed by the accountant."""
        return epsilon_of(self.history, self.delta - self.delta_selection, self.accountant)

    @model_validator(mode="after")
    def _no_smaller_claim(self) -> PrivacyRecord:
        spent = self.spent()
        # the accountant's own numerical tolerance; a claim below it is refused
        if self.epsilon < spent * (1 - 1e-6) - 1e-9:
            raise ValueError(f"the privacy record claims epsilon {self.epsilon:.6g} but its mechanisms spend "
                             f"{spent:.6g} ({self.accountant} accountant, delta {self.delta:g}); "
                             "expected a claim at least as large as what was spent")
        return self

    def summary(self) -> str:
        sources = sorted(set(self.preprocessing.values()))
        return (f"(epsilon {self.epsilon:.3g}, delta {self.delta:.3g})-DP, {self.accountant} accountant; "
                f"preprocessing {'/'.join(sources) or 'none'}")


# -- the accountant ------------------------------------------------------------------------------
def make_accountant(kind: Accountant):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if kind not in ("rdp", "prv"):
        raise ValueError(f"accountant must be 'rdp' or 'prv', got {kind!r}")
    return RDPAccountant() if kind == "rdp" else PRVAccountant()


def rdp_orders() -> list[float]:
    """The Renyi orders of the RDP accountant: Opacus' defaults (1.1 ... 63) and larger ones, without which
    the RDP-to-DP conversion cannot go below log(1/delta) / 62 (~0.19 at delta 1e-5), too coarse for a
    preprocessing share of a small epsilon."""
    from opacus.accountants.rdp import RDPAccountant

    return [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]


def epsilon_of(history: list[Entry], delta: float, accountant: Accountant = "rdp") -> float:
    """epsilon at `delta` of the composition of subsampled Gaussian mechanisms (noise multiplier, rate, steps),
    by Opacus' accountant of that kind (RDP over `rdp_orders()`)."""
    if not history:
        return 0.0
    acc = make_accountant(accountant)
    acc.history = [(float(s), float(q), int(k)) for s, q, k in history]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # PRV at q = 1 takes log(0) on a branch it then discards
        if accountant == "rdp":
            return float(acc.get_epsilon(delta, alphas=rdp_orders()))
        return float(acc.get_epsilon(delta))


def noise_for_epsilon(prefix: list[Entry], sample_rate: float, steps: int, epsilon: float, delta: float,
                      accountant: Accountant = "rdp", tol: float = 1e-3) -> float:
    """The smallest noise multiplier sigma (to relative `tol`) with epsilon_of(prefix + [(sigma, q, steps)]) <=
    epsilon; bisection on log sigma (epsilon falls as sigma grows)."""
    if epsilon_of(prefix, delta, accountant) >= epsilon:
        raise ValueError(f"the preprocessing alone spends epsilon {epsilon_of(prefix, delta, accountant):.3g} of "
                         f"{epsilon:.3g}; expected a smaller `preprocess_share`")
    lo, hi = 0.05, 1.0
    while epsilon_of([*prefix, (hi, sample_rate, steps)], delta, accountant) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon} at delta {delta} with sample rate "
                             f"{sample_rate:.3g} over {steps} steps")
    while hi / lo > 1 + tol:
        mid = math.sqrt(lo * hi)
        if epsilon_of([*prefix, (mid, sample_rate, steps)], delta, accountant) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def preprocessing_noise(cfg: DPConfig, rounds: int, delta: float) -> float:
    """The noise multiplier of each preprocessing round such that the rounds alone spend
    cfg.preprocess_share * cfg.epsilon."""
    if rounds == 0:
        return 0.0
    return noise_for_epsilon([], 1.0, rounds, cfg.preprocess_share * cfg.epsilon, delta, cfg.accountant)


# -- private preprocessing -----------------------------------------------------------------------
def _asinh_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin edges on [lo, hi] equally spaced in asinh(x / s), s = max(|lo|, |hi|) / 1000: linear near zero,
    logarithmic far from it, so a heavy-tailed column keeps resolution where its mass is."""
    s = max(abs(lo), abs(hi), 1e-12) / 1000.0
    u = np.linspace(np.arcsinh(lo / s), np.arcsinh(hi / s), bins + 1)
    edges = np.sinh(u) * s
    edges[0], edges[-1] = lo, hi
    return np.maximum.accumulate(edges)


def _noisy(counts: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return counts + rng.normal(0.0, std, size=counts.shape)


def _grid_range(values: np.ndarray, std: float, rng: np.random.Generator, integer: bool) -> tuple[float, float]:
    """The private [min, max] of a column from its round-1 histogram over the universal grid (post-processing),
    by hysteresis thresholding (Canny 1986): the bins whose noisy count exceeds RANGE_SEED_STD std (else the
    largest one), each widened over neighbouring bins above RANGE_GROW_STD std; the range spans them all.
    Gaps between them stay inside it: a zero-inflated column (0, then 1 ... 52) has empty bins between its
    zero bin and its values (an integer fills no bin inside (0, 1)), which a range grown only through
    contiguous bins stopped at, clipping the column to [0, 1]. A bin with no rows passes RANGE_SEED_STD with
    probability 3e-7, so a lone noise spike far out (a range stretched to +-2^48) comes about once in 30,000
    columns of 114 bins."""
    edges = UNIVERSAL_EDGES
    idx = np.clip(np.searchsorted(edges, np.clip(values, edges[0], edges[-1]), side="right") - 1, 0, len(edges) - 2)
    noisy = _noisy(np.bincount(idx, minlength=len(edges) - 1).astype(float), std, rng)
    seeds = np.flatnonzero(noisy > RANGE_SEED_STD * std)
    if seeds.size == 0:
        seeds = np.array([int(np.argmax(noisy))])
    first, last = int(seeds.min()), int(seeds.max())
    while first > 0 and noisy[first - 1] > RANGE_GROW_STD * std:
        first -= 1
    while last < len(noisy) - 1 and noisy[last + 1] > RANGE_GROW_STD * std:
        last += 1
    lo, hi = float(edges[first]), float(edges[last + 1])
    return (math.floor(lo), math.ceil(hi)) if integer else (lo, hi)


def private_quantiles(values: np.ndarray, lo: float, hi: float, std: float, rng: np.random.Generator,
                      n_quantiles: int) -> list[float]:
    """Quantiles of `values` (clipped to the public or private [lo, hi]) from a noisy histogram: counts below
    one std are set to 0 (empty tails stay empty), the rest give a piecewise-linear CDF that is inverted at
    n_quantiles levels."""
    if hi <= lo:
        return [lo, hi]
    edges = _asinh_edges(lo, hi, QUANTILE_BINS)
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
    noisy = _noisy(counts.astype(float), std, rng)
    noisy = np.where(noisy > std, noisy, 0.0)
    if noisy.sum() <= 0:
        noisy = np.ones_like(noisy)
    cdf = np.r_[0.0, np.cumsum(noisy)] / noisy.sum()
    levels = np.linspace(0.0, 1.0, max(2, min(n_quantiles, QUANTILE_BINS + 1)))
    # invert the CDF on the bins that hold mass (np.interp needs increasing x; flat parts carry no values)
    rising = np.r_[True, np.diff(cdf) > 0]
    q = np.interp(levels, cdf[rising], edges[rising])
    return np.maximum.accumulate(q).tolist()


def private_preprocessing(frame: pd.DataFrame, schema: TableSchema, cfg: DPConfig, n_quantiles: int,
                          public: TableSchema | None = None, seed: int = 0
                          ) -> tuple[TableSchema, dict[str, QuantileNormal], list[Mechanism], dict[str, str], float]:
    """(schema with private categories / ranges / missing rates, quantile transforms, mechanisms, sources,
    delta_selection) for `frame`; `public` declares categories and ranges that need no release."""
    rng = np.random.default_rng([seed, 0x5EC])
    modelled = [c for c in schema.columns if c.kind != "constant"]
    numeric = [c for c in modelled if c.kind == "numeric"]
    undeclared_cats = [c for c in modelled if c.kind == "categorical"
                       and not (public and c.name in public.names and public.column(c.name).categories)]
    delta_sel = cfg.selection_share * cfg.delta if undeclared_cats else 0.0
    delta_acc = cfg.delta - delta_sel
    rounds = int(bool(modelled)) + int(bool(numeric))
    z = preprocessing_noise(cfg, rounds, delta_acc)
    std1 = z * math.sqrt(max(len(modelled), 1))
    std2 = z * math.sqrt(max(len(numeric), 1))
    mechanisms = []
    if modelled:
        mechanisms.append(Mechanism(name=f"round 1: per-column histograms ({len(modelled)} columns)", noise_multiplier=z))
    if numeric:
        mechanisms.append(Mechanism(name=f"round 2: quantile histograms ({len(numeric)} columns)", noise_multiplier=z))
    n = max(len(frame), 1)
    # a category of one row passes with probability delta_sel / (number of such columns)
    tau = 1.0 + std1 * float(ndtri(1.0 - delta_sel / max(len(undeclared_cats), 1))) if undeclared_cats else 0.0
    sources: dict[str, str] = {}
    columns, transforms = [], {}
    for c in schema.columns:
        spec = c.model_copy(deep=True)
        if c.kind == "constant":
            # a one-valued column is structure, not statistics; declare it public to be strict
            sources[c.name] = "declared" if public and c.name in public.names else "structure"
            columns.append(spec)
            continue
        declared = public.column(c.name) if public and c.name in public.names else None
        missing = frame[c.name].isna().to_numpy()
        spec.missing_rate = float(np.clip(_noisy(np.array([missing.sum()], float), std1, rng)[0] / n, 0.0, 1.0))
        if spec.missing_rate * n < 3 * std1:
            spec.missing_rate = 0.0  # not clearly present: no missing slot (rows with a missing cell are dropped)
        if c.kind == "categorical":
            if declared is not None and declared.categories:
                spec.categories = list(declared.categories)
                sources[c.name] = "declared"
            else:
                observed = frame[c.name][~missing]
                labels = sorted({_python(v) for v in observed}, key=lambda v: (str(type(v)), v))
                keys = [_key(v) for v in observed.tolist()]
                counts = pd.Series(keys).value_counts() if keys else pd.Series(dtype=float)
                noisy = {k: v + rng.normal(0.0, std1) for k, v in counts.items()}
                spec.categories = [v for v in labels if noisy[_key(v)] > tau]
                sources[c.name] = "dp"
        else:
            values = _numbers(frame[c.name], c.name)
            values = values[~np.isnan(values)]
            integer = c.value_type == "int"
            if declared is not None and declared.min is not None and declared.max is not None:
                lo, hi = float(declared.min), float(declared.max)
                sources[c.name] = "declared"
            else:
                lo, hi = _grid_range(values, std1, rng, integer)
                sources[c.name] = "dp"
            spec.min, spec.max = lo, hi
            transforms[c.name] = QuantileNormal(quantiles=private_quantiles(values, lo, hi, std2, rng, n_quantiles),
                                                clip=0.5 / n)
        columns.append(spec)
    kept = [c for c in columns if c.kind != "categorical" or c.categories or c.has_missing]
    if len(kept) < len(columns):
        gone = [c.name for c in columns if c not in kept]
        raise ValueError(f"column(s) {gone}: no category passed the private threshold (each needs about "
                         f"{tau:.0f} rows at this epsilon); declare their categories in a public schema or drop them")
    private = TableSchema(columns=columns, target=schema.target, n_rows=schema.n_rows)
    return private, transforms, mechanisms, sources, delta_sel


def read_public_schema(path: str | Path) -> TableSchema:
    """A declared public schema (the schema.json format; only its category lists and min/max are used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"public schema {str(path)!r} does not exist; expected a schema.json")
    try:
        return TableSchema.from_json(path.read_text())
    except ValueError as err:
        raise ValueError(f"public schema {str(path)!r} is not a valid schema.json: {str(err).splitlines()[0]}") from None


def rows_in_schema(frame: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """Which rows the private schema can encode: categories it kept, a missing cell only where a missing slot
    exists, numbers inside the range (those outside are clipped, not dropped). Dropping a row depends only on
    that row and released values, so training on the rest stays (epsilon, delta)-DP."""
    keep = np.ones(len(frame), dtype=bool)
    for c in schema.columns:
        if c.kind == "constant":
            continue
        missing = frame[c.name].isna().to_numpy()
        if not c.has_missing:
            keep &= ~missing
        if c.kind == "categorical":
            allowed = {_key(v) for v in c.categories}
            keep &= np.array([m or _key(v) in allowed for v, m in zip(frame[c.name].tolist(), missing)], dtype=bool)
    return keep
