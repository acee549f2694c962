"""A first look at neurosim's hot paths (issue 7 builds the full suite with the peers).

Measures, in one process, medians over repeated runs:
  * the training step (zero_grad + forward + backward + step) of mlp:128-128 on digits
    (batch 64, T = 4) on the ideal chip, on the nominal fixed-point chip, and with noise in the
    loop on hardreset-noisy (a fresh chip per step);
  * the integer engine on the test set for 64 chips in one vectorised pass vs 64 one-chip passes.

Run:  python -m benchmarks.hot_paths   (writes nothing; paste the output into RESULTS.md)
"""

from __future__ import annotations

import statistics
import time

import torch

from neurosim.device import load_profile, sample_chips
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.export import compile_model
from neurosim.train import TrainConfig, Trainer
from neurosim.train.datasets import load_dataset
from neurosim.train.noise import ChipContext
from neurosim.train.trainer import build_for


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    data = load_dataset("digits")
    profile = load_profile("hardreset-noisy")
    config = TrainConfig()
    torch.manual_seed(0)
    model = build_for(config, profile, data.input_shape, data.num_classes)
    trainer = Trainer(model, profile, config, data, progress=False)
    x, y = data.train.inputs[:64], data.train.targets[:64]
    step = {"k": 0}

    def train_step(chip):
        def run():
            logits = model(x, chip(step["k"]))
            loss = trainer.loss(logits, y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            step["k"] += 1
        return run

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    ideal = median_ms(train_step(lambda k: None), 50)
    nominal = median_ms(train_step(lambda k: ChipContext(profile)), 50)
    noisy = median_ms(train_step(trainer.training_chip), 50)
    print(f"training step, mlp:128-128, batch 64, T=4 (median of 50):")
    print(f"  ideal float chip          {ideal:8.2f} ms")
    print(f"  fixed point, no noise     {nominal:8.2f} ms  ({nominal / ideal:.2f}x ideal)")
    print(f"  noise in the loop         {noisy:8.2f} ms  ({noisy / ideal:.2f}x ideal, {noisy / nominal:.2f}x fixed)")

    model.eval()
    deployment = compile_model(model, profile)
    test = data.test.inputs
    chips = sample_chips(profile, deployment_shapes(deployment), n=64, seed=0)
    together = median_ms(lambda: IntegerEngine(deployment, chips).run(test), 5, warmup=1)
    one_by_one = median_ms(lambda: [IntegerEngine(deployment, chips[k]).run(test) for k in range(64)], 3, warmup=1)
    samples = len(test) * 64
    print(f"integer engine, {len(test)} test images x 64 chips (median):")
    print(f"  one vectorised pass       {together:8.1f} ms  ({samples / together * 1e3:,.0f} samples/s)")
    print(f"  64 one-chip passes        {one_by_one:8.1f} ms  ({one_by_one / together:.1f}x slower)")


if __name__ == "__main__":
    main()
