"""Bounded memory: a small file that declares a huge array is refused before its data is read.

The corpus entries (tests/data/bad: ``nir-affine-declares-huge-weight.nir``,
``artifact-tensors-zip-bomb``, ``dataset-mnist-huge-declared-images``, ``dataset-mnist-gzip-bomb``)
go through the CLI in test_bad_inputs.py; here the NIR bomb is imported by a real process whose
address space is capped at 1.5 GiB (before the fix it tried to allocate 4.6 GiB and refused with
a MemoryError, or died on a machine that let it), and the loaders without a CLI entry (Xylo
``.npz``, event ``.npy``, CIFAR pickles) and the limits' edges are checked directly.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from neurosim.errors import ArtifactError, DatasetError
from neurosim.export.xylo import MAX_DECLARED_BYTES as XYLO_MAX_DECLARED_BYTES
from neurosim.export.xylo import load_xylo
from neurosim.limits import MAX_ARRAY_ELEMENTS, DeclaredSizes, check_array, npy_members
from neurosim.train.datasets import IDX_IMAGES_MAGIC, load_pickle, read_idx
from neurosim.train.events import _load_npy

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "bad"
sys.path.insert(0, str(CORPUS))
from generate import IDX_IMAGES_HEADER, npz_bomb  # noqa: E402

ADDRESS_SPACE = 3 << 29
"""1.5 GiB: room for Python, torch and h5py, far less than the 4.6 GiB the NIR bomb declares."""


def limit_address_space() -> None:
    """preexec_fn: cap the child's address space (RLIMIT_AS) at :data:`ADDRESS_SPACE`."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_nir_bomb_is_refused_within_small_memory(tmp_path):
    bomb = CORPUS / "nir-affine-declares-huge-weight.nir"
    assert bomb.stat().st_size < 100_000
    result = subprocess.run([sys.executable, "-m", "neurosim", "import", str(bomb), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit_address_space,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    for word in ("error: ", str(bomb), "node 'block0.synapse' weight", "48x12800000", f"limit of {MAX_ARRAY_ELEMENTS}"):
        assert word in lines[0], f"{word!r} missing from: {lines[0]}"
    assert "MemoryError" not in lines[0] and not (tmp_path / "run").exists()


def test_xylo_npz_bomb_is_refused_by_the_xylo_limit(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(npz_bomb({"weights_in": np.zeros((16, 4), np.int64), "weights_rec": None}, "weights_rec",
                              (4000, 4000)))
    with pytest.raises(ArtifactError) as refused:
        load_xylo(path)
    message = str(refused.value)
    assert str(path) in message and "'weights_rec'" in message and "4000x4000" in message
    assert f"limit of {XYLO_MAX_DECLARED_BYTES} bytes" in message


def test_npz_member_declaring_more_than_it_holds_is_refused():
    blob = npz_bomb({"w": None}, "w", (1000, 1000))  # 8 MB declared, 64 KiB held: under the limits
    with pytest.raises(ArtifactError, match=r"'w' declares shape 1000x1000 = 8000000 bytes, but the file holds 65536"):
        npy_members(io.BytesIO(blob), DeclaredSizes("t.npz", ArtifactError))


def test_npz_total_is_bounded():
    arrays = {f"a{i}": np.zeros(100, np.int64) for i in range(3)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    npy_members(buffer, DeclaredSizes("t.npz", ArtifactError, max_total=2400))
    buffer.seek(0)
    with pytest.raises(ArtifactError, match="arrays up to array 'a2' declare 2400 bytes, more than the limit of 2399"):
        npy_members(buffer, DeclaredSizes("t.npz", ArtifactError, max_total=2399))


def test_check_array_limits():
    assert check_array("f", "x", (2, 3), 8) == 48
    assert check_array("f", "x", (), 4) == 4
    with pytest.raises(ArtifactError, match="negative dimension"):
        check_array("f", "x", (2, -3), 8, ArtifactError)
    with pytest.raises(ArtifactError, match="= 11 elements, more than the limit of 10 elements"):
        check_array("f", "x", (11,), 1, ArtifactError, max_elements=10)
    with pytest.raises(ArtifactError, match="= 88 bytes, more than the limit of 80 bytes"):
        check_array("f", "x", (11,), 8, ArtifactError, max_bytes=80)


def test_gzip_idx_is_unpacked_no_further_than_its_header_declares(tmp_path):
    """A 2x4x4 header with more data behind it, in a gzip cut short: reading all of it would hit
    the cut (``cannot read``); reading what the header declares plus one byte finds the excess."""
    header = IDX_IMAGES_HEADER + b"".join(d.to_bytes(4, "big") for d in (2, 4, 4))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(32) + os.urandom(1 << 16), mtime=0)[:-1000])
    with pytest.raises(DatasetError, match="unexpected bytes after the 2x4x4 data"):
        read_idx("mnist", path, IDX_IMAGES_MAGIC)


def test_event_npy_declaring_a_huge_array_is_refused(tmp_path):
    path = tmp_path / "huge.npy"
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<i8", "fortran_order": False, "shape": (1 << 30, 4)})
    path.write_bytes(buffer.getvalue() + bytes(64))
    huge = rf"1073741824x4 = 4294967296 elements, more than the limit of {MAX_ARRAY_ELEMENTS}"
    with pytest.raises(DatasetError, match=huge):
        _load_npy("event-folder", path)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<i8", "fortran_order": False, "shape": (1000, 4)})
    path.write_bytes(buffer.getvalue() + bytes(64))
    with pytest.raises(DatasetError, match="declares shape 1000x4 = 32000 bytes, but the file holds 64 bytes"):
        _load_npy("event-folder", path)


class HugeReconstruct:
    """Pickles as numpy's ``_reconstruct(ndarray, (48, 12800000), 'b')``: a 614 MB array from a
    shape alone, which numpy allocates before anything is filled in."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (48, 12_800_000), b"b"))


def test_cifar_pickle_declaring_a_huge_array_is_refused_before_numpy_allocates_it(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": HugeReconstruct(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match=rf"pickled array declares shape 48x12800000 .* limit of {MAX_ARRAY_ELEMENTS}"):
        load_pickle("cifar10", path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickles_still_load(tmp_path, protocol):
    arrays = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072),
              b"fortran": np.asfortranarray(np.ones((2, 3))), b"labels": [1, 2]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    loaded = load_pickle("cifar10", path)
    assert type(loaded[b"data"]) is np.ndarray and np.array_equal(loaded[b"data"], arrays[b"data"])
    assert np.array_equal(loaded[b"fortran"], arrays[b"fortran"]) and loaded[b"labels"] == [1, 2]


def test_a_zip_that_is_no_npz_is_left_to_np_load():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("notes.txt", "not an array")
    buffer.seek(0)
    npy_members(buffer, DeclaredSizes("t.npz", ArtifactError))
    npy_members(io.BytesIO(pickle.dumps({"a": 1})), DeclaredSizes("t.npz", ArtifactError))
