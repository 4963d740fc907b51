"""Progress bars for long work (tqdm on stderr; quiet when not attached to a terminal if asked)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", **kw: Any
) -> tqdm:
    """A tqdm bar; ``LODESTAR_NO_PROGRESS=1`` silences it (used by tests and CI logs)."""
    disable = os.environ.get("LODESTAR_NO_PROGRESS") == "1"
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
        **kw,
    )
