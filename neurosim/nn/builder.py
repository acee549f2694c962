"""Model builders from a short spec string (docs/design.md §5, issue 4).

``mlp:128-128``
    two fully connected spiking layers of 128 neurons, then the readout.
``mlp:64r-32``, ``rmlp:64``
    ``{n}r`` is a dense spiking layer with recurrent weights ``W_rec`` (``[n, n]``: the input of
    step t adds ``W_rec s[t-1]``, docs/design.md §2); ``rmlp:`` makes every layer of the mlp recurrent.
``conv:32c3-64c3s2-64c3s2``
    convolutions: ``{out}c{kernel}`` with optional ``s{stride}`` and ``p{padding}`` (padding
    defaults to kernel // 2); ``mp{k}`` max-pools the previous layer's spikes; a bare number
    adds a fully connected spiking layer (``conv:32c3-mp2-128``).

Every spiking layer is a :class:`~neurosim.nn.layers.SpikingBlock`; ``norm`` puts batch norm on
its input currents (``bn``: seed 003, ``tdbn``: scaled by alpha * theta), and the readout is the
non-spiking integrator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neurosim.nn.layers import Readout, SpikingBlock, SpikingNetwork, TemporalBatchNorm
from neurosim.nn.neuron import LIFNode
from neurosim.nn.surrogate import make_surrogate

_CONV = re.compile(r"^(\d+)c(\d+)(?:s(\d+))?(?:p(\d+))?$")
_POOL = re.compile(r"^mp(\d+)$")
_DENSE = re.compile(r"^(\d+)(r?)$")


@dataclass
class NeuronOptions:
    """Neuron settings shared by every spiking layer of a built model (docs/design.md §2)."""

    beta: float = 0.5
    threshold: float = 1.0
    v_reset: float = 0.0
    reset: str = "hard"
    reset_grad: str | None = None
    synapse_decay: float | None = None
    synapse_decay2: float | None = None  # a second synaptic state per hidden neuron (dense layers, current-based)
    refractory: int = 0
    learn_beta: bool = False
    learn_threshold: bool = False
    v_init: str = "zero"
    surrogate: str = "atan"
    surrogate_params: dict[str, Any] = field(default_factory=dict)


def parse_spec(spec: str) -> tuple[str, list[tuple]]:
    """``"mlp:128r-128"`` -> ``("mlp", [("dense", 128, True), ("dense", 128, False)])`` (the
    flag: recurrent weights); ``rmlp:`` is an mlp whose layers are all recurrent; raises
    ValueError."""
    kind, _, body = spec.partition(":")
    kind = kind.strip().lower()
    all_recurrent = kind == "rmlp"
    if all_recurrent:
        kind = "mlp"
    if kind not in ("mlp", "conv"):
        raise ValueError(f"model spec {spec!r}: expected 'mlp:...', 'rmlp:...' or 'conv:...'")
    layers: list[tuple] = []
    for token in (t.strip().lower() for t in body.split("-") if t.strip()):
        if (m := _DENSE.match(token)):
            layers.append(("dense", int(m.group(1)), all_recurrent or m.group(2) == "r"))
        elif kind == "conv" and (m := _CONV.match(token)):
            k = int(m.group(2))
            layers.append(("conv", int(m.group(1)), k, int(m.group(3) or 1),
                           int(m.group(4)) if m.group(4) is not None else k // 2))
        elif kind == "conv" and (m := _POOL.match(token)):
            layers.append(("pool", int(m.group(1))))
        else:
            raise ValueError(f"model spec {spec!r}: cannot read layer {token!r} "
                             f"(expected e.g. 128, 128r{', 32c3, 64c3s2 or mp2' if kind == 'conv' else ''})")
    if kind == "mlp" and any(layer[0] != "dense" for layer in layers):
        raise ValueError(f"model spec {spec!r}: an mlp has only dense layers")
    if layers and layers[0][0] == "pool":
        raise ValueError(f"model spec {spec!r}: pooling needs a layer before it")
    return kind, layers


def _node(options: NeuronOptions) -> LIFNode:
    params = dict(options.surrogate_params)
    return LIFNode(beta=options.beta, threshold=options.threshold, v_reset=options.v_reset,
                   reset=options.reset, reset_grad=options.reset_grad,
                   surrogate=make_surrogate(options.surrogate, **params),
                   synapse_decay=options.synapse_decay, refractory=options.refractory,
                   learn_beta=options.learn_beta, learn_threshold=options.learn_threshold,
                   v_init=options.v_init, synapse_decay2=options.synapse_decay2)


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int, timesteps: int,
                neuron: NeuronOptions | None = None, norm: str = "none", dropout: float = 0.0,
                tdbn_alpha: float = 1.0, readout_beta: float = 1.0) -> SpikingNetwork:
    """A :class:`SpikingNetwork` from a spec string for inputs of ``input_shape`` (C, H, W).

    ``norm``: ``none`` | ``bn`` (seed 003, BN on input currents) | ``tdbn`` (scale alpha * theta).
    PSG surrogates take the arctan shape on every spiking layer (seed 002 case 1, layers whose
    output is spikes; its case 2, the sigmoid shape, is for fully connected layers whose
    accumulated potential is the network's output, which here is the non-spiking readout). With ``neuron.synapse_decay2`` every spiking layer (dense
    only) gets a second synaptic state: ``synapse2 = nn.Linear(in, out, bias=False)``, and
    ``recurrent2 = nn.Linear(n, n, bias=False)`` where the layer is recurrent.
    """
    if norm not in ("none", "bn", "tdbn"):
        raise ValueError(f"norm must be none, bn or tdbn, got {norm!r}")
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    options = neuron or NeuronOptions()
    kind, layers = parse_spec(spec)
    second = options.synapse_decay2 is not None
    if second and options.synapse_decay is None:
        raise ValueError("neuron.synapse_decay2: a second synaptic state needs current-based neurons (synapse_decay)")
    if second and any(layer[0] == "conv" for layer in layers):
        raise ValueError(f"model spec {spec!r}: a second synaptic state (synapse_decay2) exists for dense layers "
                         "only, not convolutions")
    shape = tuple(input_shape)
    blocks: list[SpikingBlock] = []
    scale = tdbn_alpha * options.threshold if norm == "tdbn" else 1.0
    for layer in layers:
        if layer[0] == "pool":
            blocks[-1].pool = nn.MaxPool2d(layer[1])
            shape = (shape[0], shape[1] // layer[1], shape[2] // layer[1])
            continue
        if layer[0] == "conv":
            _, out, k, stride, pad = layer
            if len(shape) != 3:
                raise ValueError(f"model spec {spec!r}: a convolution after a dense layer")
            synapse: nn.Module = nn.Conv2d(shape[0], out, k, stride, pad, bias=(norm == "none"))
            h = (shape[1] + 2 * pad - k) // stride + 1
            w = (shape[2] + 2 * pad - k) // stride + 1
            if h < 1 or w < 1:
                raise ValueError(f"model spec {spec!r}: layer {out}c{k} leaves no pixels of a {shape} input")
            shape = (out, h, w)
        else:
            synapse = nn.Linear(math.prod(shape), layer[1], bias=(norm == "none"))
            shape = (layer[1],)
        recurrent = nn.Linear(shape[0], shape[0], bias=False) if layer[0] == "dense" and layer[2] else None
        if recurrent is not None:
            with torch.no_grad():  # start near the feed-forward scale: 1/sqrt(n) like nn.Linear, halved
                recurrent.weight.mul_(0.5)
        synapse2 = nn.Linear(synapse.in_features, synapse.out_features, bias=False) if second else None
        recurrent2 = nn.Linear(shape[0], shape[0], bias=False) if second and recurrent is not None else None
        if recurrent2 is not None:
            with torch.no_grad():
                recurrent2.weight.mul_(0.5)
        bn = TemporalBatchNorm(shape[0], scale=scale) if norm != "none" else None
        blocks.append(SpikingBlock(synapse, _node(options), bn, dropout=dropout, recurrent=recurrent,
                                   synapse2=synapse2, recurrent2=recurrent2))
    readout = Readout(math.prod(shape), num_classes, beta=readout_beta, threshold=options.threshold,
                      synapse_decay=options.synapse_decay)
    return SpikingNetwork(blocks, readout, timesteps, tuple(input_shape), spec)


TRAINING_STATE_BYTES = 16
"""Bytes of training state per parameter: float32 weight, gradient and Adam's two moments."""
ACTIVATION_BYTES = 32
"""Bytes kept for backpropagation through time per neuron, step and sample: about eight float32
tensors (input current, synaptic and membrane states, spikes, surrogate gradient, noise)."""


def training_bytes(spec: str, input_shape: tuple[int, ...], num_classes: int, timesteps: int,
                   batch_size: int, **options: Any) -> tuple[int, int]:
    """``(parameters, estimated bytes)`` of training the model ``spec`` (the keyword arguments of
    :func:`build_model`) with batches of ``batch_size``: :data:`TRAINING_STATE_BYTES` per
    parameter plus :data:`ACTIVATION_BYTES` per neuron, step and sample. The model is built on
    PyTorch's meta device, so nothing of its size is allocated; a lower estimate, not a bound."""
    with torch.device("meta"):
        model = build_model(spec, input_shape, num_classes, timesteps, **options)
        parameters = sum(p.numel() for p in model.parameters())
        x = torch.empty((1, *input_shape))
        neurons = num_classes
        for block in model.blocks:
            x = block.synapse(x if isinstance(block.synapse, nn.Conv2d) else x.flatten(1))
            neurons += x[0].numel()
            if block.pool is not None:
                x = block.pool(x)
    return parameters, TRAINING_STATE_BYTES * parameters + ACTIVATION_BYTES * timesteps * batch_size * neurons
