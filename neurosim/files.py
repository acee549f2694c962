"""Atomic file writes: a file is either the old one or the complete new one, never partial.

Every file neurosim writes (checkpoints, configs, metrics, artifacts, results) goes through
:func:`atomic_write`: the data is written to a temporary file in the same folder, flushed to
disk, and renamed over the target (``os.replace`` is atomic on POSIX and Windows). The
temporary file is named ``.NAME.<random>.tmp`` and is removed on any failure or interruption. A
folder that must appear whole (a deployment artifact, an imported run) is filled in a temporary
folder beside it and renamed into place by :func:`write_folder`.

A run, sweep or artifact folder (or an output file) has one writer at a time: the command that
writes it holds :func:`writing` for its whole write, an OS file lock on ``.NAME.lock`` beside
it; a second writer is refused with :class:`FolderBusy` naming the holder's process id.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


# ------------------------------------------------------------------ one writer per folder

LOCK_SUFFIX = ".lock"
"""A folder or file ``NAME`` being written is locked through ``.NAME.lock`` beside it."""


class FolderBusy(OutputError):
    """Another process is writing the same run, sweep or artifact folder (or output file)."""


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` beside it (in its parent folder), so a folder
    that does not exist yet, or is replaced whole by a rename (:func:`write_folder`), is locked too."""
    path = Path(os.path.abspath(target))
    if not path.name:  # the root folder has no parent to hold the lock
        return path / f".neurosim{LOCK_SUFFIX}"
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


@contextmanager
def writing(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the one-writer lock of ``target`` (a folder or an output file) while the block runs.

    The lock is an OS file lock (``fcntl.flock``) on :func:`lock_path`, so the kernel releases it
    when the holder exits or is killed (SIGKILL included): a lock file left by a dead process does
    not block the next run. The file holds the holder's process id and start time for the message
    a second writer gets, :class:`FolderBusy` ("DIR is being written by process PID (since ...)");
    the second writer changes nothing. The lock file is removed when the block ends. Missing
    parent folders of ``target`` are created for the lock and removed again if they are still
    empty when the block ends (a refused command leaves nothing behind)."""
    path = lock_path(target)
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    make_folder(path.parent)
    try:
        fd = _acquire(path, Path(target))
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)  # while still held: a waiting process then retries on a fresh file
            os.close(fd)
    finally:
        for folder in created:  # deepest first; a refused command leaves no empty folders behind
            try:
                folder.rmdir()
            except OSError:
                break


def _acquire(path: Path, target: Path) -> int:
    """Open and lock ``path``, write this process's id into it and return the descriptor."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{target}: cannot create the lock file {path} ({os_reason(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{target} is being written by {_holder(path)}; wait for it to end (or stop it), "
                             "then run again") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it as it released: lock the next one
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode())
    return fd


def _holder(path: Path) -> str:
    """``process PID (since TIME)`` as the lock file says (it is written just after locking, so
    wait a moment for it), or ``another process``."""
    for _ in range(50):
        try:
            pid, _, since = path.read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            pid = ""
        if pid.isdigit():
            return f"process {pid}" + (f" (since {since})" if since else "")
        time.sleep(0.02)
    return "another process"
