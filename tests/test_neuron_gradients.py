"""The LIF/IF neuron of docs/design.md §2 and its surrogate gradients, against hand derivations.

Every expected number here comes from plain Python (floats and ints, ``math``), written from the
equations of docs/design.md §2, never from the library:

* forward: spikes and potentials for hard/soft reset, LIF/IF, current-based synapse, refractory
  period, ``H(0) = 1`` and MP-Init (including its EMA update in training mode);
* backward: a hand-written BPTT (reverse loop over t with the chain rule) for every reset x
  reset-gradient mode, compared with autograd to 1e-10 in float64; the reset-gradient term of
  ``clip`` checked directly on :func:`reset_term`;
* central finite differences of a smooth (sigmoid) forward against autograd with the matching
  surrogate, for ``reset_grad="full"``;
* each surrogate's derivative and its forward (the Heaviside), its area; PSG's gradient for its
  learnable width; TrSG's threshold invariance;
* the fixed-point node (``hardreset-noisy`` numerics): integer potentials with the floor shift
  decay ``v - (v >> 1)``, straight-through gradients equal to the float node's with beta = 0.5.
"""

from __future__ import annotations

import math

import pytest
import torch

from neurosim.device import load_profile
from neurosim.nn.arithmetic import FixedArithmetic
from neurosim.nn.neuron import LayerDevice, LIFNode, LIFState, StepParameters, _FusedLIF, lif_step, reset_term
from neurosim.nn.surrogate import PSG, ATan, FastSigmoid, Rectangle, Surrogate, Triangle, TrSG

F64 = torch.float64


def make_node(**kwargs) -> LIFNode:
    """A LIFNode whose parameters are float64 from the start (built under float64 default dtype,
    so that 0.3 or 0.8 are not first rounded to float32), then ``.double()`` for the rest."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        return LIFNode(**kwargs).double()
    finally:
        torch.set_default_dtype(previous)


# ============================================================ plain-Python reference model

def ref_forward(currents, beta=0.5, theta=1.0, r=0.0, reset="hard", alpha=None, refractory=0, v0=0.0):
    """docs/design.md §2 for one neuron, in plain Python. Returns (spikes, u, v) per step.

    During a refractory period the neuron neither fires nor integrates: its potential stays what
    the reset left (u[t] = v[t-1])."""
    v, i, rest = v0, 0.0, 0
    spikes, us, vs = [], [], []
    for x in currents:
        if alpha is not None:
            i = alpha * i + x
            x = i
        if rest > 0:
            u, s = v, 0
            rest -= 1
        else:
            u = beta * v + x
            s = 1 if u >= theta else 0  # H(0) = 1
            if s:
                rest = refractory
        if reset == "hard":
            v = u * (1 - s) + r * s
        else:
            v = u - theta * s
        spikes.append(s)
        us.append(u)
        vs.append(v)
    return spikes, us, vs


def atan_derivative(x, alpha=2.0):
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)


def ref_backward(us, ss, a, b, beta, theta, r, reset, reset_grad, dsg):
    """Hand BPTT of L = sum_t a[t] s[t] + b[t] u[t] through the trajectory (us, ss).

    Returns (dL/dI[t] for each t, dL/dtheta). Chain rule per step, in reverse:
      ds/du = dsg(u - theta), ds/dtheta = -dsg(u - theta)
      v = u - reset: dv/du (direct) = 1 - s (hard) or 1 (soft)
      dv/ds = r - u (hard full), 0 (detach), -min(u - r, theta - r) (hard clip), -theta (soft full/clip)
      dv/dtheta (direct) = -s (soft: v = u - theta s), 0 (hard)
      du[t+1]/dv[t] = beta, du[t]/dI[t] = 1
    """
    T = len(us)
    g_v = 0.0  # dL/dv[t] from the future
    g_current = [0.0] * T
    g_theta = 0.0
    for t in reversed(range(T)):
        u, s = us[t], ss[t]
        if reset_grad == "detach":
            dv_ds = 0.0
        elif reset == "soft":
            dv_ds = -theta
        elif reset_grad == "full":
            dv_ds = r - u
        else:  # hard clip
            dv_ds = -min(u - r, theta - r)
        dv_du = (1 - s) if reset == "hard" else 1.0
        dv_dtheta = -s if reset == "soft" else 0.0
        d = dsg(u - theta)
        g_s = a[t] + g_v * dv_ds
        g_u = b[t] + g_v * dv_du + g_s * d
        g_theta += -g_s * d + g_v * dv_dtheta
        g_current[t] = g_u
        g_v = g_u * beta
    return g_current, g_theta


def node_loss(node, currents, a, b, device=None):
    """L = sum a s + sum b u for a LIFNode (u from its recorded potentials)."""
    node.record = True
    spikes = node(currents, device)
    us = torch.stack(node.recorded_potentials)
    return (spikes * a).sum() + (us * b).sum(), spikes, us


def t64(values):
    return torch.tensor(values, dtype=F64)


# ============================================================ 1. forward vs hand computation

def run_node(node, currents):
    node.record = True
    with torch.no_grad():
        spikes = node(t64(currents).reshape(-1, 1)).reshape(-1)
    us = torch.stack(node.recorded_potentials).reshape(-1)
    return spikes.tolist(), us.tolist()


# Literal tables worked out by hand (dyadic numbers: exact in binary floating point).
HAND_CASES = {
    # LIF beta 0.5, hard reset to 0; t2 reaches theta exactly (H(0) = 1)
    "lif_hard": (dict(beta=0.5, reset="hard"), [0.5, 0.75, 0.25, 1.0, 0.0, 2.0],
                 [0, 1, 0, 1, 0, 1], [0.5, 1.0, 0.25, 1.125, 0.0, 2.0]),
    # same input, soft reset keeps the excess over theta
    "lif_soft": (dict(beta=0.5, reset="soft"), [0.5, 0.75, 0.25, 1.0, 0.0, 2.0],
                 [0, 1, 0, 1, 0, 1], [0.5, 1.0, 0.25, 1.125, 0.0625, 2.03125]),
    # IF (beta 1), soft: the residual 0.5 after t4 carries over unchanged
    "if_soft": (dict(beta=1.0, reset="soft"), [0.5, 0.75, 0.25, 1.0, 0.0, 2.0],
                [0, 1, 0, 1, 0, 1], [0.5, 1.25, 0.5, 1.5, 0.5, 2.5]),
    # IF (beta 1), hard reset to 0.25
    "if_hard_r": (dict(beta=1.0, reset="hard", v_reset=0.25), [0.5, 0.25, 0.5, 0.5, 0.25, 0.0],
                  [0, 0, 1, 0, 1, 0], [0.5, 0.75, 1.25, 0.75, 1.0, 0.25]),
    # current-based synapse, alpha 0.5: i = 0.5, 0.75, 0.875, 0.4375, 0.21875
    "synapse": (dict(beta=0.5, reset="hard", synapse_decay=0.5), [0.5, 0.5, 0.5, 0.0, 0.0],
                [0, 1, 0, 0, 0], [0.5, 1.0, 0.875, 0.875, 0.65625]),
    # refractory 2 with reset to 0.25: after each spike, two steps silent with v held at 0.25
    # (no decay, no input), although the input alone (1.0) would make it fire
    "refractory": (dict(beta=0.5, reset="hard", v_reset=0.25, refractory=2),
                   [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
                   [1, 0, 0, 1, 0, 0, 0], [1.0, 0.25, 0.25, 1.125, 0.25, 0.25, 0.625]),
}


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_forward_matches_hand_tables(name):
    kwargs, currents, spikes, us = HAND_CASES[name]
    node = make_node(threshold=1.0, **kwargs).eval()
    got_s, got_u = run_node(node, currents)
    assert got_s == spikes
    assert got_u == pytest.approx(us, abs=1e-12)
    # the plain-Python model agrees with the hand tables too
    ref_kwargs = dict(beta=kwargs["beta"], reset=kwargs["reset"], r=kwargs.get("v_reset", 0.0),
                      alpha=kwargs.get("synapse_decay"), refractory=kwargs.get("refractory", 0))
    ref_s, ref_u, _ = ref_forward(currents, **ref_kwargs)
    assert ref_s == spikes and ref_u == pytest.approx(us, abs=1e-12)


def test_fires_exactly_at_threshold_and_not_below():
    theta = 0.7
    node = make_node(beta=0.5, threshold=theta).eval()
    below = math.nextafter(theta, 0.0)
    spikes = node(t64([[theta, below, theta * 3]]))
    assert spikes.tolist() == [[1.0, 0.0, 1.0]]


FORWARD_GRID = [
    dict(beta=beta, reset=reset, r=r, alpha=alpha, refractory=ref)
    for beta in (0.5, 1.0) for reset in ("hard", "soft") for r in (0.0, 0.3)
    for alpha in (None, 0.5) for ref in (0, 2)
    if not (reset == "soft" and r != 0.0)
]


@pytest.mark.parametrize("cfg", FORWARD_GRID, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_matches_plain_python_model(cfg):
    gen = torch.Generator().manual_seed(7)
    currents = (torch.rand(12, 5, generator=gen, dtype=F64) * 1.6 - 0.2)
    node = make_node(beta=cfg["beta"], threshold=1.0, v_reset=cfg["r"], reset=cfg["reset"],
                   synapse_decay=cfg["alpha"], refractory=cfg["refractory"]).eval()
    node.record = True
    with torch.no_grad():
        spikes = node(currents)
    us = torch.stack(node.recorded_potentials)
    total = 0
    for n in range(currents.shape[1]):
        ref_s, ref_u, _ = ref_forward(currents[:, n].tolist(), cfg["beta"], 1.0, cfg["r"], cfg["reset"],
                                      cfg["alpha"], cfg["refractory"])
        assert spikes[:, n].tolist() == ref_s
        assert us[:, n].tolist() == pytest.approx(ref_u, abs=1e-12)
        total += sum(ref_s)
    assert total > 0  # the grid does exercise resets


def test_refractory_neuron_is_silent_and_holds_its_potential():
    # a constant supra-threshold drive: without refractory it fires every step
    drive = [1.5] * 9
    s0, _ = run_node(make_node(beta=0.5, refractory=0).eval(), drive)
    assert s0 == [1] * 9
    s2, u2 = run_node(make_node(beta=0.5, v_reset=0.125, refractory=2).eval(), drive)
    assert s2 == [1, 0, 0] * 3
    assert u2 == pytest.approx([1.5, 0.125, 0.125, 1.5625] + [0.125, 0.125, 1.5625] + [0.125, 0.125])


# ------------------------------------------------------------------ MP-Init

MP_CURRENTS = [  # [T=3, 3 neurons]; hand trajectories with v[0] = 0.5, beta 0.5, theta 1, hard to 0
    [0.75, 0.5, 1.5],   # A: u = 1.0 fires; B: u = 0.75; C: u = 1.75 fires
    [0.0, 0.5, 0.0],    # A: 0;  B: 0.875;  C: 0
    [0.5, 0.25, 0.25],  # A: 0.5 (final); B: 0.6875 (never fired); C: 0.25 (final)
]
MP_U = [[1.0, 0.75, 1.75], [0.0, 0.875, 0.0], [0.5, 0.6875, 0.25]]
MP_S = [[1, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_mp_init_is_initial_potential_and_ema_in_training():
    node = make_node(beta=0.5, threshold=1.0, v_init="mp_init")
    node.mp_init.fill_(0.5)
    state = node.initial_state((3,), torch.zeros(3, dtype=F64), LayerDevice.ideal())
    assert state.v.tolist() == [0.5, 0.5, 0.5]

    node.eval()
    node.record = True
    spikes = node(t64(MP_CURRENTS))
    assert spikes.tolist() == MP_S
    assert torch.stack(node.recorded_potentials).tolist() == MP_U  # u[1] = 0.5 * v[0] + I[1]
    assert node.mp_init.item() == 0.5  # no update in eval mode

    node.train()
    spikes = node(t64(MP_CURRENTS))
    assert spikes.tolist() == MP_S
    # neurons that fired: A (final v 0.5) and C (final v 0.25); B never fired and is excluded
    expected = 0.9 * 0.5 + 0.1 * (0.5 + 0.25) / 2
    assert node.mp_init.item() == pytest.approx(expected, abs=1e-15)
    assert node.mp_init.item() == pytest.approx(0.4875)
    # the next forward starts from the updated value
    node.eval()
    node(t64(MP_CURRENTS))
    assert node.recorded_potentials[0][1].item() == pytest.approx(0.5 * 0.4875 + 0.5)


def test_mp_init_no_update_when_nothing_fires():
    node = make_node(v_init="mp_init").train()
    node.mp_init.fill_(0.3)
    node(t64([[0.1, 0.2]]))
    assert node.mp_init.item() == 0.3


# ============================================================ 2. gradients vs hand BPTT

GRAD_CASES = [
    # (currents, beta, v_reset, theta)
    ([0.6], 0.5, 0.0, 1.0),                      # T=1, below threshold
    ([1.4], 0.5, 0.3, 1.0),                      # T=1, above
    ([0.7, 0.8], 0.5, 0.3, 1.0),                 # crosses at t2 (u = 1.15)
    ([2.5, 0.2, 0.9], 0.5, 0.3, 1.0),            # far above at t1: u - r = 2.2 > theta - r = 0.7
    ([0.9, 3.0, 0.1, 1.2], 0.9, 0.3, 1.0),       # T=4, far above at t2, r != 0
    ([0.5, 0.6, 0.4, 0.8], 1.0, 0.0, 1.0),       # IF
    ([1.9, -0.3, 0.95, 2.2], 0.8, 0.3, 0.8),     # theta != 1, negative input
    ([0.45, 0.5, 0.9, 0.05], 0.5, 0.0, 0.6),
]
A_W = [1.0, -0.7, 0.4, 0.9]
B_W = [0.3, 0.5, -0.2, 0.8]


def autograd_grads(currents, beta, r, theta, reset, reset_grad, surrogate=None):
    node = make_node(beta=beta, threshold=theta, v_reset=r, reset=reset, reset_grad=reset_grad,
                   surrogate=surrogate, learn_threshold=True)
    T = len(currents)
    x = t64(currents).reshape(T, 1).requires_grad_(True)
    loss, spikes, us = node_loss(node, x, t64(A_W[:T]).reshape(T, 1), t64(B_W[:T]).reshape(T, 1))
    loss.backward()
    return x.grad.reshape(-1).tolist(), node.threshold.grad.item(), spikes.reshape(-1).tolist(), \
        us.detach().reshape(-1).tolist()


@pytest.mark.parametrize("reset_grad", ["detach", "full", "clip"])
@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("case", range(len(GRAD_CASES)))
def test_bptt_matches_hand_derivation(case, reset, reset_grad):
    currents, beta, r, theta = GRAD_CASES[case]
    if reset == "soft":
        r = 0.0
    T = len(currents)
    g_x, g_theta, spikes, us = autograd_grads(currents, beta, r, theta, reset, reset_grad)
    ref_s, ref_u, _ = ref_forward(currents, beta, theta, r, reset)
    assert spikes == ref_s
    assert us == pytest.approx(ref_u, abs=1e-12)
    ref_gx, ref_gtheta = ref_backward(ref_u, ref_s, A_W[:T], B_W[:T], beta, theta, r, reset, reset_grad,
                                      atan_derivative)
    assert g_x == pytest.approx(ref_gx, abs=1e-10, rel=1e-10)
    assert g_theta == pytest.approx(ref_gtheta, abs=1e-10, rel=1e-10)


def test_bptt_cases_exercise_the_reset_modes():
    """The cases above are not vacuous: crossing and far-above make the modes differ."""
    currents, beta, r, theta = GRAD_CASES[4]  # far above at t2 with r = 0.3
    ref_s, ref_u, _ = ref_forward(currents, beta, theta, r, "hard")
    assert ref_s[1] == 1 and ref_u[1] - r > theta - r
    grads = {m: autograd_grads(currents, beta, r, theta, "hard", m)[0] for m in ("detach", "full", "clip")}
    for m1, m2 in (("detach", "full"), ("detach", "clip"), ("full", "clip")):
        assert max(abs(p - q) for p, q in zip(grads[m1], grads[m2])) > 1e-3, (m1, m2)
    # soft: clip is full
    soft = {m: autograd_grads(currents, beta, 0.0, theta, "soft", m)[0] for m in ("full", "clip")}
    assert soft["full"] == pytest.approx(soft["clip"], abs=1e-15)


def test_bptt_with_other_surrogates():
    """Same hand BPTT with the surrogate's own formula (fast sigmoid, triangle)."""
    currents, beta, r, theta = GRAD_CASES[4]
    for surrogate, dsg in ((FastSigmoid(5.0), lambda x: 1 / (1 + 5.0 * abs(x)) ** 2),
                           (Triangle(2.0), lambda x: max(0.0, 1 - abs(x) / 2.0) / 2.0)):
        for reset, rg in (("hard", "clip"), ("hard", "full"), ("soft", "full")):
            rr = r if reset == "hard" else 0.0
            g_x, g_theta, _, _ = autograd_grads(currents, beta, rr, theta, reset, rg, surrogate)
            ref_s, ref_u, _ = ref_forward(currents, beta, theta, rr, reset)
            ref_gx, ref_gt = ref_backward(ref_u, ref_s, A_W, B_W, beta, theta, rr, reset, rg, dsg)
            assert g_x == pytest.approx(ref_gx, abs=1e-10, rel=1e-10)
            assert g_theta == pytest.approx(ref_gt, abs=1e-10, rel=1e-10)


@pytest.mark.parametrize("theta_as_tensor", [False, True])
def test_reset_term_clip_gradient(theta_as_tensor):
    r, theta = 0.3, 1.0
    u = t64([-0.4, 0.1, 0.8, 1.0, 1.3, 2.5, 4.0]).requires_grad_(True)
    th = t64(theta) if theta_as_tensor else theta
    for s_values in ([0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1] * 7):
        s = t64(s_values).requires_grad_(True)
        p = StepParameters(0.5, th, r, None, "hard", "clip", 0, 1.0)
        out = reset_term(u, s, p)
        d_u, d_s = torch.autograd.grad(out.sum(), (u, s))
        expected_ds = [min(x - r, theta - r) for x in u.tolist()]
        assert out.tolist() == pytest.approx([(x - r) * si for x, si in zip(u.tolist(), s_values)], abs=1e-15)
        assert d_s.tolist() == pytest.approx(expected_ds, abs=1e-15)
        assert d_u.tolist() == [float(v) for v in s_values]
        # so the gradient of v = u - reset_term through the reset path is -min(u - r, theta - r)
        v = u - reset_term(u, s, p)
        (d_vs,) = torch.autograd.grad(v.sum(), (s,))
        assert d_vs.tolist() == pytest.approx([-e for e in expected_ds], abs=1e-15)
    # far above threshold clip differs from full (u - r = 3.7 vs theta - r = 0.7)
    assert expected_ds[-1] == pytest.approx(0.7) and u[-1].item() - r == pytest.approx(3.7)


def test_reset_term_full_detach_and_soft():
    r, theta = 0.3, 1.0
    u = t64([0.1, 0.9, 1.3, 2.5]).requires_grad_(True)
    s = t64([0, 1, 1, 0]).requires_grad_(True)

    def grads(reset, mode):
        p = StepParameters(0.5, theta, r, None, reset, mode, 0, 1.0)
        return torch.autograd.grad(reset_term(u, s, p).sum(), (u, s), allow_unused=True)

    d_u, d_s = grads("hard", "full")
    assert d_s.tolist() == pytest.approx([x - r for x in u.tolist()]) and d_u.tolist() == s.tolist()
    d_u, d_s = grads("hard", "detach")
    assert d_s is None and d_u.tolist() == s.tolist()
    for mode in ("full", "clip"):
        d_u, d_s = grads("soft", mode)
        assert d_u is None and d_s.tolist() == [theta] * 4
    # soft + detach with a constant theta: the reset term carries no gradient at all
    out = reset_term(u, s, StepParameters(0.5, theta, r, None, "soft", "detach", 0, 1.0))
    assert not out.requires_grad and out.tolist() == [theta * v for v in s.tolist()]


# ============================================================ 3. finite differences, smooth forward

K = 6.0  # sigmoid steepness


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


class _SmoothSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return torch.sigmoid(K * x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


class SmoothSigmoid(Surrogate):
    """Forward sigmoid(K x) instead of H(x); backward through ``derivative`` as the library does."""

    def derivative(self, x):
        sg = torch.sigmoid(K * x)
        return K * sg * (1 - sg)

    def forward(self, x):
        return _SmoothSpike.apply(x, self)


def smooth_loss(currents, theta, beta, r, reset, a, b):
    """Plain-Python forward with s = sigmoid(K (u - theta)), loss sum a s + b u."""
    v, loss = 0.0, 0.0
    for t, x in enumerate(currents):
        u = beta * v + x
        s = sigmoid(K * (u - theta))
        v = u * (1 - s) + r * s if reset == "hard" else u - theta * s
        loss += a[t] * s + b[t] * u
    return loss


SMOOTH_CASES = [
    ([0.7, 0.8, 0.2, 1.1], 0.5, 0.3, 1.0),
    ([2.5, 0.2, 0.9, 0.6], 0.9, 0.3, 1.0),
    ([0.5, 0.6, 0.4, 0.8], 1.0, 0.0, 0.9),
    ([1.2, -0.3, 0.95, 1.6], 0.8, 0.0, 0.8),
]


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("case", range(len(SMOOTH_CASES)))
def test_full_reset_grad_matches_finite_differences_of_smooth_forward(case, reset):
    currents, beta, r, theta = SMOOTH_CASES[case]
    if reset == "soft":
        r = 0.0
    T = len(currents)
    node = make_node(beta=beta, threshold=theta, v_reset=r, reset=reset, reset_grad="full",
                   surrogate=SmoothSigmoid(), learn_threshold=True)
    x = t64(currents).reshape(T, 1).requires_grad_(True)
    loss, _, _ = node_loss(node, x, t64(A_W).reshape(T, 1), t64(B_W).reshape(T, 1))
    assert loss.item() == pytest.approx(smooth_loss(currents, theta, beta, r, reset, A_W, B_W), abs=1e-13)
    loss.backward()
    auto = x.grad.reshape(-1).tolist() + [node.threshold.grad.item()]

    h = 1e-6
    fd = []
    for t in range(T):
        plus, minus = list(currents), list(currents)
        plus[t] += h
        minus[t] -= h
        fd.append((smooth_loss(plus, theta, beta, r, reset, A_W, B_W)
                   - smooth_loss(minus, theta, beta, r, reset, A_W, B_W)) / (2 * h))
    fd.append((smooth_loss(currents, theta + h, beta, r, reset, A_W, B_W)
               - smooth_loss(currents, theta - h, beta, r, reset, A_W, B_W)) / (2 * h))
    for g, f in zip(auto, fd):
        assert abs(g - f) <= 1e-5 * max(abs(f), 1e-2), (auto, fd)
    # the surrogate path matters here: the gradient is not that of the detached reset
    node_d = make_node(beta=beta, threshold=theta, v_reset=r, reset=reset, reset_grad="detach",
                     surrogate=SmoothSigmoid(), learn_threshold=True)
    xd = t64(currents).reshape(T, 1).requires_grad_(True)
    node_loss(node_d, xd, t64(A_W).reshape(T, 1), t64(B_W).reshape(T, 1))[0].backward()
    assert max(abs(p - q) for p, q in zip(xd.grad.reshape(-1).tolist(), fd)) > 1e-3


# ============================================================ 4. surrogate formulas

GRID = torch.arange(-300, 301, dtype=F64) / 100  # -3 .. 3 with 0 and +-w/2 exactly on the grid

SURROGATE_FORMULAS = [
    (ATan(1.0), lambda x: 1.0 / 2 / (1 + (math.pi / 2 * 1.0 * x) ** 2)),
    (ATan(2.0), lambda x: 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * x) ** 2)),
    (ATan(5.0), lambda x: 5.0 / 2 / (1 + (math.pi / 2 * 5.0 * x) ** 2)),
    (FastSigmoid(1.0), lambda x: 1 / (1 + 1.0 * abs(x)) ** 2),
    (FastSigmoid(25.0), lambda x: 1 / (1 + 25.0 * abs(x)) ** 2),
    (Rectangle(0.5), lambda x: 1 / 0.5 if abs(x) < 0.25 else 0.0),
    (Rectangle(1.0), lambda x: 1 / 1.0 if abs(x) < 0.5 else 0.0),
    (Rectangle(2.0), lambda x: 1 / 2.0 if abs(x) < 1.0 else 0.0),
    (Triangle(0.5), lambda x: max(0.0, 1 - abs(x) / 0.5) / 0.5),
    (Triangle(1.0), lambda x: max(0.0, 1 - abs(x) / 1.0) / 1.0),
    (Triangle(2.0), lambda x: max(0.0, 1 - abs(x) / 2.0) / 2.0),
]


@pytest.mark.parametrize("idx", range(len(SURROGATE_FORMULAS)),
                         ids=[f"{s.name}-{s.config()}" for s, _ in SURROGATE_FORMULAS])
def test_surrogate_derivative_by_autograd(idx):
    surrogate, formula = SURROGATE_FORMULAS[idx]
    x = GRID.clone().requires_grad_(True)
    y = surrogate(x)
    assert torch.equal(y.detach(), (GRID >= 0).to(F64))
    assert y.detach()[300].item() == 1.0 and GRID[300].item() == 0.0  # H(0) = 1
    grad_out = torch.linspace(0.5, 1.5, len(GRID), dtype=F64)
    y.backward(grad_out)
    expected = [g * formula(v) for g, v in zip(grad_out.tolist(), GRID.tolist())]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert surrogate.derivative(GRID).tolist() == pytest.approx([formula(v) for v in GRID.tolist()],
                                                                rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("surrogate,lo,hi,n", [
    (Rectangle(0.5), -5, 5, 100001), (Rectangle(1.0), -5, 5, 100001), (Rectangle(2.0), -5, 5, 100001),
    (Triangle(0.5), -5, 5, 100001), (Triangle(1.0), -5, 5, 100001), (Triangle(2.0), -5, 5, 100001),
    (ATan(1.0), -400, 400, 800001), (ATan(2.0), -400, 400, 800001), (ATan(5.0), -400, 400, 800001),
], ids=lambda v: f"{v.name}-{v.config()}" if isinstance(v, Surrogate) else str(v))
def test_surrogate_integrates_to_one(surrogate, lo, hi, n):
    x = torch.linspace(lo, hi, n, dtype=F64)
    area = torch.trapezoid(surrogate.derivative(x), x).item()
    assert area == pytest.approx(1.0, abs=1e-2)


def test_fast_sigmoid_peak_is_one():
    for gamma in (1.0, 25.0):
        d = FastSigmoid(gamma).derivative(GRID)
        assert d.max().item() == 1.0 and d[300].item() == 1.0


# ============================================================ 5. PSG

@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("shape", ["atan", "sigmoid"])
def test_psg_derivatives_and_gamma_gradient(shape, gamma):
    psg = PSG(gamma=gamma, shape=shape).double()
    assert isinstance(psg.gamma, torch.nn.Parameter)
    x = GRID.clone().requires_grad_(True)
    y = psg(x)
    assert torch.equal(y.detach(), (GRID >= 0).to(F64))
    gen = torch.Generator().manual_seed(3)
    grad_out = torch.rand(len(GRID), generator=gen, dtype=F64) * 2 - 0.5
    y.backward(grad_out)
    xs, gs = GRID.tolist(), grad_out.tolist()
    if shape == "atan":
        d_u = [1 / (1 + (gamma * v) ** 2) for v in xs]
        d_g = [2 * gamma * v / (1 + (gamma * v) ** 2) for v in xs]
    else:
        d_u = [1 / (1 + math.exp(-gamma * v)) for v in xs]
        d_g = [min(1.0, max(-1.0, v / (1 + math.exp(-gamma * v)))) for v in xs]
    assert x.grad.tolist() == pytest.approx([g * d for g, d in zip(gs, d_u)], rel=1e-12, abs=1e-14)
    assert psg.gamma.grad.item() == pytest.approx(sum(g * d for g, d in zip(gs, d_g)), rel=1e-12)
    # dO/du never exceeds 1 and reaches 1 (atan: at x = 0; sigmoid: as x grows)
    wide = torch.linspace(-50, 50, 10001, dtype=F64)
    d = psg.derivative(wide)
    assert d.max().item() <= 1.0
    assert d.max().item() == pytest.approx(1.0, abs=1e-9)
    if shape == "atan":
        assert psg.derivative(t64([0.0])).item() == 1.0


@pytest.mark.parametrize("shape", ["atan", "sigmoid"])
def test_psg_gamma_is_trained_by_an_optimizer(shape):
    node = make_node(beta=0.5, threshold=1.0, surrogate=PSG(gamma=2.0, shape=shape))
    names = [n for n, _ in node.named_parameters()]
    assert "surrogate.gamma" in names
    before = node.surrogate.gamma.item()
    opt = torch.optim.SGD(node.parameters(), lr=0.5)
    w = torch.tensor([[0.4, 0.7, 1.2]], dtype=F64, requires_grad=True)
    currents = (t64([[0.6], [0.9], [0.3], [1.4]]) * w)
    loss = node(currents).sum()
    loss.backward()
    assert node.surrogate.gamma.grad is not None and node.surrogate.gamma.grad.item() != 0.0
    opt.step()
    assert node.surrogate.gamma.item() != before


# ============================================================ 6. TrSG threshold invariance

REL_POSITIONS = [0.6, 0.9, 1.0, 1.2, 1.45]


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_trsg_gradient_does_not_depend_on_threshold(width):
    per_theta = []
    for theta in (0.25, 1.0, 4.0):
        th = t64(theta)
        u = (t64(REL_POSITIONS) * theta).requires_grad_(True)
        s = TrSG(width).spike(u, th)
        assert s.tolist() == [1.0 if x >= theta else 0.0 for x in u.tolist()]
        assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
        (g,) = torch.autograd.grad((s * th).sum(), (u,))
        per_theta.append(g.tolist())
    expected = [1 / width if abs(r - 1) < width / 2 else 0.0 for r in REL_POSITIONS]
    assert 0.0 in expected or width == 1.0  # width 0.5 puts 0.6 and 1.45 outside the window
    for g in per_theta:
        assert g == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_trsg_through_lif_node(width):
    node_grads = []
    for theta in (0.25, 1.0, 4.0):
        node = make_node(beta=0.5, threshold=theta, surrogate=TrSG(width), learn_threshold=True)
        assert node.output_gain is node.threshold
        assert isinstance(node.output_gain, torch.nn.Parameter)
        x = (t64(REL_POSITIONS) * theta).reshape(1, -1).requires_grad_(True)
        out = node(x) * node.output_gain
        assert out.tolist() == [[0.0, 0.0, theta, theta, theta]]
        out.sum().backward()
        node_grads.append((x.grad.reshape(-1).tolist(), node.threshold.grad.item()))
    inside = [abs(r - 1) < width / 2 for r in REL_POSITIONS]
    expected_du = [1 / width if i else 0.0 for i in inside]
    # d(theta s)/dtheta = s + theta ds/dtheta = H(r - 1) - r/width inside the window
    expected_dtheta = sum((1.0 if r >= 1 else 0.0) - (r / width if i else 0.0)
                          for r, i in zip(REL_POSITIONS, inside))
    for g_u, g_theta in node_grads:
        assert g_u == pytest.approx(expected_du, rel=1e-12, abs=1e-15)
        assert g_theta == pytest.approx(expected_dtheta, rel=1e-12, abs=1e-15)
    assert LIFNode(surrogate=ATan()).output_gain is None


# ============================================================ 7. fixed-point node

UNIT = 2.0 ** -10          # one state unit
THETA_UNITS = 1000         # threshold in units
THETA = THETA_UNITS * UNIT  # 0.9765625, exact


def fixed_device():
    arithmetic = FixedArithmetic(load_profile("hardreset-noisy").numerics)
    to_units = lambda value: arithmetic.to_units(value, UNIT)  # noqa: E731
    same = lambda value: value  # noqa: E731
    return LayerDevice(arithmetic, to_units, to_units, same, same, unit=UNIT)


def ref_integer_forward(currents):
    """Hard reset to 0, shift decay v - (v >> 1) with Python's floor shift, theta = 1000."""
    v, spikes, us = 0, [], []
    for x in currents:
        u = v - (v >> 1) + x
        s = 1 if u >= THETA_UNITS else 0
        v = 0 if s else u
        spikes.append(s)
        us.append(u)
    return spikes, us


INT_CURRENTS = [  # [neuron][t], integer units, odd and negative values to exercise the floor
    [301, 301, 301, 301, 301, 301],
    [-7, 3, -1, 0, 5, -3],
    [999, 1, 0, 1000, 1500, -1],
    [1000, 999, 3, 2, -5, 700],
    [-301, -255, 1200, 17, 333, 999],
]


def test_fixed_node_forward_is_integer_with_floor_decay():
    node = make_node(beta=0.5, threshold=THETA, v_reset=0.0, reset="hard").eval()
    node.record = True
    currents = t64(INT_CURRENTS).T.contiguous()  # [T, neurons]
    with torch.no_grad():
        spikes = node(currents, fixed_device())
    us = torch.stack(node.recorded_potentials) / UNIT  # exact: UNIT is a power of two
    assert torch.equal(us, us.round())
    floor_mattered = False
    for n, seq in enumerate(INT_CURRENTS):
        ref_s, ref_u = ref_integer_forward(seq)
        assert spikes[:, n].tolist() == ref_s
        assert [int(v) for v in us[:, n].tolist()] == ref_u
        float_s, float_u, _ = ref_forward(seq, 0.5, THETA_UNITS, 0.0, "hard")
        floor_mattered |= float_u != ref_u
    assert floor_mattered
    assert spikes[0, 3].item() == 1.0 and spikes[0, 2].item() == 0.0  # u = 1000 fires, 999 does not


def fixed_and_float_grads(int_currents, surrogate_factory, reset_grad):
    T = len(int_currents[0])
    gen = torch.Generator().manual_seed(11)
    a = torch.rand(T, len(int_currents), generator=gen, dtype=F64) - 0.3
    b = torch.rand(T, len(int_currents), generator=gen, dtype=F64) - 0.6
    cur = t64(int_currents).T.contiguous()

    fixed = make_node(beta=0.5, threshold=THETA, reset="hard", reset_grad=reset_grad,
                    surrogate=surrogate_factory())
    x_int = cur.clone().requires_grad_(True)
    loss_i, s_i, u_i = node_loss(fixed, x_int, a, b, fixed_device())
    loss_i.backward()

    flt = make_node(beta=0.5, threshold=THETA, reset="hard", reset_grad=reset_grad,
                  surrogate=surrogate_factory())
    x_f = (cur * UNIT).requires_grad_(True)
    loss_f, s_f, u_f = node_loss(flt, x_f, a, b)
    loss_f.backward()
    return (x_int.grad, s_i, u_i.detach()), (x_f.grad, s_f, u_f.detach()), a, b


@pytest.mark.parametrize("reset_grad", ["clip", "full", "detach"])
def test_fixed_node_gradient_equals_float_node_on_exact_sequence(reset_grad):
    # multiples of 64: every decayed value is even, so floor(v / 2) is exact and the integer and
    # float trajectories coincide; then the straight-through gradient must be the float one
    seqs = [[640, 512, 704, 64, 960, 1024], [1088, 0, 896, 128, -64, 576], [320, 320, 320, 320, 320, 320]]
    (g_i, s_i, u_i), (g_f, s_f, u_f), _, _ = fixed_and_float_grads(seqs, ATan, reset_grad)
    assert torch.equal(s_i, s_f) and s_i.sum() > 0
    assert torch.equal(u_i, u_f)
    # currents in units: dL/dI_units = dL/dI_float * UNIT
    torch.testing.assert_close(g_i, g_f * UNIT, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reset_grad", ["clip", "full", "detach"])
def test_fixed_node_gradient_is_straight_through_float_bptt(reset_grad):
    """On a rounding trajectory, the gradient is the float (beta 0.5) BPTT evaluated at the
    integer potentials."""
    (g_i, s_i, u_i), _, a, b = fixed_and_float_grads(INT_CURRENTS, ATan, reset_grad)
    for n, seq in enumerate(INT_CURRENTS):
        ref_s, ref_u = ref_integer_forward(seq)
        assert s_i[:, n].tolist() == ref_s
        ref_g, _ = ref_backward([v * UNIT for v in ref_u], ref_s, a[:, n].tolist(), b[:, n].tolist(),
                                0.5, THETA, 0.0, "hard", reset_grad, atan_derivative)
        assert g_i[:, n].tolist() == pytest.approx([g * UNIT for g in ref_g], rel=1e-10, abs=1e-15)


def test_fixed_node_gradient_equals_float_node_with_flat_surrogate():
    """With a surrogate that is flat where the potentials lie and a detached reset, the gradient
    depends only on the spikes: fixed and float nodes agree although the floor moved u."""
    seqs = [[301, 301, 301, 301, 301, 301], [-7, 3, -1, 0, 5, -3], [999, 1, 0, 1000, 1500, -1]]
    (g_i, s_i, u_i), (g_f, s_f, u_f), _, _ = fixed_and_float_grads(seqs, lambda: Rectangle(8.0), "detach")
    assert torch.equal(s_i, s_f)
    assert not torch.allclose(u_i, u_f)  # the floor did change the potentials
    torch.testing.assert_close(g_i, g_f * UNIT, rtol=1e-12, atol=1e-15)


def test_lif_step_state_types():
    """lif_step returns (spikes, next state, u) with the state of docs/design.md §2."""
    p = StepParameters(0.5, 1.0, 0.0, 0.5, "hard", "clip", 0, 1.0)
    state = LIFState(t64([0.5, 0.0]), t64([0.25, 0.0]), None)
    s, nxt, u = lif_step(state, t64([0.5, 0.3]), p, ATan())
    # i = 0.5 * 0.25 + 0.5 = 0.625, u = 0.25 + 0.625 = 0.875; second: i = 0.3, u = 0.3
    assert nxt.i.tolist() == [0.625, 0.3]
    assert u.tolist() == pytest.approx([0.875, 0.3])
    assert s.tolist() == [0.0, 0.0] and nxt.v.tolist() == pytest.approx([0.875, 0.3])


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("reset_grad", ["detach", "full", "clip"])
@pytest.mark.parametrize("surrogate", [ATan(2.0), FastSigmoid(5.0), Rectangle(0.5), Triangle(1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("v_reset", [0.1, 0.0])
def test_fused_all_steps_node_equals_the_step_loop(monkeypatch, reset, reset_grad, surrogate, dtype, v_reset):
    """The fused node (:class:`_FusedLIF`, one autograd node for all T steps) gives the step
    loop's spikes and final state bit for bit, and its gradients to rounding (v_reset = 0 has
    its own forward path)."""
    generator = torch.Generator().manual_seed(11)
    currents = (torch.rand(7, 5, 33, generator=generator, dtype=dtype) * 1.6 - 0.3).requires_grad_()
    upstream = torch.randn(7, 5, 33, generator=generator, dtype=dtype)
    results = {}
    for fused in (True, False):
        node = LIFNode(beta=0.8, threshold=0.7, v_reset=v_reset, reset=reset, reset_grad=reset_grad,
                       surrogate=surrogate, v_init="mp_init").to(dtype).train()
        node.mp_init.fill_(0.05)
        assert node.fusable(None)
        if not fused:
            monkeypatch.setattr(node, "fusable", lambda device: False)
        spikes = node(currents)
        (grad,) = torch.autograd.grad((spikes * upstream).sum(), currents)
        results[fused] = (spikes.detach(), grad, node.mp_init.clone())
    (s_fused, g_fused, mp_fused), (s_loop, g_loop, mp_loop) = results[True], results[False]
    assert s_fused.sum() > 0 and (1 - s_fused).sum() > 0  # some neurons fire, some do not
    assert torch.equal(s_fused, s_loop)
    assert torch.equal(mp_fused, mp_loop)  # MP-Init's EMA saw the same final potentials
    tolerance = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(g_fused, g_loop, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("reset_grad", ["detach", "full", "clip"])
def test_fused_node_gradient_through_its_final_state(reset, reset_grad):
    """The fused node also returns ``v[T-1]``; a loss on it gets the step loop's gradient."""
    generator = torch.Generator().manual_seed(5)
    currents = (torch.rand(6, 4, 9, generator=generator, dtype=F64) * 1.6 - 0.3).requires_grad_()
    up_s, up_v = torch.randn(6, 4, 9, generator=generator, dtype=F64), torch.randn(4, 9, generator=generator, dtype=F64)
    beta, theta, v_reset = (torch.tensor(x, dtype=F64) for x in (0.8, 0.7, 0.1))
    spikes, v = _FusedLIF.apply(currents, torch.zeros(4, 9, dtype=F64), beta, theta, v_reset, reset, reset_grad,
                                ATan(2.0))
    (fused,) = torch.autograd.grad((spikes * up_s).sum() + (v * up_v).sum(), currents)
    p = StepParameters(beta, theta, v_reset, None, reset, reset_grad, 0, 1.0)
    state, loss = LIFState(torch.zeros(4, 9, dtype=F64)), 0
    for t in range(6):
        s, state, _ = lif_step(state, currents[t], p, ATan(2.0))
        loss = loss + (s * up_s[t]).sum()
    (loop,) = torch.autograd.grad(loss + (state.v * up_v).sum(), currents)
    assert spikes.sum() > 0
    torch.testing.assert_close(fused, loop, rtol=1e-12, atol=1e-12)


def test_fused_node_is_used_only_where_it_computes_the_same_function():
    assert LIFNode().fusable(None)
    assert not LIFNode().fusable(LayerDevice.ideal())  # a chip in the loop: variation, formats, noise
    assert not LIFNode(learn_threshold=True).fusable(None)
    assert not LIFNode(learn_beta=True).fusable(None)
    assert not LIFNode(synapse_decay=0.5).fusable(None)
    assert not LIFNode(refractory=2).fusable(None)
    assert not LIFNode(surrogate=TrSG()).fusable(None)
    assert not LIFNode(surrogate=PSG()).fusable(None)
    recording = LIFNode()
    recording.record = True
    assert not recording.fusable(None)
