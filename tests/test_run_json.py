"""``neurosim run --json`` and ``--check-parity`` (release issue, point A), and energy from the
profiles' published figures (point B): run, sweep and the report against hand counts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from neurosim.cli import main
from neurosim.device import load_profile, sample_chips
from neurosim.engine import IntegerEngine, deployment_shapes
from neurosim.engine.evaluate import evaluate_deployment
from neurosim.engine.parity import check_parity, compare_batch
from neurosim.export import compile_model, load_deployment
from neurosim.export.deployment import Deployment
from neurosim.sweep import SweepSpec, run_sweep
from neurosim.train import TrainConfig, load_run, train
from neurosim.train.datasets import load_dataset

# Davies et al. 2018, IEEE Micro 38(1), Table 2 (device_profiles/loihi-like.yaml references)
LOIHI_SYNOP_PJ, LOIHI_SPIKE_PJ, LOIHI_UPDATE_PJ = 23.6, 1.7, 52.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real trained run (digits, mlp:32, hardreset-noisy) and its artifact."""
    root = tmp_path_factory.mktemp("runjson")
    run = root / "run"
    train(TrainConfig(epochs=2, model="mlp:32", eval_chips=0), run, progress=False)
    assert main(["export", str(run), "--out", str(root / "art")]) == 0
    return run, root / "art"


def _json(capsys) -> tuple[dict, str]:
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"stdout must hold one JSON object only, got {out!r}"
    return json.loads(lines[0]), err


@pytest.mark.parametrize("chips,noise", [(3, True), (2, False)])
def test_run_json_is_one_object_with_the_engines_own_counts(exported, capsys, chips, noise):
    _, art = exported
    argv = ["run", str(art), "--chips", str(chips), "--json"] + ([] if noise else ["--no-noise"])
    assert main(argv) == 0
    data, _ = _json(capsys)
    deployment = load_deployment(art)
    report = evaluate_deployment(deployment, load_dataset("digits").test, chips=chips, seed=1234, noise=noise,
                                 batch_size=256, progress=False)
    assert data["chips"] == chips and data["chip_indices"] == list(range(chips))
    assert data["accuracy_mean"] == pytest.approx(report.mean_accuracy)
    assert data["accuracy_std"] == pytest.approx(report.std_accuracy)
    assert data["accuracy_min"] == min(report.accuracies) and data["accuracy_max"] == max(report.accuracies)
    assert data["per_chip"]["accuracy"] == report.accuracies
    for key, what in (("spikes", "spikes"), ("synops", "synaptic_ops"), ("saturations", "saturations"),
                      ("neuron_updates", "neuron_updates")):
        per_layer = {name: sum(c[what]) / chips for name, c in report.layer_counts.items()}
        assert set(data["layers"]) == set(per_layer)
        for name, value in per_layer.items():
            assert data["layers"][name][f"{key}_per_sample"] == pytest.approx(value)
        assert data[f"{key}_per_sample"] == pytest.approx(sum(per_layer.values()))
    assert data["synops_per_sample"] > 0 and data["spikes_per_sample"] > 0
    # hardreset-noisy publishes no energy figures: unknown is null, never 0 or NaN
    assert data["energy_pj_per_sample"] is None
    assert all(layer["energy_pj_per_sample"] is None for layer in data["layers"].values())


def test_check_parity_passes_on_a_real_trained_and_exported_run(exported, capsys):
    run, art = exported
    assert main(["run", str(art), "--chips", "3", "--json", "--check-parity"]) == 0
    data, err = _json(capsys)
    assert data["parity"]["mismatch"] is None and data["parity"]["spikes_compared"] > 0
    assert "identical" in err  # the note goes to stderr under --json
    assert main(["run", str(art), "--chips", "2", "--no-noise", "--check-parity", "--run", str(run)]) == 0
    assert "parity:" in capsys.readouterr().out


def test_check_parity_fails_naming_layer_step_and_neuron_when_one_weight_code_differs(exported, tmp_path, capsys):
    _, art = exported
    deployment = load_deployment(art)
    pixel = int(load_dataset("digits").test.inputs.flatten(1).mean(0).argmax())  # the most active input
    weight = deployment.layers[0].weight
    weight[5, pixel] = int(weight.max()) * 8 if int(weight[5, pixel]) < 0 else int(weight.min()) * 8
    deployment.save(tmp_path / "bad")  # still a valid artifact, metadata.source kept
    assert main(["run", str(tmp_path / "bad"), "--chips", "2", "--json", "--check-parity"]) == 1
    data, err = _json(capsys)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parity check failed:")
    assert "layer block0 step" in lines[0] and "neuron [5]" in lines[0] and "chip" in lines[0]
    assert data["parity"]["mismatch"] in lines[0]


def test_parity_mismatch_is_the_first_layer_step_and_neuron_in_process(exported):
    run, art = exported
    dataset = load_dataset("digits")
    model, _, _ = load_run(run, dataset)
    deployment = load_deployment(art)
    assert check_parity(model, deployment, dataset.test, chips=2, batch_size=128).mismatch is None
    with torch.no_grad():  # neuron 7's weights moved in the training forward only: it differs from the artifact
        model.blocks[0].synapse.weight[7] *= -1  # max |w| kept: the same weight step
    instances = sample_chips(deployment.profile, deployment_shapes(deployment), n=2, seed=1234)
    result = compare_batch(model, deployment, instances, dataset.test.inputs[:32], batch=0)
    m = result.mismatch
    assert m is not None and m.layer == "block0" and m.neuron == (7,) and m.engine != m.training
    assert str(m).startswith(f"layer block0 step {m.step} neuron [7] (chip {m.chip}, sample {m.sample})")


def test_check_parity_without_the_training_run_is_one_line_error(exported, tmp_path, capsys):
    _, art = exported
    deployment = load_deployment(art)
    deployment.metadata["source"] = str(tmp_path / "moved-away")
    deployment.save(tmp_path / "orphan")
    assert main(["run", str(tmp_path / "orphan"), "--chips", "1", "--json", "--check-parity"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "metadata.source" in err and "moved-away" in err and "--run RUN_DIR" in err
    assert main(["run", str(art), "--run", str(tmp_path)]) == 2  # --run alone
    assert "--check-parity" in capsys.readouterr().err
    assert main(["run", str(art), "--check-parity", "--run", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------ energy


def _loihi_deployment() -> Deployment:
    """A tiny loihi-like deployment for digits (64 inputs -> 6 -> 10) with fixed integer weights."""
    g = torch.Generator().manual_seed(0)
    layers = [{"weight": torch.randint(-2, 4, (6, 64), generator=g).tolist(), "threshold": 20000},
              {"weight": torch.randint(-3, 4, (10, 6), generator=g).tolist(), "readout": True}]
    return Deployment.from_integers(load_profile("loihi-like"), layers, timesteps=4, input_shape=(1, 8, 8))


def _hand_energy(deployment: Deployment, x: torch.Tensor) -> dict[str, float]:
    """Energy per layer (pJ, summed over ``x``) on the nominal chip, counted by hand from the
    input codes and the recorded spikes: synaptic ops = non-zero inputs delivered x fan-out
    (a synaptic delay of d steps drops the last d steps' inputs), spikes, neuron updates =
    steps x samples x neurons; times Davies 2018 Table 2's figures."""
    engine = IntegerEngine(deployment)
    result = engine.run(x, record=True)
    steps, first, readout = deployment.timesteps, deployment.layers[0], deployment.layers[1]
    nonzero = float((engine.encode(x) != 0).sum())
    spikes = result.spikes["block0"][:, 0].to(torch.float64)  # [T, batch, 6]
    synops = {"block0": nonzero * (steps - first.delay) * first.weight.shape[0],
              "readout": float(spikes[:steps - readout.delay].sum()) * readout.weight.shape[0]}
    counted = {"block0": float(spikes.sum()), "readout": 0.0}
    updates = {"block0": steps * len(x) * 6, "readout": steps * len(x) * 10}
    return {name: synops[name] * LOIHI_SYNOP_PJ + counted[name] * LOIHI_SPIKE_PJ + updates[name] * LOIHI_UPDATE_PJ
            for name in synops}


def test_loihi_energy_per_sample_and_layer_equals_a_hand_count(tmp_path, capsys):
    deployment = _loihi_deployment()
    split = load_dataset("digits").test
    hand = _hand_energy(deployment, split.inputs)
    assert hand["block0"] > 0 and hand["readout"] > 0
    n = len(split)
    # the report of one nominal-like chip with its noise off equals the hand count
    report = evaluate_deployment(_nominal(deployment), split, chips=1, noise=False, batch_size=100, progress=False)
    for name in hand:
        assert report.layer_energy_pj[name][0] == pytest.approx(hand[name] / n, rel=1e-12)
    assert report.energy_pj_per_sample[0] == pytest.approx(sum(hand.values()) / n, rel=1e-12)
    # the command: text shows energy per sample, --json carries it per sample and per layer
    deployment.save(tmp_path / "loihi")
    assert main(["run", str(tmp_path / "loihi"), "--chips", "2"]) == 0
    assert "nJ per sample" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "loihi"), "--chips", "2", "--json"]) == 0
    data, _ = _json(capsys)
    for name, layer in data["layers"].items():  # the published figures times the engine's counts
        expected = (layer["synops_per_sample"] * LOIHI_SYNOP_PJ + layer["spikes_per_sample"] * LOIHI_SPIKE_PJ
                    + layer["neuron_updates_per_sample"] * LOIHI_UPDATE_PJ)
        assert layer["energy_pj_per_sample"] == pytest.approx(expected, rel=1e-12)
    assert data["energy_pj_per_sample"] == pytest.approx(sum(l["energy_pj_per_sample"] for l in data["layers"].values()))


def _nominal(deployment: Deployment) -> Deployment:
    """The deployment on its profile with every sigma 0: chip 0 is the nominal chip."""
    import dataclasses
    return dataclasses.replace(deployment, profile=deployment.profile.scaled(0.0))


def test_sweep_energy_per_sample_and_layer_equals_the_hand_count(tmp_path):
    import csv
    deployment = _nominal(_loihi_deployment())
    deployment.save(tmp_path / "art")
    split = load_dataset("digits").test
    hand = {name: e / len(split) for name, e in _hand_energy(deployment, split.inputs).items()}
    summary = run_sweep(SweepSpec(source=str(tmp_path / "art"), scales=[1.0], instances=2, seed=0), tmp_path / "sw",
                        progress=False)
    # every sigma 0 and no dynamic noise in the profile: both chips are the nominal one
    assert summary[0]["energy_pj_per_sample_mean"] == pytest.approx(sum(hand.values()), rel=1e-12)
    assert summary[0]["energy_pj_per_sample_std"] == pytest.approx(0.0, abs=1e-9)
    for name, value in hand.items():
        assert summary[0][f"energy_pj_{name}_mean"] == pytest.approx(value, rel=1e-12)
    with open(tmp_path / "sw" / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(float(r["energy_pj_readout"]) == pytest.approx(hand["readout"]) for r in rows)


def test_profiles_carry_published_energy_or_say_there_is_none():
    loihi = load_profile("loihi-like")
    assert (loihi.energy.per_synaptic_op_pj, loihi.energy.per_spike_pj, loihi.energy.per_neuron_update_pj) == (
        LOIHI_SYNOP_PJ, LOIHI_SPIKE_PJ, LOIHI_UPDATE_PJ)
    for key in ("energy", "energy.per_synaptic_op_pj", "energy.per_spike_pj", "energy.per_neuron_update_pj"):
        assert "Davies" in loihi.references[key] or "Table 2" in loihi.references[key]
    for name in ("xylo-like", "hardreset-noisy", "analog-mismatch", "ideal"):
        profile = load_profile(name)
        assert profile.energy.per_synaptic_op_pj is None and profile.energy.per_spike_pj is None
        assert profile.energy.per_neuron_update_pj is None
        assert profile.references["energy"].startswith("No figures")
    assert "291 uW" in load_profile("xylo-like").references["energy"]


def test_sweep_and_train_help_say_where_their_machine_readable_results_are(capsys):
    for command, files in (("sweep", ("results.csv", "summary.csv")), ("train", ("metrics.json",))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Machine-readable results" in text and all(f in text for f in files)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--json" in capsys.readouterr().out


def test_run_json_is_valid_json_when_values_are_not_finite():
    from neurosim.engine.evaluate import DeploymentReport
    report = DeploymentReport("p", (0,), [math.nan], 1, {"block0": {w: [math.inf] for w in
                              ("spikes", "synaptic_ops", "neuron_updates", "saturations")}})
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["accuracy_mean"] is None and json.loads(text)["layers"]["block0"]["spikes_per_sample"] is None
