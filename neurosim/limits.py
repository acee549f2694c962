"""Bounded memory: limits on what a file a user may receive can make neurosim allocate.

A small file can declare a huge array: an HDF5 dataset of gzip-compressed zeros, an ``.npy``
header in a zip member, an IDX header. Every loader of such a file (NIR/HDF5, the artifact's
``tensors.npz``, a Xylo ``.npz``, IDX, CIFAR batches, event recordings) checks the shapes and
sizes the file *declares* against the limits below before it reads any data, with
:func:`check_array` (one array) and :class:`DeclaredSizes` (all arrays of one file), and refuses
in one line naming the file, the node or key, the declared size and the limit
(docs/reliability.md, "Bounded memory"). :func:`npy_members` and :func:`check_npy` read the
declared shapes of the arrays of an ``.npz`` or an ``.npy`` from their headers, without reading
their data.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from typing import IO

import numpy as np

from neurosim.errors import NeurosimError

MAX_ARRAY_ELEMENTS = 1 << 28
"""Most elements one array in a file may declare (268,435,456: 1 GiB of float32). The largest
tensor neurosim itself writes (a dense layer of a chip profile's largest fan-in and fan-out, a
dataset split such as MNIST's 60000x28x28 bytes) is far below it; above it a file is refused
before its data is read."""

MAX_ARRAY_BYTES = 2 << 30
"""Most bytes one array in a file may declare (2 GiB), whatever its dtype."""

MAX_DECLARED_BYTES = 4 << 30
"""Most bytes all the arrays of one file may declare together, after decompression (4 GiB): a
file under the per-array limits still cannot add up to more memory than a laptop has."""


def _shape_text(shape: Sequence[int]) -> str:
    """A shape written as ``48x12800000`` (``scalar`` for ``()``)."""
    return "x".join(str(int(d)) for d in shape) or "scalar"


def check_array(where: str, name: str, shape: Sequence[int], itemsize: int,
                error: type[NeurosimError] = NeurosimError, *,
                max_elements: int = MAX_ARRAY_ELEMENTS, max_bytes: int = MAX_ARRAY_BYTES) -> int:
    """The byte size of an array that ``where`` (a file) declares as ``name`` (a node or key)
    with ``shape`` and ``itemsize``, before any of it is read; ``error`` (one line naming both,
    the declared size and the limit) if it has more than ``max_elements`` elements or
    ``max_bytes`` bytes, or a negative dimension."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise error(f"{where}: {name} declares shape {_shape_text(dims)}, a negative dimension")
    elements = math.prod(dims)
    size = elements * int(itemsize)
    if elements > max_elements:
        raise error(f"{where}: {name} declares shape {_shape_text(dims)} = {elements} elements, more than the "
                    f"limit of {max_elements} elements per array; refused before reading it")
    if size > max_bytes:
        raise error(f"{where}: {name} declares shape {_shape_text(dims)} of {itemsize}-byte items = {size} bytes, "
                    f"more than the limit of {max_bytes} bytes per array; refused before reading it")
    return size


class DeclaredSizes:
    """The arrays one file declares, added up: each checked with :func:`check_array`, and their
    total against ``max_total`` (:data:`MAX_DECLARED_BYTES`)."""

    def __init__(self, where: str, error: type[NeurosimError] = NeurosimError, *,
                 max_elements: int = MAX_ARRAY_ELEMENTS, max_bytes: int = MAX_ARRAY_BYTES,
                 max_total: int = MAX_DECLARED_BYTES) -> None:
        self.where, self.error = where, error
        self.max_elements, self.max_bytes, self.max_total = max_elements, max_bytes, max_total
        self.total = 0

    def add(self, name: str, shape: Sequence[int], itemsize: int) -> int:
        """Check one declared array and the running total; the array's byte size."""
        size = check_array(self.where, name, shape, itemsize, self.error,
                           max_elements=self.max_elements, max_bytes=self.max_bytes)
        self.total += size
        if self.total > self.max_total:
            raise self.error(f"{self.where}: its arrays up to {name} declare {self.total} bytes, more than the "
                             f"limit of {self.max_total} bytes per file; refused before reading them")
        return size


def npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` stream declares in its header (its data is not read);
    ValueError for a stream that is not ``.npy``."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
    return tuple(shape), dtype


def npy_members(archive: IO[bytes], sizes: DeclaredSizes) -> None:
    """Check every member of an ``.npz`` (zip) ``archive`` against ``sizes`` before any is read:
    the zip's declared uncompressed size of the member (what decompressing it yields at most) and
    the shape and dtype its ``.npy`` header declares. A member that is not ``.npy`` is left to
    ``np.load`` to refuse, and so is a stream that is not a zip at all (a pickle, a bare ``.npy``
    is checked with :func:`npy_header` by its reader); ValueError or zipfile.BadZipFile for an
    unreadable archive."""
    start = archive.tell()
    magic = archive.read(4)
    archive.seek(start)
    if magic != b"PK\x03\x04":
        return
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            key = info.filename.removesuffix(".npy")
            check_array(sizes.where, f"member {key!r}", (info.file_size,), 1, sizes.error,
                        max_elements=sizes.max_bytes, max_bytes=sizes.max_bytes)  # the zip's own size
            with zipped.open(info) as member:
                if member.read(6) != b"\x93NUMPY":
                    continue
                member.seek(0)
                check_npy(member, sizes, f"array {key!r}", info.file_size)


def check_npy(stream: IO[bytes], sizes: DeclaredSizes, name: str, available: int) -> None:
    """Check the ``.npy`` header at the start of ``stream`` (``available`` bytes long, header
    included) before its data is read: the declared array against ``sizes``, and its data
    against what the stream holds (np.load allocates the declared array before it reads, so a
    header that claims more than the file is refused here, as truncated). An object array
    (pickled) is left to ``np.load`` with ``allow_pickle=False`` to refuse."""
    shape, dtype = npy_header(stream)
    size = sizes.add(name, shape, dtype.itemsize)
    held = available - stream.tell()
    if not dtype.hasobject and size > held:
        raise sizes.error(f"{sizes.where}: {name} declares shape {_shape_text(shape)} = {size} bytes, but the "
                          f"file holds {max(held, 0)} bytes of data (truncated or forged); refused before reading it")
