"""The README's promises: the examples and the CLI's chip sampling run for real (the demo is
tested in test_sweep.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from neurosim.cli import main
from neurosim.device import LayerShape, load_profile, sample_chips

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_example_script_runs_and_reports_a_reproducible_chip():
    result = run("examples/sample_chips.py")
    assert result.returncode == 0, result.stderr
    assert "chip 3 of the batch equals chip 3 sampled alone: True" in result.stdout
    assert "8-bit codes" in result.stdout
    assert "Traceback" not in result.stderr


def test_example_profile_is_valid_and_referenced():
    assert main(["profile", "validate", "--require-references", str(ROOT / "examples/my-noisy-chip.yaml")]) == 0
    profile = load_profile(ROOT / "examples/my-noisy-chip.yaml")
    assert profile.variation.v_threshold.sigma == 0.01
    assert profile.variation.v_reset.sigma == 0.007  # inherited from hardreset-noisy
    assert profile.numerics.weight_bits == 8


def test_profile_sample_prints_the_measured_statistics(capsys):
    assert main(["profile", "sample", "hardreset-noisy", "--layers", "20x300", "--chips", "10", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    chips = sample_chips(load_profile("hardreset-noisy"), {"layer0": LayerShape.linear(20, 300)}, n=10, seed=4)
    std = chips.thresholds("layer0").double().std().item()
    assert f"{std:.4g}" in out  # the printed figure is the one measured from these chips
    assert "v_threshold" in out and "v_reset" in out


def test_profile_sample_bad_layers_is_one_line_error(capsys):
    assert main(["profile", "sample", "ideal", "--layers", "784by10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --layers")


def test_library_api_example_runs_the_whole_path(tmp_path):
    """examples/library_api.py uses only the public API (load_profile, train, compile_model,
    IntegerEngine, evaluate_deployment, sweep) and its parity cell must come out True."""
    result = run("examples/library_api.py", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training forward and engine predict the same on chip 0: True" in result.stdout
    assert "8 chips of hardreset-noisy, 450 samples" in result.stdout
    assert (tmp_path / "artifact" / "manifest.yaml").is_file()
    assert (tmp_path / "sweep" / "summary.csv").read_text().count("\n") == 5  # header + 4 scales
    accuracy = float(result.stdout.split("trained: test accuracy ")[1].split()[0])
    assert accuracy > 0.85


def test_library_api_names_are_the_documented_ones():
    import neurosim

    assert callable(neurosim.train) and callable(neurosim.sweep)
    for name in ("load_profile", "compile_model", "IntegerEngine", "load_run", "load_deployment",
                 "evaluate_deployment", "sample_chips"):
        assert getattr(neurosim, name).__doc__, name
    import neurosim.train.trainer as trainer  # the packages stay importable as packages
    assert trainer.train is neurosim.train.train


def test_library_train_takes_a_config_mapping_or_file_and_reports_bad_options(tmp_path):
    import pytest

    import neurosim
    from neurosim.errors import ConfigError

    with pytest.raises(ConfigError, match="epochs"):
        neurosim.train({"model": "mlp:8"}, epochs="many")
    (tmp_path / "c.yaml").write_text("model: mlp:8\nepochs: 1\nprofile: ideal\neval_chips: 0\n")
    result = neurosim.train(tmp_path / "c.yaml", timesteps=2, progress=False)
    assert result.config.timesteps == 2 and result.config.model == "mlp:8"
    assert result.out is None and 0.0 <= result.metrics["test_accuracy"] <= 1.0
    assert not result.model.training


def test_chips_example_agrees_with_the_vendor_models():
    """examples/chips_bit_for_bit.py: xylosim (when installed) and Lava's equations agree with
    the engine on every step."""
    result = run("examples/chips_bit_for_bit.py")
    assert result.returncode == 0, result.stderr
    assert "Lava's bit-accurate equations and neurosim agree on spikes, u and v at every step: True" in result.stdout
    try:
        import xylosim.v2  # noqa: F401
    except ImportError:
        assert "xylosim: skipped" in result.stdout
    else:
        assert "v_mem, v_mem_out at every step: True" in result.stdout


def test_method_table_trains_a_method_and_a_profile(tmp_path):
    """examples/method_table.py, cut to one method on one network and one profile, one epoch."""
    out = tmp_path / "methods.md"
    result = run("examples/method_table.py", "--only", "tdBN", "--networks", "2 layers", "--epochs", "1",
                 "--seeds", "0", "--workers", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| tdBN")]
    assert len(rows) == 1 and rows[0].count("|") == 5, rows
    out = tmp_path / "profiles.md"
    result = run("examples/method_table.py", "--only", "loihi", "--epochs", "1", "--seeds", "0", "--workers", "1",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in out.read_text().splitlines() if line.startswith("| loihi-like"))
    engine = row.split("|")[4].strip()
    assert 0.0 <= float(engine) <= 1.0, row  # exported and run in the integer engine, not refused
