"""Interruption, output folders that cannot be written, no code on load, numerical faults.

Signals go to real ``python -m neurosim`` processes once their work is under way (a first
checkpoint, a first result row, the artifact's temporary folder); afterwards the files on disk
are checked: the last complete checkpoint / artifact / result rows intact, no temporary files,
one line on stderr saying what was kept and the command that resumes, and that command run to
the end.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import pickle
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neurosim.cli import main
from neurosim.device import load_profile
from neurosim.engine import IntegerEngine
from neurosim.errors import NeurosimError, OutputError, TrainingDiverged
from neurosim.export import Deployment, compile_model, load_deployment
from neurosim.files import atomic_write, write_text
from neurosim.interrupts import Interrupted, handle_signals, held_signals
from neurosim.train import TrainConfig, load_run, train
from neurosim.train.datasets import load_digits
from neurosim.train.trainer import Trainer, build_for, load_checkpoint, non_finite_state

ROOT = Path(__file__).resolve().parents[1]
NEUROSIM = [sys.executable, "-m", "neurosim"]


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (``.NAME.<random>.tmp``) anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0, poll: float = 0.01) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended (status {process.returncode}) before the work was under way: "
                        f"{process.stderr.read() if process.stderr else ''}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("the work did not start in time")
        time.sleep(poll)


def interrupted_line(stderr: str, signame: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signame}"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def resume_argv(line: str) -> list[str]:
    """The command after 'resume with: ', as an argv for this Python."""
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "neurosim" and command[-1] == "--resume"
    return [*NEUROSIM, *command[1:]]


# ------------------------------------------------------------------ signals held during writes

def test_a_signal_during_an_atomic_write_is_held_until_the_file_is_complete(tmp_path):
    path = tmp_path / "data.bin"
    write_text(path, "old")

    def writer(handle):
        handle.write(b"first half, ")
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write
        handle.write(b"second half")

    with handle_signals():
        with pytest.raises(Interrupted) as info:
            atomic_write(path, writer)
    assert info.value.signum == signal.SIGTERM and info.value.exit_status == 143
    assert path.read_bytes() == b"first half, second half"  # finished, then stopped
    assert not leftovers(tmp_path)


def test_a_second_signal_is_not_held_and_the_old_file_survives(tmp_path):
    path = tmp_path / "data.bin"
    write_text(path, "old")

    def writer(handle):
        handle.write(b"new")
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the user insists
        handle.write(b" never written")

    before = signal.getsignal(signal.SIGINT)
    with handle_signals():
        with pytest.raises(Interrupted):
            atomic_write(path, writer)
    assert path.read_text() == "old" and not leftovers(tmp_path)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_held_signals_without_handlers_change_nothing():
    with held_signals():
        pass  # no handler installed: a library user's Ctrl-C behaves as Python's default


# ------------------------------------------------------------------ train, sweep, export

def test_sigint_during_train_keeps_the_last_checkpoint_and_the_printed_command_resumes(tmp_path):
    out = tmp_path / "run"
    args = [*NEUROSIM, "train", "--model", "mlp:16", "--profile", "ideal", "--epochs", "3", "--eval-chips", "0",
            "--seed", "3", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "checkpoint.pt").exists(), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    line = interrupted_line(stderr, "SIGINT")
    state = load_checkpoint(out / "checkpoint.pt")
    assert 1 <= state["epoch"] < 3, "the signal should have arrived during training"
    assert f"kept {out / 'checkpoint.pt'} (epoch {state['epoch']} of 3)" in line
    assert not leftovers(tmp_path) and not (out / "metrics.json").exists()
    kept_history = state["history"]

    resumed = subprocess.run(resume_argv(line), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][:len(kept_history)] == kept_history  # nothing lost or redone differently


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    train(TrainConfig(epochs=1, model="mlp:16", eval_chips=0), folder / "run", progress=False)
    model, config, _ = load_run(folder / "run")
    artifact = compile_model(model, config.profile, metadata={"training": config.to_dict()}).save(folder / "artifact")
    return folder / "run", artifact


def read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_sigterm_during_sweep_keeps_complete_rows_and_the_printed_command_resumes(small_run, tmp_path):
    _, artifact = small_run
    out = tmp_path / "sweep"
    args = [*NEUROSIM, "sweep", str(artifact), "--scale", "0,1,16", "--instances", "4", "--chunk", "1",
            "--out", str(out), "--no-progress"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.csv"
    wait_for(lambda: results.exists() and results.read_bytes().count(b"\n") >= 3, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    line = interrupted_line(stderr, "SIGTERM")
    data = results.read_bytes()
    assert data.endswith(b"\n")  # no torn line: rows are written whole
    kept = read_rows(results)
    assert len({len(row) for row in kept}) == 1 and 3 <= len(kept) < 1 + 12
    assert f"kept {len(kept) - 1} complete result rows in {results}" in line
    assert not leftovers(tmp_path) and not (out / "summary.csv").exists()

    resumed = subprocess.run(resume_argv(line), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(results)
    assert rows[:len(kept)] == kept  # the kept rows untouched
    assert sorted((int(r[0]), int(r[1])) for r in rows[1:]) == [(p, k) for p in range(3) for k in range(4)]


def test_sigint_during_export_leaves_a_complete_artifact_and_no_temporary_folder(small_run, tmp_path):
    run, _ = small_run
    target = tmp_path / "artifact"
    assert main(["export", str(run), "--out", str(target)]) == 0  # an old artifact to replace
    old_manifest = (target / "manifest.yaml").read_bytes()
    for attempt in range(8):  # the save lasts milliseconds: catch its temporary folder
        process = subprocess.Popen([*NEUROSIM, "export", str(run), "--out", str(target), "--force"], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and not any(p.name.startswith(".artifact.") and p.name.endswith(".tmp")
                                                 for p in tmp_path.iterdir()):
            time.sleep(0.0005)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
        if process.returncode == 130:
            break
        assert process.returncode == 0, stderr  # finished before the signal: try again
    else:
        pytest.skip("the export always finished before the signal arrived")
    line = interrupted_line(stderr, "SIGINT")
    assert f"{target} holds a complete artifact" in line
    loaded = load_deployment(target)  # complete and verified (checksums)
    assert len(loaded.layers) == 2 and (target / "manifest.yaml").read_bytes() != b""
    assert old_manifest  # the old one was complete too; whichever is there now is whole
    assert not leftovers(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


# ------------------------------------------------------------------ output folders that cannot be written

def test_an_output_path_through_a_regular_file_is_one_clear_line(small_run, tmp_path, capsys):
    run, artifact = small_run
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    words = f"cannot create output folder ({blocker} is a file, not a folder)"  # met making the lock's folder
    for argv in (["train", "--epochs", "1", "--model", "mlp:8", "--out", str(blocker / "run")],
                 ["export", str(run), "--out", str(blocker / "art")],
                 ["sweep", str(artifact), "--scale", "1", "--instances", "1", "--out", str(blocker / "sw")]):
        assert main([*argv, "--no-progress"] if argv[0] != "export" else argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(blocker) in err[0] and words in err[0], err
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the path-through-a-file "
                                              "and file-size-limit tests cover this case")
def test_a_read_only_output_folder_is_one_clear_line(small_run, tmp_path, capsys):
    run, artifact = small_run
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for argv in (["train", "--epochs", "1", "--model", "mlp:8", "--out", str(locked), "--no-progress"],
                     ["export", str(run), "--out", str(locked / "art")],
                     ["sweep", str(artifact), "--scale", "1", "--instances", "1", "--out", str(locked), "--no-progress"]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and str(locked) in err[0] and "Permission denied" in err[0], err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_during_training_keeps_what_was_written_and_says_so(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([*NEUROSIM, "train", "--model", "mlp:16", "--epochs", "1", "--eval-chips", "0",
                             "--out", str(out), "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, preexec_fn=_file_size_limit(8192))
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and f"{out / 'checkpoint.pt'}: cannot write (File too large" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]  # complete, and no temporary file
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "mlp:16"


# ------------------------------------------------------------------ nothing user-supplied is executed

class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_malicious_pickles_disguised_as_a_checkpoint_and_an_artifact_are_refused(small_run, tmp_path, capsys):
    import hashlib
    import shutil
    run, artifact = small_run
    marker = tmp_path / "EXECUTED"
    evil_run = tmp_path / "run"
    shutil.copytree(run, evil_run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**state, "model": _Marker(marker)}, evil_run / "checkpoint.pt")
    evil_artifact = tmp_path / "artifact"
    shutil.copytree(artifact, evil_artifact)
    blob = pickle.dumps({"block0.weight": _Marker(marker)})
    (evil_artifact / "tensors.npz").write_bytes(blob)
    manifest = yaml.safe_load((evil_artifact / "manifest.yaml").read_text())
    manifest["tensors"]["sha256"] = hashlib.sha256(blob).hexdigest()  # the checksum does not save it
    (evil_artifact / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    for argv, words in ((["export", str(evil_run), "--out", str(tmp_path / "x")], "refused unexecuted"),
                        (["train", "--config", str(evil_run / "config.yaml"), "--out", str(evil_run), "--resume"],
                         "refused unexecuted"),
                        (["run", str(evil_artifact)], "pickled Python objects, refused unexecuted")):
        assert main(argv) == 2
        assert words in capsys.readouterr().err
        assert not marker.exists()
    assert pickle.loads(blob) and marker.exists()  # the payload is real: plain unpickling runs it


def test_no_loader_can_execute_what_it_reads():
    """Every call in neurosim/ that reads user data uses a non-executing form."""
    calls = []
    for path in (ROOT / "neurosim").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, name, keywords, ast.unparse(node)))
    for file, name, keywords, text in calls:
        assert name not in ("eval", "exec", "pickle.load", "pickle.loads", "marshal.loads"), f"{file}: {text}"
        if name == "torch.load":
            assert keywords.get("weights_only") == "True", f"{file}: {text}"
        if name in ("np.load", "numpy.load"):
            assert keywords.get("allow_pickle") == "False", f"{file}: {text}"
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            assert name == "yaml.load" and keywords.get("Loader") == "parser.strict", f"{file}: {text}"
    assert any(name == "torch.load" for _, name, _, _ in calls)


# ------------------------------------------------------------------ numerical faults

def test_training_that_diverges_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    # full-batch Adam with an enormous learning rate: epoch 1 is one step that makes the weights
    # ~1e35, and the loss of epoch 2 overflows to inf
    assert main(["train", "--model", "mlp:16", "--lr", "1e35", "--batch-size", "2000", "--epochs", "3",
                 "--eval-chips", "0", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged at epoch 2, step 1: the loss is inf"), err
    assert f"kept the last good checkpoint {out / 'checkpoint.pt'} (epoch 1)" in err[0]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml"]  # no metrics, no temp


def test_an_optimiser_step_beyond_float32_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--model", "mlp:8", "--lr", "1e38", "--epochs", "2", "--eval-chips", "0",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epoch 1, step 0: the optimiser step overflows" in err[0], err
    assert "stopped before its first checkpoint" in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_threshold_that_becomes_infinite_stops_training_at_that_step():
    digits = load_digits()
    config = TrainConfig(epochs=1, model="mlp:8", eval_chips=0, noise=False, neuron={"learn_threshold": True})
    profile = load_profile(config.profile)
    model = build_for(config, profile, digits.input_shape, digits.num_classes)
    trainer = Trainer(model, profile, config, digits, progress=False)
    threshold = next(p for name, p in model.named_parameters() if name.endswith("threshold"))

    def poison(optimizer, args, kwargs):  # an inf threshold fires nothing: the loss stays finite
        if trainer.global_step == 2:
            with torch.no_grad():
                threshold.fill_(math.inf)
    trainer.optimizer.register_step_post_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 2: blocks\.0\.node\.threshold became NaN or inf"):
        trainer.train_epoch()
    assert non_finite_state(model) == "blocks.0.node.threshold"


# ------------------------------------------------------------------ integer overflow in the engine

@pytest.fixture(scope="module")
def overflowing_artifact(tmp_path_factory):
    profile = load_profile("hardreset-noisy")
    layers = [{"weight": np.full((2, 64), 127, dtype=np.int64), "threshold": 30000},
              {"weight": np.ones((10, 2), dtype=np.int64)}]
    deployment = Deployment.from_integers(profile, layers, 4, (1, 8, 8), metadata={"training": {"dataset": "digits"}})
    x = torch.ones(1, 1, 8, 8)
    assert float(IntegerEngine(deployment).run(x).counts["block0"].saturations.sum()) == 8  # really overflows
    return deployment.save(tmp_path_factory.mktemp("overflow") / "artifact")


def test_run_reports_overflow_per_layer_and_strict_makes_it_an_error(overflowing_artifact, small_run, capsys):
    assert main(["run", str(overflowing_artifact), "--chips", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = next(line for line in out.splitlines() if line.startswith("integer overflow"))
    assert report.startswith("integer overflow (saturation/wrap events per sample): block0 ")
    assert "readout" not in report  # only the layer that overflowed
    assert main(["run", str(overflowing_artifact), "--chips", "2", "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "integer overflow (--strict)" in err[0] and "block0" in err[0], err
    _, good = small_run
    assert main(["run", str(good), "--chips", "2", "--strict", "--no-progress"]) == 0
    assert "integer overflow: none" in capsys.readouterr().out


def test_sweep_strict_stops_at_the_first_overflowing_chip_and_keeps_its_rows(overflowing_artifact, tmp_path, capsys):
    assert main(["sweep", str(overflowing_artifact), "--scale", "0,1", "--instances", "2", "--chunk", "1",
                 "--out", str(tmp_path / "lenient"), "--no-progress"]) == 0
    rows = read_rows(tmp_path / "lenient" / "results.csv")
    assert all(float(row[rows[0].index("saturations_per_sample")]) > 0 for row in rows[1:])
    capsys.readouterr()
    assert main(["sweep", str(overflowing_artifact), "--scale", "0,1", "--instances", "2", "--chunk", "1",
                 "--out", str(tmp_path / "strict"), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "point 0 (scale=0), chip 0" in err[0] and "--strict" in err[0], err
    assert len(read_rows(tmp_path / "strict" / "results.csv")) == 2  # header and the row that overflowed
