"""Memory this process may still use, estimates of what a command needs, and one-line refusals.

A size a user asks for (``run --chips``, ``sweep --instances``/``--chunk``, ``train --model``) is
either streamed in blocks whose memory does not grow with it, or, when even the smallest piece
cannot fit, refused before anything is allocated or written, in one line naming the estimate and
the memory available (:class:`MemoryRefusal`, exit status 2 on the command line).

Available memory is the least of: ``MemAvailable`` of ``/proc/meminfo``, the cgroup's
``memory.max`` less its ``memory.current`` (v2; ``memory.limit_in_bytes`` less
``memory.usage_in_bytes`` on v1), and ``RLIMIT_AS`` less this process's ``VmSize``. A source that
cannot be read does not limit; when none can, the figure is unknown and nothing is refused.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from neurosim.errors import NeurosimError

BLOCK_SHARE = 4
"""A block of chips may use at most 1/BLOCK_SHARE of the available memory (and :data:`BLOCK_CAP`)."""
BLOCK_CAP = 1 << 30
"""Largest memory budget of one block of chips, in bytes: beyond it blocks only cost cache."""
_ENV_BUDGET = "NEUROSIM_BLOCK_BYTES"
"""Environment variable overriding a block's memory budget in bytes (tests force small blocks)."""


class MemoryRefusal(NeurosimError):
    """What a command was asked to do cannot fit in the memory available; refused up front."""


def gib(nbytes: float) -> str:
    """Bytes as a short human figure: ``1.5 GiB``, ``300 MiB``, ``12 KiB``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(nbytes) >= 1 << shift:
            return f"{nbytes / (1 << shift):.3g} {unit}"
    return f"{int(nbytes)} B"


def _read_int(path: str | Path) -> int | None:
    """The integer in a one-value file (cgroup style), None when absent, unreadable or ``max``."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo(key: str, path: str = "/proc/meminfo") -> int | None:
    """A ``/proc/meminfo``-style field (``kB``) in bytes, None when absent."""
    try:
        with open(path) as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom(root: str = "/sys/fs/cgroup") -> int | None:
    """The cgroup's limit less its usage (v2, else v1), None when unlimited or not readable."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_int(Path(root) / limit_name)
        if limit is not None and limit < 1 << 60:  # v1 writes a huge number for "no limit"
            usage = _read_int(Path(root) / usage_name) or 0
            return max(limit - usage, 0)
    return None


def _address_space_headroom() -> int | None:
    """``RLIMIT_AS`` (soft) less this process's virtual size, None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = _meminfo("VmSize", f"/proc/{os.getpid()}/status") or 0
    return max(soft - used, 0)


def available_memory() -> int | None:
    """Bytes this process may still allocate (see the module's doc), None when unknown."""
    figures = [f for f in (_meminfo("MemAvailable"), _cgroup_headroom(), _address_space_headroom()) if f is not None]
    return min(figures) if figures else None


def refuse_if_too_large(what: str, estimate: int, available: int | None = None) -> None:
    """Raise :class:`MemoryRefusal` naming ``what``, ``estimate`` and the memory available when
    the estimate exceeds it (``available``: measured now when None; unknown never refuses)."""
    available = available_memory() if available is None else available
    if available is not None and estimate > available:
        raise MemoryRefusal(f"{what} needs about {gib(estimate)} of memory, {gib(available)} is available; "
                            "nothing was written")


def block_budget(available: int | None = None) -> int:
    """Bytes one block of chips may use: ``NEUROSIM_BLOCK_BYTES`` when set, else 1/:data:`BLOCK_SHARE`
    of the available memory, at most :data:`BLOCK_CAP`."""
    forced = os.environ.get(_ENV_BUDGET)
    if forced:
        try:
            return max(int(forced), 1)
        except ValueError:
            raise NeurosimError(f"{_ENV_BUDGET}={forced!r}: expected a number of bytes") from None
    available = available_memory() if available is None else available
    return BLOCK_CAP if available is None else max(min(available // BLOCK_SHARE, BLOCK_CAP), 1)


def plan_blocks(total: int, per_item: int, fixed: int = 0, what: str = "one chip",
                available: int | None = None) -> int:
    """Items per block for ``total`` items of ``per_item`` bytes each beside ``fixed`` bytes that
    do not depend on the block (weights, the dataset): as many as :func:`block_budget` allows, at
    least 1, at most ``total``. Refuses (:class:`MemoryRefusal`) when ``fixed`` plus one item cannot
    fit in the available memory."""
    available = available_memory() if available is None else available
    refuse_if_too_large(what, fixed + per_item, available)
    budget = block_budget(available)
    return max(1, min(total, budget // max(per_item, 1)))
