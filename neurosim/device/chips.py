"""Chip instances: seeded samples of a profile's static variation, faults and dynamic noise.

A chip instance is one manufactured chip: its thresholds, resets, decays and weights deviate
from the nominal values by a fixed pattern drawn once (``variation``), some neurons are dead and
some weights stuck (``faults``). :func:`sample_chips` draws ``n`` instances for a network's
layer shapes and stacks them along a leading chip dimension, so that one pass of the engine or
the training forward simulates all of them.

Reproducibility: every draw comes from its own NumPy PCG64 stream keyed by
``(seed, chip index, layer name, quantity)``. Chip ``k`` is therefore the same whether it is
sampled alone or in a batch, whatever the other layers are, on any machine (PCG64 and
SeedSequence are platform independent). Dynamic noise (:class:`DynamicNoise`) is keyed the same
way plus ``(batch, step)``.

Draws are kept as standard normals ``z`` with the profile's ``sigma``; a value is perturbed as
``nominal + sigma * z`` (absolute) or ``nominal * (1 + sigma * z)`` (relative, seed 002's
mismatch level). Scaling every sigma (a sweep's noise scale) thus scales the same pattern.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from neurosim.device.profile import DeviceProfile, Sigma

# Stream identifiers: fixed forever, so that adding a quantity never changes another's draws.
_STREAM = {"v_threshold": 0, "v_reset": 1, "decay": 2, "synapse_decay": 3, "weight": 4,
           "dead": 5, "stuck": 6, "stuck_value": 7}
_NOISE_STREAM = {"thermal": 100, "v_threshold": 101, "read": 102}


@dataclass(frozen=True)
class LayerShape:
    """Shape of one layer as a chip sees it: its neurons and its weight tensor (None for a
    layer without weights). Neuron-level variation has shape ``neurons``; weight mismatch and
    stuck weights have shape ``weights``."""

    neurons: tuple[int, ...]
    weights: tuple[int, ...] | None = None

    @staticmethod
    def linear(in_features: int, out_features: int) -> LayerShape:
        """A dense layer: ``out_features`` neurons, weights ``[out, in]``."""
        return LayerShape((out_features,), (out_features, in_features))

    @staticmethod
    def of(spec: LayerShape | int | Iterable[int]) -> LayerShape:
        """Coerce an int (neuron count) or tuple (neuron shape) to a LayerShape."""
        if isinstance(spec, LayerShape):
            return spec
        if isinstance(spec, int):
            return LayerShape((spec,))
        return LayerShape(tuple(int(s) for s in spec))


@dataclass(frozen=True)
class Perturbation:
    """Per-chip deviation of a nominal value: ``nominal + sigma * z`` or, when ``relative``,
    ``nominal * (1 + sigma * z)``, then clamped to ``bounds``. ``z`` is ``[chips, *shape]``
    standard normals, or None when sigma is 0 (no storage for an ideal chip)."""

    z: Tensor | None
    sigma: float = 0.0
    relative: bool = False
    bounds: tuple[float | None, float | None] = (None, None)

    def apply(self, nominal: Tensor | float) -> Tensor:
        """The perturbed value, broadcast to ``[chips, *shape]`` when ``z`` is present."""
        nominal = torch.as_tensor(nominal, dtype=self.z.dtype if self.z is not None else None)
        if self.z is None:
            out = nominal
        elif self.relative:
            out = nominal * (1 + self.sigma * self.z)
        else:
            out = nominal + self.sigma * self.z
        lo, hi = self.bounds
        return out.clamp(lo, hi) if lo is not None or hi is not None else out

    def select(self, index: Tensor) -> Perturbation:
        """The chips ``index`` of this perturbation."""
        return Perturbation(None if self.z is None else self.z[index], self.sigma, self.relative, self.bounds)


@dataclass(frozen=True)
class LayerVariation:
    """Static variation and faults of one layer on a stack of chips (leading dim = chip)."""

    v_threshold: Perturbation
    v_reset: Perturbation
    decay: Perturbation
    synapse_decay: Perturbation
    weight: Perturbation
    dead: Tensor | None = None
    """``[chips, *neurons]`` bool: neuron never fires. None when the profile has no dead neurons."""
    stuck: Tensor | None = None
    """``[chips, *weights]`` bool: weight is stuck. None when the profile has no stuck weights."""
    stuck_value: Tensor | None = None
    """``[chips, *weights]`` in {-1, 0, 1}: stuck weight as a fraction of the largest weight."""

    def select(self, index: Tensor) -> LayerVariation:
        """The chips ``index`` of this layer's variation."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]
        return LayerVariation(self.v_threshold.select(index), self.v_reset.select(index),
                              self.decay.select(index), self.synapse_decay.select(index),
                              self.weight.select(index), pick(self.dead), pick(self.stuck),
                              pick(self.stuck_value))

    def apply_weight(self, w: Tensor, w_max: Tensor | float) -> Tensor:
        """``w`` as these chips realise it: mismatch applied, stuck weights forced to
        ``stuck_value * w_max``. Returns ``[chips, *w.shape]``."""
        out = self.weight.apply(w)
        if self.weight.z is None:
            out = out.expand(self.n_chips, *w.shape) if self.n_chips else out
        if self.stuck is not None:
            out = torch.where(self.stuck, self.stuck_value * w_max, out)
        return out

    @property
    def n_chips(self) -> int:
        """Number of chips, 0 when nothing is stored per chip (ideal chip)."""
        for t in (self.v_threshold.z, self.v_reset.z, self.decay.z, self.synapse_decay.z,
                  self.weight.z, self.dead, self.stuck):
            if t is not None:
                return t.shape[0]
        return 0


@dataclass(frozen=True)
class ChipInstances:
    """``len(indices)`` chip instances of one profile, stacked along a leading chip dimension.

    ``chips[k]`` (or ``chips.select([...])``) is the sub-stack of the given positions; it
    equals what :func:`sample_chips` returns for those chip indices alone.
    """

    profile: DeviceProfile
    seed: int
    indices: tuple[int, ...]
    shapes: dict[str, LayerShape]
    layers: dict[str, LayerVariation] = field(repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int | slice | list[int]) -> ChipInstances:
        if isinstance(position, int):
            position = [position]
        return self.select(position)

    def select(self, positions: list[int] | slice) -> ChipInstances:
        """The chips at ``positions`` (positions in this stack, not chip indices)."""
        index = torch.arange(len(self.indices))[positions]
        return ChipInstances(self.profile, self.seed, tuple(self.indices[i] for i in index.tolist()),
                             self.shapes, {name: v.select(index) for name, v in self.layers.items()})

    def thresholds(self, layer: str, nominal: Tensor | float | None = None) -> Tensor:
        """Per-chip thresholds of ``layer`` (nominal: the profile's ``v_threshold``)."""
        base = self.profile.neuron.v_threshold if nominal is None else nominal
        return self._full(layer, self.layers[layer].v_threshold.apply(base))

    def resets(self, layer: str, nominal: Tensor | float | None = None) -> Tensor:
        """Per-chip reset potentials of ``layer`` (nominal: the profile's ``v_reset``)."""
        base = self.profile.neuron.v_reset if nominal is None else nominal
        return self._full(layer, self.layers[layer].v_reset.apply(base))

    def decays(self, layer: str, nominal: Tensor | float | None = None) -> Tensor:
        """Per-chip membrane decay factors beta of ``layer``, clamped to [0, 1]."""
        base = self.profile.beta if nominal is None else nominal
        return self._full(layer, self.layers[layer].decay.apply(base))

    def statistics(self) -> list[dict[str, float | str | int]]:
        """Measured mean and standard deviation over chips and neurons of each layer's threshold,
        reset and decay, beside the profile's nominal value and the sigma it implies, plus the
        measured fractions of dead neurons and stuck weights. One row per layer and quantity."""
        rows: list[dict[str, float | str | int]] = []
        neuron, var = self.profile.neuron, self.profile.variation
        quantities = (("v_threshold", self.thresholds, neuron.v_threshold, var.v_threshold),
                      ("v_reset", self.resets, neuron.v_reset, var.v_reset),
                      ("decay", self.decays, self.profile.beta, var.decay))
        for layer in self.layers:
            for name, values_of, nominal, spec in quantities:
                values = values_of(layer).double()
                sigma = 0.0 if spec is None else spec.sigma * (abs(nominal) if spec.relative else 1.0)
                rows.append({"layer": layer, "quantity": name, "count": values.numel(),
                             "nominal": float(nominal), "sigma": sigma,
                             "mean": values.mean().item(), "std": values.std(correction=1).item()
                             if values.numel() > 1 else 0.0})
            variation = self.layers[layer]
            weight = variation.weight
            if weight.z is not None:  # relative: the gain 1 + sigma z; absolute: the offset sigma z
                nominal = 1.0 if weight.relative else 0.0
                values = weight.apply(nominal).double()
                rows.append({"layer": layer, "quantity": "weight_gain" if weight.relative else "weight_offset",
                             "count": values.numel(), "nominal": nominal, "sigma": weight.sigma,
                             "mean": values.mean().item(), "std": values.std(correction=1).item()})
            for name, mask, rate in (("dead_neurons", variation.dead, self.profile.faults.dead_neurons),
                                     ("stuck_weights", variation.stuck, self.profile.faults.stuck_weights)):
                if mask is not None:
                    rows.append({"layer": layer, "quantity": name, "count": mask.numel(),
                                 "nominal": rate, "sigma": 0.0, "mean": mask.double().mean().item(),
                                 "std": 0.0})
        return rows

    def _full(self, layer: str, value: Tensor) -> Tensor:
        shape = (len(self), *self.shapes[layer].neurons)
        return value.expand(shape) if value.shape != shape else value


def sample_chips(profile: DeviceProfile, shapes: Mapping[str, LayerShape | int | Iterable[int]],
                 n: int = 1, seed: int = 0, start: int = 0,
                 dtype: torch.dtype = torch.float32) -> ChipInstances:
    """Draw chips ``start .. start + n - 1`` of ``profile`` for layers of the given shapes.

    ``shapes`` maps layer names to :class:`LayerShape` (or a neuron count / shape). Every
    quantity of every layer of every chip has its own seeded stream, so chip ``k`` equals the
    chip sampled alone with ``start=k, n=1``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of chips must be a positive integer, got {n!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"first chip index must be a non-negative integer, got {start!r}")
    indices = tuple(range(start, start + n))
    layer_shapes = {str(name): LayerShape.of(s) for name, s in shapes.items()}
    layers = {name: _sample_layer(profile, name, shape, indices, seed, dtype)
              for name, shape in layer_shapes.items()}
    return ChipInstances(profile, seed, indices, layer_shapes, layers)


def _rng(seed: int, chip: int, layer: str, stream: int) -> np.random.Generator:
    key = (chip, zlib.crc32(layer.encode("utf-8")), stream)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _normals(spec: Sigma | None, shape: tuple[int, ...] | None, seed: int, layer: str, stream: str,
             indices: tuple[int, ...], dtype: torch.dtype,
             bounds: tuple[float | None, float | None] = (None, None)) -> Perturbation:
    if spec is None or spec.sigma == 0 or shape is None:
        return Perturbation(None, 0.0, spec.relative if spec else False, bounds)
    z = np.stack([_rng(seed, c, layer, _STREAM[stream]).standard_normal(shape) for c in indices])
    return Perturbation(torch.from_numpy(z).to(dtype), spec.sigma, spec.relative, bounds)


def _uniforms(shape: tuple[int, ...], seed: int, layer: str, stream: str,
              indices: tuple[int, ...]) -> np.ndarray:
    return np.stack([_rng(seed, c, layer, _STREAM[stream]).random(shape) for c in indices])


def _sample_layer(profile: DeviceProfile, name: str, shape: LayerShape, indices: tuple[int, ...],
                  seed: int, dtype: torch.dtype) -> LayerVariation:
    var, faults = profile.variation, profile.faults
    neurons, weights = shape.neurons, shape.weights
    dead = stuck = stuck_value = None
    if faults.dead_neurons > 0:
        dead = torch.from_numpy(_uniforms(neurons, seed, name, "dead", indices) < faults.dead_neurons)
    if faults.stuck_weights > 0 and weights is not None:
        stuck = torch.from_numpy(_uniforms(weights, seed, name, "stuck", indices) < faults.stuck_weights)
        stuck_value = _stuck_values(faults.stuck_at, weights, seed, name, indices).to(dtype)
    return LayerVariation(
        v_threshold=_normals(var.v_threshold, neurons, seed, name, "v_threshold", indices, dtype),
        v_reset=_normals(var.v_reset, neurons, seed, name, "v_reset", indices, dtype),
        decay=_normals(var.decay, neurons, seed, name, "decay", indices, dtype, (0.0, 1.0)),
        synapse_decay=_normals(var.synapse_decay, neurons, seed, name, "synapse_decay", indices,
                               dtype, (0.0, 1.0)),
        weight=_normals(var.weight, weights, seed, name, "weight", indices, dtype),
        dead=dead, stuck=stuck, stuck_value=stuck_value)


def _stuck_values(stuck_at: str, shape: tuple[int, ...], seed: int, layer: str,
                  indices: tuple[int, ...]) -> Tensor:
    full = (len(indices), *shape)
    if stuck_at == "zero":
        return torch.zeros(full)
    if stuck_at == "max":
        return torch.ones(full)
    if stuck_at == "min":
        return -torch.ones(full)
    signs = _uniforms(shape, seed, layer, "stuck_value", indices) < 0.5
    return torch.from_numpy(np.where(signs, 1.0, -1.0))


class DynamicNoise:
    """Noise drawn anew every time step for a stack of chips (docs/design.md §3 ``noise``).

    ``perturb("thermal", layer, step, current)`` adds thermal noise to the input current;
    ``"v_threshold"`` gives cycle-to-cycle threshold noise, ``"read"`` weight read noise. Each
    (chip, layer, kind, batch, step) has its own seeded torch generator, so a draw does not depend
    on the order of calls or on which other chips are simulated.
    """

    def __init__(self, profile: DeviceProfile, seed: int, chip_indices: Iterable[int]) -> None:
        self.profile = profile
        self.seed = seed
        self.chip_indices = tuple(chip_indices)

    def spec(self, kind: str) -> Sigma | None:
        """The profile's sigma for noise ``kind`` (thermal, v_threshold, read), None if absent."""
        if kind not in _NOISE_STREAM:
            raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(_NOISE_STREAM)}")
        spec = getattr(self.profile.noise, kind)
        return spec if spec is not None and spec.sigma > 0 else None

    def draw(self, kind: str, layer: str, step: int, shape: tuple[int, ...], batch: int = 0,
             dtype: torch.dtype = torch.float32) -> Tensor | None:
        """``sigma * z`` of shape ``[chips, *shape]`` for one step, or None when the profile has
        no such noise."""
        spec = self.spec(kind)
        if spec is None:
            return None
        out = torch.empty((len(self.chip_indices), *shape), dtype=dtype)
        layer_key = zlib.crc32(layer.encode("utf-8"))
        for row, chip in enumerate(self.chip_indices):
            state = np.random.SeedSequence(
                self.seed, spawn_key=(chip, layer_key, _NOISE_STREAM[kind], batch, step)).generate_state(2)
            gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            out[row] = torch.randn(shape, generator=gen, dtype=dtype)
        return out * spec.sigma

    def threshold_jitter(self, layer: str, step: int, shape: tuple[int, ...], batch: int = 0,
                         dtype: torch.dtype = torch.float32) -> Tensor | None:
        """This step's cycle-to-cycle threshold noise ``[chips, *shape]`` in float units: ``sigma z``,
        times ``|v_threshold|`` of the profile when the spread is relative; None without it."""
        drawn = self.draw("v_threshold", layer, step, shape, batch, dtype)
        if drawn is not None and self.spec("v_threshold").relative:
            drawn = drawn * abs(self.profile.neuron.v_threshold)
        return drawn

    def perturb(self, kind: str, layer: str, step: int, value: Tensor, batch: int = 0) -> Tensor:
        """``value`` with this step's noise: ``value + sigma z`` or ``value (1 + sigma z)``.
        ``value`` has shape ``[chips, *shape]`` (or broadcasts to it)."""
        spec = self.spec(kind)
        if spec is None:
            return value
        shape = tuple(value.shape[1:]) if value.dim() and value.shape[0] == len(self.chip_indices) \
            else tuple(value.shape)
        noise = self.draw(kind, layer, step, shape, batch, value.dtype if value.is_floating_point()
                          else torch.float32)
        return value * (1 + noise) if spec.relative else value + noise
