"""Export and the integer engine: parity with the training forward, limits, artifacts, commands."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from neurosim.cli import main
from neurosim.device import DynamicNoise, load_profile, sample_chips
from neurosim.device import fixedpoint as fp
from neurosim.device.profile import DeviceProfile
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.errors import ArtifactError, ExportError
from neurosim.export import Deployment, compile_model, load_deployment
from neurosim.nn import build_model
from neurosim.train import ChipContext, TrainConfig, train
from neurosim.train.trainer import neuron_options, readout_beta

ROOT = Path(__file__).resolve().parents[1]


def model_for(profile: DeviceProfile, spec: str, input_shape=(1, 8, 8), classes=10, timesteps=4, norm="none",
              seed=0, gain=3.0, **neuron):
    """A model with the profile's neuron model whose weights are scaled up so that it spikes."""
    torch.manual_seed(seed)
    config = TrainConfig(neuron=neuron)
    model = build_model(spec, input_shape, classes, timesteps, neuron_options(config, profile), norm=norm,
                        readout_beta=readout_beta(profile))
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(gain)
    if norm != "none":  # give batch norm running statistics of its own
        model.train()
        model(torch.rand(32, *input_shape))
    return model.eval()


def training_spikes(model, x, ctx):
    for block in model.blocks:
        block.record = True
    logits = model(x, ctx)
    spikes = {block.name: block.recorded_spikes for block in model.blocks}
    for block in model.blocks:
        block.record = False
    return logits, spikes


def assert_parity(model, profile, x, n_chips=3, seed=7, batch=1):
    deployment = compile_model(model, profile)
    chips = sample_chips(profile, deployment_shapes(deployment), n=n_chips, seed=seed)
    result = IntegerEngine(deployment, chips).run(x, batch=batch, record=True)
    total = 0
    for k in range(n_chips):
        ctx = ChipContext(profile, chips[k], DynamicNoise(profile, seed, chips[k].indices), batch=batch)
        logits, spikes = training_spikes(model, x, ctx)
        for name, s in spikes.items():
            engine_spikes = result.spikes[name][:, k].to(s.dtype)
            assert torch.equal(engine_spikes, s), (name, k)
            total += int(s.sum())
        assert torch.equal(logits, result.logits[k]), k
    return result, total


# ------------------------------------------------------------------ parity with the training forward

@pytest.mark.parametrize("name,spec,norm", [
    ("hardreset-noisy", "mlp:48-24", "none"),
    ("hardreset-noisy", "conv:4c3-mp2-8c3s2-16", "tdbn"),
    ("hardreset-noisy", "mlp:32", "bn"),
])
def test_engine_matches_the_training_forward_bit_for_bit(name, spec, norm):
    profile = load_profile(name)
    model = model_for(profile, spec, norm=norm)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result, spikes = assert_parity(model, profile, x)
    assert spikes > 0  # the comparison saw real activity


def test_parity_on_a_noisy_faulty_current_based_chip():
    profile = DeviceProfile.model_validate({
        "name": "stress", "description": "every effect at once",
        "neuron": {"reset": "soft", "synapse_decay": 0.75, "refractory": 1},
        "numerics": {"weight_bits": 6, "membrane_bits": 12, "synapse_bits": 12, "input_bits": 6,
                     "decay": {"kind": "shift", "shift": 2}, "synapse_decay": {"kind": "multiply", "bits": 8},
                     "overflow": "wrap", "synapse_overflow": "saturate"},
        "variation": {"v_threshold": {"sigma": 0.05}, "v_reset": {"sigma": 0.02},
                      "decay": {"sigma": 0.05, "relative": True}},
        "noise": {"thermal": {"sigma": 0.05}, "v_threshold": {"sigma": 0.02}},
        "faults": {"dead_neurons": 0.1, "stuck_weights": 0.05, "stuck_at": "random"}})
    model = model_for(profile, "mlp:40-20", gain=4.0, v_init="mp_init")
    model.blocks[0].node.mp_init.fill_(0.3)
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    result, spikes = assert_parity(model, profile, x, n_chips=4)
    assert spikes > 0
    assert sum(float(c.saturations.sum()) for c in result.counts.values()) > 0  # wraps/saturations happened


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden=st.lists(st.integers(3, 24), min_size=1, max_size=2), weight_bits=st.integers(3, 8),
       membrane_bits=st.integers(8, 16), overflow=st.sampled_from(["saturate", "wrap"]),
       decay=st.sampled_from([{"kind": "shift", "shift": 1}, {"kind": "shift", "shift": 3, "nonzero_step": True},
                              {"kind": "multiply", "bits": 8, "rounding": "toward_zero"}]),
       reset=st.sampled_from(["hard", "soft"]), sigma=st.sampled_from([0.0, 0.03]),
       thermal=st.sampled_from([0.0, 0.05]), seed=st.integers(0, 1000), gain=st.floats(1.0, 6.0))
def test_parity_property(hidden, weight_bits, membrane_bits, overflow, decay, reset, sigma, thermal, seed, gain):
    profile = DeviceProfile.model_validate({
        "name": "random", "description": "random chip",
        "neuron": {"reset": reset, **({} if decay["kind"] == "shift" else {"decay": 0.8})},
        "numerics": {"weight_bits": weight_bits, "membrane_bits": membrane_bits, "input_bits": 6,
                     "decay": decay, "overflow": overflow},
        "variation": {"v_threshold": {"sigma": sigma}, "v_reset": {"sigma": sigma}},
        "noise": {"thermal": {"sigma": thermal}}})
    model = model_for(profile, "mlp:" + "-".join(map(str, hidden)), input_shape=(1, 4, 4), classes=5,
                      timesteps=3, seed=seed, gain=gain)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    try:
        compile_model(model, profile)
    except ExportError as exc:  # e.g. a readout bias beyond an 8-bit membrane: a model this chip cannot hold
        assume("bias_bits" not in str(exc))
        raise
    assert_parity(model, profile, x, n_chips=2, seed=seed)


# ------------------------------------------------------------------ exact sums

def test_synaptic_sums_use_exact_arithmetic_for_their_bound():
    profile = DeviceProfile.model_validate({
        "name": "wide", "description": "wide states",
        "neuron": {"decay": 0.5},
        "numerics": {"weight_bits": 32, "membrane_bits": 32, "input_bits": 16, "threshold_bits": 32,
                     "decay": {"kind": "multiply", "bits": 12}}})
    rng = np.random.default_rng(0)
    x = torch.rand(4, 900, generator=torch.Generator().manual_seed(0))
    for magnitude, dtype in ((30000, torch.float64), (2 ** 30, torch.int64)):
        layers = [{"weight": rng.integers(-magnitude, magnitude, size=(6, 900)), "threshold": 2 ** 28},
                  {"weight": rng.integers(-3, 3, size=(3, 6)), "readout": True}]
        engine = IntegerEngine(Deployment.from_integers(profile, layers, timesteps=2, input_shape=(900,)))
        assert engine.sum_dtypes["block0"] == dtype  # 900 * magnitude * 32767: below / above 2^53
        codes = engine.encode(x)
        exact = codes.numpy().astype(object) @ layers[0]["weight"].T.astype(object)  # Python big ints
        got = engine.layers[0].currents(codes.unsqueeze(0))[0]
        assert got.tolist() == exact.tolist()


@settings(max_examples=40, deadline=None)
@given(fan_in=st.integers(1, 300), bits=st.integers(2, 32), input_bits=st.integers(2, 16), seed=st.integers(0, 99),
       first=st.booleans(), conv=st.booleans())
def test_exact_sums_property(fan_in, bits, input_bits, seed, first, conv):
    """Whatever the bound, the engine's synaptic sums equal Python's big-integer sums."""
    profile = DeviceProfile.model_validate({
        "name": "p", "description": "p", "neuron": {"decay": 0.5},
        "numerics": {"weight_bits": bits, "membrane_bits": 32, "input_bits": input_bits,
                     "decay": {"kind": "multiply", "bits": 12}}})
    rng = np.random.default_rng(seed)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if conv:
        channels = max(1, fan_in // 9)
        weight = rng.integers(lo, hi, size=(2, channels, 3, 3), endpoint=True)
        layers = [{"weight": weight, "threshold": 1, "padding": 1}, {"weight": rng.integers(-2, 2, size=(2, 2 * 16))}]
        input_shape = (channels, 4, 4)
    else:
        weight = rng.integers(lo, hi, size=(3, fan_in), endpoint=True)
        layers = [{"weight": weight, "threshold": 1}, {"weight": rng.integers(-2, 2, size=(2, 3))}]
        input_shape = (fan_in,)
    deployment = Deployment.from_integers(profile, layers, 1, input_shape)
    if not first:
        deployment.layers[0].input_step = 1.0  # as a hidden layer: spike inputs
    engine = IntegerEngine(deployment)
    x = torch.rand(3, *input_shape, generator=torch.Generator().manual_seed(seed))
    codes = engine.encode(x) if first else (x > 0.5).to(torch.int64)
    got = engine.layers[0].currents(codes.unsqueeze(0))[0]
    if conv:
        padded = np.pad(codes.numpy().astype(object), ((0, 0), (0, 0), (1, 1), (1, 1)))
        expect = np.zeros((3, 2, 4, 4), dtype=object)
        for n in range(3):
            for o in range(2):
                for i in range(4):
                    for j in range(4):
                        expect[n, o, i, j] = (padded[n, :, i:i + 3, j:j + 3] * weight[o].astype(object)).sum()
    else:
        expect = codes.numpy().astype(object) @ weight.T.astype(object)
    assert got.tolist() == expect.tolist()
    bound = deployment.layers[0].sum_bound(deployment.input_bits)
    assert engine.sum_dtypes["block0"] == (torch.float32 if bound < 2 ** 24 else
                                           torch.float64 if bound < 2 ** 53 else torch.int64)


def test_float_blas_bound_is_checked_not_assumed():
    profile = load_profile("hardreset-noisy")
    small = Deployment.from_integers(profile, [{"weight": np.ones((4, 16), dtype=np.int64), "threshold": 100},
                                               {"weight": np.ones((2, 4), dtype=np.int64)}], 2, (16,))
    assert IntegerEngine(small).sum_dtypes == {"block0": torch.float32, "readout": torch.float32}
    big = Deployment.from_integers(profile, [{"weight": np.full((4, 4000), 127, dtype=np.int64), "threshold": 100},
                                             {"weight": np.ones((2, 4), dtype=np.int64)}], 2, (4000,))
    assert IntegerEngine(big).sum_dtypes["block0"] == torch.float64  # 4000 * 127 * 127 > 2^24


# ------------------------------------------------------------------ compile checks

def test_float_profiles_and_mismatched_neurons_are_refused(tmp_path):
    noisy = load_profile("hardreset-noisy")
    model = model_for(noisy, "mlp:16")
    with pytest.raises(ExportError, match="computes in float"):
        compile_model(model, "ideal")
    soft = model_for(noisy, "mlp:16", reset="soft")
    with pytest.raises(ExportError) as info:
        compile_model(soft, noisy)
    assert "block0" in str(info.value) and "reset is soft" in str(info.value) and "--adapt" in str(info.value)
    leaky = model_for(noisy, "mlp:16", beta=0.9)
    with pytest.raises(ExportError, match="decay beta = 0.9"):
        compile_model(leaky, noisy)
    deployment = compile_model(leaky, noisy, adapt=True)
    # the nearest decay a shift realises: 1 - 2^-3
    assert deployment.metadata["adapted"] == ["block0: beta 0.9 -> 0.875"]
    assert deployment.layers[0].beta == 0.875


def test_limits_name_the_layer_limit_and_value():
    xylo = load_profile("xylo-like")
    model = model_for(xylo, "mlp:16", input_shape=(1, 8, 8))
    with pytest.raises(ExportError, match="max_inputs of profile xylo-like is 16, the model needs 64"):
        compile_model(model, xylo)
    small = model_for(xylo, "mlp:100-100", input_shape=(1, 4, 4), classes=8)
    with pytest.raises(ExportError, match="block0: max_fan_out of profile xylo-like is 64, the model needs 100"):
        compile_model(small, xylo)
    assert compile_model(model_for(xylo, "mlp:60-60", input_shape=(1, 4, 4), classes=8), xylo)
    limited = load_profile("hardreset-noisy").model_copy(update={
        "limits": load_profile("hardreset-noisy").limits.model_copy(update={"max_timesteps": 2, "max_fan_in": 32})})
    with pytest.raises(ExportError, match="max_timesteps"):
        compile_model(model_for(limited, "mlp:8"), limited)


def test_nan_weights_are_refused_and_a_large_bias_coarsens_the_weight_step():
    profile = load_profile("hardreset-noisy")
    model = model_for(profile, "mlp:8")
    with torch.no_grad():
        model.blocks[0].synapse.weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match="block0: weight holds NaN"):
        compile_model(model, profile)
    model = model_for(profile, "mlp:8")
    plain = compile_model(model, profile).layers[0]
    with torch.no_grad():
        model.blocks[0].synapse.bias[0] = 1e3  # far more than a unit fine enough for the weights holds
    layer = compile_model(model, profile).layers[0]
    bias_max = fp.int_range(profile.numerics.bias_bits)[1]
    assert int(layer.bias.abs().max()) == bias_max  # the largest bias fills the format exactly
    assert float(layer.unit) == pytest.approx(1e3 / bias_max, rel=1e-6) and float(layer.unit) > float(plain.unit)
    x = torch.rand(6, *model.input_shape)
    with torch.no_grad():  # the training forward on the nominal chip holds the same bias: same answers
        forward = model.eval()(x, ChipContext(profile))
    assert torch.equal(IntegerEngine(compile_model(model, profile)).run(x).logits[0].argmax(1), forward.argmax(1))


def test_from_integers_runs_a_hand_checked_network():
    profile = load_profile("hardreset-noisy")  # shift 1 decay, hard reset, 8-bit input codes
    layers = [{"weight": [[1], [2]], "threshold": 200, "unit": 1.0},
              {"weight": [[10, 0], [0, 10]], "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=3, input_shape=(1,))
    result = IntegerEngine(deployment).run(torch.tensor([[1.0]]), record=True)
    # input code 127; currents 127 and 254; neuron 0: u = 127, 190, 222 -> spike at t=2 (>= 200)
    # neuron 1: u = 254 -> spike at t=0, v = 0; 254 -> spike; 254 -> spike
    assert result.spikes["block0"][:, 0, 0].tolist() == [[0, 1], [0, 1], [1, 1]]
    # readout integrates 10 * spikes without decay: u = (0, 10), (0, 20), (10, 30); mean (10/3, 20)
    assert result.logits[0, 0].tolist() == pytest.approx([10 / 3, 20.0])


# ------------------------------------------------------------------ artifacts

@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    profile = load_profile("hardreset-noisy")
    deployment = compile_model(model_for(profile, "conv:4c3-mp2-12", norm="tdbn"), profile,
                               metadata={"note": "test"})
    path = tmp_path_factory.mktemp("art") / "model"
    deployment.save(path)
    return deployment, path


def test_artifact_round_trip(artifact, tmp_path):
    deployment, path = artifact
    loaded = load_deployment(path)
    assert loaded.profile == deployment.profile and loaded.metadata == {"note": "test"}
    for a, b in zip(deployment.layers, loaded.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.unit, b.unit)
        assert (a.bias is None) == (b.bias is None)
        assert (a.threshold, a.v_reset, a.beta, a.pool, a.stride) == (b.threshold, b.v_reset, b.beta, b.pool, b.stride)
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(IntegerEngine(deployment).run(x).logits, IntegerEngine(loaded).run(x).logits)
    manifest = yaml.safe_load((path / "manifest.yaml").read_text())
    assert manifest["format_version"] == 1 and manifest["profile"]["name"] == "hardreset-noisy"
    assert [layer["name"] for layer in manifest["layers"]] == ["block0", "block1", "readout"]
    with pytest.raises(ArtifactError, match="already exists"):
        deployment.save(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def corrupt_copy(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    return copy


def rewrite_manifest(folder: Path, change) -> None:
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    change(manifest)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def test_truncated_and_flipped_tensors_are_refused(artifact, tmp_path):
    _, path = artifact
    copy = corrupt_copy(path, tmp_path)
    data = (copy / "tensors.npz").read_bytes()
    (copy / "tensors.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_deployment(copy)
    flipped = bytearray(data)
    flipped[len(flipped) // 3] ^= 0x01
    (copy / "tensors.npz").write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_deployment(copy)


def test_wrong_version_foreign_and_escaping_manifests_are_refused(artifact, tmp_path):
    _, path = artifact
    copy = corrupt_copy(path, tmp_path)
    rewrite_manifest(copy, lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_deployment(copy)
    copy2 = tmp_path / "c2"
    shutil.copytree(path, copy2)
    rewrite_manifest(copy2, lambda m: m["tensors"].update(file="../../etc/passwd"))
    with pytest.raises(ArtifactError, match="tensors.file"):
        load_deployment(copy2)
    copy3 = tmp_path / "c3"
    shutil.copytree(path, copy3)
    rewrite_manifest(copy3, lambda m: m["profile"]["spec"]["numerics"].update(weight_bits=16))
    with pytest.raises(ArtifactError, match="profile checksum"):
        load_deployment(copy3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest.yaml is missing"):
        load_deployment(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="no such deployment artifact"):
        load_deployment(tmp_path / "file.txt")
    copy4 = tmp_path / "c4"
    shutil.copytree(path, copy4)
    (copy4 / "manifest.yaml").write_text("just: [a list")
    with pytest.raises(ArtifactError, match="invalid YAML"):
        load_deployment(copy4)


def _rewrite_tensors(folder: Path, arrays: dict) -> None:
    import hashlib
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / "tensors.npz").write_bytes(buffer.getvalue())
    rewrite_manifest(folder, lambda m: m["tensors"].update(sha256=hashlib.sha256(buffer.getvalue()).hexdigest()))


def test_tensors_of_wrong_shape_dtype_or_object_arrays_are_refused(artifact, tmp_path):
    deployment, path = artifact
    arrays = deployment.tensors()
    copy = corrupt_copy(path, tmp_path)
    _rewrite_tensors(copy, {**arrays, "block0.weight": arrays["block0.weight"][:2]})
    with pytest.raises(ArtifactError, match="shape"):
        load_deployment(copy)
    _rewrite_tensors(copy, {**arrays, "block0.weight": arrays["block0.weight"].astype(np.float64)})
    with pytest.raises(ArtifactError, match="dtype"):
        load_deployment(copy)
    _rewrite_tensors(copy, {**arrays, "block0.weight": np.array([object()], dtype=object)})
    with pytest.raises(ArtifactError, match="unreadable"):
        load_deployment(copy)


# ------------------------------------------------------------------ commands

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    train(TrainConfig(epochs=3, model="mlp:64", eval_chips=4), out, progress=False)
    return out


def test_export_and_run_commands_reproduce_the_training_evaluation(trained_run, tmp_path):
    art = tmp_path / "art"
    result = subprocess.run([sys.executable, "-m", "neurosim", "export", str(trained_run), "--out", str(art)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((trained_run / "metrics.json").read_text())
    result = subprocess.run([sys.executable, "-m", "neurosim", "run", str(art), "--chips", "4"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    # the integer engine on chips 0..3 (seed 1234) gives the accuracy the fake-quant forward measured
    assert f"accuracy {metrics['test_accuracy_noisy']:.4f} +- {metrics['test_accuracy_noisy_std']:.4f}" in result.stdout
    assert "block0" in result.stdout and "synops" in result.stdout


def test_export_errors_are_one_line_and_write_nothing(trained_run, tmp_path, capsys):
    art = tmp_path / "art"
    assert main(["export", str(trained_run), "--profile", "xylo-like", "--out", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "reset is hard, the chip resets soft" in err[0]
    assert main(["export", str(trained_run), "--profile", "xylo-like", "--adapt", "--out", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_inputs of profile xylo-like is 16, the model needs 64" in err[0]
    assert not art.exists() and not list(tmp_path.iterdir())
    assert main(["run", str(tmp_path / "missing")]) == 2
    assert "no such deployment artifact" in capsys.readouterr().err


def test_run_strict_fails_on_saturation(tmp_path, capsys):
    profile = load_profile("hardreset-noisy")
    layers = [{"weight": np.full((2, 64), 127, dtype=np.int64), "threshold": 30000},
              {"weight": np.ones((10, 2), dtype=np.int64)}]
    deployment = Deployment.from_integers(profile, layers, 4, (1, 8, 8), metadata={"training": {"dataset": "digits"}})
    deployment.save(tmp_path / "sat")
    result = IntegerEngine(deployment).run(torch.ones(1, 1, 8, 8))
    assert float(result.counts["block0"].saturations.sum()) == 2 * 4  # both neurons, every step
    assert main(["run", str(tmp_path / "sat"), "--chips", "2"]) == 0
    assert "saturations" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "sat"), "--chips", "2", "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saturation" in err[0] and "--strict" in err[0]


def test_energy_estimate_from_the_profile(tmp_path):
    base = load_profile("hardreset-noisy").to_dict()
    base["energy"] = {"per_synaptic_op_pj": 2.0, "per_spike_pj": 10.0, "per_neuron_update_pj": 0.5}
    base["name"] = "with-energy"
    profile = DeviceProfile.model_validate(base)
    layers = [{"weight": [[1], [2]], "threshold": 200}, {"weight": [[10, 0], [0, 10]], "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=3, input_shape=(1,))
    result = IntegerEngine(deployment).run(torch.tensor([[1.0]]))
    # block0: input code 127 is one active input x 2 synapses per step = 6 synops; spikes 1 + 3 = 4;
    # updates 2 neurons x 3 steps = 6. readout: spikes of block0 drive 2 synapses each = 8; updates 6.
    expected = 2.0 * (6 + 8) + 10.0 * 4 + 0.5 * (6 + 6)
    assert result.counts["block0"].spikes.item() == 4
    assert result.energy_pj.item() == pytest.approx(expected)
    assert IntegerEngine(Deployment.from_integers(load_profile("hardreset-noisy"), layers, 3, (1,))).run(
        torch.tensor([[1.0]])).energy_pj is None


def test_bug_tiny_state_unit_is_a_clear_error_not_an_overflow():
    """A state unit so small that threshold / unit is infinite (fuzzing found 1e-45) is refused
    as an ExportError naming the threshold, not an OverflowError from int(inf)."""
    from neurosim.export.compile import check_deployment

    profile = load_profile("hardreset-noisy")
    layers = [{"weight": np.ones((3, 4), dtype=np.int64), "threshold": 5},
              {"weight": np.ones((2, 3), dtype=np.int64), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, timesteps=2, input_shape=(4,))
    deployment.layers[0].unit = torch.tensor(1e-45)  # the threshold in float units stays as it was
    with pytest.raises(ExportError, match="threshold needs inf units"):
        check_deployment(deployment)
