"""Xylo (issue 9): neurosim's integer engine on the xylo-like rules against SynSense's xylosim
0.1.3 bit for bit (spike counts, membranes and synaptic states of hidden and output neurons at
every step), on any configuration xylosim takes (thresholds, biases and dashes per neuron, dash 0
included), and ``neurosim export --format xylo`` / ``neurosim import FILE.npz --artifact``.

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
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from neurosim.cli import main
from neurosim.engine import IntegerEngine
from neurosim.errors import ArtifactError, ExportError
from neurosim.engine.reference import reference_run
from neurosim.export import Deployment, compile_model, load_deployment
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
    """A configuration; thresholds and dashes are one number for the whole population or one per
    neuron (``dash = (dash_mem, dash_syn)``, each a number or an array)."""
    def dense(value, shape):
        return np.zeros(shape, dtype=np.int64) if value is None else np.asarray(value, dtype=np.int64).reshape(shape)

    def per_neuron(value, n):
        return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).copy()

    has_bias = bias is not None or bias_out is not None
    return XyloConfig(
        weights_in=dense(w_in, (n_in, n_hid)), weights_rec=dense(w_rec, (n_hid, n_hid)),
        weights_out=dense(w_out, (n_hid, n_out)), threshold=per_neuron(threshold, n_hid),
        threshold_out=per_neuron(threshold_out, n_out), bias=dense(bias, (n_hid,)), bias_out=dense(bias_out, (n_out,)),
        has_bias=has_bias, weight_shift_inp=shifts[0], weight_shift_rec=shifts[1], weight_shift_out=shifts[2],
        dash_mem=per_neuron(dash[0], n_hid), dash_syn=per_neuron(dash[1], n_hid),
        dash_mem_out=per_neuron(dash_out[0], n_out), dash_syn_out=per_neuron(dash_out[1], n_out))


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
    return {key: np.asarray(getattr(config, key)).tolist() for key in config.keys}


def assert_same_config(got: XyloConfig, want: XyloConfig) -> None:
    """Two configurations hold the same fields with the same values."""
    assert got.keys == want.keys, (got.keys, want.keys)
    for key in want.keys:
        assert np.array_equal(np.asarray(getattr(got, key)), np.asarray(getattr(want, key))), \
            (key, np.asarray(getattr(got, key)).tolist(), np.asarray(getattr(want, key)).tolist())


def assert_reference_agrees(config: XyloConfig, counts: np.ndarray, want: dict[str, np.ndarray]) -> None:
    """The slow reference (neurosim/engine/reference.py, each neuron's own threshold, bias and
    dashes) on the deployment of ``config`` gives xylosim's recorded quantities too: input
    counts c are given as c / 15, which the reference encodes back to c."""
    deployment = deployment_from_config(config, counts.shape[0])
    frames = (torch.from_numpy(counts).to(torch.float32) / 15)[None]  # [1, T, N_in] in [0, 1]
    expected = reference_run(deployment, frames)
    names = {"spikes": ("block0", None), "out_spikes": ("readout", None), "v_mem": ("block0", "v"),
             "i_syn": ("block0", "i"), "v_mem_out": ("readout", "v"), "i_syn_out": ("readout", "i"),
             "i_syn2": ("block0", "i2")}
    for key, value in want.items():
        layer, state = names[key]
        got = expected["spikes"][layer] if state is None else expected["states"][layer][state]
        assert np.array_equal(got[:, 0], value), (key, got[:, 0].tolist(), value.tolist())


# ------------------------------------------------------------------ a. random networks


@st.composite
def networks(draw):
    """A network in Xylo's ranges: full int8 weights (dense or sparse, small or large), shifts
    0..7, dashes 0..15 and thresholds from 1 (many spikes a step) to 32767, each the same for a
    population or drawn per neuron, biases to +-32768, input counts 0..15, 1..12 steps."""
    n_in, n_hid, n_out = draw(st.integers(1, 16)), draw(st.integers(1, 12)), draw(st.integers(1, 8))
    steps = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    def weights(shape):
        top = draw(st.sampled_from((1, 8, 128)))
        values = rng.integers(-top, top, shape, endpoint=top < 128)
        return values * (rng.random(shape) < draw(st.sampled_from((0.2, 0.6, 1.0))))

    def threshold(n):
        per_neuron = draw(st.booleans())
        lo, hi = draw(st.sampled_from(((1, 8), (8, 1000), (1000, 32768), (1, 32768))))
        return rng.integers(lo, hi, n) if per_neuron else int(rng.integers(lo, hi))

    def biases(n):
        kind = draw(st.sampled_from(("none", "small", "large")))
        if kind == "none":
            return None
        top = 100 if kind == "small" else 32768
        return rng.integers(-top, top, n, endpoint=kind == "small")

    def dash_values(n):
        kind = draw(st.sampled_from(("one", "per neuron", "with zeros")))
        if kind == "one":
            return draw(st.integers(0, 15))
        values = rng.integers(0, 16, n)
        return np.where(rng.random(n) < 0.4, 0, values) if kind == "with zeros" else values

    def dash(n):
        return (dash_values(n), dash_values(n))

    bias, bias_out = biases(n_hid), biases(n_out)
    if (bias is None) != (bias_out is None) and draw(st.booleans()):
        bias, bias_out = None, None
    config = make_config(n_in, n_hid, n_out, w_in=weights((n_in, n_hid)), w_rec=weights((n_hid, n_hid)),
                         w_out=weights((n_hid, n_out)), threshold=threshold(n_hid), threshold_out=threshold(n_out),
                         bias=bias, bias_out=bias_out, shifts=tuple(draw(st.integers(0, 7)) for _ in range(3)),
                         dash=dash(n_hid), dash_out=dash(n_out))
    if draw(st.booleans()):  # Xylo's second synaptic state of the hidden neurons
        config.weights_in2, config.weights_rec2 = weights((n_in, n_hid)), weights((n_hid, n_hid))
        config.dash_syn2 = np.broadcast_to(dash_values(n_hid), (n_hid,)).copy()
    counts = rng.integers(0, draw(st.sampled_from((2, 16))), (steps, n_in))
    return config, counts


@settings(max_examples=max(1, int(150 * SCALE)), **SETTINGS)
@given(networks())
def test_engine_matches_xylosim_on_random_networks(xylosim, network):
    """Random configurations, thresholds and dashes per neuron (dash 0 included): xylosim, the
    engine and the slow reference agree at every step; the deployment converts back unchanged."""
    config, counts = network
    want = assert_same(config, counts)
    assert_reference_agrees(config, counts, want)
    deployment = deployment_from_config(config, counts.shape[0])
    assert_same_config(config_from_deployment(deployment), config)  # and back, unchanged
    varied = {name for layer in deployment.layers for name in layer.per_neuron}
    if any(np.unique(np.asarray(getattr(config, key))).size > 1 for key in ("threshold", "dash_mem", "dash_syn")):
        assert varied  # values that differ between neurons are held per neuron
    for name in sorted(varied):  # what the example exercised (pytest --hypothesis-show-statistics)
        event(f"per-neuron {name}")
    for key in ("dash_mem", "dash_syn", "dash_mem_out", "dash_syn_out", "dash_syn2"):
        if getattr(config, key) is not None and bool((np.asarray(getattr(config, key)) == 0).any()):
            event("some dash 0")
    if bool(((want["v_mem"] == -32768) & (np.asarray(config.dash_mem) == 0)).any()):
        event("v_mem -32768 with dash_mem 0")
    if int(want["spikes"].sum()) or int(want["out_spikes"].sum()):
        event("spikes")


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


def seeded_config(seed: int, n_in: int = 4, n_hid: int = 6, n_out: int = 3) -> XyloConfig:
    """A configuration with every per-neuron value drawn (seeded numpy): thresholds, biases and
    dashes differ between neurons, a third of the dashes 0, a second synaptic state."""
    rng = np.random.default_rng(seed)

    def dashes(n):
        return np.where(rng.random(n) < 0.33, 0, rng.integers(1, 16, n))

    config = make_config(n_in, n_hid, n_out, w_in=rng.integers(-128, 128, (n_in, n_hid)),
                         w_rec=rng.integers(-128, 128, (n_hid, n_hid)), w_out=rng.integers(-128, 128, (n_hid, n_out)),
                         threshold=rng.integers(1, 4000, n_hid), threshold_out=rng.integers(1, 4000, n_out),
                         bias=rng.integers(-200, 200, n_hid), bias_out=rng.integers(-200, 200, n_out),
                         shifts=(4, 2, 3), dash=(dashes(n_hid), dashes(n_hid)), dash_out=(dashes(n_out), dashes(n_out)))
    config.weights_in2, config.weights_rec2 = rng.integers(-128, 128, (n_in, n_hid)), rng.integers(-128, 128, (n_hid, n_hid))
    config.dash_syn2 = dashes(n_hid)
    return config


def test_per_neuron_configuration_through_artifact_and_cli(xylosim, tmp_path, capsys):
    """``neurosim import FILE.npz --artifact`` of a configuration with per-neuron values (dash 0
    included) writes an artifact of format version 2 that runs as xylosim does, and ``neurosim
    export ARTIFACT --format xylo`` writes the same configuration back."""
    config = seeded_config(3)
    source = save_xylo(config, tmp_path / "in.npz")
    art, out = tmp_path / "art", tmp_path / "out.npz"
    assert main(["import", str(source), "--artifact", "--timesteps", "7", "--out", str(art)]) == 0
    assert "threshold per neuron" in capsys.readouterr().out
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    assert manifest["format_version"] == 2
    entry = manifest["layers"][0]
    assert set(entry["per_neuron"]) == {"threshold", "beta", "synapse_decay", "synapse_decay2"}
    assert entry["integer"]["decay_factor"] == config.dash_mem.tolist()  # the manifest's integer codes per neuron
    assert entry["integer"]["threshold"] == config.threshold.tolist()
    deployment = load_deployment(art)
    assert_same_config(config_from_deployment(deployment), config)
    counts = np.random.default_rng(4).integers(0, 16, (7, 4))
    want = run_xylosim(config, counts)
    result = IntegerEngine(deployment).run_codes(torch.from_numpy(counts)[None], record=True, record_states=True)
    assert np.array_equal(result.spikes["block0"][:, 0, 0].numpy(), want["spikes"])
    assert np.array_equal(result.states["block0"]["i2"][:, 0, 0].numpy(), want["i_syn2"])
    assert np.array_equal(result.states["readout"]["v"][:, 0, 0].numpy(), want["v_mem_out"])
    assert main(["export", str(art), "--format", "xylo", "--out", str(out)]) == 0
    assert "from the artifact" in capsys.readouterr().out
    assert_same_config(load_xylo(out), config)
    with np.load(source) as a, np.load(out) as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)

    # what the artifact and the Xylo file do not take: one line, exit 2, nothing written
    for command, words in ((["export", str(art), "--out", str(tmp_path / "x")], "exports only with --format xylo"),
                           (["export", str(art), "--format", "xylo", "--profile", "xylo-like", "--out",
                             str(tmp_path / "x.npz")], "compiled for its profile already"),
                           (["import", str(source), "--artifact", "--out", str(tmp_path / "x")], "--timesteps T"),
                           (["import", str(source), "--timesteps", "3", "--out", str(tmp_path / "x")], "--artifact")):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "in.npz", "out.npz"]


def test_artifact_versions_one_value_per_layer_and_per_neuron(tmp_path):
    """A deployment whose neurons share their values writes format version 1, as before (so
    readers of version 1 read it); per-neuron values need version 2, and a manifest that says 1
    but holds them, or holds them in a wrong shape or for an unknown quantity, is refused."""
    uniform = deployment_from_config(make_config(2, 3, 1, threshold=9, dash=(0, 4), bias=[1, 2, 3]), 4)
    assert not any(layer.per_neuron for layer in uniform.layers)
    uniform.save(tmp_path / "v1")
    assert yaml.safe_load((tmp_path / "v1" / "manifest.yaml").read_text())["format_version"] == 1
    assert_same_config(config_from_deployment(load_deployment(tmp_path / "v1")),
                       config_from_deployment(uniform))
    varied = deployment_from_config(seeded_config(8), 4)
    varied.save(tmp_path / "v2")

    def edited(name: str, change) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tensors.npz").write_bytes((tmp_path / "v2" / "tensors.npz").read_bytes())
        manifest = yaml.safe_load((tmp_path / "v2" / "manifest.yaml").read_text())
        change(manifest)
        (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        return folder

    assert_same_config(config_from_deployment(load_deployment(edited("same", lambda m: None))), seeded_config(8))
    cases = {"as-v1": (lambda m: m.update(format_version=1), "per-neuron values need format version 2"),
             "v3": (lambda m: m.update(format_version=3), "format version 3, this neurosim reads version 1 or 2"),
             "shape": (lambda m: m["layers"][0]["per_neuron"]["threshold"].update(shape=[2, 3]), r"has shape \[6\]"),
             "unknown": (lambda m: m["layers"][0]["per_neuron"].update(weight={"key": "block0.weight"}),
                         "per_neuron weight"),
             "first": (lambda m: m["layers"][0]["neuron"].update(threshold=12345.0), "first neuron's per-neuron")}
    for name, (change, words) in cases.items():
        with pytest.raises(ArtifactError, match=words) as info:
            load_deployment(edited(name, change))
        assert "\n" not in str(info.value) and name in str(info.value)


def test_per_neuron_values_of_any_chip_from_integers():
    """Deployment.from_integers takes per-neuron arrays on any profile: values that differ are
    held per neuron, equal ones as the layer's value, another shape is refused naming the layer;
    a chip's variation perturbs each neuron's own nominal threshold; NIR export refuses them."""
    profile = load_profile("hardreset-noisy")
    layers = [{"weight": np.ones((3, 2), dtype=np.int64), "threshold": np.array([200, 500, 900]), "unit": 1e-4, "beta": np.full(3, 0.5),
               "v_reset": np.array([0, -1, 1])},
              {"weight": np.ones((2, 3), dtype=np.int64), "readout": True}]
    deployment = Deployment.from_integers(profile, layers, 3, (2,))
    hidden = deployment.layers[0]
    assert sorted(hidden.per_neuron) == ["threshold", "v_reset"] and hidden.beta == 0.5
    assert hidden.neuron_values("threshold").tolist() == pytest.approx([0.02, 0.05, 0.09])
    with pytest.raises(ExportError, match=r"block0: threshold of shape \[2\], expected one value or one per neuron \[3\]"):
        Deployment.from_integers(profile, [dict(layers[0], threshold=np.array([200, 500])), layers[1]], 3, (2,))
    from neurosim.device import sample_chips
    from neurosim.engine import deployment_shapes

    chips = sample_chips(profile, deployment_shapes(deployment), n=4, seed=3)
    engine = IntegerEngine(deployment, chips)
    theta = engine.layers[0].threshold[:, 0]  # [chips, neurons]: codes around 200, 500, 900 (sigma 0.001 = 10 units)
    assert theta.shape == (4, 3) and bool((theta[:, 2] > theta[:, 0]).all())
    assert not bool((theta == theta[:1]).all())  # the chips differ
    nir = pytest.importorskip("nir", reason="the nir extra is not installed")
    assert nir is not None
    from neurosim.export.nir_graph import to_nir
    with pytest.raises(ExportError, match="block0: per-neuron threshold, v_reset have no NIR form here"):
        to_nir(deployment)


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


def test_out_of_range_codes_are_refused():
    config = make_config(2, 2, 1)
    config.dash_mem = np.array([0, 16])
    with pytest.raises(ExportError, match=r"dash_mem: value 16 outside Xylo's range \[0, 15\]"):
        deployment_from_config(config, 3)
    config = make_config(2, 2, 1, threshold=0)
    with pytest.raises(ExportError, match="threshold: value 0 outside"):
        config.check()
    config = make_config(2, 2, 1, w_in=[[128, 0], [0, 0]])
    with pytest.raises(ExportError, match="weights_in: value 128 outside"):
        config.check()
    # a deployment whose per-neuron decay is no 1 - 2^-dash: refused naming the layer and the decay
    deployment = deployment_from_config(make_config(2, 2, 1, dash=([0, 3], 2)), 3)
    deployment.layers[0].per_neuron["beta"][1] = 0.8
    with pytest.raises(ExportError, match=r"block0: dash_mem: decay 0.8 is not 1 - 2\^-dash"):
        config_from_deployment(deployment)


def test_dash_zero_clears_the_state_every_step(xylosim):
    """dash 0 is beta 0: xylosim's decrement v >> 0 is the whole state. A synaptic state with
    dash_syn 0 is cleared after it is added (the membrane never sees it); a membrane with dash_mem
    0 holds only this step's synaptic state and bias (neuron 1, dash_syn 1: i = 75 - 37 = 38, then
    38 + 75 - 56 = 57, 57 - 28 = 29, 29 - 14 = 15; and v = i)."""
    config = make_config(1, 3, 1, w_in=[[5, 5, 5]], threshold=30000, bias=[0, 0, 7], dash=([1, 0, 0], [0, 1, 1]))
    want = assert_same(config, np.array([[15], [15], [0], [0]]))
    assert want["i_syn"][:, 0].tolist() == [0, 0, 0, 0] and want["v_mem"][:, 0].tolist() == [0, 0, 0, 0]
    assert want["i_syn"][:, 1].tolist() == [38, 57, 29, 15]  # 75 - 37, 38 + 75 - 56, 57 - 28, 29 - 14
    assert want["v_mem"][:, 1].tolist() == want["i_syn"][:, 1].tolist()  # no memory: v = i_syn
    assert want["v_mem"][:, 2].tolist() == [38 + 7, 57 + 7, 29 + 7, 15 + 7]
    deployment = deployment_from_config(config, 4)
    assert deployment.layers[0].per_neuron["beta"].tolist() == [0.5, 0.0, 0.0]
    assert deployment.layers[0].per_neuron["synapse_decay"].tolist() == [0.0, 0.5, 0.5]


def test_dash_zero_negated_decrement_wraps_like_int16(xylosim):
    """With dash_mem 0 and v = -32768, xylosim's -decay(v) is int16: -(-32768) = -32768, so a
    synaptic state of 32766 gives dv = -2 and v stays -32768 (a wider -decay(v) would give dv =
    32767 and v = -1). Two synaptic states cancelling (32766 - 32766) leave v at -32768 too."""
    config = make_config(2, 1, 1, w_in=[[-128], [127]], shifts=(7, 0, 0), threshold=32767, dash=(0, 15), bias=[-1])
    want = assert_same(config, np.array([[15, 0], [0, 15]]))
    assert want["i_syn"][:, 0].tolist() == [-32767, 32766] and want["v_mem"][:, 0].tolist() == [-32768, -32768]
    assert_reference_agrees(config, np.array([[15, 0], [0, 15]]), want)
    two = make_config(2, 1, 1, w_in=[[-128], [127]], shifts=(7, 0, 0), threshold=32767, dash=(0, 15))
    two.weights_in2, two.weights_rec2, two.dash_syn2 = np.array([[-128], [0]]), np.zeros((1, 1), np.int64), np.array([15])
    want = assert_same(two, np.array([[15, 0], [0, 15]]))
    assert want["v_mem"][:, 0].tolist() == [-32768, -32768]


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
