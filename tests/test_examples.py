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
