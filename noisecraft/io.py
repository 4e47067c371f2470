"""Files in and out, at the boundary with the file system.

Atomic writes (DESIGN.md section 4): a temporary file in the same folder, flushed to disk, then an atomic
rename, so a crash or a full disk never leaves a half-written file in place of a good one. Outputs are
checked before the work that makes them (suffix, not a folder, a folder that takes a new file), so an hour of
sampling never ends in "Is a directory". CSV tables are read with errors that name the file. Errors are
ValueErrors naming the argument in `backticks` (the command line spells it as its --option).

The bottom layer beside core: it imports nothing of noisecraft, and every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: the temporary name atomic_path writes `path` through: .<stem>.tmp-<pid><suffix>
TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)(\.[^.]*)?")


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


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path) -> None:
    """Remove the temporary files atomic_path left in `folder` when its process died mid-write."""
    folder = Path(folder)
    for path in folder.iterdir() if folder.is_dir() else ():
        match = TEMP_NAME.fullmatch(path.name)
        if match and path.is_file() and not process_alive(int(match[1])):
            path.unlink(missing_ok=True)

def save_figure(fig: Any, path: str | Path, dpi: int = 100, **options: Any) -> Path:
    """Write a matplotlib figure to `path` atomically (a full disk never truncates an older picture), then
    close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, **options)
    finally:
        plt.close(fig)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv_atomic(frame: Any, path: str | Path) -> None:
    """Write a pandas DataFrame to `path` as CSV (no index column) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def check_output(path: str | Path, suffixes: Sequence[str], what: str = "out") -> Path:
    """`path` as an output file: it ends in one of `suffixes` ('.png', '.npy', ...), is not a folder, and
    its folder takes a new file. Returns it as a Path."""
    path = Path(path)
    expected = " or ".join(suffixes)
    if path.suffix not in suffixes:
        raise ValueError(f"`{what}` {str(path)!r} must end in {expected}")
    if path.is_dir():
        raise ValueError(f"`{what}` {str(path)!r} is a directory; expected a file name ending in {expected}")
    problem = _folder_problem(path.parent)
    if problem:
        raise ValueError(f"`{what}` {str(path)!r}: {problem}")
    return path


def check_output_folder(folder: str | Path, what: str = "out") -> Path:
    """`folder` as an output folder: a new file can be written in it (or in the folder it will be made in)."""
    folder = Path(folder)
    problem = _folder_problem(folder)
    if problem:
        raise ValueError(f"`{what}` {str(folder)!r}: {problem}")
    return folder


def _folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot receive a new file, or None. A missing folder is judged by its nearest existing
    ancestor, where the writer will make it; nothing is made here. Creating a temporary file is the one test
    that permission bits, read-only mounts and ownership all answer the same way."""
    base = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not base.is_dir():
        return f"{str(base)!r} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        return f"cannot write in folder {str(base)!r} ({err.strerror or err})"
    return None


@contextlib.contextmanager
def csv_errors(path: Path):
    """pandas' errors while parsing the CSV file at `path` (or a chunk of it) as one line naming the file."""
    import pandas as pd

    try:
        yield
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {err.start}); expected a CSV file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"cannot parse {str(path)!r} as CSV: {str(err).strip()}") from None


def read_csv(path: str | Path) -> Any:
    """The table in the CSV file at `path` as a pandas DataFrame: a header row, then at least one row; errors
    name the file (missing, empty, not UTF-8, unparsable, no header names, no rows)."""
    import io

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {str(path)!r}")
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(f"{str(path)!r} is empty; expected a CSV file with a header row")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {err.start}); expected a CSV file") from None
    with csv_errors(path):
        frame = pd.read_csv(io.StringIO(text))
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed and len(unnamed) == frame.shape[1]:
        raise ValueError(f"{str(path)!r} has no header row names; expected a CSV file with a header row")
    if frame.empty and frame.shape[1]:
        raise ValueError(f"{str(path)!r} has a header but no rows (columns {list(frame.columns)}); expected at "
                         "least one row")
    return frame


def is_parquet(path: str | Path) -> bool:
    """Whether `path` names a Parquet file (by its suffix); other table files are read as CSV."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def parquet_file(path: str | Path) -> Any:
    """The Parquet file at `path` opened (pyarrow.parquet.ParquetFile); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such Parquet file: {str(path)!r}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {str(path)!r} needs pyarrow: pip install 'noisecraft[tabular]'") from None
    try:
        return pq.ParquetFile(path)
    except (ValueError, OSError) as err:  # pyarrow's errors for a truncated or foreign file derive from these
        raise ValueError(f"cannot read {str(path)!r} as Parquet: {err}") from None


def read_parquet(path: str | Path) -> Any:
    """The table in the Parquet file at `path` as a pandas DataFrame; errors name the file."""
    frame = parquet_file(path).read().to_pandas()
    if frame.empty:
        raise ValueError(f"{str(path)!r} has no rows (columns {list(frame.columns)}); expected at least one row")
    return frame

