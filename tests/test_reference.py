"""The slow per-neuron reference agrees with the vectorised integer engine bit for bit
(docs/design.md §4 "Reference"): spikes of every layer and step, logits (exact float32 equality) and
saturation counts, on random deployments, random number formats, random chips (variation,
faults, dynamic noise) and the built-in fixed-point profiles."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device import load_profile, sample_chips
from neurosim.device.profile import DecayFormat, DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.engine import reference as ref
from neurosim.engine.reference import reference_run
from neurosim.engine.engine import count_synaptic_ops
from neurosim.errors import ExportError
from neurosim.export.compile import check_deployment
from neurosim.export.deployment import Deployment

SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
N_CHIPS = 3
# more examples for a long bug hunt: NEUROSIM_REFERENCE_EXAMPLES=20 runs 20x as many
SCALE = float(os.environ.get("NEUROSIM_REFERENCE_EXAMPLES", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


def event(what: str) -> None:
    """Note what an example exercised (shown by pytest --hypothesis-show-statistics)."""
    if currently_in_test_context():
        hypothesis_event(what)


SIGMAS = (0.0, 0.05, 0.3, 1.0)
UNITS = (0.25, 0.3, 0.5, 0.75, 0.9, 1.0)  # ratio <= 4 between channels


# ------------------------------------------------------------------ comparison


def compare(deployment: Deployment, x: np.ndarray, chips=None, batch: int = 0, noise: bool = True):
    """Run the engine on all chips and the reference on each; assert bit-for-bit equality.
    Returns the engine's result."""
    engine = IntegerEngine(deployment, chips, noise=noise)
    result = engine.run(torch.from_numpy(x), batch=batch, record=True, record_states=True)
    n_chips = 1 if chips is None else len(chips)
    assert result.logits.shape[0] == n_chips
    for c in range(n_chips):
        expected = reference_run(deployment, x, chips, chip_position=c, batch=batch, noise=noise)
        for layer in deployment.layers[:-1]:
            got = result.spikes[layer.name][:, c].numpy().astype(np.int64)
            want = expected["spikes"][layer.name]
            assert got.shape == want.shape, (layer.name, got.shape, want.shape)
            if not np.array_equal(got, want):
                t, *where = np.argwhere(got != want)[0]
                raise AssertionError(f"chip {c}, layer {layer.name}: first spike mismatch at step {t}, "
                                     f"index {tuple(where)}: engine {got[(t, *where)]}, reference "
                                     f"{want[(t, *where)]}")
        for layer in deployment.layers:  # membrane (after the reset) and synaptic state, every step
            for what, want in expected["states"][layer.name].items():
                got = result.states[layer.name][what][:, c].numpy()
                if not np.array_equal(got, want):
                    t, *where = np.argwhere(got != want)[0]
                    raise AssertionError(f"chip {c}, layer {layer.name}: state {what} differs first at step {t}, "
                                         f"index {tuple(where)}: engine {got[(t, *where)]}, reference "
                                         f"{want[(t, *where)]}")
        if deployment.layers[-1].readout_neuron == "lif":
            got = result.spikes["readout"][:, c].numpy().astype(np.int64)
            assert np.array_equal(got, expected["spikes"]["readout"]), f"chip {c}: readout spikes differ"
        want_logits = np.stack(expected["logits"]).astype(np.float32)
        got_logits = result.logits[c].numpy().astype(np.float32)
        assert got_logits.shape == want_logits.shape
        assert np.array_equal(got_logits.view(np.uint32), want_logits.view(np.uint32)), \
            f"chip {c}: logits engine {got_logits.tolist()} vs reference {want_logits.tolist()}"
        for layer in deployment.layers:
            assert int(result.counts[layer.name].saturations[c]) == expected["saturations"][layer.name], \
                f"chip {c}, layer {layer.name}: saturation counts differ"
    # recording states runs every layer through tensor steps; without it the compiled loop runs
    # the layers it covers (neurosim.engine.fused): the same spikes, logits and counts
    compiled = IntegerEngine(deployment, chips, noise=noise).run(torch.from_numpy(x), batch=batch, record=True)
    assert_same_results(compiled, result)
    if any(layer.fusable for layer in engine.layers):
        event("compiled loop")
    # what the example exercised (pytest --hypothesis-show-statistics)
    spikes = sum(int(result.counts[layer.name].spikes.sum()) for layer in deployment.layers[:-1])
    event("spikes" if spikes else "no spikes")
    if sum(int(c.saturations.sum()) for c in result.counts.values()):
        event(f"{deployment.profile.numerics.overflow} events")
    for layer in engine.layers[:-1]:
        for quantity in ("threshold", "v_reset", "beta"):
            values = getattr(layer, quantity)
            if values.dim() and values.shape[0] == n_chips and n_chips > 1 and \
                    not bool((values == values[:1]).all()):
                event(f"{quantity} differs between chips")
    if chips is not None:
        variation = [chips.layers[layer.name] for layer in deployment.layers]
        if any(v.stuck is not None and bool(v.stuck.any()) for v in variation):
            event("stuck weights")
        if any(v.dead is not None and bool(v.dead.any()) for v in variation):
            event("dead neurons")
        if noise and any(spec is not None and spec.sigma > 0 for spec in
                         (deployment.profile.noise.thermal, deployment.profile.noise.v_threshold)):
            event("dynamic noise")
    return result


def assert_same_results(got, want) -> None:
    """Two engine results agree bit for bit: logits, recorded spikes, every count and energy."""
    assert torch.equal(got.logits, want.logits), "logits differ"
    assert got.spikes.keys() == want.spikes.keys()
    for name, spikes in want.spikes.items():
        assert torch.equal(got.spikes[name], spikes), f"{name}: spikes differ"
    for name, counts in want.counts.items():
        for what in ("spikes", "synaptic_ops", "neuron_updates", "saturations"):
            assert torch.equal(getattr(got.counts[name], what), getattr(counts, what)), f"{name}: {what} differ"
    assert (got.energy_pj is None) == (want.energy_pj is None)
    if want.energy_pj is not None:
        assert torch.equal(got.energy_pj, want.energy_pj), "energy differs"


# ------------------------------------------------------------------ random profiles


@st.composite
def decay_formats(draw, shift_max: int = 4) -> dict:
    if draw(st.booleans()):
        return {"kind": "shift", "shift": draw(st.integers(1, shift_max)),
                "rounding": draw(st.sampled_from(["floor", "toward_zero"])),
                "nonzero_step": draw(st.booleans())}
    return {"kind": "multiply", "bits": draw(st.integers(3, 12)),
            "rounding": draw(st.sampled_from(["floor", "toward_zero"]))}


def sigma_spec(draw, allow_relative: bool = True, sigmas=SIGMAS) -> dict | None:
    sigma = draw(st.sampled_from(sigmas))
    if sigma == 0.0:
        return None
    return {"sigma": sigma, "relative": draw(st.booleans()) if allow_relative else False}


@st.composite
def profiles(draw, current_based: bool | None = None, membrane_bits=None, weight_bits=None,
             faults: bool = True, sigmas=SIGMAS) -> DeviceProfile:
    """A random fixed-point profile: widths, overflow, decay format, reset, synapse,
    variation, noise and faults."""
    mb = draw(membrane_bits if membrane_bits is not None else st.integers(6, 16))
    wb = draw(weight_bits if weight_bits is not None else st.integers(2, 8))
    decay = draw(decay_formats())
    numerics = {"weight_bits": wb, "membrane_bits": mb, "decay": decay,
                "overflow": draw(st.sampled_from(["saturate", "wrap"]))}
    tb = draw(st.one_of(st.none(), st.integers(4, mb)))
    if tb is not None:
        numerics["threshold_bits"] = tb
    ib = draw(st.one_of(st.none(), st.integers(2, 8)))
    if ib is not None:
        numerics["input_bits"] = ib
    neuron = {"reset": draw(st.sampled_from(["hard", "soft"])),
              "v_threshold": draw(st.sampled_from([1.0, 0.5, 2.0])),
              "refractory": draw(st.integers(0, 2))}
    if decay["kind"] == "multiply":
        neuron["decay"] = draw(st.sampled_from([0.5, 0.75, 0.9, 1.0]))
    if current_based is None:
        current_based = draw(st.booleans())
    if current_based:
        syn = draw(decay_formats())
        numerics["synapse_decay"] = syn
        numerics["synapse_bits"] = draw(st.integers(6, 16))
        so = draw(st.sampled_from([None, "saturate", "wrap"]))
        if so is not None:
            numerics["synapse_overflow"] = so
        neuron["synapse_decay"] = (DecayFormat.model_validate(syn).shift_beta if syn["kind"] == "shift"
                                   else draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])))
    data = {"name": "random", "description": "random fixed-point chip", "neuron": neuron, "numerics": numerics}
    var = {k: sigma_spec(draw, sigmas=sigmas) for k in ("v_threshold", "v_reset", "decay", "synapse_decay")}
    data["variation"] = {k: v for k, v in var.items() if v is not None}
    nz = {"thermal": sigma_spec(draw, allow_relative=False, sigmas=sigmas),
          "v_threshold": sigma_spec(draw, sigmas=sigmas)}
    data["noise"] = {k: v for k, v in nz.items() if v is not None}
    if faults:
        data["faults"] = {"dead_neurons": draw(st.sampled_from([0.0, 0.0, 0.2])),
                          "stuck_weights": draw(st.sampled_from([0.0, 0.0, 0.2])),
                          "stuck_at": draw(st.sampled_from(["zero", "max", "min", "random"]))}
    return DeviceProfile.model_validate(data)


# ------------------------------------------------------------------ random layers


def weight_range(profile: DeviceProfile) -> tuple[int, int]:
    return fp.int_range(profile.numerics.weight_bits)


def bias_range(profile: DeviceProfile) -> tuple[int, int]:
    return fp.int_range(profile.numerics.bias_bits or profile.numerics.membrane_bits)


def theta_max(profile: DeviceProfile, per_channel: bool) -> int:
    num = profile.numerics
    hi = fp.int_range(num.threshold_bits or num.membrane_bits)[1]
    return max(1, hi // 4) if per_channel else hi


def layer_params(draw, rng: np.random.Generator, profile: DeviceProfile, weight_shape: tuple[int, ...],
                 readout: bool) -> dict:
    """Weights, bias, unit and neuron parameters of one layer (integer codes)."""
    w_lo, w_hi = weight_range(profile)
    mode = draw(st.sampled_from(["full", "small", "excitatory"]))
    if mode == "full":
        weight = rng.integers(w_lo, w_hi + 1, size=weight_shape)
    elif mode == "excitatory":  # mostly positive: neurons that fire
        weight = rng.integers(max(w_lo, -1), w_hi + 1, size=weight_shape)
    else:
        weight = rng.integers(max(w_lo, -3), min(w_hi, 3) + 1, size=weight_shape)
    out = weight_shape[0]
    spec: dict = {"weight": weight, "readout": readout}
    if draw(st.booleans()):
        b_lo, b_hi = bias_range(profile)
        cap = draw(st.sampled_from([4, 64, b_hi]))
        spec["bias"] = rng.integers(max(b_lo, -cap), min(b_hi, cap) + 1, size=out)
        exp = profile.numerics.bias_exp
        if exp is not None:  # Loihi: bias_mant << bias_exp, per neuron (the extremes included)
            spec["bias"] = spec["bias"] << rng.choice([exp.min, exp.max, *range(exp.min, exp.max + 1)], size=out)
    per_channel = draw(st.booleans())
    if per_channel:
        unit = rng.choice(UNITS, size=out).astype(np.float32)
        spec["unit"] = unit.reshape(out, 1, 1) if len(weight_shape) == 4 else unit
    else:
        spec["unit"] = float(draw(st.sampled_from(UNITS + (1.7, 0.01))))
    spec["beta"] = draw(st.sampled_from([1.0, 0.5, 0.75, 0.9, 0.97]) | st.floats(0.01, 1.0))
    if not readout:
        top = min(theta_max(profile, per_channel), 200)
        spec["threshold"] = draw(st.integers(1, min(top, 8)) | st.integers(1, top) | st.just(top))
        v_hi = fp.int_range(profile.numerics.membrane_bits)[1]
        edge = draw(st.sampled_from([False] * 5 + [True]))  # now and then a reset the membrane clamps
        spec["v_reset"] = draw(st.sampled_from([v_hi + 5, -v_hi - 9]) if edge else st.integers(-3, 3))
        spec["refractory"] = draw(st.integers(0, 2))
        spec["reset"] = draw(st.sampled_from(["hard", "soft"]))
        if profile.is_current_based and draw(st.booleans()):
            spec["synapse_decay"] = draw(st.sampled_from([0.25, 0.5, 0.75, 1.0]) | st.floats(0.05, 1.0))
    return spec


def set_v_init(draw, deployment: Deployment) -> None:
    """Some layers start from a non-zero membrane (MP-Init)."""
    for layer in deployment.layers[:-1]:
        layer.v_init = draw(st.sampled_from([0.0, 0.0, 0.5, -1.3, 2.75]))


def inputs(draw, rng: np.random.Generator, shape: tuple[int, ...], input_bits: int) -> np.ndarray:
    """Inputs in [0, 1], some exactly on rounding ties of the input codes."""
    q = fp.int_range(input_bits)[1]
    if draw(st.booleans()):
        x = rng.random(shape)
    else:  # multiples of half an input step: ties of round-half-even
        x = rng.integers(0, 2 * q + 1, size=shape) / (2 * q)
    return x.astype(np.float32)


@st.composite
def dense_cases(draw, profile_strategy=None, max_in: int = 10, max_out: int = 5):
    profile = draw(profile_strategy if profile_strategy is not None else profiles())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    sizes = [draw(st.integers(1, max_in))]
    sizes += [draw(st.integers(1, 8)) for _ in range(draw(st.sampled_from([0, 1, 1, 2, 2])))]  # 0: readout only
    sizes.append(draw(st.integers(1, max_out)))
    layers = [layer_params(draw, rng, profile, (sizes[i + 1], sizes[i]), readout=i == len(sizes) - 2)
              for i in range(len(sizes) - 1)]
    steps = draw(st.integers(1, 4))
    try:
        deployment = Deployment.from_integers(profile, layers, timesteps=steps, input_shape=(sizes[0],))
    except ExportError:
        assume(False)
    set_v_init(draw, deployment)
    batch_size = draw(st.integers(1, 2))
    x = inputs(draw, rng, (batch_size, sizes[0]), deployment.input_bits)
    return deployment, x


@st.composite
def conv_cases(draw):
    profile = draw(profiles())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    c_in, size = draw(st.integers(1, 2)), draw(st.integers(3, 6))
    k, stride, padding = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    assume(size + 2 * padding >= k)
    out_size = (size + 2 * padding - k) // stride + 1
    pool = draw(st.sampled_from([0, 2])) if out_size >= 2 else 0
    c_out = draw(st.integers(1, 3))
    conv = layer_params(draw, rng, profile, (c_out, c_in, k, k), readout=False)
    conv.update(kind="conv2d", stride=stride, padding=padding, pool=pool)
    side = out_size // pool if pool else out_size
    layers = [conv]
    if draw(st.booleans()):  # a second convolution on the (pooled) spikes
        k2, padding2 = draw(st.integers(1, 2)), draw(st.integers(0, 1))
        if side + 2 * padding2 >= k2:
            c2 = draw(st.integers(1, 3))
            second = layer_params(draw, rng, profile, (c2, c_out, k2, k2), readout=False)
            second.update(kind="conv2d", stride=1, padding=padding2)
            layers.append(second)
            c_out, side = c2, side + 2 * padding2 - k2 + 1
    flat = c_out * side * side
    if draw(st.booleans()):  # a dense hidden layer after the convolution
        hidden = draw(st.integers(1, 6))
        layers.append(layer_params(draw, rng, profile, (hidden, flat), readout=False))
        flat = hidden
    layers.append(layer_params(draw, rng, profile, (draw(st.integers(1, 4)), flat), readout=True))
    steps = draw(st.integers(1, 3))
    try:
        deployment = Deployment.from_integers(profile, layers, timesteps=steps, input_shape=(c_in, size, size))
    except ExportError:
        assume(False)
    set_v_init(draw, deployment)
    x = inputs(draw, rng, (draw(st.integers(1, 2)), c_in, size, size), deployment.input_bits)
    return deployment, x


def chips_for(draw, deployment: Deployment):
    seed = draw(st.integers(0, 10_000))
    return sample_chips(deployment.profile, deployment_shapes(deployment), n=N_CHIPS, seed=seed)


# ------------------------------------------------------------------ the integer rules


@settings(max_examples=examples(200), **SETTINGS)
@given(v=st.integers(-(2 ** 20), 2 ** 20), bits=st.integers(2, 16), k=st.integers(1, 8),
       overflow=st.sampled_from(["saturate", "wrap"]), fmt=decay_formats(shift_max=8),
       beta=st.floats(0.0, 1.0, width=32))
def test_reference_rules_agree_with_fixedpoint(v, bits, k, overflow, fmt, beta):
    """The reference's own statement of the integer rules equals neurosim.device's."""
    t = torch.tensor([v], dtype=torch.int64)
    assert ref.fit(v, bits, overflow) == int(fp.fit_to_bits(t, bits, overflow))
    assert ref.out_of_range(v, bits) == bool(fp.out_of_range(t, bits))
    for rounding in ("floor", "toward_zero"):
        assert ref.shift_right(v, k, rounding) == int(fp.shift_right(t, k, rounding))
    fmt = DecayFormat.model_validate(fmt)
    assert ref.Decay(np.float32(beta), fmt)(v) == int(quant.decay_state(t, torch.tensor(beta), fmt))


def test_reference_rules_by_hand():
    assert ref.wrap(128, 8) == -128 and ref.wrap(-129, 8) == 127 and ref.saturate(300, 8) == 127
    assert ref.shift_right(-1, 1, "floor") == -1 and ref.shift_right(-1, 1, "toward_zero") == 0
    assert ref.shift_right(-5, 1, "floor") == -3 and ref.shift_right(-5, 1, "toward_zero") == -2
    xylo = DecayFormat(kind="shift", shift=2, rounding="floor", nonzero_step=True)
    decay = ref.Decay(np.float32(0.75), xylo)
    assert (decay(1), decay(-1), decay(3), decay(8), decay(-8)) == (0, 0, 2, 6, -6)
    plain = ref.Decay(np.float32(0.75), DecayFormat(kind="shift", shift=2))
    assert (plain(1), plain(-1), plain(3)) == (1, 0, 3)  # -1 >> 2 == -1: -1 decays to 0
    loihi = DecayFormat(kind="multiply", bits=12, rounding="toward_zero")
    assert ref.Decay(np.float32(0.5), loihi)(-3) == -1 and ref.Decay(np.float32(1.0), loihi)(-3) == -3
    assert ref.round_half_even(2.5) == 2 and ref.round_half_even(-0.5) == 0


def test_hand_checked_network():
    """A two-neuron network whose trace is worked out by hand (IF neurons, hard reset)."""
    profile = load_profile("hardreset-noisy")  # 8-bit input codes: x = 1 -> 127
    layers = [{"weight": [[1], [2]], "threshold": 200, "unit": 1.0, "beta": 1.0},
              {"weight": [[10, 0], [0, 10]], "readout": True, "beta": 1.0}]
    deployment = Deployment.from_integers(profile, layers, timesteps=3, input_shape=(1,))
    out = reference_run(deployment, np.array([[1.0]], dtype=np.float32))
    # neuron 0: u = 127, 254 -> spike at t=1, reset to 0, 127; neuron 1: 254 every step -> spikes
    assert out["spikes"]["block0"][:, 0].tolist() == [[0, 1], [1, 1], [0, 1]]
    assert out["logits"][0].tolist() == pytest.approx([20 / 3, 20.0])
    compare(deployment, np.array([[1.0]], dtype=np.float32))


# ------------------------------------------------------------------ random deployments


@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data())
def test_dense_random_chips(data):
    deployment, x = data.draw(dense_cases())
    chips = chips_for(data.draw, deployment)
    compare(deployment, x, chips, batch=data.draw(st.integers(0, 3)))


@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_dense_sensitive_dynamics(data):
    """Low thresholds, unit 1, always some variation and noise, longer runs: a rule off by one
    code anywhere (reset, noise, refractory, decay) changes later spikes."""
    profile = data.draw(profiles(sigmas=(0.0, 0.6, 1.5, 3.0), membrane_bits=st.integers(8, 12)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    n_in, hidden = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    classes = data.draw(st.integers(1, 3))
    first = layer_params(data.draw, rng, profile, (hidden, n_in), readout=False)
    w_hi = weight_range(profile)[1]
    first.update(weight=rng.integers(-1, min(w_hi, 4) + 1, size=(hidden, n_in)), unit=1.0,
                 threshold=data.draw(st.integers(1, 6)), bias=None)
    second = layer_params(data.draw, rng, profile, (hidden, hidden), readout=False)
    second.update(weight=rng.integers(-1, min(w_hi, 3) + 1, size=(hidden, hidden)), unit=1.0,
                  threshold=data.draw(st.integers(1, 4)))
    readout = layer_params(data.draw, rng, profile, (classes, hidden), readout=True)
    deployment = Deployment.from_integers(profile, [first, second, readout],
                                          timesteps=data.draw(st.integers(4, 8)), input_shape=(n_in,))
    set_v_init(data.draw, deployment)
    x = inputs(data.draw, rng, (data.draw(st.integers(1, 2)), n_in), deployment.input_bits)
    compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))


@settings(max_examples=examples(25), **SETTINGS)
@given(data=st.data())
def test_dense_nominal_chip_and_noise_off(data):
    deployment, x = data.draw(dense_cases())
    compare(deployment, x, None)
    compare(deployment, x, chips_for(data.draw, deployment), batch=1, noise=False)


@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_conv_random_chips(data):
    deployment, x = data.draw(conv_cases())
    chips = chips_for(data.draw, deployment)
    compare(deployment, x, chips, batch=data.draw(st.integers(0, 3)))


# ------------------------------------------------------------------ built-in profiles


@st.composite
def builtin_cases(draw, name: str, max_in: int, max_out: int, units, recurrent: bool = False):
    """A random dense network on built-in profile ``name`` with its own rules; with
    ``recurrent`` the hidden layers get recurrent weights and every layer a weight shift drawn
    from the profile's range (steep weights: states saturate or wrap)."""
    profile = load_profile(name)
    shifts = profile.numerics.weight_shift
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    sizes = [draw(st.integers(1, max_in))]
    sizes += [draw(st.integers(1, 8)) for _ in range(draw(st.integers(1, 2)))]
    sizes.append(draw(st.integers(1, max_out)))
    layers = []
    for i in range(len(sizes) - 1):
        readout = i == len(sizes) - 2
        spec = layer_params(draw, rng, profile, (sizes[i + 1], sizes[i]), readout)
        spec["unit"] = float(draw(st.sampled_from(units)))
        spec.pop("reset", None)  # the chip's own reset rule
        if not readout:
            spec["threshold"] = draw(st.integers(1, 300))
            if profile.is_current_based:  # the chip's synapse decay
                spec["synapse_decay"] = profile.neuron.synapse_decay
            if recurrent:
                w_lo, w_hi = weight_range(profile)
                spec["recurrent"] = rng.integers(w_lo, w_hi, size=(sizes[i + 1], sizes[i + 1]), endpoint=True)
                if profile.is_current_based and draw(st.booleans()):  # a second synaptic state (Xylo's syn 2)
                    spec["weight2"] = rng.integers(w_lo, w_hi, size=(sizes[i + 1], sizes[i]), endpoint=True)
                    if draw(st.booleans()):
                        spec["recurrent2"] = rng.integers(w_lo, w_hi, size=spec["recurrent"].shape, endpoint=True)
                    fmt = profile.numerics.synapse_decay
                    spec["synapse_decay2"] = 1 - 2.0 ** -draw(st.integers(1, 8)) if fmt.kind == "shift" else \
                        draw(st.integers(1, 4096)) / 4096
        if recurrent and shifts is not None:
            low = shifts.min if profile.numerics.accumulate == "sum" else max(shifts.min, 0)
            spec["weight_shift"] = draw(st.integers(low, shifts.max))
            if not readout:
                spec["recurrent_shift"] = draw(st.integers(low, shifts.max))
        layers.append(spec)
    deployment = Deployment.from_integers(profile, layers, timesteps=draw(st.integers(1, 4)),
                                          input_shape=(sizes[0],))
    x = inputs(draw, rng, (draw(st.integers(1, 2)), sizes[0]), deployment.input_bits)
    return deployment, x


@settings(max_examples=examples(20), **SETTINGS)
@given(data=st.data())
def test_hardreset_noisy(data):
    # small units so that sigma_theta = 0.001 and sigma_reset = 0.007 move the integer codes
    deployment, x = data.draw(builtin_cases("hardreset-noisy", 10, 5, (0.002, 0.004, 0.01, 1.0)))
    compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))


@settings(max_examples=examples(20), **SETTINGS)
@given(data=st.data())
def test_xylo_like(data):
    deployment, x = data.draw(builtin_cases("xylo-like", 16, 8, (0.25, 1.0)))
    assert deployment.layers[0].synapse_decay == 0.75
    compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))


@settings(max_examples=examples(25), **SETTINGS)
@given(data=st.data(), name=st.sampled_from(["xylo-like", "loihi-like", "hardreset-noisy"]))
def test_recurrent_layers_and_weight_shifts(data, name):
    """Recurrent hidden layers, weight shifts (left and flooring right), per-source saturation,
    several spikes per step, delays and the lif readout, on each built-in chip's rules."""
    deployment, x = data.draw(builtin_cases(name, 10, 5, (0.25, 1.0), recurrent=True))
    result = compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))
    if any(int(s.max()) > 1 for s in result.spikes.values()):
        event("several spikes in a step")
    if any(layer.weight2 is not None for layer in deployment.layers):
        event("two synaptic states")


@settings(max_examples=examples(10), **SETTINGS)
@given(data=st.data())
def test_loihi_like(data):
    deployment, x = data.draw(builtin_cases("loihi-like", 10, 5, (0.25, 1.0)))
    compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))


@st.composite
def per_neuron_cases(draw):
    """A dense or convolutional case whose layers hold some neuron parameters per neuron
    (:attr:`LayerDeployment.per_neuron`): thresholds and resets of random codes, decays from 0
    (the state cleared every step) to 1 (kept), drawn per neuron; chip variation then applies to
    each neuron's own nominal value."""
    deployment, x = draw(dense_cases() | conv_cases())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    num = deployment.profile.numerics
    for layer in deployment.layers:
        shape = tuple(layer.output_shape)
        unit = torch.broadcast_to(layer.unit.double().reshape(-1, *([1] * (len(shape) - 1)))
                                  if layer.unit.dim() else layer.unit.double(), shape)
        values = {}
        if not layer.readout:
            if draw(st.booleans()):
                top = min(theta_max(deployment.profile, layer.unit.numel() > 1), 200)
                values["threshold"] = torch.from_numpy(rng.integers(1, top + 1, shape)).double() * unit
            if draw(st.booleans()):
                v_hi = fp.int_range(num.membrane_bits)[1]
                values["v_reset"] = torch.from_numpy(rng.integers(-min(v_hi, 4), min(v_hi, 4) + 1, shape)).double() * unit
        for name in ("beta", "synapse_decay"):
            if getattr(layer, name) is not None and draw(st.booleans()):
                choices = np.array([0.0, 0.5, 0.75, 0.9, 1.0, rng.random()])
                values[name] = torch.from_numpy(rng.choice(choices, shape))
        for name, tensor in values.items():
            layer.per_neuron[name] = tensor
            setattr(layer, name, float(tensor.reshape(-1)[0]))
    assume(any(layer.per_neuron for layer in deployment.layers))
    try:
        check_deployment(deployment)
    except ExportError:
        assume(False)
    for layer in deployment.layers:
        for name in layer.per_neuron:
            event(f"per-neuron {name}")
            if name in ("beta", "synapse_decay") and bool((layer.per_neuron[name] == 0).any()):
                event(f"{name} 0 (state cleared)")
    return deployment, x


@settings(max_examples=examples(40), **SETTINGS)
@given(data=st.data())
def test_per_neuron_values_on_random_chips(data):
    """Per-neuron thresholds, resets and decays (decay 0 included) under each chip's variation:
    the reference reads each neuron's nominal value and perturbs it, the engine's tensor steps
    and compiled loop (compare runs both) agree with it bit for bit."""
    deployment, x = data.draw(per_neuron_cases())
    chips = chips_for(data.draw, deployment) if data.draw(st.booleans()) else None
    compare(deployment, x, chips, batch=data.draw(st.integers(0, 3)))


def noisy_faulty_xylo() -> DeviceProfile:
    """xylo-like with threshold variation, thermal and threshold noise, dead neurons and stuck
    weights: every per-chip and per-step path of the engine at once."""
    base = load_profile("xylo-like").to_dict()
    base["variation"] = {"v_threshold": {"sigma": 0.5}}
    base["noise"] = {"thermal": {"sigma": 60.0}, "v_threshold": {"sigma": 0.3, "relative": True}}
    base["faults"] = {"dead_neurons": 0.2, "stuck_weights": 0.2, "stuck_at": "random"}
    return DeviceProfile.model_validate(base)


def test_xylo_like_with_noise_and_faults():
    """xylo-like plus thermal and threshold noise, threshold variation and faults, noise visible
    in the spikes."""
    profile = noisy_faulty_xylo()
    rng = np.random.default_rng(7)
    layers = [{"weight": rng.integers(-5, 10, size=(8, 16)), "threshold": 800, "unit": 0.25,
               "synapse_decay": 0.75},
              {"weight": rng.integers(-128, 128, size=(6, 8)), "threshold": 20, "synapse_decay": 0.75},
              {"weight": rng.integers(-128, 128, size=(4, 6)), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=5, input_shape=(16,))
    x = rng.random((2, 16)).astype(np.float32)
    chips = sample_chips(profile, deployment_shapes(deployment), n=N_CHIPS, seed=11)
    noisy = compare(deployment, x, chips, batch=2)
    quiet = compare(deployment, x, chips, batch=2, noise=False)
    assert not torch.equal(noisy.spikes["block0"], quiet.spikes["block0"])
    assert int(noisy.counts["block0"].spikes.sum()) > 0


# ------------------------------------------------------------------ saturation and wrapping


@st.composite
def saturating_cases(draw):
    """Large same-sign weights on full-scale inputs into a narrow membrane: the first layer's
    state leaves its range at the first step."""
    profile = draw(profiles(membrane_bits=st.integers(6, 8), weight_bits=st.integers(6, 8)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n_in, hidden, classes = draw(st.integers(1, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    w_lo, w_hi = weight_range(profile)
    sign = draw(st.sampled_from([1, -1]))
    big = rng.integers(w_hi // 2, w_hi + 1, size=(hidden, n_in)) * sign
    first = layer_params(draw, rng, profile, (hidden, n_in), readout=False)
    first.update(weight=big, unit=1.0, bias=None)
    first.pop("synapse_decay", None)  # a current-based synapse would saturate first, at its own width
    if profile.is_current_based and draw(st.booleans()):
        first["synapse_decay"] = draw(st.sampled_from([0.5, 1.0]))
    readout = layer_params(draw, rng, profile, (classes, hidden), readout=True)
    readout["weight"] = rng.integers(w_lo, w_hi + 1, size=(classes, hidden))
    deployment = Deployment.from_integers(profile, [first, readout], timesteps=draw(st.integers(1, 4)),
                                          input_shape=(n_in,))
    set_v_init(draw, deployment)
    x = inputs(draw, rng, (draw(st.integers(1, 2)), n_in), deployment.input_bits)
    x[0, 0] = 1.0  # one full-scale input: |current| >= (2^(w-2) - 1) * (2^(in-1) - 1)
    return deployment, x


@settings(max_examples=examples(40), **SETTINGS)
@given(data=st.data())
def test_saturation_and_wrap_edge_cases(data):
    deployment, x = data.draw(saturating_cases())
    chips = chips_for(data.draw, deployment)
    num = deployment.profile.numerics
    bound = fp.int_range(num.weight_bits)[1] // 2 * fp.int_range(deployment.input_bits)[1]
    limit = fp.int_range(num.membrane_bits)[1]
    if deployment.layers[0].synapse_decay is not None:
        limit = min(limit, fp.int_range(num.synapse_bits)[1])
    assume(bound > limit + 1)  # guaranteed to leave the range (input_bits >= 3 or so)
    stuck_free = chips.layers["block0"].stuck is None
    result = compare(deployment, x, chips, batch=data.draw(st.integers(0, 3)))
    if stuck_free:
        assert bool((result.counts["block0"].saturations > 0).all()), "the edge case did not saturate"


def test_saturation_and_wrap_occur_in_chosen_examples():
    """Fixed examples: saturate and wrap, membrane and synapse, both signs, all events counted
    alike by engine and reference."""
    seen = {}
    for overflow in ("saturate", "wrap"):
        for current_based in (False, True):
            numerics = {"weight_bits": 8, "membrane_bits": 6, "input_bits": 8, "overflow": overflow,
                        "decay": {"kind": "shift", "shift": 1}}
            neuron = {"reset": "soft"}
            if current_based:
                numerics.update(synapse_bits=7, synapse_decay={"kind": "shift", "shift": 1})
                neuron["synapse_decay"] = 0.5
            profile = DeviceProfile.model_validate({"name": "narrow", "description": "narrow states",
                                                    "neuron": neuron, "numerics": numerics})
            layers = [{"weight": [[127, 0], [0, -128], [40, 40]], "threshold": 31,
                       **({"synapse_decay": 0.5} if current_based else {})},
                      {"weight": [[127, 127, 127], [-128, -128, -128]], "readout": True}]
            deployment = Deployment.from_integers(profile, layers, timesteps=4, input_shape=(2,))
            x = np.array([[1.0, 1.0], [0.3, 0.9]], dtype=np.float32)
            result = compare(deployment, x)
            out = reference_run(deployment, x)
            seen[overflow, current_based] = (int(result.counts["block0"].saturations.sum()),
                                             int(result.counts["readout"].saturations.sum()))
            assert out["saturations"]["block0"] == seen[overflow, current_based][0]
    assert all(block > 0 for block, _ in seen.values()), seen
    assert seen["saturate", False][1] > 0 and seen["saturate", True][1] > 0, seen  # readout too


# ------------------------------------------------------------------ per-chip integer parameters


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("decay", [{"kind": "shift", "shift": 2}, {"kind": "multiply", "bits": 12}])
def test_chip_parameters_agree_with_engine(relative, decay):
    """Many neurons with large integer codes (where one float32 step is a sizeable fraction of a
    code): every chip's threshold, reset and decay codes agree with the engine's."""
    neuron = {"reset": "hard"} if decay["kind"] == "shift" else {"reset": "hard", "decay": 0.9}
    profile = DeviceProfile.model_validate({
        "name": "wide", "description": "large codes", "neuron": neuron,
        "numerics": {"weight_bits": 8, "membrane_bits": 16, "decay": decay},
        "variation": {"v_threshold": {"sigma": 0.1 if relative else 0.003, "relative": relative},
                      "v_reset": {"sigma": 0.01}, "decay": {"sigma": 0.05, "relative": relative}}})
    unit = 0.0000931
    layers = [{"weight": np.ones((2048, 1), dtype=np.int64), "threshold": 23456, "v_reset": -1234,
               "unit": unit, "beta": 0.93},
              {"weight": np.ones((1, 2048), dtype=np.int64), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=1, input_shape=(1,))
    chips = sample_chips(profile, deployment_shapes(deployment), n=2, seed=5)
    engine = IntegerEngine(deployment, chips)
    for c in range(2):
        chip = ref._ChipLayer(deployment.layers[0], deployment, chips, c)
        theta = engine.layers[0].threshold[c, 0].to(torch.int64).tolist()
        reset = engine.layers[0].v_reset[c, 0].to(torch.int64).tolist()
        factor = quant.decay_factor(engine.layers[0].beta[c, 0], profile.numerics.decay).tolist()
        assert [chip.theta[(n,)] for n in range(2048)] == theta
        assert [chip.v_reset[(n,)] for n in range(2048)] == reset
        mine = [chip.decay[(n,)].k if decay["kind"] == "shift" else chip.decay[(n,)].d for n in range(2048)]
        assert mine == factor


# ------------------------------------------------------------------ wide formats


@st.composite
def wide_cases(draw):
    """Wide states, weights and inputs (up to 32 bits): float64 codes and the engine's float64
    and int64 synaptic sums; thresholds and resets up to (and past) the ends of their formats."""
    mb = draw(st.integers(17, 32))
    huge = draw(st.booleans())  # sums beyond 2^53: the int64 path
    numerics = {"weight_bits": 32 if huge else draw(st.integers(9, 32)), "membrane_bits": mb,
                "input_bits": draw(st.integers(23, 25) if huge else st.integers(8, 32)),
                "threshold_bits": draw(st.integers(17, mb)), "decay": draw(decay_formats(shift_max=8)),
                "overflow": draw(st.sampled_from(["saturate", "wrap"]))}
    if numerics["decay"]["kind"] == "multiply":
        numerics["decay"]["bits"] = draw(st.integers(8, 31))
    neuron = {"reset": draw(st.sampled_from(["hard", "soft"]))}
    if numerics["decay"]["kind"] == "multiply":
        neuron["decay"] = 0.75
    data = {"name": "wide", "description": "wide formats", "neuron": neuron, "numerics": numerics,
            "variation": {"v_threshold": {"sigma": 0.2, "relative": True}, "decay": {"sigma": 0.05}},
            "noise": {"thermal": {"sigma": draw(st.sampled_from([0.0, 1000.0]))}}}
    profile = DeviceProfile.model_validate(data)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    classes = draw(st.integers(1, 3))
    w_lo, w_hi = weight_range(profile)
    scale = w_hi if huge else draw(st.sampled_from([w_hi, w_hi // 1024 + 1, 7]))
    if draw(st.booleans()):  # a small convolution first (int64 path: unfold + integer matmul)
        c_in, size, k = draw(st.integers(1, 2)), draw(st.integers(2, 4)), draw(st.integers(2, 3))
        input_shape, weight_shape = (c_in, size, size), (draw(st.integers(1, 2)), c_in, k, k)
        first = {"kind": "conv2d", "padding": 1}
        side = size + 2 - k + 1
        hidden = weight_shape[0] * side * side
    else:
        n_in, hidden = draw(st.integers(4 if huge else 1, 8)), draw(st.integers(1, 6))
        input_shape, weight_shape, first = (n_in,), (hidden, n_in), {}
    top, v_hi = theta_max(profile, False), fp.int_range(mb)[1]
    first.update({"weight": rng.integers(max(w_lo, -scale), scale + 1, size=weight_shape),
                  # near the top: variation (sigma 0.2, relative) clamps many thresholds to it
                  "threshold": draw(st.sampled_from([int(rng.integers(1, min(2 ** 23, top) + 1)), int(0.9 * top)])),
                  "v_reset": draw(st.sampled_from([int(rng.integers(-1000, 1000)), v_hi + 3, -v_hi - 7])),
                  "beta": draw(st.sampled_from([1.0, 0.5, 0.99])), "refractory": draw(st.integers(0, 1))})
    readout = {"weight": rng.integers(w_lo, w_hi + 1, size=(classes, hidden)), "readout": True,
               "unit": float(draw(st.sampled_from([1.0, 1e-6]))), "beta": draw(st.sampled_from([1.0, 0.5]))}
    try:
        deployment = Deployment.from_integers(profile, [first, readout], timesteps=draw(st.integers(1, 4)),
                                              input_shape=input_shape)
    except ExportError:  # sums that could pass 2^63
        assume(False)
    deployment.layers[0].v_init = draw(st.sampled_from([0.0, 12345.5, -3.0e7]))
    x = inputs(draw, rng, (draw(st.integers(1, 2)), *input_shape), deployment.input_bits)
    return deployment, x


@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_wide_formats_and_exact_sum_paths(data):
    deployment, x = data.draw(wide_cases())
    for layer, dtype in zip(deployment.layers, IntegerEngine(deployment).sum_dtypes.values()):
        event(f"{layer.name} {layer.kind}: {dtype}")
    compare(deployment, x, chips_for(data.draw, deployment), batch=data.draw(st.integers(0, 3)))


# ------------------------------------------------------------------ regressions: wide formats
# Found with this reference: the engine clamped float32 codes to 2^(b-1) - 1, which float32
# rounds up to 2^(b-1) for b >= 26 (thresholds, resets, input codes one past their format), and
# its int64 sums wrapped silently past 2^63.


def wide_profile(**numerics) -> DeviceProfile:
    base = {"weight_bits": 8, "membrane_bits": 16, "decay": {"kind": "shift", "shift": 1}}
    base.update(numerics)
    return DeviceProfile.model_validate({"name": "edge", "description": "edge case",
                                         "neuron": {"reset": "hard"}, "numerics": base})


def test_wide_threshold_code_stays_in_its_format():
    """Threshold variation pushes most thresholds past the top of a 26-bit format: they are
    clamped to 2^25 - 1, which a saturated membrane reaches."""
    hi = 2 ** 25 - 1
    profile = DeviceProfile.model_validate({
        "name": "edge", "description": "edge case", "neuron": {"reset": "hard"},
        "numerics": {"weight_bits": 8, "membrane_bits": 26, "decay": {"kind": "shift", "shift": 1}},
        "variation": {"v_threshold": {"sigma": 1.0e7}}})
    layers = [{"weight": np.full((8, 1), 127), "bias": np.full(8, 2 ** 24), "threshold": hi - 1, "beta": 1.0},
              {"weight": np.ones((1, 8), dtype=np.int64), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=3, input_shape=(1,))
    chips = sample_chips(profile, deployment_shapes(deployment), n=2, seed=0)
    assert bool((chips.layers["block0"].v_threshold.z > 0.5).any())  # some thresholds pass the top
    x = np.ones((1, 1), np.float32)
    # u = 16793345, then saturates at hi >= every threshold code: every neuron spikes at t = 1
    for c in range(2):
        assert (reference_run(deployment, x, chips, c)["spikes"]["block0"][:, 0].sum(-1) >= 8).tolist() \
            == [False, True, False]
    compare(deployment, x, chips)  # was: clamped codes 2^25, never reached


def test_bug_wide_threshold_at_the_top_of_its_format_is_refused():
    hi = 2 ** 25 - 1
    layers = [{"weight": [[127]], "bias": [2 ** 24], "threshold": hi, "beta": 1.0},
              {"weight": [[1]], "readout": True}]
    deployment = Deployment.from_integers(wide_profile(membrane_bits=26), layers, timesteps=3, input_shape=(1,))
    x = np.ones((1, 1), np.float32)
    assert reference_run(deployment, x)["spikes"]["block0"].ravel().tolist() == [0, 1, 0]
    compare(deployment, x)


def test_wide_reset_code_stays_in_its_format():
    layers = [{"weight": [[1]], "threshold": 100, "v_reset": 2 ** 26, "beta": 1.0},
              {"weight": [[1]], "readout": True}]
    deployment = Deployment.from_integers(wide_profile(membrane_bits=26, overflow="wrap"), layers,
                                          timesteps=3, input_shape=(1,))
    deployment.layers[0].v_init = 200.0
    x = np.zeros((1, 1), np.float32)
    # spike at t=0, reset to 2^25 - 1 (the clamped reset), which stays >= 100: spikes
    assert reference_run(deployment, x)["spikes"]["block0"].ravel().tolist() == [1, 1, 1]
    compare(deployment, x)  # was: reset 2^25, wrapping to -2^25 at the next step


def test_wide_input_code_stays_in_its_format():
    layers = [{"weight": [[1]], "threshold": 2 ** 25 - 1, "beta": 1.0}, {"weight": [[1]], "readout": True}]
    deployment = Deployment.from_integers(wide_profile(membrane_bits=32, input_bits=26), layers,
                                          timesteps=2, input_shape=(1,))
    x = np.ones((1, 1), np.float32)
    assert ref.encode_input(deployment, x).tolist() == [[2 ** 25 - 1]]
    assert IntegerEngine(deployment).encode(torch.from_numpy(x)).tolist() == [[2 ** 25 - 1]]  # was 2^25
    compare(deployment, x)


def test_sums_beyond_64_bits_are_refused():
    w_max = 2 ** 31 - 1
    layers = [{"weight": [[w_max] * 4], "threshold": 1000, "beta": 1.0}, {"weight": [[1]], "readout": True}]
    profile = wide_profile(weight_bits=32, membrane_bits=32, input_bits=32)
    # exact current 4 * (2^31 - 1)^2 > 2^63: the int64 sum used to wrap (current -8589934592)
    with pytest.raises(ExportError, match="64-bit"):
        Deployment.from_integers(profile, layers, timesteps=2, input_shape=(4,))


@pytest.mark.parametrize("block", [1, 2, 3])
def test_chip_blocks_equal_one_pass(block):
    """A stack of chips run in blocks (to keep each step's state in cache) gives the one-pass
    results bit for bit: logits, every recorded spike and every count, with noise,
    faults, variation and a current-based synapse in play."""
    profile = noisy_faulty_xylo()
    rng = np.random.default_rng(3)
    layers = [{"weight": rng.integers(-5, 10, size=(8, 16)), "threshold": 800, "unit": 0.25, "synapse_decay": 0.75},
              {"weight": rng.integers(-128, 128, size=(4, 8)), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=4, input_shape=(16,))
    chips = sample_chips(profile, deployment_shapes(deployment), n=5, seed=2)
    x = torch.from_numpy(rng.random((3, 16)).astype(np.float32))
    whole = IntegerEngine(deployment, chips, block=5)
    blocked = IntegerEngine(deployment, chips, block=block)
    assert not whole.blocks and len(blocked.blocks) == -(-5 // block)
    one, parts = whole.run(x, batch=1, record=True), blocked.run(x, batch=1, record=True)
    assert torch.equal(one.logits, parts.logits)
    assert all(torch.equal(one.spikes[name], parts.spikes[name]) for name in one.spikes)
    for name, counts in one.counts.items():
        for what in ("spikes", "synaptic_ops", "neuron_updates", "saturations"):
            assert torch.equal(getattr(counts, what), getattr(parts.counts[name], what)), (name, what)
    assert int(one.counts["block0"].spikes.sum()) > 0


# ------------------------------------------------------------------ synaptic operation counts

def brute_force_synaptic_ops(x: np.ndarray, kind: str, weight_shape: tuple, stride: int, padding: int) -> list:
    """Per lead entry: for every non-zero input, the synapses it reaches, counted one by one."""
    out = []
    for lead in x:
        total = 0
        for sample in lead:
            if kind == "linear":
                total += int(np.count_nonzero(sample)) * weight_shape[0]
                continue
            channels, height, width = sample.shape
            k = weight_shape[-1]
            out_h, out_w = (height + 2 * padding - k) // stride + 1, (width + 2 * padding - k) // stride + 1
            for c, i, j in zip(*np.nonzero(sample)):
                for oi in range(out_h):
                    for oj in range(out_w):
                        top, left = oi * stride - padding, oj * stride - padding
                        if top <= i < top + k and left <= j < left + k:
                            total += weight_shape[0]
        out.append(total)
    return out


@settings(max_examples=examples(30), **SETTINGS)
@given(data=st.data())
def test_synaptic_op_counts_equal_counting_one_by_one(data):
    """count_synaptic_ops (spike counts times a fixed coverage map for convolutions) equals
    counting every non-zero input's synapses one by one, for codes (any sign) and 0/1 spikes."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    lead, batch = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    binary = data.draw(st.booleans())
    if data.draw(st.booleans()):
        kind, k = "conv", data.draw(st.integers(1, 3))
        stride, padding = data.draw(st.integers(1, 3)), data.draw(st.integers(0, k - 1))
        size = data.draw(st.integers(k, 7))
        shape = (lead, batch, data.draw(st.integers(1, 3)), size, data.draw(st.integers(k, 7)))
        weight_shape = (data.draw(st.integers(1, 4)), shape[2], k, k)
    else:
        kind, stride, padding = "linear", 1, 0
        shape = (lead, batch, data.draw(st.integers(1, 20)))
        weight_shape = (data.draw(st.integers(1, 6)), shape[2])
    x = (rng.random(shape) < 0.4).astype(np.float32) if binary else rng.integers(-3, 4, size=shape)
    got = count_synaptic_ops(torch.from_numpy(x), kind, weight_shape, stride, padding, binary=binary)
    assert got.dtype == torch.float64
    assert got.tolist() == brute_force_synaptic_ops(x, kind, weight_shape, stride, padding)


def test_engine_synaptic_ops_follow_the_recorded_spikes():
    """The engine's per-chip synaptic operations: input codes x fan-out for the first layer, the
    recorded spikes of the layer below x fan-out for the next."""
    profile = load_profile("hardreset-noisy")
    rng = np.random.default_rng(4)
    layers = [{"weight": rng.integers(-60, 60, size=(12, 10)), "threshold": 40},
              {"weight": rng.integers(-60, 60, size=(5, 12)), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=3, input_shape=(10,))
    chips = sample_chips(profile, deployment_shapes(deployment), n=3, seed=1)
    x = torch.from_numpy(rng.random((4, 10)).astype(np.float32))
    x[0, :3] = 0.0
    engine = IntegerEngine(deployment, chips)
    result = engine.run(x, record=True)
    nonzero_codes = int((engine.encode(x) != 0).sum())
    assert result.counts["block0"].synaptic_ops.tolist() == [3 * nonzero_codes * 12] * 3
    spikes = result.spikes["block0"].to(torch.int64).sum(dim=(0, 2, 3))  # per chip
    assert int(spikes.sum()) > 0
    assert result.counts["readout"].synaptic_ops.tolist() == (spikes * 5).tolist()
    assert result.counts["block0"].spikes.tolist() == spikes.tolist()
