"""Stopping cleanly on Ctrl-C (SIGINT) and SIGTERM.

The ``neurosim`` command runs inside :func:`handle_signals`: either signal raises
:class:`Interrupted` (a :class:`KeyboardInterrupt`) in the main thread, so every ``finally`` and
``except BaseException`` clean-up runs as it would for Ctrl-C, and the command exits with
``128 + signal number`` (130 for SIGINT, 143 for SIGTERM, the shell's convention).

A write that must not be cut in half — a checkpoint renamed into place, an artifact folder
swapped for the old one, a chunk of sweep result rows — runs inside :func:`held_signals`: a
signal arriving there is held until the block has finished and raised then, so the files on
disk are always the old complete ones or the new complete ones. A second signal during the
same block is not held (the user insists) and raises at once; the clean-up of the block still
runs. Outside the command (neurosim used as a library) no handler is installed and Python's
default behaviour is unchanged.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_holding = 0              # depth of nested held_signals blocks
_held: int | None = None  # a signal that arrived inside one, to raise at its end


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which and ``exit_status`` is 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        """The shell's status of a process ended by this signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _held
    if _holding and _held is None:
        _held = signum
        return
    raise Interrupted(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` (honouring
    :func:`held_signals`); the previous handlers are restored afterwards. Outside the main
    thread (where Python cannot install handlers) it does nothing."""
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _held = None


@contextmanager
def held_signals() -> Iterator[None]:
    """Run the block to its end even if SIGINT/SIGTERM arrives, then raise :class:`Interrupted`.

    If the block itself fails, its exception propagates and the held signal is dropped (the
    command stops either way)."""
    global _holding, _held
    _holding += 1
    try:
        yield
    except BaseException:
        _holding -= 1
        if not _holding:
            _held = None
        raise
    _holding -= 1
    if not _holding and _held is not None:
        signum, _held = _held, None
        raise Interrupted(signum)
