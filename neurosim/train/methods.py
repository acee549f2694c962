"""The training methods of the seeds that are not neuron options (docs/design.md §5).

* :func:`spike_traces`, :func:`spike_relation`, :func:`scale_gradients` — seed 001's gradient
  scaling: traces ``x[t] = e^-1 x[t-1] + s[t]`` of pre- and post-synaptic spikes, their relation
  ``R`` (outer product for dense layers, the weight-gradient convolution for conv layers, summed
  over time and batch, normalised to mean 1), and ``g <- alpha (g o R) + (1 - alpha) g`` (Eq. 7).
* :func:`gaussian_symmetric_kl`, :func:`pda_loss` — seed 002's potential-distribution loss
  (Eq. 5): the symmetric KL divergence between each layer's potentials at each step, fitted by a
  Gaussian (batch mean and variance), and the standard normal, averaged over steps and layers.
* :func:`tune_surrogate_width` — seed 003 §2.5: bisection of the fast-sigmoid width gamma so that
  the mean magnitude of the loss gradient at the membrane potentials (Eq. 10, Fig. 3) of the
  first half of the spiking layers equals that of the second half.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

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


def potential_gradients(model: SpikingNetwork, loss_of: Callable[[SpikingNetwork], Tensor]) -> list[float]:
    """Seed 003 Fig. 3 / Eq. 10: the mean magnitude of the loss gradient ``|delta u_l|`` at each
    spiking layer's membrane potential, in depth order (one forward and backward of ``loss_of``;
    weights, buffers — batch-norm statistics, MP-Init potentials — and gradients unchanged).
    ``du[t]/dI[t] = 1``, so it is read at the layer's input currents ``I_l``."""
    nodes = model.spiking_nodes()
    sums = [0.0] * len(nodes)
    sizes = [0] * len(nodes)

    def watch(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            currents = args[0]
            if isinstance(currents, Tensor) and currents.requires_grad:
                def record(grad: Tensor) -> None:
                    sums[index] += float(grad.detach().abs().sum())
                    sizes[index] += grad.numel()
                currents.register_hook(record)
        return hook

    handles = [node.register_forward_hook(watch(i)) for i, node in enumerate(nodes)]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        model.zero_grad(set_to_none=True)
        loss_of(model).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return [total / size if size else 0.0 for total, size in zip(sums, sizes)]


def gradient_balance(model: SpikingNetwork, gamma: float,
                     loss_of: Callable[[SpikingNetwork], Tensor]) -> float:
    """``log(first-half mean |delta u| / second-half mean |delta u|)`` over the spiking layers in
    depth order (:func:`potential_gradients`), with every fast-sigmoid surrogate set to ``gamma``.
    Positive: the loss gradient grows as it propagates toward the input (explodes); negative: it
    shrinks (vanishes). Seed 003 §2.5 balances the two halves."""
    nodes = model.spiking_nodes()
    if len(nodes) < 2:
        raise ValueError("surrogate-width tuning balances the first and second half of the spiking layers; "
                         f"the model has {len(nodes)}")
    for node in nodes:
        node.surrogate.gamma = float(gamma)
    means = potential_gradients(model, loss_of)
    half = len(means) // 2
    first, second = sum(means[:half]) / half, sum(means[half:]) / (len(means) - half)
    if first == 0 or second == 0:
        return -math.inf if first == 0 else math.inf
    return math.log(first / second)


class WidthTuning(NamedTuple):
    """The result of :func:`tune_surrogate_width`: the width, the balance there and at both bounds,
    and whether the bisection ended at a bound (no crossing inside ``[low, high]``)."""

    gamma: float
    balance: float
    balance_low: float
    balance_high: float
    at_bound: bool

    def warning(self, low: float, high: float) -> str | None:
        """One line when the bisection ended at a bound, else None."""
        if not self.at_bound:
            return None
        side = "low" if self.balance_low < 0 else "high"
        return (f"surrogate-width tuning ended at the {side} bound gamma = {self.gamma:.4g}: the gradient ratio "
                f"(first half / second half of the layers) is {math.exp(self.balance_low):.3g} at gamma = {low:g} "
                f"and {math.exp(self.balance_high):.3g} at gamma = {high:g}, so it does not cross 1 in between")


def tune_surrogate_width(model: SpikingNetwork, loss_of: Callable[[SpikingNetwork], Tensor],
                         low: float = 0.5, high: float = 100.0, iterations: int = 8) -> WidthTuning:
    """Seed 003 §2.5: bisection (in log gamma) for the fast-sigmoid width at which the loss
    gradient neither explodes (first half of the spiking layers larger) nor vanishes (smaller)
    on its way through the layers; sets the width and returns the :class:`WidthTuning`.

    Small gamma (wide surrogate) makes the gradient grow toward the input, large gamma makes it
    shrink (seed 003 Eq. 12-13: each layer multiplies its variance by ``<f(u)^2> ~ 1/(gamma
    sigma_u)``); the balance is monotone in gamma, so bisection finds the crossing. Where the
    balance has one sign at both bounds, the width ends at the bound nearest the crossing and
    ``at_bound`` says so.
    """
    nodes = model.spiking_nodes()
    if len(nodes) < 1 or not all(isinstance(n.surrogate, FastSigmoid) for n in nodes):
        raise ValueError("surrogate-width tuning needs fast_sigmoid surrogates on every spiking layer")
    at_low, at_high = gradient_balance(model, low, loss_of), gradient_balance(model, high, loss_of)
    lo, hi = math.log(low), math.log(high)
    if at_low <= 0 or at_high >= 0:  # no crossing inside: the bound on the side of the crossing
        gamma = low if at_low <= 0 else high
    else:
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if gradient_balance(model, math.exp(mid), loss_of) > 0:  # exploding: narrow it
                lo = mid
            else:
                hi = mid
        gamma = math.exp(0.5 * (lo + hi))
    balance = gradient_balance(model, gamma, loss_of)
    return WidthTuning(gamma, balance, at_low, at_high, at_bound=at_low <= 0 or at_high >= 0)
