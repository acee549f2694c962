"""Atomic file writes: a file is either the old one or the complete new one, never partial.

Every file neurosim writes (checkpoints, configs, metrics, artifacts, results) goes through
:func:`atomic_write`: the data is written to a temporary file in the same folder, flushed to
disk, and renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write JSON (indented, keys in insertion order)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write YAML with safe_dump."""
    return write_text(path, yaml.safe_dump(data, sort_keys=False))
