"""What every command shares: user errors as one red line naming the option or file (exit code 2 for bad
input, 1 for a failure while working).

The library names a bad argument in backticks (`guidance`, `label`); a command shows it as its option
(--guidance, --class), so the message reads right in both places.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError

from noisecraft.validation import describe


def as_options(message: str, renames: dict[str, str] | None = None) -> str:
    """`name` -> --name (or renames[name]) in a library message."""
    renames = renames or {}
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: renames.get(m[1], "--" + m[1].replace("_", "-")), message)


@contextmanager
def user_errors(**renames: str) -> Iterator[None]:
    """Run a command body; each failure a user can act on ends it with one red line: bad input (a ValueError,
    a missing file), found before any work, exits 2; a file that cannot be written (an OSError naming it) or
    a computation that blew up (a FloatingPointError, e.g. a non-finite loss) exits 1. Anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        _fail(_validation_line(err) if isinstance(err, ValidationError) else str(err), 2, renames)
    except OSError as err:
        _fail(_os_line(err), 1, renames)
    except FloatingPointError as err:
        _fail(str(err), 1, renames)


def _fail(message: str, code: int, renames: dict[str, str]) -> None:
    typer.secho(f"error: {as_options(message, renames)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code) from None


def _validation_line(err: ValidationError) -> str:
    """A pydantic error that escaped the library's own checks: top-level fields named as arguments."""
    return describe(err, lambda path: f"`{path}`" if path.isidentifier() else path)


def _os_line(err: OSError) -> str:
    """"'PATH': Permission denied" for an error that names its file, else the error itself."""
    if err.filename is None:
        return str(err)
    return f"{str(err.filename)!r}: {err.strerror or err}"


def models_argument(what: str) -> typer.models.ArgumentInfo:
    """The RUN... argument of the commands that serve models (serve, ui)."""
    return typer.Argument(..., metavar="RUN", help=f"Models to {what}: RUN or NAME=RUN (a run directory, a "
                                                      "distilled student, or hf:PATH for a diffusers folder).")


def host_option() -> typer.models.OptionInfo:
    """The --host option of the commands that listen (serve, ui)."""
    return typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only).")
