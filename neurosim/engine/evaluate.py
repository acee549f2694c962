"""Evaluate a deployment on a dataset split with N chip instances, streamed in blocks of chips.

Chips are sampled and run in blocks (:func:`chip_block`: as many as a share of the available
memory holds, :mod:`neurosim.memory`), so memory does not grow with the number of chips; time
does. Chip ``k`` is the same alone or in any block (:func:`neurosim.device.sample_chips`), so the
report is the same bit for bit whatever the block size. Up to :data:`PER_CHIP_LIMIT` chips the
report keeps every chip's values; above it, it keeps statistics over chips only, accumulated
exactly block by block (:class:`ChipStatistics`).

Energy per layer and chip is the profile's estimate (:func:`neurosim.engine.engine.estimate_energy`):
``E = synops * e_syn + spikes * e_spike + neuron_updates * e_update`` with the engine's counts and
the per-operation figures of the profile's ``energy`` section; None (unknown, never 0) when the
profile has no figures (docs/chips.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from neurosim.device import sample_chips
from neurosim.engine.engine import IntegerEngine, LayerCounts, deployment_shapes, estimate_energy
from neurosim.export.deployment import Deployment
from neurosim.memory import plan_blocks


PER_CHIP_LIMIT = 100_000
"""Largest number of chips whose per-chip values a report keeps (about 150 bytes a chip and
layer); above it a report keeps statistics over chips only (:class:`ChipStatistics`)."""

_WHATS = ("spikes", "synaptic_ops", "neuron_updates", "saturations")


class _ExactSum:
    """A sum of floats rounded once at the end (Shewchuk's partials, as :func:`math.fsum`): the
    same whatever the order or grouping of the values added, so blocks of any size agree."""

    def __init__(self) -> None:
        self.partials: list[float] = []
        self.special = 0.0  # inf and nan, which partials cannot hold

    def add(self, x: float) -> None:
        """Add one value."""
        if not math.isfinite(x):
            self.special += x
            return
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def extend(self, values: list[float]) -> None:
        """Add every value of ``values``."""
        for x in values:
            self.add(x)

    @property
    def value(self) -> float:
        """The correctly rounded sum."""
        return math.fsum(self.partials) + self.special if self.special else math.fsum(self.partials)


@dataclass
class ChipStatistics:
    """Statistics over chips accumulated block by block, for reports of more chips than
    :data:`PER_CHIP_LIMIT`: accuracy from exact integer sums of correct answers (mean, population
    std, min, max), and exact sums (:class:`_ExactSum`) of each layer's per-sample counts and
    energies. Independent of how the chips were split into blocks."""

    samples: int
    first_chip: int = 0
    chips: int = 0
    correct_sum: int = 0
    correct_squares: int = 0
    correct_min: int | None = None
    correct_max: int | None = None
    counts: dict[str, dict[str, _ExactSum]] = field(default_factory=dict)
    energy: _ExactSum | None = None
    layer_energy: dict[str, _ExactSum] | None = None

    def add_block(self, correct: list[int], counts: dict[str, dict[str, list[float]]],
                  energy: list[float] | None, layer_energy: dict[str, list[float]] | None) -> None:
        """Accumulate the per-chip values of one block of chips."""
        self.chips += len(correct)
        self.correct_sum += sum(correct)
        self.correct_squares += sum(c * c for c in correct)
        low, high = min(correct), max(correct)
        self.correct_min = low if self.correct_min is None else min(self.correct_min, low)
        self.correct_max = high if self.correct_max is None else max(self.correct_max, high)
        for name, layer in counts.items():
            sums = self.counts.setdefault(name, {what: _ExactSum() for what in _WHATS})
            for what, values in layer.items():
                sums[what].extend(values)
        if energy is not None:
            self.energy = self.energy or _ExactSum()
            self.energy.extend(energy)
            self.layer_energy = self.layer_energy or {name: _ExactSum() for name in layer_energy}
            for name, values in layer_energy.items():
                self.layer_energy[name].extend(values)

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over chips."""
        return self.correct_sum / (self.chips * self.samples)

    @property
    def std_accuracy(self) -> float:
        """Population standard deviation of accuracy over chips, from exact integer sums."""
        spread = self.chips * self.correct_squares - self.correct_sum ** 2  # >= 0, an integer
        return math.sqrt(spread) / (self.chips * self.samples)

    def mean(self, total: _ExactSum) -> float:
        """The mean over chips of a summed quantity."""
        return total.value / self.chips


@dataclass
class DeploymentReport:
    """Per-chip accuracy and per-layer counts (per sample) of a deployment on a dataset.

    Above :data:`PER_CHIP_LIMIT` chips the per-chip fields are empty (``chip_indices`` is a
    ``range``) and ``statistics`` holds the statistics over chips."""

    profile: str
    chip_indices: tuple[int, ...] | range
    accuracies: list[float]
    samples: int
    layer_counts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    energy_pj_per_sample: list[float] | None = None
    layer_energy_pj: dict[str, list[float]] | None = None
    """Per layer, each chip's estimated energy per sample in pJ (None: the profile has no figures)."""
    statistics: ChipStatistics | None = None
    """Statistics over chips, in place of per-chip values (None: per-chip values are kept)."""

    @property
    def chips(self) -> int:
        """Number of chips evaluated."""
        return self.statistics.chips if self.statistics is not None else len(self.accuracies)

    @property
    def per_chip(self) -> bool:
        """Whether the report keeps every chip's values."""
        return self.statistics is None

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over chips."""
        if self.statistics is not None:
            return self.statistics.mean_accuracy
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std_accuracy(self) -> float:
        """Standard deviation of accuracy over chips (population)."""
        if self.statistics is not None:
            return self.statistics.std_accuracy
        m = self.mean_accuracy
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies))

    @property
    def min_accuracy(self) -> float:
        """Lowest accuracy of a chip."""
        if self.statistics is not None:
            return self.statistics.correct_min / self.samples
        return min(self.accuracies)

    @property
    def max_accuracy(self) -> float:
        """Highest accuracy of a chip."""
        if self.statistics is not None:
            return self.statistics.correct_max / self.samples
        return max(self.accuracies)

    def total_saturations(self) -> float:
        """Saturation and wrap events over all layers and chips (per sample, summed)."""
        if self.statistics is not None:
            return sum(self.statistics.counts[name]["saturations"].value for name in self.layer_names)
        return sum(sum(c["saturations"]) for c in self.layer_counts.values())

    @property
    def layer_names(self) -> list[str]:
        """The deployment's layers, in order."""
        return list(self.statistics.counts if self.statistics is not None else self.layer_counts)

    def overflowing_layers(self) -> dict[str, float]:
        """Layers whose membrane or synaptic states saturated or wrapped (integer overflow),
        mapped to the mean over chips of their events per sample."""
        return {name: self.mean_over_chips(name, "saturations") for name in self.layer_names
                if self.mean_over_chips(name, "saturations") > 0}

    def mean_over_chips(self, layer: str, what: str) -> float:
        """Mean over chips of a per-sample count of a layer."""
        if self.statistics is not None:
            return self.statistics.mean(self.statistics.counts[layer][what])
        values = self.layer_counts[layer][what]
        return sum(values) / len(values)

    @property
    def has_energy(self) -> bool:
        """Whether the profile has energy figures."""
        if self.statistics is not None:
            return self.statistics.energy is not None
        return self.energy_pj_per_sample is not None

    def mean_energy(self, layer: str | None = None) -> float:
        """Mean over chips of the energy per sample in pJ, of one layer or (None) in all."""
        stats = self.statistics
        if stats is not None:
            return stats.mean(stats.energy if layer is None else stats.layer_energy[layer])
        return _mean(self.energy_pj_per_sample if layer is None else self.layer_energy_pj[layer])

    def summary(self) -> str:
        """A short human-readable report: accuracy over chips, and per layer the means over chips
        of spikes, synaptic operations, saturations and (when the profile has figures) energy."""
        energy = self.has_energy
        lines = [f"{self.chips} chips of {self.profile}, {self.samples} samples: accuracy "
                 f"{self.mean_accuracy:.4f} +- {self.std_accuracy:.4f} (min {self.min_accuracy:.4f}, "
                 f"max {self.max_accuracy:.4f})",
                 f"{'layer':<10} {'spikes/sample':>14} {'synops/sample':>14} {'saturations/sample':>19}"
                 + (f" {'energy pJ/sample':>17}" if energy else "")]
        for name in self.layer_names:
            lines.append(f"{name:<10} {self.mean_over_chips(name, 'spikes'):>14.2f} "
                         f"{self.mean_over_chips(name, 'synaptic_ops'):>14.1f} "
                         f"{self.mean_over_chips(name, 'saturations'):>19.3f}"
                         + (f" {self.mean_energy(name):>17.1f}" if energy else ""))
        overflow = self.overflowing_layers()
        if overflow:
            lines.append("integer overflow (saturation/wrap events per sample): "
                         + ", ".join(f"{name} {events:.3g}" for name, events in overflow.items()))
        else:
            lines.append("integer overflow: none")
        if energy:
            lines.append(f"energy: {self.mean_energy() / 1e3:.3f} nJ per sample (mean over chips; "
                         f"{self.profile}'s energy per operation times the engine's counts)")
        else:
            lines.append(f"energy: unknown (profile {self.profile} has no energy figures)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as JSON-ready data: accuracy statistics over chips, totals per sample (sums
        over layers, means over chips), per-layer means, and per-chip values (None above
        :data:`PER_CHIP_LIMIT` chips, where ``chip_indices`` is None and ``first_chip`` names the
        first of the consecutive chips). Unknown energy and non-finite numbers are None."""
        energy = self.has_energy
        layers = {name: {f"{key}_per_sample": _finite(self.mean_over_chips(name, what))
                         for key, what in _COUNTS} for name in self.layer_names}
        for name in layers:
            layers[name]["energy_pj_per_sample"] = _finite(self.mean_energy(name)) if energy else None
        per_chip = None if self.statistics is not None else {
            "accuracy": [_finite(a) for a in self.accuracies],
            "energy_pj_per_sample": (None if self.energy_pj_per_sample is None
                                     else [_finite(e) for e in self.energy_pj_per_sample])}
        return {
            "profile": self.profile, "samples": self.samples, "chips": self.chips,
            "chip_indices": None if self.statistics is not None else list(self.chip_indices),
            "first_chip": self.chip_indices[0] if len(self.chip_indices) else None,
            "accuracy_mean": _finite(self.mean_accuracy), "accuracy_std": _finite(self.std_accuracy),
            "accuracy_min": _finite(self.min_accuracy), "accuracy_max": _finite(self.max_accuracy),
            **{f"{key}_per_sample": _finite(sum(layer[f"{key}_per_sample"] or 0.0 for layer in layers.values()))
               for key, _ in _COUNTS},
            "energy_pj_per_sample": _finite(self.mean_energy()) if energy else None,
            "layers": layers,
            "per_chip": per_chip,
        }


_COUNTS = (("spikes", "spikes"), ("synops", "synaptic_ops"), ("neuron_updates", "neuron_updates"),
           ("saturations", "saturations"))
"""JSON key stem and :class:`LayerCounts` field of each count."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _finite(value: float) -> float | None:
    """``value`` as a float, or None where it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


_STATE_TENSORS = 8
"""Tensors of ``[steps, batch, *neurons]`` a layer of one chip holds at once in the engine
(currents over time, membrane and synaptic states, spikes, noise draws, their temporaries)."""
_PER_NEURON = 12
"""Per-chip values of one neuron (threshold, reset, decays, dead mask and their codes)."""
_PER_WEIGHT = 32
"""Bytes of one weight of one chip when weights vary per chip (mismatch draws, stuck masks and
values, the chip's integer weights and their copy in the sums' dtype)."""


def _weights_vary(deployment: Deployment) -> bool:
    """Whether the profile gives every chip its own weights (weight mismatch or stuck weights)."""
    profile = deployment.profile
    sigma = profile.variation.weight
    return (sigma is not None and sigma.sigma > 0) or profile.faults.stuck_weights > 0


def chip_bytes(deployment: Deployment, batch_size: int) -> int:
    """Estimated bytes one chip adds to a block: its parameters (per neuron, and per weight when
    weights vary per chip) and the engine's states of every layer for a batch over all steps."""
    steps, per_weight = deployment.timesteps, _PER_WEIGHT if _weights_vary(deployment) else 0
    total = 0
    for layer in deployment.layers:
        neurons = math.prod(layer.output_shape)
        total += 8 * (_PER_NEURON * neurons + _STATE_TENSORS * steps * batch_size * neurons)
        total += per_weight * layer.weight.numel()
    return total


def fixed_bytes(deployment: Deployment, split, batch_size: int) -> int:
    """Estimated bytes an evaluation holds whatever its chips: the deployment's weights in the
    engine's forms (int64 codes and their float copies) and the batches of the split."""
    weights = sum(layer.weight.numel() for layer in deployment.layers)
    inputs = split.inputs.numel() * split.inputs.element_size() if hasattr(split, "inputs") else 0
    return 24 * weights + 2 * inputs


def chip_block(deployment: Deployment, chips: int, batch_size: int, split=None) -> int:
    """Chips per block for an evaluation of ``chips`` chips: as many as :func:`neurosim.memory.block_budget`
    holds (at least 1); refuses (:class:`neurosim.memory.MemoryRefusal`) when one chip beside
    the deployment and the data cannot fit in the memory available."""
    per_chip = chip_bytes(deployment, batch_size)
    fixed = 0 if split is None else fixed_bytes(deployment, split, batch_size)
    what = f"one chip of this deployment ({deployment.profile.name}, batch {batch_size})"
    return plan_blocks(chips, per_chip, fixed, what)


@dataclass
class _Block:
    """Per-chip results of one block of chips (tensors ``[chips]``), before division by the samples."""

    correct: torch.Tensor
    totals: dict[str, LayerCounts]
    energy: torch.Tensor | None


def _run_block(deployment: Deployment, batches: list, seed: int, start: int, count: int, noise: bool,
               bar) -> _Block:
    """Sample chips ``start .. start + count - 1`` and run every batch on them."""
    instances = sample_chips(deployment.profile, deployment_shapes(deployment), n=count, seed=seed, start=start)
    engine = IntegerEngine(deployment, instances, noise=noise)
    correct = torch.zeros(count, dtype=torch.float64)
    totals: dict[str, LayerCounts] = {}
    energy = None
    for b, (x, y) in enumerate(batches):
        result = engine.run(x, batch=b)
        correct += (result.predictions() == y.unsqueeze(0)).sum(-1).to(torch.float64)
        for name, counts in result.counts.items():
            if name in totals:
                totals[name].add(counts)
            else:
                totals[name] = counts
        if result.energy_pj is not None:
            energy = result.energy_pj if energy is None else energy + result.energy_pj
        bar.update(1)
    return _Block(correct, totals, energy)


@torch.no_grad()
def evaluate_deployment(deployment: Deployment, split, chips: int = 16, seed: int = 1234, noise: bool = True,
                        batch_size: int = 64, progress: bool | None = None, first_chip: int = 0,
                        block: int | None = None) -> DeploymentReport:
    """Run ``split`` (a DatasetSplit of static inputs or of frames ``[N, T, ...]``) on chips ``first_chip .. first_chip + chips - 1`` of the
    deployment's profile drawn with ``seed``; batch ``b`` of size ``batch_size`` keys the
    dynamic noise, as in the training evaluation.

    Chips are sampled and run ``block`` at a time (default :func:`chip_block`, from the memory
    available), so memory stays bounded whatever ``chips``; the report is the same for every
    ``block``. Above :data:`PER_CHIP_LIMIT` chips it holds statistics only."""
    from tqdm.auto import tqdm

    if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
        raise ValueError(f"number of chips must be a positive integer, got {chips!r}")
    block = min(block or chip_block(deployment, chips, min(batch_size, max(len(split), 1)), split), chips)
    batches = split.batches(batch_size)
    n = len(split)
    stats = None if chips <= PER_CHIP_LIMIT else ChipStatistics(n, first_chip)
    accuracies: list[float] = []
    layer_counts: dict[str, dict[str, list[float]]] = {}
    energy: list[float] | None = None
    layer_energy: dict[str, list[float]] | None = None
    bar = tqdm(total=math.ceil(chips / block) * len(batches), desc="engine", leave=False,
               disable=None if progress is None else not progress)
    with bar:
        for start in range(first_chip, first_chip + chips, block):
            count = min(block, first_chip + chips - start)
            part = _run_block(deployment, batches, seed, start, count, noise, bar)
            counts = {name: {what: (getattr(c, what) / n).tolist() for what in _WHATS}
                      for name, c in part.totals.items()}
            block_energy = None if part.energy is None else (part.energy / n).tolist()
            block_layer_energy = None if part.energy is None else {
                name: (estimate_energy(deployment.profile.energy, c.spikes, c.synaptic_ops, c.neuron_updates)
                       / n).tolist() for name, c in part.totals.items()}
            if stats is not None:
                stats.add_block(part.correct.to(torch.int64).tolist(), counts, block_energy, block_layer_energy)
                continue
            accuracies += (part.correct / n).tolist()
            for name, layer in counts.items():
                for what, values in layer.items():
                    layer_counts.setdefault(name, {w: [] for w in _WHATS})[what] += values
            if block_energy is not None:
                energy = [] if energy is None else energy
                energy += block_energy
                layer_energy = layer_energy or {name: [] for name in block_layer_energy}
                for name, values in block_layer_energy.items():
                    layer_energy[name] += values
    indices = range(first_chip, first_chip + chips)
    if stats is not None:
        return DeploymentReport(deployment.profile.name, indices, [], n, statistics=stats)
    return DeploymentReport(deployment.profile.name, tuple(indices), accuracies, n, layer_counts, energy,
                            layer_energy)
