"""The integer inference engine: a deployment on many chip instances in one pass (DESIGN.md §4).

:class:`IntegerEngine` runs a :class:`~neurosim.export.Deployment` with integer tensors only.
Every state carries a leading chip dimension: ``[chips, batch, *neurons]``. Per chip it applies
the chip's thresholds, resets and decays (from the nominal values and the chip's variation,
through :mod:`neurosim.device.quantization`, exactly as the fake-quant training forward does),
dead neurons and stuck weights, and thermal and threshold noise drawn from the same seeded
streams (:class:`~neurosim.device.DynamicNoise`) and rounded to state units. Decays, saturation
and wrapping are :mod:`neurosim.device.fixedpoint`'s functions.

Synaptic sums run through float BLAS only where that is exact: a layer's bound
``fan_in * max|w| * max|x| + max|b|`` below 2^24 uses float32, below 2^53 float64, and otherwise
an int64 path (integer matmul; unfold for convolutions). The bound is computed at construction.

It counts per layer and chip: spikes, synaptic operations (one per spike and target synapse),
neuron updates, and saturation/wrap events of membrane and synaptic states, and estimates energy
from the profile's ``energy`` section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device.chips import ChipInstances, DynamicNoise, LayerShape, Perturbation
from neurosim.errors import NeurosimError
from neurosim.export.deployment import Deployment, LayerDeployment

FLOAT32_EXACT = fp.exact_float_bound(torch.float32)
FLOAT64_EXACT = fp.exact_float_bound(torch.float64)


def deployment_shapes(deployment: Deployment) -> dict[str, LayerShape]:
    """Layer shapes of a deployment for :func:`neurosim.device.sample_chips` (same names and shapes
    as the trained model's ``layer_shapes()``)."""
    return {layer.name: LayerShape(tuple(layer.output_shape), tuple(layer.weight.shape))
            for layer in deployment.layers}


@dataclass
class LayerCounts:
    """Per-chip counts of one layer over a run (tensors of shape ``[chips]``)."""

    spikes: Tensor
    synaptic_ops: Tensor
    neuron_updates: Tensor
    saturations: Tensor

    def add(self, other: LayerCounts) -> None:
        """Accumulate ``other`` into these counts."""
        for name in ("spikes", "synaptic_ops", "neuron_updates", "saturations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class EngineResult:
    """Output of :meth:`IntegerEngine.run`: logits ``[chips, batch, classes]``, the spikes of
    every layer and step when recorded (``[T, chips, batch, *neurons]``, int8), and counts."""

    logits: Tensor
    counts: dict[str, LayerCounts]
    spikes: dict[str, Tensor] = field(default_factory=dict)
    energy_pj: Tensor | None = None

    def predictions(self) -> Tensor:
        """Class predictions ``[chips, batch]``."""
        return self.logits.argmax(-1)


class _Layer:
    """A deployment layer with its per-chip integer parameters resolved."""

    def __init__(self, layer: LayerDeployment, deployment: Deployment, chips: ChipInstances | None,
                 n_chips: int) -> None:
        num = deployment.profile.numerics
        self.spec = layer
        var = chips.layers.get(layer.name) if chips is not None else None
        weight = layer.weight.to(torch.int64)
        self.per_chip_weight = var is not None and var.stuck is not None
        if self.per_chip_weight:
            q_max = fp.int_range(num.weight_bits)[1]
            stuck_codes = (var.stuck_value * q_max).to(torch.int64)
            weight = torch.where(var.stuck, stuck_codes, weight.unsqueeze(0).expand(n_chips, *weight.shape))
        self.weight = weight
        self.bias = None if layer.bias is None else layer.bias.to(torch.int64)
        bound = layer.sum_bound(deployment.input_bits, int(weight.abs().max()))  # stuck weights included
        if bound >= 1 << 63:
            raise NeurosimError(f"{layer.name}: synaptic sums can reach {bound}, beyond 64-bit integers")
        self.sum_dtype = (torch.float32 if bound < FLOAT32_EXACT else
                          torch.float64 if bound < FLOAT64_EXACT else torch.int64)
        if layer.readout:
            self.decay = quant.DecayRule.of(torch.tensor(layer.beta, dtype=torch.float32), num.decay)
            return

        # Per-chip codes follow the training forward's float32 arithmetic where that forward is
        # exact (states below 2^24); wider formats compute them in float64 so codes stay exact.
        dtype = quant.code_dtype(num)
        self.unit = layer.unit.to(dtype)

        def per_chip(quantity: str, nominal: float, clamp: bool = False) -> Tensor:
            value = torch.tensor(nominal, dtype=dtype)
            if clamp:
                value = value.clamp(0, 1)
            perturbation: Perturbation | None = None if var is None else getattr(var, quantity)
            if perturbation is None or perturbation.z is None:
                return value
            return perturbation.apply(value).to(dtype).unsqueeze(1)  # [chips, 1, *neurons]: over batch

        self.threshold = quant.threshold_codes(per_chip("v_threshold", layer.threshold), self.unit, num)
        self.v_reset = quant.reset_codes(per_chip("v_reset", layer.v_reset), self.unit, num)
        self.beta = per_chip("decay", layer.beta, clamp=True)
        self.decay = quant.DecayRule.of(self.beta, num.decay)
        self.synapse_decay = None if layer.synapse_decay is None else \
            quant.DecayRule.of(per_chip("synapse_decay", layer.synapse_decay), num.synapse_decay)
        self.v_init = torch.round(torch.tensor(layer.v_init, dtype=dtype) / self.unit)
        self.dead = None if var is None or var.dead is None else var.dead

    # ------------------------------------------------------------------ synapses

    def currents(self, x: Tensor) -> Tensor:
        """Integer currents ``[chips, batch, *neurons]`` for integer inputs ``[chips, batch, *in]``
        (or ``[1, batch, *in]`` shared by all chips)."""
        spec = self.spec
        chips, batch = x.shape[:2]
        if self.per_chip_weight:
            out = torch.stack([self._sum(x[min(c, chips - 1)], self.weight[c], spec) for c in range(self.weight.shape[0])])
        else:
            out = self._sum(x.flatten(0, 1), self.weight, spec)
            out = out.reshape(chips, batch, *out.shape[1:])
        if self.bias is not None:
            out = out + (self.bias if spec.kind == "linear" else self.bias.reshape(-1, 1, 1))
        return out

    def _sum(self, x: Tensor, weight: Tensor, spec: LayerDeployment) -> Tensor:
        dtype = self.sum_dtype
        if spec.kind == "linear":
            if dtype == torch.int64:
                return x.to(torch.int64) @ weight.T
            return (x.to(dtype) @ weight.to(dtype).T).to(torch.int64)
        if dtype == torch.int64:  # exact integer convolution: unfold, then integer matmul
            k = weight.shape[-1]
            cols = F.unfold(x.to(torch.float64), k, padding=spec.padding, stride=spec.stride).to(torch.int64)
            out = weight.reshape(weight.shape[0], -1) @ cols
            return out.reshape(x.shape[0], weight.shape[0], *spec.output_shape[1:])
        return F.conv2d(x.to(dtype), weight.to(dtype), None, spec.stride, spec.padding).to(torch.int64)

    def synaptic_ops(self, x: Tensor) -> Tensor:
        """Synaptic operations per chip (:func:`count_synaptic_ops`)."""
        spec = self.spec
        return count_synaptic_ops(x, spec.kind, tuple(spec.weight.shape), spec.stride, spec.padding)


def count_synaptic_ops(x: Tensor, kind: str, weight_shape: tuple[int, ...], stride: int = 1,
                       padding: int = 0) -> Tensor:
    """Synaptic operations of inputs ``x`` ``[lead, batch, *in]``, summed per ``lead`` entry:
    every non-zero input (a spike, or a non-zero input code) times the synapses it reaches —
    all outputs of a dense layer, the kernel positions that cover it in a convolution."""
    active = (x != 0).to(torch.float64)
    if kind == "linear":
        return active.flatten(2).sum(-1).sum(-1) * weight_shape[0]
    k = weight_shape[-1]
    ones = torch.ones(1, weight_shape[1], k, k, dtype=torch.float64)
    reach = F.conv2d(active.flatten(0, 1), ones, None, stride, padding)
    return reach.reshape(x.shape[0], -1).sum(-1) * weight_shape[0]


def check_input(x: Tensor, deployment: Deployment) -> bool:
    """True if ``x`` is frames ``[batch, T, *input_shape]`` with T the deployment's timesteps,
    False if it is static input ``[batch, *input_shape]``; any other shape is a NeurosimError."""
    shape = tuple(deployment.input_shape)
    if x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape:
        return False
    if x.dim() == len(shape) + 2 and tuple(x.shape[2:]) == shape and x.shape[1] == deployment.timesteps:
        return True
    raise NeurosimError(f"input of shape {tuple(x.shape)}: expected [batch, {', '.join(map(str, shape))}] or frames "
                        f"[batch, {deployment.timesteps}, {', '.join(map(str, shape))}]")


def estimate_energy(energy, spikes: Tensor, synaptic_ops: Tensor, neuron_updates: Tensor) -> Tensor | None:
    """``synops * e_syn + spikes * e_spike + updates * e_update`` in pJ from a profile's
    ``energy`` section; None when it has no figures."""
    if energy.per_synaptic_op_pj is None and energy.per_spike_pj is None and energy.per_neuron_update_pj is None:
        return None
    return (synaptic_ops * (energy.per_synaptic_op_pj or 0.0) + spikes * (energy.per_spike_pj or 0.0)
            + neuron_updates * (energy.per_neuron_update_pj or 0.0))


class IntegerEngine:
    """Run ``deployment`` bit-accurately on the stacked chip instances ``chips``.

    ``chips=None`` runs one nominal chip (no variation, no noise). Dynamic noise comes from
    ``DynamicNoise(profile, chips.seed, chips.indices)``, the stream the training forward and
    the evaluation use for those chips; ``noise=False`` switches it off.
    """

    def __init__(self, deployment: Deployment, chips: ChipInstances | None = None, noise: bool = True) -> None:
        self.deployment = deployment
        self.profile = deployment.profile
        self.numerics = deployment.profile.numerics
        if chips is not None:
            missing = set(deployment_shapes(deployment)) - set(chips.layers)
            if missing:
                raise NeurosimError(f"chip instances lack layers {', '.join(sorted(missing))} of the deployment")
            for name, shape in deployment_shapes(deployment).items():
                if chips.shapes[name] != shape:
                    raise NeurosimError(f"{name}: chips were sampled for {chips.shapes[name]}, the deployment "
                                        f"has {shape}")
        self.chips = chips
        self.n_chips = len(chips) if chips is not None else 1
        self.noise = DynamicNoise(self.profile, chips.seed, chips.indices) if chips is not None and noise else None
        self.layers = [_Layer(layer, deployment, chips, self.n_chips) for layer in deployment.layers]

    @property
    def sum_dtypes(self) -> dict[str, torch.dtype]:
        """The exact arithmetic each layer's synaptic sums use (float32, float64 or int64)."""
        return {layer.spec.name: layer.sum_dtype for layer in self.layers}

    def encode(self, x: Tensor) -> Tensor:
        """Input codes of the first layer: ``round(x / input_step)`` saturated to input_bits."""
        first = self.deployment.layers[0]
        bits = self.deployment.input_bits
        if bits > 24:  # float32 cannot hold such codes exactly
            x = x.to(torch.float64)
        return fp.quantize(x, first.input_step, bits)

    @torch.no_grad()
    def run(self, x: Tensor, batch: int = 0, record: bool = False) -> EngineResult:
        """Integer inference of inputs ``x`` in [0, 1]: ``[batch, *input_shape]`` repeated over the
        time steps, or frames ``[batch, T, *input_shape]`` (``T`` = the deployment's timesteps, one
        frame per step, each encoded by the same input rule); ``batch`` keys the dynamic noise
        (same as the training forward's)."""
        deployment = self.deployment
        steps, chips = deployment.timesteps, self.n_chips
        frames = check_input(x, deployment)
        codes = self.encode(x).unsqueeze(0)  # [1, batch, ...]: the same input for every chip
        counts: dict[str, LayerCounts] = {}
        spikes_out: dict[str, Tensor] = {}
        # static input: one tensor for all steps; frames: one [1, batch, *in] tensor per step
        signal: list[Tensor] | Tensor = [codes[:, :, t] for t in range(steps)] if frames else codes
        for layer in self.layers[:-1]:
            signal = self._spiking_layer(layer, signal, steps, batch, counts, spikes_out, record)
        logits = self._readout(self.layers[-1], signal, steps, counts)
        result = EngineResult(logits, counts, spikes_out)
        result.energy_pj = self.energy(counts)
        return result

    def _inputs(self, signal: list[Tensor] | Tensor, t: int, layer: _Layer) -> Tensor:
        x = signal if isinstance(signal, Tensor) else signal[t]
        if layer.spec.kind == "linear" and x.dim() > 3:
            x = x.flatten(2)
        return x

    def _spiking_layer(self, layer: _Layer, signal, steps: int, batch: int, counts: dict[str, LayerCounts],
                       spikes_out: dict[str, Tensor], record: bool) -> list[Tensor]:
        spec, num = layer.spec, self.numerics
        chips = self.n_chips
        static = isinstance(signal, Tensor)
        shared_current = layer.currents(self._inputs(signal, 0, layer)) if static else None
        batch_size = (signal if static else signal[0]).shape[1]
        shape = (chips, batch_size, *spec.output_shape)
        v = torch.zeros(shape, dtype=torch.int64) + layer.v_init.to(torch.int64)
        i_syn = torch.zeros(shape, dtype=torch.int64) if layer.synapse_decay is not None else None
        refractory = torch.zeros(shape, dtype=torch.int64) if spec.refractory else None
        theta = layer.threshold.to(torch.int64)
        v_reset = layer.v_reset.to(torch.int64)
        c = LayerCounts(*(torch.zeros(chips, dtype=torch.float64) for _ in range(4)))
        shared_ops = layer.synaptic_ops(self._inputs(signal, 0, layer)) if static else None
        outputs, recorded = [], []
        for t in range(steps):
            x = self._inputs(signal, t, layer)
            current = shared_current if static else layer.currents(x)
            # a shared input ([1, ...]) counts for every chip
            c.synaptic_ops += shared_ops if static else layer.synaptic_ops(x)
            current = current.expand(shape) if current.shape[0] != chips else current
            if i_syn is not None:
                raw = layer.synapse_decay(i_syn) + current
                c.saturations += fp.out_of_range(raw, num.synapse_bits).flatten(1).sum(-1)
                i_syn = fp.fit_to_bits(raw, num.synapse_bits, num.synapse_overflow or num.overflow)
                current = i_syn
            raw = layer.decay(v) + current
            noise = self._noise("thermal", spec, t, (batch_size, *spec.output_shape), batch)
            if noise is not None:
                raw = raw + noise
            c.saturations += fp.out_of_range(raw, num.membrane_bits).flatten(1).sum(-1)
            u = fp.fit_to_bits(raw, num.membrane_bits, num.overflow)
            step_theta = theta
            jitter = self._noise("v_threshold", spec, t, (batch_size, *spec.output_shape), batch)
            if jitter is not None:
                step_theta = theta + jitter
            s = u >= step_theta
            if refractory is not None:
                resting = refractory > 0
                s = s & ~resting
                u = torch.where(resting, v, u)
            if layer.dead is not None:
                s = s & ~layer.dead.reshape(chips, 1, *spec.output_shape)
            if spec.reset == "hard":
                v = torch.where(s, v_reset, u)
            else:
                v = u - step_theta * s.to(torch.int64)
            if refractory is not None:
                refractory = torch.where(s, torch.full_like(refractory, spec.refractory), (refractory - 1).clamp(min=0))
            c.spikes += s.flatten(1).sum(-1).to(torch.float64)
            c.neuron_updates += float(batch_size * math.prod(spec.output_shape))
            out = s.to(torch.int64)
            if record:
                recorded.append(s.to(torch.int8))
            if spec.pool:
                pooled = F.max_pool2d(out.flatten(0, 1).to(torch.float32), spec.pool)
                out = pooled.to(torch.int64).reshape(chips, batch_size, *pooled.shape[1:])
            outputs.append(out)
        counts[spec.name] = c
        if record:
            spikes_out[spec.name] = torch.stack(recorded)
        return outputs

    def _noise(self, kind: str, spec: LayerDeployment, step: int, shape: tuple[int, ...], batch: int) -> Tensor | None:
        if self.noise is None:
            return None
        if kind == "v_threshold":
            drawn = self.noise.threshold_jitter(spec.name, step, shape, batch)
        else:
            drawn = self.noise.draw(kind, spec.name, step, shape, batch)
        return None if drawn is None else torch.round(drawn / spec.unit).to(torch.int64)

    def _readout(self, layer: _Layer, signal, steps: int, counts: dict[str, LayerCounts]) -> Tensor:
        spec, num = layer.spec, self.numerics
        chips = self.n_chips
        c = LayerCounts(*(torch.zeros(chips, dtype=torch.float64) for _ in range(4)))
        static = isinstance(signal, Tensor)
        shared = layer.currents(self._inputs(signal, 0, layer)) if static else None
        u = total = None
        for t in range(steps):
            x = self._inputs(signal, t, layer)
            current = shared if static else layer.currents(x)
            c.synaptic_ops += layer.synaptic_ops(x)
            if current.shape[0] != chips:
                current = current.expand(chips, *current.shape[1:])
            if u is None:
                u = torch.zeros_like(current)
                total = torch.zeros_like(current)
            raw = layer.decay(u) + current
            c.saturations += fp.out_of_range(raw, num.membrane_bits).flatten(1).sum(-1)
            u = fp.fit_to_bits(raw, num.membrane_bits, num.overflow)
            total = total + u
            c.neuron_updates += float(u.shape[1] * u.shape[2])
        counts[spec.name] = c
        return total.to(torch.float32) / steps * spec.unit

    def energy(self, counts: dict[str, LayerCounts]) -> Tensor | None:
        """Estimated energy per chip in pJ from the profile's ``energy`` section (None if it has
        no figures)."""
        total = None
        for c in counts.values():
            part = estimate_energy(self.profile.energy, c.spikes, c.synaptic_ops, c.neuron_updates)
            if part is None:
                return None
            total = part if total is None else total + part
        return total
