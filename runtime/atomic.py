"""Files that are replaced whole or not at all: write beside the target, fsync, rename over it.

A reader, or a rerun after a crash, then finds the old file or the new one, never a part of one.
A write that fails removes its temporary file; a killed one leaves ``.<name>.<random>.tmp`` beside the
target, which its owner removes on its next start (checkpoints, the feature store).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a folder after a rename in it) to disk."""
    if path.is_dir() and os.name != "posix":
        return  # only POSIX can open a folder to fsync it
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block ends it is fsynced and renamed over
    ``path`` (the folder is fsynced too), and when the block raises it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
