"""One process per run directory: an exclusive OS lock (flock) on RUN/.lock, held while a run trains.

The operating system releases the lock when its holder exits, however it exits (kill -9 included), so a
crash never leaves a run locked. The holder writes its pid into the file for the message of the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def _holder(fd: int) -> str:
    """The pid written by the process that holds the lock (or 'unknown' while it has not written it yet)."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the lock of `run_dir` for the block; a ValueError naming the holder's pid when another process
    holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"run directory {run_dir} is in use by process {_holder(fd)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
