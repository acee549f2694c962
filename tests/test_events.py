"""Event-camera data: tonic's on-disk formats (N-MNIST binary files, DVS Gesture arrays, a generic
folder of structured arrays) written here from synthetic events, binned to frames and checked
against hand counts; frames through training, export, the integer engine (parity with the
training forward and the slow reference on every layer and step), run and sweep; and one-line
errors for folders that are missing or wrong, without tonic ever trying to download."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosim.cli import main
from neurosim.device import load_profile, sample_chips
from neurosim.device.profile import DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.engine.reference import reference_run
from neurosim.errors import DatasetError, NeurosimError
from neurosim.export import compile_model
from neurosim.train.datasets import load_dataset
from neurosim.train.events import FrameBinning
from test_export import assert_parity, model_for
from test_reference import compare

ROOT = Path(__file__).resolve().parents[1]
SENSOR = 34  # N-MNIST's 34 x 34 sensor
CLASSES = 3
DURATION_US = 300_000


# ------------------------------------------------------------------ writing tonic's formats


def nmnist_bytes(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> bytes:
    """Events in the N-MNIST binary format: 5 bytes each, x, y, then polarity (bit 7) and a
    23-bit time stamp in microseconds (no overflow markers needed below 2^23 us)."""
    assert t.max() < 1 << 23
    raw = np.zeros((len(x), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (p.astype(np.int64) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return raw.tobytes()


def synthetic_events(label: int, rng: np.random.Generator, n: int = 80) -> tuple[np.ndarray, ...]:
    """A recording whose events fall in the vertical band of the sensor that belongs to
    ``label`` (bands 0 .. CLASSES-1 from left to right), at random times, sorted by time."""
    band = SENSOR // CLASSES
    x = rng.integers(label * band, (label + 1) * band, n)
    y = rng.integers(0, SENSOR, n)
    t = np.sort(rng.integers(0, DURATION_US, n))
    p = rng.integers(0, 2, n)
    return x, y, t, p


def write_nmnist(root: Path, train_per_class: int = 12, test_per_class: int = 4, seed: int = 0) -> Path:
    """tonic's N-MNIST layout ``root/NMNIST/{Train,Test}/<digit>/<n>.bin`` of synthetic events."""
    rng = np.random.default_rng(seed)
    for split, count in (("Train", train_per_class), ("Test", test_per_class)):
        for label in range(CLASSES):
            folder = root / "NMNIST" / split / str(label)
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i:05d}.bin").write_bytes(nmnist_bytes(*synthetic_events(label, rng)))
    return root


def hand_frames(x, y, t, p, timesteps: int, downsample: int, clip: int, size: int) -> np.ndarray:
    """Frames counted by hand: bin i holds t0 + i w <= t < t0 + (i + 1) w with
    w = (t_last - t0) // T, pixel (x // k, y // k), value min(count, clip) / clip."""
    out = np.zeros((timesteps, 2, size, size))
    t0 = int(t.min())
    width = (int(t.max()) - t0) // timesteps
    for xi, yi, ti, pi in zip(x, y, t, p):
        step = (int(ti) - t0) // width
        if step < timesteps:
            out[step, int(pi), int(yi) // downsample, int(xi) // downsample] += 1
    return np.minimum(out, clip) / clip


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory) -> Path:
    return write_nmnist(tmp_path_factory.mktemp("events"))


# ------------------------------------------------------------------ loading and binning


def test_nmnist_frames_match_a_hand_count(nmnist_root, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)  # far fewer files than tonic wants: no download
    counts = load_dataset("nmnist", nmnist_root, FrameBinning(timesteps=5, downsample=2, clip=1000))
    assert counts.input_shape == (2, 17, 17) and counts.num_classes == 10
    assert tuple(counts.train.inputs.shape) == (12 * CLASSES, 5, 2, 17, 17) and len(counts.test) == 4 * CLASSES
    assert counts.train.targets.tolist() == [c for c in range(CLASSES) for _ in range(12)]  # sorted: folder, file
    # the first training file is Train/0/00000.bin, the first recording the generator drew
    events = synthetic_events(0, np.random.default_rng(0))
    want = hand_frames(*events, timesteps=5, downsample=2, clip=1000, size=17)
    got = counts.train.inputs[0].double().numpy()
    assert np.allclose(got * 1000, want * 1000)
    assert round(want.sum() * 1000) >= len(events[0]) - 1  # at most the last event fell outside the bins
    assert counts.train.inputs.dtype == torch.float32

    binary = load_dataset("nmnist", nmnist_root, FrameBinning(timesteps=5, downsample=2))
    assert torch.equal(binary.train.inputs, (counts.train.inputs > 0).float())  # clip 1: binary frames
    clipped = load_dataset("NMNIST", nmnist_root / "NMNIST", FrameBinning(timesteps=5, downsample=2, clip=2))
    assert torch.equal(clipped.train.inputs, torch.clamp(counts.train.inputs * 1000, max=2) / 2)
    assert set(torch.unique(clipped.train.inputs).tolist()) == {0.0, 0.5, 1.0}


def test_dvsgesture_and_generic_folders(tmp_path):
    rng = np.random.default_rng(1)
    gesture = tmp_path / "g" / "DVSGesture"
    recordings = {}
    for split, user in (("ibmGestureTrain", "user01_led"), ("ibmGestureTest", "user24_natural")):
        (gesture / split / user).mkdir(parents=True)
        for label in (0, 3, 10):
            x, y = rng.integers(0, 128, 50), rng.integers(0, 128, 50)
            t_ms, p = np.sort(rng.uniform(0, 1000, 50)), rng.integers(0, 2, 50)
            np.save(gesture / split / user / f"{label}.npy", np.stack([x, y, p, t_ms], axis=1))
            recordings[(split, label)] = (x, y, (t_ms * 1000).astype(np.int64), p)
    data = load_dataset("dvsgesture", tmp_path / "g", FrameBinning(timesteps=3, downsample=4, clip=100))
    assert data.input_shape == (2, 32, 32) and data.num_classes == 11
    assert data.train.targets.tolist() == [0, 10, 3]  # files in sorted name order: 0.npy, 10.npy, 3.npy
    want = hand_frames(*recordings[("ibmGestureTrain", 10)], timesteps=3, downsample=4, clip=100, size=32)
    assert np.allclose(data.train.inputs[1].double().numpy() * 100, want * 100)

    generic = tmp_path / "f"
    dtype = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
    for split in ("train", "test"):
        for name, column in (("left", 0), ("right", 9)):
            (generic / split / name).mkdir(parents=True)
            events = np.zeros(4, dtype)
            events["t"], events["x"], events["y"], events["p"] = [0, 10, 20, 30], column, [0, 1, 2, 4], [0, 1, 1, 0]
            np.save(generic / split / name / "a.npy", events)
    data = load_dataset("event-folder", generic, FrameBinning(timesteps=2))
    assert data.num_classes == 2 and data.input_shape == (2, 5, 10)  # largest y 4, largest x 9
    assert data.train.targets.tolist() == [0, 1]  # left, right
    assert data.train.inputs[1, :, :, :, 9].sum() == 3 and data.train.inputs[1, :, :, :, :9].sum() == 0


def test_broken_folders_are_one_line_errors(nmnist_root, tmp_path):
    binning = FrameBinning(timesteps=4)

    def error(name, root) -> str:
        with pytest.raises(DatasetError) as exc:
            load_dataset(name, root, binning)
        message = str(exc.value)
        assert "\n" not in message
        return message

    assert "does not exist" in error("nmnist", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "is empty" in error("nmnist", tmp_path / "empty")
    assert "needs --data-root" in error("nmnist", None)
    (tmp_path / "other" / "stuff").mkdir(parents=True)
    message = error("dvsgesture", tmp_path / "other")
    assert "no ibmGestureTrain/ and ibmGestureTest/ folders" in message and "DVSGesture" in message
    (tmp_path / "half" / "NMNIST" / "Train").mkdir(parents=True)
    assert "has Train/ but no Test/" in error("nmnist", tmp_path / "half")
    (tmp_path / "half" / "NMNIST" / "Test").mkdir()
    assert "holds no .bin event files" in error("nmnist", tmp_path / "half")
    (tmp_path / "half" / "NMNIST" / "Train" / "stray.bin").write_bytes(b"")
    assert "one folder below" in error("nmnist", tmp_path / "half")

    broken = tmp_path / "broken"
    shutil.copytree(nmnist_root, broken)
    first = broken / "NMNIST" / "Train" / "1" / "00000.bin"
    first.write_bytes(first.read_bytes()[:-2])
    message = error("nmnist", broken)
    assert message.startswith(f"nmnist: {first}: ") and "398 bytes is not a whole number of 5-byte" in message
    first.write_bytes(nmnist_bytes(np.array([40]), np.array([3]), np.array([5]), np.array([1])))
    assert "has x = 40, outside 0..33" in error("nmnist", broken)
    with pytest.raises(DatasetError, match="positive integer"):
        FrameBinning(timesteps=0)

    gesture = tmp_path / "g" / "DVSGesture"
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        (gesture / split / "user01_led").mkdir(parents=True)
        np.save(gesture / split / "user01_led" / "11.npy", np.zeros((3, 4)))
    assert "label 11 is out of range (classes 0..10)" in error("dvsgesture", tmp_path / "g")
    generic = tmp_path / "f"
    for split in ("train", "test"):
        (generic / split / "a").mkdir(parents=True)
        events = np.zeros(2, [("x", int), ("y", int), ("t", float), ("p", int)])
        np.save(generic / split / "a" / "0.npy", events)
    assert "field t is float64, expected integers" in error("event-folder", generic)


# ------------------------------------------------------------------ frames through the integer engine


NOISY = DeviceProfile.model_validate({**load_profile("hardreset-noisy").to_dict(), "name": "frames-noisy",
                                      "noise": {"thermal": {"sigma": 0.05}, "v_threshold": {"sigma": 0.02}}})


@pytest.mark.parametrize("profile", [load_profile("hardreset-noisy"), NOISY], ids=["hardreset-noisy", "noisy"])
def test_engine_matches_the_training_forward_on_frames(profile):
    model = model_for(profile, "conv:4c3-mp2-8c3s2-16", input_shape=(2, 8, 8), timesteps=4, gain=4.0)
    generator = torch.Generator().manual_seed(3)
    frames = (torch.rand(6, 4, 2, 8, 8, generator=generator) < 0.4) * torch.randint(1, 5, (6, 4, 2, 8, 8),
                                                                                     generator=generator) / 4
    result, spikes = assert_parity(model, profile, frames, n_chips=3)
    assert spikes > 0
    # frame t drives step t: the same frame at every step is the static input, other frames differ
    deployment = compile_model(model, profile)
    engine = IntegerEngine(deployment)
    still = frames[:, :1].expand(-1, 4, -1, -1, -1)
    assert torch.equal(engine.run(still, record=True).spikes["block0"], engine.run(frames[:, 0], record=True).spikes["block0"])
    assert not torch.equal(engine.run(frames, record=True).spikes["block0"],
                           engine.run(frames[:, 0], record=True).spikes["block0"])
    with pytest.raises(NeurosimError, match=r"frames \[batch, 4, 2, 8, 8\]"):
        engine.run(frames[:, :3])


def test_reference_agrees_with_the_engine_on_frames():
    profile = NOISY
    model = model_for(profile, "conv:3c3s2", input_shape=(2, 5, 5), classes=3, timesteps=3, gain=4.0)
    deployment = compile_model(model, profile)
    chips = sample_chips(profile, deployment_shapes(deployment), n=2, seed=4)
    frames = np.random.default_rng(5).integers(0, 3, (2, 3, 2, 5, 5)).astype(np.float32) / 2
    result = compare(deployment, frames, chips, batch=2)
    assert int(result.counts["block0"].spikes.sum()) > 0
    spikes = reference_run(deployment, frames)["spikes"]["block0"]
    assert not np.array_equal(spikes, reference_run(deployment, frames[:, 0])["spikes"]["block0"])


# ------------------------------------------------------------------ the commands


def test_train_export_run_and_sweep_on_event_data(nmnist_root, tmp_path, capsys):
    run, artifact = tmp_path / "run", tmp_path / "art"
    command = ["train", "--dataset", "nmnist", "--data-root", str(nmnist_root), "--downsample", "4", "--timesteps", "4",
               "--model", "conv:4c3s2-16", "--epochs", "2", "--batch-size", "6", "--lr", "0.02", "--eval-chips", "4",
               "--out", str(run)]
    trained = subprocess.run([sys.executable, "-m", "neurosim", *command], capture_output=True, text=True, cwd=ROOT,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 1 / CLASSES  # learnt something from the class-dependent bands
    assert main(["export", str(run), "--out", str(artifact)]) == 0  # in this process: one start-up less
    capsys.readouterr()
    assert main(["run", str(artifact), "--chips", "4", "--no-progress"]) == 0
    ran = capsys.readouterr().out
    # the integer engine on chips 0..3 gives the accuracy that the fake-quant forward measured on frames
    assert f"accuracy {metrics['test_accuracy_noisy']:.4f} +- {metrics['test_accuracy_noisy_std']:.4f}" in ran
    assert "12 samples" in ran and "block1" in ran

    # sweeps of the run (training forward) and of the artifact (integer engine) write the same rows
    common = ["--scale", "0,4", "--instances", "2", "--no-progress"]
    assert main(["sweep", str(run), *common, "--out", str(tmp_path / "r")]) == 0
    assert main(["sweep", str(artifact), *common, "--out", str(tmp_path / "a")]) == 0
    rows = [(tmp_path / name / "results.csv").read_text().splitlines() for name in ("r", "a")]
    assert len(rows[0]) == 1 + 2 * 2 and rows[0] == rows[1]
    capsys.readouterr()

    # a missing folder: exit 2 and one line, for train and for run
    assert main(["train", "--dataset", "nmnist", "--data-root", str(tmp_path / "nowhere"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"error: nmnist: data folder {tmp_path / 'nowhere'} does not exist"
    assert main(["run", str(artifact), "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
