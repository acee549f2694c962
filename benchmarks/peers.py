"""The peers' models of the benchmark networks: snnTorch and SpikingJelly, same function as neurosim.

Each builder returns a model with ``forward(x) -> logits`` for a static input ``x``
``[batch, *input_shape]`` and a list of its weight-carrying modules in network order (the same
order as :func:`benchmarks.networks.neurosim_parameters`), so that weights can be copied across
and gradients compared.

How each library computes the shared function (read from their sources, snnTorch 1.0 and
SpikingJelly 2.0, and checked to 1e-5 by :mod:`benchmarks.equivalence` before anything is timed):

* **snnTorch** ``snn.Leaky(beta=0.9, threshold=1, reset_mechanism="zero",
  spike_grad=surrogate.atan(alpha=2))`` with its default ``reset_delay=True``: per step
  ``reset = H(mem_prev - 1)`` (detached), ``mem = beta (1 - reset) mem_prev + I``,
  ``spk = H(mem - 1)`` — so ``u[t] = beta v[t-1] + I[t]`` with ``v = u (1 - s)`` and a detached
  reset, neurosim's hard reset to 0 with ``reset_grad="detach"``. Its ATan backward is
  ``(alpha/2) / (1 + (pi/2 alpha x)^2)``, neurosim's. It fires on ``mem > 1`` where neurosim fires
  on ``u >= 1`` (equal only on a measure-zero set; the check would catch a flip). snnTorch has no
  multi-step layers; since the batch norm of network B takes its statistics over (time, batch)
  as neurosim's does, the stateless layers (Linear, Conv2d, BatchNorm2d) run on all steps at
  once (time folded into the batch) and the Leaky neurons are stepped over ``t`` — the same
  arrangement for network A.
* **SpikingJelly** ``neuron.LIFNode(tau=10, decay_input=False, v_threshold=1, v_reset=0,
  detach_reset=True, surrogate_function=surrogate.ATan(alpha=2), step_mode="m")``:
  ``H[t] = V[t-1] - V[t-1]/tau + X[t]`` (``= 0.9 V[t-1] + X[t]`` up to float rounding),
  ``S = H >= 1``, ``V = S * 0 + (1 - S) H``; backward ``dV/dH = 1 - S`` (detached reset) and the
  same ATan. Layers are ``layer.Linear / Conv2d / BatchNorm2d / Flatten`` in multi-step mode
  (time folded into the batch), the input repeated over ``T`` as its examples do;
  ``functional.reset_net`` clears the states after every forward. (SpikingJelly 2.0 has no
  ``backend`` argument any more: on CPU its LIF is one fused custom op over all steps.)

Both peers end with ``Linear(…, 10)`` on the last spikes, averaged over time (sum / T), which
is neurosim's readout with ``readout_beta = 0``.
"""

from __future__ import annotations

import importlib.metadata
from typing import Callable

import torch
from torch import Tensor, nn

from benchmarks.networks import ATAN_ALPHA, BETA, CLASSES, THRESHOLD, Network, layer_geometry

PEERS = ("snntorch", "spikingjelly")


def peer_version(name: str) -> str | None:
    """Installed version of a peer library (None when it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def available_peers() -> list[str]:
    """The peers that are installed (the ``bench`` extra)."""
    return [name for name in PEERS if peer_version(name) is not None]


class SnnTorchNetwork(nn.Module):
    """snnTorch model: stateless layers over all steps at once, ``snn.Leaky`` stepped over t."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.timesteps = net.timesteps
        self.stages = nn.ModuleList()
        self.neurons = nn.ModuleList()
        geometry = layer_geometry(net)
        for g in geometry[:-1]:
            if g["kind"] == "conv":
                stage = nn.Sequential(nn.Conv2d(g["in"][0], g["out"][0], g["kernel"], g["stride"], g["padding"],
                                                bias=net.norm == "none"))
                if net.norm == "bn":
                    stage.append(nn.BatchNorm2d(g["out"][0]))
            else:
                stage = nn.Sequential(nn.Linear(g["in"][0], g["out"][0], bias=net.norm == "none"))
                if net.norm == "bn":
                    stage.append(nn.BatchNorm1d(g["out"][0]))
            self.stages.append(stage)
            self.neurons.append(snn.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="zero",
                                          spike_grad=surrogate.atan(alpha=ATAN_ALPHA)))
        self.readout = nn.Linear(geometry[-1]["in"][0], CLASSES)
        self.record_spikes: list[Tensor] | None = None
        """When a list, each forward appends every layer's spikes ``[T, batch, ...]`` (the check)."""

    def forward(self, x: Tensor) -> Tensor:
        steps, batch = self.timesteps, x.shape[0]
        seq = x.unsqueeze(0).expand(steps, *x.shape)  # direct input, repeated every step
        for stage, lif in zip(self.stages, self.neurons):
            if isinstance(stage[0], nn.Linear):
                seq = seq.flatten(2)
            flat = seq.reshape(steps * batch, *seq.shape[2:])
            currents = stage(flat)
            currents = currents.reshape(steps, batch, *currents.shape[1:])
            mem = lif.reset_mem()
            spikes = []
            for t in range(steps):
                spk, mem = lif(currents[t], mem)
                spikes.append(spk)
            seq = torch.stack(spikes).to(currents.dtype)  # snnTorch's spikes are float32 (no-op there)
            if self.record_spikes is not None:
                self.record_spikes.append(seq.detach())
        out = self.readout(seq.flatten(2).reshape(steps * batch, -1)).reshape(steps, batch, -1)
        return out.sum(0) / steps

    def weight_modules(self) -> list[nn.Module]:
        """Linear/Conv2d/BatchNorm modules in network order, readout last."""
        mods: list[nn.Module] = [m for stage in self.stages for m in stage]
        return mods + [self.readout]


class SpikingJellyNetwork(nn.Module):
    """SpikingJelly model: multi-step layers and LIFNode (``step_mode="m"``)."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate

        self._reset_net = functional.reset_net
        self.timesteps = net.timesteps
        modules: list[nn.Module] = []
        geometry = layer_geometry(net)
        for i, g in enumerate(geometry[:-1]):
            if g["kind"] == "conv":
                modules.append(layer.Conv2d(g["in"][0], g["out"][0], g["kernel"], g["stride"], g["padding"],
                                            bias=net.norm == "none", step_mode="m"))
                if net.norm == "bn":
                    modules.append(layer.BatchNorm2d(g["out"][0], step_mode="m"))
            else:
                if i == 0 or geometry[i - 1]["kind"] == "conv":
                    modules.append(layer.Flatten(start_dim=1, step_mode="m"))
                modules.append(layer.Linear(g["in"][0], g["out"][0], bias=net.norm == "none", step_mode="m"))
                if net.norm == "bn":
                    modules.append(layer.BatchNorm1d(g["out"][0], step_mode="m"))
            modules.append(neuron.LIFNode(tau=1.0 / (1.0 - BETA), decay_input=False, v_threshold=THRESHOLD,
                                          v_reset=0.0, detach_reset=True,
                                          surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), step_mode="m"))
        modules.append(layer.Flatten(start_dim=1, step_mode="m"))
        modules.append(layer.Linear(geometry[-1]["in"][0], CLASSES, step_mode="m"))
        self.body = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        x_seq = x.unsqueeze(0).repeat(self.timesteps, *([1] * x.dim()))
        out = self.body(x_seq).sum(0) / self.timesteps
        self._reset_net(self.body)
        return out

    def weight_modules(self) -> list[nn.Module]:
        """Linear/Conv2d/BatchNorm modules in network order, readout last."""
        return [m for m in self.body if isinstance(m, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm))]


BUILDERS: dict[str, Callable[[Network], nn.Module]] = {
    "snntorch": SnnTorchNetwork,
    "spikingjelly": SpikingJellyNetwork,
}


def peer_model(name: str, net: Network) -> nn.Module:
    """The model of ``net`` in peer library ``name`` (default-initialised weights)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(BUILDERS)}")
    return BUILDERS[name](net)


def copy_weights(source: list[tuple[str, nn.Module]], target: list[nn.Module]) -> None:
    """Copy neurosim's weight-carrying modules (:func:`benchmarks.networks.neurosim_parameters`)
    into a peer's (``weight_modules()``), parameters and batch-norm running statistics."""
    if len(source) != len(target):
        raise ValueError(f"neurosim has {len(source)} weight-carrying modules, the peer {len(target)}")
    with torch.no_grad():
        for (_, src), dst in zip(source, target):
            src_state, dst_state = src.state_dict(), dst.state_dict()
            for key, value in dst_state.items():
                if key not in src_state or src_state[key].shape != value.shape:
                    raise ValueError(f"cannot copy {key} of {type(src).__name__} into {type(dst).__name__}")
                value.copy_(src_state[key])


def module_gradients(modules: list[nn.Module]) -> list[Tensor | None]:
    """Gradients of every parameter of ``modules`` in order (weight, bias, ...)."""
    return [p.grad for m in modules for p in m.parameters(recurse=False)]
