"""Re-create the generated half of the bad-input corpus (artifacts, training runs, datasets, NIR).

The hand-written YAML files beside this script (``profile-*.yaml``, ``config-*.yaml``) are kept
as they are; every folder or file this script makes is listed in :data:`GENERATED` and is
deleted and rebuilt. Each starts from a small *good* input — a seeded two-layer deployment
(64 -> 4 -> 10 on hardreset-noisy), a one-epoch ``mlp:4`` training run on digits, a 4x4-pixel
MNIST folder, a NIR graph of an untrained ``mlp:4`` — and damages it in one way, named by the entry. Run from the repository root:

    python tests/data/bad/generate.py

The outputs are committed; tests/test_bad_inputs.py runs each through the CLI.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from neurosim.device import load_profile  # noqa: E402
from neurosim.export import Deployment  # noqa: E402
from neurosim.train import TrainConfig, train  # noqa: E402

MARKER = "NEUROSIM-PICKLE-RAN"
"""The file a malicious pickle of the corpus would create (in the working folder) if it ran."""


class OpenMarker:
    """Unpickles as ``builtins.open(MARKER, "w")``: creates a file if anything executes it."""

    def __reduce__(self):
        import builtins
        return (builtins.open, (MARKER, "w"))


# ------------------------------------------------------------------ artifacts

def good_artifact(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    layers = [{"weight": rng.integers(-127, 128, size=(4, 64)), "threshold": 300},
              {"weight": rng.integers(-127, 128, size=(10, 4))}]
    deployment = Deployment.from_integers(load_profile("hardreset-noisy"), layers, 4, (1, 8, 8),
                                          metadata={"training": {"dataset": "digits"}})
    return deployment.save(folder)


def manifest_of(folder: Path) -> dict:
    return yaml.safe_load((folder / "manifest.yaml").read_text(encoding="utf-8"))


def write_manifest(folder: Path, manifest) -> None:
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")


def change_manifest(folder: Path, change) -> None:
    manifest = manifest_of(folder)
    change(manifest)
    write_manifest(folder, manifest)


def replace_tensors(folder: Path, blob: bytes) -> None:
    """New tensors.npz bytes with the manifest's checksum updated, so only the content is wrong."""
    (folder / "tensors.npz").write_bytes(blob)
    change_manifest(folder, lambda m: m["tensors"].update(sha256=hashlib.sha256(blob).hexdigest()))


def npz_bytes(arrays: dict) -> bytes:
    """An .npz of ``arrays`` (numpy pickles an object array into it, which loading must refuse)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def tensors_of(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "tensors.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def artifacts(out: Path, good: Path) -> None:
    def copy(name: str) -> Path:
        target = out / name
        shutil.copytree(good, target)
        return target

    data = (good / "tensors.npz").read_bytes()
    (copy("artifact-truncated-tensors") / "tensors.npz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(flipped) // 3] ^= 0x01
    (copy("artifact-flipped-byte-in-tensors") / "tensors.npz").write_bytes(bytes(flipped))
    text = (good / "manifest.yaml").read_text(encoding="utf-8")
    (copy("artifact-truncated-manifest") / "manifest.yaml").write_text(text[: len(text) * 2 // 5], encoding="utf-8")
    change_manifest(copy("artifact-format-version-99"), lambda m: m.update(format_version=99))
    change_manifest(copy("artifact-foreign-manifest"), lambda m: m.update(format="onnx-model"))
    change_manifest(copy("artifact-tensors-path-escapes-folder"),
                    lambda m: m["tensors"].update(file="../../../etc/passwd"))
    linked = copy("artifact-tensors-link-outside-folder")
    (linked / "tensors.npz").unlink()
    (linked / "tensors.npz").symlink_to("../README.md")
    arrays = tensors_of(good)
    replace_tensors(copy("artifact-weight-of-wrong-shape"),
                    npz_bytes({**arrays, "block0.weight": arrays["block0.weight"][:2]}))
    replace_tensors(copy("artifact-weight-of-wrong-dtype"),
                    npz_bytes({**arrays, "block0.weight": arrays["block0.weight"].astype(np.float64)}))
    replace_tensors(copy("artifact-object-array-in-tensors"),
                    npz_bytes({**arrays, "block0.weight": np.array([OpenMarker()], dtype=object)}))
    replace_tensors(copy("artifact-pickle-disguised-as-tensors"), pickle.dumps({"block0.weight": OpenMarker()}))
    (copy("artifact-missing-tensors") / "tensors.npz").unlink()
    change_manifest(copy("artifact-profile-altered"),
                    lambda m: m["profile"]["spec"]["numerics"].update(weight_bits=16))
    change_manifest(copy("artifact-nan-threshold"),
                    lambda m: m["layers"][0]["neuron"].update(threshold=float("nan")))
    big = arrays["block0.weight"].copy()
    big[0, 0] = 1000
    replace_tensors(copy("artifact-weight-code-beyond-8-bits"), npz_bytes({**arrays, "block0.weight": big}))
    change_manifest(copy("artifact-training-metadata-not-a-mapping"),
                    lambda m: m["metadata"].update(training=["digits"]))
    change_manifest(copy("artifact-without-layers"), lambda m: m.update(layers=[]))
    write_manifest(copy("artifact-manifest-is-a-list"), ["format", "neurosim-deployment"])
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    (copy("artifact-manifest-yaml-bomb") / "manifest.yaml").write_text(
        "format: neurosim-deployment\nformat_version: 1\n" + "\n".join(bomb) + "\n", encoding="utf-8")
    change_manifest(copy("artifact-negative-timesteps"), lambda m: m.update(timesteps=-4))
    replace_tensors(copy("artifact-tensors-zip-bomb"),
                    npz_bomb({**arrays, "block0.weight": arrays["block0.weight"]}, "block0.weight", BOMB_SHAPE))


BOMB_SHAPE = (48, 12_800_000)
"""The shape the bombs declare: 614,400,000 elements (4.9 GB of int64), above neurosim.limits'
2**28 elements per array, as the issue's NIR file declared for its first Affine."""


def npz_bomb(arrays: dict, key: str, shape: tuple[int, ...]) -> bytes:
    """A deflated .npz of ``arrays`` whose member ``key`` has an .npy header declaring ``shape``
    (int64), followed by 64 KiB of zeros: a few KB on disk, gigabytes when np.load believes it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for name, array in arrays.items():
            member = io.BytesIO()
            if name == key:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "<i8", "fortran_order": False, "shape": shape})
                member.write(bytes(64 << 10))
            else:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))  # the same bytes every run
            zipped.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# ------------------------------------------------------------------ training runs

def runs(out: Path, work: Path) -> None:
    good = work / "run"
    train(TrainConfig(epochs=1, model="mlp:4", eval_chips=0), good, progress=False)
    (good / "metrics.json").unlink()

    def copy(name: str) -> Path:
        target = out / name
        shutil.copytree(good, target)
        return target

    state = torch.load(good / "checkpoint.pt", weights_only=True)
    torch.save({**state, "model": OpenMarker()}, copy("run-malicious-checkpoint") / "checkpoint.pt")
    data = (good / "checkpoint.pt").read_bytes()
    (copy("run-truncated-checkpoint") / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    other = copy("run-checkpoint-of-another-model")
    config = yaml.safe_load((other / "config.yaml").read_text(encoding="utf-8"))
    (other / "config.yaml").write_text(yaml.safe_dump({**config, "model": "mlp:8"}, sort_keys=False), encoding="utf-8")
    (copy("run-missing-checkpoint") / "checkpoint.pt").unlink()
    unknown = copy("run-config-with-unknown-option")
    (unknown / "config.yaml").write_text(yaml.safe_dump({**config, "learning_rate": 0.1}, sort_keys=False),
                                         encoding="utf-8")
    torch.save({**state, "format": 99}, copy("run-checkpoint-format-99") / "checkpoint.pt")
    model = dict(state["model"])
    weight = next(key for key in model if key.endswith("weight"))
    model[weight] = model[weight].clone()
    model[weight][0, 0] = float("nan")
    torch.save({**state, "model": model}, copy("run-checkpoint-with-nan-weight") / "checkpoint.pt")


# ------------------------------------------------------------------ datasets

def idx(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


IDX_IMAGES_HEADER = (0x0803).to_bytes(4, "big")
"""The magic number of an IDX file of unsigned-byte images (3 dimensions follow)."""


def mnist_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte": idx(rng.integers(0, 256, size=(6, 4, 4))),
            "train-labels-idx1-ubyte": idx(rng.integers(0, 10, size=6)),
            "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, size=(4, 4, 4))),
            "t10k-labels-idx1-ubyte": idx(rng.integers(0, 10, size=4))}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def datasets(out: Path) -> None:
    files = mnist_files()
    write_files(out / "dataset-mnist-truncated-images",
                {**files, "train-images-idx3-ubyte": files["train-images-idx3-ubyte"][:40]})
    write_files(out / "dataset-mnist-labels-with-image-magic",
                {**files, "train-labels-idx1-ubyte": idx(np.zeros((6, 1, 1)))})
    write_files(out / "dataset-mnist-missing-test-labels",
                {k: v for k, v in files.items() if k != "t10k-labels-idx1-ubyte"})
    write_files(out / "dataset-mnist-label-out-of-range",
                {**files, "t10k-labels-idx1-ubyte": idx(np.array([1, 2, 12, 3]))})
    broken_gzip = bytearray(gzip.compress(files["train-images-idx3-ubyte"]))
    broken_gzip[20:30] = b"\xff" * 10
    write_files(out / "dataset-mnist-corrupt-gzip",
                {**{k: v for k, v in files.items() if k != "train-images-idx3-ubyte"},
                 "train-images-idx3-ubyte.gz": bytes(broken_gzip)})
    write_files(out / "dataset-mnist-without-dataset-files",
                {"README.txt": b"This folder holds no MNIST files.\n"})
    rng = np.random.default_rng(1)
    batch = pickle.dumps({b"data": rng.integers(0, 256, size=(1, 3072), dtype=np.uint8), b"labels": [3]}, protocol=2)
    cifar = {f"data_batch_{i}": batch for i in range(2, 6)} | {"test_batch": batch}
    write_files(out / "dataset-cifar10-malicious-pickle",
                {"data_batch_1": pickle.dumps({b"data": OpenMarker(), b"labels": [0]}, protocol=2), **cifar})
    write_files(out / "dataset-cifar10-text-instead-of-pickle",
                {"data_batch_1": b"these are not the pickled batches you are looking for\n", **cifar})
    huge = IDX_IMAGES_HEADER + b"".join(int(d).to_bytes(4, "big") for d in (4_000_000_000, 28, 28))
    write_files(out / "dataset-mnist-huge-declared-images",
                {**files, "train-images-idx3-ubyte": huge + bytes(256)})
    write_files(out / "dataset-mnist-gzip-bomb",
                {**{k: v for k, v in files.items() if k != "train-images-idx3-ubyte"},
                 "train-images-idx3-ubyte.gz": gzip.compress(huge + bytes(4 << 20), mtime=0)})
    (out / "dataset-root-is-a-file.txt").write_text("a file where a dataset folder was expected\n", encoding="utf-8")


# ------------------------------------------------------------------ NIR graphs

def nir_graphs(out: Path) -> None:
    import nir

    from neurosim.export.nir_graph import to_nir, write_nir
    from neurosim.nn import build_model

    torch.manual_seed(0)
    graph = to_nir(build_model("mlp:4", (1, 8, 8), 10, 3))
    write_nir(graph, out / "nir-float-model-as-artifact.nir", overwrite=True)
    data = (out / "nir-float-model-as-artifact.nir").read_bytes()
    (out / "nir-truncated.nir").write_bytes(data[: len(data) // 2])
    (out / "nir-not-hdf5.nir").write_text("a text file where a NIR graph was expected\n", encoding="utf-8")
    delay = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "delay": nir.Delay(np.ones(3)),
                                "output": nir.Output(np.array([3]))},
                         edges=[("input", "delay"), ("delay", "output")])
    write_nir(delay, out / "nir-unsupported-node.nir", overwrite=True)
    nodes = dict(graph.nodes)
    hidden = nodes["block0.neuron"]
    nodes["block0.recurrent"] = nir.Linear(np.eye(len(np.ravel(hidden.tau))))
    recurrent = nir.NIRGraph(nodes=nodes, edges=list(graph.edges) + [("block0.neuron", "block0.recurrent"),
                                                                     ("block0.recurrent", "block0.neuron")])
    write_nir(recurrent, out / "nir-recurrent.nir", overwrite=True)
    nir_bomb(out / "nir-float-model-as-artifact.nir", out / "nir-affine-declares-huge-weight.nir")


def nir_bomb(good: Path, target: Path) -> None:
    """``good`` with the first Affine's weight declared as 48 x 12,800,000 float64 (4.9 GB),
    gzip-compressed zeros: chunks never written read as the fill value 0, so the file stays a
    few KB, and nir.read would allocate the whole array to read it."""
    import h5py

    shutil.copyfile(good, target)
    with h5py.File(target, "r+") as handle:
        node = handle["node/nodes/block0.synapse"]
        del node["weight"]
        node.create_dataset("weight", shape=(48, 12_800_000), dtype="<f8", chunks=(1, 1 << 17),
                            compression="gzip", fillvalue=0.0)


GENERATED_PREFIXES = ("artifact-", "run-", "dataset-", "nir-")


def main() -> None:
    for entry in HERE.iterdir():
        if entry.name.startswith(GENERATED_PREFIXES):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        good = good_artifact(work / "artifact")
        artifacts(HERE, good)
        runs(HERE, work)
        datasets(HERE)
        nir_graphs(HERE)
    print(f"wrote {sum(1 for e in HERE.iterdir() if e.name.startswith(GENERATED_PREFIXES))} generated entries "
          f"in {HERE}")


if __name__ == "__main__":
    main()
