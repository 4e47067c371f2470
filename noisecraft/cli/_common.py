"""What every command shares: user errors as one red line naming the option, exit code 2.

The library names a bad argument in backticks (`guidance`, `label`); a command shows it as its option
(--guidance, --class), so the message reads right in both places.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import typer


def as_options(message: str, renames: dict[str, str] | None = None) -> str:
    """`name` -> --name (or renames[name]) in a library message."""
    renames = renames or {}
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: renames.get(m[1], "--" + m[1].replace("_", "-")), message)


@contextmanager
def user_errors(**renames: str) -> Iterator[None]:
    """Run a command body; a ValueError or a missing file (bad input, found before any work) ends it with one line and exit 2."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        typer.secho(f"error: {as_options(str(err), renames)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
