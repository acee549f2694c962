"""One writer per folder, and one stderr line on refusal (docs/reliability.md §6).

Two real ``python -m neurosim`` processes on the same run, sweep or artifact folder: the first is
started and, once its lock file exists, stopped with SIGSTOP (so nothing moves while we look);
the second must exit 2 with one ``error:`` line naming the folder and the first's process id,
and leave every file as it was. A holder killed with SIGKILL leaves its lock file behind, and
the next run proceeds. A results.csv holding duplicated rows (as older versions wrote when two
sweeps shared a folder) is summarised and resumed counting each (point, instance) once.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from neurosim.cli import main
from neurosim.export import compile_model
from neurosim.files import FolderBusy, lock_path, writing
from neurosim.train import TrainConfig, load_run, train

ROOT = Path(__file__).resolve().parents[1]
NEUROSIM = [sys.executable, "-m", "neurosim"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("small")
    train(TrainConfig(epochs=1, model="mlp:16", eval_chips=0), folder / "run", progress=False)
    model, config, _ = load_run(folder / "run")
    artifact = compile_model(model, config.profile, metadata={"training": config.to_dict()}).save(folder / "artifact")
    return folder / "run", artifact


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its content hash."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*NEUROSIM, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_until(condition, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the first process ended (status {process.returncode}) too early: {process.stderr.read()}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("the first process did not get under way in time")
        time.sleep(0.001)


def refused(args: list[str], target: Path, holder: int, root: Path) -> None:
    """Run ``args`` as a second process while ``holder`` is stopped holding ``target``'s lock:
    status 2, one line naming the folder and the holder's pid, nothing under ``root`` changed."""
    before = snapshot(root)
    second = subprocess.run([*NEUROSIM, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2, second.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
    assert f"{target} is being written by process {holder} (since " in lines[0], lines[0]
    assert snapshot(root) == before, "the refused process changed files"


def test_a_second_train_resume_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "mlp:16", "--profile", "ideal", "--epochs", "200", "--eval-chips", "0",
            "--out", str(out), "--no-progress"]
    first = start(args)
    try:
        wait_until(lambda: (out / "checkpoint.pt").exists(), first)
        first.send_signal(signal.SIGSTOP)
        assert lock_path(out).read_text().split()[0] == str(first.pid)
        refused([*args, "--resume"], out, first.pid, tmp_path)
        first.send_signal(signal.SIGCONT)
        first.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert lock_path(out).exists()  # left by the dead process, locked by nobody
    shorter = [("2" if a == "200" else a) for a in args]  # resume only to epoch 2 (or evaluate)
    resumed = subprocess.run([*NEUROSIM, *shorter, "--resume"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "metrics.json").exists() and not lock_path(out).exists()


def test_a_second_sweep_resume_is_refused_and_every_pair_is_written_once(small_run, tmp_path):
    _, artifact = small_run
    out = tmp_path / "sweep"
    args = ["sweep", str(artifact), "--scale", "0,1", "--instances", "6", "--chunk", "1", "--out", str(out),
            "--no-progress"]
    first = start(args)
    results = out / "results.csv"
    try:
        wait_until(lambda: results.exists() and results.read_bytes().count(b"\n") >= 2, first)
        first.send_signal(signal.SIGSTOP)
        refused([*args, "--resume"], out, first.pid, tmp_path)
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    resumed = subprocess.run([*NEUROSIM, *args, "--resume"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    with open(results, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((int(r["point"]), int(r["instance"])) for r in rows) == [(p, k) for p in range(2) for k in range(6)]
    with open(out / "summary.csv", encoding="utf-8") as handle:
        assert [int(r["instances"]) for r in csv.DictReader(handle)] == [6, 6]


def test_a_second_export_is_refused_and_the_first_finishes(small_run, tmp_path):
    run, _ = small_run
    target = tmp_path / "artifact"
    assert main(["export", str(run), "--out", str(target)]) == 0  # an artifact the two will both replace
    args = ["export", str(run), "--out", str(target), "--force"]
    first = start(args)
    try:
        wait_until(lambda: lock_path(target).exists(), first)
        first.send_signal(signal.SIGSTOP)
        refused(args, target, first.pid, tmp_path)
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]  # no lock file or temporary folder left


def test_a_refused_writer_creates_no_folders_and_the_lock_is_released(tmp_path):
    target = tmp_path / "a" / "b" / "run"
    with writing(target) as lock:
        assert lock == tmp_path / "a" / "b" / ".run.lock" and lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(FolderBusy, match=f"{target} is being written by process {os.getpid()}"):
            with writing(target):
                pass
    assert list(tmp_path.iterdir()) == []  # the folders made for the lock were empty: removed
    with writing(target):  # free again
        pass


def test_torchrun_ranks_all_stop_when_the_sweep_folder_is_held(small_run, tmp_path):
    """Under torchrun rank 0 takes the lock; when it is refused every rank stops (none waits in a
    collective for rank 0)."""
    _, artifact = small_run
    out = tmp_path / "sweep"
    with writing(out):  # held by this test process
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 "-m", "neurosim", "sweep", str(artifact), "--scale", "1", "--instances", "2",
                                 "--out", str(out), "--no-progress"], cwd=ROOT, env=ENV, capture_output=True,
                                text=True, timeout=300)
    assert result.returncode != 0
    assert f"error: {out} is being written by process {os.getpid()}" in result.stderr
    assert not out.exists()


# ------------------------------------------------------------------ duplicated result rows

def test_summary_and_resume_count_each_point_and_instance_once(small_run, tmp_path, capsys):
    _, artifact = small_run
    out = tmp_path / "sweep"
    args = ["sweep", str(artifact), "--scale", "0,4", "--instances", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    results = out / "results.csv"
    with open(results, encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    accuracy = header.index("accuracy")
    clean = {(r[0], r[1]): float(r[accuracy]) for r in rows}
    # as two concurrent writers of an older version left it: every row twice, the copies with
    # another accuracy, and the pair (1, 2) missing altogether
    kept = [r for r in rows if (r[0], r[1]) != ("1", "2")]
    doubled = kept + [r[:accuracy] + ["0.0"] + r[accuracy + 1:] for r in kept]
    with open(results, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *doubled])
    (out / "summary.csv").unlink()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    with open(results, encoding="utf-8") as handle:
        after = list(csv.reader(handle))[1:]
    assert len(after) == len(doubled) + 1 and after[-1][:2] == ["1", "2"]  # only the missing pair evaluated
    with open(out / "summary.csv", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    assert [int(r["instances"]) for r in summary] == [3, 3]
    for point, row in enumerate(summary):  # the first row of each pair, not the zero-accuracy copy
        expected = sum(clean[(str(point), str(k))] for k in range(3)) / 3
        assert float(row["accuracy_mean"]) == pytest.approx(expected)


# ------------------------------------------------------------------ one line on refusal

def test_a_pickle_posing_as_a_checkpoint_prints_one_line_in_a_real_process(small_run, tmp_path):
    run, _ = small_run
    evil = tmp_path / "run"
    shutil.copytree(run, evil)
    # a plain pickle (protocol 4), not torch's zip format: torch warns about its protocol on load
    (evil / "checkpoint.pt").write_bytes(pickle.dumps({"format": 1, "model": {}}, protocol=4))
    for args in (["export", str(evil), "--out", str(tmp_path / "artifact")],
                 ["train", "--config", str(evil / "config.yaml"), "--out", str(evil), "--resume", "--no-progress"]):
        before = snapshot(tmp_path)
        result = subprocess.run([*NEUROSIM, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {evil / 'checkpoint.pt'}: not a neurosim checkpoint"), lines[0]
        assert snapshot(tmp_path) == before


def test_library_warnings_are_dropped_on_refusal_and_shown_on_success(monkeypatch):
    import neurosim.cli as cli
    from neurosim.errors import BiasRangeWarning, NeurosimError

    def command(fail: bool):
        def run(args) -> int:
            warnings.warn("from a library", UserWarning)
            warnings.warn("neurosim's own", BiasRangeWarning)
            if fail:
                raise NeurosimError("refused")
            return 0
        return run

    for fail, expected in ((True, ["neurosim's own"]), (False, ["neurosim's own", "from a library"])):
        monkeypatch.setattr(cli, "_cmd_profile_list", command(fail))
        shown: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest: shown.append(str(message))
            assert main(["profile", "list"]) == (2 if fail else 0)
        assert shown == expected  # neurosim's own at once, a library's only when the command succeeds
