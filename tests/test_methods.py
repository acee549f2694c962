"""The maths of the seeds' training methods (docs/design.md §5), each checked against a hand computation.

* seed 001 gradient scaling: spike traces (Eq. 5), the pre/post relation R (Eq. 6: outer product
  for dense layers, a naive correlation loop for conv layers) and the gradient rule (Eq. 7);
* seed 002 PDA: the symmetric Gaussian KL against numerical integration, the loss of Eq. 5, the
  potentials a LIF layer records;
* tdBN / seed 003 BN on currents: TemporalBatchNorm statistics and its fold for export;
* seed 003 surrogate-width tuning: the gradient balance and its bisection;
* seed 004 MP-Init: the EMA of the final potential of neurons that fired, used as v[0].
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neurosim.nn import LIFNode, NeuronOptions, TemporalBatchNorm, build_model
from neurosim.train.methods import (gaussian_symmetric_kl, gradient_balance, pda_loss, scale_gradients,
                                    spike_relation, spike_traces, tune_surrogate_width)

E_INV = math.exp(-1.0)


def binary(*shape: int, p: float = 0.4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).to(torch.float64)


def hand_traces(spikes: torch.Tensor) -> torch.Tensor:
    """x[t] = e^-1 x[t-1] + s[t], x[-1] = 0, one element at a time."""
    flat = spikes.reshape(spikes.shape[0], -1)
    out = torch.zeros_like(flat)
    for j in range(flat.shape[1]):
        x = 0.0
        for t in range(flat.shape[0]):
            x = E_INV * x + float(flat[t, j])
            out[t, j] = x
    return out.reshape(spikes.shape)


# ------------------------------------------------------------------ seed 001: traces and relation


def test_spike_traces_follow_eq5_hand_loop():
    s = binary(5, 3, 7, seed=1)
    assert s.sum() > 0
    got = spike_traces(s)
    assert got.shape == s.shape
    torch.testing.assert_close(got, hand_traces(s), rtol=1e-12, atol=1e-12)
    # the decay is exactly e^-1 (not e.g. 0.5 or 1 - e^-1): a single spike at t=0 decays as e^-t
    one = torch.zeros(5, 1, 1, dtype=torch.float64)
    one[0] = 1
    torch.testing.assert_close(spike_traces(one).flatten(),
                               torch.tensor([math.exp(-t) for t in range(5)], dtype=torch.float64))


def hand_dense_relation(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    pre_tr, post_tr = hand_traces(pre).flatten(2), hand_traces(post).flatten(2)
    T, B, n_in = pre_tr.shape
    n_out = post_tr.shape[2]
    r = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        for i in range(n_in):
            total = 0.0
            for t in range(T):
                for b in range(B):
                    total += float(post_tr[t, b, o]) * float(pre_tr[t, b, i])
            r[o, i] = total
    return r / r.mean()


def hand_conv_relation(pre: torch.Tensor, post: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """R[o, c, ki, kj] = sum_{t, b, y, x} post_tr[t, b, o, y, x] * pre_tr_padded[t, b, c, y*s + ki, x*s + kj]."""
    pre_tr, post_tr = hand_traces(pre), hand_traces(post)
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    kh, kw = conv.kernel_size
    padded = F.pad(pre_tr, (pw, pw, ph, ph))
    T, B, C_out, H_out, W_out = post_tr.shape
    C_in = pre_tr.shape[2]
    r = torch.zeros(C_out, C_in, kh, kw, dtype=torch.float64)
    for o in range(C_out):
        for c in range(C_in):
            for ki in range(kh):
                for kj in range(kw):
                    total = 0.0
                    for y in range(H_out):
                        for x in range(W_out):
                            total += float((post_tr[:, :, o, y, x]
                                            * padded[:, :, c, y * sh + ki, x * sw + kj]).sum())
                    r[o, c, ki, kj] = total
    return r / r.mean()


def test_spike_relation_dense_is_normalised_outer_product():
    model = build_model("mlp:6", (1, 2, 2), 3, 4)
    block = model.blocks[0]
    pre, post = binary(4, 3, 4, seed=2), binary(4, 3, 6, seed=3)
    r = spike_relation(block, pre, post)
    assert r.shape == block.synapse.weight.shape == (6, 4)
    expected = hand_dense_relation(pre, post)
    torch.testing.assert_close(r, expected, rtol=1e-10, atol=1e-10)
    assert r.mean().item() == pytest.approx(1.0, abs=1e-12)
    # the input of the first block may come unflattened ([T, B, C, H, W]): same relation
    torch.testing.assert_close(spike_relation(block, pre.reshape(4, 3, 1, 2, 2), post), expected)
    assert not torch.allclose(r, torch.ones_like(r))  # a non-trivial relation was checked


@pytest.mark.parametrize("spec,out_hw", [("conv:3c3", 5), ("conv:3c3s2", 3)])
def test_spike_relation_conv_is_normalised_correlation(spec, out_hw):
    model = build_model(spec, (2, 5, 5), 3, 4)
    conv = model.blocks[0].synapse
    assert isinstance(conv, torch.nn.Conv2d) and conv.padding == (1, 1)
    pre = binary(3, 2, 2, 5, 5, seed=4)
    post = binary(3, 2, 3, out_hw, out_hw, p=0.3, seed=5)
    r = spike_relation(model.blocks[0], pre, post)
    assert r.shape == conv.weight.shape == (3, 2, 3, 3)
    torch.testing.assert_close(r, hand_conv_relation(pre, post, conv), rtol=1e-10, atol=1e-10)
    assert r.mean().item() == pytest.approx(1.0, abs=1e-12)
    # border taps see padding zeros: with stride 1 the corner taps sum over fewer positions
    if spec == "conv:3c3":
        ones = spike_relation(model.blocks[0], torch.ones_like(pre), torch.ones_like(post))
        assert ones[0, 0, 1, 1] > ones[0, 0, 0, 0]


@pytest.mark.parametrize("spec,in_shape,pre_shape,post_shape", [
    ("mlp:6", (1, 2, 2), (4, 3, 4), (4, 3, 6)),
    ("conv:3c3", (2, 5, 5), (4, 2, 2, 5, 5), (4, 2, 3, 5, 5)),
])
def test_spike_relation_without_spikes_is_all_ones(spec, in_shape, pre_shape, post_shape):
    block = build_model(spec, in_shape, 3, 4).blocks[0]
    for pre, post in [(torch.zeros(pre_shape), torch.zeros(post_shape)),
                      (torch.zeros(pre_shape), binary(*post_shape, seed=6).float()),
                      (binary(*pre_shape, seed=7).float(), torch.zeros(post_shape))]:
        r = spike_relation(block, pre, post)
        assert r.shape == block.synapse.weight.shape
        assert torch.equal(r, torch.ones_like(r))


# ------------------------------------------------------------------ seed 001: gradient scaling


def _two_block_model():
    torch.manual_seed(0)
    model = build_model("mlp:8-6", (1, 2, 2), 3, 4, NeuronOptions(threshold=0.5)).double()
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 0, 1])
    return model, x, y


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_scale_gradients_applies_eq7_exactly(alpha):
    model, x, y = _two_block_model()
    first, second = model.blocks
    first.record = True  # second stays False
    outputs = {}
    first.register_forward_hook(lambda m, inp, out: outputs.__setitem__("spikes", out.detach().clone()))
    F.cross_entropy(model(x), y).backward()

    # what the block recorded is its real input (direct encoding: x repeated) and its spikes
    assert torch.equal(first.recorded_input, x.unsqueeze(0).expand(4, *x.shape).flatten(2))
    assert torch.equal(first.recorded_spikes, outputs["spikes"])
    assert outputs["spikes"].sum() > 0, "the test needs spikes in the first block"
    assert second.recorded_spikes is None

    g = first.synapse.weight.grad.clone()
    assert g.abs().sum() > 0
    relation = hand_dense_relation(x.unsqueeze(0).expand(4, *x.shape).flatten(2), outputs["spikes"])
    assert not torch.allclose(relation, torch.ones_like(relation))  # a non-trivial R
    untouched = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("blocks.0.synapse.weight")}

    scale_gradients(model, alpha)

    torch.testing.assert_close(first.synapse.weight.grad, alpha * g * relation + (1 - alpha) * g,
                               rtol=1e-12, atol=1e-14)
    for name, p in model.named_parameters():
        if name in untouched:
            assert torch.equal(p.grad, untouched[name]), name


def test_scale_gradients_skips_blocks_without_gradient():
    model, x, y = _two_block_model()
    for block in model.blocks:
        block.record = True
    with torch.no_grad():
        model(x)
    scale_gradients(model, 0.1)  # no backward yet: nothing to scale, no error
    assert all(p.grad is None for p in model.parameters())


def test_scale_gradients_ignores_stale_records_after_record_switched_off():
    model, x, y = _two_block_model()
    first = model.blocks[0]
    first.record = True
    with torch.no_grad():
        model(x)
    first.record = False  # the last forward below is not recorded
    F.cross_entropy(model(x * 0.5), y).backward()
    g = first.synapse.weight.grad.clone()
    scale_gradients(model, 0.1)
    assert torch.equal(first.synapse.weight.grad, g)


# ------------------------------------------------------------------ seed 002: symmetric KL, PDA


def _log_normal(x: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    return -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)


def numeric_symmetric_kl(mean: float, var: float) -> float:
    x = torch.linspace(-30.0, 30.0, 600_001, dtype=torch.float64)
    log_p, log_q = _log_normal(x, mean, var), _log_normal(x, 0.0, 1.0)
    forward = torch.trapezoid(log_p.exp() * (log_p - log_q), x)
    backward = torch.trapezoid(log_q.exp() * (log_q - log_p), x)
    return float(forward + backward)


@pytest.mark.parametrize("mean,var", [(0.0, 1.0), (0.5, 1.0), (-1.2, 0.4), (0.3, 2.5), (2.0, 0.2), (0.0, 4.0)])
def test_gaussian_symmetric_kl_matches_numerical_integration(mean, var):
    got = gaussian_symmetric_kl(torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64))
    assert got.item() == pytest.approx(numeric_symmetric_kl(mean, var), abs=1e-4)
    if (mean, var) == (0.0, 1.0):
        assert abs(got.item()) < 1e-12
    else:
        assert got.item() > 1e-3


def test_gaussian_symmetric_kl_is_differentiable():
    mean = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    var = torch.tensor(1.8, dtype=torch.float64, requires_grad=True)
    gaussian_symmetric_kl(mean, var).backward()
    h = 1e-6

    def f(m, v):
        return gaussian_symmetric_kl(torch.tensor(m, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)).item()

    dm = (f(0.7 + h, 1.8) - f(0.7 - h, 1.8)) / (2 * h)
    dv = (f(0.7, 1.8 + h) - f(0.7, 1.8 - h)) / (2 * h)
    assert mean.grad.item() == pytest.approx(dm, rel=1e-6)
    assert var.grad.item() == pytest.approx(dv, rel=1e-6)
    # closed form: d/dm = m (1 + 1/v), d/dv = (1 - (1 + m^2)/v^2) / 2
    assert mean.grad.item() == pytest.approx(0.7 * (1 + 1 / 1.8), rel=1e-12)
    assert var.grad.item() == pytest.approx(0.5 * (1 - (1 + 0.49) / 1.8 ** 2), rel=1e-12)
    assert torch.autograd.gradcheck(gaussian_symmetric_kl, (mean.detach().requires_grad_(), var.detach().requires_grad_()))


def _sym_kl_python(m: float, v: float) -> float:
    return 0.5 * (v + m * m - 1 - math.log(v)) + 0.5 * ((1 + m * m) / v - 1 + math.log(v))


def test_pda_loss_is_eq5_over_layers_and_steps():
    g = torch.Generator().manual_seed(3)
    T = 3
    layers = [[torch.randn(6, 5, generator=g, dtype=torch.float64) * 1.5 + 0.4 for _ in range(T)],
              [torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64) * 0.6 - 0.8 for _ in range(T)]]
    total = 0.0
    for layer in layers:
        for u in layer:
            values = [float(a) for a in u.flatten()]
            m = sum(values) / len(values)
            v = sum((a - m) ** 2 for a in values) / len(values)  # biased
            total += _sym_kl_python(m, v)
    expected = total / (2 * T * len(layers))
    got = pda_loss(layers)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # standard-normal-like potentials give a much smaller loss than shifted ones
    assert pda_loss([[torch.randn(20000, generator=g, dtype=torch.float64)]]).item() < 1e-3


def test_pda_loss_needs_potentials():
    with pytest.raises(ValueError):
        pda_loss([])
    with pytest.raises(ValueError):
        pda_loss([[], []])


def hand_lif(currents: torch.Tensor, beta: float, theta: float, v0: float = 0.0):
    """Hard reset to 0: u = beta v + I, s = [u >= theta], v = u (1 - s). Returns (u list, s, v_final, fired)."""
    v = torch.full_like(currents[0], v0)
    us, ss = [], []
    for t in range(currents.shape[0]):
        u = beta * v + currents[t]
        s = (u >= theta).to(u.dtype)
        v = u * (1 - s)
        us.append(u)
        ss.append(s)
    spikes = torch.stack(ss)
    return us, spikes, v, spikes.sum(0) > 0


def test_lif_node_records_potentials_before_reset():
    torch.manual_seed(1)
    node = LIFNode(beta=0.5, threshold=1.0)
    node.record = True
    currents = (torch.rand(6, 4, 7, dtype=torch.float64) * 1.6).requires_grad_()
    spikes = node(currents)
    assert len(node.recorded_potentials) == 6
    us, s_hand, _, _ = hand_lif(currents.detach(), 0.5, 1.0)
    assert torch.equal(spikes.detach(), s_hand)
    assert s_hand.sum() > 0 and (1 - s_hand).sum() > 0
    for t, (got, u) in enumerate(zip(node.recorded_potentials, us)):
        torch.testing.assert_close(got.detach(), u, rtol=1e-12, atol=1e-12)
        fired = spikes[t].detach() > 0
        assert (got.detach()[fired] >= 1.0).all()  # before the reset: at or above threshold
        assert (got.detach()[~fired] < 1.0).all()
    # the potentials carry gradient, so PDA trains the layer
    pda_loss([node.recorded_potentials]).backward()
    assert currents.grad is not None and currents.grad.abs().sum() > 0
    # a second forward replaces (not appends) the record; record False records nothing new
    node(currents.detach()[:2])
    assert len(node.recorded_potentials) == 2


def test_lif_node_without_record_keeps_nothing():
    node = LIFNode()
    node(torch.rand(3, 2, 4))
    assert node.recorded_potentials == []


# ------------------------------------------------------------------ tdBN / BN on currents


@pytest.mark.parametrize("shape", [(64, 3), (8, 3, 4, 5)])
def test_temporal_batch_norm_normalises_per_channel(shape):
    torch.manual_seed(2)
    norm = TemporalBatchNorm(3, scale=0.7).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(*shape, dtype=torch.float64) * torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64).reshape(
        (1, 3) + (1,) * (len(shape) - 2)) + 2.0
    y = norm(x)
    assert y.shape == x.shape
    dims = [0] + list(range(2, len(shape)))
    view = (1, 3) + (1,) * (len(shape) - 2)
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=0)
    expected = ((x - mean) / torch.sqrt(var + 1e-5) * norm.weight.reshape(view) + norm.bias.reshape(view)) * 0.7
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    # per channel after undoing the affine part: mean 0, variance ~1 (times scale^2)
    z = (y / 0.7 - norm.bias.reshape(view)) / norm.weight.reshape(view)
    torch.testing.assert_close(z.mean(dim=dims), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    n = x.numel() // 3
    assert torch.allclose(x.var(dim=dims, correction=0) / (x.var(dim=dims, correction=0) + 1e-5),
                          z.var(dim=dims, correction=0), rtol=1e-8)
    # running statistics: momentum 0.1 from (0, 1), unbiased variance as torch's BatchNorm
    torch.testing.assert_close(norm.running_mean, 0.1 * mean.flatten(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * var.flatten() * n / (n - 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(64, 3), (8, 3, 4, 5)])
def test_temporal_batch_norm_fold_in_eval(shape):
    torch.manual_seed(3)
    norm = TemporalBatchNorm(3, scale=1.3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.8, 1.7, -1.1]))
        norm.bias.copy_(torch.tensor([0.5, -0.4, 0.05]))
    for _ in range(5):
        norm(torch.randn(*shape, dtype=torch.float64) * 2 + 1)
    norm.eval()
    assert not torch.allclose(norm.running_mean, torch.zeros(3, dtype=torch.float64))
    gain, offset = norm.fold()
    assert gain.shape == offset.shape == (3,)
    y = torch.randn(*shape, dtype=torch.float64) * 3
    view = (1, 3) + (1,) * (len(shape) - 2)
    torch.testing.assert_close(norm(y), gain.reshape(view) * y + offset.reshape(view), rtol=0, atol=1e-6)
    # eval uses the running statistics, not the batch's
    expected = ((y - norm.running_mean.reshape(view)) / torch.sqrt(norm.running_var.reshape(view) + 1e-5)
                * norm.weight.reshape(view) + norm.bias.reshape(view)) * 1.3
    torch.testing.assert_close(norm(y), expected, rtol=0, atol=1e-10)


def test_builder_tdbn_scale_is_alpha_theta():
    model = build_model("conv:3c3-4", (2, 5, 5), 3, 2, NeuronOptions(threshold=0.6), norm="tdbn", tdbn_alpha=0.5)
    assert [b.norm.scale for b in model.blocks] == [pytest.approx(0.3)] * 2
    assert all(b.synapse.bias is None for b in model.blocks)
    model = build_model("mlp:4", (1, 2, 2), 3, 2, NeuronOptions(threshold=0.6), norm="bn")
    assert model.blocks[0].norm.scale == 1.0


def test_block_norm_statistics_span_time_and_batch():
    """In float training the BN statistics of a block are over (T, batch, space) per channel."""
    torch.manual_seed(4)
    model = build_model("conv:3c3", (2, 4, 4), 3, 3, norm="bn")
    block = model.blocks[0]
    x = torch.rand(3, 5, 2, 4, 4)  # [T, B, C, H, W], each step different
    currents, _ = block.currents(x, None, True, None)
    assert currents.shape == (3, 5, 3, 4, 4)
    torch.testing.assert_close(currents.mean(dim=(0, 1, 3, 4)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(currents.var(dim=(0, 1, 3, 4), correction=0), torch.ones(3), atol=1e-3, rtol=0)
    # not normalised per step
    assert currents.mean(dim=(1, 3, 4)).abs().max() > 1e-3


# ------------------------------------------------------------------ seed 003: surrogate width


GAMMAS = (0.5, 2.0, 8.0, 32.0, 100.0)


def _fast_sigmoid_mlp():
    """Seed 003's setting: BN on the input currents, fast-sigmoid surrogates."""
    torch.manual_seed(0)
    model = build_model("mlp:32-32-32-32", (1, 4, 4), 5, 4,
                        NeuronOptions(surrogate="fast_sigmoid", threshold=0.5), norm="bn")
    x = torch.rand(16, 1, 4, 4) * 2
    y = torch.randint(0, 5, (16,))
    return model, (lambda m: F.cross_entropy(m(x), y))


def test_gradient_balance_decreases_with_gamma():
    model, loss_of = _fast_sigmoid_mlp()
    balance = [gradient_balance(model, g, loss_of) for g in GAMMAS]
    assert all(math.isfinite(b) for b in balance), balance
    assert balance[0] > 0 > balance[-1], balance  # exploding at wide, vanishing at narrow surrogates
    assert balance[0] - balance[-1] > 2.0
    assert all(a > b for a, b in zip(balance, balance[1:])), balance
    assert all(n.surrogate.gamma == 100.0 for n in model.spiking_nodes())
    assert all(p.grad is None for p in model.parameters())


def _potential_gradient_means(model, loss_of):
    """Mean |dL/dI| per spiking layer, read with retain_grad on the currents each node receives."""
    seen = []

    def keep(module, args, output):
        args[0].retain_grad()
        seen.append(args[0])

    handles = [node.register_forward_hook(keep) for node in model.spiking_nodes()]
    model.zero_grad()
    loss_of(model).backward()
    for h in handles:
        h.remove()
    return [t.grad.abs().mean().item() for t in seen]


def test_gradient_balance_is_log_ratio_of_potential_gradients():
    """Seed 003 balances the loss gradient at the potentials (Eq. 10, Fig. 3), not weight gradients."""
    model, loss_of = _fast_sigmoid_mlp()
    b = gradient_balance(model, 4.0, loss_of)
    means = _potential_gradient_means(model, loss_of)
    assert len(means) == 4 and all(m > 0 for m in means)
    expected = math.log((sum(means[:2]) / 2) / (sum(means[2:]) / 2))
    assert b == pytest.approx(expected, rel=1e-5, abs=1e-6)
    weights = [blk.synapse.weight.grad.abs().mean().item() for blk in model.blocks]
    by_weights = math.log((sum(weights[:2]) / 2) / (sum(weights[2:]) / 2))
    assert abs(by_weights - b) > 1e-3  # a different quantity: the old measure would not pass


def test_tune_surrogate_width_bisects_to_balance():
    model, loss_of = _fast_sigmoid_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    low, high = 0.5, 100.0
    tuning = tune_surrogate_width(model, loss_of, low=low, high=high)
    gamma = tuning.gamma
    assert low <= gamma <= high and not tuning.at_bound and tuning.warning(low, high) is None
    assert tuning.balance_low > 0 > tuning.balance_high
    assert all(n.surrogate.gamma == gamma for n in model.spiking_nodes())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    at_gamma = abs(gradient_balance(model, gamma, loss_of))
    at_low = abs(gradient_balance(model, low, loss_of))
    at_high = abs(gradient_balance(model, high, loss_of))
    assert at_gamma < at_low and at_gamma < at_high, (at_gamma, at_low, at_high)
    assert at_gamma < 0.5
    assert tuning.balance == pytest.approx(gradient_balance(model, gamma, loss_of), rel=1e-6)


def test_tune_surrogate_width_says_when_it_ends_at_a_bound():
    model, loss_of = _fast_sigmoid_mlp()
    crossing = tune_surrogate_width(model, loss_of).gamma
    low, high = crossing * 4, crossing * 16  # the gradient vanishes everywhere in this range
    tuning = tune_surrogate_width(model, loss_of, low=low, high=high)
    assert tuning.at_bound and tuning.gamma == low
    assert tuning.balance_low < 0 and tuning.balance_high < 0
    line = tuning.warning(low, high)
    assert "\n" not in line and "low bound" in line
    assert f"{math.exp(tuning.balance_low):.3g}" in line and f"{math.exp(tuning.balance_high):.3g}" in line
    assert all(n.surrogate.gamma == low for n in model.spiking_nodes())
    wide = tune_surrogate_width(model, loss_of, low=crossing / 16, high=crossing / 4)
    assert wide.at_bound and wide.gamma == crossing / 4 and "high bound" in wide.warning(crossing / 16, crossing / 4)


def test_gradient_balance_needs_two_spiking_layers():
    model = build_model("mlp:8", (1, 2, 2), 3, 2, NeuronOptions(surrogate="fast_sigmoid"))
    with pytest.raises(ValueError, match="first and second half"):
        gradient_balance(model, 4.0, lambda m: m(torch.rand(2, 1, 2, 2)).sum())


def test_tune_surrogate_width_refuses_other_surrogates():
    model = build_model("mlp:8-8", (1, 2, 2), 3, 2)  # atan by default
    with pytest.raises(ValueError):
        tune_surrogate_width(model, lambda m: m(torch.rand(2, 1, 2, 2)).sum())
    mixed = build_model("mlp:8-8", (1, 2, 2), 3, 2, NeuronOptions(surrogate="fast_sigmoid"))
    mixed.blocks[1].node.surrogate = build_model("mlp:8", (1, 2, 2), 3, 2).blocks[0].node.surrogate
    with pytest.raises(ValueError):
        tune_surrogate_width(mixed, lambda m: m(torch.rand(2, 1, 2, 2)).sum())
    assert mixed.blocks[0].node.surrogate.gamma == 5.0  # refused before touching anything


# ------------------------------------------------------------------ seed 004: MP-Init


def test_mp_init_ema_of_final_potential_of_fired_neurons():
    torch.manual_seed(5)
    node = LIFNode(beta=0.5, threshold=1.0, v_init="mp_init").double()
    with torch.no_grad():
        node.mp_init.fill_(0.2)
    currents = torch.rand(4, 6, 9, dtype=torch.float64) * 1.4
    node.train()
    spikes = node(currents)
    _, s_hand, v_final, fired = hand_lif(currents, 0.5, 1.0, v0=0.2)  # v[0] = the old mp_init
    assert torch.equal(spikes, s_hand)
    assert fired.any() and (~fired).any()
    # neurons that fired late keep a non-zero final potential; the mean is over fired ones only
    expected = 0.9 * 0.2 + 0.1 * v_final[fired].mean().item()
    assert node.mp_init.item() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(0.9 * 0.2 + 0.1 * v_final.mean().item())

    # eval: the buffer does not change
    node.eval()
    value = node.mp_init.clone()
    node(currents * 1.3)
    assert torch.equal(node.mp_init, value)

    # v[0] = mp_init: with zero input the first potential is beta * mp_init (eval and train)
    node.record = True
    zero = torch.zeros(3, 2, 9, dtype=torch.float64)
    for mode in (False, True):
        node.train(mode)
        start = node.mp_init.item()
        node(zero)
        assert len(node.recorded_potentials) == 3
        torch.testing.assert_close(node.recorded_potentials[0], torch.full((2, 9), 0.5 * start, dtype=torch.float64))
        torch.testing.assert_close(node.recorded_potentials[1], torch.full((2, 9), 0.25 * start, dtype=torch.float64))
        # nobody fired: the EMA has nothing to average and keeps its value
        assert node.mp_init.item() == start


def test_mp_init_in_a_built_model():
    torch.manual_seed(6)
    model = build_model("mlp:16-8", (1, 2, 2), 3, 4, NeuronOptions(v_init="mp_init", threshold=0.3))
    x = torch.rand(8, 1, 2, 2) * 3
    model.train()
    model(x)
    values = [n.mp_init.item() for n in model.spiking_nodes()]
    assert any(v != 0.0 for v in values)
    assert "blocks.0.node.mp_init" in model.state_dict()
    model.eval()
    model(x)
    assert [n.mp_init.item() for n in model.spiking_nodes()] == values
    # zero-init nodes never touch it
    plain = build_model("mlp:16", (1, 2, 2), 3, 4, NeuronOptions(threshold=0.3))
    plain(x)
    assert plain.blocks[0].node.mp_init.item() == 0.0
