"""The integer inference engine (docs/design.md §4): a deployment on many chip instances at once,
bit-accurate, with a slow per-neuron reference that states the same rules plainly."""

from neurosim.engine.engine import EngineResult, IntegerEngine, LayerCounts, deployment_shapes

__all__ = ["EngineResult", "IntegerEngine", "LayerCounts", "deployment_shapes"]
