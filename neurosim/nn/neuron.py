"""The multi-step LIF / IF neuron of docs/design.md §2 with its reset-gradient modes.

Per step, with synaptic input ``I[t]`` (``W x[t]``, plus ``W_rec s[t-1]`` for a recurrent
layer), bias ``b`` and optional synaptic current state::

    i[t] = alpha * i[t-1] + I[t]                       (current-based synapse, optional)
    u[t] = beta * v[t-1] + i[t] + b + n[t]             (n: thermal noise; without a synapse i = I)
    s[t] = H(u[t] - theta)                             (surrogate gradient in backward)
    hard: v[t] = u[t] (1 - s[t]) + r s[t]      soft: v[t] = u[t] - theta s[t]

A chip's step rules (profile ``numerics`` / ``neuron``, see :class:`StepParameters`) change the
integer order of these operations: ``add_then_decay`` is ``i = decay(fit(i + I))``,
``increment`` is xylosim's ``dv`` update (:func:`neurosim.device.fixedpoint.membrane_increment`),
``per_source`` adds the inputs one source at a time, and ``max_spikes > 1`` fires
``n = min(max_spikes, floor(u / theta))`` spikes with ``v -= n theta`` (soft reset), its gradient
that of one spike.

``reset_grad`` says what ``dv[t]/ds[t]`` is in the backward pass: ``full`` (autograd of the line
above: ``r - u`` for hard, ``-theta`` for soft), ``detach`` (0: SpikingJelly's detach_reset,
seed 003) or ``clip`` (seed 000 Eq. 7: ``-min(u - r, theta - r)`` for hard reset; for soft reset
it equals ``full``). :func:`lif_step` is the pure step; :class:`LIFNode` is the thin module that
holds parameters and loops over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from neurosim.device import fixedpoint as fp
from neurosim.nn.arithmetic import FloatArithmetic, FixedArithmetic, straight_through
from neurosim.nn.surrogate import ATan, Surrogate, TrSG

RESETS = ("hard", "soft")
RESET_GRADS = ("detach", "full", "clip")


class LIFState(NamedTuple):
    """State of a layer of neurons between steps."""

    v: Tensor
    i: Tensor | None = None
    refractory: Tensor | None = None
    i2: Tensor | None = None  # the second synaptic state (Xylo's syn 2), where the layer has one


class StepParameters(NamedTuple):
    """Everything one step needs, resolved for the chip in use (state units)."""

    beta: Tensor | float
    threshold: Tensor | float
    v_reset: Tensor | float
    alpha: Tensor | float | None
    reset: str
    reset_grad: str
    refractory: int
    unit: Tensor | float  # float value of one state unit (1 for float arithmetic)
    max_spikes: int = 1  # spikes per step (soft reset): counts n = min(max_spikes, floor(u / theta))
    synapse_update: str = "decay_then_add"  # or add_then_decay: i = decay(fit(i + I))
    membrane_update: str = "sum"  # or increment (xylosim's dv update)
    alpha2: Tensor | float | None = None  # the second synaptic state's decay (None: no second state)


class Sources(NamedTuple):
    """A step's synaptic input as presynaptic sources for ``accumulate: per_source``: values
    ``x`` ``[batch, sources]`` and the weights in state units ``[out, sources]`` (codes shifted by
    their layer's shifts). A step delivers its groups in turn: the input sources, then the
    recurrent ones (``rec_x`` / ``rec_weight``, or None)."""

    x: Tensor
    weight: Tensor
    rec_x: Tensor | None = None
    rec_weight: Tensor | None = None


class SecondDrive(NamedTuple):
    """The input of a layer's second synaptic state (Xylo's syn 2) over all steps: ``currents``
    ``W2 x`` ``[T, batch, out]`` in state units and ``recurrent(s) = W_rec2 s[t-1]`` (or None),
    or for ``accumulate: per_source`` the weights in state units ``weight`` ``[out, in]`` and
    ``rec_weight`` ``[out, out]`` (or None), delivered source by source on the first state's inputs."""

    currents: Tensor | None = None
    recurrent: Callable[[Tensor], Tensor] | None = None
    weight: Tensor | None = None
    rec_weight: Tensor | None = None


def reset_term(u: Tensor, s: Tensor, p: StepParameters) -> Tensor:
    """The amount the reset removes from ``u``: ``(u - r) s`` (hard) or ``theta s`` (soft), with
    the gradient with respect to ``s`` that ``p.reset_grad`` asks for."""
    if p.reset == "soft":
        return p.threshold * (s.detach() if p.reset_grad == "detach" else s)
    drop = u - p.v_reset
    if p.reset_grad == "full":
        return drop * s
    if p.reset_grad == "detach":
        return drop * s.detach()
    # clip: value (u - r) s; d/ds = min(u - r, theta - r) (seed 000 Eq. 7); d/du = s as in full
    clipped = torch.minimum(drop, p.threshold - p.v_reset + torch.zeros_like(drop)).detach()
    return drop * s.detach() + clipped * (s - s.detach())


def lif_step(state: LIFState, current: Tensor | Sources, p: StepParameters, surrogate: Surrogate,
             arithmetic: FloatArithmetic | FixedArithmetic = FloatArithmetic(),
             noise: Tensor | None = None, dead: Tensor | None = None,
             bias: Tensor | None = None, current2: Tensor | Sources | None = None,
             ) -> tuple[Tensor, LIFState, Tensor]:
    """One time step of docs/design.md §2 under the chip's step rules; returns the spikes (0/1, or
    counts up to ``p.max_spikes``), the next state and the potential ``u[t]`` before the reset.
    ``current`` is the step's synaptic input in state units, or its :class:`Sources`; ``bias``
    joins the membrane. With ``p.alpha2`` the neuron has a second synaptic state ``i2`` fed by
    ``current2`` (None: no input this step), updated by the same rules as ``i``; the membrane
    takes ``i + i2`` (the engine's, and xylosim's ``i_syn + i_syn2``)."""
    i = i2 = None

    def deliver(value: Tensor, drive: Tensor | Sources | None) -> Tensor:
        """state + this step's input, with the synapse format"""
        if isinstance(drive, Sources):
            value = arithmetic.add_sources(value, drive.x, drive.weight)
            if drive.rec_x is not None:
                value = arithmetic.add_sources(value, drive.rec_x, drive.rec_weight)
            return value
        return arithmetic.fit_synapse(value if drive is None else value + drive)

    def update(held: Tensor, drive: Tensor | Sources | None, alpha: Tensor | float) -> Tensor:
        if p.synapse_update == "add_then_decay":
            return arithmetic.synapse_decay(deliver(held, drive), alpha)
        return deliver(arithmetic.synapse_decay(held, alpha), drive)

    if p.alpha is not None:
        i = update(state.i, current, p.alpha)
        current = i
        if p.alpha2 is not None:
            i2 = update(state.i2, current2, p.alpha2)
            current = i + i2
    elif isinstance(current, Sources):
        current = deliver(torch.zeros_like(state.v), current)
    decayed = arithmetic.decay(state.v, p.beta)
    if p.membrane_update == "increment":
        u = arithmetic.membrane_increment(state.v, decayed, current if noise is None else current + noise, bias)
    else:
        u = decayed + current
        if bias is not None:
            u = u + bias
        if noise is not None:
            u = u + noise
        u = arithmetic.fit_membrane(u)
    if isinstance(surrogate, TrSG):
        s = surrogate.spike(u, p.threshold)
    else:
        s = surrogate((u - p.threshold) * p.unit)
    if p.max_spikes > 1:  # spike counts; the gradient of one spike
        threshold = torch.as_tensor(p.threshold).detach()
        s = straight_through(fp.fire(u.detach(), threshold.to(u.dtype), p.max_spikes), s)
    refractory = state.refractory
    if refractory is not None:
        resting = refractory > 0
        s = s * (~resting).to(s.dtype)
        u = torch.where(resting, state.v, u)
    if dead is not None:
        s = s * (~dead).to(s.dtype)
    v = u - reset_term(u, s, p)
    if refractory is not None:
        refractory = torch.where(s.detach() > 0, torch.full_like(refractory, p.refractory),
                                 (refractory - 1).clamp(min=0))
    return s, LIFState(v, i, refractory, i2), u


class _FusedLIF(torch.autograd.Function):
    """All ``T`` steps of :func:`lif_step` on the ideal float chip as one autograd node.

    Same values as the step loop, bit for bit: the same float operations in the same order (the
    loop's ``H((u - theta) * unit)`` with unit 1 is ``u >= theta``, written as 0/1 floats, and
    for ``v_reset = 0`` the hard reset's exact ``u - 0`` is left out), with fewer
    temporaries and the backward pass written out instead of recorded op by op. With ``g_v`` the
    gradient reaching ``v[t]`` from step ``t+1`` and ``g_s`` the one reaching ``s[t]`` from the
    next layer, ``d[t] = sigma'(u[t] - theta)``::

        dL/du[t] = g_s d[t] + g_v (dv/du + dv/ds d[t])      (dv/du = 1 - s hard, 1 soft;
        dL/dI[t] = dL/du[t],   g_v(t-1) = beta dL/du[t]      dv/ds per reset_grad, module doc)

    so everything but the recursion ``G[t] = A[t] + C[t] G[t+1]`` (``A = g_s d``,
    ``C = beta (dv/du + dv/ds d)``) is computed over all steps at once.

    Only for parameters that need no gradient (beta, theta, v_reset buffers) and a surrogate
    whose ``derivative`` has no learnable parameter; :class:`LIFNode` falls back to the loop
    otherwise.
    """

    @staticmethod
    def forward(ctx, currents: Tensor, v: Tensor, beta: Tensor, threshold: Tensor, v_reset: Tensor,  # type: ignore[override]
                reset: str, reset_grad: str, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        potentials = torch.empty_like(currents)
        ctx.set_materialize_grads(False)  # the final state is rarely used: its gradient stays None
        spikes = torch.empty_like(currents)
        decayed = torch.empty_like(v)
        zero_reset = reset == "hard" and not bool(v_reset)
        for t in range(currents.shape[0]):
            u, s = potentials[t], spikes[t]
            torch.mul(beta, v, out=decayed)
            torch.add(decayed, currents[t], out=u)
            torch.ge(u, threshold, out=s)  # H(0) = 1, as the surrogates fire; 0/1 in float
            if zero_reset:  # u - (u - 0) s with the exact u - 0 = u left out
                v = u - u * s
            elif reset == "soft":
                v = u - threshold * s
            else:
                v = u - (u - v_reset) * s
        ctx.save_for_backward(potentials, spikes, beta, threshold, v_reset)
        ctx.reset, ctx.reset_grad, ctx.surrogate = reset, reset_grad, surrogate
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, grad_v: Tensor | None):  # type: ignore[override]
        potentials, spikes, beta, threshold, v_reset = ctx.saved_tensors
        reset, reset_grad = ctx.reset, ctx.reset_grad
        # Few passes and few new tensors: at conv sizes each full [T, batch, ...] temporary costs
        # more in page faults than in arithmetic.
        d = ctx.surrogate.derivative_(potentials - threshold)
        if reset == "soft":                                           # dv/du = 1
            through = torch.ones_like(d)
        elif reset_grad == "detach":                                  # C = beta (1 - s) at once
            through = torch.sub(beta, spikes, alpha=float(beta))
        else:                                                         # dv/du = 1 - s
            through = torch.sub(1, spikes)
        if reset_grad != "detach":                                    # + dv/ds d
            if reset == "soft":
                through.sub_(d * threshold)
            elif reset_grad == "full":
                through.addcmul_(v_reset - potentials, d)
            else:  # clip (seed 000 Eq. 7)
                through.sub_(torch.minimum(potentials - v_reset, threshold - v_reset).mul_(d))
        grad_currents = d.mul_(grad_spikes)  # A[t]; G[t] overwrites it from the last step down
        scaled = reset == "hard" and reset_grad == "detach"  # through holds C = beta dv/du already
        g = grad_currents[-1]
        if grad_v is not None:  # the final state's own gradient (v[T-1] is returned)
            g.addcmul_(grad_v, 1 - spikes[-1] if scaled else through[-1])
        if not scaled:
            through.mul_(beta)                                        # C[t]
        for t in range(potentials.shape[0] - 2, -1, -1):
            g = grad_currents[t].addcmul_(g, through[t])
        return grad_currents, None, None, None, None, None, None, None


@dataclass(frozen=True)
class LayerRules:
    """A chip's step rules for one layer (profile ``neuron`` / ``readout`` / ``numerics``; the
    defaults are docs/design.md §2 as written): the input of step t is the previous layer's output of
    ``t - delay``; ``max_spikes`` per step; sums shifted left by ``activation_shift``;
    ``accumulate`` sum | per_source; ``synapse_update``; ``membrane_update``; for the readout,
    ``readout_neuron`` integrator | lif."""

    delay: int = 0
    max_spikes: int = 1
    activation_shift: int = 0
    accumulate: str = "sum"
    synapse_update: str = "decay_then_add"
    membrane_update: str = "sum"
    readout_neuron: str = "integrator"


@dataclass
class LayerDevice:
    """What the chip does to one layer during one forward pass (built by the network).

    ``threshold``, ``v_reset``, ``beta``, ``alpha`` map the layer's nominal values to the chip's
    per-neuron values in state units; ``noise(step, shape)`` gives thermal noise in state units
    (or None); ``dead`` masks neurons that never fire; ``max_spikes``, ``synapse_update`` and
    ``membrane_update`` are the chip's step rules (:class:`StepParameters`).
    """

    arithmetic: FloatArithmetic | FixedArithmetic
    threshold: Callable[[Tensor], Tensor]
    v_reset: Callable[[Tensor], Tensor]
    beta: Callable[[Tensor], Tensor]
    alpha: Callable[[Tensor], Tensor]
    unit: Tensor | float = 1.0
    noise: Callable[[int, tuple[int, ...]], Tensor | None] | None = None
    threshold_noise: Callable[[int, tuple[int, ...]], Tensor | None] | None = None
    dead: Tensor | None = None
    max_spikes: int = 1
    synapse_update: str = "decay_then_add"
    membrane_update: str = "sum"

    @staticmethod
    def ideal() -> LayerDevice:
        """The float chip without variation or noise."""
        same = lambda x: x  # noqa: E731 - identity mapping
        return LayerDevice(FloatArithmetic(), same, same, same, same)


class LIFNode(nn.Module):
    """A layer of LIF (or IF, ``beta = 1``) neurons over ``[T, batch, ...]`` currents.

    Options: ``reset`` hard | soft, ``reset_grad`` detach | full | clip (default: clip for hard,
    full for soft), ``synapse_decay`` alpha for a current-based synapse, ``synapse_decay2`` the
    nominal decay of a second synaptic state (Xylo's syn 2, needs ``synapse_decay``; chip variation
    does not touch it, as in the engine), ``refractory`` steps,
    ``learn_beta`` / ``learn_threshold`` (per-layer scalars), ``v_init`` ("zero" or "mp_init":
    seed 004's running mean of the final potential of neurons that fired, EMA 0.9/0.1).
    """

    def __init__(self, beta: float = 0.5, threshold: float = 1.0, v_reset: float = 0.0,
                 reset: str = "hard", reset_grad: str | None = None, surrogate: Surrogate | None = None,
                 synapse_decay: float | None = None, refractory: int = 0, learn_beta: bool = False,
                 learn_threshold: bool = False, v_init: str = "zero", synapse_decay2: float | None = None) -> None:
        super().__init__()
        if synapse_decay2 is not None and (synapse_decay is None or not 0 < synapse_decay2 <= 1):
            raise ValueError(f"synapse_decay2 = {synapse_decay2}: a second synaptic state needs a current-based "
                             "neuron (synapse_decay) and a decay in (0, 1]")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        reset_grad = reset_grad or ("clip" if reset == "hard" else "full")
        if reset_grad not in RESET_GRADS:
            raise ValueError(f"reset_grad must be one of {RESET_GRADS}, got {reset_grad!r}")
        if v_init not in ("zero", "mp_init"):
            raise ValueError(f"v_init must be 'zero' or 'mp_init', got {v_init!r}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.reset, self.reset_grad, self.v_init = reset, reset_grad, v_init
        self.refractory = int(refractory)
        self.surrogate = surrogate if surrogate is not None else ATan()
        beta_t, theta_t = torch.tensor(float(beta)), torch.tensor(float(threshold))
        self.beta = nn.Parameter(beta_t) if learn_beta else nn.Buffer(beta_t)
        self.threshold = nn.Parameter(theta_t) if learn_threshold else nn.Buffer(theta_t)
        self.register_buffer("v_reset", torch.tensor(float(v_reset)))
        self.register_buffer("synapse_decay", None if synapse_decay is None else torch.tensor(float(synapse_decay)))
        self.register_buffer("synapse_decay2", None if synapse_decay2 is None else torch.tensor(float(synapse_decay2)))
        self.register_buffer("mp_init", torch.tensor(0.0))
        self.record = False  # keep membrane potentials for PDA (seed 002)
        self.recorded_potentials: list[Tensor] = []
        self.recurrent = False  # set by a block with recurrent weights: W_rec s[t-1] in the step loop

    @property
    def output_gain(self) -> Tensor | None:
        """Factor on the spikes this layer emits (theta for TrSG, else None = 1)."""
        return self.threshold if getattr(self.surrogate, "scales_output", False) else None

    def initial_state(self, shape: tuple[int, ...], like: Tensor, device: LayerDevice) -> LIFState:
        """``v[0]``: zeros, or the MP-Init mean in state units."""
        v = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if self.v_init == "mp_init":
            v = v + device.arithmetic.to_units(self.mp_init.to(like.dtype), device.unit)
        i = torch.zeros_like(v) if self.synapse_decay is not None else None
        i2 = torch.zeros_like(v) if self.synapse_decay2 is not None else None
        ref = torch.zeros(shape, dtype=torch.int64, device=like.device) if self.refractory else None
        return LIFState(v, i, ref, i2)

    def step_parameters(self, device: LayerDevice) -> StepParameters:
        """Nominal parameters mapped through the chip (variation, integer units); the second
        synaptic state's decay stays nominal."""
        beta = self.beta.clamp(0, 1)
        alpha = None if self.synapse_decay is None else device.alpha(self.synapse_decay)
        return StepParameters(device.beta(beta), device.threshold(self.threshold), device.v_reset(self.v_reset),
                              alpha, self.reset, self.reset_grad, self.refractory, device.unit,
                              device.max_spikes, device.synapse_update, device.membrane_update,
                              self.synapse_decay2)

    def fusable(self, device: LayerDevice | None) -> bool:
        """True when the fused all-steps node (:class:`_FusedLIF`) computes this layer: the ideal
        float chip, no synaptic state, recurrence, refractory period, recording or learnable neuron
        parameter, and a surrogate given by its ``derivative`` alone."""
        return (device is None and self.synapse_decay is None and not self.recurrent and not self.refractory
                and not self.record
                and not self.beta.requires_grad and not self.threshold.requires_grad
                and type(self.surrogate).forward is Surrogate.forward and not isinstance(self.surrogate, TrSG)
                and not any(p.requires_grad for p in self.surrogate.parameters()))

    def forward(self, currents: Tensor, device: LayerDevice | None = None, bias: Tensor | None = None,
                recurrent: Callable[[Tensor], Tensor] | None = None,
                sources: tuple[Tensor, Tensor, Tensor | None] | None = None,
                second: SecondDrive | None = None) -> Tensor:
        """Spikes ``[T, batch, ...]`` (0/1, or counts with ``max_spikes > 1``) for input currents
        ``[T, batch, ...]`` in state units. ``bias`` (state units) joins the membrane every step;
        ``recurrent(s)`` is the synaptic input ``W_rec s[t-1]`` of the previous step's spikes
        (``s[-1] = 0``); ``sources = (x, weight, recurrent weight or None)`` (inputs
        ``[T, batch, in]``, weights in state units ``[out, in]`` and ``[out, out]``) delivers each
        step source by source (``accumulate: per_source``) instead of ``currents``; ``second`` is the
        input of the second synaptic state (with ``sources``, its per-source weights)."""
        if second is not None and self.synapse_decay2 is None:
            raise ValueError("input for a second synaptic state, but the neuron has no synapse_decay2")
        if bias is None and recurrent is None and sources is None and second is None and self.fusable(device):
            return self._fused_forward(currents)
        device = device or LayerDevice.ideal()
        p = self.step_parameters(device)
        state = self.initial_state(tuple(currents.shape[1:]), currents, device)
        fired = torch.zeros(currents.shape[1:], dtype=torch.bool, device=currents.device)
        spikes, potentials = [], []
        previous = torch.zeros_like(state.v)
        inputs = sources[0].unbind(0) if sources is not None else None
        # unbind: one backward node for all steps (indexing currents[t] would make each step's
        # backward allocate and fill a zero tensor of all T steps)
        for t, current in enumerate(currents.unbind(0)):
            noise = device.noise(t, tuple(currents.shape[1:])) if device.noise else None
            step_p = p
            if device.threshold_noise is not None:
                jitter = device.threshold_noise(t, tuple(currents.shape[1:]))
                if jitter is not None:
                    step_p = p._replace(threshold=p.threshold + jitter)
            drive: Tensor | Sources = current
            if sources is not None:
                rec = sources[2] is not None
                drive = Sources(inputs[t], sources[1], previous if rec else None, sources[2])
            elif recurrent is not None:
                drive = current + recurrent(previous)
            drive2: Tensor | Sources | None = None
            if second is not None:
                if sources is not None:  # the same sources in the same order, onto the second state's weights
                    rec2 = second.rec_weight is not None
                    drive2 = Sources(inputs[t], second.weight, previous if rec2 else None, second.rec_weight)
                else:
                    drive2 = second.currents[t] if second.currents is not None else None
                    if second.recurrent is not None:
                        rec = second.recurrent(previous)
                        drive2 = rec if drive2 is None else drive2 + rec
            s, state, u = lif_step(state, drive, step_p, self.surrogate, device.arithmetic, noise,
                                   device.dead, bias, drive2)
            spikes.append(s)
            previous = s
            if self.record:
                potentials.append(u * device.unit)
            fired |= s.detach() > 0
        if self.record:
            self.recorded_potentials = potentials
        if self.training and self.v_init == "mp_init":
            self._update_mp_init(state.v.detach(), fired, device.unit)
        return torch.stack(spikes)

    def _fused_forward(self, currents: Tensor) -> Tensor:
        state = self.initial_state(tuple(currents.shape[1:]), currents, LayerDevice.ideal())
        beta = self.beta.clamp(0, 1).to(currents.dtype)
        spikes, v_final = _FusedLIF.apply(currents, state.v, beta, self.threshold.to(currents.dtype),
                                          self.v_reset.to(currents.dtype), self.reset, self.reset_grad,
                                          self.surrogate)
        if self.training and self.v_init == "mp_init":
            self._update_mp_init(v_final.detach(), spikes.detach().amax(0) > 0, 1.0)
        return spikes

    @torch.no_grad()
    def _update_mp_init(self, v_final: Tensor, fired: Tensor, unit: Tensor | float) -> None:
        """Seed 004 MP-Init: EMA (0.9 / 0.1) of the final potential of neurons that fired."""
        if fired.any():
            value = (v_final * unit)[fired].mean()
            self.mp_init.mul_(0.9).add_(0.1 * value.to(self.mp_init.dtype))

    def extra_repr(self) -> str:
        return (f"beta={float(self.beta):.4g}, threshold={float(self.threshold):.4g}, reset={self.reset}, "
                f"reset_grad={self.reset_grad}, v_init={self.v_init}")
