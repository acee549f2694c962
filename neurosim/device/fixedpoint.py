"""Fixed-point arithmetic of a chip, once, as pure vectorised torch functions.

These are the only implementation of a profile's integer rules (docs/design.md §1 "one source of
truth"): the fake-quant training forward and the integer engine both call them. Every function
works on integer tensors (the engine) and on float tensors that hold integral values (the
training forward, exact while magnitudes stay below 2^24 in float32 or 2^53 in float64), and
gives the same numbers on both.

Conventions
-----------
* A ``b``-bit number is signed two's complement: range ``[-2^(b-1), 2^(b-1) - 1]``.
* ``saturate`` clamps to that range; ``wrap`` reduces modulo ``2^b`` into it, as an adder of
  ``b`` bits does.
* A right shift by ``k`` divides by ``2^k`` and rounds either ``floor`` (toward minus
  infinity: the arithmetic shift ``>>`` of two's-complement hardware, so ``-1 >> 1 == -1``)
  or ``toward_zero`` (shift the magnitude, keep the sign: Lava's bit-accurate Loihi model).
* Shift decay: ``v - (v >> k)`` (beta = 1 - 2^-k, Xylo). Multiply decay:
  ``(v * d) >> b`` with ``d = round(beta * 2^b)`` (Loihi, b = 12). The product must fit int64:
  with ``membrane_bits <= 32`` and ``b <= 31`` it does.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor

from neurosim.device.profile import DecayFormat, Overflow, Rounding

ShiftRounding = Literal["floor", "toward_zero"]
ScaleRule = Literal["per_layer", "per_channel", "power_of_two"]


def int_range(bits: int) -> tuple[int, int]:
    """Smallest and largest value of a signed ``bits``-bit integer."""
    _check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(x: Tensor, bits: int) -> Tensor:
    """Clamp ``x`` to the signed ``bits``-bit range (for a float ``x``, to the nearest values
    inside the range that its dtype represents: float32 rounds 2^25 - 1 up to 2^25)."""
    lo, hi = int_range(bits)
    if x.is_floating_point():
        lo, hi = representable_range(lo, hi, x.dtype)
    return x.clamp(lo, hi)


def representable_range(lo: int, hi: int, dtype: torch.dtype) -> tuple[float, float]:
    """The widest ``[lo', hi']`` inside ``[lo, hi]`` whose ends ``dtype`` holds exactly."""
    top, bottom = torch.tensor(hi, dtype=dtype), torch.tensor(lo, dtype=dtype)
    if top.item() > hi:
        top = torch.nextafter(top, torch.tensor(0, dtype=dtype))
    if bottom.item() < lo:
        bottom = torch.nextafter(bottom, torch.tensor(0, dtype=dtype))
    return bottom.item(), top.item()


def wrap(x: Tensor, bits: int) -> Tensor:
    """Reduce ``x`` modulo ``2^bits`` into the signed range (two's-complement overflow)."""
    lo, _ = int_range(bits)
    return torch.remainder(x - lo, 1 << bits) + lo


def wrap_high(x: Tensor, bits: int) -> Tensor:
    """Reduce ``x`` modulo ``2^bits`` into ``(-2^(bits-1), 2^(bits-1)]``: Lava's wrap of Loihi's
    current ``u`` (src/lava/proc/lif/models.py ``subthr_dynamics``: ``u - 2^bits`` above
    ``2^(bits-1)``, ``u + 2^bits`` at or below ``-2^(bits-1)``)."""
    lo, hi = fit_range(bits, "wrap_high")
    return torch.remainder(x - lo, 1 << bits) + lo


def fit_range(bits: int, overflow: Overflow = "saturate") -> tuple[int, int]:
    """The values a ``bits``-bit state holds under ``overflow``: the two's-complement range, one
    less at the bottom for ``saturate_symmetric`` (``[-(2^(b-1) - 1), 2^(b-1) - 1]``), one up for
    ``wrap_high`` (``[-(2^(b-1) - 1), 2^(b-1)]``)."""
    lo, hi = int_range(bits)
    if overflow == "saturate_symmetric":
        return lo + 1, hi
    if overflow == "wrap_high":
        return lo + 1, hi + 1
    return lo, hi


def fit_to_bits(x: Tensor, bits: int, overflow: Overflow) -> Tensor:
    """Apply the profile's overflow rule (``saturate``, ``wrap``, ``saturate_symmetric`` or
    ``wrap_high``, see :data:`neurosim.device.profile.Overflow`) at ``bits`` bits."""
    if overflow == "saturate":
        return saturate(x, bits)
    if overflow == "wrap":
        return wrap(x, bits)
    if overflow == "saturate_symmetric":
        lo, hi = fit_range(bits, overflow)
        return x.clamp(lo, hi)
    if overflow == "wrap_high":
        return wrap_high(x, bits)
    raise ValueError(f"unknown overflow rule {overflow!r}")


def out_of_range(x: Tensor, bits: int, overflow: Overflow = "saturate") -> Tensor:
    """Boolean mask of the entries of ``x`` that a ``bits``-bit state cannot hold under
    ``overflow`` (the events the engine counts as saturations or wraps)."""
    lo, hi = fit_range(bits, overflow)
    return (x < lo) | (x > hi)


def shift_sum(x: Tensor, shift: int) -> Tensor:
    """A synaptic sum times its layer's power-of-two gain: ``x << shift`` for ``shift >= 0``,
    ``x >> -shift`` (floor, the arithmetic shift) below (Xylo's weight shift; Loihi's weight
    exponent, Lava dense/models.py ``PyDenseModelBitAcc``)."""
    if shift >= 0:
        return x * (1 << shift) if shift else x
    return shift_right(x, -shift, "floor")


def round_to_int(x: Tensor, rounding: Rounding, generator: torch.Generator | None = None) -> Tensor:
    """Round a float tensor to integral values (same dtype).

    ``nearest_even`` rounds half to even (IEEE default, ``torch.round``); ``floor`` rounds
    toward minus infinity; ``stochastic`` rounds up with probability equal to the fractional
    part, drawing from ``generator`` (required, so that the draw is seeded).
    """
    if not x.is_floating_point():
        return x
    if rounding == "nearest_even":
        return torch.round(x)
    if rounding == "floor":
        return torch.floor(x)
    if rounding == "stochastic":
        if generator is None:
            raise ValueError("stochastic rounding needs a seeded torch.Generator")
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return torch.floor(x + noise)
    raise ValueError(f"unknown rounding {rounding!r}")


def quantization_scale(w: Tensor, bits: int, rule: ScaleRule, channel_dim: int = 0) -> Tensor:
    """Step size ``s`` such that ``w / s`` fills the signed ``bits``-bit range.

    ``per_layer``: ``s = max|w| / (2^(b-1) - 1)``; ``per_channel``: the same per slice along
    ``channel_dim`` (shape broadcastable to ``w``); ``power_of_two``: the per-layer ``s`` rounded
    up to a power of two, so that scaling is a shift. An all-zero tensor gets ``s = 1``.
    """
    qmax = int_range(bits)[1]
    if qmax == 0:
        raise ValueError("a 1-bit signed format holds only -1 and 0; use bits >= 2 for weights")
    w = w.detach()
    if rule == "per_channel":
        dims = [d for d in range(w.dim()) if d != channel_dim % max(w.dim(), 1)]
        amax = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    elif rule in ("per_layer", "power_of_two"):
        amax = w.abs().max()
    else:
        raise ValueError(f"unknown scale rule {rule!r}")
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    if rule == "power_of_two":
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    return scale


def quantize(x: Tensor, scale: Tensor | float, bits: int, rounding: Rounding = "nearest_even",
             overflow: Overflow = "saturate", generator: torch.Generator | None = None) -> Tensor:
    """Signed fixed-point code of ``x``: ``fit_to_bits(round(x / scale))`` as int64."""
    q = round_to_int(x / scale, rounding, generator)
    return fit_to_bits(q, bits, overflow).to(torch.int64)


def dequantize(q: Tensor, scale: Tensor | float) -> Tensor:
    """Float value of a fixed-point code: ``q * scale``."""
    return q.to(torch.get_default_dtype()) * scale


def shift_right(x: Tensor, k: Tensor | int, rounding: ShiftRounding = "floor") -> Tensor:
    """``x / 2^k`` rounded ``floor`` (arithmetic shift) or ``toward_zero``; ``k`` may be a
    per-element tensor of non-negative shifts."""
    if x.is_floating_point():
        scaled = x * torch.exp2(-torch.as_tensor(k, dtype=x.dtype, device=x.device))
        return torch.floor(scaled) if rounding == "floor" else torch.trunc(scaled)
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    if rounding == "floor":
        return torch.bitwise_right_shift(x, k)
    if rounding == "toward_zero":
        return torch.sign(x) * torch.bitwise_right_shift(x.abs(), k)
    raise ValueError(f"unknown shift rounding {rounding!r}")


def decay_by_shift(v: Tensor, k: Tensor | int, rounding: ShiftRounding = "floor",
                   nonzero_step: bool = False) -> Tensor:
    """Shift decay ``v - (v >> k)``: beta = 1 - 2^-k without a multiplier (Xylo).

    With ``nonzero_step`` a decrement ``v >> k`` of 0 on a non-zero ``v`` becomes ``sign(v)``
    (xylosim's ``decay()``), so small states still reach zero.
    """
    step = shift_right(v, k, rounding)
    if nonzero_step:
        step = torch.where(step == 0, torch.sign(v), step)
    return v - step


def decay_by_multiply(v: Tensor, d: Tensor | int, bits: int, rounding: ShiftRounding = "floor") -> Tensor:
    """Multiply decay ``(v * d) >> bits`` with ``d = round(beta * 2^bits)`` (Loihi)."""
    return shift_right(v * d, bits, rounding)


def decay_multiplier(beta: Tensor | float, bits: int) -> Tensor:
    """Integer decay factor ``d = round(beta * 2^bits)`` (half to even) as int64."""
    return torch.round(torch.as_tensor(beta, dtype=torch.float64) * (1 << bits)).to(torch.int64)


def decay_shift_for(beta: Tensor | float) -> Tensor:
    """Shift ``k`` whose decay ``1 - 2^-k`` is nearest to ``beta`` in log scale, at least 1;
    ``beta <= 0`` is ``k = 0`` (``1 - 2^0 = 0``: xylosim's ``dash = 0``, ``v - (v >> 0)``
    clears the state every step)."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    k = torch.round(-torch.log2(1 - beta.clamp(max=1 - 2.0 ** -31))).clamp(1, 31).to(torch.int64)
    return torch.where(beta <= 0, torch.zeros_like(k), k)


def apply_decay(v: Tensor, fmt: DecayFormat, factor: Tensor | int | None = None) -> Tensor:
    """Decay ``v`` by the profile's integer form. ``factor`` is the per-neuron shift ``k``
    (shift) or multiplier ``d`` (multiply); default: the profile's own shift."""
    if fmt.kind == "shift":
        return decay_by_shift(v, fmt.shift if factor is None else factor, fmt.rounding, fmt.nonzero_step)
    if factor is None:
        raise ValueError("a multiply decay needs its integer factor d = round(beta * 2^bits)")
    return decay_by_multiply(v, factor, fmt.bits, fmt.rounding)


Observer = Callable[[Tensor], None]
"""Called with each raw (unfitted) state before an overflow rule applies (to count events)."""


def fit_observed(x: Tensor, bits: int, overflow: Overflow, observe: Observer | None = None) -> Tensor:
    """``fit_to_bits(x)``, first showing the raw ``x`` to ``observe``."""
    if observe is not None:
        observe(x)
    return fit_to_bits(x, bits, overflow)


def fire(u: Tensor, theta: Tensor | float, max_spikes: int = 1) -> Tensor:
    """Spikes of one step, in ``u``'s dtype: ``[u >= theta]`` (0/1) for ``max_spikes = 1``, else
    the count ``n = min(max_spikes, floor(u / theta))`` for ``u >= theta``, 0 below (a
    subtractive-reset neuron that fires until its potential is under threshold, at most
    ``max_spikes`` times: xylosim ``XyloIAFNeuron::evolve``; a threshold at or below 0 gives
    ``max_spikes``). Exact for integral float ``u`` and integral ``theta`` below 2^24 (float32)
    / 2^53 (float64)."""
    if max_spikes == 1:
        return torch.ge(u, theta).to(u.dtype)
    theta = torch.as_tensor(theta, dtype=u.dtype, device=u.device)
    divisor = theta.clamp(min=1)
    if not u.is_floating_point():
        n = torch.div(u, divisor, rounding_mode="floor")
    else:
        n = torch.floor(u / divisor)
        n = n - (n * divisor > u).to(u.dtype) + ((n + 1) * divisor <= u).to(u.dtype)  # undo a quotient's rounding
    # a threshold at or below 0 (noise) never stops the loop: the neuron fires max_spikes times
    return torch.where(theta > 0, n.clamp(0, max_spikes), torch.ge(u, theta).to(u.dtype) * max_spikes)


def add_per_source(state: Tensor, x: Tensor, weight: Tensor, bits: int, overflow: Overflow,
                   observe: Observer | None = None) -> Tensor:
    """``state`` plus each source's contribution ``x[..., j] * weight[:, j]`` in turn, the
    overflow rule applied after each one (xylosim ``deliver_spikes``: ``safe_add`` per weight,
    sources in index order). ``x`` is ``[..., batch, sources]``, ``weight`` ``[out, sources]`` or
    per chip ``[chips, out, sources]`` (already shifted), ``state`` ``[..., batch, out]``.

    Wrapping is modular, so the order cannot matter and one sum is exact; a saturating rule
    differs from the sum only where a partial sum leaves the range, so the sources are added one
    by one only when, for some neuron, the state plus all positive (or all negative)
    contributions would leave it. ``observe`` sees each raw value that is fitted."""
    total = x @ weight.transpose(-1, -2)
    lo, hi = fit_range(bits, overflow)
    if overflow in ("wrap", "wrap_high"):
        return fit_observed(state + total, bits, overflow, observe)
    # the sums of the positive and of the negative contributions c, doubled: 2 max(c, 0) = |c| + c
    # and 2 min(c, 0) = c - |c|, with |c| = |x| |w|
    spread = x.abs() @ weight.abs().transpose(-1, -2)
    twice = 2 * state + total
    if bool((twice - spread >= 2 * lo).all()) and bool((twice + spread <= 2 * hi).all()):
        return fit_observed(state + total, bits, overflow, observe)
    for j in range(x.shape[-1]):
        state = fit_observed(state + x[..., j:j + 1] * weight[..., j].unsqueeze(-2), bits, overflow, observe)
    return state


def membrane_increment(v: Tensor, decayed: Tensor, current: Tensor, bias: Tensor | None, bits: int,
                       overflow: Overflow, observe: Observer | None = None) -> Tensor:
    """xylosim's membrane update (``XyloIAFNeuron::evolve``): the change ``dv = fit(decayed - v +
    current)``, then ``dv = fit(dv + bias)``, then ``v = fit(v + dv)``, each fitted to ``bits``.
    The negated decrement ``decayed - v`` is itself a ``bits``-bit integer that wraps: with
    ``dash = 0`` the decrement of ``v = -2^(bits-1)`` is ``v``, and xylosim's ``-decay(v)`` is
    again ``-2^(bits-1)`` (measured with xylosim 0.1.3: ``v = -32768``, synaptic state 32766 gives
    ``dv = -2``, not 32767). With ``dash >= 1`` it never leaves the range."""
    dv = fit_observed(fit_observed(decayed - v, bits, "wrap", observe) + current, bits, overflow, observe)
    if bias is not None:
        dv = fit_observed(dv + bias, bits, overflow, observe)
    return fit_observed(v + dv, bits, overflow, observe)


def exact_float_bound(dtype: torch.dtype) -> int:
    """Largest magnitude below which every integer is exact in ``dtype`` (2^24 / 2^53)."""
    return 1 << (round(-math.log2(torch.finfo(dtype).eps)) + 1)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32:
        raise ValueError(f"bit width must be an integer in 1..32, got {bits!r}")


__all__ = [
    "add_per_source", "fire", "fit_observed", "membrane_increment", "apply_decay", "decay_by_multiply", "decay_by_shift", "decay_multiplier", "decay_shift_for",
    "dequantize", "exact_float_bound", "fit_range", "fit_to_bits", "int_range", "out_of_range",
    "quantization_scale", "quantize", "representable_range", "round_to_int", "saturate", "shift_right",
    "shift_sum", "wrap", "wrap_high",
]
