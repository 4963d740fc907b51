"""The error every navigation data reader raises, and the JSON reader they share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class NavDataError(ValueError):
    """A navigation data file is missing, malformed or inconsistent with the graphs."""


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"navigation data file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NavDataError(f"{path}: not valid JSON ({exc})") from None
