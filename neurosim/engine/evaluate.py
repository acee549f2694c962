"""Evaluate a deployment on a dataset split with N chip instances in one vectorised pass.

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


@dataclass
class DeploymentReport:
    """Per-chip accuracy and per-layer counts (per sample) of a deployment on a dataset."""

    profile: str
    chip_indices: tuple[int, ...]
    accuracies: list[float]
    samples: int
    layer_counts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    energy_pj_per_sample: list[float] | None = None
    layer_energy_pj: dict[str, list[float]] | None = None
    """Per layer, each chip's estimated energy per sample in pJ (None: the profile has no figures)."""

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over chips."""
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std_accuracy(self) -> float:
        """Standard deviation of accuracy over chips (population)."""
        m = self.mean_accuracy
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies))

    def total_saturations(self) -> float:
        """Saturation and wrap events over all layers and chips (per sample, summed)."""
        return sum(sum(c["saturations"]) for c in self.layer_counts.values())

    def overflowing_layers(self) -> dict[str, float]:
        """Layers whose membrane or synaptic states saturated or wrapped (integer overflow),
        mapped to the mean over chips of their events per sample."""
        return {name: self.mean_over_chips(name, "saturations") for name in self.layer_counts
                if sum(self.layer_counts[name]["saturations"]) > 0}

    def mean_over_chips(self, layer: str, what: str) -> float:
        """Mean over chips of a per-sample count of a layer."""
        values = self.layer_counts[layer][what]
        return sum(values) / len(values)

    def summary(self) -> str:
        """A short human-readable report: accuracy over chips, and per layer the means over chips
        of spikes, synaptic operations, saturations and (when the profile has figures) energy."""
        energy = self.layer_energy_pj is not None
        lines = [f"{len(self.accuracies)} chips of {self.profile}, {self.samples} samples: accuracy "
                 f"{self.mean_accuracy:.4f} +- {self.std_accuracy:.4f} (min {min(self.accuracies):.4f}, "
                 f"max {max(self.accuracies):.4f})",
                 f"{'layer':<10} {'spikes/sample':>14} {'synops/sample':>14} {'saturations/sample':>19}"
                 + (f" {'energy pJ/sample':>17}" if energy else "")]
        for name in self.layer_counts:
            lines.append(f"{name:<10} {self.mean_over_chips(name, 'spikes'):>14.2f} "
                         f"{self.mean_over_chips(name, 'synaptic_ops'):>14.1f} "
                         f"{self.mean_over_chips(name, 'saturations'):>19.3f}"
                         + (f" {_mean(self.layer_energy_pj[name]):>17.1f}" if energy else ""))
        overflow = self.overflowing_layers()
        if overflow:
            lines.append("integer overflow (saturation/wrap events per sample): "
                         + ", ".join(f"{name} {events:.3g}" for name, events in overflow.items()))
        else:
            lines.append("integer overflow: none")
        if self.energy_pj_per_sample is not None:
            lines.append(f"energy: {_mean(self.energy_pj_per_sample) / 1e3:.3f} nJ per sample (mean over chips; "
                         f"{self.profile}'s energy per operation times the engine's counts)")
        else:
            lines.append(f"energy: unknown (profile {self.profile} has no energy figures)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as JSON-ready data: accuracy statistics over chips, totals per sample (sums
        over layers, means over chips), per-layer means, and per-chip values. Unknown energy and
        non-finite numbers are None."""
        layers = {name: {f"{key}_per_sample": _finite(self.mean_over_chips(name, what))
                         for key, what in _COUNTS} for name in self.layer_counts}
        for name in layers:
            layers[name]["energy_pj_per_sample"] = (None if self.layer_energy_pj is None
                                                    else _finite(_mean(self.layer_energy_pj[name])))
        return {
            "profile": self.profile, "samples": self.samples, "chips": len(self.accuracies),
            "chip_indices": list(self.chip_indices),
            "accuracy_mean": _finite(self.mean_accuracy), "accuracy_std": _finite(self.std_accuracy),
            "accuracy_min": _finite(min(self.accuracies)), "accuracy_max": _finite(max(self.accuracies)),
            **{f"{key}_per_sample": _finite(sum(layer[f"{key}_per_sample"] or 0.0 for layer in layers.values()))
               for key, _ in _COUNTS},
            "energy_pj_per_sample": (None if self.energy_pj_per_sample is None
                                     else _finite(_mean(self.energy_pj_per_sample))),
            "layers": layers,
            "per_chip": {"accuracy": [_finite(a) for a in self.accuracies],
                         "energy_pj_per_sample": (None if self.energy_pj_per_sample is None
                                                  else [_finite(e) for e in self.energy_pj_per_sample])},
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


@torch.no_grad()
def evaluate_deployment(deployment: Deployment, split, chips: int = 16, seed: int = 1234, noise: bool = True,
                        batch_size: int = 64, progress: bool | None = None, first_chip: int = 0) -> DeploymentReport:
    """Run ``split`` (a DatasetSplit of static inputs or of frames ``[N, T, ...]``) on chips ``first_chip .. first_chip + chips - 1`` of the
    deployment's profile drawn with ``seed``; batch ``b`` of size ``batch_size`` keys the
    dynamic noise, as in the training evaluation."""
    from tqdm.auto import tqdm

    instances = sample_chips(deployment.profile, deployment_shapes(deployment), n=chips, seed=seed, start=first_chip)
    engine = IntegerEngine(deployment, instances, noise=noise)
    n = len(split)
    correct = torch.zeros(chips, dtype=torch.float64)
    totals: dict[str, LayerCounts] = {}
    energy = None
    batches = split.batches(batch_size)
    for b, (x, y) in enumerate(tqdm(batches, desc="engine", leave=False,
                                    disable=None if progress is None else not progress)):
        result = engine.run(x, batch=b)
        correct += (result.predictions() == y.unsqueeze(0)).sum(-1).to(torch.float64)
        for name, counts in result.counts.items():
            if name in totals:
                totals[name].add(counts)
            else:
                totals[name] = counts
        if result.energy_pj is not None:
            energy = result.energy_pj if energy is None else energy + result.energy_pj
    layer_counts = {name: {what: (getattr(c, what) / n).tolist()
                           for what in ("spikes", "synaptic_ops", "neuron_updates", "saturations")}
                    for name, c in totals.items()}
    layer_energy = {name: estimate_energy(deployment.profile.energy, c.spikes, c.synaptic_ops, c.neuron_updates)
                    for name, c in totals.items()}
    return DeploymentReport(deployment.profile.name, instances.indices, (correct / n).tolist(), n, layer_counts,
                            None if energy is None else (energy / n).tolist(),
                            None if energy is None else {name: (e / n).tolist() for name, e in layer_energy.items()})
