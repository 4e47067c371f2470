"""Atomic file writes (DESIGN.md section 4): a temporary file in the same folder, flushed to disk, then an
atomic rename, so a crash or a full disk never leaves a half-written file in place of a good one.

The bottom layer beside core: it imports nothing of noisecraft, and every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path` through: renamed onto `path` when the block succeeds, removed if it
    raises. The temporary name keeps the suffix, so writers that choose a format by suffix still work."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
