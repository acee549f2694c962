"""Processes under ``torchrun``: one place that knows the rank, the world and the collectives.

``torchrun --nproc_per_node N -m neurosim train …`` (or ``… sweep …``) starts N processes with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`process_group` joins
them (gloo: every neurosim tensor lives on the CPU) and returns a
:class:`ProcessGroup`; without ``torchrun`` it is the single process ``rank 0 of 1`` and every
collective is the identity, so the same code path serves one process and many.

Training uses it for DistributedDataParallel (the gradient all-reduce), to reduce metrics, and to
give each rank its own chip instances; sweeps use it to shard grid points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from neurosim.errors import ConfigError, NeurosimError


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among ``world`` cooperating processes (``rank`` 0 writes files)."""

    rank: int = 0
    world: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, metrics and results (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world > 1

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64, so counts stay exact)."""
        if not self.distributed:
            return list(values)
        import torch.distributed as dist
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def mean_(self, tensor: Tensor) -> Tensor:
        """Average ``tensor`` over all processes in place (and return it)."""
        if self.distributed:
            import torch.distributed as dist
            dist.all_reduce(tensor)
            tensor.div_(self.world)
        return tensor

    def gather(self, item: Any) -> list[Any]:
        """Every process's ``item`` (picklable plain data), in rank order, on every process."""
        if not self.distributed:
            return [item]
        import torch.distributed as dist
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, item)
        return gathered

    def on_main(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on rank 0 only (taking a folder's lock, preparing its files) and return
        its result there (None elsewhere). A :class:`~neurosim.errors.NeurosimError` it raises is
        raised on every rank, so no rank waits in a collective for one that stopped; this is a
        collective itself (all ranks call it)."""
        result, error = None, None
        if self.is_main:
            try:
                result = action()
            except NeurosimError as exc:
                error = exc
        message = self.gather(None if error is None else str(error))[0] if self.distributed else None
        if error is not None:
            raise error
        if message is not None:
            raise NeurosimError(message)
        return result

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            import torch.distributed as dist
            dist.barrier()


def process_group() -> ProcessGroup:
    """Join the ``torchrun`` process group named by the environment (once), or the single process.

    The backend is gloo, the one torch.distributed backend for CPU tensors (neurosim trains and
    sweeps on the CPU); ``NEUROSIM_DIST_BACKEND`` overrides it (e.g. ``mpi``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = os.environ.get("NEUROSIM_DIST_BACKEND") or "gloo"
        if backend not in ("gloo", "nccl", "mpi"):
            raise ConfigError(f"NEUROSIM_DIST_BACKEND={backend!r}: expected gloo, nccl or mpi")
        dist.init_process_group(backend)
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), dist.get_backend())


LEAVE_TIMEOUT_S = 60
"""How long a process waits at the end of a command for the others before it leaves the group."""


def close_process_group() -> None:
    """Leave the process group if this process joined one (at the end of the command).

    On gloo every process first waits for the others (``monitored_barrier``, at most
    :data:`LEAVE_TIMEOUT_S`): a rank that tears its connections down while another is still
    finishing (rank 0 writing the checkpoint) can abort in gloo's threads ("terminate called
    without an active exception", seen in about 1 of 10 two-process runs on a loaded machine). A
    rank that stopped elsewhere only delays the others by the timeout."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            from datetime import timedelta
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
            except RuntimeError:  # a rank that is gone: leave anyway
                pass
        dist.destroy_process_group()
