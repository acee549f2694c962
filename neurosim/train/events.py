"""Event-camera (DVS) datasets read through ``tonic`` from a local folder and binned to frames.

Nothing is ever downloaded: tonic's dataset classes download whatever they do not find, so they
are never instantiated here. The files are found and checked by this module (one
:class:`~neurosim.errors.DatasetError` naming the folder or file and what was expected), read
with tonic's own readers and event dtypes, and binned with tonic's transforms. Layouts, under the
``--data-root`` folder (or, as tonic leaves them, under its subfolder named after the class):

* ``nmnist`` (``tonic.datasets.NMNIST``): ``NMNIST/Train/<digit>/*.bin`` and
  ``NMNIST/Test/<digit>/*.bin``, the N-MNIST binary format (5 bytes per event, read by
  ``tonic.io.read_mnist_file``); sensor 34 x 34, 2 polarities, 10 classes.
* ``dvsgesture`` (``tonic.datasets.DVSGesture``): ``DVSGesture/ibmGestureTrain/<user>_<lighting>/<label>.npy``
  and ``ibmGestureTest``, each file an ``[N, 4]`` array of (x, y, p, t in ms), converted as tonic
  does (t times 1000, then its structured dtype); sensor 128 x 128, 2 polarities, 11 classes.
* ``event-folder`` (generic): ``train/<class>/*.npy`` and ``test/<class>/*.npy``, each file a
  numpy structured array with integer fields ``x``, ``y``, ``p`` (0 or 1) and ``t`` (time in
  integer units, e.g. microseconds: tonic's bin width is an integer division of the duration);
  the classes are the sorted folder names of ``train``, the sensor is the largest x and y over
  all files plus one, with 2 polarities.

Binning (:class:`FrameBinning`), per sample:

1. events are sorted by time (stable; tonic's slicing assumes it) and checked to lie on the sensor;
2. with ``downsample = k > 1``, ``tonic.transforms.Downsample(spatial_factor=1/k)`` maps x, y to
   ``x // k``, ``y // k`` (the sensor becomes ``ceil(W/k) x ceil(H/k)``);
3. ``tonic.transforms.ToFrame(sensor_size, n_time_bins=T)`` counts the events per (bin, polarity,
   y, x). tonic's rule: bin ``i`` holds the events with ``t0 + i w <= t < t0 + (i + 1) w`` where
   ``t0`` is the first event's time and ``w = (t_last - t0) // T``; events at or after
   ``t0 + T w`` (the last one, at least when ``T`` divides the duration) fall in no bin;
4. counts are normalised to [0, 1] as ``min(count, clip) / clip`` (``clip = 1``: binary frames).

So every value is a multiple of ``1 / clip`` and the first layer's input quantisation (the
integer engine's ``round(x / input_step)``) applies to each frame as it does to static input. A
split is held in memory as float32 ``[N, T, 2, H, W]`` (N-MNIST at T = 8 without downsampling:
60000 x 8 x 2 x 34 x 34 x 4 bytes, 4.4 GB; ``downsample = 2`` quarters it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurosim.errors import DatasetError, brief
from neurosim.limits import DeclaredSizes, check_array, check_npy
from neurosim.train.datasets import EVENT_DATASETS, Dataset, DatasetSplit

__all__ = ["EVENT_DATASETS", "FrameBinning", "bin_events", "load_event_dataset"]

POLARITIES = 2
NMNIST_BYTES_PER_EVENT = 5
GENERIC_FIELDS = ("x", "y", "t", "p")
GENERIC_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])


@dataclass(frozen=True)
class FrameBinning:
    """How an event recording becomes ``timesteps`` frames (module docstring, steps 1-4):
    spatial ``downsample`` factor and the count ``clip`` that normalises frames to [0, 1]."""

    timesteps: int
    downsample: int = 1
    clip: int = 1

    def __post_init__(self) -> None:
        for name in ("timesteps", "downsample", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DatasetError(f"event frames: {name} must be a positive integer, got {value!r}")

    @staticmethod
    def of(training: Mapping[str, Any], timesteps: int | None = None) -> FrameBinning:
        """The binning of a training config (``TrainConfig.to_dict()``, or the ``training``
        metadata of a deployment): ``timesteps`` bins (default: the config's) and the config's
        ``events`` options."""
        events = training.get("events") or {}
        return FrameBinning(int(timesteps if timesteps is not None else training.get("timesteps", 1)),
                            int(events.get("downsample", 1)), int(events.get("clip", 1)))


@dataclass(frozen=True)
class _Layout:
    """Where one event dataset lives and how to read it."""

    tonic_class: str
    split_folders: tuple[str, str]  # train, test
    suffix: str
    what: str  # for error messages


LAYOUTS = {
    "nmnist": _Layout("NMNIST", ("Train", "Test"), ".bin", "N-MNIST .bin event files in Train/<digit>/ and Test/<digit>/"),
    "dvsgesture": _Layout("DVSGesture", ("ibmGestureTrain", "ibmGestureTest"), ".npy",
                          "DVS Gesture .npy files in ibmGestureTrain/<user>_<lighting>/ and ibmGestureTest/"),
    "event-folder": _Layout("", ("train", "test"), ".npy",
                            "structured .npy event arrays (x, y, t, p) in train/<class>/ and test/<class>/"),
}


def _tonic() -> Any:
    """The ``tonic`` package, or a DatasetError saying how to install it."""
    try:
        import tonic
    except ImportError:
        raise DatasetError("event datasets need the tonic package: pip install 'neurosim[events]'") from None
    return tonic


def load_event_dataset(name: str, root: Path, binning: FrameBinning | None) -> Dataset:
    """Event dataset ``name`` (one of :data:`EVENT_DATASETS`) from the existing folder ``root``,
    binned by ``binning``; the Dataset's ``input_shape`` is one frame's ``(2, H, W)``."""
    if binning is None:
        raise DatasetError(f"{name}: event data needs the number of time bins (the model's timesteps)")
    tonic = _tonic()
    layout = LAYOUTS[name]
    folder = _dataset_folder(name, root, layout)
    train_files = _split_files(name, folder / layout.split_folders[0], layout)
    test_files = _split_files(name, folder / layout.split_folders[1], layout)
    read: Callable[[Path], np.ndarray]
    if name == "event-folder":
        classes = sorted({label for _, label in train_files})
        unknown = sorted({label for _, label in test_files} - set(classes))
        if unknown:
            raise DatasetError(f"{name}: {folder / 'test'}: class folder(s) {', '.join(unknown)} "
                               f"are not in {folder / 'train'}")
        index = {label: i for i, label in enumerate(classes)}
        train_files = [(path, index[label]) for path, label in train_files]
        test_files = [(path, index[label]) for path, label in test_files]
        loaded = {path: _read_generic(name, path) for path, _ in train_files + test_files}
        active = [events for events in loaded.values() if len(events)]
        if not active:
            raise DatasetError(f"{name}: {folder}: every event file is empty")
        sensor = (1 + max(int(e["x"].max()) for e in active), 1 + max(int(e["y"].max()) for e in active), POLARITIES)
        num_classes = len(classes)
        read = loaded.__getitem__
    else:
        cls = getattr(tonic.datasets, layout.tonic_class)
        sensor = tuple(int(s) for s in cls.sensor_size)
        num_classes = len(cls.classes)
        reader = _read_nmnist if name == "nmnist" else _read_dvsgesture
        read = lambda path: reader(name, path, cls)  # noqa: E731
        for path, label in train_files + test_files:
            if not 0 <= label < num_classes:
                raise DatasetError(f"{name}: {path}: label {label} is out of range (classes 0..{num_classes - 1})")
    frame_shape = (sensor[2], math.ceil(sensor[1] / binning.downsample), math.ceil(sensor[0] / binning.downsample))

    def frames_of(files: list[tuple[Path, int]], desc: str) -> DatasetSplit:
        from tqdm.auto import tqdm

        inputs = np.zeros((len(files), binning.timesteps, *frame_shape), np.float32)
        for i, (path, _) in enumerate(tqdm(files, desc=desc, leave=False, disable=None)):
            inputs[i] = bin_events(read(path), sensor, binning, f"{name}: {path}")
        targets = np.array([label for _, label in files], dtype=np.int64)
        return DatasetSplit(torch.from_numpy(inputs), torch.from_numpy(targets))

    train = frames_of(train_files, f"{name} train frames")
    test = frames_of(test_files, f"{name} test frames")
    return Dataset(name, train, test, frame_shape, num_classes)


def bin_events(events: np.ndarray, sensor_size: tuple[int, int, int], binning: FrameBinning,
               where: str = "events") -> np.ndarray:
    """Frames ``[T, P, H, W]`` (float32 in [0, 1]) of one recording: structured ``events`` with
    fields x, y, t, p on a ``sensor_size = (W, H, P)`` sensor (tonic's order), binned as the
    module docstring says. Events off the sensor are a DatasetError naming ``where``."""
    transforms = _tonic().transforms
    width, height, polarities = sensor_size
    out = (math.ceil(width / binning.downsample), math.ceil(height / binning.downsample), polarities)
    if len(events) == 0:
        return np.zeros((binning.timesteps, polarities, out[1], out[0]), np.float32)
    for field, size in (("x", width), ("y", height), ("p", polarities)):
        values = events[field].astype(np.int64)
        bad = (values < 0) | (values >= size)
        if bad.any():
            k = int(np.argmax(bad))
            raise DatasetError(f"{where}: event {k} has {field} = {int(values[k])}, outside 0..{size - 1} "
                               f"of the {width}x{height} sensor with {polarities} polarities")
    events = events[np.argsort(events["t"], kind="stable")]
    if binning.downsample > 1:
        events = transforms.Downsample(spatial_factor=1.0 / binning.downsample)(events)
    counts = transforms.ToFrame(sensor_size=out, n_time_bins=binning.timesteps)(events)
    return np.minimum(counts, binning.clip).astype(np.float32) / np.float32(binning.clip)


# --------------------------------------------------------------------------------------------
# folders


def _dataset_folder(name: str, root: Path, layout: _Layout) -> Path:
    """``root`` or ``root/<tonic class name>`` holding both split folders, else a DatasetError."""
    candidates = [root] + ([root / layout.tonic_class] if layout.tonic_class else [])
    for folder in candidates:
        if all((folder / split).is_dir() for split in layout.split_folders):
            return folder
    for folder in candidates:
        present = [split for split in layout.split_folders if (folder / split).is_dir()]
        if present:
            missing = [split for split in layout.split_folders if split not in present]
            raise DatasetError(f"{name}: {folder}: has {present[0]}/ but no {missing[0]}/ (expected {layout.what})")
    looked = " or ".join(str(f) for f in candidates)
    raise DatasetError(f"{name}: no {' and '.join(s + '/' for s in layout.split_folders)} folders in {looked} "
                       f"(expected {layout.what})")


def _split_files(name: str, split: Path, layout: _Layout) -> list[tuple[Path, Any]]:
    """``(file, label)`` of every event file of a split folder, in sorted order; the label is the
    class folder's digit (N-MNIST), the file name's number (DVS Gesture) or the class folder's
    name (event-folder). A file in the wrong place is a DatasetError."""
    try:
        paths = sorted(p for p in split.rglob(f"*{layout.suffix}") if p.is_file())
    except OSError as exc:
        raise DatasetError(f"{name}: {split}: cannot read ({exc.strerror or exc})") from None
    if not paths:
        raise DatasetError(f"{name}: {split} holds no {layout.suffix} event files (expected {layout.what})")
    files = []
    for path in paths:
        if path.parent.parent != split:
            raise DatasetError(f"{name}: {path}: event files belong one folder below {split} (expected {layout.what})")
        if name == "nmnist":
            if not (len(path.parent.name) == 1 and path.parent.name.isdigit()):
                raise DatasetError(f"{name}: {path}: folder {path.parent.name!r} is not a digit 0..9")
            label: Any = int(path.parent.name)
        elif name == "dvsgesture":
            if not path.stem.isdigit():
                raise DatasetError(f"{name}: {path}: the file name must be the class number (e.g. 3.npy)")
            label = int(path.stem)
        else:
            label = path.parent.name
        files.append((path, label))
    return files


# --------------------------------------------------------------------------------------------
# files


def _read_nmnist(name: str, path: Path, cls: Any) -> np.ndarray:
    """One N-MNIST recording with ``tonic.io.read_mnist_file`` (tonic's NMNIST dtype)."""
    from tonic.io import read_mnist_file

    size = _size(name, path)
    check_array(f"{name}: {path}", "the recording", (size // NMNIST_BYTES_PER_EVENT,), cls.dtype.itemsize,
                DatasetError)
    if size % NMNIST_BYTES_PER_EVENT:
        raise DatasetError(f"{name}: {path}: {size} bytes is not a whole number of "
                           f"{NMNIST_BYTES_PER_EVENT}-byte N-MNIST events")
    try:
        return read_mnist_file(str(path), dtype=cls.dtype)
    except OSError as exc:
        raise DatasetError(f"{name}: {path}: cannot read ({exc.strerror or exc})") from None


def _read_dvsgesture(name: str, path: Path, cls: Any) -> np.ndarray:
    """One DVS Gesture recording as tonic's ``DVSGesture.__getitem__`` reads it: an ``[N, 4]``
    array of (x, y, p, t in ms), t multiplied by 1000, then tonic's structured dtype."""
    from numpy.lib import recfunctions

    raw = _load_npy(name, path)
    if raw.dtype.names is not None or raw.ndim != 2 or raw.shape[1] != 4 or not np.issubdtype(raw.dtype, np.number):
        raise DatasetError(f"{name}: {path}: expected an Nx4 numeric array of (x, y, p, t), got "
                           f"{'a structured' if raw.dtype.names else 'an'} array of shape {raw.shape} and dtype {raw.dtype}")
    raw = raw.astype(np.float64 if np.issubdtype(raw.dtype, np.floating) else np.int64)
    raw[:, 3] *= 1000  # ms -> us, as tonic does
    return recfunctions.unstructured_to_structured(raw, cls.dtype)


def _read_generic(name: str, path: Path) -> np.ndarray:
    """One event-folder recording: a structured array with integer fields x, y, t and p."""
    events = _load_npy(name, path)
    names = events.dtype.names or ()
    missing = [f for f in GENERIC_FIELDS if f not in names]
    if events.ndim != 1 or missing:
        raise DatasetError(f"{name}: {path}: expected a 1-D structured array with fields x, y, t, p"
                           + (f"; missing {', '.join(missing)}" if missing else f", got shape {events.shape}"))
    for field in GENERIC_FIELDS:
        kind = events.dtype[field]
        if not (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.bool_)):
            raise DatasetError(f"{name}: {path}: field {field} is {kind}, expected integers")
    out = np.zeros(len(events), GENERIC_DTYPE)
    for field in GENERIC_FIELDS:
        out[field] = events[field]
    return out


def _size(name: str, path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"{name}: {path}: cannot read ({exc.strerror or exc})") from None


def _load_npy(name: str, path: Path) -> np.ndarray:
    """``np.load`` without pickles, after the declared shape was checked against
    :mod:`neurosim.limits` and the file's size (:func:`~neurosim.limits.check_npy`); any failure
    is a DatasetError naming the file."""
    try:
        with open(path, "rb") as handle:
            check_npy(handle, DeclaredSizes(f"{name}: {path}", DatasetError), "the .npy header",
                      os.fstat(handle.fileno()).st_size)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or brief(exc, 160) or type(exc).__name__
        raise DatasetError(f"{name}: {path}: not a readable .npy array ({reason})") from None
