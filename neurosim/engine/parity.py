"""Parity of the integer engine with the fake-quant training forward (docs/design.md §4).

The engine and the training forward of the model a deployment was compiled from compute the same
integers, so on the same chip instances (static variation from one seed), the same dynamic noise
stream (``DynamicNoise(profile, seed, chip indices)``, keyed by the batch index) and the same
inputs, every layer's spikes at every step agree exactly, and so do the logits.
:func:`compare_batch` runs both on one batch and reports the first difference;
:func:`check_parity` does it for every batch of a dataset split, as ``neurosim run`` evaluates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from neurosim.device import DynamicNoise, sample_chips
from neurosim.device.chips import ChipInstances
from neurosim.engine.engine import IntegerEngine, deployment_shapes
from neurosim.export.deployment import Deployment

if TYPE_CHECKING:
    from neurosim.nn.layers import SpikingNetwork
    from neurosim.train.datasets import DatasetSplit


@dataclass(frozen=True)
class Mismatch:
    """The first place where the engine and the training forward differ: ``layer`` (in network
    order), time ``step`` (None for the logits), ``neuron`` (index within the layer's output
    shape, or the class of a logit), ``chip`` (instance index) and ``sample`` (index in the split),
    with both values."""

    layer: str
    step: int | None
    neuron: tuple[int, ...]
    chip: int
    sample: int
    engine: float
    training: float

    def __str__(self) -> str:
        where = (f"layer {self.layer} step {self.step} neuron {list(self.neuron)}" if self.step is not None
                 else f"layer {self.layer} logit of class {self.neuron[0]}")
        return (f"{where} (chip {self.chip}, sample {self.sample}): engine {self.engine:g}, "
                f"training forward {self.training:g}")


@dataclass
class ParityResult:
    """Spike values compared (layers x steps x samples x neurons x chips) and the first mismatch."""

    compared: int = 0
    mismatch: Mismatch | None = None


def _first(engine: Tensor, training: Tensor) -> tuple[int, ...] | None:
    """Index of the first differing element (row-major: the earliest step first), or None."""
    if engine.shape != training.shape:
        return (0,) * engine.dim()
    differ = (engine != training).nonzero()
    return None if differ.numel() == 0 else tuple(int(i) for i in differ[0])


@torch.no_grad()
def compare_batch(model: SpikingNetwork, deployment: Deployment, instances: ChipInstances, x: Tensor, batch: int = 0,
                  noise: bool = True, first_sample: int = 0) -> ParityResult:
    """Run inputs ``x`` (one batch, index ``batch``) through the engine on ``instances`` and through
    ``model``'s training forward on each chip alone (``ChipContext``), and compare every spiking
    layer's spikes ``[T, batch, *neurons]`` and the logits. The first mismatch is the one of the
    earliest layer, then step, then chip. ``first_sample``: index of ``x[0]`` in its split."""
    from neurosim.train.noise import ChipContext

    profile = deployment.profile
    result = IntegerEngine(deployment, instances, noise=noise).run(x, batch=batch, record=True)
    order = [block.name for block in model.blocks] + ["readout"]
    found: list[tuple[tuple[int, int, int], Mismatch]] = []
    compared = 0
    for block in model.blocks:
        block.record = True
    try:
        for k in range(len(instances)):
            chip = instances[k]
            dynamic = DynamicNoise(profile, instances.seed, chip.indices) if noise else None
            logits = model(x, ChipContext(profile, chip, dynamic, batch=batch))
            for i, block in enumerate(model.blocks):
                training = block.recorded_spikes
                engine = result.spikes[block.name][:, k].to(training.dtype)
                at = _first(engine, training)
                compared += int(training.numel())
                if at is not None:
                    found.append(((i, at[0], k), Mismatch(block.name, at[0], at[2:], int(instances.indices[k]),
                                                          first_sample + at[1], float(engine[at]),
                                                          float(training[at]))))
                    break
            else:
                at = _first(result.logits[k], logits)
                if at is not None:
                    found.append(((len(order) - 1, 0, k), Mismatch("readout", None, at[1:], int(instances.indices[k]),
                                                                   first_sample + at[0], float(result.logits[k][at]),
                                                                   float(logits[at]))))
    finally:
        for block in model.blocks:
            block.record = False
    return ParityResult(compared, min(found, key=lambda f: f[0])[1] if found else None)


def check_parity(model: SpikingNetwork, deployment: Deployment, split: DatasetSplit, chips: int = 16, seed: int = 1234, noise: bool = True,
                 batch_size: int = 64, progress: bool | None = None) -> ParityResult:
    """:func:`compare_batch` on every batch of ``split`` with chips ``0 .. chips - 1`` drawn with
    ``seed``: the chips, batches and noise of ``evaluate_deployment`` with the same arguments.
    Stops at the first batch with a mismatch."""
    from tqdm.auto import tqdm

    instances = sample_chips(deployment.profile, deployment_shapes(deployment), n=chips, seed=seed)
    total = ParityResult()
    start = 0
    for b, (x, _) in enumerate(tqdm(split.batches(batch_size), desc="parity", leave=False,
                                    disable=None if progress is None else not progress)):
        part = compare_batch(model, deployment, instances, x, batch=b, noise=noise, first_sample=start)
        total.compared += part.compared
        if part.mismatch is not None:
            total.mismatch = part.mismatch
            break
        start += len(x)
    return total
