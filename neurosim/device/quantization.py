"""How a layer's float parameters map to a fixed-point chip's integer units (one rule, shared).

The fake-quant training forward (:mod:`neurosim.train.noise`), the compiler
(:mod:`neurosim.export`) and the integer engine all call these functions, so that a trained
model, its deployment and the engine agree to the bit.

A layer's state unit is ``unit = weight_step * input_step / 2^activation_shift``: its currents,
membrane, threshold, reset, bias and noise are integers in that unit (a chip that shifts its
synaptic sums left by ``activation_shift`` bits, Loihi, holds them in a unit that much finer). ``input_step`` is 1 for spikes and
``1 / (2^(input_bits-1) - 1)`` for the real-valued input (values in [0, 1]) of the first layer.
``weight_step`` is what fits the weights into ``weight_bits`` (:func:`fixedpoint.quantization_scale`),
made coarser where needed so that the nominal threshold stays at or below
:func:`threshold_ceiling` — potentials above threshold must still fit before they saturate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device.profile import DecayFormat, NumericsSpec

DEFAULT_INPUT_BITS = 8
STATE_HEADROOM_BITS = 3


def code_dtype(numerics: NumericsSpec) -> torch.dtype:
    """The float dtype in which a chip's integer codes (thresholds, resets, initial states) are
    computed from float values: float32, as the training forward does, while every state format
    fits float32's 24-bit significand; float64 for wider formats, whose codes float32 cannot hold."""
    widest = max(numerics.membrane_bits or 0, numerics.threshold_bits or 0, numerics.synapse_bits or 0)
    return torch.float64 if widest > 24 else torch.float32


def input_step(numerics: NumericsSpec) -> float:
    """Step of the first layer's input codes: ``1 / (2^(input_bits-1) - 1)``."""
    return 1.0 / fp.int_range(numerics.input_bits or DEFAULT_INPUT_BITS)[1]


def input_bits(numerics: NumericsSpec) -> int:
    """Width of the first layer's input codes."""
    return numerics.input_bits or DEFAULT_INPUT_BITS


def threshold_ceiling(numerics: NumericsSpec) -> int:
    """Largest nominal threshold in state units: the threshold format's maximum, and
    ``STATE_HEADROOM_BITS`` below the smallest state format."""
    state_bits = min(b for b in (numerics.membrane_bits, numerics.synapse_bits) if b is not None)
    return min(fp.int_range(numerics.threshold_bits or numerics.membrane_bits)[1],
               1 << max(state_bits - 1 - STATE_HEADROOM_BITS, 0))


def bias_ceiling(numerics: NumericsSpec) -> int:
    """Largest bias magnitude in state units the chip holds: the maximum of ``bias_bits`` (the
    membrane's width where the profile gives none)."""
    return fp.int_range(numerics.bias_bits or numerics.membrane_bits)[1]


def weight_step(weight: Tensor, numerics: NumericsSpec, threshold: Tensor | float | None,
                in_step: float, bias: Tensor | None = None) -> Tensor:
    """The weight quantization step of a layer (per layer, per output channel or power of two):
    the step that fits the weights into ``weight_bits``, made coarser where needed so that the
    nominal threshold stays at or below :func:`threshold_ceiling` and every bias fits
    :func:`bias_ceiling` (a batch norm folded into the synapse can give biases that a state unit
    fine enough for the weights cannot hold; a coarser step is what the chip can realise)."""
    step = fp.quantization_scale(weight, numerics.weight_bits, numerics.weight_scale)
    floors = []
    scale = (1 << numerics.activation_shift) / in_step  # state unit -> weight step
    if threshold is not None:
        floors.append(torch.as_tensor(threshold, dtype=step.dtype).detach().abs() * scale / threshold_ceiling(numerics))
    if bias is not None and bias.numel():
        magnitude = bias.detach().abs().to(step.dtype)
        magnitude = magnitude.reshape(step.shape) if step.dim() else magnitude.max()
        floors.append(magnitude * scale / bias_ceiling(numerics))
    for floor in floors:
        if numerics.weight_scale == "power_of_two":
            floor = torch.exp2(torch.ceil(torch.log2(floor)))
        step = torch.maximum(step, floor)
    return step


def state_unit(w_step: Tensor, in_step: float, weight_dim: int, activation_shift: int = 0) -> Tensor:
    """``weight_step * input_step / 2^activation_shift`` shaped to broadcast over the layer's
    neurons (``[out]`` for a dense layer, ``[out, 1, 1]`` for a convolution, a scalar per layer)."""
    unit = w_step * in_step / (1 << activation_shift)
    if unit.dim() == 0:
        return unit
    return unit.reshape(-1, *([1] * (weight_dim - 2)))


def recurrent_shift(weight: Tensor, unit: Tensor | float, numerics: NumericsSpec) -> int:
    """The shift ``s`` of a layer's recurrent weights ``W_rec`` ``[out, out]``: their codes are
    ``round(W_rec / (unit * 2^(activation_shift + s)))`` (``unit``: the layer's state unit, per
    row where per channel), and ``s`` is the smallest of the profile's ``weight_shift`` range (0
    without one) whose codes fit ``weight_bits``; the largest when none does (codes saturate)."""
    shifts = numerics.weight_shift
    lo, hi = (shifts.min, shifts.max) if shifts is not None else (0, 0)
    unit = torch.as_tensor(unit, dtype=torch.float64)
    scaled = weight.detach().to(torch.float64) / (unit.reshape(-1, 1) if unit.dim() else unit)
    largest = float(scaled.abs().max()) / (1 << numerics.activation_shift) if scaled.numel() else 0.0
    q_max = fp.int_range(numerics.weight_bits)[1]
    for shift in range(lo, hi + 1):
        if round(largest * 2.0 ** -shift) <= q_max:
            return shift
    return hi


def recurrent_step(unit: Tensor | float, shift: int, numerics: NumericsSpec) -> Tensor:
    """Float value of one recurrent weight code, ``unit * 2^(activation_shift + shift)``, shaped
    ``[out, 1]`` (per row) or a scalar."""
    unit = torch.as_tensor(unit)
    step = unit * 2.0 ** (numerics.activation_shift + shift)
    return step.reshape(-1, 1) if step.dim() else step


def threshold_codes(theta: Tensor, unit: Tensor | float, numerics: NumericsSpec) -> Tensor:
    """Thresholds in state units: ``round(theta / unit)`` (half to even), kept in
    ``[1, max of threshold_bits]``."""
    codes = torch.round(theta / unit)
    return fp.saturate(codes, numerics.threshold_bits or numerics.membrane_bits).clamp(min=1)


def reset_codes(v_reset: Tensor, unit: Tensor | float, numerics: NumericsSpec) -> Tensor:
    """Reset potentials in state units, saturated to ``membrane_bits``."""
    return fp.saturate(torch.round(v_reset / unit), numerics.membrane_bits)


def decay_factor(beta: Tensor | float, fmt: DecayFormat) -> Tensor:
    """Integer decay factor of ``beta``: the shift ``k`` or the multiplier ``d`` of ``fmt``."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    return fp.decay_shift_for(beta) if fmt.kind == "shift" else fp.decay_multiplier(beta, fmt.bits)


def realised_decay(beta: Tensor | float, fmt: DecayFormat) -> Tensor:
    """The decay factor the integers realise for ``beta`` (float64): ``1 - 2^-k``, ``d / 2^b``,
    and exactly 1 where ``beta >= 1`` (no decay: IF neurons, the integrating readout)."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    factor = decay_factor(beta, fmt)
    realised = 1 - torch.exp2(-factor.double()) if fmt.kind == "shift" else factor.double() / (1 << fmt.bits)
    return torch.where(beta >= 1, torch.ones_like(realised), realised)


@dataclass(frozen=True)
class DecayRule:
    """The integer decay of a layer, resolved once from its per-neuron (or scalar) ``beta``: the
    factor of ``fmt`` and where ``beta >= 1`` keeps the state (a shift cannot express 'no decay')."""

    fmt: DecayFormat
    factor: Tensor
    keep: Tensor | None

    @staticmethod
    def of(beta: Tensor | float, fmt: DecayFormat) -> DecayRule:
        """The rule for ``beta`` in format ``fmt``."""
        beta = torch.as_tensor(beta, dtype=torch.float64)
        keep = beta >= 1
        return DecayRule(fmt, decay_factor(beta, fmt), keep if bool(keep.any()) else None)

    def __call__(self, x: Tensor) -> Tensor:
        """One decay step of the state ``x``."""
        decayed = fp.apply_decay(x, self.fmt, self.factor.to(x.device))
        return decayed if self.keep is None else torch.where(self.keep.to(x.device), x, decayed)


def decay_state(x: Tensor, beta: Tensor | float, fmt: DecayFormat) -> Tensor:
    """One integer decay step of a state ``x`` with per-neuron (or scalar) ``beta``
    (:class:`DecayRule` resolved on the spot)."""
    return DecayRule.of(beta, fmt)(x)
