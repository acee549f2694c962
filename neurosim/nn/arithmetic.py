"""How a neuron's state is stored: float, or the chip's fixed point with straight-through gradients.

The training forward of a fixed-point chip computes exactly the integers the chip computes:
states live in integer units of the layer (one unit = the layer's weight step times its input
step), decays, saturation and wrapping are the functions of :mod:`neurosim.device.fixedpoint` (the
one implementation, shared with the integer engine), and gradients pass straight through as if
the arithmetic were the float LIF of docs/design.md §2 (decay ``beta * v``, no rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device.profile import DecayFormat, NumericsSpec


def straight_through(exact: Tensor, proxy: Tensor) -> Tensor:
    """``exact`` in the forward pass, the gradient of ``proxy`` in the backward pass."""
    return proxy + (exact - proxy).detach()


class FloatArithmetic:
    """Float32 states: decay is ``beta * v``, nothing saturates (ideal and analog chips)."""

    is_fixed = False

    def decay(self, v: Tensor, beta: Tensor | float) -> Tensor:
        """``beta * v``."""
        return beta * v

    def synapse_decay(self, i: Tensor, alpha: Tensor | float) -> Tensor:
        """``alpha * i``."""
        return alpha * i

    def fit_membrane(self, u: Tensor) -> Tensor:
        """Float membranes do not overflow."""
        return u

    def fit_synapse(self, i: Tensor) -> Tensor:
        """Float currents do not overflow."""
        return i

    def to_units(self, value: Tensor, unit: Tensor | float) -> Tensor:
        """A float quantity (noise, threshold) in state units: unchanged in float."""
        return value

    def add_sources(self, state: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """``state + x @ weight.T`` (in float the order of the sources does not matter)."""
        return state + x @ weight.T

    def membrane_increment(self, v: Tensor, decayed: Tensor, current: Tensor, bias: Tensor | None) -> Tensor:
        """``decayed + current (+ bias)``: the increment update without formats to fit."""
        u = decayed + current
        return u if bias is None else u + bias

    def shift_sum(self, x: Tensor, shift: int) -> Tensor:
        """``x * 2^shift``."""
        return x * 2.0 ** shift


def _clamped(x: Tensor, bits: int, overflow: str) -> Tensor:
    """``x`` clamped to what a saturating ``bits``-bit state holds (gradient 1 inside, 0 outside);
    unchanged under a wrapping rule, whose straight-through gradient is that of ``x``."""
    if overflow in ("saturate", "saturate_symmetric"):
        return x.clamp(*fp.fit_range(bits, overflow))
    return x


class FixedArithmetic:
    """Integer states (held in float tensors) with the profile's formats, straight-through grads.

    Decays use the integer factor nearest to each neuron's ``beta``: the shift
    ``k = round(-log2(1 - beta))`` or the multiplier ``d = round(beta * 2^b)``; the straight-through
    gradient uses the factor the integers realise (``1 - 2^-k`` or ``d / 2^b``).
    """

    is_fixed = True

    def __init__(self, numerics: NumericsSpec, events: Tensor | None = None) -> None:
        self.numerics = numerics
        self.events = events  # when given, saturation/wrap events are added to it (in place)

    def _decay(self, x: Tensor, beta: Tensor | float, fmt: DecayFormat) -> Tensor:
        beta = torch.as_tensor(beta).detach()
        state = x.detach()
        if fmt.kind == "multiply" and state.dtype != torch.float64:
            # the product v * d needs state bits + b bits (Loihi: 24 + 12), beyond float32's 24:
            # formed in float64, the decayed state (within the state's format) is exact again
            exact = quant.decay_state(state.double(), beta, fmt).to(state.dtype)
        else:
            exact = quant.decay_state(state, beta, fmt)
        return straight_through(exact, quant.realised_decay(beta, fmt).to(x.dtype).to(x.device) * x)

    def decay(self, v: Tensor, beta: Tensor | float) -> Tensor:
        """Membrane decay in integer units (shift or multiply-shift of the profile)."""
        return self._decay(v, beta, self.numerics.decay)

    def synapse_decay(self, i: Tensor, alpha: Tensor | float) -> Tensor:
        """Synaptic-current decay in integer units."""
        return self._decay(i, alpha, self.numerics.synapse_decay)

    def _fit(self, x: Tensor, bits: int, overflow: str) -> Tensor:
        observe = self._observer(bits, overflow)
        if observe is not None:
            observe(x)
        if overflow in ("saturate", "saturate_symmetric"):
            return _clamped(x, bits, overflow)  # exact value; gradient 1 inside the range, 0 outside
        return straight_through(fp.fit_to_bits(x.detach(), bits, overflow), x)

    def fit_membrane(self, u: Tensor) -> Tensor:
        """Saturate or wrap the membrane to ``membrane_bits``."""
        return self._fit(u, self.numerics.membrane_bits, self.numerics.overflow)

    def fit_synapse(self, i: Tensor) -> Tensor:
        """Saturate or wrap the synaptic current to ``synapse_bits``."""
        return self._fit(i, *self._synapse_format())

    def to_units(self, value: Tensor, unit: Tensor | float) -> Tensor:
        """A float quantity in integer state units, rounded half to even (straight-through)."""
        scaled = value / unit
        return straight_through(torch.round(scaled.detach()), scaled)

    def _observer(self, bits: int, overflow: str):
        if self.events is None:
            return None

        def observe(x: Tensor) -> None:
            self.events += fp.out_of_range(x.detach(), bits, overflow).sum()
        return observe

    def _synapse_format(self) -> tuple[int, str]:
        n = self.numerics
        return (n.synapse_bits or n.membrane_bits), (n.synapse_overflow or n.overflow)

    def add_sources(self, state: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """``state`` plus each source's ``x[..., j] * weight[:, j]`` in turn, the synapse format's
        overflow rule after each (:func:`fixedpoint.add_per_source`, numerics.accumulate
        ``per_source``); the gradient is that of ``state + x @ weight.T`` inside the range."""
        bits, overflow = self._synapse_format()
        exact = fp.add_per_source(state.detach(), x.detach(), weight.detach(), bits, overflow,
                                  self._observer(bits, overflow))
        return straight_through(exact, _clamped(state + x @ weight.T, bits, overflow))

    def membrane_increment(self, v: Tensor, decayed: Tensor, current: Tensor, bias: Tensor | None) -> Tensor:
        """xylosim's membrane update (:func:`fixedpoint.membrane_increment`, numerics.membrane_update
        ``increment``) in membrane format; gradient of ``decayed + current + bias``."""
        n = self.numerics
        exact = fp.membrane_increment(v.detach(), decayed.detach(), current.detach(),
                                      None if bias is None else bias.detach(), n.membrane_bits, n.overflow,
                                      self._observer(n.membrane_bits, n.overflow))
        proxy = decayed + current if bias is None else decayed + current + bias
        return straight_through(exact, _clamped(proxy, n.membrane_bits, n.overflow))

    def shift_sum(self, x: Tensor, shift: int) -> Tensor:
        """:func:`fixedpoint.shift_sum` (``x << shift``, floor ``>>`` below 0), gradient of ``x * 2^shift``."""
        if shift >= 0:
            return fp.shift_sum(x, shift)
        return straight_through(fp.shift_sum(x.detach(), shift), x * 2.0 ** shift)
