"""Noise in the loop: one chip of a profile, applied to a network during one forward pass.

:class:`ChipContext` is what :class:`neurosim.nn.layers.SpikingNetwork` calls (the
``DeviceHook`` protocol). For each synapse it returns the weights the chip realises — mismatch
and stuck weights from the chip instance, and on a fixed-point chip the integer weight codes with
straight-through gradients (fake quantization, PyTorch QAT style) — and for each neuron layer
the chip's per-neuron thresholds, resets and decays, thermal and threshold noise, dead neurons,
and the arithmetic (float, or the profile's fixed point). All integer rules come from
:mod:`neurosim.device.fixedpoint`; nothing here re-implements them.

State units on a fixed-point chip (:mod:`neurosim.device.quantization`): a layer's membrane,
threshold, reset, bias and noise are integers in units of ``unit = weight_step * input_step``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device.chips import ChipInstances, DynamicNoise, LayerVariation
from neurosim.device.profile import DeviceProfile
from neurosim.errors import NeurosimError
from neurosim.nn.arithmetic import FixedArithmetic, FloatArithmetic, straight_through
from neurosim.nn.neuron import LayerDevice, LayerRules


def layer_rules(profile: DeviceProfile, readout: bool = False) -> LayerRules:
    """A profile's step rules for a spiking layer or (``readout``) its readout: spikes per step
    and input delay from the ``neuron`` / ``readout`` sections, and on a fixed-point chip the
    integer order of ``numerics`` (a float chip ignores numerics)."""
    num, neuron, out = profile.numerics, profile.neuron, profile.readout
    fixed = {} if num.is_float else dict(activation_shift=num.activation_shift, accumulate=num.accumulate,
                                         synapse_update=num.synapse_update, membrane_update=num.membrane_update)
    if readout:
        return LayerRules(delay=out.delay, max_spikes=out.max_spikes, readout_neuron=out.neuron, **fixed)
    return LayerRules(delay=neuron.synapse_delay, max_spikes=neuron.max_spikes, **fixed)



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
                 noise: DynamicNoise | None = None, batch: int = 0, count_events: bool = False) -> None:
        if chips is not None and len(chips) != 1:
            raise ValueError(f"a ChipContext holds one chip, got {len(chips)}")
        self.profile = profile
        self.chips = chips
        self.noise = noise
        self.batch = batch
        read = profile.noise.read
        if read is not None and read.sigma > 0:
            raise NeurosimError(f"profile {profile.name}: noise.read (weight read noise) is not simulated "
                                "yet; remove it or set its sigma to 0")
        self.fixed = not profile.numerics.is_float
        self.arithmetic = FixedArithmetic(profile.numerics) if self.fixed else FloatArithmetic()
        self.count_events = count_events and self.fixed
        self.events: dict[str, Tensor] = {}
        """Saturation/wrap events per layer in this forward (with ``count_events``)."""
        self.bias_overflows: dict[str, str] = {}
        """Per layer, the line export would refuse its bias with, where this forward saturated it."""
        self.weight_steps: dict[str, Tensor] = {}
        """The weight step each layer's last :meth:`synapse` call chose (for :meth:`synapse2`)."""

    def _variation(self, name: str) -> LayerVariation | None:
        if self.chips is None:
            return None
        if name not in self.chips.layers:
            raise KeyError(f"chip has no layer {name!r}; sampled layers: {', '.join(self.chips.layers)}")
        return self.chips.layers[name].select(torch.tensor([0]))

    # ------------------------------------------------------------------ synapses

    def synapse(self, name: str, weight: Tensor, bias: Tensor | None, first: bool, x: Tensor,
                threshold: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | float]:
        """Inputs, weight and bias in state units as this chip realises them, and the unit
        (:mod:`neurosim.device.quantization` fixes the steps)."""
        var = self._variation(name)
        if var is not None and var.weight.z is not None:
            weight = var.weight.apply(weight)[0]
        if not self.fixed:
            if var is not None and var.stuck is not None:
                w_max = weight.detach().abs().max()
                weight = torch.where(var.stuck[0], var.stuck_value[0].to(weight.dtype) * w_max, weight)
            return x, weight, bias, 1.0
        num = self.profile.numerics
        in_step = 1.0
        if first:
            in_step = quant.input_step(num)
            x = fake_quantize(x, in_step, quant.input_bits(num))
        w_step = quant.weight_step(weight, num, threshold, in_step, bias)
        self.weight_steps[name] = w_step
        codes = fake_quantize(weight, w_step, num.weight_bits)
        if var is not None and var.stuck is not None:
            q_max = fp.int_range(num.weight_bits)[1]
            codes = torch.where(var.stuck[0], var.stuck_value[0].to(codes.dtype) * q_max, codes)
        unit = quant.state_unit(w_step, in_step, weight.dim(), num.activation_shift)
        if bias is not None:
            bias = self._bias(name, bias / (unit.reshape(-1) if unit.dim() else unit))
        if num.activation_shift:  # sums << activation_shift: the codes in state units
            codes = codes * float(1 << num.activation_shift)
        return x, codes, bias, unit

    def _bias(self, name: str, scaled: Tensor) -> Tensor:
        """A bias of ``scaled`` state units as the chip holds it (:func:`quantization.bias_codes`,
        the rule export applies: mantissa and exponent), straight-through inside the range. A bias
        the chip cannot hold is saturated here and refused by export; the line export would give
        is kept in :attr:`bias_overflows` (the trainer warns with it)."""
        num = self.profile.numerics
        codes, _, over = quant.bias_codes(scaled, num)
        line = quant.bias_overflow(name, scaled, over, num)
        if line is not None:
            self.bias_overflows[name] = line
        lo, hi = quant.bias_range(num)
        return straight_through(codes, scaled.clamp(float(lo), float(hi)))

    def synapse2(self, name: str, weight: Tensor) -> Tensor:
        """The second synaptic state's weights (Xylo's syn 2) in state units: on a fixed-point chip
        their codes on the weight step of layer ``name``'s first weights (:meth:`synapse`, called
        before in the same forward), times ``2^activation_shift``; in float the weights. Mismatch
        and stuck weights are not sampled for them (the engine applies faults to the first)."""
        if not self.fixed:
            return weight
        num = self.profile.numerics
        if name not in self.weight_steps:
            raise NeurosimError(f"{name}: the second synaptic state's weights need the layer's first weights "
                                "quantized first")
        codes = fake_quantize(weight, self.weight_steps[name], num.weight_bits)
        return codes * float(1 << num.activation_shift) if num.activation_shift else codes

    def recurrent(self, name: str, weight: Tensor, unit: Tensor | float,
                  shift: int | None = None) -> tuple[Tensor, int, int]:
        """Recurrent weights ``[out, out]`` as the chip realises them: on a fixed-point chip the
        codes in units of ``unit * 2^(activation_shift + shift)``
        (:func:`quantization.recurrent_shift`, or the given ``shift``: the second synaptic state's
        ``W_rec2`` takes the first's), the shift, and the activation shift; in float the weights
        (mismatch is not sampled for them), 0, 0."""
        if not self.fixed:
            return weight, 0, 0
        num = self.profile.numerics
        shift = quant.recurrent_shift(weight, unit, num) if shift is None else shift
        codes = fake_quantize(weight, quant.recurrent_step(unit, shift, num), num.weight_bits)
        return codes, shift, num.activation_shift

    def rules(self, name: str) -> LayerRules:
        """The chip's step rules for layer ``name`` (``readout``: the readout section's)."""
        return layer_rules(self.profile, name == "readout")

    def threshold_ceiling(self) -> int:
        """Largest nominal threshold in state units (:func:`quantization.threshold_ceiling`)."""
        return quant.threshold_ceiling(self.profile.numerics)

    # ------------------------------------------------------------------ neurons

    def layer(self, name: str, unit: Tensor | float, shape: tuple[int, ...]) -> LayerDevice:
        """The chip's neuron values for layer ``name`` in state units of ``unit``."""
        var = self._variation(name)
        arithmetic = self.arithmetic
        if self.count_events:
            counter = self.events.setdefault(name, torch.zeros((), dtype=torch.float64))
            arithmetic = FixedArithmetic(self.profile.numerics, counter)

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
            return straight_through(quant.threshold_codes(theta.detach(), unit, self.profile.numerics), theta / unit)

        def v_reset(nominal: Tensor) -> Tensor:
            r = vary("v_reset")(nominal)
            if not self.fixed:
                return r
            return straight_through(quant.reset_codes(r.detach(), unit, self.profile.numerics), r / unit)

        noise = None
        threshold_noise = None
        if self.noise is not None:
            def noise(step: int, state_shape: tuple[int, ...]) -> Tensor | None:
                drawn = self.noise.draw("thermal", name, step, state_shape, self.batch)
                return None if drawn is None else arithmetic.to_units(drawn[0], unit)

            def threshold_noise(step: int, state_shape: tuple[int, ...]) -> Tensor | None:
                jitter = self.noise.threshold_jitter(name, step, state_shape, self.batch)
                return None if jitter is None else arithmetic.to_units(jitter[0], unit)

        dead = var.dead[0] if var is not None and var.dead is not None else None
        rules = self.rules(name)
        return LayerDevice(arithmetic, threshold, v_reset, vary("decay"), vary("synapse_decay"), unit,
                           noise, threshold_noise, dead, rules.max_spikes, rules.synapse_update,
                           rules.membrane_update)
