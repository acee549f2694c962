"""The engine's compiled neuron loop (neurosim.engine.fused) gives the same integers as its tensor
steps: spikes, logits, every count and energy, on the chip rules the loop covers, with chips run
as differences from chip 0. The loop is also checked against the slow reference on every random
case of tests/test_reference.py (its ``compare``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurosim.device import load_profile, sample_chips
from neurosim.device.profile import DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.engine import fused
from neurosim.export import compile_model
from neurosim.nn import build_model
from neurosim.train import TrainConfig
from neurosim.train.trainer import neuron_options, readout_beta

from test_reference import assert_same_results


def variant(name: str = "hardreset-noisy", **changes) -> DeviceProfile:
    """A built-in profile with some sections changed (``neuron={...}`` merges into ``neuron``)."""
    spec = load_profile(name).to_dict()
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(section), dict):
            spec[section] = {**spec[section], **value}
        else:
            spec[section] = value
    return DeviceProfile.model_validate(spec)


def spiking_model(profile: DeviceProfile, spec: str, input_shape, classes: int = 5, timesteps: int = 6,
                  gain: float = 3.0, neuron: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    config = TrainConfig(neuron=neuron or {})
    model = build_model(spec, input_shape, classes, timesteps, neuron_options(config, profile),
                        readout_beta=readout_beta(profile))
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(gain)
    return model.eval()


def run_both(profile, model, x, n_chips=5, seed=3, batch=2, monkeypatch=None, deployment=None):
    """The engine with the compiled loop and with tensor steps only (on ``model`` compiled for
    ``profile``, or on ``deployment``); returns both results and how many layers the loop ran
    (and how many by differences from chip 0)."""
    deployment = deployment or compile_model(model, profile, adapt=True)
    chips = sample_chips(profile, deployment_shapes(deployment), n=n_chips, seed=seed)
    calls = {"layers": 0, "by_difference": 0}
    run_layer, by_difference = fused.run_layer, fused.currents_by_difference

    def counted(*args, **kwargs):
        calls["layers"] += 1
        calls["by_difference"] += kwargs.get("inputs") is not None
        return run_layer(*args, **kwargs)

    def counted_currents(*args, **kwargs):
        calls["by_difference"] += 1
        return by_difference(*args, **kwargs)

    monkeypatch.setattr(fused, "run_layer", counted)
    monkeypatch.setattr(fused, "currents_by_difference", counted_currents)
    got = IntegerEngine(deployment, chips).run(x, batch=batch, record=True)
    want = IntegerEngine(deployment, chips, fused=False).run(x, batch=batch, record=True)
    return got, want, calls


DENSE_CASES = {
    "hardreset-noisy": variant(),
    "multiply decay, toward zero": variant(neuron={"decay": 0.8},
                                           numerics={"decay": {"kind": "multiply", "bits": 8,
                                                               "rounding": "toward_zero"}}),
    "shift decay, nonzero step": variant(numerics={"decay": {"kind": "shift", "shift": 2, "nonzero_step": True}}),
    "soft reset": variant(neuron={"reset": "soft"}),
    "symmetric saturation": variant(numerics={"overflow": "saturate_symmetric", "membrane_bits": 10}),
    "noise and faults": variant(noise={"thermal": {"sigma": 0.05}, "v_threshold": {"sigma": 0.02}},
                                faults={"dead_neurons": 0.2, "stuck_weights": 0.1, "stuck_at": "random"}),
    "decay variation": variant(variation={"decay": {"sigma": 0.05}, "v_threshold": {"sigma": 0.01},
                                          "v_reset": {"sigma": 0.01}}),
    "synaptic delay": variant(neuron={"synapse_delay": 1}),
}


@pytest.mark.parametrize("case", list(DENSE_CASES))
def test_dense_layers_match_tensor_steps(case, monkeypatch):
    profile = DENSE_CASES[case]
    gain = 40.0 if case == "symmetric saturation" else 3.0
    model = spiking_model(profile, "mlp:37-21", (1, 5, 5), gain=gain)  # 25 and 37 inputs: not whole words
    x = torch.rand(7, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    got, want, calls = run_both(profile, model, x, monkeypatch=monkeypatch)
    assert calls["layers"] == 2, calls  # both hidden layers ran in the compiled loop
    if profile.faults.stuck_weights == 0:  # stuck weights differ per chip: a GEMM per chip
        assert calls["by_difference"] == 2, calls  # the second layer and the readout from chip 0's GEMM
    assert_same_results(got, want)
    assert float(sum(c.spikes.sum() for c in want.counts.values())) > 0
    if case == "symmetric saturation":
        assert float(sum(c.saturations.sum() for c in want.counts.values())) > 0


def test_if_neurons_keep_their_state(monkeypatch):
    """beta = 1 (an IF neuron: no decay at all, which a shift cannot express) on a shift chip."""
    profile = variant()
    model = spiking_model(profile, "mlp:30", (1, 4, 4), neuron={"beta": 1.0}, gain=1.0)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    got, want, calls = run_both(profile, model, x, monkeypatch=monkeypatch)
    assert calls["layers"] == 1
    assert_same_results(got, want)


def test_convolutions_with_pooling(monkeypatch):
    profile = variant(noise={"thermal": {"sigma": 0.02}})
    model = spiking_model(profile, "conv:4c3-mp2-6c3-12", (1, 8, 8), gain=2.0)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    got, want, calls = run_both(profile, model, x, n_chips=3, monkeypatch=monkeypatch)
    assert calls["layers"] == 3, calls
    assert_same_results(got, want)


def test_per_channel_parameters_of_convolutions(monkeypatch):
    """Per-channel units make thresholds, resets and initial states per channel (``[channels,
    1, 1]``): the loop broadcasts them over the output like the tensor steps (a bug hypothesis
    found in tests/test_reference.py: a per-channel v_init read as per-chip rows)."""
    profile = variant(numerics={"weight_scale": "per_channel"},  # thresholds per channel, not per chip
                      variation={"v_threshold": None, "v_reset": None})
    model = spiking_model(profile, "conv:4c3-6c3-12", (1, 6, 6), gain=2.0)
    deployment = compile_model(model, profile, adapt=True)
    for layer in deployment.layers[:-1]:
        layer.v_init = -0.4
    assert deployment.layers[0].unit.numel() == 4  # one unit per output channel
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    got, want, calls = run_both(profile, None, x, n_chips=3, monkeypatch=monkeypatch, deployment=deployment)
    assert calls["layers"] == 3, calls
    assert_same_results(got, want)
    assert float(sum(c.spikes.sum() for c in want.counts.values())) > 0


def test_many_chips_in_blocks(monkeypatch):
    """More chips than a block holds: the blocks' results join into the same result."""
    profile = variant()
    model = spiking_model(profile, "mlp:16", (1, 4, 4))
    deployment = compile_model(model, profile, adapt=True)
    chips = sample_chips(profile, deployment_shapes(deployment), n=7, seed=0)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    blocked = IntegerEngine(deployment, chips, block=3)
    assert len(blocked.blocks) == 3
    assert_same_results(blocked.run(x, record=True), IntegerEngine(deployment, chips, fused=False).run(x, record=True))


def test_layers_outside_the_loop_use_tensor_steps():
    """Synaptic states, recurrent weights, several spikes a step, refractory periods and wrapping
    membranes are not the loop's: those layers keep the tensor steps."""
    cases = {
        "xylo-like": (load_profile("xylo-like"), "mlp:8"),  # current-based, several spikes a step
        "recurrent": (variant(), "mlp:8r"),
        "wrap": (variant(numerics={"overflow": "wrap"}), "mlp:8"),
        "refractory": (variant(neuron={"refractory": 2}), "mlp:8"),
    }
    for name, (profile, spec) in cases.items():
        deployment = compile_model(spiking_model(profile, spec, (1, 4, 4)), profile, adapt=True)
        engine = IntegerEngine(deployment)
        assert not engine.layers[0].fusable, name
    deployment = compile_model(spiking_model(variant(), "mlp:8", (1, 4, 4)), variant(), adapt=True)
    assert IntegerEngine(deployment).layers[0].fusable


@pytest.mark.parametrize("inputs_, outputs, steps", [(5, 3, 1), (64, 70, 3), (61, 10, 2), (700, 4, 1)])
def test_currents_by_difference_equal_a_gemm_per_chip(inputs_, outputs, steps):
    """Chip 0's currents plus the others' input differences equal W x per chip, for inputs that
    fill no whole 64-bit word, exactly one, and many."""
    rng = np.random.default_rng(inputs_)
    chips, batch = 5, 3
    x = (rng.random((steps, 1, batch, inputs_)) < 0.3).repeat(chips, 1)
    flip = rng.random((steps, chips, batch, inputs_)) < 0.05
    flip[:, 0] = False
    x ^= flip
    x[:, 3] = False  # a chip without any input
    x[:, 4] = True  # and one with every input
    weight_t = torch.from_numpy(rng.integers(-127, 128, (inputs_, outputs)).astype(np.float32))
    inputs = torch.from_numpy(x.astype(np.uint8))
    reference = inputs[:, :1].to(torch.float32) @ weight_t
    currents, active = fused.currents_by_difference(reference, inputs, weight_t)
    expected = inputs.to(torch.float64) @ weight_t.to(torch.float64)
    assert torch.equal(currents.to(torch.float64), expected)
    assert torch.equal(active, inputs.sum((0, 2, 3)).to(torch.float64))
    assert float(active[3]) == 0 and float(active[4]) == steps * batch * inputs_
    packed = fused.pack(inputs)
    assert torch.equal(packed.unpack(), inputs)
    assert torch.equal(packed.chip(2).unpack(), inputs[:, 2:3])
    with pytest.raises(ValueError, match="0/1"):
        fused.pack(inputs * 2)
