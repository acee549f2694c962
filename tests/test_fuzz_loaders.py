"""Property-based tests of the two loaders users feed by hand: profiles and artifacts.

Generated malformed inputs — arbitrary text and bytes, valid documents with values replaced,
keys deleted or added at random places, byte-level damage, tensors of random shapes and dtypes
behind a correct checksum — must give either a valid object or the loader's own error
(:class:`ProfileError` / :class:`ArtifactError`): never another exception type, a crash or a
hang. An artifact the loader accepts must also run on the integer engine. Every load is also
held to a CPU-time bound, and hostile YAML at the size limit to a time and a memory bound.
"""

from __future__ import annotations

import copy
import hashlib
import io
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neurosim.device import load_profile, sample_chips
from neurosim.device.loading import MAX_FILE_BYTES, builtin_profiles, read_yaml
from neurosim.device.profile import DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.errors import ArtifactError, ProfileError
from neurosim.export import Deployment, load_deployment

LOAD_CPU_SECONDS = 2.0
"""CPU time one load of a generated input may take (they take milliseconds; the bound catches
a hang or a blow-up without depending on how busy the machine is)."""

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["nan", ".inf", "1e999", "hard", "soft", "lif", "shift", "multiply", "int64",
                                     "linear", "conv2d", "tensors.npz", "../tensors.npz", "/etc/passwd"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=8)


def key_paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in nested dicts and lists, the root included."""
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += key_paths(value, (*prefix, i))
    return found


def mutated(data: Any, draw, changes: int, keep: tuple = ()) -> Any:
    """``data`` with ``changes`` random edits: a value replaced, a key deleted, a key added;
    paths under a top-level key in ``keep`` are left alone."""
    data = copy.deepcopy(data)
    for _ in range(changes):
        path = draw(st.sampled_from([p for p in key_paths(data) if not (p and p[0] in keep)] or [()]))
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if operation == "replace":
                data = draw(VALUES)
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if operation == "replace":
            parent[last] = draw(VALUES)
        elif operation == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
        elif isinstance(parent[last], list):
            parent[last].append(draw(VALUES))
    return data


def damaged(blob: bytes, draw) -> bytes:
    """``blob`` with 1-4 byte-level edits: a bit flipped, bytes deleted, inserted or cut off."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if operation == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif operation == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif operation == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:]
    return bytes(data)


def outcome(text: str) -> None:
    """Count what a generated input led to (``pytest --hypothesis-show-statistics`` lists it)."""
    if currently_in_test_context():
        event(text)


def timed(load, *args):
    """``load(*args)`` and the CPU seconds it took."""
    start = time.process_time()
    try:
        return load(*args), time.process_time() - start
    finally:
        assert time.process_time() - start < LOAD_CPU_SECONDS, f"{load.__name__} took too long"


# ------------------------------------------------------------------ profiles

def load_profile_text(data: bytes) -> DeviceProfile | None:
    """Load ``data`` as a profile file; returns the profile, or None after a ProfileError.
    Any other exception fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.yaml"
        path.write_bytes(data)
        try:
            profile, _ = timed(load_profile, path)
        except ProfileError as exc:
            assert str(path) in str(exc) or "extends" in str(exc)
            outcome("refused: " + str(exc).replace(str(path), "").lstrip(": ").split(":")[0][:40])
            return None
    outcome("loaded")
    assert isinstance(profile, DeviceProfile)
    return profile


BUILTIN_DATA = {name: yaml.safe_load(path.read_text(encoding="utf-8")) for name, path in builtin_profiles().items()}
BUILTIN_BYTES = {name: path.read_bytes() for name, path in builtin_profiles().items()}


@FUZZ
@given(st.one_of(st.text(max_size=400).map(lambda t: t.encode("utf-8")), st.binary(max_size=400)))
def test_profile_loader_on_arbitrary_text_and_bytes(data):
    load_profile_text(data)


@FUZZ
@given(st.sampled_from(sorted(BUILTIN_DATA)), st.integers(1, 4), st.data())
def test_profile_loader_on_profiles_with_random_edits(name, changes, data):
    document = mutated(BUILTIN_DATA[name], data.draw, changes)
    profile = load_profile_text(yaml.safe_dump(document, allow_unicode=True).encode("utf-8"))
    if profile is not None:  # what the loader accepts is a valid profile that round-trips
        assert DeviceProfile.model_validate(profile.to_dict()) == profile


@FUZZ
@given(st.sampled_from(sorted(BUILTIN_BYTES)), st.data())
def test_profile_loader_on_damaged_profile_files(name, data):
    load_profile_text(damaged(BUILTIN_BYTES[name], data.draw))


# ------------------------------------------------------------------ artifacts

def good_deployments() -> dict[str, Deployment]:
    rng = np.random.default_rng(0)
    profile = load_profile("hardreset-noisy")
    dense = Deployment.from_integers(profile, [
        {"weight": rng.integers(-127, 128, size=(4, 64)), "bias": rng.integers(-50, 50, size=4), "threshold": 300},
        {"weight": rng.integers(-127, 128, size=(10, 4))}], 4, (1, 8, 8), metadata={"training": {"dataset": "digits"}})
    conv = Deployment.from_integers(load_profile("xylo-like"), [
        {"weight": rng.integers(-127, 128, size=(3, 1, 3, 3)), "threshold": 200, "padding": 1, "pool": 2},
        {"weight": rng.integers(-127, 128, size=(5, 12))}], 3, (1, 4, 4))
    return {"dense": dense, "conv": conv}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-artifacts")
    return {name: deployment.save(folder / name) for name, deployment in good_deployments().items()}


def load_artifact_files(manifest: bytes, tensors: bytes) -> Deployment | None:
    """Load an artifact made of these two files; returns the deployment (after running it on
    the engine) or None after an ArtifactError. Any other exception fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "artifact"
        folder.mkdir()
        (folder / "manifest.yaml").write_bytes(manifest)
        (folder / "tensors.npz").write_bytes(tensors)
        try:
            deployment, _ = timed(load_deployment, folder)
        except ArtifactError as exc:
            assert str(folder) in str(exc)
            reason = str(exc).replace(str(folder), "").lstrip(": /").removeprefix("manifest.yaml: ")
            outcome("refused: " + reason.split(":")[0][:40])
            return None
    outcome("loaded")
    # what the loader accepts must run: nominal chip and two sampled chips with their noise
    # (a consistent but huge network would only be slow, so those are not run here)
    neurons = sum(int(np.prod(layer.output_shape)) for layer in deployment.layers)
    if deployment.timesteps > 64 or neurons > 100_000:
        outcome("loaded, too large to run here")
        return deployment
    x = torch.rand(2, *deployment.input_shape)
    chips = sample_chips(deployment.profile, deployment_shapes(deployment), n=2, seed=0)
    for engine in (IntegerEngine(deployment), IntegerEngine(deployment, chips)):
        result = engine.run(x)
        assert result.logits.shape[-1] == deployment.num_classes
        assert bool(torch.isfinite(result.logits).all())
    return deployment


def files_of(folder: Path) -> tuple[dict, bytes, dict[str, np.ndarray]]:
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text(encoding="utf-8"))
    blob = (folder / "tensors.npz").read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return manifest, blob, arrays


def with_checksum(manifest: dict, blob: bytes) -> bytes:
    """The manifest with tensors.sha256 set for ``blob`` (so the damage gets past the checksum)."""
    manifest = copy.deepcopy(manifest)
    if isinstance(manifest.get("tensors"), dict):
        manifest["tensors"]["sha256"] = hashlib.sha256(blob).hexdigest()
    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True).encode("utf-8")


@FUZZ
@given(st.sampled_from(["dense", "conv"]), st.integers(1, 3), st.data())
def test_artifact_loader_on_manifests_with_random_edits(artifacts, name, changes, data):
    manifest, blob, _ = files_of(artifacts[name])
    document = mutated(manifest, data.draw, changes)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")
    load_artifact_files(text, blob)


@FUZZ
@given(st.sampled_from(["dense", "conv"]), st.integers(1, 3), st.data())
def test_artifact_loader_on_layer_graphs_with_random_edits(artifacts, name, changes, data):
    manifest, blob, _ = files_of(artifacts[name])
    document = mutated(manifest, data.draw, changes, keep=("profile", "format", "format_version", "tensors"))
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")
    load_artifact_files(text, blob)


@FUZZ
@given(st.sampled_from(["dense", "conv"]), st.data())
def test_artifact_loader_on_damaged_manifest_bytes(artifacts, name, data):
    manifest_bytes = (artifacts[name] / "manifest.yaml").read_bytes()
    load_artifact_files(damaged(manifest_bytes, data.draw), (artifacts[name] / "tensors.npz").read_bytes())


DTYPES = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float32,
                          np.float64, np.bool_, np.complex64])


@FUZZ
@given(st.sampled_from(["dense", "conv"]), st.data())
def test_artifact_loader_on_tensors_of_random_shape_and_dtype(artifacts, name, data):
    manifest, _, arrays = files_of(artifacts[name])
    key = data.draw(st.sampled_from(sorted(arrays)))
    arrays = dict(arrays)
    if data.draw(st.booleans()):
        arrays[key] = data.draw(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)))
    else:  # the manifest's shape and dtype, other values (extremes included)
        old = arrays[key]
        arrays[key] = data.draw(hnp.arrays(old.dtype, old.shape, elements=hnp.from_dtype(old.dtype)))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    load_artifact_files(with_checksum(manifest, buffer.getvalue()), buffer.getvalue())


@FUZZ
@given(st.sampled_from(["dense", "conv"]), st.data())
def test_artifact_loader_on_damaged_tensor_bytes_behind_a_valid_checksum(artifacts, name, data):
    manifest, blob, _ = files_of(artifacts[name])
    bad = damaged(blob, data.draw)
    load_artifact_files(with_checksum(manifest, bad), bad)


def test_the_undamaged_artifacts_load_and_run(artifacts):
    for name, folder in artifacts.items():
        manifest, blob, _ = files_of(folder)
        assert load_artifact_files(with_checksum(manifest, blob), blob) is not None, name


# ------------------------------------------------------------------ hostile YAML: time and memory

def _bomb(fan_out: int, levels: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * fan_out)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan_out)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "a list of 260k items": "- 1\n" * (MAX_FILE_BYTES // 4 - 1),
    "a flow list of 520k items": "[" + "1," * (MAX_FILE_BYTES // 2 - 2) + "]",
    "a mapping of 70k keys": "".join(f"k{i}: {i}\n" for i in range(70_000)),
    "a string of one mebibyte": "a: " + "x" * (MAX_FILE_BYTES - 8),
    "an anchor aliased 60k times": "a: &a [1, 2, 3]\n" + "".join(f"b{i}: *a\n" for i in range(60_000)),
    "a billion laughs": _bomb(10, 9),
    "a wide alias bomb": _bomb(1000, 3),
    "nesting 100k deep": "[" * 100_000,
    "nested mappings 700 deep": "".join("  " * i + f"k{i}:\n" for i in range(700)),
    "keys that are deep lists": "? " + "[" * 10_000 + "\n: 1\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_refused_within_a_time_and_memory_bound(tmp_path, name):
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE[name], encoding="utf-8")
    assert path.stat().st_size <= MAX_FILE_BYTES  # each is at most what the size check lets through
    start = time.process_time()
    try:
        read_yaml(path)
    except ProfileError as exc:
        assert str(path) in str(exc)
    cpu = time.process_time() - start
    tracemalloc.start()
    try:
        read_yaml(path)
    except ProfileError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cpu < 2.0, f"{name}: {cpu:.2f} s of CPU"
    assert peak < 64 << 20, f"{name}: {peak / 2 ** 20:.0f} MiB at peak"


def test_the_size_limit_comes_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"- 1\n" * (MAX_FILE_BYTES // 4 + 1))
    start = time.process_time()
    with pytest.raises(ProfileError, match="bytes"):
        read_yaml(path)
    assert time.process_time() - start < 0.5
