"""The import layers of docs/architecture.md, checked on the source with `ast` (nothing is imported).

Every `import noisecraft.X` / `from noisecraft.X import ...` in every file under noisecraft/, at module
level or inside a function, relative or absolute, is mapped to its layer (noisecraft/layers.py) and
must not reach a higher one. ddm imports only itself and io, and no torch; only cli imports typer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from noisecraft.layers import LAYERS, ONLY_IN, STANDALONE, TORCH_FREE

REPO = Path(__file__).resolve().parents[1]
FACADE = ""  # the package root, noisecraft/__init__.py: the lazy public API, ranked with cli
RANK = {**LAYERS, FACADE: max(LAYERS.values())}

#: violations in today's tree, each to be deleted once its import is fixed: (file, imported module) -> why
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    module: str
    rule: str  # "layer", "standalone", "torch", "only_in" or "unknown"
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} -> {self.module} ({self.why})"


def _module_of(file: str) -> tuple[str, bool]:
    """'noisecraft/core/sde.py' -> ('noisecraft.core.sde', False); a package's __init__.py -> (package, True)."""
    parts = Path(file).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports(file: str, source: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement anywhere in the file."""
    module, is_package = _module_of(file)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=file)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from ..guide import x` in noisecraft/core/a.py -> noisecraft.guide
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if base == "noisecraft":  # `from noisecraft import guide` names a layer; others the facade
                found += [(node.lineno, f"noisecraft.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def _layer(module: str) -> str | None:
    """Layer of a noisecraft module name, FACADE for the root and names it re-exports; None if third-party."""
    parts = module.split(".")
    if parts[0] != "noisecraft":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else FACADE


def check(sources: dict[str, str]) -> list[Violation]:
    """All violations of the layer rules in {path relative to the repository: source}."""
    found: list[Violation] = []
    for file, source in sorted(sources.items()):
        module, _ = _module_of(file)
        parts = module.split(".")
        here = parts[1] if len(parts) > 1 else FACADE
        if here not in RANK:
            found.append(Violation(file, 1, module, "unknown", f"{here!r} is not in noisecraft.layers.LAYERS"))
            continue
        for line, imported in _imports(file, source):
            top = imported.split(".")[0]
            if top in ONLY_IN and here not in ONLY_IN[top]:
                why = f"only {sorted(ONLY_IN[top])} may import {top}"
                found.append(Violation(file, line, imported, "only_in", why))
            if here in TORCH_FREE and any(p.startswith("torch") for p in imported.split(".")):
                found.append(Violation(file, line, imported, "torch", f"{here} must run without torch"))
            there = _layer(imported)
            if there is None:
                continue
            if here in STANDALONE:
                if there not in STANDALONE[here]:
                    why = f"{here} is standalone: it may import only {sorted(STANDALONE[here])}"
                    found.append(Violation(file, line, imported, "standalone", why))
            elif RANK[there] > RANK[here]:
                why = (f"{here or 'noisecraft'} (rank {RANK[here]}) imports "
                       f"{there or 'the noisecraft facade'} (rank {RANK[there]})")
                found.append(Violation(file, line, imported, "layer", why))
    return found


def _tree() -> dict[str, str]:
    files = sorted((REPO / "noisecraft").rglob("*.py"))
    return {f.relative_to(REPO).as_posix(): f.read_text(encoding="utf-8") for f in files}


@pytest.fixture(scope="module")
def violations() -> list[Violation]:
    return check(_tree())


def _unexpected(violations: list[Violation], *rules: str) -> list[Violation]:
    return [v for v in violations if v.rule in rules and (v.file, v.module) not in KNOWN]


def _report(violations: list[Violation]) -> str:
    return "\n".join(["", *map(str, violations)])


def test_the_scan_sees_the_tree():
    """Guards against a scan that silently finds nothing (a moved folder, a broken path)."""
    tree = _tree()
    internal = [m for f, s in tree.items() for _, m in _imports(f, s) if m.startswith("noisecraft.")]
    assert len(tree) > 50 and len(internal) > 150, (len(tree), len(internal))


def test_every_file_belongs_to_a_layer(violations):
    assert not _unexpected(violations, "unknown"), _report(_unexpected(violations, "unknown"))


def test_no_module_imports_a_higher_layer(violations):
    bad = _unexpected(violations, "layer", "standalone")
    assert not bad, "imports of a higher layer (docs/architecture.md):" + _report(bad)


def test_only_cli_imports_typer(violations):
    bad = _unexpected(violations, "only_in")
    assert not bad, "files outside noisecraft/cli/ that import typer:" + _report(bad)


def test_ddm_imports_no_torch(violations):
    bad = _unexpected(violations, "torch")
    assert not bad, "torch imports in a torch-free layer:" + _report(bad)


def test_known_violations_are_still_real(violations):
    """An allow-list entry whose import is gone must be deleted, so the list only shrinks."""
    seen = {(v.file, v.module) for v in violations}
    assert not [key for key in KNOWN if key not in seen], "fixed; remove from KNOWN"


def test_every_layer_is_in_the_architecture_doc():
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [name for name in LAYERS if f"`{name}/`" not in doc and f"`{name}.py`" not in doc]
    assert not missing, f"docs/architecture.md does not describe {missing}"


@pytest.mark.parametrize(
    "file, source, line, module, rule",
    [
        ("noisecraft/core/a.py", "from noisecraft.runs.pipeline import load_run", 1, "noisecraft.runs.pipeline", "layer"),
        ("noisecraft/metrics/a.py", "import os\n\ndef f():\n    import noisecraft.analysis.oracle\n", 4,
         "noisecraft.analysis.oracle", "layer"),  # inside a function
        ("noisecraft/solvers/a.py", "from ..guide.inverse import dps", 1, "noisecraft.guide.inverse", "layer"),
        ("noisecraft/viz/__init__.py", "from ..runs import pipeline", 1, "noisecraft.runs", "layer"),
        ("noisecraft/nets/a.py", "from .. import analysis", 1, "noisecraft.analysis", "layer"),
        ("noisecraft/guide/a.py", "import noisecraft as nc", 1, "noisecraft", "layer"),  # the facade
        ("noisecraft/runs/a.py", "import typer", 1, "typer", "only_in"),
        ("noisecraft/runs/a.py", "from noisecraft.signals.denoise import denoise", 1, "noisecraft.signals.denoise",
         "layer"),  # an app (rank 5) is above runs
        ("noisecraft/experiments/a.py", "if True:\n    from typer.testing import CliRunner", 2, "typer.testing",
         "only_in"),
        ("noisecraft/ddm/a.py", "from noisecraft.core.tensors import FLOAT64", 1, "noisecraft.core.tensors",
         "standalone"),  # core ranks lower, but ddm stands alone
        ("noisecraft/ddm/a.py", "from safetensors.torch import load_file", 1, "safetensors.torch", "torch"),
        ("noisecraft/newlayer/a.py", "import os", 1, "noisecraft.newlayer.a", "unknown"),
    ],
)
def test_the_check_reports_a_violation(file, source, line, module, rule):
    """The checker itself: each fake file breaks one rule and is reported with its line and module."""
    found = check({file: source})
    assert [(v.file, v.line, v.module, v.rule) for v in found] == [(file, line, module, rule)]
    assert str(found[0]).startswith(f"{file}:{line} -> {module} (")


def test_the_check_allows_lower_and_same_layer_imports():
    sources = {
        "noisecraft/cli/a.py": "import typer\nfrom noisecraft.runs.pipeline import load_run\nfrom noisecraft.ddm import fit",
        "noisecraft/metrics/a.py": "from noisecraft.data.digits import load_digits_split\nfrom .distribution import w2",
        "noisecraft/core/a.py": "from noisecraft.io import write_text_atomic\nfrom . import tensors",
        "noisecraft/ddm/a.py": "import numpy\nfrom noisecraft.io import write_text_atomic\nfrom .fit import fit",
        "noisecraft/__init__.py": "from noisecraft import cli",
    }
    assert check(sources) == []
