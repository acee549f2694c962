"""Spiking layers over ``[T, batch, ...]`` tensors and the network that chains them.

A :class:`SpikingBlock` is synapse (linear or conv2d) -> optional batch norm on the input
currents (tdBN, or seed 003's BN) -> :class:`~neurosim.nn.neuron.LIFNode` -> optional pooling and
dropout, with optional recurrent weights (``W_rec s[t-1]`` in the step loop). :class:`Readout`
is the non-spiking integrator whose mean potential over time gives the logits (docs/design.md §2), or
on a chip whose readout fires (Xylo) a LIF neuron of the chip. Stateless operations fold time
into the batch, so each synapse is one large GEMM or convolution over all steps.

The chip enters through a ``device`` object passed to :meth:`SpikingNetwork.forward` (see
:class:`neurosim.train.noise.ChipContext`): it turns the layer's weights into the values the chip
realises (mismatch, fake quantization) and gives each neuron layer its per-neuron thresholds,
resets, decays and noise. Without it the network is the ideal float model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurosim.device.chips import LayerShape
from neurosim.errors import NeurosimError
from neurosim.nn.neuron import (LayerDevice, LayerRules, LIFNode, LIFState, SecondDrive, Sources, StepParameters,
                                lif_step)
from neurosim.nn.surrogate import ATan

_READOUT_SURROGATE = ATan()


class DeviceHook(Protocol):
    """What a network needs from a chip during a forward pass (implemented in neurosim.train)."""

    def synapse(self, name: str, weight: Tensor, bias: Tensor | None, first: bool, x: Tensor,
                threshold: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | float]:
        """Inputs, weight and bias in state units as the chip realises them, and the unit
        (fine enough for the weights, coarse enough for ``threshold`` to fit the chip)."""

    def layer(self, name: str, unit: Tensor | float, shape: tuple[int, ...]) -> LayerDevice:
        """The chip's neuron values for a layer whose state unit is ``unit``."""

    def recurrent(self, name: str, weight: Tensor, unit: Tensor | float,
                  shift: int | None = None) -> tuple[Tensor, int, int]:
        """Recurrent weights as the chip realises them, their shift (``shift`` where given) and
        the activation shift."""

    def synapse2(self, name: str, weight: Tensor) -> Tensor:
        """The second synaptic state's weights in state units, on the weight step that the last
        :meth:`synapse` call for layer ``name`` chose (the same unit and shifts as the first)."""

    def rules(self, name: str) -> LayerRules:
        """The chip's step rules for a layer (``readout``: the readout's)."""


class TemporalBatchNorm(nn.BatchNorm1d):
    """Batch norm of input currents over (time, batch, space) per channel, times ``scale``.

    ``scale = alpha * theta`` is tdBN (Zheng et al. 2021, used by seeds 000/001);
    ``scale = 1`` is seed 003's BN on the input currents. Statistics are shared over time, so
    the layer folds into the synapse's weights and bias at export.
    """

    def __init__(self, num_features: int, scale: float = 1.0, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.scale = float(scale)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input [N, C, ...], got {input.dim()}D")

    def forward(self, x: Tensor) -> Tensor:  # x: [N, C, ...], any memory layout (no reshape copy)
        out = super().forward(x)
        return out if self.scale == 1.0 else out * self.scale  # a pass over the currents spared

    def fold(self, mean: Tensor | None = None, var: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-channel ``(gain, offset)`` with ``BN(y) = gain * y + offset`` for the statistics
        ``mean`` and ``var`` (default: the running ones, eval mode)."""
        mean = self.running_mean if mean is None else mean
        inv = torch.rsqrt((self.running_var if var is None else var) + self.eps)
        gain = self.weight * inv * self.scale
        return gain, (self.bias - mean * self.weight * inv) * self.scale

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}"


def fold_norm(synapse: nn.Module, norm: TemporalBatchNorm, x: Tensor | None = None,
               ) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``norm(synapse(.))`` as one synapse.

    In training (``norm.training`` and inputs ``x`` given) the fold uses the batch statistics of
    the float currents ``synapse(x)``, with their gradient, and updates the running statistics:
    the folded synapse then computes exactly what batch norm computes in training, so a chip in
    the loop trains the same network as float training does (the fold of quantization-aware
    training, Jacob et al. 2018). In eval the running statistics are folded, as export does."""
    if norm.training and x is not None:
        y = _apply(synapse, x, synapse.weight, synapse.bias)
        dims = [0, *range(2, y.dim())]
        mean, var = y.mean(dims), y.var(dims, correction=0)
        _update_running_statistics(norm, mean, var, y.numel() // y.shape[1])
        gain, offset = norm.fold(mean, var)
    else:
        gain, offset = norm.fold()
    shape = (-1,) + (1,) * (synapse.weight.dim() - 1)
    weight = synapse.weight * gain.reshape(shape)
    bias = offset if synapse.bias is None else synapse.bias * gain + offset
    return weight, bias


@torch.no_grad()
def _update_running_statistics(norm: TemporalBatchNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """What ``nn.BatchNorm1d`` does in training: exponential averages with ``momentum`` of the
    batch mean and the unbiased batch variance."""
    momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked + 1)
    norm.num_batches_tracked.add_(1)
    norm.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
    unbiased = var.detach() * (count / max(count - 1, 1))
    norm.running_var.mul_(1 - momentum).add_(momentum * unbiased)


def _apply(synapse: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(synapse, nn.Conv2d):
        # channels-last (NHWC): oneDNN's faster convolutions on CPU (about 1.5x forward and
        # backward at network B's sizes); the neurons' elementwise ops keep the layout, so the
        # next layer's input is already in it. Integer-valued sums are exact in any order.
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, synapse.stride, synapse.padding, synapse.dilation, synapse.groups)
    return F.linear(x, weight, bias)


def delayed(x: Tensor, delay: int) -> Tensor:
    """``x`` ``[T, ...]`` shifted ``delay`` steps later along time, zeros before (the input of
    step t is the output of step t - delay)."""
    if delay <= 0:
        return x
    steps = x.shape[0]
    if delay >= steps:
        return torch.zeros_like(x)
    return torch.cat([torch.zeros_like(x[:delay]), x[:steps - delay]])


class SynapticDrive(NamedTuple):
    """A layer's synaptic input over all steps: ``currents`` ``[T | 1, batch, ...]`` in state
    units (the bias included unless it is given apart), the ``bias`` apart (state units, or None),
    the state ``unit``, and the inputs and weights as the chip realises them (``inputs``
    ``[T | 1, batch, in]``, ``weight`` in state units) for a per-source delivery."""

    currents: Tensor
    bias: Tensor | None
    unit: Tensor | float
    inputs: Tensor
    weight: Tensor


class SpikingBlock(nn.Module):
    """synapse -> [norm] -> LIF neurons -> [pool] -> [dropout], over ``[T, batch, ...]``.

    With ``recurrent`` (an ``nn.Linear(n, n, bias=False)``, dense layers only) the synaptic input
    of step t adds ``W_rec s[t-1]`` (``s[-1] = 0``, docs/design.md §2), computed inside the time loop.
    With ``synapse2`` (``nn.Linear(in, out, bias=False)``) and optionally ``recurrent2`` (``[out,
    out]``) the neurons have a second synaptic state (Xylo's syn 2; the node's ``synapse_decay2``)
    fed like the first by ``W2 x[t] + W_rec2 s[t-1]``; the membrane takes the sum of both states.
    """

    def __init__(self, synapse: nn.Linear | nn.Conv2d, node: LIFNode, norm: TemporalBatchNorm | None = None,
                 pool: nn.Module | None = None, dropout: float = 0.0, recurrent: nn.Linear | None = None,
                 synapse2: nn.Linear | None = None, recurrent2: nn.Linear | None = None) -> None:
        super().__init__()
        self.synapse, self.norm, self.node, self.pool = synapse, norm, node, pool
        if recurrent is not None:
            if not isinstance(synapse, nn.Linear) or recurrent.weight.shape != (synapse.out_features,) * 2:
                raise ValueError("recurrent weights need a dense layer and shape [out, out]")
        if synapse2 is not None:
            if not isinstance(synapse, nn.Linear) or synapse2.weight.shape != synapse.weight.shape:
                raise ValueError("a second synaptic state needs a dense layer and weights of the first's shape")
            if node.synapse_decay2 is None:
                raise ValueError("a second synaptic state needs a neuron with synapse_decay2")
        if recurrent2 is not None and (synapse2 is None or recurrent is None
                                       or recurrent2.weight.shape != recurrent.weight.shape):
            raise ValueError("recurrent2 needs synapse2 and recurrent weights of the same shape")
        self.recurrent = recurrent
        self.synapse2, self.recurrent2 = synapse2, recurrent2
        node.recurrent = recurrent is not None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.name = "block"
        self.record = False  # keep inputs / spikes for gradient scaling (seed 001)
        self.recorded_input: Tensor | None = None
        self.recorded_spikes: Tensor | None = None

    def currents(self, x: Tensor, device: DeviceHook | None, first: bool,
                 in_gain: Tensor | None) -> tuple[Tensor, Tensor | float]:
        """Input currents ``[T, batch, ...]`` in state units (bias included), and the unit."""
        drive = self.drive(x, device, first, in_gain, split_bias=False)
        return drive.currents, drive.unit

    def drive(self, x: Tensor, device: DeviceHook | None, first: bool, in_gain: Tensor | None,
              split_bias: bool) -> SynapticDrive:
        """The :class:`SynapticDrive` of inputs ``x`` ``[T | 1, batch, ...]``; with ``split_bias``
        the bias stays apart (it joins the membrane, not the synaptic state)."""
        steps, batch = x.shape[:2]
        flat = x.reshape(steps * batch, *x.shape[2:])
        norm_live = self.norm is not None and (device is not None or not self.norm.training)
        bias_apart = None
        if self.norm is not None and not norm_live:  # plain float training: BN on batch statistics
            y = self.norm(_apply(self.synapse, flat, self.synapse.weight, self.synapse.bias))
            unit: Tensor | float = 1.0
            xs, weight = flat, self.synapse.weight
        else:
            weight, bias = (fold_norm(self.synapse, self.norm, flat) if self.norm is not None
                            else (self.synapse.weight, self.synapse.bias))
            if in_gain is not None:
                weight = weight * in_gain
            if device is None:
                xs, unit = flat, 1.0
            else:
                xs, weight, bias, unit = device.synapse(self.name, weight, bias, first, flat, self.node.threshold)
            if split_bias and bias is not None:
                bias_apart = bias if isinstance(self.synapse, nn.Linear) else bias.reshape(-1, 1, 1)
                bias = None
            y = _apply(self.synapse, xs, weight, bias)
        return SynapticDrive(y.reshape(steps, batch, *y.shape[1:]), bias_apart, unit,
                             xs.reshape(steps, batch, *xs.shape[1:]), weight)

    def recurrent_input(self, device: DeviceHook | None, unit: Tensor | float, layer_device: LayerDevice | None,
                        second: bool = False, shift: int | None = None,
                        ) -> tuple[Callable[[Tensor], Tensor], Tensor | None, int]:
        """``s -> W_rec s`` in state units (on a fixed-point chip ``shift_sum(codes s, shift)
        << activation_shift``), the weights in state units for a per-source delivery (None
        where the chip's shift is negative, which only a whole sum expresses) and the shift.
        ``second``: the second synaptic state's ``W_rec2``, on the given ``shift`` (the first's)."""
        weight = (self.recurrent2 if second else self.recurrent).weight
        gain = self.node.output_gain
        if gain is not None:  # TrSG: the spikes carry theta
            weight = weight * gain
        if device is None:
            return (lambda s: F.linear(s, weight)), weight, 0
        codes, shift, activation = device.recurrent(self.name, weight, unit, shift)
        arithmetic = layer_device.arithmetic

        def current(s: Tensor) -> Tensor:
            y = arithmetic.shift_sum(F.linear(s, codes), shift)
            return y * float(1 << activation) if activation else y

        return current, (codes * 2.0 ** (shift + activation) if shift >= 0 else None), shift

    def forward(self, x: Tensor, device: DeviceHook | None = None, first: bool = False,
                in_gain: Tensor | None = None, repeat: int = 1) -> Tensor:
        """Spikes ``[T, batch, ...]`` for inputs ``[T, batch, ...]``; with ``repeat = T`` the input
        is one step ``[1, batch, ...]`` held for T steps (direct encoding), whose current is
        computed once and repeated. The chip's step rules (:class:`~neurosim.nn.neuron.LayerRules`)
        delay the input, keep the bias on the membrane and deliver per source where it says so."""
        rules = device.rules(self.name) if device is not None else LayerRules()
        # per source: into a synaptic state (a neuron without one takes the whole sum, as the engine)
        # per-source delivery is a dense layer's (a convolution adds one sum, as the engine does)
        per_source = (rules.accumulate == "per_source" and self.node.synapse_decay is not None
                      and isinstance(self.synapse, nn.Linear))
        split = (self.node.synapse_decay is not None or rules.membrane_update == "increment" or rules.delay > 0
                 or per_source)
        drive = self.drive(x, device, first, in_gain, split)
        currents, inputs = drive.currents, drive.inputs
        if repeat > 1:
            currents, x = currents.expand(repeat, *currents.shape[1:]), x.expand(repeat, *x.shape[1:])
            inputs = inputs.expand(repeat, *inputs.shape[1:])
        currents, inputs = delayed(currents, rules.delay), delayed(inputs, rules.delay)
        unit = drive.unit
        layer_device = device.layer(self.name, unit, tuple(currents.shape[2:])) if device else None
        recurrent, sources, second = None, None, None
        if self.recurrent is not None:
            recurrent, rec_weight, rec_shift = self.recurrent_input(device, unit, layer_device)
        if per_source:
            if self.recurrent is not None and rec_weight is None:
                raise NeurosimError(f"{self.name}: per_source delivery needs a recurrent shift >= 0")
            sources = (inputs, drive.weight, rec_weight if self.recurrent is not None else None)
        if self.synapse2 is not None:
            second = self.second_drive(device, unit, layer_device, inputs, in_gain, per_source,
                                       rec_shift if self.recurrent2 is not None else None)
        spikes = self.node(currents, layer_device, drive.bias, recurrent, sources, second)
        recorded = (x.detach(), spikes.detach()) if self.record else (None, None)
        self.recorded_input, self.recorded_spikes = recorded
        out = spikes
        if self.pool is not None:
            out = self.pool(out.flatten(0, 1)).reshape(*out.shape[:2], *self.pool_shape(out.shape[2:]))
        if self.dropout is not None:
            out = self.dropout(out)
        return out

    def second_drive(self, device: DeviceHook | None, unit: Tensor | float, layer_device: LayerDevice | None,
                     inputs: Tensor, in_gain: Tensor | None, per_source: bool, rec_shift: int | None) -> SecondDrive:
        """The second synaptic state's input (:class:`~neurosim.nn.neuron.SecondDrive`) for the
        layer's inputs ``[T, batch, in]`` as the chip realises them (delayed, quantized): the
        weights on the first state's weight step, ``W_rec2`` on the first's recurrent shift."""
        weight = self.synapse2.weight if in_gain is None else self.synapse2.weight * in_gain
        if device is not None:
            weight = device.synapse2(self.name, weight)
        recurrent, rec_weight = None, None
        if self.recurrent2 is not None:
            recurrent, rec_weight, _ = self.recurrent_input(device, unit, layer_device, second=True, shift=rec_shift)
        if per_source:
            return SecondDrive(weight=weight, rec_weight=rec_weight)
        return SecondDrive(currents=F.linear(inputs, weight), recurrent=recurrent)

    def pool_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape after pooling."""
        with torch.no_grad():
            return tuple(self.pool(torch.zeros(1, *shape)).shape[1:])


class Readout(nn.Module):
    """The output layer; logits = mean over t of its membrane potential, times the state unit.

    By default (and on every chip whose ``readout.neuron`` is ``integrator``) the non-spiking
    integrator ``u[t] = fit(beta u[t-1] + W x[t] + b)`` (the chip's delay applies, its other step
    rules do not: the engine's integrator). On a chip whose readout is ``lif`` it is a
    neuron of the chip's model (:func:`~neurosim.nn.neuron.lif_step` with the chip's step rules,
    the current-based synapse ``synapse_decay``, ``threshold``, soft reset, the readout's
    ``max_spikes``; the chip's variation, noise and dead neurons as for a hidden layer) and the
    mean is over its membrane after the reset. On a fixed-point chip the
    states are held in the chip's formats. ``threshold`` and ``synapse_decay`` are plain
    attributes (set by the builder from the model's neuron options), not checkpoint state.
    """

    def __init__(self, in_features: int, num_classes: int, beta: float = 1.0, threshold: float = 1.0,
                 synapse_decay: float | None = None) -> None:
        super().__init__()
        self.synapse = nn.Linear(in_features, num_classes)
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.threshold = float(threshold)
        self.synapse_decay = None if synapse_decay is None else float(synapse_decay)
        self.name = "readout"
        self.record = False  # keep the input spikes (for synaptic-op counts)
        self.recorded_input: Tensor | None = None
        self.recorded_spikes: Tensor | None = None  # spike counts of a lif readout (when record)

    def forward(self, x: Tensor, device: DeviceHook | None = None, in_gain: Tensor | None = None) -> Tensor:
        steps, batch = x.shape[:2]
        flat = x.reshape(steps * batch, -1)
        weight = self.synapse.weight if in_gain is None else self.synapse.weight * in_gain
        rules = device.rules(self.name) if device is not None else LayerRules()
        lif = rules.readout_neuron == "lif"
        split = lif or rules.delay > 0
        if device is None:
            xs, w, b, unit = flat, weight, self.synapse.bias, 1.0
            layer_device = LayerDevice.ideal()
        else:
            threshold = torch.tensor(self.threshold) if lif else None
            xs, w, b, unit = device.synapse(self.name, weight, self.synapse.bias, False, flat, threshold)
            layer_device = device.layer(self.name, unit, (w.shape[0],))
        arithmetic = layer_device.arithmetic
        bias = b if split else None
        currents = F.linear(xs, w, None if split else b).reshape(steps, batch, -1)
        currents = delayed(currents, rules.delay)
        if lif:
            inputs = delayed(xs.reshape(steps, batch, -1), rules.delay)
            return self._lif(currents, inputs, w, bias, layer_device, rules, unit)
        u = torch.zeros_like(currents[0])
        total = torch.zeros_like(u)
        for current in currents.unbind(0):  # one backward node for all steps (not T selects)
            decayed = arithmetic.decay(u, self.beta)  # the integrator: u = fit(decay(u) + W x + b), every chip
            u = arithmetic.fit_membrane(decayed + current if bias is None else decayed + current + bias)
            total = total + u
        return total / steps * unit

    def _lif(self, currents: Tensor, inputs: Tensor, weight: Tensor, bias: Tensor | None, device: LayerDevice,
             rules: LayerRules, unit: Tensor | float) -> Tensor:
        """The lif readout: mean over t of the membrane after reset, times the unit."""
        alpha = None if self.synapse_decay is None else device.alpha(torch.tensor(self.synapse_decay))
        threshold = device.threshold(torch.tensor(self.threshold))
        p = StepParameters(device.beta(self.beta), threshold, device.v_reset(torch.tensor(0.0)), alpha, "soft",
                           "full", 0, unit, rules.max_spikes, device.synapse_update, device.membrane_update)
        v = torch.zeros_like(currents[0])
        state = LIFState(v, torch.zeros_like(v) if alpha is not None else None)
        total = torch.zeros_like(v)
        spikes = []
        per_source = rules.accumulate == "per_source" and alpha is not None
        shape = tuple(currents.shape[1:])
        for t, current in enumerate(currents.unbind(0)):
            drive = Sources(inputs[t], weight) if per_source else current
            noise = device.noise(t, shape) if device.noise else None
            step_p = p
            jitter = device.threshold_noise(t, shape) if device.threshold_noise is not None else None
            if jitter is not None:
                step_p = p._replace(threshold=p.threshold + jitter)
            s, state, _ = lif_step(state, drive, step_p, _READOUT_SURROGATE, device.arithmetic, noise, device.dead,
                                   bias)
            spikes.append(s)
            total = total + state.v
        self.recorded_spikes = torch.stack(spikes).detach() if self.record else None
        return total / currents.shape[0] * unit


class SpikingNetwork(nn.Module):
    """Spiking blocks then a readout. Input ``[batch, ...]`` (repeated for ``timesteps`` steps,
    direct encoding) or frames ``[batch, T, ...]`` with ``T = timesteps`` (batch first, as
    datasets and the integer engine hold them); output logits ``[batch, classes]``."""

    def __init__(self, blocks: list[SpikingBlock], readout: Readout, timesteps: int,
                 input_shape: tuple[int, ...], spec: str = "") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        for i, block in enumerate(blocks):
            block.name = f"block{i}"
        self.readout = readout
        self.timesteps = int(timesteps)
        self.input_shape = tuple(input_shape)
        self.spec = spec
        self.last_spike_counts: list[Tensor] = []

    def forward(self, x: Tensor, device: DeviceHook | None = None) -> Tensor:
        static = x.dim() == len(self.input_shape) + 1
        if static:  # direct encoding: the same input every step; the first layer's current once
            x = x.unsqueeze(0)
        else:  # frames [batch, T, ...] -> [T, batch, ...]
            if x.dim() != len(self.input_shape) + 2 or x.shape[1] != self.timesteps:
                raise ValueError(f"input of shape {tuple(x.shape)}: expected [batch, *{self.input_shape}] or "
                                 f"frames [batch, {self.timesteps}, *{self.input_shape}]")
            x = x.transpose(0, 1)
        counts, gain = [], None
        for i, block in enumerate(self.blocks):
            if isinstance(block.synapse, nn.Linear):
                x = x.flatten(2)
            x = block(x, device, first=(i == 0), in_gain=gain, repeat=self.timesteps if static and i == 0 else 1)
            gain = block.node.output_gain
            counts.append(x.detach().flatten(2).sum(dim=(0, 2)))
        self.last_spike_counts = counts  # per block: spikes per sample [batch]
        x = x.flatten(2)
        self.readout.recorded_input = x.detach() if self.readout.record else None
        return self.readout(x, device, in_gain=gain)

    def spiking_nodes(self) -> list[LIFNode]:
        """The LIF layers, input to output."""
        return [b.node for b in self.blocks]

    def layer_shapes(self) -> dict[str, LayerShape]:
        """Neuron and weight shapes per layer, for :func:`neurosim.device.sample_chips`."""
        shapes: dict[str, LayerShape] = {}
        x = torch.zeros(1, 1, *self.input_shape)
        with torch.no_grad():
            for block in self.blocks:
                if isinstance(block.synapse, nn.Linear):
                    x = x.flatten(2)
                y = _apply(block.synapse, x.flatten(0, 1), block.synapse.weight, block.synapse.bias)
                shapes[block.name] = LayerShape(tuple(y.shape[1:]), tuple(block.synapse.weight.shape))
                x = y.unsqueeze(0)
                if block.pool is not None:
                    x = block.pool(x.flatten(0, 1)).unsqueeze(0)
        w = self.readout.synapse.weight
        shapes["readout"] = LayerShape((w.shape[0],), tuple(w.shape))
        return shapes
