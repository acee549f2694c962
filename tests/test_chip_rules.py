"""Chip rules in training and in the engine (issue 9): bias on the membrane, recurrent hidden
layers, spike counts, per-source delivery, add-then-decay, the increment membrane update,
activation shifts, delays and the lif readout. Parity (docs/design.md §4): the fake-quant training
forward and the integer engine give the same spikes on every layer and step, and the same logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from neurosim.cli import main
from neurosim.device import DynamicNoise, load_profile, sample_chips
from neurosim.device import quantization as quant
from neurosim.device.profile import DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.errors import ExportError
from neurosim.export import compile_model, load_deployment
from neurosim.nn import build_model, parse_spec
from neurosim.nn.builder import NeuronOptions
from neurosim.nn.layers import SpikingBlock
from neurosim.nn.neuron import LIFNode
from neurosim.nn.surrogate import Surrogate
from neurosim.train import ChipContext, TrainConfig
from neurosim.train.trainer import neuron_options, readout_beta

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


# ------------------------------------------------------------------ helpers

def chip_model(profile: DeviceProfile, spec: str, input_shape=(1, 4, 4), classes=6, timesteps=5, gain=3.0,
               seed=0, threshold=None):
    """A model with the profile's neuron model, weights scaled by ``gain`` so that it spikes."""
    torch.manual_seed(seed)
    config = TrainConfig(neuron={} if threshold is None else {"threshold": threshold})
    model = build_model(spec, input_shape, classes, timesteps, neuron_options(config, profile),
                        readout_beta=readout_beta(profile))
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(gain)
            if profile.numerics.activation_shift:  # Loihi: 13-bit mantissas << bias_exp 0..7 in a 2^6 finer unit
                block.synapse.bias.mul_(0.3)
            if block.recurrent is not None:
                block.recurrent.weight.mul_(gain)
        if profile.numerics.activation_shift:
            model.readout.synapse.bias.mul_(0.3)
    return model.eval()


def forward_recorded(model, x, ctx):
    """Logits, per-layer spikes and the lif readout's spikes of the training forward."""
    for module in [*model.blocks, model.readout]:
        module.record = True
    try:
        logits = model(x, ctx)
        spikes = {block.name: block.recorded_spikes for block in model.blocks}
        if model.readout.recorded_spikes is not None:
            spikes["readout"] = model.readout.recorded_spikes
    finally:
        for module in [*model.blocks, model.readout]:
            module.record = False
    return logits, spikes


def parity(model, profile, x, n_chips=2, seed=5, batch=3):
    """Engine vs training forward on ``n_chips`` chips: every layer's spikes (counts) at every
    step and the logits equal; returns the engine result, the spikes compared and the training
    forward's saturation events."""
    deployment = compile_model(model, profile)
    chips = sample_chips(profile, deployment_shapes(deployment), n=n_chips, seed=seed)
    result = IntegerEngine(deployment, chips).run(x, batch=batch, record=True)
    total, events = 0, 0.0
    for k in range(n_chips):
        ctx = ChipContext(profile, chips[k], DynamicNoise(profile, seed, chips[k].indices), batch=batch,
                          count_events=True)
        with torch.no_grad():
            logits, spikes = forward_recorded(model, x, ctx)
        assert set(spikes) <= set(result.spikes), (set(spikes), set(result.spikes))
        for name, s in spikes.items():
            engine = result.spikes[name][:, k].to(s.dtype)
            assert engine.shape == s.shape, (name, engine.shape, s.shape)
            if not torch.equal(engine, s):
                where = (engine != s).nonzero()[0].tolist()
                raise AssertionError(f"chip {k} layer {name}: spikes differ first at [t, batch, neuron] = {where}: "
                                     f"engine {engine[tuple(where)].item()}, training {s[tuple(where)].item()}")
            total += int(s.sum())
        assert torch.equal(logits, result.logits[k]), (k, logits, result.logits[k])
        for name, counted in ctx.events.items():  # saturation / wrap events, counted alike
            assert float(counted) == float(result.counts[name].saturations[k]), (k, name, float(counted),
                                                                                float(result.counts[name].saturations[k]))
        events += sum(float(v) for v in ctx.events.values())
    return result, total, events


def with_rules(base: str, **changes) -> DeviceProfile:
    """Profile ``base`` with sections updated (``neuron={...}``, ``numerics={...}``)."""
    data = load_profile(base).to_dict()
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    return DeviceProfile.model_validate(data)


# ------------------------------------------------------------------ spec grammar

def test_recurrent_specs_parse_and_build():
    assert parse_spec("mlp:16r-8") == ("mlp", [("dense", 16, True), ("dense", 8, False)])
    assert parse_spec("rmlp:16-8") == ("mlp", [("dense", 16, True), ("dense", 8, True)])
    model = build_model("mlp:16r-8", (1, 4, 4), 3, 4)
    assert model.blocks[0].recurrent.weight.shape == (16, 16) and model.blocks[0].recurrent.bias is None
    assert model.blocks[1].recurrent is None
    assert model.blocks[0].node.recurrent and not model.blocks[0].node.fusable(None)
    assert model.blocks[1].node.fusable(None)
    with pytest.raises(ValueError):
        parse_spec("conv:4c3r")


# ------------------------------------------------------------------ bias on the membrane

def test_bias_joins_the_membrane_of_a_current_based_neuron():
    """docs/design.md §2: i[t] = alpha i[t-1] + W x[t]; u[t] = beta v[t-1] + i[t] + bias. A constant
    bias b with zero input gives u[t] = b (1 + beta + ...) without spikes, not the synapse's
    b (1 + alpha + ...) build-up."""
    block = SpikingBlock(torch.nn.Linear(2, 1).double(), LIFNode(beta=0.5, threshold=100.0, synapse_decay=0.9))
    with torch.no_grad():
        block.synapse.weight.zero_()
        block.synapse.bias.fill_(1.0)
    block.node.record = True
    block(torch.zeros(4, 1, 2, dtype=F64))
    u = [float(p.detach()) for p in block.node.recorded_potentials]
    assert u == pytest.approx([1.0, 1.5, 1.75, 1.875])


def test_bias_outside_a_plain_lif_gives_the_same_numbers_as_before():
    """Without a synaptic state the bias may join the current: the fused float path is untouched."""
    torch.manual_seed(1)
    model = build_model("mlp:12-6", (1, 4, 4), 3, 4, NeuronOptions(threshold=0.3))
    x = torch.rand(5, 1, 4, 4)
    assert model.blocks[0].node.fusable(None)
    expected = model(x)
    for block in model.blocks:
        block.node.record = True  # not fusable: the step loop
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ gradients

class _SmoothSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return torch.sigmoid(4.0 * x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


class SmoothSigmoid(Surrogate):
    """Forward sigmoid(4 x) instead of H(x), backward through ``derivative``: the forward is
    differentiable, so autograd can be checked against finite differences."""

    def derivative(self, x):
        sg = torch.sigmoid(4.0 * x)
        return 4.0 * sg * (1 - sg)

    def forward(self, x):
        return _SmoothSpike.apply(x, self)


@pytest.mark.parametrize("synapse_decay", [None, 0.6])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_recurrent_gradients_match_finite_differences(synapse_decay, reset):
    torch.manual_seed(3)
    node = LIFNode(beta=0.7, threshold=0.8, reset=reset, reset_grad="full", surrogate=SmoothSigmoid(),
                   synapse_decay=synapse_decay)
    block = SpikingBlock(torch.nn.Linear(3, 4), node, recurrent=torch.nn.Linear(4, 4, bias=False)).double()
    x = torch.rand(6, 2, 3, dtype=F64)
    weights = (block.synapse.weight.detach().clone(), block.synapse.bias.detach().clone(),
               block.recurrent.weight.detach().clone())

    def loss(w, b, w_rec, inputs):
        with torch.no_grad():
            for p in (block.synapse.weight, block.synapse.bias, block.recurrent.weight):
                p.zero_()
        return torch.func.functional_call(block, {"synapse.weight": w, "synapse.bias": b, "recurrent.weight": w_rec},
                                          (inputs,)).mul(torch.arange(1, 5, dtype=F64)).sum()

    args = tuple(t.requires_grad_(True) for t in (*weights, x.clone()))
    assert torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-6, rtol=1e-5)
    # the recurrence is in the gradient: without it the weights' gradients differ
    grads = torch.autograd.grad(loss(*args), args[:2])
    plain = SpikingBlock(torch.nn.Linear(3, 4), LIFNode(beta=0.7, threshold=0.8, reset=reset, reset_grad="full",
                                                        surrogate=SmoothSigmoid(), synapse_decay=synapse_decay)).double()
    out = torch.func.functional_call(plain, {"synapse.weight": args[0], "synapse.bias": args[1]}, (args[3],))
    plain_grads = torch.autograd.grad(out.mul(torch.arange(1, 5, dtype=F64)).sum(), args[:2])
    assert (grads[0] - plain_grads[0]).abs().max() > 1e-4


def test_spike_counts_carry_the_gradient_of_one_spike():
    """max_spikes > 1: the forward gives n = min(max, floor(u / theta)) and subtracts n theta;
    the backward is the surrogate's, as for one spike."""
    profile = with_rules("xylo-like")
    model = chip_model(profile, "mlp:8", gain=12.0, threshold=0.05)
    ctx = ChipContext(profile)
    x = torch.rand(4, 1, 4, 4)
    logits, spikes = forward_recorded(model, x, ctx)
    assert spikes["block0"].max() > 1
    logits.sum().backward()
    grad = model.blocks[0].synapse.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------------------ compile

def test_compile_writes_recurrent_weights_and_the_chip_rules():
    profile = load_profile("xylo-like")
    model = chip_model(profile, "mlp:12r-8")
    deployment = compile_model(model, profile)
    hidden, readout = deployment.layers[0], deployment.layers[-1]
    assert hidden.recurrent is not None and hidden.recurrent.shape == (12, 12)
    assert hidden.max_spikes == 31 and hidden.delay == 0
    assert (readout.readout_neuron, readout.delay, readout.max_spikes) == ("lif", 1, 1)
    assert readout.synapse_decay == pytest.approx(0.75) and readout.threshold == model.readout.threshold
    # the shift: the smallest of the chip's range [0, 7] whose codes fit 8 bits
    shift = hidden.recurrent_shift
    scaled = model.blocks[0].recurrent.weight.detach().abs().max() / float(hidden.unit.max())
    assert round(float(scaled) / 2 ** shift) <= 127
    assert shift == 0 or round(float(scaled) / 2 ** (shift - 1)) > 127
    assert int(hidden.recurrent.abs().max()) <= 127
    loihi = load_profile("loihi-like")
    deployment = compile_model(chip_model(loihi, "mlp:12-8"), loihi)
    first = deployment.layers[0]
    # activation_shift 6: the state unit is 2^6 finer than weight step x input step
    assert first.delay == 1 and deployment.layers[-1].delay == 1
    assert quant.threshold_codes(torch.tensor(first.threshold), first.unit, loihi.numerics).max() <= \
        quant.threshold_ceiling(loihi.numerics)


# ------------------------------------------------------------------ parity with the engine

PROFILES = ["xylo-like", "loihi-like", "hardreset-noisy"]


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("spec", ["mlp:12-8", "mlp:12r-8r"])
def test_training_forward_matches_the_engine(name, spec):
    profile = load_profile(name)
    model = chip_model(profile, spec, gain=4.0, threshold=0.3 if name == "loihi-like" else None)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(6, 1, 4, 4, generator=gen)
    result, total, _ = parity(model, profile, x)
    assert total > 0


@pytest.mark.parametrize("name", PROFILES)
def test_parity_with_frames(name):
    """Frames (one input per step) through delays and recurrence."""
    profile = load_profile(name)
    model = chip_model(profile, "mlp:10r", gain=4.0, seed=2, threshold=0.3 if name == "loihi-like" else None)
    x = (torch.rand(4, 5, 1, 4, 4, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    if name == "loihi-like":
        x = x * 0.2
    _, total, _ = parity(model, profile, x)
    assert total > 0


def test_parity_where_per_source_saturation_and_spike_counts_matter():
    """Small thresholds and large weights on xylo-like: 16-bit synaptic states saturate on the
    way (so the per-source order shows) and neurons fire several spikes a step."""
    profile = load_profile("xylo-like")
    model = chip_model(profile, "mlp:12r-8", gain=40.0, threshold=0.02, seed=4)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    result, total, events = parity(model, profile, x)
    assert int(result.spikes["block0"].max()) > 1  # multi-spike steps happened
    assert sum(float(c.saturations.sum()) for c in result.counts.values()) > 0 and events > 0


def test_per_source_order_differs_from_one_sum():
    """The case above is one where delivering source by source gives other integers than one
    saturated sum (else it would not test the rule)."""
    profile = load_profile("xylo-like")
    model = chip_model(profile, "mlp:12r-8", gain=40.0, threshold=0.02, seed=4)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    summed = with_rules("xylo-like", numerics={"accumulate": "sum"})
    with torch.no_grad():
        _, per_source = forward_recorded(model, x, ChipContext(profile))
        _, one_sum = forward_recorded(model, x, ChipContext(summed))
    assert any(not torch.equal(per_source[k], one_sum[k]) for k in per_source)


@pytest.mark.parametrize("spec", ["mlp:12r-8", "mlp:12-8"])
def test_parity_with_variation_noise_and_faults_on_every_layer_and_the_lif_readout(spec):
    """The lif readout is a neuron of the chip: its threshold, decays, thermal and threshold
    noise, dead neurons and stuck weights vary per chip as a hidden layer's do."""
    profile = with_rules("xylo-like", variation={"v_threshold": {"sigma": 0.05}, "decay": {"sigma": 0.1, "relative": True}},
                         noise={"thermal": {"sigma": 0.05}, "v_threshold": {"sigma": 0.02}},
                         faults={"dead_neurons": 0.1, "stuck_weights": 0.05, "stuck_at": "random"})
    model = chip_model(profile, spec, gain=10.0, threshold=0.1, seed=6)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    result, total, _ = parity(model, profile, x, n_chips=3)
    assert total > 0 and int(result.spikes["readout"].sum()) > 0


@pytest.mark.parametrize("rules", [
    {"numerics": {"synapse_update": "decay_then_add", "membrane_update": "sum"}},
    {"numerics": {"accumulate": "sum", "membrane_update": "increment"}},
    {"readout": {"neuron": "integrator", "delay": 0}, "neuron": {"max_spikes": 3, "synapse_delay": 2}},
])
def test_parity_for_each_rule_alone(rules):
    profile = with_rules("xylo-like", **rules)
    model = chip_model(profile, "mlp:12r-8", gain=10.0, threshold=0.1, seed=6)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    _, total, _ = parity(model, profile, x)
    assert total > 0


# ------------------------------------------------------------------ training run, export, run

def test_cli_trains_a_recurrent_model_that_exports_and_runs(tmp_path, capsys):
    """``neurosim train`` (in process: the same entry point, one interpreter start fewer), ``export``
    and ``neurosim run`` (a subprocess) on a recurrent model of the digits."""
    run, art = tmp_path / "run", tmp_path / "art"
    assert main(["train", "--model", "rmlp:24", "--epochs", "2", "--eval-chips", "2", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert main(["export", str(run), "--out", str(art)]) == 0
    deployment = load_deployment(art)
    assert deployment.layers[0].recurrent is not None
    assert int(np.abs(deployment.layers[0].recurrent.numpy()).max()) > 0
    capsys.readouterr()
    result = subprocess.run([sys.executable, "-m", "neurosim", "run", str(art), "--chips", "2"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    # the integer engine on the evaluation's chips gives the accuracy the training forward measured
    assert f"accuracy {metrics['test_accuracy_noisy']:.4f} +- {metrics['test_accuracy_noisy_std']:.4f}" in result.stdout


# ------------------------------------------------------------------ random rule combinations

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(current_based=st.booleans(), soft=st.booleans(), max_spikes=st.integers(1, 4),
       accumulate=st.sampled_from(["sum", "per_source"]),
       synapse_update=st.sampled_from(["decay_then_add", "add_then_decay"]),
       membrane_update=st.sampled_from(["sum", "increment"]), activation_shift=st.integers(0, 3),
       delay=st.integers(0, 2), readout_delay=st.integers(0, 2), lif_readout=st.booleans(),
       overflow=st.sampled_from(["saturate", "wrap", "saturate_symmetric"]), membrane_bits=st.integers(11, 16),
       shifts=st.sampled_from([None, (0, 3), (-2, 3)]), spec=st.sampled_from(["mlp:8r-6", "mlp:8-6r", "rmlp:7"]),
       gain=st.floats(2.0, 30.0), threshold=st.sampled_from([0.05, 0.3, 1.0]), seed=st.integers(0, 1000))
def test_parity_property_over_rule_combinations(current_based, soft, max_spikes, accumulate, synapse_update,
                                                membrane_update, activation_shift, delay, readout_delay,
                                                lif_readout, overflow, membrane_bits, shifts, spec, gain,
                                                threshold, seed):
    numerics = {"weight_bits": 6, "weight_scale": "power_of_two", "membrane_bits": membrane_bits,
                "input_bits": 5, "decay": {"kind": "shift", "shift": 2, "nonzero_step": True},
                "overflow": overflow, "accumulate": accumulate, "synapse_update": synapse_update,
                "membrane_update": membrane_update, "activation_shift": activation_shift}
    if shifts is not None:
        numerics["weight_shift"] = {"min": shifts[0] if accumulate == "sum" else 0, "max": shifts[1]}
    neuron = {"reset": "soft" if soft else "hard", "max_spikes": max_spikes if soft else 1,
              "synapse_delay": delay}
    if current_based:
        neuron["synapse_decay"] = 0.75
        numerics.update(synapse_bits=membrane_bits, synapse_decay={"kind": "shift", "shift": 2})
    profile = DeviceProfile.model_validate({
        "name": "rules", "description": "random rules", "neuron": neuron, "numerics": numerics,
        "readout": {"neuron": "lif" if lif_readout else "integrator", "delay": readout_delay},
        "noise": {"thermal": {"sigma": 0.02}}})
    model = chip_model(profile, spec, input_shape=(1, 3, 3), classes=4, timesteps=5, gain=gain, seed=seed,
                       threshold=threshold)
    x = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(seed))
    try:
        compile_model(model, profile)
    except ExportError as exc:  # a model this chip cannot hold (e.g. a bias beyond its bits)
        assume("bias" not in str(exc) and "threshold needs" not in str(exc))
        raise
    parity(model, profile, x, n_chips=1, seed=seed)
