"""A slow, per-neuron reference of the integer engine (docs/design.md §2 and §4).

:func:`reference_run` simulates ONE chip of a :class:`~neurosim.export.Deployment` with plain
Python integers, one neuron at a time, so that every rule can be read off and checked against
docs/design.md. It is written for clarity, not speed, and deliberately does not call
:mod:`neurosim.device.fixedpoint` or :mod:`neurosim.engine.engine`: the integer rules
(two's-complement saturate/wrap, shift and multiply decays, rounding) are written out again
here, so that the fast :class:`~neurosim.engine.IntegerEngine` is checked against an independent
statement of them (tests/test_reference.py compares the two bit for bit).

Conventions, as in the engine:

* A ``b``-bit state is signed two's complement, range ``[-2^(b-1), 2^(b-1) - 1]``;
  ``saturate`` clamps to it, ``wrap`` reduces modulo ``2^b`` into it.
* Rounding of a float to an integer is half to even (Python's :func:`round`).
* Float quantities (thresholds, resets, decays, units, noise) are computed in float32, as the
  engine's torch tensors are (``numpy.float32`` scalars round every operation to float32).
  Wide formats are the exception, as in the engine: when a state or threshold format is wider
  than 24 bits (float32 cannot hold all its codes), a layer's nominal threshold, reset, decays
  and initial state and its unit are float64 (a chip's deviation ``sigma * z`` is still applied
  in float32, the dtype of the draws, and the result widened); input codes wider than 24 bits
  are computed in float64. Noise codes and the logits stay float32.
* Neuron parameters are each neuron's own: a layer's per-neuron value where it has one
  (``LayerDeployment.per_neuron``, read entry by entry in :func:`nominal_of`), else the layer's
  value; a chip's variation perturbs that nominal value.
* The only thing taken from the library is the seeded randomness: the chip's static draws
  (``chips.layers[name]``) and the dynamic noise stream (:class:`~neurosim.device.DynamicNoise`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from neurosim.device.chips import ChipInstances, DynamicNoise
from neurosim.export.deployment import Deployment, LayerDeployment

f32 = np.float32


# ------------------------------------------------------------------ integer rules


def int_range(bits: int) -> tuple[int, int]:
    """Smallest and largest signed ``bits``-bit integer."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def saturate(value: int, bits: int) -> int:
    """Clamp to the signed ``bits``-bit range."""
    lo, hi = int_range(bits)
    return min(max(value, lo), hi)


def wrap(value: int, bits: int) -> int:
    """Two's-complement overflow: keep the low ``bits`` bits, read them as signed."""
    lo, _ = int_range(bits)
    return (value - lo) % (2 ** bits) + lo


def held_range(bits: int, overflow: str) -> tuple[int, int]:
    """The values a ``bits``-bit state holds: the two's-complement range, except
    ``saturate_symmetric`` (lowest value left out) and ``wrap_high`` (range moved up by one)."""
    lo, hi = int_range(bits)
    if overflow == "saturate_symmetric":
        return lo + 1, hi
    if overflow == "wrap_high":
        return lo + 1, hi + 1
    return lo, hi


def fit(value: int, bits: int, overflow: str) -> int:
    """The profile's overflow rule at ``bits`` bits: clamp into the held range (``saturate``,
    ``saturate_symmetric``) or wrap modulo ``2^bits`` into it (``wrap``, ``wrap_high``)."""
    lo, hi = held_range(bits, overflow)
    if overflow in ("saturate", "saturate_symmetric"):
        return min(max(value, lo), hi)
    if overflow in ("wrap", "wrap_high"):
        return (value - lo) % (2 ** bits) + lo
    raise ValueError(f"unknown overflow rule {overflow!r}")


def out_of_range(value: int, bits: int, overflow: str = "saturate") -> bool:
    """True if a ``bits``-bit state cannot hold ``value`` (a saturation or wrap event)."""
    lo, hi = held_range(bits, overflow)
    return value < lo or value > hi


def shifted(value: int, shift: int) -> int:
    """``value << shift``, or ``value >> -shift`` (floor) for a negative shift."""
    return value << shift if shift >= 0 else value >> -shift


def shift_right(value: int, k: int, rounding: str) -> int:
    """``value / 2^k`` rounded toward minus infinity (``floor``: the arithmetic shift, Python's
    ``>>``) or toward zero (``toward_zero``: shift the magnitude, keep the sign)."""
    if rounding == "floor":
        return value >> k
    if rounding == "toward_zero":
        return value >> k if value >= 0 else -((-value) >> k)
    raise ValueError(f"unknown shift rounding {rounding!r}")


def sign(value: int) -> int:
    return (value > 0) - (value < 0)


def round_half_even(value: float) -> int:
    """Nearest integer, ties to even (Python's round on the exact float64 value)."""
    return round(float(value))


class Decay:
    """The integer decay of one neuron's state for a decay factor ``beta`` (float32).

    ``beta >= 1``: the state is kept. Shift format: ``v - (v >> k)`` with
    ``k = clamp(round(-log2(1 - beta)), 1, 31)`` (``1 - beta`` at least ``2^-31``), and ``k = 0``
    for ``beta <= 0`` (``v - (v >> 0) = 0``: Xylo's ``dash = 0`` clears the state); with
    ``nonzero_step`` a zero decrement of a non-zero state becomes ``sign(v)``. Multiply format:
    ``(v * d) >> bits`` with ``d = round(beta * 2^bits)``.
    """

    def __init__(self, beta: float, fmt: Any) -> None:
        beta = float(beta)  # float32 -> float64 is exact
        self.fmt = fmt
        self.keep = beta >= 1
        if fmt.kind == "shift":
            gap = max(1.0 - beta, 2.0 ** -31)
            self.k = 0 if beta <= 0 else min(max(round_half_even(-math.log2(gap)), 1), 31)
        else:
            self.d = round_half_even(beta * 2 ** fmt.bits)

    def __call__(self, v: int) -> int:
        if self.keep:
            return v
        fmt = self.fmt
        if fmt.kind == "shift":
            step = shift_right(v, self.k, fmt.rounding)
            if fmt.nonzero_step and step == 0:
                step = sign(v)
            return v - step
        return shift_right(v * self.d, fmt.bits, fmt.rounding)


# ------------------------------------------------------------------ float32 helpers


def perturb(nominal: np.floating, perturbation: Any, position: int, neuron: tuple[int, ...]) -> np.floating:
    """A chip's value of a nominal quantity for one neuron: ``nominal * (1 + sigma z)``
    (relative) or ``nominal + sigma z`` (absolute), in float32 (the draws' dtype), then clamped
    to the perturbation's bounds and returned in the nominal's dtype. No draw (``z`` is None):
    the nominal value itself."""
    if perturbation is None or perturbation.z is None:
        return nominal
    z = f32(perturbation.z[position][neuron].item())
    sigma_z = f32(perturbation.sigma) * z
    value = f32(nominal)
    value = value * (f32(1) + sigma_z) if perturbation.relative else value + sigma_z
    lo, hi = perturbation.bounds
    if lo is not None:
        value = max(value, f32(lo))
    if hi is not None:
        value = min(value, f32(hi))
    return type(nominal)(value)


def nominal_of(layer: LayerDeployment, name: str, neuron: tuple[int, ...]) -> float | None:
    """A neuron's nominal parameter ``name`` (threshold, v_reset, beta, synapse_decay,
    synapse_decay2) as a Python float: its entry of the layer's per-neuron values where the layer
    has them, else the layer's one value; None for a synaptic state the layer lacks."""
    values = layer.per_neuron.get(name)
    if values is not None:
        return float(values.detach().cpu().numpy()[neuron])
    value = getattr(layer, name)
    return None if value is None else float(value)


def unit_of(layer: LayerDeployment, neuron: tuple[int, ...]) -> np.float32:
    """The state unit of a neuron (float32): the layer's scalar unit or its output channel's."""
    unit = layer.unit.detach().cpu().numpy().astype(np.float32)
    if unit.ndim == 0:
        return f32(unit)
    return f32(unit.reshape(-1)[neuron[0]])


def is_wide(numerics: Any) -> bool:
    """True when a state or threshold format is wider than float32's 24-bit significand."""
    return max(numerics.membrane_bits, numerics.threshold_bits or 0, numerics.synapse_bits or 0) > 24


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------ one chip's layer


class _ChipLayer:
    """One deployment layer as chip ``position`` realises it: integer weights (stuck weights
    applied) and, per neuron, threshold, reset, decays and initial state."""

    def __init__(self, layer: LayerDeployment, deployment: Deployment, chips: ChipInstances | None,
                 position: int) -> None:
        num = deployment.profile.numerics
        self.layer = layer
        var = chips.layers.get(layer.name) if chips is not None else None

        # weights: plain ints; a stuck weight is stuck_value * (largest weight code)
        w_max = int_range(num.weight_bits)[1]
        weight = layer.weight.detach().cpu().numpy()
        self.weight = np.empty(weight.shape, dtype=object)
        for index in np.ndindex(*weight.shape):
            code = int(weight[index])
            if var is not None and var.stuck is not None and bool(var.stuck[position][index]):
                code = int(var.stuck_value[position][index].item()) * w_max
            self.weight[index] = code
        self.bias = None if layer.bias is None else [int(b) for b in layer.bias.tolist()]
        self.recurrent = None if layer.recurrent is None else [[int(w) for w in row] for row in layer.recurrent.tolist()]
        # the second synaptic state: its own weights and nominal decay (no faults, no variation)
        self.weight2 = None if layer.weight2 is None else np.array(layer.weight2.tolist(), dtype=object)
        self.recurrent2 = None if layer.recurrent2 is None else [[int(w) for w in row]
                                                                 for row in layer.recurrent2.tolist()]

        self.neurons = list(np.ndindex(*layer.output_shape))
        self.unit = {n: unit_of(layer, n) for n in self.neurons}
        if layer.readout and layer.readout_neuron == "integrator":  # nominal decay, no variation, noise, faults
            self.decay = {n: Decay(f32(nominal_of(layer, "beta", n)), num.decay) for n in self.neurons}
            return

        # float32, or float64 for wide formats (see the module docstring)
        real = np.float64 if is_wide(num) else np.float32
        # a threshold mantissa m, fire where v > m << s (Loihi's vth << 6, strict): code (m << s) + 1
        th_shift, strict = num.threshold_shift, int(num.threshold_compare == "greater")
        m_hi = (int_range(num.threshold_bits or num.membrane_bits)[1] - strict) >> th_shift
        v_lo, v_hi = int_range(num.membrane_bits)
        self.theta: dict[tuple[int, ...], int] = {}
        self.v_reset: dict[tuple[int, ...], int] = {}
        self.decay: dict[tuple[int, ...], Decay] = {}
        self.synapse_decay: dict[tuple[int, ...], Decay] = {}
        self.synapse_decay2: dict[tuple[int, ...], Decay] = {}
        self.v_init: dict[tuple[int, ...], int] = {}
        self.dead: dict[tuple[int, ...], bool] = {}
        for n in self.neurons:
            unit = real(self.unit[n])
            theta = perturb(real(nominal_of(layer, "threshold", n)), var and var.v_threshold, position, n)
            mantissa = min(max(round_half_even(theta / unit / (1 << th_shift)), 1 - strict), m_hi)
            self.theta[n] = (mantissa << th_shift) + strict
            reset = perturb(real(nominal_of(layer, "v_reset", n)), var and var.v_reset, position, n)
            self.v_reset[n] = min(max(round_half_even(reset / unit), v_lo), v_hi)
            beta = min(max(real(nominal_of(layer, "beta", n)), real(0)), real(1))
            self.decay[n] = Decay(perturb(beta, var and var.decay, position, n), num.decay)
            if layer.synapse_decay is not None:
                alpha = perturb(real(nominal_of(layer, "synapse_decay", n)), var and var.synapse_decay, position, n)
                self.synapse_decay[n] = Decay(alpha, num.synapse_decay)
            if layer.synapse_decay2 is not None:
                self.synapse_decay2[n] = Decay(real(nominal_of(layer, "synapse_decay2", n)), num.synapse_decay)
            self.v_init[n] = round_half_even(real(layer.v_init) / unit)
            self.dead[n] = var is not None and var.dead is not None and bool(var.dead[position][n])

    def contributions(self, x: np.ndarray, previous: np.ndarray | None, n: tuple[int, ...], act_shift: int,
                      second: bool = False) -> list[int]:
        """Neuron ``n``'s synaptic input from each source in turn (dense layers): input ``j``
        gives ``x_j * (w_nj << (weight_shift + act_shift))``, then recurrent source ``k`` gives
        ``s_k[t-1] * (w_rec_nk << (recurrent_shift + act_shift))`` (xylosim's delivery order);
        ``second``: onto the second synaptic state."""
        layer, o = self.layer, n[0]
        weight, recurrent = (self.weight2, self.recurrent2) if second else (self.weight, self.recurrent)
        flat = x.reshape(-1)
        out = [] if weight is None else \
            [int(flat[j]) * (weight[o, j] << (layer.weight_shift + act_shift)) for j in range(len(flat))]
        if recurrent is not None:
            out += [int(previous[k]) * (recurrent[o][k] << (layer.recurrent_shift + act_shift))
                    for k in range(len(recurrent[o]))]
        return out

    def synaptic_input(self, x: np.ndarray, previous: np.ndarray | None, n: tuple[int, ...], act_shift: int,
                       second: bool = False) -> int:
        """Neuron ``n``'s synaptic input as one sum: ``(shift(W x, weight_shift) +
        shift(W_rec s[t-1], recurrent_shift)) << act_shift`` (no bias)."""
        layer = self.layer
        weight, recurrent = (self.weight2, self.recurrent2) if second else (self.weight, self.recurrent)
        total = 0 if weight is None else shifted(self.current(x, n, weight), layer.weight_shift)
        if recurrent is not None:
            rec = sum(recurrent[n[0]][k] * int(previous[k]) for k in range(len(recurrent[n[0]])))
            total += shifted(rec, layer.recurrent_shift)
        return total << act_shift

    def current(self, x: np.ndarray, n: tuple[int, ...], weight: np.ndarray | None = None) -> int:
        """The plain synaptic sum of neuron ``n`` for the integer input ``x`` of one sample:
        weights times inputs (a convolution is a cross-correlation with the layer's stride and
        zero padding)."""
        layer, w = self.layer, (self.weight if weight is None else weight)
        total = 0
        if layer.kind == "linear":
            flat = x.reshape(-1)
            o = n[0]
            for j in range(w.shape[1]):
                total += w[o, j] * int(flat[j])
        else:
            o, y, xx = n
            channels, height, width = x.shape
            k = w.shape[-1]
            for c in range(channels):
                for dy in range(k):
                    for dx in range(k):
                        row = y * layer.stride + dy - layer.padding
                        col = xx * layer.stride + dx - layer.padding
                        if 0 <= row < height and 0 <= col < width:  # outside: zero padding
                            total += w[o, c, dy, dx] * int(x[c, row, col])
        return total


def max_pool(spikes: np.ndarray, size: int) -> np.ndarray:
    """Max pooling of ``[C, H, W]`` spikes over ``size x size`` windows (stride ``size``,
    incomplete windows at the border dropped)."""
    channels, height, width = spikes.shape
    out = np.zeros((channels, height // size, width // size), dtype=np.int64)
    for c, y, x in np.ndindex(*out.shape):
        out[c, y, x] = max(int(spikes[c, y * size + dy, x * size + dx])
                           for dy in range(size) for dx in range(size))
    return out


# ------------------------------------------------------------------ the run


def encode_input(deployment: Deployment, x: np.ndarray) -> np.ndarray:
    """Input codes: ``clamp(round(x / input_step), input range)`` with the division in float32
    (float64 for input codes wider than 24 bits)."""
    real = np.float64 if deployment.input_bits > 24 else np.float32
    step = real(deployment.layers[0].input_step)
    lo, hi = int_range(deployment.input_bits)
    codes = np.zeros(x.shape, dtype=np.int64)
    for index in np.ndindex(*x.shape):
        codes[index] = min(max(round_half_even(real(x[index]) / step), lo), hi)
    return codes


def reference_run(deployment: Deployment, x: Any, chips: ChipInstances | None = None,
                  chip_position: int = 0, batch: int = 0, noise: bool = True) -> dict[str, Any]:
    """Run ``deployment`` on ONE chip, neuron by neuron.

    ``x`` is ``[batch, *input_shape]`` in [0, 1], the same input every step, or frames
    ``[batch, T, *input_shape]`` (``T`` = the deployment's timesteps), frame t at step t. The chip is
    position ``chip_position`` of ``chips`` (its static variation, faults and dynamic noise), or
    the nominal chip when ``chips`` is None. ``batch`` keys the dynamic noise; ``noise=False``
    turns it off.

    Returns ``{"logits": [per sample: float32 array of classes], "spikes": {layer name: int
    array [T, batch, *neurons]}, "saturations": {layer name: int}, "states": {layer name:
    {"v": membrane after the reset, "i": synaptic state} as int arrays [T, batch, *neurons]}}``
    (saturations: states that left their bit width, membrane and synapse, counted as the engine
    does).
    """
    profile, num = deployment.profile, deployment.profile.numerics
    steps = deployment.timesteps
    x = _as_numpy(x)
    samples = x.shape[0]
    source = DynamicNoise(profile, chips.seed, chips.indices) if chips is not None and noise else None

    codes = encode_input(deployment, x)
    if x.ndim == len(deployment.input_shape) + 2:  # frames [batch, T, *in]: frame t at step t
        assert x.shape[1] == steps, f"{x.shape[1]} frames for {steps} time steps"
        inputs = [codes[:, t] for t in range(steps)]
    else:  # static input: the same codes at every step, [T][batch, *in]
        inputs = [codes] * steps
    spikes_out: dict[str, np.ndarray] = {}
    saturations: dict[str, int] = {}
    states: dict[str, dict[str, np.ndarray]] = {}

    for layer in deployment.layers[:-1]:
        inputs = _run_neurons(layer, deployment, chips, chip_position, source, batch, inputs, samples,
                              spikes_out, saturations, states)

    readout = deployment.layers[-1]
    if readout.readout_neuron == "lif":
        totals = _run_neurons(readout, deployment, chips, chip_position, source, batch, inputs, samples,
                              spikes_out, saturations, states)
        chip = _ChipLayer(readout, deployment, chips, chip_position)
        logits = [np.array([f32(totals[b, n]) / f32(steps) * chip.unit[n] for n in chip.neurons], dtype=np.float32)
                  for b in range(samples)]
        return {"logits": logits, "spikes": spikes_out, "saturations": saturations, "states": states}
    chip = _ChipLayer(readout, deployment, chips, chip_position)
    inputs = _delayed(inputs, readout.delay)
    logits = []
    events = 0
    trace = np.zeros((steps, samples, *readout.output_shape), dtype=np.int64)
    for b in range(samples):
        values = []
        for n in chip.neurons:
            u = total = 0
            for t in range(steps):
                current = chip.synaptic_input(inputs[t][b], None, n, num.activation_shift)
                if chip.bias is not None:
                    current += chip.bias[n[0]]
                raw = chip.decay[n](u) + current
                events += out_of_range(raw, num.membrane_bits, num.overflow)
                u = fit(raw, num.membrane_bits, num.overflow)
                total += u
                trace[(t, b, *n)] = u
            values.append(f32(total) / f32(steps) * chip.unit[n])
        logits.append(np.array(values, dtype=np.float32))
    saturations[readout.name] = events
    states[readout.name] = {"v": trace}
    return {"logits": logits, "spikes": spikes_out, "saturations": saturations, "states": states}


def _delayed(inputs: list[np.ndarray], delay: int) -> list[np.ndarray]:
    """Per-step inputs as a layer with a synaptic ``delay`` receives them (zeros first)."""
    if not delay:
        return inputs
    steps = len(inputs)
    return [np.zeros_like(inputs[0])] * min(delay, steps) + inputs[:max(steps - delay, 0)]


def _fire(u: int, theta: int, max_spikes: int) -> int:
    """Spikes of one step: ``u >= theta`` (one spike), or with ``max_spikes > 1`` xylosim's loop:
    while ``u >= theta`` and fewer than ``max_spikes``, fire and take ``theta`` off."""
    if max_spikes == 1:
        return 1 if u >= theta else 0
    n = 0
    while u >= theta and n < max_spikes:
        n += 1
        u -= theta
    return n


def _run_neurons(layer: LayerDeployment, deployment: Deployment, chips: ChipInstances | None, position: int,
                 source: DynamicNoise | None, batch: int, inputs: list[np.ndarray], samples: int,
                 spikes_out: dict[str, np.ndarray], saturations: dict[str, int],
                 states: dict[str, dict[str, np.ndarray]]) -> Any:
    """One layer of spiking neurons (a hidden layer, or a ``lif`` readout) neuron by neuron;
    returns the per-step outputs (pooled spikes), or for the readout the sum of its membrane
    over time per (sample, neuron)."""
    profile, num = deployment.profile, deployment.profile.numerics
    steps = deployment.timesteps
    chip = _ChipLayer(layer, deployment, chips, position)
    inputs = _delayed(inputs, layer.delay)
    shape = tuple(layer.output_shape)
    v = {(b, n): chip.v_init[n] for b in range(samples) for n in chip.neurons}
    i_syn = {(b, n): 0 for b in range(samples) for n in chip.neurons}
    i_syn2 = {(b, n): 0 for b in range(samples) for n in chip.neurons}
    rest = {(b, n): 0 for b in range(samples) for n in chip.neurons}
    totals = {(b, n): 0 for b in range(samples) for n in chip.neurons}
    spikes = np.zeros((steps, samples, *shape), dtype=np.int64)
    trace_v = np.zeros((steps, samples, *shape), dtype=np.int64)
    trace_i = np.zeros((steps, samples, *shape), dtype=np.int64)
    trace_i2 = np.zeros((steps, samples, *shape), dtype=np.int64)
    syn_bits, syn_overflow = num.synapse_bits, num.synapse_overflow or num.overflow
    mem_bits, mem_overflow = num.membrane_bits, num.overflow
    per_source = num.accumulate == "per_source" and layer.synapse_decay is not None and layer.kind == "linear"
    add_first = num.synapse_update == "add_then_decay"
    events = 0

    def fitted(value: int, bits: int, overflow: str) -> int:
        nonlocal events
        events += out_of_range(value, bits, overflow)
        return fit(value, bits, overflow)

    outputs = []
    for t in range(steps):
        thermal = _draw(source, "thermal", layer, t, samples, batch, position)
        jitter = _draw(source, "v_threshold", layer, t, samples, batch, position)
        if jitter is not None and source.spec("v_threshold").relative:
            jitter = jitter * f32(abs(profile.neuron.v_threshold))
        for b in range(samples):
            previous = None if chip.recurrent is None else spikes[t - 1, b] if t else np.zeros(shape, dtype=np.int64)
            for n in chip.neurons:
                unit = chip.unit[n]
                if layer.synapse_decay is not None:  # current-based: one or two synaptic states
                    current = 0
                    for k, (held, decays) in enumerate(((i_syn, chip.synapse_decay), (i_syn2, chip.synapse_decay2))):
                        if not decays:
                            continue
                        state = held[b, n] if add_first else decays[n](held[b, n])
                        if per_source:  # each source in turn, the overflow rule after each
                            for c in chip.contributions(inputs[t][b], previous, n, num.activation_shift, k == 1):
                                state = fitted(state + c, syn_bits, syn_overflow)
                        else:
                            state = fitted(state + chip.synaptic_input(inputs[t][b], previous, n,
                                                                       num.activation_shift, k == 1),
                                           syn_bits, syn_overflow)
                        held[b, n] = decays[n](state) if add_first else state
                        current += held[b, n]
                else:
                    current = chip.synaptic_input(inputs[t][b], previous, n, num.activation_shift)
                if thermal is not None:
                    current += round_half_even(thermal[(b, *n)] / unit)
                bias = 0 if chip.bias is None else chip.bias[n[0]]
                if num.membrane_update == "increment":  # xylosim: dv, then dv + bias, then v + dv
                    # -decay(v) is a mem_bits integer: with dash 0, -(-2^15) wraps to -2^15
                    negated = fitted(chip.decay[n](v[b, n]) - v[b, n], mem_bits, "wrap")
                    dv = fitted(negated + current, mem_bits, mem_overflow)
                    if chip.bias is not None:
                        dv = fitted(dv + bias, mem_bits, mem_overflow)
                    u = fitted(v[b, n] + dv, mem_bits, mem_overflow)
                else:
                    u = fitted(chip.decay[n](v[b, n]) + current + bias, mem_bits, mem_overflow)
                theta = chip.theta[n]
                if jitter is not None:
                    theta += round_half_even(jitter[(b, *n)] / unit)
                s = _fire(u, theta, layer.max_spikes)
                if rest[b, n] > 0:  # refractory: no spike, the state is held
                    s = 0
                    u = v[b, n]
                if chip.dead[n]:
                    s = 0
                if layer.reset == "hard" and not layer.readout:
                    v[b, n] = chip.v_reset[n] if s else u
                else:
                    v[b, n] = u - theta * s
                rest[b, n] = layer.refractory if s else max(rest[b, n] - 1, 0)
                spikes[(t, b, *n)] = s
                totals[b, n] += v[b, n]
                trace_v[(t, b, *n)] = v[b, n]
                trace_i[(t, b, *n)] = i_syn[b, n]
                trace_i2[(t, b, *n)] = i_syn2[b, n]
        out = spikes[t]
        if layer.pool:
            out = np.stack([max_pool(out[b], layer.pool) for b in range(samples)])
        outputs.append(out)
    spikes_out[layer.name] = spikes
    saturations[layer.name] = events
    states[layer.name] = {"v": trace_v}
    if layer.synapse_decay is not None:
        states[layer.name]["i"] = trace_i
    if layer.synapse_decay2 is not None:
        states[layer.name]["i2"] = trace_i2
    return totals if layer.readout else outputs


def _draw(source: DynamicNoise | None, kind: str, layer: LayerDeployment, step: int, samples: int,
          batch: int, position: int) -> np.ndarray | None:
    """This step's ``sigma * z`` draws ``[batch, *neurons]`` (float32) of noise ``kind`` for the
    chip at ``position``, or None without such noise."""
    if source is None:
        return None
    drawn = source.draw(kind, layer.name, step, (samples, *layer.output_shape), batch)
    return None if drawn is None else drawn[position].numpy().astype(np.float32)
