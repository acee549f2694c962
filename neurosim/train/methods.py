"""The training methods of the seeds that are not neuron options (DESIGN.md §5).

* :func:`spike_traces`, :func:`spike_relation`, :func:`scale_gradients` — seed 001's gradient
  scaling: traces ``x[t] = e^-1 x[t-1] + s[t]`` of pre- and post-synaptic spikes, their relation
  ``R`` (outer product for dense layers, the weight-gradient convolution for conv layers, summed
  over time and batch, normalised to mean 1), and ``g <- alpha (g o R) + (1 - alpha) g`` (Eq. 7).
* :func:`gaussian_symmetric_kl`, :func:`pda_loss` — seed 002's potential-distribution loss
  (Eq. 5): the symmetric KL divergence between each layer's potentials at each step, fitted by a
  Gaussian (batch mean and variance), and the standard normal, averaged over steps and layers.
* :func:`tune_surrogate_width` — seed 003: bisection of the fast-sigmoid width gamma so that the
  mean weight-gradient magnitude of the first half of the layers equals that of the second half.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from neurosim.nn.layers import SpikingBlock, SpikingNetwork
from neurosim.nn.surrogate import FastSigmoid

TRACE_DECAY = math.exp(-1.0)


def spike_traces(spikes: Tensor, decay: float = TRACE_DECAY) -> Tensor:
    """Seed 001 Eq. 5: ``x[t] = decay * x[t-1] + s[t]`` over the leading time axis."""
    traces = torch.empty_like(spikes)
    x = torch.zeros_like(spikes[0])
    for t in range(spikes.shape[0]):
        x = decay * x + spikes[t]
        traces[t] = x
    return traces


def spike_relation(block: SpikingBlock, pre: Tensor, post: Tensor) -> Tensor:
    """Seed 001 Eq. 6: relation ``R`` of post- and pre-synaptic traces, shaped like the weight,
    summed over time and batch and normalised to mean 1 (all ones if no spike at all)."""
    pre_tr, post_tr = spike_traces(pre), spike_traces(post)
    synapse = block.synapse
    if isinstance(synapse, nn.Conv2d):
        relation = torch.nn.grad.conv2d_weight(pre_tr.flatten(0, 1), synapse.weight.shape,
                                               post_tr.flatten(0, 1), synapse.stride, synapse.padding,
                                               synapse.dilation, synapse.groups)
    else:
        relation = torch.einsum("tbo,tbi->oi", post_tr.flatten(2), pre_tr.flatten(2))
    mean = relation.mean()
    return relation / mean if mean > 0 else torch.ones_like(relation)


def scale_gradients(model: SpikingNetwork, alpha: float,
                    reduce: Callable[[Tensor], Tensor] | None = None) -> None:
    """Seed 001 Eq. 7 on every spiking block whose spikes were recorded in the last forward:
    ``grad <- alpha * grad * R + (1 - alpha) * grad``. Under DDP ``reduce`` averages ``R`` over
    the processes (each saw a slice of the batch), so every rank applies the same update."""
    for block in model.blocks:
        weight = block.synapse.weight
        if weight.grad is None or not block.record or block.recorded_spikes is None:
            continue
        relation = spike_relation(block, block.recorded_input, block.recorded_spikes)
        if reduce is not None:
            relation = reduce(relation.contiguous())
        weight.grad.mul_(alpha * relation + (1 - alpha))


def gaussian_symmetric_kl(mean: Tensor, var: Tensor) -> Tensor:
    """``KL(N(m, v) || N(0, 1)) + KL(N(0, 1) || N(m, v))`` in closed form."""
    var = var.clamp(min=1e-6)
    forward = 0.5 * (var + mean ** 2 - 1 - torch.log(var))
    backward = 0.5 * ((1 + mean ** 2) / var - 1 + torch.log(var))
    return forward + backward


def pda_loss(potentials: list[list[Tensor]]) -> Tensor:
    """Seed 002 Eq. 5: ``1/(2TN) sum_t sum_n [KL(P||N) + KL(N||P)]`` over layers n and steps t,
    ``P`` the Gaussian fitted to the layer's potentials at step t (batch mean and variance)."""
    terms = [gaussian_symmetric_kl(u.mean(), u.var(correction=0)) for layer in potentials for u in layer]
    if not terms:
        raise ValueError("PDA needs recorded membrane potentials; none were recorded")
    steps = max(len(layer) for layer in potentials)
    return torch.stack(terms).sum() / (2 * steps * len(potentials))


def _layer_gradient_means(model: SpikingNetwork) -> list[float]:
    layers = [b.synapse for b in model.blocks] + [model.readout.synapse]
    return [layer.weight.grad.abs().mean().item() if layer.weight.grad is not None else 0.0
            for layer in layers]


def gradient_balance(model: SpikingNetwork, gamma: float,
                     loss_of: Callable[[SpikingNetwork], Tensor]) -> float:
    """``log(first-half mean |grad W| / second-half mean |grad W|)`` with every fast-sigmoid
    surrogate set to ``gamma`` (one forward and backward of ``loss_of``; weights unchanged)."""
    nodes = model.spiking_nodes()
    for node in nodes:
        node.surrogate.gamma = float(gamma)
    model.zero_grad(set_to_none=True)
    loss_of(model).backward()
    means = _layer_gradient_means(model)
    model.zero_grad(set_to_none=True)
    half = len(means) // 2
    first, second = sum(means[:half]) / half, sum(means[half:]) / (len(means) - half)
    if first == 0 or second == 0:
        return -math.inf if first == 0 else math.inf
    return math.log(first / second)


def tune_surrogate_width(model: SpikingNetwork, loss_of: Callable[[SpikingNetwork], Tensor],
                         low: float = 0.5, high: float = 100.0, iterations: int = 8) -> float:
    """Seed 003: bisection (in log gamma) for the fast-sigmoid width at which the gradient neither
    explodes (first half of the layers larger) nor vanishes (smaller); sets and returns it.

    Small gamma (wide surrogate) makes gradients grow toward the input, large gamma makes them
    shrink; the balance is monotone in gamma, so bisection finds the crossing.
    """
    nodes = model.spiking_nodes()
    if len(nodes) < 1 or not all(isinstance(n.surrogate, FastSigmoid) for n in nodes):
        raise ValueError("surrogate-width tuning needs fast_sigmoid surrogates on every spiking layer")
    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if gradient_balance(model, math.exp(mid), loss_of) > 0:  # exploding: narrow it
            lo = mid
        else:
            hi = mid
    gamma = math.exp(0.5 * (lo + hi))
    for node in nodes:
        node.surrogate.gamma = gamma
    return gamma
