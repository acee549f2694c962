"""``neurosim demo``: what the device layer can show today.

It lists the built-in chip profiles, then samples seeded chip instances of two of them and
prints the variation it measured beside what the profile specifies. Every number printed is
computed on the spot; training, export, the integer engine and sweeps join the demo as their
layers land (DESIGN.md §1).
"""

from __future__ import annotations

from neurosim.device import LayerShape, builtin_profiles, load_profile, sample_chips

DEMO_LAYERS = {"hidden": LayerShape.linear(64, 128), "readout": LayerShape.linear(128, 10)}
DEMO_PROFILES = ("hardreset-noisy", "analog-mismatch")


def run_demo(seed: int = 0, chips: int = 16) -> int:
    """Print the built-in profiles and the statistics of ``chips`` sampled chips; returns 0."""
    from neurosim.cli import format_statistics

    profiles = builtin_profiles()
    print("Built-in chip profiles (neurosim profile show NAME for the full YAML):")
    width = max(len(name) for name in profiles)
    for name in profiles:
        print(f"  {name:<{width}}  {load_profile(name).description}")
    for name in DEMO_PROFILES:
        profile = load_profile(name)
        sample = sample_chips(profile, DEMO_LAYERS, n=chips, seed=seed)
        print(f"\n{chips} chip instances of '{name}' (seed {seed}), a 64-128-10 network: "
              "measured over chips and neurons vs the profile")
        print(format_statistics(sample.statistics()))
    print("\nSame seed, same chips: run it again and compare. Training, export, the integer engine "
          "and robustness sweeps are not part of this build yet.")
    return 0
