"""``neurosim demo``: the whole path on digits, in a few minutes on a laptop CPU.

1. train the default MLP on ``hardreset-noisy`` twice: without and with the chip's noise in the
   loop (both with its number formats);
2. export both to the chip's integer format;
3. check parity: the integer engine's spikes equal the training forward's on every layer and
   step for a batch of test images on four sampled chips;
4. sweep both artifacts over noise scales on 16+ chip instances with the integer engine;
5. write a plot and a short text summary, and print where they are.

Every number printed is measured in this run.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from neurosim.device import load_profile, sample_chips
from neurosim.engine import deployment_shapes
from neurosim.engine.parity import compare_batch
from neurosim.errors import NeurosimError
from neurosim.export import compile_model
from neurosim.files import write_text
from neurosim.sweep import SweepSpec, plot_sweeps, run_sweep
from neurosim.train import TrainConfig, load_run, train
from neurosim.train.datasets import load_dataset

PROFILE = "hardreset-noisy"
SCALES = [0.0, 1.0, 4.0, 16.0, 64.0]
MARKER = ".neurosim-demo"


def _fresh_folder(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists():
            raise NeurosimError(f"{out}: exists and is not a neurosim demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by neurosim demo; re-running the demo replaces this folder\n")


def check_parity(run_dir: Path, artifact_model, deployment, dataset, chips: int = 4, seed: int = 1234) -> int:
    """Compare the engine's spikes with the training forward's on ``chips`` chips for 64 test
    images (:func:`neurosim.engine.parity.compare_batch`); returns the number of spike values
    compared, raises naming the first mismatch."""
    instances = sample_chips(deployment.profile, deployment_shapes(deployment), n=chips, seed=seed)
    result = compare_batch(artifact_model, deployment, instances, dataset.test.inputs[:64], batch=0)
    if result.mismatch is not None:
        raise NeurosimError(f"parity check failed: {run_dir}: {result.mismatch}")
    return result.compared


def run_demo(out: str | Path = "neurosim-demo", epochs: int = 15, chips: int = 16, seed: int = 0,
             progress: bool | None = None) -> int:
    """Run the demo into ``out``; returns 0."""
    if chips < 16:
        raise NeurosimError(f"--chips must be at least 16 for the demo's sweeps, got {chips}")
    start = time.perf_counter()
    out = Path(out)
    _fresh_folder(out)
    dataset = load_dataset("digits")
    profile = load_profile(PROFILE)
    print(f"neurosim demo: digits ({len(dataset.train)} train / {len(dataset.test)} test), mlp:128-128, T=4, "
          f"chip profile {PROFILE}")
    runs = {"without noise": ("no-noise", False), "noise in the loop": ("noise", True)}
    lines = []
    sweeps = []
    for label, (name, noise) in runs.items():
        print(f"\n[{label}] training {epochs} epochs ...", flush=True)
        config = TrainConfig(profile=PROFILE, epochs=epochs, seed=seed, noise=noise, eval_chips=0)
        metrics = train(config, out / "runs" / name, progress=progress, dataset=dataset).metrics
        model, _, _ = load_run(out / "runs" / name, dataset)
        deployment = compile_model(model, profile, metadata={"source": str(out / "runs" / name),
                                                               "training": config.to_dict()})
        artifact = deployment.save(out / "artifacts" / name)
        compared = check_parity(out / "runs" / name, model, deployment, dataset)
        print(f"[{label}] ideal-chip accuracy {metrics['test_accuracy']:.4f}; exported to {artifact}; "
              f"parity: {compared} spike values of engine and training forward identical on 4 chips", flush=True)
        print(f"[{label}] sweeping noise scales {', '.join(f'{s:g}' for s in SCALES)} on {chips} chips ...",
              flush=True)
        sweep_dir = out / "sweeps" / name
        summary = run_sweep(SweepSpec(source=str(artifact), scales=SCALES, instances=chips, seed=1234,
                                      label=f"trained {label}"), sweep_dir, progress=progress)
        sweeps.append(sweep_dir)
        lines.append((label, metrics["test_accuracy"], summary))
    plot = plot_sweeps(sweeps, out / "accuracy_vs_noise.png")
    text = _summary_text(lines, chips, time.perf_counter() - start)
    write_text(out / "summary.md", text)
    print("\n" + text)
    print(f"plot: {plot}\nsummary: {out / 'summary.md'}\nruns, artifacts and sweeps: {out}/runs, {out}/artifacts, "
          f"{out}/sweeps")
    return 0


def _summary_text(lines, chips: int, seconds: float) -> str:
    header = "| trained | ideal chip | " + " | ".join(f"x{s:g}" for s in SCALES) + " |"
    rows = [header, "|" + " --- |" * (2 + len(SCALES))]
    for label, ideal, summary in lines:
        cells = " | ".join(f"{r['accuracy_mean']:.4f} ({r['accuracy_p5']:.3f}-{r['accuracy_p95']:.3f})" for r in summary)
        rows.append(f"| {label} | {ideal:.4f} | {cells} |")
    return (f"# neurosim demo: digits on {PROFILE}\n\nTest accuracy on the ideal chip and, per noise scale (every "
            f"sigma of the profile multiplied), the mean over {chips} sampled chips on the integer engine "
            f"(5-95 percentiles in brackets).\n\n" + "\n".join(rows) + "\n\n" + _energy_text(lines)
            + f"\n\nTotal time: {seconds:.0f} s.\n")


def _energy_text(lines) -> str:
    """Energy per sample at noise scale 1 from the sweeps' summaries (mean over chips), or why
    it is unknown (the profile has no energy figures)."""
    known = [(label, summary[SCALES.index(1.0)]["energy_pj_per_sample_mean"]) for label, _, summary in lines]
    if all(math.isnan(energy) for _, energy in known):
        return f"Energy: unknown ({PROFILE} has no energy figures; see its references)."
    return "Energy per sample at scale x1 (profile estimate): " + "; ".join(
        f"{label} {energy / 1e3:.3f} nJ" for label, energy in known) + "."
