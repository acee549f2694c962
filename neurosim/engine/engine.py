"""The integer inference engine: a deployment on many chip instances in one pass (docs/design.md §4).

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
Neuron states are held the same way: in float32 while every intermediate value of the step
(decayed state, state plus current and noise, multiply-decay product, readout sum over time)
stays below 2^24, float64 below 2^53, else int64 — integer values held exactly, so every
choice gives the same integers; float32 is simply the fastest on a CPU.

Speed: the sums of a layer run for all time steps in one GEMM or convolution (a static input's
first layer once), weights are converted once, and a large stack of chips is run in blocks
(results equal one pass over all chips). Layers of current-based neurons with one spike a step
and a saturating float32 membrane run in a compiled loop (:mod:`neurosim.engine.fused`, the same
integers), and a dense layer whose inputs differ per chip takes chip 0's GEMM plus each other
chip's input differences: the chips of one profile mostly spike alike. ``fused=False`` runs
every layer as tensor steps (the tests compare both); recording states also does.

It counts per layer and chip: spikes, synaptic operations (one per spike and target synapse),
neuron updates, and saturation/wrap events of membrane and synaptic states, and estimates energy
from the profile's ``energy`` section.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device.chips import ChipInstances, DynamicNoise, LayerShape, Perturbation
from neurosim.engine import fused as compiled  # the compiled loops of neurosim/engine/fused.py
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

    @staticmethod
    def start(chips: int, synaptic_ops: Tensor, neuron_updates: int) -> LayerCounts:
        """The counts of a layer before its steps run: its synaptic operations (the same on every
        chip) and neuron updates known, no spikes or saturations yet."""
        zeros = torch.zeros(chips, dtype=torch.float64)
        return LayerCounts(zeros, synaptic_ops.expand(chips).clone(),
                           torch.full((chips,), float(neuron_updates), dtype=torch.float64), zeros.clone())

    def add(self, other: LayerCounts) -> None:
        """Accumulate ``other`` into these counts."""
        for name in ("spikes", "synaptic_ops", "neuron_updates", "saturations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class EngineResult:
    """Output of :meth:`IntegerEngine.run`: logits ``[chips, batch, classes]``, the spikes of
    every layer and step when recorded (``[T, chips, batch, *neurons]``, int8 spike counts, a
    ``lif`` readout included), counts, and when asked the states of every layer and step
    (``states[name]["v"]``: membrane after the reset, ``["i"]``: synaptic state; int64)."""

    logits: Tensor
    counts: dict[str, LayerCounts]
    spikes: dict[str, Tensor] = field(default_factory=dict)
    energy_pj: Tensor | None = None
    states: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def predictions(self) -> Tensor:
        """Class predictions ``[chips, batch]``."""
        return self.logits.argmax(-1)


NOISE_SIGMAS = 40
"""Dynamic noise is taken to stay within this many sigmas when bounding a state's magnitude."""


def exact_dtype(bound: int) -> torch.dtype:
    """The fastest dtype that holds every integer of magnitude up to ``bound`` exactly."""
    return torch.float32 if bound < FLOAT32_EXACT else torch.float64 if bound < FLOAT64_EXACT else torch.int64


def _differences_add_up(spec: LayerDeployment, layer: _Layer) -> bool:
    """A layer's currents are linear in its inputs (chips may differ from chip 0 by the differences
    of their inputs, :mod:`neurosim.engine.fused`): dense, weights shared by the chips, a gain
    rather than a flooring right shift, 0/1 inputs, float32 sums and states, and a machine whose
    byte order the packed words assume."""
    return (compiled.BY_DIFFERENCE and spec.kind == "linear" and not layer.per_chip_weight and spec.weight_shift >= 0
            and layer.binary_inputs and layer.sum_dtype == torch.float32 and layer.state_dtype == torch.float32)


class _Layer:
    """A deployment layer with its per-chip integer parameters resolved (in the state dtype)."""

    def __init__(self, layer: LayerDeployment, deployment: Deployment, chips: ChipInstances | None,
                 n_chips: int, noise_bound: int = 0, max_input: int | None = None) -> None:
        num = deployment.profile.numerics
        self.spec = layer
        self.fusable = self.by_difference = False  # set below for spiking layers
        self.binary_inputs = max_input == 1  # the previous layer's spikes, at most one a step
        self._difference_weight: Tensor | None = None
        self.act_shift = num.activation_shift
        # per-source accumulation is a dense layer's (Xylo has no convolutions: they add one sum)
        self.per_source = num.accumulate == "per_source" and layer.synapse_decay is not None and layer.kind == "linear"
        var = chips.layers.get(layer.name) if chips is not None else None
        self.per_chip_weight = var is not None and var.stuck is not None
        if self.per_chip_weight:
            q_max = fp.int_range(num.weight_bits)[1]
            stuck_codes = (var.stuck_value * q_max).to(torch.int64)
            weight = layer.weight.to(torch.int64)
            weight = torch.where(var.stuck, stuck_codes, weight.unsqueeze(0).expand(n_chips, *weight.shape))
            bound = layer.sum_bound(deployment.input_bits, int(weight.abs().max()), max_input)  # stuck weights included
        else:
            bound = layer.sum_bound(deployment.input_bits, _prepared(layer.weight, "max", _max_abs), max_input)
        if bound >= 1 << 63:
            raise NeurosimError(f"{layer.name}: synaptic sums can reach {bound}, beyond 64-bit integers")
        self.sum_dtype = exact_dtype(bound)
        bound <<= self.act_shift  # the current reaching the state
        if self.per_source and min(layer.weight_shift, layer.recurrent_shift) < 0:
            raise NeurosimError(f"{layer.name}: per-source accumulation needs weight shifts >= 0")
        if self.per_chip_weight:
            self.weight = weight.to(self.sum_dtype)
        else:  # converted once per deployment, not per engine or step
            self.weight = _prepared(layer.weight, (self.sum_dtype, layer.kind), _sum_weight)
        membrane = 1 << (num.membrane_bits - 1)
        # W_rec in the sum's dtype (spike counts times codes: exact); the second synaptic state's
        # weights (nominal: faults apply to the first)
        self.recurrent = None if layer.recurrent is None else layer.recurrent.to(self.sum_dtype)
        self.weight2 = None if layer.weight2 is None else layer.weight2.to(self.sum_dtype)
        self.recurrent2 = None if layer.recurrent2 is None else layer.recurrent2.to(self.sum_dtype)
        self.synapse_decay2 = None if layer.synapse_decay2 is None else \
            quant.DecayRule.of(layer.neuron_values("synapse_decay2"), num.synapse_decay)
        if layer.readout and layer.readout_neuron == "integrator":
            self.decay = quant.DecayRule.of(layer.neuron_values("beta").to(torch.float32), num.decay)
            # decayed state, state plus current (and the wrap's shift by 2^(bits-1)), sum over time
            self.state_dtype = exact_dtype(max(membrane * _decay_gain(num.decay), 2 * membrane + bound,
                                               deployment.timesteps * membrane))
            self._cache_bias()
            self.by_difference = _differences_add_up(layer, self)
            return

        # Per-chip codes follow the training forward's float32 arithmetic where that forward is
        # exact (states below 2^24); wider formats compute them in float64 so codes stay exact.
        dtype = quant.code_dtype(num)
        self.unit = layer.unit.to(dtype)

        def per_chip(quantity: str, name: str, clamp: bool = False) -> Tensor:
            """The layer's nominal ``name`` (per layer ``[]`` or per neuron ``[*neurons]``) as each
            chip's variation ``quantity`` realises it: ``[chips, 1, *neurons]`` with variation."""
            value = layer.neuron_values(name).to(dtype)
            if clamp:
                value = value.clamp(0, 1)
            perturbation: Perturbation | None = None if var is None else getattr(var, quantity)
            if perturbation is None or perturbation.z is None:
                return value
            return perturbation.apply(value).to(dtype).unsqueeze(1)  # [chips, 1, *neurons]: over batch

        threshold = quant.threshold_codes(per_chip("v_threshold", "threshold"), self.unit, num)
        v_reset = quant.reset_codes(per_chip("v_reset", "v_reset"), self.unit, num)
        self.beta = per_chip("decay", "beta", clamp=True)
        self.decay = quant.DecayRule.of(self.beta, num.decay)
        self.synapse_decay = None if layer.synapse_decay is None else \
            quant.DecayRule.of(per_chip("synapse_decay", "synapse_decay"), num.synapse_decay)
        v_init = torch.round(torch.tensor(layer.v_init, dtype=dtype) / self.unit)
        theta_max = 1 << ((num.threshold_bits or num.membrane_bits) - 1)
        # every intermediate value of a step: decay products, state plus input (plus the wrap's
        # shift by 2^(bits-1)), threshold plus jitter, the initial state
        values = [membrane * _decay_gain(num.decay), membrane + theta_max + noise_bound, int(v_init.abs().max()),
                  membrane * (layer.max_spikes + 1) + theta_max]  # the spike count's checks n * theta
        current = bound
        if self.synapse_decay is not None:
            synapse = 1 << (num.synapse_bits - 1)
            values += [synapse * _decay_gain(num.synapse_decay), 2 * synapse + bound]
            current = synapse * (2 if self.synapse_decay2 is not None else 1)  # the fitted synaptic state(s)
        values.append(2 * membrane + current + noise_bound)
        self.state_dtype = exact_dtype(max(values))
        state = self.state_dtype
        self.threshold, self.v_reset, self.v_init = threshold.to(state), v_reset.to(state), v_init.to(state)
        self.alive = None if var is None or var.dead is None else \
            (~var.dead).to(state).reshape(n_chips, 1, *layer.output_shape)
        self._cache_bias()
        # the compiled loop (neurosim.engine.fused) covers current-based neurons with one spike a
        # step, no refractory period and a saturating membrane, held in float32
        self.fusable = (state == torch.float32 and self.sum_dtype == torch.float32 and self.synapse_decay is None
                        and layer.recurrent is None and layer.max_spikes == 1 and not layer.refractory
                        and num.membrane_update == "sum" and num.overflow in ("saturate", "saturate_symmetric")
                        and layer.reset in ("hard", "soft") and not layer.readout)
        # chips as differences from chip 0: a dense layer with shared weights and a gain (no
        # flooring right shift, which is not linear)
        self.by_difference = self.fusable and _differences_add_up(layer, self)

    def _cache_bias(self) -> None:
        bias = self.spec.bias
        if bias is not None and self.spec.kind != "linear":
            bias = bias.reshape(-1, 1, 1)
        self.bias = None if bias is None else bias.to(torch.int64).to(self.state_dtype)

    # ------------------------------------------------------------------ synapses

    def currents(self, x: Tensor) -> Tensor:
        """Integer currents ``[chips, batch, *neurons]`` of one step for inputs ``[P, batch, *in]``."""
        return self.currents_over_time(x.unsqueeze(0))[0]

    def currents_over_time(self, x: Tensor, second: bool = False) -> Tensor:
        """Integer currents ``[L, chips, batch, *neurons]`` (state dtype) for integer inputs
        ``[L, P, batch, *in]`` of L steps, ``P`` = chips or 1 (an input shared by all chips): one
        GEMM or convolution over all of them (``second``: onto the second synaptic state)."""
        spec = self.spec
        steps, sources, batch = x.shape[:3]
        if spec.kind == "linear" and x.dim() > 4:
            x = x.flatten(3)
        if second:
            out = self._sum(x.flatten(0, 2), self.weight2).reshape(steps, sources, batch, *spec.output_shape)
        elif self.per_chip_weight:
            chips = self.weight.shape[0]
            out = torch.stack([self._sum(x[:, min(c, sources - 1)].flatten(0, 1), self.weight[c])
                               .reshape(steps, batch, *spec.output_shape) for c in range(chips)], 1)
        else:
            out = self._sum(x.flatten(0, 2), self.weight).reshape(steps, sources, batch, *spec.output_shape)
        return self.to_state(out)

    def to_state(self, total: Tensor, shift: int | None = None) -> Tensor:
        """A synaptic sum as the current reaching the state: ``shift_sum(total, weight_shift) <<
        activation_shift`` in the state dtype (the recurrent sum passes its own ``shift``)."""
        shift = self.spec.weight_shift if shift is None else shift
        total = fp.shift_sum(total, shift).to(self.state_dtype)
        return total * (1 << self.act_shift) if self.act_shift else total

    def source_weights(self, recurrent: bool = False, second: bool = False) -> Tensor | None:
        """Weights ``[out, sources]`` (``[chips, out, sources]`` with per-chip stuck weights) with
        their shift and the activation shift applied, for per-source accumulation (None where the
        layer has no such weights)."""
        if recurrent:
            weight, shift = (self.recurrent2 if second else self.recurrent), self.spec.recurrent_shift
        else:  # [out, in], or per chip [chips, out, in]
            weight, shift = (self.weight2 if second else self.weight), self.spec.weight_shift
        return None if weight is None else weight.to(self.state_dtype) * float(1 << (shift + self.act_shift))

    def difference_weight(self) -> Tensor:
        """``W^T`` times the layer's gain ``2^(weight_shift + activation_shift)`` as float32
        ``[in, out]``: what one unit more of input ``k`` adds to the currents (the compiled loop's
        chips-as-differences, :mod:`neurosim.engine.fused`)."""
        if self._difference_weight is None:
            self._difference_weight = self.source_weights().to(torch.float32).T.contiguous()
        return self._difference_weight

    def recurrent_current(self, spikes: Tensor, second: bool = False) -> Tensor:
        """``W_rec s[t-1]`` as a current ``[chips, batch, out]`` for spike counts ``[chips, batch, out]``."""
        weight = self.recurrent2 if second else self.recurrent
        return self.to_state(spikes.to(self.sum_dtype) @ weight.T, self.spec.recurrent_shift)

    def _sum(self, x: Tensor, weight: Tensor) -> Tensor:
        spec, dtype = self.spec, self.sum_dtype
        if spec.kind == "linear":
            return x.to(dtype) @ weight.T
        if dtype == torch.int64:  # exact integer convolution: unfold, then integer matmul
            k = weight.shape[-1]
            cols = F.unfold(x.to(torch.float64), k, padding=spec.padding, stride=spec.stride).to(torch.int64)
            out = weight.reshape(weight.shape[0], -1) @ cols
            return out.reshape(x.shape[0], weight.shape[0], *spec.output_shape[1:])
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout; exact sums
        return F.conv2d(x, weight, None, spec.stride, spec.padding)

    def synaptic_ops(self, x: Tensor, binary: bool) -> Tensor:
        """Synaptic operations per source of inputs ``[L, P, batch, *in]`` over all L steps
        (:func:`count_synaptic_ops`; ``binary``: the inputs are 0/1 spikes)."""
        spec = self.spec
        return count_synaptic_ops(x.transpose(0, 1).flatten(1, 2), spec.kind, tuple(spec.weight.shape),
                                  spec.stride, spec.padding, binary)


def _dense(signal: Tensor | compiled.PackedSpikes) -> Tensor:
    """A layer's inputs as a tensor (packed spikes of a compiled layer unpacked to float32 0/1:
    what a GEMM takes, and fast to count)."""
    return signal.unpack(torch.float32) if isinstance(signal, compiled.PackedSpikes) else signal


def _by_difference(layer: _Layer, signal: Tensor | compiled.PackedSpikes) -> bool:
    """Whether the compiled loops form a layer's per-chip currents from chip 0's
    (:mod:`neurosim.engine.fused`): a dense layer with shared weights, a non-negative shift and
    float32 sums and 0/1 inputs, whose inputs ``[L, P, batch, *in]`` differ per chip (P > 1)."""
    chips = (signal.words if isinstance(signal, compiled.PackedSpikes) else signal).shape[1]
    return layer.by_difference and chips > 1


def _chip_zero(layer: _Layer, signal: Tensor | compiled.PackedSpikes) -> tuple[compiled.PackedSpikes, Tensor]:
    """For a layer run by differences: its inputs packed, and chip 0's currents ``[L, 1, batch,
    *out]`` (one GEMM)."""
    inputs = signal if isinstance(signal, compiled.PackedSpikes) else compiled.pack(signal)
    return inputs, layer.currents_over_time(_dense(inputs.chip(0)))


def _events(raw: Tensor, bits: int, overflow: str = "saturate") -> Tensor | float:
    """Saturation or wrap events per chip of states ``raw`` ``[chips, ...]`` before they are fit
    to ``bits`` (:func:`~neurosim.device.fixedpoint.out_of_range`); one min/max first, since a
    step usually has none."""
    lo, hi = fp.fit_range(bits, overflow)
    smallest, largest = torch.aminmax(raw)
    if lo <= smallest.item() and largest.item() <= hi:
        return 0.0
    return fp.out_of_range(raw, bits, overflow).flatten(1).sum(-1).to(torch.float64)


_PREPARED: dict[int, tuple[weakref.ref, int, dict]] = {}


def _prepared(weight: Tensor, key, make):
    """``make(weight, key)``, remembered for this weight tensor (by identity) while it is
    unchanged (its version counter) and alive: engines built for the same deployment (a sweep, a
    benchmark) share the conversions."""
    entry = _PREPARED.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        ident = id(weight)
        entry = (weakref.ref(weight, lambda _, ident=ident: _forget(ident)), weight._version, {})
        _PREPARED[ident] = entry
    if key not in entry[2]:
        entry[2][key] = make(weight, key)
    return entry[2][key]


def _forget(ident: int) -> None:
    if _PREPARED is not None:  # None while the interpreter shuts down
        _PREPARED.pop(ident, None)


def _max_abs(weight: Tensor, key) -> int:
    return int(weight.abs().max()) if weight.numel() else 0


def _sum_weight(weight: Tensor, key) -> Tensor:
    dtype, kind = key
    converted = weight.to(torch.int64).to(dtype)
    if kind != "linear" and dtype != torch.int64:
        converted = converted.contiguous(memory_format=torch.channels_last)
    return converted


def _decay_gain(fmt) -> int:
    """How much larger than the state a decay's intermediate value gets: ``2^bits`` for a
    multiply decay (``v * d`` before the shift), 1 for a shift."""
    return 1 << fmt.bits if fmt.kind == "multiply" else 1


def count_synaptic_ops(x: Tensor, kind: str, weight_shape: tuple[int, ...], stride: int = 1,
                       padding: int = 0, binary: bool = False) -> Tensor:
    """Synaptic operations of inputs ``x`` ``[lead, batch, *in]``, summed per ``lead`` entry:
    every non-zero input (a spike, or a non-zero input code) times the synapses it reaches —
    all outputs of a dense layer, the kernel positions that cover it in a convolution.
    ``binary``: ``x`` is a float tensor of 0/1 spikes, counted as it is."""
    if binary:
        active = x
    else:  # 0/1 floats (a bool mask is much slower to sum on a CPU; a nonzero code stays nonzero)
        active = (x if x.is_floating_point() else x.to(torch.float32)).abs().sign()
    if kind == "linear":
        return count(active.flatten(2)) * weight_shape[0]
    # per input pixel: active channels (summed over the batch) times the kernel placements
    # covering that pixel (a fixed map), times the output channels
    per_pixel = count(active.movedim(2, -1), last=True)  # [lead, batch, H, W]
    return (per_pixel.sum(1) * _coverage(tuple(x.shape[-2:]), weight_shape[-1], stride, padding)).sum((-2, -1)) \
        * weight_shape[0]


def count(x: Tensor, last: bool = False) -> Tensor:
    """Exact float64 sums of 0/1 values ``x`` ``[lead, ...]``: per ``lead`` entry, or with
    ``last`` over the last dimension only. That dimension is summed in x's own dtype (exact:
    a run of 0/1 shorter than 2^24), the rest in float64."""
    inner = x.sum(-1).to(torch.float64)
    return inner if last else inner.flatten(1).sum(-1)


def _coverage(size: tuple[int, int], k: int, stride: int, padding: int) -> Tensor:
    """For each input pixel of a ``k x k`` convolution, how many output positions read it."""
    height, width = size
    out_h, out_w = (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1
    extra = (height - ((out_h - 1) * stride - 2 * padding + k), width - ((out_w - 1) * stride - 2 * padding + k))
    ones = torch.ones(1, 1, out_h, out_w, dtype=torch.float64)
    return F.conv_transpose2d(ones, torch.ones(1, 1, k, k, dtype=torch.float64), None, stride, padding,
                              output_padding=extra)[0, 0]


def _delayed(signal: Tensor | compiled.PackedSpikes, delay: int, steps: int) -> Tensor | compiled.PackedSpikes:
    """Inputs ``[L, P, batch, *in]`` as a layer with a synaptic ``delay`` receives them: step t
    gets step t - delay, zeros before (a static input, L = 1, is expanded over the steps)."""
    if not delay:
        return signal
    if isinstance(signal, compiled.PackedSpikes):
        return compiled.PackedSpikes(_delayed(signal.words, delay, steps), signal.shape)
    if signal.shape[0] == 1:
        signal = signal.expand(steps, *signal.shape[1:])
    zeros = signal.new_zeros((min(delay, steps), *signal.shape[1:]))
    return torch.cat([zeros, signal[:max(steps - delay, 0)]])


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


def _concatenate(parts: list[EngineResult]) -> EngineResult:
    """One result from the results of consecutive blocks of chips."""
    counts = {name: LayerCounts(*(torch.cat([getattr(p.counts[name], what) for p in parts])
                                  for what in ("spikes", "synaptic_ops", "neuron_updates", "saturations")))
              for name in parts[0].counts}
    spikes = {name: torch.cat([p.spikes[name] for p in parts], 1) for name in parts[0].spikes}
    energy = None if parts[0].energy_pj is None else torch.cat([p.energy_pj for p in parts])
    states = {name: {what: torch.cat([p.states[name][what] for p in parts], 1) for what in parts[0].states[name]}
              for name in parts[0].states}
    return EngineResult(torch.cat([p.logits for p in parts]), counts, spikes, energy, states)


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

    def __init__(self, deployment: Deployment, chips: ChipInstances | None = None, noise: bool = True,
                 block: int | None = None, fused: bool = True) -> None:
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
        self.layers: list[_Layer] = []
        for i, layer in enumerate(deployment.layers):  # inputs of later layers: spike counts
            max_input = deployment.layers[i - 1].max_spikes if i else None
            self.layers.append(_Layer(layer, deployment, chips, self.n_chips, self._noise_bound(layer), max_input))
        self.fused = fused
        self.block = block or self._block_size()
        self._blocks: list[IntegerEngine] | None = None

    @property
    def blocks(self) -> list[IntegerEngine]:
        """Engines of consecutive blocks of at most ``block`` chips (built on first use), or []
        when all chips run in one pass. Each chip is the same alone or in a block."""
        if self._blocks is None:
            self._blocks = []
            if self.chips is not None and self.n_chips > self.block:
                with_noise = self.noise is not None
                ranges = [list(range(i, min(i + self.block, self.n_chips))) for i in range(0, self.n_chips, self.block)]
                self._blocks = [IntegerEngine(self.deployment, self.chips[r], with_noise, self.block, self.fused)
                                for r in ranges]
        return self._blocks

    def _block_size(self) -> int:
        """Chips per block. Tensor steps: their per-step state of the widest layer (batch 128)
        within about 2^18 values, which keeps the elementwise neuron updates in cache. Where the
        compiled loop runs every spiking layer (it keeps each row in cache itself), their spikes
        of all steps within about 2^26 values (8 MiB packed): one block of many chips shares each
        layer's chip-0 GEMM."""
        widest = max(math.prod(layer.output_shape) for layer in self.deployment.layers)
        if self.fused and all(layer.fusable for layer in self.layers[:-1]):
            return max(1, (1 << 26) // (128 * widest * self.deployment.timesteps))
        return max(1, (1 << 18) // (128 * widest))

    def _noise_bound(self, layer: LayerDeployment) -> int:
        """Largest dynamic noise (thermal plus threshold jitter) in the layer's state units that
        the state dtype must hold (:data:`NOISE_SIGMAS` sigmas)."""
        if self.noise is None or (layer.readout and layer.readout_neuron == "integrator"):
            return 0
        total = 0.0
        for kind in ("thermal", "v_threshold"):
            spec = self.noise.spec(kind)
            if spec is not None:
                scale = abs(self.profile.neuron.v_threshold) if spec.relative and kind == "v_threshold" else 1.0
                total += NOISE_SIGMAS * spec.sigma * scale / float(layer.unit.abs().min())
        return math.ceil(total) + 1

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
    def run(self, x: Tensor, batch: int = 0, record: bool = False, record_states: bool = False) -> EngineResult:
        """Integer inference of inputs ``x`` in [0, 1]: ``[batch, *input_shape]`` repeated over the
        time steps, or frames ``[batch, T, *input_shape]`` (``T`` = the deployment's timesteps, one
        frame per step, each encoded by the same input rule); ``batch`` keys the dynamic noise
        (same as the training forward's). ``record``: keep every layer's spikes;
        ``record_states``: keep every layer's membrane (after the reset) and synaptic state."""
        if self.blocks:
            return _concatenate([engine.run(x, batch, record, record_states) for engine in self.blocks])
        frames = check_input(x, self.deployment)
        return self._run_codes(self.encode(x), frames, batch, record, record_states)

    @torch.no_grad()
    def run_codes(self, codes: Tensor, batch: int = 0, record: bool = False,
                  record_states: bool = False) -> EngineResult:
        """Like :meth:`run` for integer input codes given as frames ``[batch, T, *input_shape]``,
        used as they are (spikes 0/1, event counts, or codes of another tool), within
        ``input_bits``."""
        if not check_input(codes, self.deployment):
            raise NeurosimError(f"input codes of shape {tuple(codes.shape)}: expected frames [batch, "
                                f"{self.deployment.timesteps}, {', '.join(map(str, self.deployment.input_shape))}]")
        if codes.is_floating_point() and not bool((codes == codes.round()).all()):
            raise NeurosimError("input codes must be integers")
        codes = codes.to(torch.int64)
        lo, hi = fp.int_range(self.deployment.input_bits)
        if codes.numel() and (int(codes.min()) < lo or int(codes.max()) > hi):
            raise NeurosimError(f"input codes outside input_bits = {self.deployment.input_bits} ([{lo}, {hi}])")
        if self.blocks:
            return _concatenate([engine.run_codes(codes, batch, record, record_states) for engine in self.blocks])
        return self._run_codes(codes, True, batch, record, record_states)

    def _run_codes(self, codes: Tensor, frames: bool, batch: int, record: bool, record_states: bool) -> EngineResult:
        steps = self.deployment.timesteps
        # [L, 1, batch, *in]: one step shared by all steps and chips (static input), or T frames
        signal = codes.transpose(0, 1).unsqueeze(1) if frames else codes.unsqueeze(0).unsqueeze(0)
        result = EngineResult(torch.empty(0), {}, {})
        for i, layer in enumerate(self.layers[:-1]):
            signal = self._neurons(layer, signal, steps, batch, result, record, record_states, binary=i > 0)
        last, binary = self.layers[-1], len(self.layers) > 1
        if last.spec.readout_neuron == "lif":
            total = self._neurons(last, signal, steps, batch, result, record, record_states, binary, readout=True)
            result.logits = total.to(torch.float32) / steps * last.spec.unit
        else:
            result.logits = self._readout(last, signal, steps, result, binary, record_states)
        result.energy_pj = self.energy(result.counts)
        return result

    def _neurons(self, layer: _Layer, signal: Tensor, steps: int, batch: int, result: EngineResult, record: bool,
                 record_states: bool, binary: bool, readout: bool = False) -> Tensor:
        """Run a layer of spiking neurons (docs/design.md §2 with the profile's rules, module doc) on
        inputs ``[L, P, batch, *in]`` (L = 1: the same input every step; ``binary``: the inputs
        are the previous layer's spikes). Returns the spikes ``[T, chips, batch, *out]`` (counts,
        after pooling), or for a readout the sum over time of its membrane."""
        if self.fused and layer.fusable and not readout and not record_states:
            return self._fused_neurons(layer, signal, steps, batch, result, record, binary)
        spec, num = layer.spec, self.numerics
        chips, dtype = self.n_chips, layer.state_dtype
        signal = _delayed(_dense(signal), spec.delay, steps)
        batch_size = signal.shape[2]
        shape = (chips, batch_size, *spec.output_shape)
        ops = layer.synaptic_ops(signal, binary) * (steps if signal.shape[0] == 1 else 1)
        c = LayerCounts.start(chips, ops, steps * batch_size * math.prod(spec.output_shape))
        if layer.weight2 is not None:  # every input also reaches the second synaptic state's weights
            c.synaptic_ops += ops
        syn_bits, syn_overflow = num.synapse_bits, num.synapse_overflow or num.overflow
        mem_bits, mem_overflow = num.membrane_bits, num.overflow

        def synapse_events(raw: Tensor) -> None:
            c.saturations += _events(raw, syn_bits, syn_overflow)

        def membrane_events(raw: Tensor) -> None:
            c.saturations += _events(raw, mem_bits, mem_overflow)

        add_first = num.synapse_update == "add_then_decay"
        currents = None if layer.per_source else layer.currents_over_time(signal)  # [L, 1 | chips, batch, *out]
        bias = layer.bias
        if bias is not None and layer.synapse_decay is None and num.membrane_update == "sum":
            currents, bias = currents + bias, None  # the same integers, added once for all steps
        # the synaptic states: (decay, input currents or per-source weights, recurrent ones)
        synapses = []
        if layer.synapse_decay is not None:
            for second, decay in ((False, layer.synapse_decay), (True, layer.synapse_decay2)):
                if decay is None:
                    continue
                if layer.per_source:
                    synapses.append((decay, layer.source_weights(second=second),
                                     layer.source_weights(recurrent=True, second=second)))
                else:
                    inputs = layer.currents_over_time(signal, True) if second and layer.weight2 is not None \
                        else currents if not second else None
                    has_recurrent = (layer.recurrent2 if second else layer.recurrent) is not None
                    synapses.append((decay, inputs, has_recurrent))
        v = torch.zeros(shape, dtype=dtype) + layer.v_init
        i_syn = [torch.zeros(shape, dtype=dtype) for _ in synapses]
        refractory = torch.zeros(shape, dtype=dtype) if spec.refractory else None
        theta, v_reset = layer.threshold, layer.v_reset
        zero_reset = v_reset.dim() == 0 and not bool(v_reset)
        spikes = torch.empty((steps, *shape), dtype=dtype)
        previous = torch.zeros(shape, dtype=dtype) if layer.recurrent is not None else None
        total = torch.zeros(shape, dtype=dtype) if readout else None
        traces = {"v": torch.empty((steps, *shape), dtype=torch.int64)} if record_states else None
        if traces is not None:
            traces.update({name: torch.empty((steps, *shape), dtype=torch.int64) for name in ("i", "i2")[:len(synapses)]})
        sources = signal.flatten(3).to(dtype) if layer.per_source else None  # [L, P, batch, in], converted once
        for t in range(steps):
            x = sources[t if sources.shape[0] > 1 else 0] if sources is not None else None
            for k, (decay, inputs, recurrent) in enumerate(synapses):
                state = i_syn[k] if add_first else decay(i_syn[k])
                if layer.per_source:  # each source's weights in turn, saturating after each (xylosim)
                    if inputs is not None:
                        state = fp.add_per_source(state, x, inputs, syn_bits, syn_overflow, synapse_events)
                    if recurrent is not None:
                        state = fp.add_per_source(state, previous, recurrent, syn_bits, syn_overflow, synapse_events)
                else:
                    if inputs is not None:
                        state = state + inputs[t if inputs.shape[0] > 1 else 0]
                    if recurrent:
                        state = state + layer.recurrent_current(previous, second=k == 1)
                    state = fp.fit_observed(state, syn_bits, syn_overflow, synapse_events)
                i_syn[k] = decay(state) if add_first else state
            if synapses:
                current = i_syn[0] if len(i_syn) == 1 else i_syn[0] + i_syn[1]
            else:
                current = currents[t if currents.shape[0] > 1 else 0]
                if previous is not None:
                    current = current + layer.recurrent_current(previous)
            noise = self._noise("thermal", spec, t, (batch_size, *spec.output_shape), batch, dtype)
            if noise is not None:
                current = current + noise
            if num.membrane_update == "increment":
                u = fp.membrane_increment(v, layer.decay(v), current, bias, mem_bits, mem_overflow,
                                          membrane_events)
            else:
                raw = layer.decay(v) + current
                if bias is not None:
                    raw = raw + bias
                u = fp.fit_observed(raw, mem_bits, mem_overflow, membrane_events)
            step_theta = theta
            jitter = self._noise("v_threshold", spec, t, (batch_size, *spec.output_shape), batch, dtype)
            if jitter is not None:
                step_theta = theta + jitter
            s = spikes[t]
            if spec.max_spikes == 1:
                torch.ge(u, step_theta, out=s)  # 0/1 in the state dtype
            else:
                s.copy_(fp.fire(u, step_theta, spec.max_spikes))
            if refractory is not None:
                resting = refractory > 0
                s.masked_fill_(resting, 0)
                u = torch.where(resting, v, u)
            if layer.alive is not None:
                s.mul_(layer.alive)
            if spec.reset == "soft" or readout:
                v = u - step_theta * s
            elif zero_reset:
                v = u - u * s
            else:
                v = u - (u - v_reset) * s
            if refractory is not None:
                refractory = torch.where(s > 0, float(spec.refractory), (refractory - 1).clamp(min=0))
            if previous is not None:
                previous = s
            if total is not None:
                total = total + v
            if traces is not None:
                traces["v"][t] = v
                for name, state in zip(("i", "i2"), i_syn):
                    traces[name][t] = state
        c.spikes += count(spikes.transpose(0, 1).flatten(3))  # [chips, T, batch, neurons]
        if layer.recurrent is not None and steps > 1:  # each spike of steps 0..T-2 reaches every row
            rows = spec.recurrent.shape[0] * (2 if spec.recurrent2 is not None else 1)
            c.synaptic_ops += count(spikes[:-1].transpose(0, 1).flatten(3)) * rows
        result.counts[spec.name] = c
        if record:
            result.spikes[spec.name] = spikes.to(torch.int8)
        if traces is not None:
            result.states[spec.name] = traces
        if readout:
            return total
        if spec.pool:
            pooled = F.max_pool2d(spikes.flatten(0, 2).to(torch.float32), spec.pool)
            spikes = pooled.reshape(steps, chips, batch_size, *pooled.shape[1:])
        return spikes

    def _fused_neurons(self, layer: _Layer, signal: Tensor, steps: int, batch: int, result: EngineResult,
                       record: bool, binary: bool) -> Tensor:
        """:meth:`_neurons` for a layer the compiled loop covers (:func:`neurosim.engine.fused.run_layer`,
        the same integers): its currents for all steps in one GEMM or convolution, or for a dense
        layer whose inputs differ per chip, chip 0's GEMM and the others' differences."""
        spec, num = layer.spec, self.numerics
        chips = self.n_chips
        signal = _delayed(signal, spec.delay, steps)
        batch_size = (signal.words if isinstance(signal, compiled.PackedSpikes) else signal).shape[2]
        neurons = math.prod(spec.output_shape)
        inputs = None
        if _by_difference(layer, signal):
            inputs, current = _chip_zero(layer, signal)
        else:
            signal = _dense(signal)
            current = layer.currents_over_time(signal)
        if layer.bias is not None:
            current = current + layer.bias
        current = current.reshape(*current.shape[:3], neurons)
        shape = (batch_size, *spec.output_shape)
        noise, jitter = ([self._noise(kind, spec, t, shape, batch, torch.float32) for t in range(steps)]
                         for kind in ("thermal", "v_threshold"))
        decay = layer.decay
        lo, hi = fp.fit_range(num.membrane_bits, num.overflow)
        spikes, stats = compiled.run_layer(
            current, chips=chips, steps=steps, theta=layer.threshold, reset=layer.v_reset, v_init=layer.v_init,
            factor=decay.factor, keep=decay.keep, alive=layer.alive,
            decay_kind=compiled.DECAY_SHIFT if decay.fmt.kind == "shift" else compiled.DECAY_MULTIPLY,
            toward_zero=decay.fmt.rounding == "toward_zero", nonzero_step=decay.fmt.nonzero_step,
            decay_bits=decay.fmt.bits or 0, lo=lo, hi=hi, soft_reset=spec.reset == "soft",
            inputs=inputs, weight_t=None if inputs is None else layer.difference_weight(),
            noise=None if noise[0] is None else torch.stack(noise).reshape(steps, chips, batch_size, neurons),
            jitter=None if jitter[0] is None else torch.stack(jitter).reshape(steps, chips, batch_size, neurons),
            shape=tuple(spec.output_shape))
        if inputs is not None:  # the loop counted the non-zero inputs: each reaches every output
            ops = stats[:, 2] * spec.weight.shape[0]
        else:
            ops = layer.synaptic_ops(signal, binary) * (steps if signal.shape[0] == 1 else 1)
        c = LayerCounts.start(chips, ops, steps * batch_size * neurons)
        c.spikes += stats[:, 0]
        c.saturations += stats[:, 1]
        result.counts[spec.name] = c
        if not record and not spec.pool:
            return spikes
        dense = spikes.unpack()  # once, for the record and the pooling
        if record:
            result.spikes[spec.name] = dense.to(torch.int8)
        if spec.pool:
            pooled = F.max_pool2d(dense.flatten(0, 2).to(torch.float32), spec.pool)
            return pooled.reshape(steps, chips, batch_size, *pooled.shape[1:])
        return spikes

    def _noise(self, kind: str, spec: LayerDeployment, step: int, shape: tuple[int, ...], batch: int,
               dtype: torch.dtype) -> Tensor | None:
        if self.noise is None:
            return None
        if kind == "v_threshold":
            drawn = self.noise.threshold_jitter(spec.name, step, shape, batch)
        else:
            drawn = self.noise.draw(kind, spec.name, step, shape, batch)
        return None if drawn is None else torch.round(drawn / spec.unit).to(torch.int64).to(dtype)

    def _readout(self, layer: _Layer, signal: Tensor, steps: int, result: EngineResult, binary: bool,
                 record_states: bool) -> Tensor:
        """The integrating readout (docs/design.md §2): ``u = fit(decay(u) + W x + b)``; logits = the
        mean of ``u`` over time, in float units."""
        spec, num = layer.spec, self.numerics
        chips = self.n_chips
        signal = _delayed(signal, spec.delay, steps)
        if self.fused and _by_difference(layer, signal):  # chip 0's GEMM, the others' differences
            inputs, current = _chip_zero(layer, signal)
            currents, active = compiled.currents_by_difference(current, inputs, layer.difference_weight())
            currents = currents.to(layer.state_dtype)
            ops = active * spec.weight.shape[0]
        else:
            signal = _dense(signal)
            currents = layer.currents_over_time(signal)  # [L, 1 | chips, batch, classes]
            ops = layer.synaptic_ops(signal, binary) * (steps if signal.shape[0] == 1 else 1)
        if layer.bias is not None:
            currents = currents + layer.bias
        c = LayerCounts.start(chips, ops, steps * currents.shape[2] * currents.shape[3])
        shape = (chips, *currents.shape[2:])
        u = torch.zeros(shape, dtype=layer.state_dtype)
        total = torch.zeros(shape, dtype=layer.state_dtype)
        trace = torch.empty((steps, *shape), dtype=torch.int64) if record_states else None
        for t in range(steps):
            raw = layer.decay(u) + currents[t if currents.shape[0] > 1 else 0]
            c.saturations += _events(raw, num.membrane_bits, num.overflow)
            u = fp.fit_to_bits(raw, num.membrane_bits, num.overflow)
            total = total + u
            if trace is not None:
                trace[t] = u
        result.counts[spec.name] = c
        if trace is not None:
            result.states[spec.name] = {"v": trace}
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
