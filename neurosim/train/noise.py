"""Noise in the loop: one chip of a profile, applied to a network during one forward pass.

:class:`ChipContext` is what :class:`neurosim.nn.layers.SpikingNetwork` calls (the
``DeviceHook`` protocol). For each synapse it returns the weights the chip realises — mismatch
and stuck weights from the chip instance, and on a fixed-point chip the integer weight codes with
straight-through gradients (fake quantization, PyTorch QAT style) — and for each neuron layer
the chip's per-neuron thresholds, resets and decays, thermal and threshold noise, dead neurons,
and the arithmetic (float, or the profile's fixed point). All integer rules come from
:mod:`neurosim.device.fixedpoint`; nothing here re-implements them.

State units on a fixed-point chip: a layer's membrane, threshold, reset, bias and noise are
integers in units of ``unit = weight_step * input_step`` (input_step is 1 for spikes and
``1 / (2^(input_bits-1) - 1)`` for the real-valued input of the first layer, whose values lie in
[0, 1]). The weight step is the one that fits the weights into ``weight_bits``, made coarser when
needed so that the threshold stays below :meth:`ChipContext.threshold_ceiling`. Thresholds are
rounded half to even and kept at least 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device.chips import ChipInstances, DynamicNoise, LayerVariation
from neurosim.device.profile import DeviceProfile
from neurosim.nn.arithmetic import FixedArithmetic, FloatArithmetic, straight_through
from neurosim.nn.neuron import LayerDevice

DEFAULT_INPUT_BITS = 8
STATE_HEADROOM_BITS = 3


def fake_quantize(x: Tensor, scale: Tensor | float, bits: int) -> Tensor:
    """``x / scale`` rounded half to even and saturated to ``bits`` bits, as integer-valued floats
    with a straight-through gradient (zero outside the range)."""
    lo, hi = fp.int_range(bits)
    scaled = x / scale
    return straight_through(torch.round(scaled.detach()), scaled).clamp(lo, hi)


class ChipContext:
    """One chip instance (``chips`` holds exactly one) of ``profile`` in a forward pass.

    ``chips=None`` means no static variation (the nominal chip); ``noise=None`` no dynamic noise;
    ``batch`` keys the dynamic noise so that every training batch draws fresh noise.
    """

    def __init__(self, profile: DeviceProfile, chips: ChipInstances | None = None,
                 noise: DynamicNoise | None = None, batch: int = 0) -> None:
        if chips is not None and len(chips) != 1:
            raise ValueError(f"a ChipContext holds one chip, got {len(chips)}")
        self.profile = profile
        self.chips = chips
        self.noise = noise
        self.batch = batch
        self.fixed = not profile.numerics.is_float
        self.arithmetic = FixedArithmetic(profile.numerics) if self.fixed else FloatArithmetic()

    def _variation(self, name: str) -> LayerVariation | None:
        if self.chips is None:
            return None
        if name not in self.chips.layers:
            raise KeyError(f"chip has no layer {name!r}; sampled layers: {', '.join(self.chips.layers)}")
        return self.chips.layers[name].select(torch.tensor([0]))

    # ------------------------------------------------------------------ synapses

    def synapse(self, name: str, weight: Tensor, bias: Tensor | None, first: bool, x: Tensor,
                threshold: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | float]:
        """Inputs, weight and bias in state units as this chip realises them, and the unit.

        The weight step is the larger of what the weights need (:func:`quantization_scale`) and
        what the layer's ``threshold`` needs to fit ``threshold_bits`` in state units."""
        var = self._variation(name)
        if var is not None and var.weight.z is not None:
            weight = var.weight.apply(weight)[0]
        if not self.fixed:
            if var is not None and var.stuck is not None:
                w_max = weight.detach().abs().max()
                weight = torch.where(var.stuck[0], var.stuck_value[0].to(weight.dtype) * w_max, weight)
            return x, weight, bias, 1.0
        num = self.profile.numerics
        input_step = 1.0
        if first:
            input_bits = num.input_bits or DEFAULT_INPUT_BITS
            input_step = 1.0 / fp.int_range(input_bits)[1]
            x = fake_quantize(x, input_step, input_bits)
        w_step = fp.quantization_scale(weight, num.weight_bits, num.weight_scale)
        if threshold is not None:
            floor = threshold.detach().abs() / (self.threshold_ceiling() * input_step)
            if num.weight_scale == "power_of_two":
                floor = torch.exp2(torch.ceil(torch.log2(floor)))
            w_step = torch.maximum(w_step, floor.to(w_step.dtype))
        codes = fake_quantize(weight, w_step, num.weight_bits)
        if var is not None and var.stuck is not None:
            q_max = fp.int_range(num.weight_bits)[1]
            codes = torch.where(var.stuck[0], var.stuck_value[0].to(codes.dtype) * q_max, codes)
        unit = (w_step * input_step).reshape(-1, *([1] * (weight.dim() - 2))) if w_step.dim() else \
            w_step * input_step
        if bias is not None:
            bias = fake_quantize(bias, unit.reshape(-1) if torch.is_tensor(unit) and unit.dim() else unit,
                                 num.bias_bits or num.membrane_bits)
        return x, codes, bias, unit

    def threshold_ceiling(self) -> int:
        """Largest nominal threshold in state units: the threshold format's maximum, and
        ``STATE_HEADROOM_BITS`` below the smallest state format, so that potentials and currents
        above threshold still fit before they saturate or wrap."""
        num = self.profile.numerics
        state_bits = min(b for b in (num.membrane_bits, num.synapse_bits) if b is not None)
        return min(fp.int_range(num.threshold_bits or num.membrane_bits)[1],
                   1 << max(state_bits - 1 - STATE_HEADROOM_BITS, 0))

    # ------------------------------------------------------------------ neurons

    def layer(self, name: str, unit: Tensor | float, shape: tuple[int, ...]) -> LayerDevice:
        """The chip's neuron values for layer ``name`` in state units of ``unit``."""
        var = self._variation(name)
        arithmetic = self.arithmetic

        def vary(quantity: str):
            def apply(nominal: Tensor) -> Tensor:
                perturbation = None if var is None else getattr(var, quantity)
                if perturbation is None or perturbation.z is None:
                    return nominal
                return perturbation.apply(nominal)[0]
            return apply

        def threshold(nominal: Tensor) -> Tensor:
            theta = vary("v_threshold")(nominal)
            if not self.fixed:
                return theta
            hi = fp.int_range(self.profile.numerics.threshold_bits or self.profile.numerics.membrane_bits)[1]
            return arithmetic.to_units(theta, unit).clamp(1, hi)

        def v_reset(nominal: Tensor) -> Tensor:
            r = vary("v_reset")(nominal)
            if not self.fixed:
                return r
            lo, hi = fp.int_range(self.profile.numerics.membrane_bits)
            return arithmetic.to_units(r, unit).clamp(lo, hi)

        noise = None
        threshold_noise = None
        if self.noise is not None:
            def noise(step: int, state_shape: tuple[int, ...]) -> Tensor | None:
                drawn = self.noise.draw("thermal", name, step, state_shape, self.batch)
                return None if drawn is None else arithmetic.to_units(drawn[0], unit)

            def threshold_noise(step: int, state_shape: tuple[int, ...]) -> Tensor | None:
                spec = self.noise.spec("v_threshold")
                drawn = self.noise.draw("v_threshold", name, step, state_shape, self.batch)
                if drawn is None:
                    return None
                jitter = drawn[0] * (abs(self.profile.neuron.v_threshold) if spec.relative else 1.0)
                return arithmetic.to_units(jitter, unit)

        dead = var.dead[0] if var is not None and var.dead is not None else None
        return LayerDevice(arithmetic, threshold, v_reset, vary("decay"), vary("synapse_decay"), unit,
                           noise, threshold_noise, dead)
