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


def weight_step(weight: Tensor, numerics: NumericsSpec, threshold: Tensor | float | None,
                in_step: float, bias: Tensor | None = None) -> Tensor:
    """The weight quantization step of a layer (per layer, per output channel or power of two):
    the step that fits the weights into ``weight_bits``, made coarser where needed so that the
    nominal threshold stays at or below :func:`threshold_ceiling` and every bias fits
    :func:`bias_limit` (a batch norm folded into the synapse can give biases that a state unit
    fine enough for the weights cannot hold; a coarser step is what the chip can realise)."""
    step = fp.quantization_scale(weight, numerics.weight_bits, numerics.weight_scale)
    floors = []
    scale = (1 << numerics.activation_shift) / in_step  # state unit -> weight step
    if threshold is not None:
        floors.append(torch.as_tensor(threshold, dtype=step.dtype).detach().abs() * scale / threshold_ceiling(numerics))
    if bias is not None and bias.numel():
        magnitude = bias.detach().abs().to(step.dtype)
        magnitude = magnitude.reshape(step.shape) if step.dim() else magnitude.max()
        floors.append(magnitude * scale / bias_limit(numerics))
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


def threshold_limit(numerics: NumericsSpec) -> int:
    """Largest threshold code: the maximum of ``threshold_bits``, or with ``threshold_shift`` ``s``
    the largest ``(m << s) + [greater]`` inside it."""
    hi = fp.int_range(numerics.threshold_bits or numerics.membrane_bits)[1]
    shift, strict = numerics.threshold_shift, int(numerics.threshold_compare == "greater")
    return (((hi - strict) >> shift) << shift) + strict


def threshold_codes(theta: Tensor, unit: Tensor | float, numerics: NumericsSpec) -> Tensor:
    """Thresholds in state units, the code ``c`` of a neuron that fires where ``v >= c``:
    ``round(theta / unit)`` (half to even), kept in ``[1, threshold_limit]``. With
    ``threshold_shift`` ``s`` the chip stores a mantissa ``m = round(theta / (unit 2^s))`` and
    fires where ``v > m << s`` (``threshold_compare: greater``; Lava ``scale_threshold``:
    ``vth << 6``, ``spiking_activation``: ``v > effective_vth``), so ``c = (m << s) + 1``
    (``+ 0`` for ``greater_equal``)."""
    shift, strict = numerics.threshold_shift, int(numerics.threshold_compare == "greater")
    if not shift and not strict:
        return torch.round(theta / unit).clamp(1, threshold_limit(numerics))
    mantissa = torch.round(theta / unit * 2.0 ** -shift)
    top = (threshold_limit(numerics) - strict) >> shift
    return mantissa.clamp(0 if strict else 1, top) * float(1 << shift) + strict


def threshold_needed(theta: Tensor, unit: Tensor | float, numerics: NumericsSpec) -> Tensor:
    """The threshold code ``theta / unit`` asks for before it is kept to the format (for the
    export check against :func:`threshold_limit`)."""
    shift, strict = numerics.threshold_shift, int(numerics.threshold_compare == "greater")
    return torch.round(theta / unit * 2.0 ** -shift) * float(1 << shift) + strict


def bias_exponents(numerics: NumericsSpec) -> tuple[int, int]:
    """The range of a neuron's bias exponent: ``numerics.bias_exp``, or ``(0, 0)`` (a plain code)."""
    exp = numerics.bias_exp
    return (exp.min, exp.max) if exp is not None else (0, 0)


def bias_range(numerics: NumericsSpec) -> tuple[int, int]:
    """Smallest and largest bias a neuron holds: the mantissa's range shifted by the largest
    exponent (Loihi: ``-4096 << 7`` to ``4095 << 7 = 524160``)."""
    lo, hi = fp.int_range(numerics.bias_bits or numerics.membrane_bits)
    e_hi = bias_exponents(numerics)[1]
    return lo << e_hi, hi << e_hi


def bias_limit(numerics: NumericsSpec) -> int:
    """Largest bias a neuron holds (:func:`bias_range`)."""
    return bias_range(numerics)[1]


def bias_codes(scaled: Tensor, numerics: NumericsSpec) -> tuple[Tensor, Tensor, Tensor]:
    """THE bias rule of a fixed-point chip, shared by training (fake quantization), export and the
    Lava mapping: a bias of ``scaled`` state units (a float tensor) becomes ``mant << e``, per
    neuron, with ``e`` the smallest exponent of ``numerics.bias_exp`` (0 without one) at which
    ``mant = round(scaled / 2^e)`` (half to even) fits ``bias_bits`` signed bits, and ``mant``
    saturated at the largest exponent where none does (Loihi: ``bias_mant`` signed 13 bits,
    ``bias_exp`` 0..7, bias ``bias_mant << bias_exp``: Lava src/lava/proc/lif/models.py
    ``AbstractPyLifModelFixed.scale_bias`` and ``PyLifModelBitAcc``'s docstring).

    Returns ``(codes, exponents, over)``: the effective codes ``mant * 2^e`` (float, ``scaled``'s
    dtype), the exponents (int64) and where the bias does not fit (saturated). Callers decide what
    a saturated bias means (:func:`check_bias`: export refuses it, training warns with the same
    words)."""
    lo, hi = fp.int_range(numerics.bias_bits or numerics.membrane_bits)
    e_lo, e_hi = bias_exponents(numerics)
    scaled = scaled.detach()
    exponent = torch.full(scaled.shape, e_hi, dtype=torch.int64, device=scaled.device)
    for e in range(e_hi - 1, e_lo - 1, -1):  # the smallest exponent whose mantissa fits wins
        mant = torch.round(scaled * 2.0 ** -e)
        exponent = torch.where((mant >= lo) & (mant <= hi), torch.full_like(exponent, e), exponent)
    step = torch.exp2(exponent.to(scaled.dtype))
    raw = torch.round(scaled / step)
    over = (raw < lo) | (raw > hi)
    return raw.clamp(lo, hi) * step, exponent, over


def bias_message(name: str, needed: float, numerics: NumericsSpec) -> str:
    """The one line naming layer, limit and value for a bias the chip cannot hold."""
    bits = numerics.bias_bits or numerics.membrane_bits
    e_lo, e_hi = bias_exponents(numerics)
    limit = f"bias_bits = {bits}" + (f" << bias_exp {e_hi}" if numerics.bias_exp is not None else "")
    return f"{name}: bias needs {needed:.0f} units, more than {limit} hold (max {bias_limit(numerics)})"


def bias_overflow(name: str, scaled: Tensor, over: Tensor, numerics: NumericsSpec) -> str | None:
    """None when no bias of ``scaled`` state units overflowed (``over``, from :func:`bias_codes`),
    else the line of :func:`bias_message` for the largest (what export raises and training warns)."""
    if not bool(over.any()):
        return None
    return bias_message(name, float(scaled.detach().abs()[over].max()), numerics)


def check_bias(name: str, scaled: Tensor, numerics: NumericsSpec) -> str | None:
    """:func:`bias_overflow` of the biases ``scaled``: None when every one fits :func:`bias_codes`."""
    return bias_overflow(name, scaled, bias_codes(scaled, numerics)[2], numerics)


def split_bias(codes: Tensor, numerics: NumericsSpec) -> tuple[Tensor, Tensor] | None:
    """The ``(mant, exp)`` of integer bias codes (int64) as :func:`bias_codes` forms them
    (the smallest exponent that holds each code exactly), or None when a code is not
    ``mant << e`` of the format (a hand-edited artifact)."""
    lo, hi = fp.int_range(numerics.bias_bits or numerics.membrane_bits)
    e_lo, e_hi = bias_exponents(numerics)
    codes = codes.to(torch.int64)
    exponent = torch.full_like(codes, -1)
    for e in range(e_hi, e_lo - 1, -1):
        mant = codes >> e
        exact = ((mant << e) == codes) & (mant >= lo) & (mant <= hi)
        exponent = torch.where(exact, torch.full_like(exponent, e), exponent)
    if bool((exponent < 0).any()):
        return None
    return codes >> exponent, exponent


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
