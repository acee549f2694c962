"""neurosim as a library: the whole path of the ``neurosim`` command through the Python API only.

Notebook style: each ``# %%`` cell runs in Jupyter/VS Code as it is, or run the file
(``python examples/library_api.py [OUT_DIR]``, about a minute on a laptop CPU). It trains a small
network with the ``hardreset-noisy`` chip in the loop, compiles it to the chip's integer format,
runs it bit-accurately on 8 sampled chips, checks that against the training forward, and sweeps
the noise level.
"""

# %% Setup: where files go
import sys
import tempfile
from pathlib import Path

import torch

import neurosim

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="neurosim-api-"))
print(f"neurosim {neurosim.__version__}; writing to {out}")

# %% 1. A chip profile: a built-in name or a YAML path
profile = neurosim.load_profile("hardreset-noisy")
print(f"profile {profile.name}: {profile.numerics.weight_bits}-bit weights, "
      f"{profile.numerics.membrane_bits}-bit membrane, sigma_theta={profile.variation.v_threshold.sigma}")

# %% 2. Train with the chip in the loop (same options as `neurosim train`)
result = neurosim.train(model="mlp:64", profile=profile.name, epochs=6, timesteps=4, eval_chips=4,
                        seed=0, out=out / "run", progress=False)
print(f"trained: test accuracy {result.metrics['test_accuracy']:.4f} on the ideal chip, "
      f"{result.metrics['test_accuracy_noisy']:.4f} on 4 sampled chips")

# %% 3. Compile to the chip's integer format and save the versioned artifact
deployment = neurosim.compile_model(result.model, profile)
artifact = deployment.save(out / "artifact")
print(f"compiled {len(deployment.layers)} layers; artifact at {artifact}")
deployment = neurosim.load_deployment(artifact)  # verified checksums, as a user would reload it

# %% 4. Run it bit-accurately on 8 chip instances at once
test = neurosim.load_dataset("digits").test
chips = neurosim.sample_chips(profile, neurosim.engine.deployment_shapes(deployment), n=8, seed=1234)
engine = neurosim.IntegerEngine(deployment, chips)
x, y = next(iter(test.batches(64)))
run = engine.run(x, batch=0, record=True)
per_chip = (run.predictions() == y).double().mean(1)
print("accuracy of the first batch per chip:", " ".join(f"{a:.3f}" for a in per_chip.tolist()))

# %% 5. Parity: the fake-quant training forward on chip 0 predicts exactly what the engine does
from neurosim.device import DynamicNoise  # noqa: E402  (cell-local import, notebook style)
from neurosim.train import ChipContext  # noqa: E402

chip0 = chips.select([0])
logits = result.model(x, ChipContext(profile, chip0, DynamicNoise(profile, chips.seed, chip0.indices), batch=0))
print("training forward and engine predict the same on chip 0:",
      bool(torch.equal(logits.argmax(1), run.predictions()[0])))

# %% 6. The whole test split on 8 chips, with per-layer counts
report = neurosim.evaluate_deployment(deployment, test, chips=8, seed=1234, progress=False)
print(report.summary())

# %% 7. Robustness: scale every sigma of the profile by k, 8 chips per point
summary = neurosim.sweep(artifact, out / "sweep", scales=[0, 1, 16, 64], instances=8, progress=False)
for row in summary:
    print(f"sigma x{row['scale']:<4g} accuracy {row['accuracy_mean']:.4f} "
          f"(p5 {row['accuracy_p5']:.4f}, p95 {row['accuracy_p95']:.4f})")
print(f"plot: {out / 'sweep' / 'plot.png'}")
