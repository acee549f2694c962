"""Checks that a peer computes neurosim's function before any of its figures is reported.

:func:`check_surrogate` compares a library's spike-function gradient with the ATan formula
``(alpha/2) / (1 + (pi/2 alpha x)^2)`` and with a numerical derivative of its primitive
``g(x) = arctan(pi/2 alpha x) / pi + 1/2`` (central differences in float64), which fixes the
alpha convention. :func:`check_network` copies neurosim's weights into the peer's model and
compares, on the same batch, the training-mode logits and every parameter gradient after one
cross-entropy backward, the logits after two SGD (momentum 0.9) steps on each side, and the
eval-mode logits. Every difference must be at most :data:`TOLERANCE` (absolute).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.networks import ATAN_ALPHA, LEARNING_RATE, MOMENTUM, Network, neurosim_model, \
    neurosim_parameters, synthetic_batch
from benchmarks.peers import copy_weights, module_gradients, peer_model

TOLERANCE = 1e-5


def atan_derivative(x: Tensor, alpha: float = ATAN_ALPHA) -> Tensor:
    """``(alpha/2) / (1 + (pi/2 alpha x)^2)``, the ATan surrogate's ``dH/dx``."""
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def spike_function(library: str) -> Callable[[Tensor], Tensor]:
    """The spike function ``H(x)`` with the ATan surrogate (alpha 2) of ``library``."""
    if library == "neurosim":
        from neurosim.nn.surrogate import ATan
        return ATan(ATAN_ALPHA)
    if library == "snntorch":
        from snntorch import surrogate
        return surrogate.atan(alpha=ATAN_ALPHA)
    if library == "spikingjelly":
        from spikingjelly.activation_based import surrogate
        return surrogate.ATan(alpha=ATAN_ALPHA)
    raise ValueError(f"unknown library {library!r}")


def check_surrogate(library: str) -> dict[str, float]:
    """Max absolute difference of the library's surrogate gradient from the formula and from a
    numerical derivative of its primitive, on 401 points in [-2, 2]."""
    x = torch.linspace(-2.0, 2.0, 401, dtype=torch.float32, requires_grad=True)
    spike_function(library)(x).sum().backward()
    grad = x.grad.double()
    xd = x.detach().double()
    formula = atan_derivative(xd)
    h = 1e-4
    primitive = lambda z: torch.atan(math.pi / 2 * ATAN_ALPHA * z) / math.pi + 0.5  # noqa: E731
    numeric = (primitive(xd + h) - primitive(xd - h)) / (2 * h)
    return {"vs_formula": float((grad - formula).abs().max()), "vs_numeric": float((grad - numeric).abs().max())}


def _max_diff(a: list[Tensor | None], b: list[Tensor | None]) -> float:
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        if (x is None) != (y is None):
            return math.inf
        if x is not None:
            if x.shape != y.shape:
                return math.inf
            worst = max(worst, float((x - y).abs().max()))
    return worst


def _train_steps(model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
                 steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()


def check_network(peer: str, net: Network, seed: int = 0,
                  build: Callable[[str, Network], nn.Module] = peer_model) -> dict[str, float | bool]:
    """Compare ``peer``'s model of ``net`` with neurosim's on the same weights and batch; the
    result's ``passed`` is True when every difference is at most :data:`TOLERANCE`.
    ``build`` makes the peer's model (tests pass a deliberately different one)."""
    x, y = synthetic_batch(net, seed=seed)
    ours = neurosim_model(net, seed=seed).train()
    theirs = build(peer, net).train()
    copy_weights(neurosim_parameters(ours), theirs.weight_modules())
    ours_modules = [m for _, m in neurosim_parameters(ours)]

    def logits_and_grads(model: nn.Module, modules: list[nn.Module]) -> tuple[Tensor, list]:
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        return logits.detach(), [g.clone() if g is not None else None for g in module_gradients(modules)]

    our_logits, our_grads = logits_and_grads(ours, ours_modules)
    their_logits, their_grads = logits_and_grads(theirs, theirs.weight_modules())
    spike_counts = [float(c.sum()) for c in ours.last_spike_counts]
    result: dict[str, float | bool] = {
        "logits": float((our_logits - their_logits).abs().max()),
        "gradients": _max_diff(our_grads, their_grads),
        "gradient_scale": max(float(g.abs().max()) for g in our_grads if g is not None),
        "spikes_per_sample": sum(spike_counts) / len(y),
    }
    _train_steps(ours, ours, x, y, 2)
    _train_steps(theirs, theirs, x, y, 2)
    with torch.no_grad():
        result["logits_after_2_sgd_steps"] = float((ours(x) - theirs(x)).abs().max())
        ours.eval(), theirs.eval()
        result["eval_logits"] = float((ours(x) - theirs(x)).abs().max())
    surrogate = check_surrogate(peer)
    result["surrogate_vs_formula"] = surrogate["vs_formula"]
    result["surrogate_vs_numeric"] = surrogate["vs_numeric"]
    result["neurosim_surrogate_vs_numeric"] = check_surrogate("neurosim")["vs_numeric"]
    measured = ("logits", "gradients", "logits_after_2_sgd_steps", "eval_logits", "surrogate_vs_formula",
                "surrogate_vs_numeric", "neurosim_surrogate_vs_numeric")
    result["passed"] = all(result[k] <= TOLERANCE for k in measured) and spike_counts[-1] > 0
    return result
