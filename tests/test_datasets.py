"""Dataset loaders: the fixed digits split, IDX files (MNIST, Fashion-MNIST), CIFAR pickles
read with a restricted unpickler, and one-line DatasetErrors for every broken folder or file."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosim.errors import DatasetError
from neurosim.train.datasets import DATASETS, DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, load_dataset

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TORCHVISION_RAW = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


def one_line(exc: pytest.ExceptionInfo[DatasetError]) -> str:
    """The message of a raised DatasetError, checked to be a single line."""
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# --------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_types_and_range(digits):
    assert DIGITS_SPLIT_SEED == 0 and DIGITS_TEST_FRACTION == 0.25
    assert digits.name == "digits" and digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    assert tuple(digits.train.inputs.shape) == (1347, 1, 8, 8) and len(digits.train) == 1347
    assert tuple(digits.test.inputs.shape) == (450, 1, 8, 8) and len(digits.test) == 450
    for split in (digits.train, digits.test):
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == torch.int64
        assert split.inputs.min() >= 0 and split.inputs.max() <= 1
        assert split.targets.shape == (len(split),)
    assert digits.train.inputs.max() == 1.0  # 16/16: scaled by 1/16, not 1/255
    assert set(digits.test.targets.tolist()) == set(range(10))
    assert set(digits.train.targets.tolist()) == set(range(10))


def test_digits4x4_is_the_digits_averaged_over_2x2_blocks(digits):
    small = load_dataset("Digits4x4")  # case does not matter
    assert small.name == "digits4x4" and small.num_classes == 10 and small.input_shape == (1, 4, 4)
    assert tuple(small.train.inputs.shape) == (1347, 1, 4, 4) and tuple(small.test.inputs.shape) == (450, 1, 4, 4)
    assert small.train.inputs.dtype == torch.float32
    for big, pooled in ((digits.train, small.train), (digits.test, small.test)):
        assert torch.equal(big.targets, pooled.targets)  # the same fixed split, the same order
        # pixel (i, j) of the 4x4 image is the mean of the 8x8 block rows 2i..2i+1, columns 2j..2j+1
        block = big.inputs[:, :, 2:4, 4:6].mean(dim=(2, 3))
        assert torch.allclose(pooled.inputs[:, :, 1, 2], block, rtol=0, atol=1e-7)
        assert torch.allclose(pooled.inputs, torch.nn.functional.avg_pool2d(big.inputs, 2), rtol=0, atol=1e-7)
    assert small.train.inputs.min() >= 0 and small.train.inputs.max() <= 1
    # values are multiples of 1/64 (four pixels of 0..16 over 16 * 4)
    assert torch.equal(small.train.inputs * 64, torch.round(small.train.inputs * 64))


def test_digits4x4_8_keeps_the_digits_0_to_7():
    eight = load_dataset("digits4x4-8")
    assert eight.name == "digits4x4-8" and eight.num_classes == 8 and eight.input_shape == (1, 4, 4)
    for split in (eight.train, eight.test):
        assert set(split.targets.tolist()) == set(range(8))
    from sklearn.datasets import load_digits as sk_load_digits
    assert len(eight.train) + len(eight.test) == int((sk_load_digits().target < 8).sum())
    # each image is one of the 2x2-pooled digits of its class
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(sk_load_digits().images[:, None] / 16.0).float(), 2)
    first = eight.test.inputs[0]
    matches = (pooled - first).abs().flatten(1).max(1).values < 1e-6
    assert matches.any() and set(sk_load_digits().target[matches.numpy()].tolist()) == {int(eight.test.targets[0])}


def test_digits_split_is_fixed(digits, tmp_path):
    torch.manual_seed(123)
    np.random.seed(456)
    again = load_dataset("digits", root=tmp_path / "ignored")
    assert torch.equal(again.train.inputs, digits.train.inputs)
    assert torch.equal(again.test.targets, digits.test.targets)
    assert torch.equal(again.train.targets, digits.train.targets)
    # stratified: each class's share of the test set is within one image of a quarter
    counts = torch.bincount(digits.test.targets, minlength=10)
    totals = counts + torch.bincount(digits.train.targets, minlength=10)
    assert torch.all((counts.float() - totals.float() * 0.25).abs() <= 1)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DatasetError) as exc:
        load_dataset("imagenet")
    message = one_line(exc)
    assert "imagenet" in message and all(name in message for name in DATASETS)
    assert load_dataset("DIGITS").name == "digits"


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">I", 0x803) + struct.pack(">III", *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">I", 0x801) + struct.pack(">I", len(labels)) + labels.astype(np.uint8).tobytes()


def mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 4, 4), dtype=np.uint8),
            "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 7], dtype=np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": np.array([1, 2, 9], dtype=np.uint8)}


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, array in arrays.items():
        data = idx_images(array) if "images" in name else idx_labels(array)
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[name] = path
    return paths


def assert_mnist_equal(dataset, arrays: dict[str, np.ndarray], name: str) -> None:
    assert dataset.name == name and dataset.num_classes == 10 and dataset.input_shape == (1, 4, 4)
    for split, prefix in ((dataset.train, "train"), (dataset.test, "t10k")):
        images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]).float()[:, None] / 255
        labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"]).long()
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == torch.int64
        assert torch.equal(split.inputs, images) and torch.equal(split.targets, labels)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("torchvision_layout", [False, True])
def test_mnist_formats_load_what_was_written(tmp_path, name, gz, torchvision_layout):
    arrays = mnist_arrays()
    folder = tmp_path / TORCHVISION_RAW[name] if torchvision_layout else tmp_path
    write_mnist(folder, arrays, gz)
    assert_mnist_equal(load_dataset(name, tmp_path), arrays, name)
    assert_mnist_equal(load_dataset(name, str(tmp_path)), arrays, name)


def test_mnist_image_size_comes_from_the_file(tmp_path):
    arrays = mnist_arrays()
    arrays["train-images-idx3-ubyte"] = np.zeros((5, 6, 3), dtype=np.uint8)
    arrays["t10k-images-idx3-ubyte"] = np.full((3, 6, 3), 255, dtype=np.uint8)
    write_mnist(tmp_path, arrays)
    dataset = load_dataset("mnist", tmp_path)
    assert dataset.input_shape == (1, 6, 3) and dataset.test.inputs.shape == (3, 1, 6, 3)
    assert torch.all(dataset.test.inputs == 1.0)


def test_mnist_folder_problems(tmp_path):
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("mnist")
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(exc) and "does not exist" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", tmp_path / "empty")
    assert str(tmp_path / "empty") in one_line(exc) and "empty" in str(exc.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset("mnist", tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path / "other")
    assert "train-images-idx3-ubyte" in one_line(exc) and "MNIST/raw" in str(exc.value)


def test_mnist_missing_file_is_named(tmp_path):
    paths = write_mnist(tmp_path, mnist_arrays(), gz=True)
    paths["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    message = one_line(exc)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message and str(tmp_path) in message


def broken_mnist(tmp_path: Path, target: str, data: bytes, gz: bool = False) -> Path:
    paths = write_mnist(tmp_path, mnist_arrays(), gz)
    paths[target].write_bytes(gzip.compress(data) if gz else data)
    return paths[target]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_images(tmp_path, gz):
    full = idx_images(mnist_arrays()["train-images-idx3-ubyte"])
    path = broken_mnist(tmp_path, "train-images-idx3-ubyte", full[:-7], gz)
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    assert str(path) in one_line(exc) and "truncated" in str(exc.value)


def test_mnist_header_only_and_trailing_bytes(tmp_path):
    path = broken_mnist(tmp_path, "t10k-images-idx3-ubyte", b"\x00\x00\x08")
    with pytest.raises(DatasetError, match="truncated") as exc:
        load_dataset("mnist", tmp_path)
    assert str(path) in one_line(exc)
    path = broken_mnist(tmp_path, "t10k-images-idx3-ubyte", idx_images(np.zeros((3, 4, 4))) + b"xx")
    with pytest.raises(DatasetError, match="unexpected bytes") as exc:
        load_dataset("mnist", tmp_path)
    assert str(path) in one_line(exc)


def test_mnist_corrupt_gzip(tmp_path):
    paths = write_mnist(tmp_path, mnist_arrays(), gz=True)
    paths["train-labels-idx1-ubyte"].write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    assert str(paths["train-labels-idx1-ubyte"]) in one_line(exc)
    good = gzip.compress(idx_labels(np.array([0, 1, 2, 3, 4])))
    paths["train-labels-idx1-ubyte"].write_bytes(good[:-10])  # gzip stream cut short
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    assert str(paths["train-labels-idx1-ubyte"]) in one_line(exc)


def test_mnist_wrong_magic(tmp_path):
    # a label file where the images should be
    path = broken_mnist(tmp_path, "train-images-idx3-ubyte", idx_labels(np.zeros(5)))
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    assert str(path) in one_line(exc) and "0x00000801" in str(exc.value) and "0x00000803" in str(exc.value)
    signed = idx_images(np.zeros((5, 4, 4)))
    path = broken_mnist(tmp_path, "train-images-idx3-ubyte", signed[:2] + b"\x09" + signed[3:])
    with pytest.raises(DatasetError, match="magic"):
        load_dataset("mnist", tmp_path)


def test_mnist_label_count_mismatch(tmp_path):
    path = broken_mnist(tmp_path, "t10k-labels-idx1-ubyte", idx_labels(np.array([1, 2])))
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", tmp_path)
    message = one_line(exc)
    assert str(path) in message and "2 labels" in message and "3 images" in message


def test_mnist_label_out_of_range(tmp_path):
    path = broken_mnist(tmp_path, "train-labels-idx1-ubyte", idx_labels(np.array([0, 1, 12, 3, 4])))
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    message = one_line(exc)
    assert str(path) in message and "12" in message


def test_mnist_train_and_test_sizes_must_agree(tmp_path):
    path = broken_mnist(tmp_path, "t10k-images-idx3-ubyte", idx_images(np.zeros((3, 5, 5))))
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", tmp_path)
    assert str(path) in one_line(exc) and "5x5" in str(exc.value)


# --------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100


def cifar_batch(rng: np.random.Generator, n: int, classes: int, label_key: bytes) -> dict[bytes, object]:
    return {b"batch_label": b"testing batch",
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, classes, n)],
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def write_cifar(folder: Path, name: str, protocol: int = pickle.HIGHEST_PROTOCOL) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    if name == "cifar10":
        stems, classes, key = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], 10, b"labels"
    else:
        stems, classes, key = ["train", "test"], 100, b"fine_labels"
    batches = {}
    for stem in stems:
        batches[stem] = cifar_batch(rng, 4, classes, key)
        if name == "cifar100":
            batches[stem][b"coarse_labels"] = [0] * 4
        with open(folder / stem, "wb") as handle:
            pickle.dump(batches[stem], handle, protocol=protocol)
    return batches


def expected_cifar(batches: list[dict], key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.concatenate([b[b"data"] for b in batches])
    images = torch.from_numpy(data).float().reshape(-1, 3, 32, 32) / 255
    return images, torch.tensor(sum((b[key] for b in batches), []), dtype=torch.int64)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar10_loads_what_was_written(tmp_path, protocol, subfolder):
    batches = write_cifar(tmp_path / "cifar-10-batches-py" if subfolder else tmp_path, "cifar10", protocol)
    dataset = load_dataset("cifar10", tmp_path)
    assert dataset.num_classes == 10 and dataset.input_shape == (3, 32, 32)
    assert len(dataset.train) == 20 and len(dataset.test) == 4
    images, labels = expected_cifar([batches[f"data_batch_{i}"] for i in range(1, 6)], b"labels")
    assert dataset.train.inputs.dtype == torch.float32 and dataset.train.targets.dtype == torch.int64
    assert torch.equal(dataset.train.inputs, images) and torch.equal(dataset.train.targets, labels)
    images, labels = expected_cifar([batches["test_batch"]], b"labels")
    assert torch.equal(dataset.test.inputs, images) and torch.equal(dataset.test.targets, labels)
    # channel-major layout: the first 1024 values of a row are the red plane
    row = batches["test_batch"][b"data"][0]
    assert torch.equal(dataset.test.inputs[0, 0, 0, :], torch.from_numpy(row[:32]).float() / 255)
    assert torch.equal(dataset.test.inputs[0, 2, 31, 31], torch.tensor(float(row[3071])) / 255)


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar100_loads_what_was_written(tmp_path, subfolder):
    batches = write_cifar(tmp_path / "cifar-100-python" if subfolder else tmp_path, "cifar100", protocol=2)
    dataset = load_dataset("cifar100", tmp_path)
    assert dataset.name == "cifar100" and dataset.num_classes == 100 and dataset.input_shape == (3, 32, 32)
    for split, stem in ((dataset.train, "train"), (dataset.test, "test")):
        images, labels = expected_cifar([batches[stem]], b"fine_labels")
        assert torch.equal(split.inputs, images) and torch.equal(split.targets, labels)


class _Exploit:
    """Pickles to a call of os.system that would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, name):
    write_cifar(tmp_path, name)
    marker = tmp_path / "pwned"
    victim = tmp_path / ("data_batch_3" if name == "cifar10" else "test")
    with open(victim, "wb") as handle:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, handle)
    with pytest.raises(DatasetError) as exc:
        load_dataset(name, tmp_path)
    message = one_line(exc)
    assert str(victim) in message and "system" in message and "refused" in message
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": Path("/etc")}, handle)
    with pytest.raises(DatasetError, match="refused pickle global pathlib") as exc:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "test_batch") in one_line(exc)
    # _codecs.encode is allowed only for latin-1 bytes, not other codecs
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("content, words", [
    ([1, 2, 3], "got list"),
    ({b"labels": [0]}, "missing key(s) data"),
    ({b"data": [[0] * 3072], b"labels": [0]}, "integer numpy array"),
    ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, "integer numpy array"),
    ({b"data": np.zeros((1, 100), np.uint8), b"labels": [0]}, "shape 1x100"),
    ({b"data": np.full((1, 3072), 300, np.int32), b"labels": [0]}, "outside 0..255"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 labels for 2 images"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}, "not an int"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": 3}, "list of ints"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "label 10"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [-1]}, "label -1"),
])
def test_wrong_pickle_content_is_refused(tmp_path, content, words):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "data_batch_2", "wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", tmp_path)
    message = one_line(exc)
    assert str(tmp_path / "data_batch_2") in message and words in message


def test_cifar100_label_range_is_100(tmp_path):
    write_cifar(tmp_path, "cifar100")
    with open(tmp_path / "test", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [99, 100]}, handle)
    with pytest.raises(DatasetError, match="label 100"):
        load_dataset("cifar100", tmp_path)
    with open(tmp_path / "test", "wb") as handle:  # cifar10's key is not cifar100's
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, handle)
    with pytest.raises(DatasetError, match="fine_labels"):
        load_dataset("cifar100", tmp_path)


@pytest.mark.parametrize("data", [b"", b"\x80\x05garbage", b"not a pickle", pickle.dumps({b"a": 1})[:-3]])
def test_unreadable_pickle_is_a_dataset_error(tmp_path, data):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "test_batch").write_bytes(data)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "test_batch") in one_line(exc)


def test_cifar_folder_problems(tmp_path):
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("cifar10", None)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar100", tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(exc)
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", tmp_path)
    message = one_line(exc)
    assert "data_batch_4" in message and "data_batch_1" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    with pytest.raises(DatasetError) as exc:  # cifar10's files are not cifar100's
        load_dataset("cifar100", tmp_path)
    assert "train" in one_line(exc) and "cifar-100-python" in str(exc.value)


class _Unfilled:
    """Pickles to numpy's ``_reconstruct`` of a big array shape with no data behind it (under
    neurosim.limits.MAX_ARRAY_ELEMENTS; a larger one is refused before numpy allocates it,
    tests/test_bounded_memory.py)."""

    def __reduce__(self):
        return np.ndarray.__reduce__(np.zeros(1, np.uint8))[0], (np.ndarray, (10_000, 3072), b"B")


def test_arrays_without_data_and_huge_lengths_are_refused(tmp_path, capfd):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Unfilled(), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DatasetError, match="more than the .*-byte file") as exc:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "test_batch") in one_line(exc)
    # a BYTEARRAY8 whose length field claims 2**62 bytes is refused before anything allocates it
    (tmp_path / "test_batch").write_bytes(b"\x80\x05\x96" + (1 << 62).to_bytes(8, "little") + b"xx.")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        load_dataset("cifar10", tmp_path)
    assert capfd.readouterr().err == ""


def test_oversized_files_are_refused(tmp_path, monkeypatch):
    import neurosim.train.datasets as datasets

    monkeypatch.setattr(datasets, "MAX_FILE_BYTES", 40)
    for gz in (True, False):  # an IDX file: from its header, before its data is read or unpacked
        write_mnist(tmp_path / str(gz), mnist_arrays(), gz=gz)
        with pytest.raises(DatasetError, match="IDX header .* bytes, more than the limit of 40 bytes per array"):
            load_dataset("mnist", tmp_path / str(gz))
    write_cifar(tmp_path / "cifar", "cifar10")  # a pickle: from its size on disk
    with pytest.raises(DatasetError, match="more than 40 allowed"):
        load_dataset("cifar10", tmp_path / "cifar")
