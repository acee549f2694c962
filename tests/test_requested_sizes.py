"""Sizes a user asks for (reliability issue, point 3): chips and sweep instances stream in blocks
whose memory does not grow with their number, the results the same for any block size; what
cannot fit is refused up front in one line with the estimate and the memory available."""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import neurosim.memory as memory
from neurosim.cli import main
from neurosim.device import load_profile
from neurosim.engine import evaluate
from neurosim.engine.evaluate import chip_block, chip_bytes, evaluate_deployment
from neurosim.export import load_deployment
from neurosim.sweep import SweepSpec, run_sweep
from neurosim.sweep.runner import _chunks, chunk_limit
from neurosim.train import TrainConfig, train
from neurosim.train.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
LIMIT_AS = 3 << 30
"""Address-space limit of the subprocesses: far below what the sizes asked for would take."""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A real trained and exported network (digits, mlp:32, hardreset-noisy)."""
    root = tmp_path_factory.mktemp("bounds")
    train(TrainConfig(epochs=2, model="mlp:32", eval_chips=0), root / "run", progress=False)
    assert main(["export", str(root / "run"), "--out", str(root / "art")]) == 0
    return root / "art"


@pytest.fixture(scope="module")
def split():
    """The first 100 test samples of digits (enough for accuracy differences between chips)."""
    test = load_dataset("digits").test
    return dataclasses.replace(test, inputs=test.inputs[:100], targets=test.targets[:100])


def _stuck(deployment):
    """The deployment on its profile with stuck weights (every chip has its own weights) and
    energy figures (Loihi's, Davies et al. 2018)."""
    profile = load_profile("hardreset-noisy")
    faults = profile.faults.model_copy(update={"stuck_weights": 0.05})
    energy = profile.energy.model_copy(update={"per_synaptic_op_pj": 23.6, "per_spike_pj": 1.7,
                                               "per_neuron_update_pj": 52.0})
    return dataclasses.replace(deployment, profile=profile.model_copy(update={"faults": faults, "energy": energy}))


def _limited(command: list[str], **kwargs) -> subprocess.Popen:
    """``command`` in a child process under :data:`LIMIT_AS` of address space."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("NEUROSIM_BLOCK_BYTES", None)
    return subprocess.Popen(command, preexec_fn=cap, env=env, cwd=kwargs.pop("cwd", None), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


# ------------------------------------------------------------------ blocks of chips

@pytest.mark.parametrize("stuck", [False, True], ids=["own-profile", "stuck-weights"])
def test_a_report_is_the_same_bit_for_bit_in_blocks_of_any_size(artifact, split, stuck):
    deployment = load_deployment(artifact)
    deployment = _stuck(deployment) if stuck else deployment
    reports = [evaluate_deployment(deployment, split, chips=7, seed=5, batch_size=32, progress=False,
                                   first_chip=2, block=block) for block in (7, 3, 1)]
    one = reports[0]
    assert one.chip_indices == tuple(range(2, 9)) and len(set(one.layer_counts["block0"]["spikes"])) > 3  # chips differ
    for other in reports[1:]:
        assert other == one  # every per-chip list, float for float
        assert other.to_dict() == one.to_dict() and other.summary() == one.summary()


def test_chip_k_in_a_report_is_chip_k_alone(artifact, split):
    deployment = load_deployment(artifact)
    many = evaluate_deployment(deployment, split, chips=4, seed=5, batch_size=32, progress=False, block=3)
    alone = evaluate_deployment(deployment, split, chips=1, seed=5, batch_size=32, progress=False, first_chip=3)
    assert many.accuracies[3] == alone.accuracies[0]
    assert {n: {w: v[3] for w, v in c.items()} for n, c in many.layer_counts.items()} == \
        {n: {w: v[0] for w, v in c.items()} for n, c in alone.layer_counts.items()}


@pytest.mark.parametrize("stuck", [False, True], ids=["own-profile", "stuck-weights-energy"])
def test_above_the_per_chip_limit_statistics_stream_alike_in_any_blocks(artifact, split, monkeypatch, stuck):
    deployment = load_deployment(artifact)
    deployment = _stuck(deployment) if stuck else deployment
    kept = evaluate_deployment(deployment, split, chips=9, seed=5, batch_size=32, progress=False, block=9)
    monkeypatch.setattr(evaluate, "PER_CHIP_LIMIT", 4)
    streamed = [evaluate_deployment(deployment, split, chips=9, seed=5, batch_size=32, progress=False, block=b)
                for b in (9, 4, 2)]
    for report in streamed:
        assert report.statistics is not None and report.accuracies == [] and report.chips == 9
        assert report.to_dict() == streamed[0].to_dict() and report.summary() == streamed[0].summary()
    data, reference = streamed[0].to_dict(), kept.to_dict()
    assert data["per_chip"] is None and data["chip_indices"] is None and data["first_chip"] == 0
    assert data["accuracy_min"] == reference["accuracy_min"] and data["accuracy_max"] == reference["accuracy_max"]
    for key in ("accuracy_mean", "accuracy_std", "spikes_per_sample", "synops_per_sample", "saturations_per_sample",
                "energy_pj_per_sample"):
        assert data[key] == (None if reference[key] is None else pytest.approx(reference[key], rel=1e-12, abs=1e-15)), key
    assert (data["energy_pj_per_sample"] is not None) == stuck
    for name, layer in reference["layers"].items():
        for key, value in layer.items():
            assert data["layers"][name][key] == (None if value is None else pytest.approx(value, rel=1e-12)), key


def test_the_planner_keeps_a_block_small_whatever_the_chips(artifact, split):
    deployment = load_deployment(artifact)
    gib = 1 << 30
    block = memory.plan_blocks(10**7, chip_bytes(deployment, 64), available=2 * gib)
    assert 1 <= block <= (2 * gib // memory.BLOCK_SHARE) // chip_bytes(deployment, 64)
    assert block * chip_bytes(deployment, 64) <= memory.BLOCK_CAP
    assert memory.plan_blocks(10**7, chip_bytes(deployment, 64), available=100 * gib) \
        == memory.BLOCK_CAP // chip_bytes(deployment, 64)  # capped: more memory, no bigger block
    assert chip_block(deployment, 3, 64, split) <= 3
    with pytest.raises(memory.MemoryRefusal, match=r"one chip.* needs about .* of memory, .* is available"):
        memory.plan_blocks(10, per_item=5 << 20, fixed=1 << 20, available=4 << 20)


def test_available_memory_reads_the_address_space_limit():
    """RLIMIT_AS in a child bounds what available_memory reports there."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "import neurosim.memory as m; print(m.available_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert 0 < int(out) < 2 << 30


def test_run_of_ten_million_chips_streams_under_a_3gib_limit(artifact, tmp_path):
    """The engine keeps running (the bar advancing) instead of dying of MemoryError."""
    process = _limited([sys.executable, "-m", "neurosim", "run", str(artifact), "--chips", "10000000",
                        "--progress"], cwd=tmp_path)
    try:
        time.sleep(40)
        alive = process.poll() is None
        rss = [line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
               if line.startswith("VmHWM")] if alive else []
    finally:
        process.kill()
        _, err = process.communicate()
    assert alive, f"run --chips 10000000 stopped: {err[-2000:]}"
    assert "MemoryError" not in err and "Traceback" not in err
    done = [int(m.group(1)) for m in re.finditer(r"engine:.*?(\d+)/(\d+)", err)]
    assert len(done) >= 2 and done[-1] > done[0], f"no progress: {err[-500:]}"
    assert int(rss[0].split()[1]) < 2 << 20  # kB: under 2 GiB of peak resident memory


# ------------------------------------------------------------------ refusals

def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_train_of_a_huge_model_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--model", "mlp:100000000", "--epochs", "1", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "mlp:100000000" in line and "7,500,000,010 parameters" in line
    assert " GiB of memory, " in line and " is available" in line
    assert not out.exists()


def test_train_of_a_huge_model_is_refused_under_a_memory_limit(tmp_path):
    out = tmp_path / "out"
    process = _limited([sys.executable, "-m", "neurosim", "train", "--model", "mlp:100000000", "--epochs", "1",
                        "--out", str(out)], cwd=tmp_path)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    line = _one_error_line(err)
    available = line.split("of memory, ")[1].split(" is available")[0]
    assert available.endswith(("GiB", "MiB")) and float(available.split()[0]) < (3 if "GiB" in available else 3072)
    assert not out.exists()


def test_a_model_that_fits_still_trains_after_the_estimate(tmp_path):
    result = train(TrainConfig(epochs=1, model="conv:4c3-mp2-8", eval_chips=0), None, progress=False)
    assert result.metrics["epochs"] == 1


def test_run_and_sweep_of_an_artifact_too_large_for_memory_are_refused(artifact, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_memory", lambda: 64 << 10)  # 64 KiB left
    assert main(["run", str(artifact), "--chips", "5"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "one chip of this deployment" in line and "64 KiB is available" in line
    out = tmp_path / "sweep"
    assert main(["sweep", str(artifact), "--scale", "0,1", "--instances", "3", "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err)
    assert not out.exists()


# ------------------------------------------------------------------ sweeps

def test_sweep_instances_are_made_lazily():
    chunks = _chunks(2, 10**12, 3, {(0, 1)})
    assert next(chunks) == (0, [0, 2, 3]) and next(chunks) == (0, [4, 5, 6])  # no list of 10^12 instances


def test_a_sweep_chunk_is_cut_to_memory_and_rows_do_not_change(artifact, tmp_path, monkeypatch):
    base = dict(source=str(artifact), scales=[0.5, 1.0], instances=5, seed=3, batch_size=64)
    run_sweep(SweepSpec(**base, chunk=5), tmp_path / "whole", progress=False)
    monkeypatch.setenv("NEUROSIM_BLOCK_BYTES", "4000")  # chunks of 1 or 2 rows, blocks of 1 chip
    assert chunk_limit(12) <= 2
    run_sweep(SweepSpec(**base, chunk=10**9), tmp_path / "cut", progress=False)
    assert (tmp_path / "whole" / "results.csv").read_bytes() == (tmp_path / "cut" / "results.csv").read_bytes()
    assert (tmp_path / "whole" / "summary.csv").read_bytes() == (tmp_path / "cut" / "summary.csv").read_bytes()
