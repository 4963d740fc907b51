"""What every command-line script shares: import path set-up and clean errors for bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable

from runtime.checkpoint import CheckpointError
from runtime.config import ConfigError

# Errors that mean "the user's input is wrong": printed as one clear line, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    ValueError,
)


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Call ``main`` and exit with its code; user errors exit 2 with ``error: <message>``."""
    try:
        code = main(None)
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        code = 2
    sys.exit(code)
