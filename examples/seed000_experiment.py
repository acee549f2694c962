"""Seed 000's headline experiment and reset-gradient ablation on digits, with neurosim's API.

1. Noise in the loop: train the default MLP on `hardreset-noisy` with the chip's variation in the
   loop and without it (both with the chip's number formats), then evaluate both on 32 sampled
   chips at 1x, 4x, 16x (and 64x) the profile's sigmas.
2. Ablation under hard reset: reset_grad = clip (seed 000 Eq. 7) vs detach vs full, each trained
   with noise in the loop and evaluated the same way.

Run:  python examples/seed000_experiment.py [--epochs 20] [--seeds 0 1 2] [--out runs/seed000]
It prints a Markdown table (mean over training seeds of the mean accuracy over chips) and writes
it to OUT/results.md. The numbers in examples/README.md come from this script.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from neurosim.device import load_profile
from neurosim.files import write_text
from neurosim.train import TrainConfig, chip_accuracies, load_run, train
from neurosim.train.datasets import load_dataset

SCALES = (1.0, 4.0, 16.0, 64.0)
CHIPS = 32
EVAL_SEED = 1234

RUNS = {
    "noise in the loop, clip": {"noise": True, "neuron": {"reset_grad": "clip"}},
    "no noise, clip": {"noise": False, "neuron": {"reset_grad": "clip"}},
    "noise in the loop, detach": {"noise": True, "neuron": {"reset_grad": "detach"}},
    "noise in the loop, full": {"noise": True, "neuron": {"reset_grad": "full"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/seed000"))
    args = parser.parse_args()
    dataset = load_dataset("digits")
    profile = load_profile("hardreset-noisy")
    rows = []
    for label, options in RUNS.items():
        per_scale = {scale: [] for scale in SCALES}
        ideal = []
        for seed in args.seeds:
            config = TrainConfig(epochs=args.epochs, seed=seed, eval_chips=0, **options)
            run_dir = args.out / label.replace(" ", "-").replace(",", "") / f"seed{seed}"
            metrics = train(config, run_dir, dataset=dataset).metrics
            ideal.append(metrics["test_accuracy"])
            model, _, _ = load_run(run_dir, dataset)
            batches = dataset.test.batches(256)
            for scale in SCALES:
                accs = chip_accuracies(model, profile.scaled(scale), batches, CHIPS, EVAL_SEED)
                per_scale[scale].append(statistics.mean(accs))
        rows.append((label, statistics.mean(ideal), {s: statistics.mean(v) for s, v in per_scale.items()},
                     {s: (min(v), max(v)) for s, v in per_scale.items()}))
        print(label, rows[-1][1], rows[-1][2], flush=True)
    header = "| training | ideal chip | " + " | ".join(f"{CHIPS} chips at {s:g}x sigma" for s in SCALES) + " |"
    lines = [header, "|" + " --- |" * (2 + len(SCALES))]
    for label, ideal_acc, means, ranges in rows:
        cells = " | ".join(f"{means[s]:.4f} ({ranges[s][0]:.3f}-{ranges[s][1]:.3f})" for s in SCALES)
        lines.append(f"| {label} | {ideal_acc:.4f} | {cells} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "results.md", f"epochs {args.epochs}, training seeds {args.seeds}\n\n{table}\n")


if __name__ == "__main__":
    main()
