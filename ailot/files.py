"""Atomic local file writes: checkpoints and state files are never seen half-written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function writing to an open binary file) to a temporary sibling of `path`,
    then rename it over `path`: a crash leaves the old file or none, never a truncated one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
    os.replace(tmp, path)
