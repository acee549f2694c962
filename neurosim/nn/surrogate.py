"""Surrogate gradients of the spike function (docs/design.md §2).

The forward pass of every surrogate is the Heaviside step ``s = H(x)`` with ``H(0) = 1`` (a
neuron fires when its potential reaches the threshold), where ``x = u - theta``. The backward
pass replaces ``dH/dx`` by a smooth derivative ``sigma'(x)`` whose width a parameter sets. Each
surrogate is a small module with its parameter and a :meth:`Surrogate.derivative` that states the
formula; tests check autograd against it.

Default widths: a silent neuron rests near 0, one threshold (``theta = 1``) below where it
fires, and a layer that receives few spikes has most of its neurons there. A surrogate whose
derivative is 0 (or ~1e-3) at ``x = -1`` gives such a layer no gradient, and a 4-layer network
never wakes up (measured on digits, ``mlp:128-128-128-128``, T=4, 20 epochs, hardreset-noisy:
rectangle and TrSG of width 1 and fast sigmoid of gamma 25 stay at 0.10 with layers 2-4 silent).
Every default therefore reaches one threshold below it: atan alpha 2 (0.976 there), fast sigmoid
gamma 5 (0.973; gamma 10: 0.947), rectangle width 2 (0.967), triangle width 2 (0.971; width 1:
0.953), TrSG width 2 (0.958, with a learnable threshold). examples/README.md has the table.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class _SpikeFunction(torch.autograd.Function):
    """H(x) forward, ``grad * derivative(x)`` backward (derivative from the surrogate module)."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


class Surrogate(nn.Module):
    """Base class: ``forward(x)`` spikes with ``H(x)`` and back-propagates ``derivative(x)``."""

    name = "surrogate"

    def derivative(self, x: Tensor) -> Tensor:
        """The surrogate ``dH/dx`` at ``x = u - theta``."""
        raise NotImplementedError

    def derivative_(self, x: Tensor) -> Tensor:
        """:meth:`derivative` computed in the memory of ``x`` (a scratch tensor the caller gives
        up; no autograd), to spare the large temporaries of the fused neuron's backward pass."""
        return self.derivative(x)

    def forward(self, x: Tensor) -> Tensor:
        return _SpikeFunction.apply(x, self)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    def config(self) -> dict[str, float | str]:
        """Constructor arguments, for saving a model's configuration."""
        return {}


class ATan(Surrogate):
    """``sigma'(x) = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)`` (SpikingJelly / snnTorch ATan)."""

    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)

    def derivative_(self, x: Tensor) -> Tensor:
        x.mul_(math.pi / 2 * self.alpha)
        return x.mul_(x).add_(1).reciprocal_().mul_(self.alpha / 2)

    def config(self) -> dict[str, float | str]:
        return {"alpha": self.alpha}


class FastSigmoid(Surrogate):
    """``sigma'(x) = 1 / (1 + gamma |x|)^2`` (seed 003 Eq. 9 with beta = 1; snnTorch's slope).

    ``gamma`` is the width parameter that seed 003 tunes by bisection
    (:func:`neurosim.train.methods.tune_surrogate_width`)."""

    name = "fast_sigmoid"

    def __init__(self, gamma: float = 5.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1 + self.gamma * x.abs()) ** 2

    def derivative_(self, x: Tensor) -> Tensor:
        x.abs_().mul_(self.gamma).add_(1)
        return x.mul_(x).reciprocal_()

    def config(self) -> dict[str, float | str]:
        return {"gamma": self.gamma}


class Rectangle(Surrogate):
    """``sigma'(x) = 1/width`` for ``|x| < width/2``, else 0 (unit area)."""

    name = "rectangle"

    def __init__(self, width: float = 2.0) -> None:
        super().__init__()
        self.width = float(width)

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() < self.width / 2).to(x.dtype) / self.width

    def config(self) -> dict[str, float | str]:
        return {"width": self.width}


class Triangle(Surrogate):
    """``sigma'(x) = max(0, 1 - |x|/width) / width`` (piece-wise linear, unit area)."""

    name = "triangle"

    def __init__(self, width: float = 2.0) -> None:
        super().__init__()
        self.width = float(width)

    def derivative(self, x: Tensor) -> Tensor:
        return (1 - x.abs() / self.width).clamp(min=0) / self.width

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().div_(-self.width).add_(1).clamp_(min=0).div_(self.width)

    def config(self) -> dict[str, float | str]:
        return {"width": self.width}


class _PSGFunction(torch.autograd.Function):
    """H(x) forward; backward gives x the PSG ``do/du`` and gamma the PSG ``do/dgamma``."""

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, shape: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, gamma)
        ctx.shape = shape
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, gamma = ctx.saved_tensors
        d_u, d_gamma = PSG.derivatives(x, gamma, ctx.shape)
        return grad * d_u, (grad * d_gamma).sum().reshape(gamma.shape), None


class PSG(Surrogate):
    """Parametric surrogate gradient (seed 002) with a learnable width ``gamma`` per layer.

    ``shape="atan"`` (seed 002 case 1, for spiking layers after convolutions; Eq. 11 and Eq. 10
    rescaled to a maximum of 1, keeping its ``(u - theta)`` factor that Eq. 12 drops):

        do/du = 1 / (1 + (gamma x)^2),   do/dgamma = 2 gamma x / (1 + (gamma x)^2)

    ``shape="sigmoid"`` (seed 002 case 2, for spiking layers after fully connected layers;
    Eq. 16 and Eq. 15, the latter clipped to [-1, 1] since it is unbounded):

        do/du = 1 / (1 + e^(-gamma x)),  do/dgamma = clip(x / (1 + e^(-gamma x)), -1, 1)

    The builder gives every spiking layer the arctan shape: the sigmoid shape is largest for
    neurons far above threshold, which suits a layer whose potential is the output, not one that
    spikes. ``learn=False`` freezes gamma: the fixed surrogate of the same shape, seed 002's
    baseline (Table 2).
    """

    name = "psg"

    def __init__(self, gamma: float = 2.0, shape: str = "atan", learn: bool = True) -> None:
        super().__init__()
        if shape not in ("atan", "sigmoid"):
            raise ValueError(f"PSG shape must be 'atan' or 'sigmoid', got {shape!r}")
        self.shape = shape
        self.gamma = nn.Parameter(torch.tensor(float(gamma)), requires_grad=bool(learn))

    @staticmethod
    def derivatives(x: Tensor, gamma: Tensor, shape: str) -> tuple[Tensor, Tensor]:
        """``(do/du, do/dgamma)`` at ``x = u - theta`` (formulas in the class docstring)."""
        if shape == "atan":
            denom = 1 + (gamma * x) ** 2
            return 1 / denom, 2 * gamma * x / denom
        sig = torch.sigmoid(gamma * x)
        return sig, (x * sig).clamp(-1, 1)

    def derivative(self, x: Tensor) -> Tensor:
        return self.derivatives(x, self.gamma.detach(), self.shape)[0]

    def forward(self, x: Tensor) -> Tensor:
        return _PSGFunction.apply(x, self.gamma.to(x.dtype), self.shape)

    def config(self) -> dict[str, float | str | bool]:
        return {"gamma": float(self.gamma.detach()), "shape": self.shape, "learn": self.gamma.requires_grad}


class TrSG(Surrogate):
    """Threshold-robust surrogate gradient (seed 004 as docs/design.md §5 states it).

    The neuron fires on ``z = clamp((u/theta - 1)/width + 1/2, 0, 1)`` rounded up at 1/2 (the
    forward value is ``H(u - theta)``), with a straight-through gradient, and its output is
    multiplied by ``theta``: ``o = theta * s``. Then ``do/du = 1/width`` for
    ``|u/theta - 1| < width/2`` — window and magnitude in units of theta, so the gradient at the
    same relative potential does not change when a learnable theta does. Use it through
    :meth:`spike`; the node multiplies its output by theta.
    """

    name = "trsg"
    scales_output = True

    def __init__(self, width: float = 2.0) -> None:
        super().__init__()
        self.width = float(width)

    def derivative(self, x: Tensor) -> Tensor:
        """``ds/dx`` in units of theta = 1 (x = u/theta - 1): a rectangle of height 1/width."""
        return (x.abs() < self.width / 2).to(x.dtype) / self.width

    def spike(self, u: Tensor, theta: Tensor | float) -> Tensor:
        """``s`` with forward ``H(u - theta)`` and gradient ``d/du = 1/(width theta)`` in the window."""
        z = ((u / theta - 1) / self.width + 0.5).clamp(0, 1)
        hard = (u >= theta).to(u.dtype)
        return z + (hard - z).detach()

    def config(self) -> dict[str, float | str]:
        return {"width": self.width}


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (ATan, FastSigmoid, Rectangle, Triangle, PSG, TrSG)}


def make_surrogate(name: str, **params: float | str | bool) -> Surrogate:
    """A surrogate by name (``atan``, ``fast_sigmoid``, ``rectangle``, ``triangle``, ``psg``,
    ``trsg``) with its width parameter."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; expected one of {', '.join(SURROGATES)}")
    import inspect
    accepted = [p for p in inspect.signature(SURROGATES[name]).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"surrogate {name} takes {', '.join(accepted)}; got {', '.join(unknown)}")
    return SURROGATES[name](**params)
