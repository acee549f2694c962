"""neurosim: a hardware-aware simulator for deploying spiking neural networks on neuromorphic chips.

The library API does what the ``neurosim`` command does (docs/design.md §1):

- :func:`load_profile` reads a chip profile (built-in name or YAML path); :func:`sample_chips`
  draws seeded chip instances from it.
- :func:`train` (``neurosim.train(config, out=…, **options)``) trains a spiking network with the
  chip in the loop and returns a :class:`~neurosim.train.TrainResult`; :func:`load_run` reads a
  run folder back.
- :func:`compile_model` turns a trained model into a :class:`Deployment` in the chip's integer
  formats (``Deployment.save`` / :func:`load_deployment` for the artifact).
- :class:`IntegerEngine` runs a deployment bit-accurately on many chip instances at once;
  :func:`evaluate_deployment` runs a whole dataset split through it.
- :func:`sweep` (``neurosim.sweep(source, out, scales=[…])``) measures accuracy over noise levels
  with Monte-Carlo chip instances and writes CSV files and a plot.

``examples/library_api.py`` walks through all of them.
"""

__version__ = "0.1.0"

from neurosim import sweep, train  # noqa: E402  (callable packages: neurosim.train(...), neurosim.sweep(...))
from neurosim.device import DeviceProfile, LayerShape, load_profile, sample_chips  # noqa: E402
from neurosim.engine import EngineResult, IntegerEngine  # noqa: E402
from neurosim.engine.evaluate import evaluate_deployment  # noqa: E402
from neurosim.errors import NeurosimError, ProfileError  # noqa: E402
from neurosim.export import Deployment, compile_model, load_deployment  # noqa: E402
from neurosim.train import TrainConfig, TrainResult, load_dataset, load_run  # noqa: E402

__all__ = ["Deployment", "DeviceProfile", "EngineResult", "IntegerEngine", "LayerShape", "NeurosimError",
           "ProfileError", "TrainConfig", "TrainResult", "__version__", "compile_model", "evaluate_deployment",
           "load_dataset", "load_deployment", "load_profile", "load_run", "sample_chips", "sweep", "train"]
