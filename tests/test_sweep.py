"""Robustness sweeps: grid, results as data, kill and resume, torchrun sharding, plots, demo."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from neurosim.cli import main
from neurosim.device import load_profile
from neurosim.errors import ConfigError, NeurosimError
from neurosim.export import compile_model
from neurosim.sweep import SweepSpec, make_points, parse_vary, plot_sweeps, profile_at, run_sweep
from neurosim.train import TrainConfig, load_run, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    run = base / "run"
    train(TrainConfig(epochs=2, model="mlp:32", eval_chips=0), run, progress=False)
    model, config, _ = load_run(run)
    artifact = compile_model(model, config.profile, metadata={"training": config.to_dict()}).save(base / "artifact")
    return run, artifact


def rows_of(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.reader(handle))


# ------------------------------------------------------------------ grid

def test_points_scales_and_grids():
    assert make_points([0, 1, 2], []) == [{"scale": 0}, {"scale": 1}, {"scale": 2}]
    vary = parse_vary(["variation.v_reset.sigma=0,0.1", "variation.v_threshold.sigma=0.01,0.02"])
    points = make_points(None, vary)
    assert len(points) == 4 and points[1] == {"variation.v_reset.sigma": 0.0, "variation.v_threshold.sigma": 0.02}
    profile = profile_at(load_profile("hardreset-noisy"), points[3])
    assert profile.variation.v_reset.sigma == 0.1 and profile.variation.v_threshold.sigma == 0.02
    scaled = profile_at(load_profile("analog-mismatch"), {"scale": 4})
    assert scaled.noise.thermal.sigma == pytest.approx(0.2)
    for bad in (["nokey"], ["a=1,x"], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            parse_vary(bad)
    with pytest.raises(ConfigError, match="not both"):
        make_points([1], parse_vary(["a=1"]))
    with pytest.raises(ConfigError, match="negative"):
        make_points([-1], [])
    with pytest.raises(NeurosimError, match="variation.v_reset.sigma"):
        profile_at(load_profile("hardreset-noisy"), {"variation.v_reset.sigma": -1.0})


# ------------------------------------------------------------------ results as data

def test_run_and_artifact_sweeps_write_the_same_rows(sources, tmp_path):
    run, artifact = sources
    spec = dict(scales=[0, 4, 64], instances=4, seed=3, chunk=3)
    summary = run_sweep(SweepSpec(source=str(artifact), **spec), tmp_path / "a", progress=False)
    run_sweep(SweepSpec(source=str(run), **spec), tmp_path / "r", progress=False)
    a, r = rows_of(tmp_path / "a" / "results.csv"), rows_of(tmp_path / "r" / "results.csv")
    assert a[0][:8] == ["point", "instance", "scale", "accuracy", "spikes_per_sample", "synops_per_sample",
                        "energy_pj_per_sample", "saturations_per_sample"]
    assert len(a) == 1 + 3 * 4
    assert [row[:8] for row in a] == [row[:8] for row in r]  # integer engine == fake-quant forward, counts too
    assert [row[8:] for row in a] == [row[8:] for row in r]
    # summary: per point mean/std/min/p5/p50/p95 of each metric
    with open(tmp_path / "a" / "summary.csv", encoding="utf-8") as handle:
        summary_rows = list(csv.DictReader(handle))
    assert len(summary_rows) == 3
    for name in ("mean", "std", "min", "p5", "p50", "p95"):
        assert f"accuracy_{name}" in summary_rows[0]
    accuracies = [float(row[3]) for row in a[1:5]]
    assert float(summary_rows[0]["accuracy_mean"]) == pytest.approx(sum(accuracies) / 4)
    assert float(summary_rows[0]["accuracy_min"]) == min(accuracies)
    assert summary[2]["scale"] == 64
    saved = yaml.safe_load((tmp_path / "a" / "sweep.yaml").read_text())
    assert saved["scales"] == [0, 4, 64] and saved["instances"] == 4 and saved["seed"] == 3
    assert (tmp_path / "a" / "plot.png").stat().st_size > 10_000
    # at scale 0 every chip is the nominal chip: identical rows
    assert len({tuple(row[3:]) for row in a[1:5]}) == 1


def test_instance_k_is_the_same_chip_on_every_run(sources, tmp_path):
    _, artifact = sources
    run_sweep(SweepSpec(source=str(artifact), scales=[16], instances=4, seed=5, chunk=4), tmp_path / "x", progress=False)
    run_sweep(SweepSpec(source=str(artifact), scales=[16], instances=2, seed=5, chunk=1), tmp_path / "y", progress=False)
    x, y = rows_of(tmp_path / "x" / "results.csv"), rows_of(tmp_path / "y" / "results.csv")
    assert x[1:3] == y[1:3]  # chunking and the number of instances do not change chip k


def test_sweep_refuses_to_overwrite_and_to_resume_other_options(sources, tmp_path):
    _, artifact = sources
    spec = SweepSpec(source=str(artifact), scales=[1], instances=2)
    run_sweep(spec, tmp_path / "s", progress=False)
    with pytest.raises(NeurosimError, match="already there"):
        run_sweep(spec, tmp_path / "s", progress=False)
    with pytest.raises(NeurosimError, match="other options"):
        run_sweep(SweepSpec(source=str(artifact), scales=[2], instances=2), tmp_path / "s", resume=True, progress=False)
    before = rows_of(tmp_path / "s" / "results.csv")
    run_sweep(spec, tmp_path / "s", resume=True, progress=False)  # finished: nothing to add
    assert rows_of(tmp_path / "s" / "results.csv") == before


def test_killed_sweep_resumes_to_exactly_the_rows_of_an_uninterrupted_run(sources, tmp_path):
    _, artifact = sources
    args = [sys.executable, "-m", "neurosim", "sweep", str(artifact), "--scale", "0,1,4,16,64", "--instances", "12",
            "--chunk", "2", "--seed", "9", "--no-progress"]
    full = subprocess.run(args + ["--out", str(tmp_path / "full")], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert full.returncode == 0, full.stderr
    expected = rows_of(tmp_path / "full" / "results.csv")
    assert len(expected) == 1 + 5 * 12
    killed = tmp_path / "killed"
    process = subprocess.Popen(args + ["--out", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        results = killed / "results.csv"
        if results.exists() and len(results.read_text().splitlines()) >= 1 + 8:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = rows_of(killed / "results.csv")
    assert 1 + 8 <= len(partial) < len(expected)  # it really was cut short
    resumed = subprocess.run(args + ["--out", str(killed), "--resume"], capture_output=True, text=True, cwd=ROOT,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert rows_of(killed / "results.csv") == expected  # none lost, none repeated, same order
    assert (killed / "summary.csv").read_text() == (tmp_path / "full" / "summary.csv").read_text()


def test_a_torn_last_line_is_dropped_on_resume(sources, tmp_path):
    _, artifact = sources
    spec = SweepSpec(source=str(artifact), scales=[0, 8], instances=3, chunk=1)
    run_sweep(spec, tmp_path / "full", progress=False)
    expected = rows_of(tmp_path / "full" / "results.csv")
    torn = tmp_path / "torn"
    run_sweep(spec, torn, progress=False)
    text = (torn / "results.csv").read_text().splitlines(keepends=True)
    (torn / "results.csv").write_text("".join(text[:3]) + text[3][:10])  # header, 2 rows, half a row
    run_sweep(spec, torn, resume=True, progress=False)
    assert rows_of(torn / "results.csv") == expected


def test_torchrun_two_processes_match_one(sources, tmp_path):
    _, artifact = sources
    common = ["sweep", str(artifact), "--scale", "0,2,16", "--instances", "5", "--chunk", "2", "--seed", "4",
              "--no-progress"]
    single = subprocess.run([sys.executable, "-m", "neurosim", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "neurosim", *common, "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    assert (tmp_path / "two" / "results.csv").read_text() == (tmp_path / "one" / "results.csv").read_text()
    assert (tmp_path / "two" / "summary.csv").read_text() == (tmp_path / "one" / "summary.csv").read_text()


# ------------------------------------------------------------------ commands and plots

def test_sweep_and_plot_commands(sources, tmp_path, capsys):
    run, artifact = sources
    assert main(["sweep", str(artifact), "--scale", "0,4", "--instances", "2", "--out", str(tmp_path / "a"),
                 "--label", "artifact", "--no-progress"]) == 0
    assert "scale=4" in capsys.readouterr().out
    assert main(["sweep", str(run), "--vary", "variation.v_threshold.sigma=0,0.1", "--instances", "2",
                 "--out", str(tmp_path / "v"), "--no-progress"]) == 0
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "p.png"),
                 "--label", "one", "--label", "two"]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "v"), "--out", str(tmp_path / "q.png")]) == 2
    assert "cannot share an axis" in capsys.readouterr().err
    # errors are one line and write nothing
    assert main(["sweep", str(artifact), "--vary", "numerics.weight_bits=4", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed at export" in err[0] and not (tmp_path / "bad").exists()
    assert main(["sweep", str(tmp_path), "--scale", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "neither a training run" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.png")]) == 2
    assert "not a finished sweep" in capsys.readouterr().err
    for bad in (["--seed", "-3"], ["--instances", "0"], ["--batch-size", "0"]):
        assert main(["sweep", str(artifact), "--scale", "1", "--out", str(tmp_path / "bad"), *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    for bad in (["--seed", "-1"], ["--chips", "0"], ["--batch-size", "0"]):
        assert main(["run", str(artifact), *bad]) == 2
        assert capsys.readouterr().err.startswith("error:")


def test_plot_overlays_labelled_sweeps(sources, tmp_path):
    _, artifact = sources
    run_sweep(SweepSpec(source=str(artifact), scales=[0, 1, 8], instances=2, label="with noise"), tmp_path / "a",
              progress=False)
    path = plot_sweeps([tmp_path / "a", tmp_path / "a"], tmp_path / "o.png", labels=["first", "second"])
    assert path.stat().st_size > 10_000
    with pytest.raises(NeurosimError, match="labels"):
        plot_sweeps([tmp_path / "a"], tmp_path / "o2.png", labels=["x", "y"])


def test_demo_runs_the_whole_path(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "neurosim", "demo", "--out", str(out), "--epochs", "2",
                             "--chips", "16", "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parity:" in result.stdout and "identical" in result.stdout
    for path in ("summary.md", "accuracy_vs_noise.png", "artifacts/noise/manifest.yaml", "artifacts/no-noise/tensors.npz",
                 "sweeps/noise/results.csv", "runs/no-noise/metrics.json"):
        assert (out / path).exists(), path
    summary = (out / "summary.md").read_text()
    assert "without noise" in summary and "noise in the loop" in summary and "x64" in summary
    assert "Energy: unknown (hardreset-noisy has no energy figures" in summary  # not 0, not nan
    assert len(rows_of(out / "sweeps" / "noise" / "results.csv")) == 1 + 5 * 16
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    refused = subprocess.run([sys.executable, "-m", "neurosim", "demo", "--out", str(tmp_path / "other")],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "not a neurosim demo folder" in refused.stderr
    assert (tmp_path / "other" / "keep.txt").read_text() == "user data"
