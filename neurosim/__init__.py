"""neurosim: a hardware-aware simulator for deploying spiking neural networks on neuromorphic chips.

Public API (DESIGN.md): :func:`load_profile` reads a chip profile, :func:`sample_chips` draws
seeded chip instances from it.
"""

from neurosim.device import DeviceProfile, LayerShape, load_profile, sample_chips
from neurosim.errors import NeurosimError, ProfileError

__version__ = "0.1.0"

__all__ = ["DeviceProfile", "LayerShape", "NeurosimError", "ProfileError", "__version__",
           "load_profile", "sample_chips"]
