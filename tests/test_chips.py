"""Chip instances: sampled statistics match the profile, draws are reproducible and independent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurosim.device import DynamicNoise, LayerShape, load_profile, sample_chips
from neurosim.device.profile import DeviceProfile


def profile_with(**sections) -> DeviceProfile:
    data = {"name": "test", "description": "test chip", "neuron": {"decay": 0.5}, **sections}
    return DeviceProfile.model_validate(data)


def assert_mean_std(values: torch.Tensor, mean: float, std: float) -> None:
    """Sample mean within 5 standard errors; sample std within 5 of its standard errors."""
    x = values.double().flatten()
    n = x.numel()
    assert abs(x.mean().item() - mean) < 5 * std / math.sqrt(n) + 1e-12
    assert abs(x.std().item() - std) < 5 * std / math.sqrt(2 * (n - 1)) + 1e-12


# ------------------------------------------------------------------ statistics

def test_hardreset_noisy_absolute_sigmas():
    profile = load_profile("hardreset-noisy")
    chips = sample_chips(profile, {"a": LayerShape.linear(10, 500)}, n=40, seed=3)
    assert chips.thresholds("a").shape == (40, 500)
    assert_mean_std(chips.thresholds("a"), 1.0, 0.001)
    assert_mean_std(chips.resets("a"), 0.0, 0.007)
    # absolute: the spread does not grow with the nominal value
    assert_mean_std(chips.thresholds("a", nominal=4.0), 4.0, 0.001)
    assert torch.equal(chips.decays("a"), torch.full((40, 500), 0.5))


def test_analog_mismatch_relative_sigmas():
    profile = load_profile("analog-mismatch")
    chips = sample_chips(profile, {"a": LayerShape.linear(30, 400)}, n=30, seed=5)
    assert_mean_std(chips.thresholds("a"), 1.0, 0.1)
    # relative: sigma * |nominal| (seed 002's mismatch level xi)
    assert_mean_std(chips.thresholds("a", nominal=2.0), 2.0, 0.2)
    beta = profile.beta
    assert_mean_std(chips.decays("a"), beta, 0.1 * beta)
    w = torch.full((400, 30), 0.5)
    realised = chips.layers["a"].apply_weight(w, w_max=1.0)
    assert realised.shape == (30, 400, 30)
    assert_mean_std(realised, 0.5, 0.05)
    # the same relative pattern scales a different weight by the same gains
    gains = chips.layers["a"].apply_weight(torch.ones(400, 30), 1.0)
    assert torch.allclose(realised, 0.5 * gains)


def test_statistics_rows_report_measured_values():
    chips = sample_chips(load_profile("analog-mismatch"), {"h": LayerShape.linear(20, 300)}, n=20, seed=1)
    rows = {r["quantity"]: r for r in chips.statistics()}
    assert rows["v_threshold"]["sigma"] == pytest.approx(0.1)
    assert rows["v_threshold"]["std"] == pytest.approx(chips.thresholds("h").double().std().item())
    assert rows["weight_gain"]["count"] == 20 * 300 * 20
    assert abs(rows["weight_gain"]["std"] - 0.1) < 0.005


def test_decay_is_clamped_to_unit_interval():
    profile = profile_with(variation={"decay": {"sigma": 2.0, "relative": True}})
    d = sample_chips(profile, {"a": 1000}, n=4, seed=0).decays("a")
    assert d.min().item() == 0.0 and d.max().item() == 1.0
    assert ((d > 0) & (d < 1)).any()


def test_faults_rates_and_stuck_values():
    profile = profile_with(faults={"dead_neurons": 0.1, "stuck_weights": 0.05, "stuck_at": "random"})
    chips = sample_chips(profile, {"a": LayerShape.linear(100, 200)}, n=10, seed=9)
    var = chips.layers["a"]
    n_neurons, n_weights = 10 * 200, 10 * 200 * 100
    assert abs(var.dead.double().mean().item() - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n_neurons)
    assert abs(var.stuck.double().mean().item() - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n_weights)
    assert set(var.stuck_value.unique().tolist()) == {-1.0, 1.0}
    w = torch.zeros(200, 100)
    realised = var.apply_weight(w, w_max=0.5)
    assert torch.equal(realised[var.stuck], 0.5 * var.stuck_value[var.stuck])
    assert torch.equal(realised[~var.stuck], torch.zeros(int((~var.stuck).sum())))
    for stuck_at, value in (("zero", 0.0), ("max", 1.0), ("min", -1.0)):
        p = profile_with(faults={"stuck_weights": 0.5, "stuck_at": stuck_at})
        v = sample_chips(p, {"a": LayerShape.linear(4, 4)}, n=2, seed=0).layers["a"].stuck_value
        assert set(v.unique().tolist()) == {value}


def test_ideal_profile_stores_nothing_per_chip():
    chips = sample_chips(load_profile("ideal"), {"a": LayerShape.linear(784, 512)}, n=64, seed=0)
    var = chips.layers["a"]
    assert var.weight.z is None and var.v_threshold.z is None and var.dead is None
    assert chips.thresholds("a").shape == (64, 512)
    assert bool((chips.thresholds("a") == 1.0).all())


# ------------------------------------------------------------------ reproducibility

def test_same_seed_same_chips_other_seed_other_chips():
    profile = load_profile("analog-mismatch")
    shapes = {"a": LayerShape.linear(8, 16), "b": LayerShape.linear(16, 4)}
    one, two = sample_chips(profile, shapes, n=3, seed=11), sample_chips(profile, shapes, n=3, seed=11)
    other = sample_chips(profile, shapes, n=3, seed=12)
    for layer in shapes:
        assert torch.equal(one.thresholds(layer), two.thresholds(layer))
        assert torch.equal(one.layers[layer].weight.z, two.layers[layer].weight.z)
        assert not torch.equal(one.thresholds(layer), other.thresholds(layer))


def test_chip_k_of_a_batch_equals_chip_k_alone():
    profile = profile_with(variation={"v_threshold": {"sigma": 0.05}, "v_reset": {"sigma": 0.02},
                                      "decay": {"sigma": 0.1, "relative": True},
                                      "weight": {"sigma": 0.1, "relative": True}},
                           faults={"dead_neurons": 0.2, "stuck_weights": 0.2, "stuck_at": "random"})
    shapes = {"a": LayerShape.linear(6, 7), "b": LayerShape((2, 3, 3), (2, 1, 3, 3))}
    batch = sample_chips(profile, shapes, n=5, seed=42)
    for k in range(5):
        alone = sample_chips(profile, shapes, n=1, seed=42, start=k)
        picked = batch[k]
        assert picked.indices == alone.indices == (k,)
        for layer in shapes:
            mine, theirs = picked.layers[layer], alone.layers[layer]
            for name in ("v_threshold", "v_reset", "decay", "weight"):
                assert torch.equal(getattr(mine, name).z, getattr(theirs, name).z), (layer, name, k)
            assert torch.equal(mine.dead, theirs.dead)
            assert torch.equal(mine.stuck, theirs.stuck)
            assert torch.equal(mine.stuck_value, theirs.stuck_value)
    # a chip does not depend on which other layers are sampled with it
    only_b = sample_chips(profile, {"b": shapes["b"]}, n=5, seed=42)
    assert torch.equal(only_b.thresholds("b"), batch.thresholds("b"))
    # slicing keeps chip indices
    assert batch.select([1, 3]).indices == (1, 3)
    assert torch.equal(batch[1:3].thresholds("a"), batch.thresholds("a")[1:3])


def test_draws_are_pinned_across_machines():
    """PCG64 + SeedSequence are platform independent: these numbers must never change."""
    chips = sample_chips(load_profile("hardreset-noisy"), {"layer0": 3}, n=2, seed=0, dtype=torch.float64)
    z = chips.layers["layer0"].v_threshold.z
    expected = np.stack([
        np.random.Generator(np.random.PCG64(np.random.SeedSequence(0, spawn_key=(c, 0x095DFD7A, 0))))
        .standard_normal(3) for c in range(2)])
    # the spawn key is (chip, crc32(layer name), stream id)
    import zlib
    assert zlib.crc32(b"layer0") == 0x095DFD7A
    assert torch.equal(z, torch.from_numpy(expected))
    assert z[0].tolist() == pytest.approx(PINNED_CHIP0_LAYER0, abs=1e-15)


# recorded once (numpy PCG64 standard_normal of SeedSequence(0, spawn_key=(0, crc32("layer0"), 0)))
PINNED_CHIP0_LAYER0 = [-0.5651250327629308, 0.46867441395321646, -0.21478024290169398]


# ------------------------------------------------------------------ independence

def test_chips_layers_and_quantities_are_independent():
    profile = profile_with(variation={"v_threshold": {"sigma": 1.0}, "v_reset": {"sigma": 1.0}})
    chips = sample_chips(profile, {"a": 4000, "b": 4000}, n=3, seed=0, dtype=torch.float64)
    a, b = chips.layers["a"], chips.layers["b"]
    pairs = [(a.v_threshold.z[0], a.v_threshold.z[1]),   # chip 0 vs chip 1
             (a.v_threshold.z[1], a.v_threshold.z[2]),
             (a.v_threshold.z[0], a.v_reset.z[0]),       # threshold vs reset stream
             (a.v_threshold.z[0], b.v_threshold.z[0])]   # layer a vs layer b
    bound = 5 / math.sqrt(4000)
    for x, y in pairs:
        r = np.corrcoef(x.numpy(), y.numpy())[0, 1]
        assert abs(r) < bound


def test_bad_arguments_are_refused():
    profile = load_profile("ideal")
    for kwargs in ({"n": 0}, {"seed": -1}, {"seed": 1.5}, {"start": -2}, {"n": True}):
        with pytest.raises(ValueError):
            sample_chips(profile, {"a": 3}, **kwargs)


# ------------------------------------------------------------------ dynamic noise

def test_dynamic_noise_reproducible_per_step_and_chip():
    profile = load_profile("analog-mismatch")  # thermal sigma 0.05
    noise = DynamicNoise(profile, seed=7, chip_indices=[0, 1, 2])
    x1 = noise.draw("thermal", "a", step=0, shape=(64, 100))
    assert x1.shape == (3, 64, 100)
    assert torch.equal(x1, DynamicNoise(profile, 7, [0, 1, 2]).draw("thermal", "a", 0, (64, 100)))
    assert not torch.equal(x1, noise.draw("thermal", "a", step=1, shape=(64, 100)))
    assert not torch.equal(x1, noise.draw("thermal", "a", step=0, shape=(64, 100), batch=1))
    assert not torch.equal(x1[0], x1[1])
    alone = DynamicNoise(profile, 7, [2]).draw("thermal", "a", 0, (64, 100))
    assert torch.equal(alone[0], x1[2])
    assert_mean_std(x1, 0.0, 0.05)


def test_dynamic_noise_perturb_and_absent_noise():
    profile = profile_with(noise={"thermal": {"sigma": 0.1}, "v_threshold": {"sigma": 0.2, "relative": True}})
    noise = DynamicNoise(profile, 0, [0, 1])
    current = torch.ones(2, 8, 50)
    noisy = noise.perturb("thermal", "a", 3, current)
    assert torch.allclose(noisy - current, noise.draw("thermal", "a", 3, (8, 50)), atol=1e-6)
    theta = torch.full((2, 50), 2.0)
    rel = noise.perturb("v_threshold", "a", 0, theta)
    assert torch.allclose(rel, theta * (1 + noise.draw("v_threshold", "a", 0, (50,))))
    assert noise.draw("read", "a", 0, (4,)) is None
    assert noise.perturb("read", "a", 0, current) is current
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise.draw("shot", "a", 0, (4,))


def test_scaled_profile_scales_the_same_pattern():
    profile = load_profile("hardreset-noisy")
    base = sample_chips(profile, {"a": 50}, n=2, seed=4)
    double = sample_chips(profile.scaled(2.0), {"a": 50}, n=2, seed=4)
    assert torch.allclose(double.thresholds("a") - 1.0, 2 * (base.thresholds("a") - 1.0), atol=1e-6)
    zero = sample_chips(profile.scaled(0.0), {"a": 50}, n=2, seed=4)
    assert bool((zero.thresholds("a") == 1.0).all())
