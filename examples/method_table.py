"""Every seed method and every surrogate at its default width, trained end to end.

For each method (a switch of ``neurosim train``) this trains a 2-layer and a 4-layer network on
digits (T=4, 20 epochs, hardreset-noisy, noise in the loop) with three seeds, and writes a
Markdown table of the final and best test accuracy on the ideal chip (mean and range over the
seeds) and the spikes per sample, beside the default (atan, reset-gradient clip) that every row
is compared with. Then one row per built-in profile: trained on it, exported to it (fixed-point
profiles) and run in the integer engine on 8 sampled chips.

    python examples/method_table.py --out examples/method_table.md          # about 20 min, 2 cores
    python examples/method_table.py --epochs 2 --seeds 0 --out /tmp/t.md    # a quick look

Runs go to two worker processes (one torch thread each); every run is seeded, so the table is the
same on every run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from neurosim.train.config import SEED_METHODS, with_options

METHODS: dict[str, dict] = {
    **SEED_METHODS,
    "fast_sigmoid gamma 25 (snnTorch's slope)": {"neuron": {"surrogate": "fast_sigmoid",
                                                            "surrogate_params": {"gamma": 25.0}}},
    "fast_sigmoid gamma 25 + width tuning": {"neuron": {"surrogate": "fast_sigmoid",
                                                       "surrogate_params": {"gamma": 25.0}},
                                            "tune_width": {"enabled": True}},
}

NETWORKS = {"2 layers": "mlp:128-128", "4 layers": "mlp:128-128-128-128"}

PROFILES = {  # profile -> what it trains on (Xylo: 16 inputs, 8 outputs)
    "ideal": {},
    "analog-mismatch": {},
    "hardreset-noisy": {},
    "loihi-like": {},
    "xylo-like": {"dataset": "digits4x4-8", "model": "mlp:64", "timesteps": 8},
}


def train_one(data: dict) -> dict:
    """Train one configuration; accuracy history, spikes, and (for a fixed-point profile) the
    exported network's accuracy in the integer engine on 8 chips."""
    import torch

    torch.set_num_threads(1)
    from neurosim.device import load_profile, sample_chips
    from neurosim.errors import NeurosimError
    from neurosim.engine import IntegerEngine
    from neurosim.export import compile_model
    from neurosim.engine.engine import deployment_shapes
    from neurosim.train import TrainConfig, train
    from neurosim.train.datasets import load_dataset

    export = data.pop("_export", False)
    config = TrainConfig(**data)
    result = train(config, progress=False)
    m = result.metrics
    row = {"final": m["test_accuracy"], "best": max(h["test_accuracy"] for h in m["history"]),
           "spikes": m["spikes_per_sample"], "noisy": m.get("test_accuracy_noisy")}
    profile = load_profile(config.profile)
    if export and not profile.numerics.is_float:
        try:
            deployment = compile_model(result.model, profile)
        except NeurosimError as exc:
            row["engine_error"] = str(exc)
            return row
        test = load_dataset(config.dataset).test
        chips = sample_chips(profile, deployment_shapes(deployment), n=8, seed=1234)
        logits = IntegerEngine(deployment, chips).run(test.inputs).logits
        row["engine"] = (logits.argmax(-1) == test.targets).double().mean().item()
    return row


def summary(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows]
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/method_table.md"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", metavar="WORDS", help="only the methods and profiles whose name contains WORDS")
    parser.add_argument("--networks", default=",".join(NETWORKS), help="which networks (default: %(default)s)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = {k: v for k, v in METHODS.items() if not args.only or args.only in k}
    profiles = {k: v for k, v in PROFILES.items() if not args.only or args.only in k}
    networks = {k: v for k, v in NETWORKS.items() if k in args.networks.split(",")}
    base = {"dataset": "digits", "profile": "hardreset-noisy", "timesteps": 4, "epochs": args.epochs,
            "eval_chips": 0}
    jobs = {}
    for method, options in methods.items():
        for net, spec in networks.items():
            for seed in seeds:
                jobs[(method, net, seed)] = with_options({**base, "model": spec, "seed": seed}, options)
    for name, options in profiles.items():
        for seed in seeds:
            jobs[("profile", name, seed)] = with_options({**base, "model": "mlp:128-128", "profile": name, "seed": seed,
                                                    "eval_chips": 8, "_export": True}, options)
    with ProcessPoolExecutor(args.workers) as pool:
        results = dict(zip(jobs, pool.map(train_one, jobs.values())))
    lines = [f"Digits, hardreset-noisy with noise in the loop, T=4, {args.epochs} epochs, seeds {args.seeds}; "
             "test accuracy on the ideal chip, mean (min-max) over the seeds; spikes per sample. "
             "Made by `python examples/method_table.py`.", "",
             "| method | " + " | ".join(f"{net}: final | best | spikes" for net in networks) + " |",
             "| --- | " + " | ".join("--- | --- | ---" for _ in networks) + " |"]
    for method in methods:
        cells = []
        for net in networks:
            rows = [results[(method, net, s)] for s in seeds]
            cells.append(f"{summary(rows, 'final')} | {summary(rows, 'best')} | {statistics.mean(r['spikes'] for r in rows):.0f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Each built-in profile: `mlp:128-128` (Xylo: `mlp:64` on digits4x4-8, T=8) trained on it with noise "
              "in the loop; the training forward's accuracy on the ideal chip and on 8 sampled chips, and the "
              "exported network in the integer engine on 8 sampled chips (fixed-point profiles).", "",
              "| profile | final (ideal chip) | 8 sampled chips (training forward) | exported, integer engine, 8 chips |",
              "| --- | --- | --- | --- |"]
    for name in profiles:
        rows = [results[("profile", name, s)] for s in seeds]
        errors = [r["engine_error"] for r in rows if "engine_error" in r]
        if errors:
            engine = f"export refused: {errors[0]}"
        else:
            engine = summary(rows, "engine") if "engine" in rows[0] else "float profile: nothing to export"
        lines.append(f"| {name} | {summary(rows, 'final')} | {summary(rows, 'noisy')} | {engine} |")
    args.out.write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_text(json.dumps({" / ".join(map(str, k)): v for k, v in results.items()},
                                                          indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
