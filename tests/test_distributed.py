"""Training under torchrun: DistributedDataParallel on gloo, disjoint chip streams per rank, metrics
reduced over ranks, rank 0 alone writing, and exact resume (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurosim.train import TrainConfig, Trainer, build_for
from neurosim.train.datasets import load_dataset
from neurosim.train.distributed import ProcessGroup
from neurosim.train.trainer import training_chip_index
from neurosim.device import load_profile

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "mlp:32", "--epochs", "2", "--no-progress", "--eval-chips", "2", "--batch-size", "64"]


def neurosim_train(out: Path, *args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node", str(processes)]
    command = [sys.executable, *launcher, "-m", "neurosim", "train", *SMALL, *args, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_two_processes_compute_the_one_process_gradient(tmp_path):
    """Ideal chip, no BN: DDP with the loss scaled to the global batch follows the one-process
    run to float rounding, so losses and accuracy agree; rank 0 alone reports and writes."""
    one = neurosim_train(tmp_path / "one", "--profile", "ideal")
    two = neurosim_train(tmp_path / "two", "--profile", "ideal", processes=2)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert b["processes"] == 2 and a["processes"] == 1
    for x, y in zip(a["history"], b["history"], strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 2 / 360  # at most two test images flip
    assert two.stdout.count("test accuracy:") == 1 and "on 2 processes" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.json"]
    assert "test accuracy:" in one.stdout


def test_noisy_two_process_run_lands_in_the_one_process_band_and_resumes_exactly(tmp_path):
    """Chip in the loop (each rank its own chips) with seed 001's gradient scaling (R averaged over
    ranks): same accuracy band as one process; a resumed 2-process run ends on the same weights."""
    options = ["--profile", "hardreset-noisy", "--grad-scaling", "0.1"]
    neurosim_train(tmp_path / "one", *options)
    neurosim_train(tmp_path / "two", *options, processes=2)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert a["test_accuracy"] > 0.5
    assert abs(a["test_accuracy"] - b["test_accuracy"]) < 0.08
    assert abs(a["test_accuracy_noisy"] - b["test_accuracy_noisy"]) < 0.08

    part = tmp_path / "part"
    neurosim_train(part, *options, "--epochs", "1", processes=2)
    neurosim_train(part, *options, "--resume", processes=2)
    resumed = torch.load(part / "checkpoint.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in straight.items():
        assert torch.equal(resumed[name], tensor), name

    wrong = subprocess.run([sys.executable, "-m", "neurosim", "train", *SMALL, *options, "--epochs", "3",
                            "--resume", "--out", str(part)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1 and "2 process(es)" in wrong.stderr and "Traceback" not in wrong.stderr


def test_ranks_train_on_disjoint_chip_streams():
    """Rank r of W trains step g on chip g·W + r: no chip is shared between ranks or steps, and
    one process keeps chip index = step."""
    ranks = [[training_chip_index(step, ProcessGroup(r, 3)) for step in range(6)] for r in range(3)]
    assert sorted(sum(ranks, [])) == list(range(18))
    profile = load_profile("hardreset-noisy")
    dataset = load_dataset("digits")
    config = TrainConfig(model="mlp:16", epochs=1)
    model = build_for(config, profile, dataset.input_shape, dataset.num_classes)
    trainer = Trainer(model, profile, config, dataset)
    assert [trainer.training_chip(step).chips.indices for step in range(4)] == [(0,), (1,), (2,), (3,)]
