"""Which DDM parameters are fixed, shared or free, and over which columns: a small declarative spec.

A spec maps each parameter of the Ratcliff (1978) model plus the contaminant probability
to a rule. Two forms, mixable in one spec:

``p=rule``: over the fit's one ``condition`` column (the original form):

* a number: fixed (``z=0.5``, ``sv=0``)
* ``shared``: one value for every condition
* ``free``: one value per condition level
* ``linear``: proportional to the (numeric) condition value, ``v = v_slope * c``
  (the usual "drift linear in coherence", e.g. Palmer, Huk & Shadlen 2005)
* ``affine``: ``p = p_intercept + p_slope * c``

``p ~ formula``: over columns named in the rule (in the spirit of HDDM's ``depends_on``,
Wiecki, Sofer & Frank 2013, and of R's model formulas):

* ``p ~ 1``: shared (same as ``p=shared``)
* ``p ~ x``: one value per level of column x; ``p ~ x*y``: one per combination of x and y
* ``p ~ linear(c)``, ``p ~ affine(c)``: as above in the numeric column c
* ``p ~ linear(c)*x``, ``p ~ affine(c)*x``: one slope (and intercept) per level of x
* ``p ~ affine(c):x``: one intercept shared by all levels of x and one slope per level (R's
  ``1 + c:x``; HDDM's regression ``a ~ theta:C(conf)``, Wiecki, Sofer & Frank 2013)

Text form, as the CLI takes it: ``"v ~ strength, a ~ instruction, t0 ~ instruction, z=0.5"``
(items separated by commas, semicolons or newlines). The contaminant is uniform on
``lapse_range`` (default ``[0, max rt]``), response 50/50.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

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
_COLUMN = r"[A-Za-z_][A-Za-z0-9_.]*"
_FUNCTION = re.compile(rf"^(linear|affine)\s*\(\s*({_COLUMN})\s*\)$", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """How one parameter depends on the data's columns.

    ``column`` is the numeric column of a linear/affine rule and ``factors`` the columns whose
    combinations get their own value (free) or their own slope and intercept (linear/affine);
    both None mean the fit's ``condition`` column (the ``p=rule`` form).
    """

    kind: str
    value: float | None = None
    column: str | None = None
    factors: tuple[str, ...] | None = None
    shared_intercept: bool = False  # affine(c):x, one intercept for every level of x

    @classmethod
    def parse(cls, name: str, text: str | float) -> Rule:
        """A rule from a number, a rule word, or ``"~ formula"`` (see the module docstring)."""
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("fixed", float(text))
        t = str(text).strip()
        if t.startswith("~"):
            return cls.formula(name, t[1:])
        if t.lower() in KINDS[1:]:
            return cls(t.lower())
        try:
            return cls("fixed", float(t))
        except ValueError:
            raise ValueError(
                f"rule {name}={text!r}; expected a number or one of {', '.join(KINDS[1:])}"
            ) from None

    @classmethod
    def formula(cls, name: str, text: str) -> Rule:
        """``1``, ``x``, ``x*y``, ``linear(c)``, ``affine(c)``, ``linear(c)*x``, ``affine(c):x``: the right side of
        ``name ~ ...``."""
        t = text.strip()
        expected = ("expected 1, columns joined by '*', or linear(column)/affine(column) optionally '*' columns, "
                    "or affine(column):columns")
        if t == "1":
            return cls("shared")
        if ":" in t:
            head, _, rest = t.partition(":")
            m = _FUNCTION.match(head.strip())
            if m is None or m[1].lower() != "affine" or not rest.strip() or ":" in rest:
                raise ValueError(f"rule {name} ~ {t}: ':' joins affine(column) to the columns whose levels get their "
                                 f"own slope beside one intercept (affine(c):x); {expected}")
            inner = cls.formula(name, f"affine({m[2]})*{rest.strip()}")
            return cls("affine", column=inner.column, factors=inner.factors, shared_intercept=True)
        if "+" in t:
            raise ValueError(
                f"rule {name} ~ {t}: additive '+' terms are not supported; use '*' for one value per "
                "combination of columns"
            )
        terms = [x.strip() for x in t.split("*")] if t else []
        if not terms or not all(terms):
            raise ValueError(f"rule {name} ~ {t!r}; {expected}")
        m = _FUNCTION.match(terms[0])
        kind, column = ("free", None) if m is None else (m[1].lower(), m[2])
        factors = tuple(terms if m is None else terms[1:])
        for f in factors:
            if re.fullmatch(_COLUMN, f) is None:
                try:
                    float(f)
                    hint = f"; write {name}={f} for a fixed value"
                except ValueError:
                    hint = ""
                raise ValueError(f"rule {name} ~ {t}: {f!r} is not a column name; {expected}{hint}")
        named = ([column] if column else []) + list(factors)
        dup = sorted({c for c in named if named.count(c) > 1})
        if dup:
            raise ValueError(f"rule {name} ~ {t}: column {dup[0]!r} named twice")
        return cls(kind, column=column, factors=factors)

    @property
    def is_formula(self) -> bool:
        """True for a ``p ~ ...`` rule that names its own columns."""
        return self.factors is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns this rule names (none for the ``p=rule`` form)."""
        return ((self.column,) if self.column else ()) + (self.factors or ())

    def formula_text(self) -> str:
        """The right side of ``p ~ ...`` for a formula rule."""
        head = [f"{self.kind}({self.column})"] if self.column else []
        if self.shared_intercept:
            return f"{head[0]}:{'*'.join(self.factors or ())}"
        return "*".join(head + list(self.factors or ()))

    def to_plain(self) -> str | float:
        if self.kind == "fixed":
            return self.value
        return f"~ {self.formula_text()}" if self.is_formula else self.kind


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
        """Parse ``"v ~ strength, a=shared, lapse=0.02, lapse_range=0:2, s=1"`` (commas, semicolons or newlines)."""
        items: dict[str, str] = {}
        for part in text.replace(";", ",").replace("\n", ",").split(","):
            if not part.strip():
                continue
            eq, tilde = part.find("="), part.find("~")
            if tilde >= 0 and (eq < 0 or tilde < eq):
                k, v = part[:tilde].strip(), "~" + part[tilde + 1 :]
            elif eq >= 0:
                k, v = (x.strip() for x in part.split("=", 1))
            else:
                raise ValueError(f"spec item {part.strip()!r}; expected name=rule or name ~ columns")
            if k in items:
                raise ValueError(f"spec gives {k!r} twice ({k}{_sep(items[k])}, {part.strip()})")
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
        if p.suffix in (".json", ".yaml", ".yml") and not any(c in str(source) for c in "=~"):
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
        """The spec as text that :meth:`parse` reads back."""
        d = self.to_dict()
        if self.lapse_range is not None:
            d["lapse_range"] = ":".join(str(float(x)) for x in self.lapse_range)
        return ", ".join(f"{k}{_sep(v)}" for k, v in d.items())

    def columns(self) -> list[str]:
        """The data columns that the spec's ``p ~ ...`` rules name, in order of first mention."""
        out: list[str] = []
        for p in PARAMS:
            out += [c for c in self.rules[p].columns if c not in out]
        return out

    def check_columns(self, available) -> None:
        """Raise naming the rule if a ``p ~ ...`` rule names a column not in ``available``."""
        have = list(available)
        for p in PARAMS:
            r = self.rules[p]
            for c in r.columns:
                if c not in have:
                    raise ValueError(
                        f"spec rule {p} ~ {r.formula_text()} names column {c!r}, which is not in the "
                        f"data; columns are {have}"
                    )

    @property
    def needs_numeric_condition(self) -> bool:
        """True when a ``p=linear``/``p=affine`` rule needs the fit's condition column to be numeric."""
        return any(r.kind in ("linear", "affine") and r.column is None for r in self.rules.values())

    @property
    def is_basic(self) -> bool:
        """True when sz and st0 are fixed at 0: the analytic-gradient path applies (sv may be free)."""
        return all(
            self.rules[k].kind == "fixed" and self.rules[k].value == 0 for k in ("sz", "st0")
        )


def _sep(plain) -> str:
    """'=value' or ' ~ formula' for one rule's plain form."""
    return f" {plain}" if isinstance(plain, str) and plain.startswith("~") else f"={plain}"


def _fmt(x) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)
