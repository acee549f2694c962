"""The two benchmark networks of issue 7, the shared neuron, synthetic data and FLOP counts.

Network A: 784-512-512-10 MLP, T = 8, batch 128. Network B: conv 32c3 + BN, 64c3s2 + BN,
64c3s2 + BN, linear 10 on 1x28x28 inputs, T = 4, batch 64. ``--quick`` shrinks both to tiny
sizes (same structure) so the smoke test runs in seconds.

The function every library computes (issue 7, docs/design.md §2 with these settings): LIF with
``beta = 0.9``, threshold 1, hard reset to 0 with the reset detached from the graph
(``dv/ds = 0``), spikes ``H(u - 1)`` with the ATan surrogate ``(alpha/2) / (1 + (pi/2 alpha x)^2)``,
``alpha = 2``; direct input repeated every step; the output layer is a linear readout of the
last spikes whose outputs are averaged over time (``logits = (1/T) sum_t (W s[t] + b)``, i.e.
"summed over time" divided by T: neurosim's readout with ``readout_beta = 0`` reports the mean,
so the peers divide their sum by T as well); cross-entropy loss; SGD with momentum 0.9; float32.

FLOP convention (stated in RESULTS.md): the nominal work of the function, ``2 * MACs`` of every
linear and convolution layer per sample and step, times ``T * batch`` — and times 3 for a
training step (forward, gradient of the inputs, gradient of the weights). Batch norm, the
neurons and the loss are not counted. An implementation that skips work (e.g. computes the
repeated input's first layer once) is credited with the nominal figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurosim.nn.builder import NeuronOptions, build_model, parse_spec
from neurosim.nn.layers import SpikingNetwork

BETA = 0.9
THRESHOLD = 1.0
ATAN_ALPHA = 2.0
LEARNING_RATE = 0.01
MOMENTUM = 0.9
CLASSES = 10
WEIGHT_GAIN = 2.0
"""Factor on the default (Kaiming-uniform) weights of the spiking layers, so that every layer of
the synthetic benchmark fires at a moderate rate (the rates are reported)."""

NEURON = NeuronOptions(beta=BETA, threshold=THRESHOLD, v_reset=0.0, reset="hard", reset_grad="detach",
                       surrogate="atan", surrogate_params={"alpha": ATAN_ALPHA})
"""The shared LIF of issue 7 in neurosim's builder options."""


@dataclass(frozen=True)
class Network:
    """One benchmark network: a neurosim model spec and its sizes."""

    name: str
    spec: str
    input_shape: tuple[int, int, int]
    timesteps: int
    batch: int
    norm: str
    description: str

    @property
    def layers(self) -> list[tuple]:
        """Parsed spec (neurosim's builder grammar), without the readout."""
        return parse_spec(self.spec)[1]


FULL = {
    "A": Network("A", "mlp:512-512", (1, 28, 28), 8, 128, "none", "784-512-512-10 MLP, T=8, batch 128"),
    "B": Network("B", "conv:32c3-64c3s2-64c3s2", (1, 28, 28), 4, 64, "bn",
                 "conv 32c3+BN, 64c3s2+BN, 64c3s2+BN, linear 10 on 1x28x28, T=4, batch 64"),
}
QUICK = {
    "A": Network("A", "mlp:32-32", (1, 28, 28), 2, 8, "none", "784-32-32-10 MLP, T=2, batch 8 (quick)"),
    "B": Network("B", "conv:4c3-8c3s2-8c3s2", (1, 12, 12), 2, 4, "bn",
                 "conv 4c3+BN, 8c3s2+BN, 8c3s2+BN, linear 10 on 1x12x12, T=2, batch 4 (quick)"),
}


def networks(quick: bool) -> dict[str, Network]:
    """The benchmark networks by name (tiny sizes with ``quick``)."""
    return QUICK if quick else FULL


def layer_geometry(net: Network) -> list[dict]:
    """Per layer (spiking layers, then the readout): kind, channels/features, kernel, stride,
    padding, input and output shape — the shapes neurosim's builder gives the spec."""
    shape: tuple[int, ...] = net.input_shape
    out = []
    for layer in net.layers:
        if layer[0] == "conv":
            _, channels, k, stride, pad = layer
            h = (shape[1] + 2 * pad - k) // stride + 1
            w = (shape[2] + 2 * pad - k) // stride + 1
            new = (channels, h, w)
            out.append({"kind": "conv", "in": shape, "out": new, "kernel": k, "stride": stride, "padding": pad})
        elif layer[0] == "dense":
            new = (layer[1],)
            out.append({"kind": "linear", "in": (math.prod(shape),), "out": new})
        else:
            raise ValueError(f"network {net.name}: pooling is not part of the benchmark networks")
        shape = new
    out.append({"kind": "linear", "in": (math.prod(shape),), "out": (CLASSES,)})
    return out


def macs_per_sample_step(net: Network) -> int:
    """Multiply-accumulates of the linear and convolution layers for one sample and one step:
    ``in * out`` for a linear layer, ``C_out H_out W_out * C_in k^2`` for a convolution."""
    total = 0
    for g in layer_geometry(net):
        if g["kind"] == "linear":
            total += g["in"][0] * g["out"][0]
        else:
            total += math.prod(g["out"]) * g["in"][0] * g["kernel"] ** 2
    return total


def nominal_flops(net: Network, training: bool, samples: int | None = None) -> float:
    """``2 * MACs * T * samples`` (``samples`` defaults to the batch), times 3 for training."""
    samples = net.batch if samples is None else samples
    return 2.0 * macs_per_sample_step(net) * net.timesteps * samples * (3 if training else 1)


def synthetic_batch(net: Network, seed: int = 0, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs uniform in [0, 1] ``[batch, *input_shape]`` and random labels (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    n = net.batch if batch is None else batch
    x = torch.rand(n, *net.input_shape, generator=gen)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    return x, y


def neurosim_model(net: Network, readout_beta: float = 0.0, seed: int = 0) -> SpikingNetwork:
    """neurosim's model of ``net`` with the shared neuron (seeded weights, spiking layers'
    weights times :data:`WEIGHT_GAIN`). ``readout_beta = 0`` makes the logits the mean over time
    of the readout's currents, the peers' function; the chip (export) needs an integrating
    readout, ``readout_beta = 1``."""
    torch.manual_seed(seed)
    model = build_model(net.spec, net.input_shape, CLASSES, net.timesteps, NEURON, norm=net.norm,
                        readout_beta=readout_beta)
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(WEIGHT_GAIN)
    return model


def neurosim_parameters(model: SpikingNetwork) -> list[tuple[str, torch.nn.Module]]:
    """The weight-carrying modules of a neurosim model in network order, each as (kind, module):
    ``synapse`` (Linear/Conv2d), ``norm`` (batch norm), ending with the readout's Linear."""
    out: list[tuple[str, torch.nn.Module]] = []
    for block in model.blocks:
        out.append(("synapse", block.synapse))
        if block.norm is not None:
            out.append(("norm", block.norm))
    out.append(("synapse", model.readout.synapse))
    return out
