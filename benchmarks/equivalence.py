"""Checks that a peer computes neurosim's function before any of its figures is reported.

:func:`check_surrogate` compares a library's spike-function gradient with the ATan formula
``(alpha/2) / (1 + (pi/2 alpha x)^2)`` and with a numerical derivative of its primitive
``g(x) = arctan(pi/2 alpha x) / pi + 1/2`` (central differences in float64), which pins the
alpha convention.

:func:`check_network` copies neurosim's weights into the peer's model and compares, on the
benchmark batch (in :data:`CHECK_DTYPE`): in training mode the logits and every parameter gradient of one
cross-entropy backward; in eval mode (the inference path; neurosim folds batch norm into the
weights there) the logits. Every difference must be at most :data:`TOLERANCE` (absolute).

Spikes make a network chaotic in one respect: a potential that lands within float32 rounding of
the threshold may fire in one library and not in the other (the libraries round differently:
SpikingJelly decays by ``v - v/tau``, neurosim by ``beta * v``; snnTorch fires on ``mem > 1``,
neurosim on ``u >= 1``; folded batch norm rounds differently from batch norm after the
convolution), and everything downstream of that spike differs. So the spikes of every layer are
compared first. Where they differ, the first layer with a difference is examined: if every
neuron's first differing step has neurosim's potential within :data:`TOLERANCE` of the threshold,
the batch is a *threshold tie* — rounding, not a different function — and the comparison is
repeated on the next seed's batch (up to ``attempts``); a difference anywhere else is a
different function, and the peer is refused.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.networks import ATAN_ALPHA, THRESHOLD, Network, neurosim_model, neurosim_parameters, \
    synthetic_batch
from benchmarks.peers import copy_weights, module_gradients, peer_model

TOLERANCE = 1e-5
ATTEMPTS = 5
CHECK_DTYPE = torch.float64
"""The networks are compared in float64: the function is the same in any precision, and float64
makes threshold ties (float32 rounding deciding a spike, e.g. from a different convolution
algorithm or memory layout) vanishingly rare at network B's millions of neuron updates."""


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
    h = 1e-4
    primitive = lambda z: torch.atan(math.pi / 2 * ATAN_ALPHA * z) / math.pi + 0.5  # noqa: E731
    numeric = (primitive(xd + h) - primitive(xd - h)) / (2 * h)
    return {"vs_formula": float((grad - atan_derivative(xd)).abs().max()),
            "vs_numeric": float((grad - numeric).abs().max())}


def _max_diff(a: list[Tensor | None], b: list[Tensor | None]) -> float:
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        if (x is None) != (y is None) or (x is not None and x.shape != y.shape):
            return math.inf
        if x is not None:
            worst = max(worst, float((x - y).abs().max()))
    return worst


def _peer_spikes(model: nn.Module) -> tuple[list[Tensor], Callable[[], None]]:
    """Collect the spikes ``[T, batch, ...]`` of every spiking layer of a peer's model during its
    forward passes (forward hooks on its neuron modules); returns the list and a remover."""
    spikes: list[Tensor] = []
    handles = []
    for module in model.modules():
        kind = type(module).__name__
        if kind == "LIFNode":  # SpikingJelly, multi-step: output [T, batch, ...]
            handles.append(module.register_forward_hook(lambda m, i, out: spikes.append(out.detach())))
    if hasattr(model, "record_spikes"):  # snnTorch: the model records its stacked spikes itself
        model.record_spikes = spikes
    def remove() -> None:
        for h in handles:
            h.remove()
        if hasattr(model, "record_spikes"):
            model.record_spikes = None
    return spikes, remove


def spike_difference(ours: list[Tensor], potentials: list[list[Tensor]], theirs: list[Tensor],
                     threshold: float = THRESHOLD, tolerance: float = TOLERANCE) -> dict[str, object]:
    """Compare two libraries' spikes layer by layer. ``potentials[l][t]``: neurosim's potential
    before the reset. Returns ``{"kind": "same" | "ties" | "different", ...}``: ``ties`` when at
    the first differing layer every neuron's first differing step sits within ``tolerance`` of
    the threshold in neurosim's potential."""
    if len(ours) != len(theirs):
        return {"kind": "different", "why": f"{len(ours)} spiking layers against {len(theirs)}"}
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            return {"kind": "different", "why": f"layer {layer}: spikes {tuple(a.shape)} against {tuple(b.shape)}"}
        differs = a != b.to(a.dtype)  # [T, batch, ...]
        if not bool(differs.any()):
            continue
        steps = differs.shape[0]
        flat = differs.reshape(steps, -1)
        neurons = flat.any(0).nonzero().squeeze(1)
        first_step = flat[:, neurons].float().argmax(0)  # first differing step of each such neuron
        u = torch.stack([p.detach().reshape(-1) for p in potentials[layer]])  # [T, batch * neurons]
        margin = (u[first_step, neurons] - threshold).abs()
        worst = float(margin.max())
        if worst <= tolerance:
            return {"kind": "ties", "layer": layer, "neurons": int(neurons.numel()), "worst_margin": worst}
        return {"kind": "different", "layer": layer, "neurons": int(neurons.numel()), "worst_margin": worst,
                "why": f"layer {layer}: {int(neurons.numel())} neurons spike differently, potential up to "
                       f"{worst:.3g} from the threshold"}
    return {"kind": "same"}


def compare(peer: str, net: Network, seed: int, mode: str,
            build: Callable[[str, Network], nn.Module] = peer_model) -> dict[str, object]:
    """One comparison of ``peer`` with neurosim on seed ``seed``'s weights and batch; ``mode``
    ``train`` (logits and gradients) or ``eval`` (logits, running statistics from one training
    forward, copied across)."""
    x, y = synthetic_batch(net, seed=seed)
    x = x.to(CHECK_DTYPE)
    ours = neurosim_model(net, seed=seed).to(CHECK_DTYPE).train()
    theirs = build(peer, net).to(CHECK_DTYPE).train()
    if mode == "eval":
        with torch.no_grad():
            ours(x)  # batch-norm running statistics
        ours.eval(), theirs.eval()
    copy_weights(neurosim_parameters(ours), theirs.weight_modules())
    for block in ours.blocks:
        block.record, block.node.record = True, True
    their_spikes, remove = _peer_spikes(theirs)
    try:
        with torch.no_grad():
            ours(x), theirs(x)
        our_spikes = [block.recorded_spikes for block in ours.blocks]
        potentials = [block.node.recorded_potentials for block in ours.blocks]
        diff = spike_difference(our_spikes, potentials, their_spikes)
    finally:
        remove()
        for block in ours.blocks:
            block.record, block.node.record = False, False
    # outputs and gradients from the path the benchmark times (recording switches neurosim's
    # fused all-steps neuron off)
    with torch.set_grad_enabled(mode == "train"):
        our_logits, their_logits = ours(x), theirs(x)
    out: dict[str, object] = {"seed": seed, "spikes": diff,
                              "spikes_per_sample": float(sum(s.sum() for s in our_spikes)) / len(x),
                              "last_layer_spikes": float(our_spikes[-1].sum())}
    if diff["kind"] != "same":
        return out
    out["logits"] = float((our_logits - their_logits).detach().abs().max())
    if mode == "train":
        F.cross_entropy(our_logits, y).backward()
        F.cross_entropy(their_logits, y).backward()
        ours_grads = module_gradients([m for _, m in neurosim_parameters(ours)])
        out["gradients"] = _max_diff(ours_grads, module_gradients(theirs.weight_modules()))
        out["gradient_scale"] = max(float(g.abs().max()) for g in ours_grads if g is not None)
    return out


def check_network(peer: str, net: Network, seed: int = 0, attempts: int = ATTEMPTS,
                  build: Callable[[str, Network], nn.Module] = peer_model) -> dict[str, object]:
    """Whether ``peer``'s model of ``net`` computes neurosim's function (module docstring);
    ``passed`` is the verdict. ``build`` makes the peer's model (tests pass a wrong one)."""
    result: dict[str, object] = {"threshold_ties": 0, "tie_margins": []}
    verdicts = []
    for mode in ("train", "eval"):
        for k in range(attempts):
            r = compare(peer, net, seed + k, mode, build)
            kind = r["spikes"]["kind"]
            if kind == "ties":
                result["threshold_ties"] += 1
                result["tie_margins"].append(r["spikes"]["worst_margin"])
                continue
            break
        result[f"{mode}_seed"] = r["seed"]
        if kind == "ties":
            result["why"] = f"{mode}: only threshold ties in {attempts} batches (inconclusive)"
            verdicts.append(False)
        elif kind == "different":
            result["why"] = f"{mode}: {r['spikes']['why']}"
            verdicts.append(False)
        else:
            if mode == "train":
                result["logits"], result["gradients"] = r["logits"], r["gradients"]
                result["gradient_scale"] = r["gradient_scale"]
                result["spikes_per_sample"] = r["spikes_per_sample"]
                ok = r["logits"] <= TOLERANCE and r["gradients"] <= TOLERANCE and r["last_layer_spikes"] > 0
            else:
                result["eval_logits"] = r["logits"]
                ok = r["logits"] <= TOLERANCE
            if not ok:
                result["why"] = f"{mode}: outputs or gradients differ beyond {TOLERANCE:g}"
            verdicts.append(ok)
        if not verdicts[-1]:
            break
    surrogate = check_surrogate(peer)
    result["surrogate_vs_formula"] = surrogate["vs_formula"]
    result["surrogate_vs_numeric"] = surrogate["vs_numeric"]
    result["neurosim_surrogate_vs_numeric"] = check_surrogate("neurosim")["vs_numeric"]
    surrogates_ok = max(surrogate["vs_formula"], surrogate["vs_numeric"],
                        result["neurosim_surrogate_vs_numeric"]) <= TOLERANCE
    if not surrogates_ok:
        result.setdefault("why", f"ATan gradient differs from the formula beyond {TOLERANCE:g}")
    result["passed"] = len(verdicts) == 2 and all(verdicts) and surrogates_ok
    return result
