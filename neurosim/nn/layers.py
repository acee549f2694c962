"""Spiking layers over ``[T, batch, ...]`` tensors and the network that chains them.

A :class:`SpikingBlock` is synapse (linear or conv2d) -> optional batch norm on the input
currents (tdBN, or seed 003's BN) -> :class:`~neurosim.nn.neuron.LIFNode` -> optional pooling and
dropout. :class:`Readout` is the non-spiking integrator whose mean potential over time gives
the logits (DESIGN.md §2). Stateless operations fold time into the batch, so each synapse is one
large GEMM or convolution over all steps.

The chip enters through a ``device`` object passed to :meth:`SpikingNetwork.forward` (see
:class:`neurosim.train.noise.ChipContext`): it turns the layer's weights into the values the chip
realises (mismatch, fake quantization) and gives each neuron layer its per-neuron thresholds,
resets, decays and noise. Without it the network is the ideal float model.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurosim.device.chips import LayerShape
from neurosim.nn.neuron import LayerDevice, LIFNode


class DeviceHook(Protocol):
    """What a network needs from a chip during a forward pass (implemented in neurosim.train)."""

    def synapse(self, name: str, weight: Tensor, bias: Tensor | None, first: bool, x: Tensor,
                threshold: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | float]:
        """Inputs, weight and bias in state units as the chip realises them, and the unit
        (fine enough for the weights, coarse enough for ``threshold`` to fit the chip)."""

    def layer(self, name: str, unit: Tensor | float, shape: tuple[int, ...]) -> LayerDevice:
        """The chip's neuron values for a layer whose state unit is ``unit``."""


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

    def fold(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(gain, offset)`` with ``BN(y) = gain * y + offset`` in eval mode."""
        inv = torch.rsqrt(self.running_var + self.eps)
        gain = self.weight * inv * self.scale
        return gain, (self.bias - self.running_mean * self.weight * inv) * self.scale

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}"


def fold_norm(synapse: nn.Module, norm: TemporalBatchNorm, x: Tensor | None = None,
               ) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``norm(synapse(.))`` as one synapse; when training, the running
    statistics are first updated from the float currents of ``x`` (no gradient through them)."""
    if norm.training and x is not None:
        with torch.no_grad():
            norm(_apply(synapse, x, synapse.weight, synapse.bias))
    gain, offset = norm.fold()
    shape = (-1,) + (1,) * (synapse.weight.dim() - 1)
    weight = synapse.weight * gain.reshape(shape)
    bias = offset if synapse.bias is None else synapse.bias * gain + offset
    return weight, bias


def _apply(synapse: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(synapse, nn.Conv2d):
        # channels-last (NHWC): oneDNN's faster convolutions on CPU (about 1.5x forward and
        # backward at network B's sizes); the neurons' elementwise ops keep the layout, so the
        # next layer's input is already in it. Integer-valued sums are exact in any order.
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, synapse.stride, synapse.padding, synapse.dilation, synapse.groups)
    return F.linear(x, weight, bias)


class SpikingBlock(nn.Module):
    """synapse -> [norm] -> LIF neurons -> [pool] -> [dropout], over ``[T, batch, ...]``."""

    def __init__(self, synapse: nn.Linear | nn.Conv2d, node: LIFNode, norm: TemporalBatchNorm | None = None,
                 pool: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.synapse, self.norm, self.node, self.pool = synapse, norm, node, pool
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.name = "block"
        self.record = False  # keep inputs / spikes for gradient scaling (seed 001)
        self.recorded_input: Tensor | None = None
        self.recorded_spikes: Tensor | None = None

    def currents(self, x: Tensor, device: DeviceHook | None, first: bool,
                 in_gain: Tensor | None) -> tuple[Tensor, Tensor | float]:
        """Input currents ``[T, batch, ...]`` in state units, and the unit."""
        steps, batch = x.shape[:2]
        flat = x.reshape(steps * batch, *x.shape[2:])
        norm_live = self.norm is not None and (device is not None or not self.norm.training)
        if self.norm is not None and not norm_live:  # plain float training: BN on batch statistics
            y = self.norm(_apply(self.synapse, flat, self.synapse.weight, self.synapse.bias))
            unit: Tensor | float = 1.0
        else:
            weight, bias = (fold_norm(self.synapse, self.norm, flat) if self.norm is not None
                            else (self.synapse.weight, self.synapse.bias))
            if in_gain is not None:
                weight = weight * in_gain
            if device is None:
                y, unit = _apply(self.synapse, flat, weight, bias), 1.0
            else:
                xs, weight, bias, unit = device.synapse(self.name, weight, bias, first, flat, self.node.threshold)
                y = _apply(self.synapse, xs, weight, bias)
        return y.reshape(steps, batch, *y.shape[1:]), unit

    def forward(self, x: Tensor, device: DeviceHook | None = None, first: bool = False,
                in_gain: Tensor | None = None, repeat: int = 1) -> Tensor:
        """Spikes ``[T, batch, ...]`` for inputs ``[T, batch, ...]``; with ``repeat = T`` the input
        is one step ``[1, batch, ...]`` held for T steps (direct encoding), whose current is
        computed once and repeated."""
        currents, unit = self.currents(x, device, first, in_gain)
        if repeat > 1:
            currents, x = currents.expand(repeat, *currents.shape[1:]), x.expand(repeat, *x.shape[1:])
        layer_device = device.layer(self.name, unit, tuple(currents.shape[2:])) if device else None
        spikes = self.node(currents, layer_device)
        recorded = (x.detach(), spikes.detach()) if self.record else (None, None)
        self.recorded_input, self.recorded_spikes = recorded
        out = spikes
        if self.pool is not None:
            out = self.pool(out.flatten(0, 1)).reshape(*out.shape[:2], *self.pool_shape(out.shape[2:]))
        if self.dropout is not None:
            out = self.dropout(out)
        return out

    def pool_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape after pooling."""
        with torch.no_grad():
            return tuple(self.pool(torch.zeros(1, *shape)).shape[1:])


class Readout(nn.Module):
    """Non-spiking integrator ``u[t] = beta u[t-1] + W x[t] + b``; logits = mean over t of u.

    On a fixed-point chip ``u`` is held in the membrane format (decay and saturation of the
    profile) and the logits are converted back to float units.
    """

    def __init__(self, in_features: int, num_classes: int, beta: float = 1.0) -> None:
        super().__init__()
        self.synapse = nn.Linear(in_features, num_classes)
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.name = "readout"
        self.record = False  # keep the input spikes (for synaptic-op counts)
        self.recorded_input: Tensor | None = None

    def forward(self, x: Tensor, device: DeviceHook | None = None, in_gain: Tensor | None = None) -> Tensor:
        steps, batch = x.shape[:2]
        flat = x.reshape(steps * batch, -1)
        weight = self.synapse.weight if in_gain is None else self.synapse.weight * in_gain
        if device is None:
            currents, unit = F.linear(flat, weight, self.synapse.bias), 1.0
            arithmetic = LayerDevice.ideal().arithmetic
        else:
            xs, w, b, unit = device.synapse(self.name, weight, self.synapse.bias, False, flat)
            currents = F.linear(xs, w, b)
            arithmetic = device.layer(self.name, unit, (currents.shape[-1],)).arithmetic
        currents = currents.reshape(steps, batch, -1)
        u = torch.zeros_like(currents[0])
        total = torch.zeros_like(u)
        for current in currents.unbind(0):  # one backward node for all steps (not T selects)
            u = arithmetic.fit_membrane(arithmetic.decay(u, self.beta) + current)
            total = total + u
        return total / steps * unit


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
