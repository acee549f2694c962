"""Sample chip instances from Python and look at what a chip does to a network's numbers.

Run:  python examples/sample_chips.py [PROFILE]   (default: examples/my-noisy-chip.yaml)

It loads a profile, draws 8 seeded chips for a 64-32-10 dense network, shows that chip 3 of the
batch is the chip you get when you sample chip 3 alone, quantizes a weight matrix to the chip's
weight format, and decays a membrane with the chip's integer decay rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import neurosim
from neurosim.device import LayerShape, fixedpoint

HERE = Path(__file__).resolve().parent


def main(source: str) -> None:
    profile = neurosim.load_profile(source)
    shapes = {"hidden": LayerShape.linear(64, 32), "readout": LayerShape.linear(32, 10)}
    chips = neurosim.sample_chips(profile, shapes, n=8, seed=2026)
    theta = chips.thresholds("hidden")
    print(f"profile {profile.name}: thresholds of 8 chips x 32 neurons, "
          f"mean {theta.mean():.5f}, std {theta.std():.5f} (profile sigma "
          f"{profile.variation.v_threshold.sigma if profile.variation.v_threshold else 0})")

    alone = neurosim.sample_chips(profile, shapes, n=1, seed=2026, start=3)
    same = torch.equal(chips[3].thresholds("hidden"), alone.thresholds("hidden"))
    print(f"chip 3 of the batch equals chip 3 sampled alone: {same}")

    num = profile.numerics
    if num.is_float:
        print("float chip: no fixed-point formats to show")
        return
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0)) * 0.1
    scale = fixedpoint.quantization_scale(w, num.weight_bits, num.weight_scale)
    q = fixedpoint.quantize(w, scale, num.weight_bits, num.rounding, num.overflow)
    err = (fixedpoint.dequantize(q, scale) - w).abs().max()
    print(f"weights -> {num.weight_bits}-bit codes in [{q.min()}, {q.max()}], "
          f"scale {scale.item():.3g}, max error {err:.3g}")
    v = torch.tensor([1000, -1000, 3, -3])
    factor = None if num.decay.kind == "shift" else fixedpoint.decay_multiplier(profile.beta, num.decay.bits)
    print(f"membrane {v.tolist()} after one integer decay step: "
          f"{fixedpoint.apply_decay(v, num.decay, factor).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(HERE / "my-noisy-chip.yaml"))
