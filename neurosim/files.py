"""Atomic file writes: a file is either the old one or the complete new one, never partial.

Every file neurosim writes (checkpoints, configs, metrics, artifacts, results) goes through
:func:`atomic_write`: the data is written to a temporary file in the same folder, flushed to
disk, and renamed over the target (``os.replace`` is atomic on POSIX and Windows). The
temporary file is named ``.NAME.<random>.tmp`` and is removed on any failure or interruption. A
folder that must appear whole (a deployment artifact, an imported run) is filled in a temporary
folder beside it and renamed into place by :func:`write_folder`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from neurosim.errors import OutputError
from neurosim.interrupts import held_signals

TEMP_SUFFIX = ".tmp"
"""Every temporary file or folder neurosim writes is ``.NAME.<random>.tmp`` beside its target."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path`` and rename it into place.

    Ctrl-C or SIGTERM during the write is held until the file is complete
    (:func:`~neurosim.interrupts.held_signals`); any failure removes the temporary file and
    leaves the old ``path`` as it was. A folder that cannot be written (no permission, read-only,
    full, or a path through a regular file) raises :class:`~neurosim.errors.OutputError`.
    """
    path = Path(path)
    with held_signals():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write in {path.parent} ({os_reason(exc)})") from None
        try:
            with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write ({os_reason(exc)}); the previous file, if any, is "
                              "unchanged") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its parents as an output folder (fine if it exists), or raise one
    :class:`~neurosim.errors.OutputError` saying why not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"{path}: cannot create output folder ({exc.filename} is a file, not a folder)") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create output folder ({os_reason(exc)})") from None
    return path


def os_reason(exc: OSError) -> str:
    """The system's reason for a failed file operation, with a hint for a full disk."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += ": the disk is full"
    elif exc.errno == errno.EFBIG:
        reason += ": over the file size limit"
    elif exc.errno == errno.EROFS:
        reason += ": read-only file system"
    return reason


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
    """Create folder ``target`` whole: ``fill(tmp)`` writes its files into a temporary folder
    ``.NAME.<random>.tmp`` beside it, which is then renamed into place. An existing ``target``
    is replaced only with ``overwrite`` (an empty one always). Ctrl-C or SIGTERM is held until
    the folder is complete (or has replaced the old one), so ``target`` is always whole or
    absent, and on any failure the previous folder is put back and no temporary folder is left.
    ``OSError`` becomes ``error`` with the path and the reason."""
    target = Path(target)
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise error(f"{target}: already exists (use --force to replace it)")
    with held_signals():
        make_folder(target.parent)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent))
        except OSError as exc:
            raise error(f"{target}: cannot write here ({os_reason(exc)})") from None
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
            fill(tmp)
            if target.exists():
                old = target.with_name(f".{target.name}.old{TEMP_SUFFIX}")
                _remove(old)  # left by a process that was killed (SIGKILL)
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old, target)  # put the previous folder back
                    raise
                _remove(old)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise error(f"{target}: cannot write ({os_reason(exc)}); nothing was changed") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
