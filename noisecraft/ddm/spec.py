"""Which DDM parameters are fixed, shared or free across conditions: a small declarative spec.

A spec maps each parameter of the Ratcliff (1978) model plus the contaminant probability
to a rule:

* a number: fixed (``z=0.5``, ``sv=0``)
* ``shared``: one value for every condition
* ``free``: one value per condition level
* ``linear``: proportional to the (numeric) condition value, ``v = v_slope * c``
  (the usual "drift linear in coherence", e.g. Palmer, Huk & Shadlen 2005)
* ``affine``: ``p = p_intercept + p_slope * c``

Text form, as the CLI takes it: ``"v=linear, a=shared, t0=shared, z=0.5, lapse=0.02"``.
The contaminant is uniform on ``lapse_range`` (default ``[0, max rt]``), response 50/50.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["PARAMS", "ModelSpec", "Rule"]

PARAMS: tuple[str, ...] = ("v", "a", "z", "t0", "sv", "sz", "st0", "lapse")
KINDS = ("fixed", "shared", "free", "linear", "affine")
DEFAULT_RULES: dict[str, str | float] = {
    "v": "free",
    "a": "shared",
    "z": 0.5,
    "t0": "shared",
    "sv": 0.0,
    "sz": 0.0,
    "st0": 0.0,
    "lapse": 0.0,
}
# Box bounds in s = 1 units (v, a, sv scale with s); t0's upper bound is set from the data.
BOUNDS: dict[str, tuple[float, float]] = {
    "v": (-15.0, 15.0),
    "a": (0.1, 6.0),
    "z": (0.05, 0.95),
    "t0": (0.0, 2.0),
    "sv": (0.0, 5.0),
    "sz": (0.0, 0.9),
    "st0": (0.0, 1.0),
    "lapse": (0.0, 0.5),
}


@dataclass(frozen=True)
class Rule:
    """How one parameter depends on the condition."""

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, name: str, text: str | float) -> Rule:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("fixed", float(text))
        t = str(text).strip().lower()
        if t in KINDS[1:]:
            return cls(t)
        try:
            return cls("fixed", float(t))
        except ValueError:
            raise ValueError(
                f"rule {name}={text!r}; expected a number or one of {', '.join(KINDS[1:])}"
            ) from None

    def to_plain(self) -> str | float:
        return self.value if self.kind == "fixed" else self.kind


@dataclass
class ModelSpec:
    """Rules per parameter, the contaminant range, and the noise scale s."""

    rules: dict[str, Rule] = field(default_factory=dict)
    lapse_range: tuple[float, float] | None = None
    s: float = 1.0

    def __post_init__(self) -> None:
        rules = {k: Rule.parse(k, v) for k, v in DEFAULT_RULES.items()}
        for k, r in self.rules.items():
            if k not in PARAMS:
                raise ValueError(f"unknown parameter {k!r} in spec; expected one of {PARAMS}")
            rules[k] = r if isinstance(r, Rule) else Rule.parse(k, r)
        self.rules = rules
        if not self.s > 0:
            raise ValueError(f"noise scale s={self.s!r}; expected s > 0")
        if self.lapse_range is not None:
            lo, hi = map(float, self.lapse_range)
            if not hi > lo:
                raise ValueError(f"lapse_range {self.lapse_range}; expected lo < hi")
            self.lapse_range = (lo, hi)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``"v=linear, a=shared, lapse=0.02, lapse_range=0:2, s=1"`` (commas, semicolons or newlines)."""
        items: dict[str, str] = {}
        for part in text.replace(";", ",").replace("\n", ",").split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"spec item {part.strip()!r}; expected name=rule")
            k, v = (x.strip() for x in part.split("=", 1))
            items[k] = v
        return cls.from_dict(items)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        lr = d.pop("lapse_range", None)
        if isinstance(lr, str):
            lr = tuple(float(x) for x in lr.replace(":", " ").split())
        s = float(d.pop("s", 1.0))
        return cls(rules=d, lapse_range=tuple(lr) if lr is not None else None, s=s)

    @classmethod
    def from_options(
        cls,
        spec: str | Path | None = None,
        lapse: float | None = None,
        lapse_range: str | tuple[float, float] | None = None,
        s: float | None = None,
    ) -> ModelSpec:
        """A spec from text or a file (see :meth:`load`; None: the defaults), with ``lapse``,
        ``lapse_range`` ("lo:hi" or a pair) and ``s`` overriding it where given."""
        d = cls.load(spec).to_dict() if spec else {}
        if lapse is not None:
            d["lapse"] = lapse
        if lapse_range is not None:
            d["lapse_range"] = lapse_range
        if s is not None:
            d["s"] = s
        return cls.from_dict(d)

    @classmethod
    def load(cls, source: str | Path) -> ModelSpec:
        """A spec from a JSON/YAML file path, or from spec text."""
        p = Path(str(source))
        if p.suffix in (".json", ".yaml", ".yml") and "=" not in str(source):
            if not p.exists():
                raise ValueError(
                    f"spec file {str(p)!r} not found; expected a JSON/YAML file or spec text"
                )
            if p.suffix == ".json":
                return cls.from_dict(json.loads(p.read_text()))
            import yaml

            return cls.from_dict(yaml.safe_load(p.read_text()))
        return cls.parse(str(source))

    def to_dict(self) -> dict:
        d: dict = {k: r.to_plain() for k, r in self.rules.items()}
        if self.lapse_range is not None:
            d["lapse_range"] = list(self.lapse_range)
        d["s"] = self.s
        return d

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items())

    @property
    def needs_numeric_condition(self) -> bool:
        return any(r.kind in ("linear", "affine") for r in self.rules.values())

    @property
    def is_basic(self) -> bool:
        """True when sz and st0 are fixed at 0: the analytic-gradient path applies (sv may be free)."""
        return all(
            self.rules[k].kind == "fixed" and self.rules[k].value == 0 for k in ("sz", "st0")
        )


@dataclass
class Design:
    """The map theta -> per-condition parameter values that a spec and condition levels define."""

    spec: ModelSpec
    levels: np.ndarray  # condition values, one per level (float when numeric)
    names: list[str]
    slices: dict[str, slice]
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def build(cls, spec: ModelSpec, levels: np.ndarray, t0_max: float) -> Design:
        names: list[str] = []
        slices: dict[str, slice] = {}
        lo: list[float] = []
        hi: list[float] = []
        m = len(levels)
        c = np.asarray(levels, dtype=float) if spec.needs_numeric_condition else None
        for p in PARAMS:
            rule = spec.rules[p]
            b_lo, b_hi = BOUNDS[p]
            if p in ("v", "a", "sv"):
                b_lo, b_hi = b_lo * spec.s, b_hi * spec.s
            if p == "t0":
                b_hi = t0_max
            start = len(names)
            if rule.kind == "shared":
                names.append(p)
                lo.append(b_lo)
                hi.append(b_hi)
            elif rule.kind == "free":
                names += [f"{p}[{_fmt(x)}]" for x in levels]
                lo += [b_lo] * m
                hi += [b_hi] * m
            elif rule.kind == "linear":
                cmax = float(np.max(np.abs(c))) or 1.0
                names.append(f"{p}_slope")
                lo.append(-max(abs(b_lo), abs(b_hi)) / cmax)
                hi.append(max(abs(b_lo), abs(b_hi)) / cmax)
            elif rule.kind == "affine":
                span = float(np.ptp(c)) or 1.0
                names += [f"{p}_intercept", f"{p}_slope"]
                lo += [b_lo, -(b_hi - b_lo) / span]
                hi += [b_hi, (b_hi - b_lo) / span]
            slices[p] = slice(start, len(names))
        return cls(spec, np.asarray(levels), names, slices, np.array(lo), np.array(hi))

    def values(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Per-condition values of every parameter (arrays of length len(levels))."""
        m = len(self.levels)
        out = {}
        for p in PARAMS:
            rule = self.spec.rules[p]
            th = theta[self.slices[p]]
            if rule.kind == "fixed":
                out[p] = np.full(m, rule.value)
            elif rule.kind == "shared":
                out[p] = np.full(m, th[0])
            elif rule.kind == "free":
                out[p] = np.array(th, dtype=float)
            elif rule.kind == "linear":
                out[p] = th[0] * self.levels.astype(float)
            else:
                out[p] = th[0] + th[1] * self.levels.astype(float)
        return out

    def chain(self, p: str, g_cond: np.ndarray) -> np.ndarray:
        """d/dtheta of a function from its per-condition derivative g_cond for parameter p."""
        rule = self.spec.rules[p]
        if rule.kind == "shared":
            return np.array([g_cond.sum()])
        if rule.kind == "free":
            return g_cond
        c = self.levels.astype(float)
        if rule.kind == "linear":
            return np.array([np.dot(g_cond, c)])
        if rule.kind == "affine":
            return np.array([g_cond.sum(), np.dot(g_cond, c)])
        return np.zeros(0)

    def valid(self, vals: dict[str, np.ndarray]) -> float:
        """0 when every per-condition value is admissible, else a positive distance (used as a penalty)."""
        bad = 0.0
        for p in ("a", "sv", "sz", "st0", "lapse", "t0"):
            bad += float(np.sum(np.maximum(-vals[p], 0.0)))
        bad += float(np.sum(np.maximum(1e-3 - vals["a"], 0.0)))
        bad += float(np.sum(np.maximum(vals["lapse"] - 0.99, 0.0)))
        z, sz = vals["z"], vals["sz"]
        bad += float(
            np.sum(np.maximum(sz / 2 - z + 1e-3, 0.0) + np.maximum(z + sz / 2 - 1 + 1e-3, 0.0))
        )
        return bad


def _fmt(x) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)
