"""Atomic file writes: a file is either the old one or the complete new one, never partial.

Every file neurosim writes (checkpoints, configs, metrics, artifacts, results) goes through
:func:`atomic_write`: the data is written to a temporary file in the same folder, flushed to
disk, and renamed over the target (``os.replace`` is atomic on POSIX and Windows). A folder that
must appear whole (a deployment artifact, an imported run) is filled in a temporary folder beside
it and renamed into place by :func:`write_folder`.
"""

from __future__ import annotations

import json
import os
import shutil
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


def write_folder(target: str | os.PathLike[str], fill: Callable[[Path], None], overwrite: bool,
                 error: type[Exception]) -> Path:
    """Create folder ``target`` whole: ``fill(tmp)`` writes its files into a temporary folder beside
    it, which is then renamed into place (an existing ``target`` is replaced only with
    ``overwrite``; an empty one is always replaced). On any failure nothing is left behind;
    ``OSError`` becomes ``error`` with the path and the reason."""
    target = Path(target)
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise error(f"{target}: already exists (use --force to replace it)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    except OSError as exc:
        raise error(f"{target}: cannot write here ({exc.strerror})") from None
    try:
        fill(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            _remove(old)  # left by an earlier interrupted replacement
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise error(f"{target}: cannot write ({exc.strerror})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
