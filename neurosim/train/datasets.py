"""Datasets for training: scikit-learn's digits (offline, built in; ``digits4x4`` is the same
images 2x2 average-pooled to 4x4 = 16 inputs, as many as Xylo has input channels, and
``digits4x4-8`` those of the digits 0..7 only, whose 8 classes fit Xylo's 8 output neurons) and
local copies of MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Nothing is ever downloaded. ``digits`` ships with scikit-learn; the others are read from a
folder the user names (``--data-root``), laid out either flat or as torchvision leaves it:

* ``mnist`` / ``fashion-mnist``: the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
  optionally gzipped (``.gz``), in ``root`` or ``root/MNIST/raw`` (``root/FashionMNIST/raw``).
  They are parsed here with numpy, every header field checked.
* ``cifar10``: the pickled batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` in
  ``root`` or ``root/cifar-10-batches-py``; ``cifar100``: ``train`` and ``test`` in ``root`` or
  ``root/cifar-100-python``. Pickles are read with a restricted unpickler that builds numpy
  arrays and nothing else, so a hostile file cannot run code.

Event-camera datasets (``nmnist``, ``dvsgesture``, ``event-folder``) are read through tonic and
binned to frames by :mod:`neurosim.train.events`.

Every split holds float32 inputs ``[N, C, H, W]`` in ``[0, 1]`` (event datasets: frames
``[N, T, C, H, W]``, batch first, as the model and the integer engine take them) and int64
targets ``[N]``. Any problem with the files raises one :class:`~neurosim.errors.DatasetError`
naming the dataset, the folder or file, and what is wrong.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import pickletools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

from neurosim.errors import DatasetError
from neurosim.limits import check_array

if TYPE_CHECKING:
    from neurosim.train.events import FrameBinning

DATASETS: tuple[str, ...] = ("digits", "digits4x4", "digits4x4-8", "mnist", "fashion-mnist", "cifar10", "cifar100",
                             "nmnist", "dvsgesture", "event-folder")
EVENT_DATASETS: tuple[str, ...] = ("nmnist", "dvsgesture", "event-folder")
"""Read through tonic and binned to frames (:mod:`neurosim.train.events`)."""

DIGITS_SPLIT_SEED = 0
"""``random_state`` of the digits train/test split; fixed, independent of any training seed."""
DIGITS_TEST_FRACTION = 0.25
"""Share of the 1797 digits held out for testing (stratified): 1347 train / 450 test."""

MAX_FILE_BYTES = 512 << 20
"""Largest dataset file read (a CIFAR pickle on disk; the data an IDX header declares, also of a
gzipped one); the biggest real one, CIFAR-100 ``train``, is ~155 MiB."""

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
MNIST_CLASSES = 10
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SUBFOLDERS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}

CIFAR_IMAGE_SHAPE = (3, 32, 32)
CIFAR_SUBFOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": (["train"], ["test"]),
}
CIFAR_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a dataset: float32 ``inputs`` ``[N, C, H, W]`` (or frames ``[N, T, C, H, W]``)
    in [0, 1], int64 ``targets`` ``[N]``."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        """The number of samples."""
        return int(self.targets.shape[0])

    def batches(self, size: int, order: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive mini-batches ``(inputs, targets)`` of ``size`` samples (the last may be
        smaller), in ``order`` if given. Batch ``b`` of this list is what keys the dynamic noise of
        an evaluation, so every evaluator batches through here."""
        index = torch.arange(len(self)) if order is None else order
        return [(self.inputs[index[i:i + size]], self.targets[index[i:i + size]])
                for i in range(0, len(self), size)]


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its train and test splits, the shape of one sample (of one frame, for
    event data) and the class count."""

    name: str
    train: DatasetSplit
    test: DatasetSplit
    input_shape: tuple[int, ...]
    num_classes: int


def load_dataset(name: str, root: str | os.PathLike[str] | None = None,
                 frames: FrameBinning | None = None) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`; case and ``_``/``-`` do not matter).

    ``root`` is the local folder holding the files of every dataset but ``digits`` and
    ``digits4x4`` (see the module docstring for the accepted layouts); it is ignored for those. ``frames`` says how
    an event dataset is binned (needed for those, ignored for the others). Raises
    :class:`DatasetError` for an unknown name or any problem with the files.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (choose one of: {', '.join(DATASETS)})")
    if key == "digits":
        return load_digits()
    if key == "digits4x4":
        return load_digits(pool=2)
    if key == "digits4x4-8":
        return load_digits(pool=2, classes=8)
    if key in EVENT_DATASETS:
        from neurosim.train.events import LAYOUTS, load_event_dataset
        return load_event_dataset(key, _require_root(key, root, LAYOUTS[key].what), frames)
    if key in MNIST_SUBFOLDERS:
        return load_mnist(key, _require_root(key, root, "the IDX files"))
    return load_cifar(key, _require_root(key, root, "the python pickle batches"))


def dataset_of(training: Mapping[str, Any], name: str | None = None,
               root: str | os.PathLike[str] | None = None, timesteps: int | None = None) -> Dataset:
    """The dataset a training config names (``TrainConfig.to_dict()``, or a deployment's
    ``training`` metadata), ``name`` and ``root`` overriding its ``dataset`` and ``data_root``;
    event data is binned into ``timesteps`` frames (default: the config's) with its ``events``
    options."""
    from neurosim.train.events import FrameBinning

    return load_dataset(name or training.get("dataset", "digits"), root or training.get("data_root"),
                        FrameBinning.of(training, timesteps))


# --------------------------------------------------------------------------------------------
# digits


def load_digits(pool: int = 1, classes: int = 10) -> Dataset:
    """scikit-learn's 8x8 digits, pixel values / 16, with a FIXED stratified split; ``pool`` > 1
    averages ``pool x pool`` pixel blocks (``pool=2``: the 4x4 = 16-input ``digits4x4``);
    ``classes`` < 10 keeps the digits ``0 .. classes-1`` only (``digits4x4-8``).

    The split is ``train_test_split(test_size=DIGITS_TEST_FRACTION,
    random_state=DIGITS_SPLIT_SEED, stratify=labels)``: 1347 training and 450 test images (all
    ten classes), every class in both, identical on every call whatever seed a training run uses.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if pool not in (1, 2, 4, 8) or not 2 <= classes <= 10:
        raise ValueError(f"digits: pool {pool} does not divide 8 or classes {classes} not in 2..10")
    bunch = sk_load_digits()
    keep = np.asarray(bunch.target) < classes
    images = (np.asarray(bunch.images, dtype=np.float32)[keep] / np.float32(16.0))[:, None, :, :]
    if pool > 1:
        size = 8 // pool
        images = images.reshape(len(images), 1, size, pool, size, pool).mean(axis=(3, 5), dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)[keep]
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels)
    name = ("digits" if pool == 1 else f"digits{8 // pool}x{8 // pool}") + ("" if classes == 10 else f"-{classes}")
    return Dataset(name, _split(x_train, y_train), _split(x_test, y_test),
                   tuple(images.shape[1:]), int(labels.max()) + 1)


def _split(inputs: np.ndarray, targets: np.ndarray) -> DatasetSplit:
    """A :class:`DatasetSplit` of float32 ``inputs`` and int64 ``targets`` (copied, contiguous)."""
    return DatasetSplit(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)),
                        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)))


def _bytes_split(pixels: np.ndarray, labels: np.ndarray, sample_shape: tuple[int, ...]) -> DatasetSplit:
    """A split from uint8 ``pixels`` (scaled by 1/255 and reshaped to ``[N, *sample_shape]``)."""
    inputs = np.asarray(pixels, dtype=np.uint8).reshape(-1, *sample_shape).astype(np.float32)
    inputs /= np.float32(255.0)
    return _split(inputs, labels)


# --------------------------------------------------------------------------------------------
# folders and files


def _require_root(name: str, root: str | os.PathLike[str] | None, what: str) -> Path:
    """``root`` as an existing, non-empty folder; otherwise a :class:`DatasetError`."""
    if root is None or os.fspath(root) == "":
        raise DatasetError(f"{name}: needs --data-root FOLDER with {what}")
    folder = Path(root).expanduser()
    try:
        if not folder.exists():
            raise DatasetError(f"{name}: data folder {folder} does not exist")
        if not folder.is_dir():
            raise DatasetError(f"{name}: data folder {folder} is not a folder")
        if next(folder.iterdir(), None) is None:
            raise DatasetError(f"{name}: data folder {folder} is empty (expected {what})")
    except OSError as exc:
        raise DatasetError(f"{name}: data folder {folder}: cannot read ({exc.strerror or exc})") from None
    return folder


def _find_folder(name: str, root: Path, subfolder: str, stems: list[str], gz: bool) -> Path:
    """The first of ``root`` and ``root/subfolder`` holding every file of ``stems``
    (``.gz`` allowed when ``gz``); otherwise a :class:`DatasetError` listing what is missing."""
    folders = [root, root / subfolder]
    best: tuple[int, Path] | None = None
    for folder in folders:
        found = sum(_find_file(folder, stem, gz) is not None for stem in stems)
        if found == len(stems):
            return folder
        if found and (best is None or found > best[0]):
            best = (found, folder)
    suffix = "[.gz]" if gz else ""
    if best is not None:
        missing = [stem + suffix for stem in stems if _find_file(best[1], stem, gz) is None]
        raise DatasetError(f"{name}: {best[1]}: missing {', '.join(missing)}")
    wanted = ", ".join(stem + suffix for stem in stems)
    raise DatasetError(f"{name}: {root}: none of the files found (looked for {wanted} "
                       f"in {root} and {root / subfolder})")


def _find_file(folder: Path, stem: str, gz: bool) -> Path | None:
    """``folder/stem`` (or ``folder/stem.gz`` when ``gz``) if it is a file, else None."""
    for candidate in ([stem, f"{stem}.gz"] if gz else [stem]):
        path = folder / candidate
        try:
            if path.is_file():
                return path
        except OSError:
            continue
    return None


def _read_bytes(name: str, path: Path) -> bytes:
    """The content of ``path``, at most :data:`MAX_FILE_BYTES` (IDX files, plain or gzipped,
    are read by :func:`read_idx`, bounded by their header)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DatasetError(f"{name}: {path}: file is {size} bytes, more than {MAX_FILE_BYTES} allowed")
        return path.read_bytes()
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DatasetError(f"{name}: {path}: cannot read ({reason})") from None


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)


def load_mnist(name: str, root: Path) -> Dataset:
    """MNIST or Fashion-MNIST (``name``) from the IDX files in ``root`` or its torchvision
    subfolder; images scaled to [0, 1] with their size taken from the files."""
    folder = _find_folder(name, root, MNIST_SUBFOLDERS[name], list(MNIST_FILES.values()), gz=True)
    paths = {key: _find_file(folder, stem, gz=True) for key, stem in MNIST_FILES.items()}
    train = _mnist_split(name, paths["train_images"], paths["train_labels"])
    test = _mnist_split(name, paths["test_images"], paths["test_labels"])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DatasetError(f"{name}: {paths['test_images']}: images are {_dims(test[0].shape[1:])}, "
                           f"but the training images are {_dims(train[0].shape[1:])}")
    shape = (1, *train[0].shape[1:])
    return Dataset(name, _bytes_split(*train, shape), _bytes_split(*test, shape), shape, MNIST_CLASSES)


def _mnist_split(name: str, images_path: Path | None, labels_path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, H, W]`` and labels ``[N]`` from one pair of IDX files, cross-checked."""
    assert images_path is not None and labels_path is not None  # _find_folder found them
    images = read_idx(name, images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(name, labels_path, IDX_LABELS_MAGIC)
    if images.shape[0] == 0:
        raise DatasetError(f"{name}: {images_path}: holds no images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise DatasetError(f"{name}: {images_path}: images of size {_dims(images.shape[1:])}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{name}: {labels_path}: {labels.shape[0]} labels, but {images_path} "
                           f"holds {images.shape[0]} images")
    if labels.max() >= MNIST_CLASSES:
        bad = int(np.argmax(labels >= MNIST_CLASSES))
        raise DatasetError(f"{name}: {labels_path}: label {int(labels[bad])} at index {bad} is out of "
                           f"range (classes 0..{MNIST_CLASSES - 1})")
    return images, labels


def read_idx(name: str, path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file whose magic number must be ``magic`` (0x0803: images
    ``[N, H, W]``, 0x0801: labels ``[N]``); header, dimensions and length are all checked, and the
    declared dimensions against :data:`neurosim.limits.MAX_ARRAY_ELEMENTS` before any data is
    read (of a ``.gz``, no more is unpacked than the header declares, plus one byte)."""
    kind = "image" if magic == IDX_IMAGES_MAGIC else "label"
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            dims = _idx_header(name, path, handle, magic, kind)
            expected = check_array(f"{name}: {path}", f"the IDX header ({kind}s)", dims, 1, DatasetError,
                                   max_bytes=MAX_FILE_BYTES)
            data = handle.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DatasetError(f"{name}: {path}: cannot read ({reason})") from None
    if len(data) < expected:
        raise DatasetError(f"{name}: {path}: file is truncated ({len(data)} data bytes, header "
                           f"{_dims(dims)} needs {expected})")
    if len(data) > expected:
        raise DatasetError(f"{name}: {path}: unexpected bytes after the {_dims(dims)} data")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _idx_header(name: str, path: Path, handle: IO[bytes], magic: int, kind: str) -> tuple[int, ...]:
    """The dimensions of the IDX header at the start of ``handle``, its magic number checked."""
    ndim = magic & 0xFF
    head = handle.read(4)
    if len(head) < 4:
        raise DatasetError(f"{name}: {path}: file is truncated ({len(head)} bytes, no IDX header)")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise DatasetError(f"{name}: {path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} "
                           f"(an IDX {kind} file of unsigned bytes)")
    raw = handle.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DatasetError(f"{name}: {path}: file is truncated ({4 + len(raw)} bytes, header needs {4 + 4 * ndim})")
    return tuple(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(ndim))


def _dims(shape: tuple[int, ...]) -> str:
    """A shape written as ``5x28x28``."""
    return "x".join(str(d) for d in shape)


# --------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100 (restricted pickles)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1 text."""
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array may name, mapped to the objects they stand for (the
    ``numpy.core`` spellings of old pickles go to ``numpy._core`` without importing the shim)."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # pickle protocol 5
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists and plain values and nothing else:
    any other global a pickle names is refused with a :class:`DatasetError`, before it runs."""

    def __init__(self, file: io.BytesIO, name: str, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.name, self.path = name, path
        self.allowed = _numpy_globals()
        for package in ("numpy.core", "numpy._core"):  # the two that allocate from a shape alone
            self.allowed[(f"{package}.multiarray", "_reconstruct")] = self._reconstruct
        self.allowed[("numpy", "ndarray")] = self._ndarray

    def _check_shape(self, shape: Any, dtype: Any) -> None:
        """Refuse a pickled array whose shape (checked before numpy allocates it) is beyond
        :data:`neurosim.limits.MAX_ARRAY_ELEMENTS`."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        check_array(f"{self.name}: {self.path}", "a pickled array", dims, np.dtype(dtype).itemsize, DatasetError)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        """numpy's ``_reconstruct`` (how a pickled array starts), its shape checked first."""
        self._check_shape(shape, dtype)
        return np.ndarray.__new__(np.ndarray if subtype == self._ndarray else subtype, shape, dtype)

    def _ndarray(self, shape: Any, dtype: Any = float, *args: Any) -> np.ndarray:
        """``numpy.ndarray(shape, dtype, ...)`` called by a pickle, its shape checked first."""
        self._check_shape(shape, dtype)
        return np.ndarray(shape, dtype, *args)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle hook
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise DatasetError(f"{self.name}: {self.path}: refused pickle global {module}.{name} "
                           f"(only numpy arrays may be loaded)")


def load_pickle(name: str, path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` after checking that its opcodes parse
    and fit in the file; any failure is a :class:`DatasetError`."""
    data = _read_bytes(name, path)
    try:
        for _ in pickletools.genops(data):  # every length field fits the file: no huge allocations
            pass
        content = RestrictedUnpickler(io.BytesIO(data), name, path).load()
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DatasetError(f"{name}: {path}: not a readable pickle ({type(exc).__name__}"
                           f"{': ' + detail if detail else ''})") from None
    _refuse_unfilled_arrays(name, path, content, len(data))
    return content


def _refuse_unfilled_arrays(name: str, path: Path, content: Any, file_bytes: int) -> None:
    """Refuse an array (at the top or a dict value) larger than the file: numpy built it from a
    shape alone, not from data in the file, and reading it would only touch unset memory."""
    values = content.values() if isinstance(content, dict) else [content]
    for value in values:
        if isinstance(value, np.ndarray) and value.nbytes > file_bytes:
            raise DatasetError(f"{name}: {path}: holds a {_dims(value.shape)} array of {value.nbytes} "
                               f"bytes, more than the {file_bytes}-byte file can contain")


def load_cifar(name: str, root: Path) -> Dataset:
    """CIFAR-10 or CIFAR-100 (``name``) from its pickled batches in ``root`` or its subfolder."""
    train_stems, test_stems = CIFAR_FILES[name]
    folder = _find_folder(name, root, CIFAR_SUBFOLDERS[name], train_stems + test_stems, gz=False)
    train = _cifar_split(name, [folder / stem for stem in train_stems])
    test = _cifar_split(name, [folder / stem for stem in test_stems])
    return Dataset(name, train, test, CIFAR_IMAGE_SHAPE, CIFAR_CLASSES[name])


def _cifar_split(name: str, paths: list[Path]) -> DatasetSplit:
    """One split from the batches in ``paths``, concatenated in order."""
    batches = [_cifar_batch(name, path) for path in paths]
    pixels = np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
    labels = np.concatenate([b[1] for b in batches]) if len(batches) > 1 else batches[0][1]
    return _bytes_split(pixels, labels, CIFAR_IMAGE_SHAPE)


def _cifar_batch(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pixels ``[N, 3072]`` and int64 labels ``[N]`` of one checked CIFAR batch file."""
    content = load_pickle(name, path)
    if not isinstance(content, dict):
        raise DatasetError(f"{name}: {path}: expected a dict of 'data' and labels, got {type(content).__name__}")
    entries = {_text_key(k): v for k, v in content.items()}
    label_key = CIFAR_LABEL_KEYS[name]
    missing = [key for key in ("data", label_key) if key not in entries]
    if missing:
        raise DatasetError(f"{name}: {path}: missing key(s) {', '.join(missing)} "
                           f"(has: {', '.join(sorted(map(str, entries))) or 'nothing'})")
    pixels = _cifar_pixels(name, path, entries["data"])
    labels = _int_array(name, path, label_key, entries[label_key])
    if labels.shape[0] != pixels.shape[0]:
        raise DatasetError(f"{name}: {path}: {labels.shape[0]} labels for {pixels.shape[0]} images")
    classes = CIFAR_CLASSES[name]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = int(np.argmax((labels < 0) | (labels >= classes)))
        raise DatasetError(f"{name}: {path}: label {int(labels[bad])} at index {bad} is out of range "
                           f"(classes 0..{classes - 1})")
    return pixels, labels


def _text_key(key: Any) -> Any:
    """A pickle dict key as text (Python 2 pickles give bytes keys such as ``b'data'``)."""
    return key.decode("latin-1") if isinstance(key, bytes) else key


def _cifar_pixels(name: str, path: Path, data: Any) -> np.ndarray:
    """The ``data`` entry checked to be an integer array ``[N, 3072]`` of values 0..255, as uint8."""
    width = int(np.prod(CIFAR_IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.integer):
        kind = f"array of {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{name}: {path}: 'data' must be an integer numpy array, got {kind}")
    if data.ndim != 2 or data.shape[1] != width or data.shape[0] == 0:
        raise DatasetError(f"{name}: {path}: 'data' has shape {_dims(data.shape) or 'scalar'}, "
                           f"expected Nx{width} with N > 0")
    if data.min() < 0 or data.max() > 255:
        raise DatasetError(f"{name}: {path}: 'data' holds values outside 0..255")
    return data.astype(np.uint8, copy=False)


def _int_array(name: str, path: Path, key: str, values: Any) -> np.ndarray:
    """A list or 1-D array of integers as int64 ``[N]``; anything else is a :class:`DatasetError`."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise DatasetError(f"{name}: {path}: '{key}' must be a list of ints, got a "
                               f"{_dims(values.shape) or 'scalar'} array of {values.dtype}")
        return values.astype(np.int64)
    if not isinstance(values, list):
        raise DatasetError(f"{name}: {path}: '{key}' must be a list of ints, got {type(values).__name__}")
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DatasetError(f"{name}: {path}: '{key}'[{index}] is {type(value).__name__} {value!r:.40}, "
                               f"not an int")
    try:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    except OverflowError:
        raise DatasetError(f"{name}: {path}: '{key}' holds an int too large") from None
