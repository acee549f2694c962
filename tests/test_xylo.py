"""Xylo (issue 9): neurosim's integer engine on the xylo-like rules against SynSense's xylosim
0.1.3 bit for bit (spike counts, membranes and synaptic states of hidden and output neurons at
every step), and ``neurosim export --format xylo``.

The comparisons need xylosim (the ``xylo`` extra: ``pip install 'neurosim[xylo]'``); where it
cannot be imported they are skipped with that reason. Export refusals and file errors run
without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurosim.cli import main
from neurosim.engine import IntegerEngine
from neurosim.errors import ArtifactError, ExportError
from neurosim.export import Deployment, compile_model
from neurosim.export.xylo import (XYLO_KEYS, XyloConfig, config_from_deployment,
                                  deployment_from_config, load_xylo, run_xylosim, save_xylo, xylo_layer)
from neurosim.device import load_profile
from neurosim.train import TrainConfig, train
from neurosim.train.datasets import load_dataset
from neurosim.train.trainer import load_run

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# more examples for a long bug hunt, as in test_reference.py: NEUROSIM_REFERENCE_EXAMPLES=20
SCALE = float(os.environ.get("NEUROSIM_REFERENCE_EXAMPLES", "1"))
STATES = (("spikes", "block0", None), ("out_spikes", "readout", None), ("v_mem", "block0", "v"),
          ("i_syn", "block0", "i"), ("v_mem_out", "readout", "v"), ("i_syn_out", "readout", "i"))


@pytest.fixture(scope="module")
def xylosim():
    return pytest.importorskip("xylosim.v2", reason="xylosim is not installed (the xylo extra: "
                               "pip install 'neurosim[xylo]', i.e. xylosim==0.1.3)")


def make_config(n_in: int, n_hid: int, n_out: int, *, w_in=None, w_rec=None, w_out=None, threshold=1000,
                threshold_out=1000, bias=None, bias_out=None, shifts=(0, 0, 0), dash=(1, 1), dash_out=(1, 1)) -> XyloConfig:
    """A configuration with uniform thresholds and decays per population (as a neurosim layer)."""
    def dense(value, shape):
        return np.zeros(shape, dtype=np.int64) if value is None else np.asarray(value, dtype=np.int64).reshape(shape)

    has_bias = bias is not None or bias_out is not None
    return XyloConfig(
        weights_in=dense(w_in, (n_in, n_hid)), weights_rec=dense(w_rec, (n_hid, n_hid)),
        weights_out=dense(w_out, (n_hid, n_out)), threshold=np.full(n_hid, threshold),
        threshold_out=np.full(n_out, threshold_out), bias=dense(bias, (n_hid,)), bias_out=dense(bias_out, (n_out,)),
        has_bias=has_bias, weight_shift_inp=shifts[0], weight_shift_rec=shifts[1], weight_shift_out=shifts[2],
        dash_mem=np.full(n_hid, dash[0]), dash_syn=np.full(n_hid, dash[1]), dash_mem_out=np.full(n_out, dash_out[0]),
        dash_syn_out=np.full(n_out, dash_out[1]))


def run_engine(config: XyloConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    """neurosim's integer engine on the deployment of ``config``, recorded as run_xylosim's dict."""
    deployment = deployment_from_config(config, counts.shape[0])
    result = IntegerEngine(deployment).run_codes(torch.from_numpy(counts)[None], record=True, record_states=True)
    out = {}
    for key, layer, state in STATES + ((("i_syn2", "block0", "i2"),) if config.second_synapse else ()):
        recorded = result.spikes[layer] if state is None else result.states[layer][state]
        out[key] = recorded[:, 0, 0].numpy().astype(np.int64)  # [T, chips, batch, n] -> [T, n]
    return out


def assert_same(config: XyloConfig, counts: np.ndarray, layer=None) -> dict[str, np.ndarray]:
    """xylosim and the engine agree on every recorded quantity at every step; the first
    difference is reported with its step and neuron."""
    want = run_xylosim(config, counts, layer)
    got = run_engine(config, counts)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for key in want:
        assert got[key].shape == want[key].shape, (key, got[key].shape, want[key].shape)
        if not np.array_equal(got[key], want[key]):
            t, n = np.argwhere(got[key] != want[key])[0]
            raise AssertionError(f"{key}: first difference at step {t}, neuron {n}: engine {got[key][t, n]}, "
                                 f"xylosim {want[key][t, n]} (config {summary(config)}, counts {counts.tolist()})")
    return want


def summary(config: XyloConfig) -> dict:
    return {key: np.asarray(getattr(config, key)).tolist() for key in XYLO_KEYS}


# ------------------------------------------------------------------ a. random networks


@st.composite
def networks(draw):
    """A network in Xylo's ranges: full int8 weights (dense or sparse, small or large), shifts
    0..7, dashes 1..15, thresholds from 1 (many spikes a step) to 32767, biases to +-32768,
    input counts 0..15, 1..12 steps."""
    n_in, n_hid, n_out = draw(st.integers(1, 16)), draw(st.integers(1, 12)), draw(st.integers(1, 8))
    steps = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    def weights(shape):
        top = draw(st.sampled_from((1, 8, 128)))
        values = rng.integers(-top, top, shape, endpoint=top < 128)
        return values * (rng.random(shape) < draw(st.sampled_from((0.2, 0.6, 1.0))))

    def threshold():
        return int(draw(st.sampled_from((rng.integers(1, 8), rng.integers(8, 1000), rng.integers(1000, 32768)))))

    def biases(n):
        kind = draw(st.sampled_from(("none", "small", "large")))
        if kind == "none":
            return None
        top = 100 if kind == "small" else 32768
        return rng.integers(-top, top, n, endpoint=kind == "small")

    def dash():
        return (draw(st.integers(1, 15)), draw(st.integers(1, 15)))

    bias, bias_out = biases(n_hid), biases(n_out)
    if (bias is None) != (bias_out is None) and draw(st.booleans()):
        bias, bias_out = None, None
    config = make_config(n_in, n_hid, n_out, w_in=weights((n_in, n_hid)), w_rec=weights((n_hid, n_hid)),
                         w_out=weights((n_hid, n_out)), threshold=threshold(), threshold_out=threshold(),
                         bias=bias, bias_out=bias_out, shifts=tuple(draw(st.integers(0, 7)) for _ in range(3)),
                         dash=dash(), dash_out=dash())
    if draw(st.booleans()):  # Xylo's second synaptic state of the hidden neurons
        config.weights_in2, config.weights_rec2 = weights((n_in, n_hid)), weights((n_hid, n_hid))
        config.dash_syn2 = np.full(n_hid, draw(st.integers(1, 15)))
    counts = rng.integers(0, draw(st.sampled_from((2, 16))), (steps, n_in))
    return config, counts


@settings(max_examples=max(1, int(150 * SCALE)), **SETTINGS)
@given(networks())
def test_engine_matches_xylosim_on_random_networks(xylosim, network):
    config, counts = network
    assert_same(config, counts)
    back = config_from_deployment(deployment_from_config(config, counts.shape[0]))  # and back, unchanged
    assert back.keys == config.keys
    for key in config.keys:
        assert np.array_equal(np.asarray(getattr(back, key)), np.asarray(getattr(config, key))), key


# ------------------------------------------------------------------ b. saturation edge cases


BIG = 127 << 7    # 16256: the largest weight at shift 7
NEG = -128 << 7   # -16384


def test_synaptic_state_saturates_per_source_in_index_order(xylosim):
    # source 0 brings 15 * 16256 (saturating at 32767), then source 1 takes 3 * 16384 back:
    # 32767 - 49152 = -16385; decay with dash 15: -16385 >> 15 = -1, so i = -16384.
    # Summed first (243840 - 49152) it would saturate at 32767 and decay to 32766.
    config = make_config(2, 1, 1, w_in=[[127], [-128]], shifts=(7, 0, 0), threshold=32767, dash=(15, 15))
    counts = np.array([[15, 3]])
    want = assert_same(config, counts)
    assert want["i_syn"].tolist() == [[-16384]]
    # the same weights the other way round: the negative source first saturates at -32768,
    # the positive one then reaches 32767, which decays to 32766
    swapped = make_config(2, 1, 1, w_in=[[-128], [127]], shifts=(7, 0, 0), threshold=32767, dash=(15, 15))
    want = assert_same(swapped, np.array([[3, 15]]))
    assert want["i_syn"].tolist() == [[32766]]


def test_recurrent_sources_follow_the_input_sources(xylosim):
    # step 0: neuron 0 gets 2 * (1 << 7) = 256, decayed (dash 15) to 255: 2 spikes of threshold 127.
    # step 1, neuron 1: input 15 * 16256 saturates at 32767, then neuron 0's 2 recurrent spikes of
    # -16384 each: -1, decayed to 0. Recurrent first would saturate at -32768, then reach 32767.
    config = make_config(2, 2, 1, w_in=[[1, 0], [0, 127]], w_rec=[[0, -128], [0, 0]], shifts=(7, 7, 0),
                         threshold=127, dash=(15, 15))
    want = assert_same(config, np.array([[2, 0], [0, 15]]))
    assert want["spikes"][0].tolist() == [2, 0]
    assert want["i_syn"][1, 1] == 0


def test_membrane_increment_saturates_dv(xylosim):
    # step 0: source 1, 15 * -16384 -> -32768, decayed to -32767; v = -32767.
    # step 1: source 0, 15 * 16256 -> 32767 (from -32767 by saturating adds), decayed to 32766;
    # dv = -decay(v) + i = 16384 + 32766 = 49150 -> saturates at 32767, so v = 0 (unsaturated: 16383).
    config = make_config(2, 1, 1, w_in=[[127], [-128]], shifts=(7, 0, 0), threshold=32767, dash=(1, 15))
    want = assert_same(config, np.array([[0, 15], [15, 0]]))
    assert want["v_mem"].tolist() == [[-32767], [0]]
    assert want["i_syn"].tolist() == [[-32767], [32766]]


def test_bias_is_added_to_dv_with_saturation(xylosim):
    # step 0: i = -32767 (as above), dv = -32767, plus bias -32768 saturates at -32768: v = -32768.
    # step 1: no input: i decays to -32767 + 1 = -32766 (dash 15); dv = -decay(-32768) + i =
    # 16384 - 32766 = -16382, plus the bias -> -32768; v = -32768 - 32768 -> -32768.
    config = make_config(2, 1, 1, w_in=[[127], [-128]], shifts=(7, 0, 0), threshold=32767, dash=(1, 15),
                         bias=[-32768])
    want = assert_same(config, np.array([[0, 15], [0, 0]]))
    assert want["v_mem"].tolist() == [[-32768], [-32768]]
    # bias 16000: step 0: i = -32767, dv = -32767 + 16000, v = -16767; step 1: i = -32767 again,
    # dv = -decay(-16767) + i + bias = 8384 - 32767 + 16000, v = -25150; step 2: i = 32766,
    # dv = sat(12575 + 32766) = 32767, plus the bias saturates again: v = -25150 + 32767 = 7617
    # (with dv + bias unsaturated, 48767, it would be 23617)
    config = make_config(2, 1, 1, w_in=[[127], [-128]], shifts=(7, 0, 0), threshold=32767, dash=(1, 15), bias=[16000])
    want = assert_same(config, np.array([[0, 15], [0, 15], [15, 0]]))
    assert want["v_mem"].tolist() == [[-16767], [-25150], [7617]]


def test_hidden_neurons_fire_at_most_31_and_outputs_once_a_step(xylosim):
    # i = 32766, v = 32766 with threshold 1: 31 spikes, v = 32766 - 31; the output neuron gets
    # 31 * 127 one step later, far above its threshold 1, and fires once
    config = make_config(1, 1, 1, w_in=[[127]], w_out=[[127]], shifts=(7, 0, 0), threshold=1, threshold_out=1,
                         dash=(1, 15), dash_out=(1, 15))
    want = assert_same(config, np.array([[15], [0], [0]]))
    assert want["spikes"][:, 0].tolist()[0] == 31 and want["v_mem"][0, 0] == 32766 - 31
    assert want["out_spikes"][:, 0].tolist() == [0, 1, 1]
    assert want["i_syn_out"][0, 0] == 0 and want["i_syn_out"][1, 0] > 0  # one step of delay


def test_inputs_above_15_events_are_clipped(xylosim):
    config = make_config(1, 1, 1, w_in=[[3]], threshold=32767)
    assert np.array_equal(run_xylosim(config, np.array([[200]]))["i_syn"], run_xylosim(config, np.array([[15]]))["i_syn"])


def test_layer_reuse_and_synapses_kept_alive(xylosim):
    import gc

    config = make_config(3, 4, 2, w_in=np.arange(12).reshape(3, 4) - 6, w_out=np.ones((4, 2)), threshold=5)
    layer = xylo_layer(config)
    gc.collect()
    counts = np.array([[3, 1, 2], [0, 5, 1]])
    first = run_xylosim(config, counts, layer)
    again = run_xylosim(config, counts, layer)  # reset between runs
    for key in first:
        assert np.array_equal(first[key], again[key])


# ------------------------------------------------------------------ c. export round trip


@pytest.fixture(scope="module")
def xylo_run(tmp_path_factory):
    """A recurrent network trained on xylo-like (its rules in the training forward)."""
    out = tmp_path_factory.mktemp("xylo") / "run"
    train(TrainConfig(dataset="digits4x4-8", model="mlp:32r", profile="xylo-like", epochs=3, eval_chips=0,
                      timesteps=8), out, progress=False)
    return out


def test_export_xylo_runs_the_same_on_xylosim_and_the_engine(xylosim, xylo_run, tmp_path):
    path = tmp_path / "net.npz"
    command = ["export", str(xylo_run), "--profile", "xylo-like", "--format", "xylo", "--out", str(path)]
    result = subprocess.run([sys.executable, "-m", "neurosim", *command], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "adapted" not in result.stdout  # trained with Xylo's rules: nothing to convert
    assert "Xylo network (16 inputs, 32 hidden, 8 outputs; 8 steps" in result.stdout
    config = load_xylo(path)
    model, _, _ = load_run(xylo_run)
    deployment = compile_model(model, "xylo-like")
    expected = config_from_deployment(deployment)
    for key in XYLO_KEYS:
        assert np.array_equal(np.asarray(getattr(config, key)), np.asarray(getattr(expected, key))), key
    assert np.array_equal(config.weights_in, deployment.layers[0].weight.numpy().T)
    assert config.weights_rec.any() and np.array_equal(config.weights_rec, deployment.layers[0].recurrent.numpy().T)

    engine = IntegerEngine(deployment)
    test = load_dataset("digits4x4-8").test
    codes = engine.encode(test.inputs)  # event counts 0..15 [N, 1, 4, 4], the same every step
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15
    frames = codes[:, None].expand(-1, deployment.timesteps, *codes.shape[1:])
    result = engine.run_codes(frames, record=True, record_states=True)
    assert torch.equal(result.logits, engine.run(test.inputs).logits)  # codes and encoded inputs alike
    layer = xylo_layer(config)
    predictions, hidden_spikes, several = [], 0, 0
    for s in range(len(test)):
        want = run_xylosim(config, frames[s].reshape(deployment.timesteps, -1).numpy(), layer)
        assert np.array_equal(result.spikes["block0"][:, 0, s].numpy(), want["spikes"]), s
        assert np.array_equal(result.spikes["readout"][:, 0, s].numpy(), want["out_spikes"]), s
        assert np.array_equal(result.states["block0"]["v"][:, 0, s].numpy(), want["v_mem"]), s
        assert np.array_equal(result.states["block0"]["i"][:, 0, s].numpy(), want["i_syn"]), s
        assert np.array_equal(result.states["readout"]["v"][:, 0, s].numpy(), want["v_mem_out"]), s
        predictions.append(int(np.argmax(want["v_mem_out"].mean(axis=0))))
        hidden_spikes += int(want["spikes"].sum())
        several += int((want["spikes"] > 1).sum())
    predictions = torch.tensor(predictions)
    engine_predictions = result.logits[0].argmax(dim=1)
    assert torch.equal(predictions, engine_predictions)
    accuracy = float((predictions == test.targets).float().mean())
    assert accuracy == float((engine_predictions == test.targets).float().mean())
    assert hidden_spikes > 0 and accuracy > 0.5  # a trained network that spikes, well above chance (1/8)


def test_export_xylo_adapts_a_network_trained_for_another_chip(xylosim, tmp_path, capsys):
    """A network trained on the float ideal chip (hard reset, integrating readout) is refused as
    it is, naming what differs, and converted with --adapt, which lists every change."""
    run = tmp_path / "ideal"
    train(TrainConfig(dataset="digits4x4-8", model="mlp:16", profile="ideal", epochs=1, eval_chips=0,
                      timesteps=4), run, progress=False)
    path = tmp_path / "net.npz"
    command = ["export", str(run), "--profile", "xylo-like", "--format", "xylo", "--out", str(path)]
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "block0: neuron model differs from profile xylo-like" in err[0] and "--adapt" in err[0]
    assert not path.exists()
    assert main(command + ["--adapt"]) == 0
    out = capsys.readouterr().out
    assert "adapted: block0: reset hard -> soft" in out and "adapted: readout: beta 1 -> 0.75" in out
    assert "adapted: readout: synapse_decay None -> 0.75" in out
    config = load_xylo(path)
    assert int(config.dash_mem_out[0]) == 2 and int(config.dash_syn_out[0]) == 2


# ------------------------------------------------------------------ d. refusals and file errors


def test_models_that_do_not_fit_xylo_are_refused():
    profile = load_profile("xylo-like")
    wide = [{"weight": np.ones((1200, 16), dtype=np.int64), "threshold": 10},
            {"weight": np.ones((8, 1200), dtype=np.int64), "readout": True, "readout_neuron": "lif", "threshold": 10}]
    with pytest.raises(ExportError, match="max_neurons of profile xylo-like is 1000, the model needs 1200"):
        config_from_deployment(Deployment.from_integers(profile, wide, 4, (16,)))
    # built without the profile's limit checks, then exported: the same message
    narrow = [{"weight": np.ones((4, 16), dtype=np.int64), "threshold": 10},
              {"weight": np.ones((8, 4), dtype=np.int64), "readout": True, "readout_neuron": "lif", "threshold": 10}]
    deployment = Deployment.from_integers(profile, narrow, 4, (16,))
    deployment.layers[0].weight = torch.ones(4, 20, dtype=torch.int64)
    deployment.layers[0].input_shape = (20,)
    deployment.input_shape = (20,)
    with pytest.raises(ExportError, match="max_inputs of profile xylo-like is 16, the model needs 20"):
        config_from_deployment(deployment)
    with pytest.raises(ExportError, match="does not compute as Xylo does.*accumulate"):
        config_from_deployment(Deployment.from_integers(load_profile("loihi-like"), [
            {"weight": np.ones((4, 16), dtype=np.int64), "threshold": 10},
            {"weight": np.ones((8, 4), dtype=np.int64)}], 4, (16,)))


def test_export_xylo_command_refuses_a_wide_model_with_one_line(tmp_path, capsys):
    run = tmp_path / "wide"
    train(TrainConfig(dataset="digits", model="mlp:8", profile="xylo-like", epochs=1, eval_chips=0), run,
          progress=False)
    out = tmp_path / "net.npz"
    assert main(["export", str(run), "--profile", "xylo-like", "--format", "xylo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "max_inputs of profile xylo-like is 16, the model needs 64" in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["wide"]


def test_dash_zero_and_out_of_range_codes_are_refused():
    config = make_config(2, 2, 1)
    config.dash_mem = np.array([0, 0])
    with pytest.raises(ExportError, match=r"dash_mem: value 0 outside Xylo's range \[1, 15\]"):
        deployment_from_config(config, 3)
    config = make_config(2, 2, 1, threshold=0)
    with pytest.raises(ExportError, match="threshold: value 0 outside"):
        config.check()
    config = make_config(2, 2, 1, w_in=[[128, 0], [0, 0]])
    with pytest.raises(ExportError, match="weights_in: value 128 outside"):
        config.check()
    config = make_config(2, 2, 1)
    config.threshold = np.array([5, 6])
    with pytest.raises(ExportError, match="threshold: differs between hidden neurons"):
        deployment_from_config(config, 3)


def test_save_and_load_round_trip_and_corrupt_files(tmp_path):
    config = make_config(3, 2, 2, w_in=[[1, -2], [3, -128], [127, 0]], w_rec=[[0, 5], [-5, 0]], w_out=[[1, 2], [3, 4]],
                         threshold=7, threshold_out=9, bias=[-3, 4], shifts=(1, 2, 3), dash=(2, 3), dash_out=(4, 5))
    path = save_xylo(config, tmp_path / "net.npz")
    loaded = load_xylo(path)
    for key in XYLO_KEYS:
        assert np.array_equal(np.asarray(getattr(loaded, key)), np.asarray(getattr(config, key))), key
    assert loaded.has_bias is True and loaded.weight_shift_out == 3
    with pytest.raises(ExportError, match="already exists"):
        save_xylo(config, path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def one_line_error(target: Path, match: str) -> None:
        with pytest.raises(ArtifactError, match=match) as info:
            load_xylo(target)
        assert "\n" not in str(info.value) and str(target) in str(info.value)

    blob = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    one_line_error(truncated, "unreadable")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    one_line_error(garbage, r"not an \.npz archive")
    partial = tmp_path / "partial.npz"
    np.savez(partial, weights_in=np.zeros((2, 2), dtype=np.int64))
    one_line_error(partial, "missing weights_rec")
    floats = tmp_path / "floats.npz"
    np.savez(floats, **{key: np.asarray(getattr(config, key)) for key in XYLO_KEYS} | {"threshold": np.full(2, 7.0)})
    one_line_error(floats, "threshold: dtype float64")
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{key: np.asarray(getattr(config, key)) for key in XYLO_KEYS}
             | {"bias": np.array([object(), object()], dtype=object)})
    one_line_error(objects, "pickled")
    one_line_error(tmp_path / "missing.npz", "no such Xylo configuration file")


def test_second_synaptic_state_round_trips_and_matches(xylosim, tmp_path):
    """Xylo's second synaptic state: an input onto it only (with its own, slower decay), a
    recurrent weight onto it, and a saturating pair of sources — xylosim and the engine agree on
    both synaptic traces, and the file keeps the three extra fields."""
    config = make_config(2, 2, 1, w_in=[[0, 0], [0, 0]], w_rec=[[0, 0], [0, 0]], w_out=[[50], [50]],
                         threshold=30000, shifts=(7, 0, 0), dash=(4, 1), dash_out=(4, 1))
    config.weights_in2 = np.array([[127, 0], [-128, 5]])  # 127 << 7 = 16256, two steps saturate
    config.weights_rec2 = np.array([[0, 3], [0, 0]])
    config.dash_syn2 = np.full(2, 6)
    counts = np.array([[15, 0], [15, 0], [0, 15], [0, 0], [3, 3]])
    want = assert_same(config, counts)
    assert int(want["i_syn2"].max()) > 30000 and int(want["i_syn"].max()) == 0  # only syn 2 received input
    path = save_xylo(config, tmp_path / "two.npz")
    back = load_xylo(path)
    assert back.second_synapse and np.array_equal(back.weights_in2, config.weights_in2)
    assert np.array_equal(back.dash_syn2, config.dash_syn2)
    config.dash_syn2 = None  # two of the three fields: refused, naming the missing one
    with pytest.raises(ExportError, match="without dash_syn2"):
        config.check()
