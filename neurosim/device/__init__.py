"""The device layer (docs/design.md §1, §3): profiles, fixed-point numerics and chip instances.

* :mod:`~neurosim.device.profile` — the schema of a chip profile (``DeviceProfile``).
* :mod:`~neurosim.device.loading` — YAML loading with ``extends:`` and strict validation.
* :mod:`~neurosim.device.fixedpoint` — the chip's integer arithmetic, shared by training and engine.
* :mod:`~neurosim.device.chips` — seeded chip instances (static variation, faults) and dynamic noise.
"""

from neurosim.device.chips import (ChipInstances, DynamicNoise, LayerShape, LayerVariation,
                                   Perturbation, sample_chips)
from neurosim.device.loading import (builtin_profiles, load_profile, profile_to_yaml,
                                     unreferenced_numbers)
from neurosim.device.profile import DeviceProfile

__all__ = [
    "ChipInstances", "DeviceProfile", "DynamicNoise", "LayerShape", "LayerVariation", "Perturbation",
    "builtin_profiles", "load_profile", "profile_to_yaml", "sample_chips", "unreferenced_numbers",
]
