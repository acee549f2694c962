"""The training bridge: chips in the loop, fake quantization, determinism, resume, the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from neurosim.cli import main
from neurosim.device import fixedpoint as fp
from neurosim.device import load_profile, sample_chips
from neurosim.errors import ConfigError
from neurosim.nn import NeuronOptions, build_model
from neurosim.train import ChipContext, TrainConfig, Trainer, load_checkpoint, train
from neurosim.train.config import load_config
from neurosim.train.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "model": "mlp:32", "eval_chips": 2, **kw})


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


# ------------------------------------------------------------------ noise and fake quantization

def test_each_batch_sees_its_own_chip_and_a_pool_repeats(digits):
    profile = load_profile("analog-mismatch")
    torch.manual_seed(0)
    model = build_model("mlp:16", (1, 8, 8), 10, 2, NeuronOptions(beta=profile.beta))
    fresh = Trainer(model, profile, small(profile="analog-mismatch"), digits)
    t0, t1 = fresh.training_chip(0), fresh.training_chip(1)
    assert t0.chips.indices == (0,) and t1.chips.indices == (1,)
    assert not torch.equal(t0.chips.thresholds("block0"), t1.chips.thresholds("block0"))
    pooled = Trainer(model, profile, small(profile="analog-mismatch", chip_pool=3), digits)
    assert torch.equal(pooled.training_chip(1).chips.thresholds("block0"),
                       pooled.training_chip(4).chips.thresholds("block0"))
    assert not torch.equal(pooled.training_chip(1).chips.thresholds("block0"),
                           pooled.training_chip(2).chips.thresholds("block0"))
    quiet = Trainer(model, profile, small(profile="analog-mismatch", noise=False), digits)
    assert quiet.training_chip(5) is None  # float chip without noise: the ideal forward


def test_dynamic_noise_changes_the_forward_every_batch(digits):
    profile = load_profile("analog-mismatch")
    torch.manual_seed(0)
    model = build_model("mlp:16", (1, 8, 8), 10, 2, NeuronOptions(beta=profile.beta))
    x = digits.test.inputs[:32]
    chips = sample_chips(profile, model.layer_shapes(), n=1, seed=0)
    from neurosim.device import DynamicNoise
    noise = DynamicNoise(profile, 0, chips.indices)
    a = model(x, ChipContext(profile, chips, noise, batch=0))
    b = model(x, ChipContext(profile, chips, noise, batch=1))
    c = model(x, ChipContext(profile, chips, noise, batch=0))
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_fake_quantized_weights_are_the_device_layer_codes():
    profile = load_profile("hardreset-noisy")
    torch.manual_seed(1)
    model = build_model("mlp:16", (1, 8, 8), 10, 2, NeuronOptions(beta=profile.beta))
    ctx = ChipContext(profile)
    w = model.blocks[1 - 1].synapse.weight
    x = torch.rand(4, 64)
    xs, codes, bias, unit = ctx.synapse("block0", w, model.blocks[0].synapse.bias, True, x,
                                        model.blocks[0].node.threshold)
    step = fp.quantization_scale(w, 8, "per_layer")
    step = torch.maximum(step, torch.tensor(1.0) / (ctx.threshold_ceiling() / 127))
    assert torch.equal(codes, fp.quantize(w, step, 8).to(codes.dtype))
    assert torch.equal(xs, fp.quantize(x, 1 / 127, 8).to(xs.dtype))
    assert torch.all(codes == codes.round()) and codes.abs().max() <= 127
    # straight-through: the gradient of the codes reaches the float weights
    codes.sum().backward()
    assert w.grad is not None and torch.allclose(w.grad, torch.full_like(w, 1 / step.item()))


def test_fixed_point_forward_has_integer_states_and_matches_float_closely(digits):
    profile = load_profile("hardreset-noisy")
    torch.manual_seed(0)
    model = build_model("mlp:64", (1, 8, 8), 10, 4, NeuronOptions(beta=profile.beta))
    model.blocks[0].node.record = True
    x = digits.test.inputs[:64]
    ctx = ChipContext(profile)
    fixed = model(x, ctx)
    block = model.blocks[0]
    unit = ctx.synapse("block0", block.synapse.weight, block.synapse.bias, True, x.flatten(1),
                       block.node.threshold)[3]
    for u in block.node.recorded_potentials:  # recorded in float units: integers times the unit
        states = u / unit
        assert torch.allclose(states, states.round(), atol=1e-3)
        assert states.abs().max() <= 2 ** 15
    ideal = model(x)
    assert fixed.shape == ideal.shape
    agree = (fixed.argmax(1) == ideal.argmax(1)).float().mean().item()
    assert agree > 0.8


# ------------------------------------------------------------------ evaluation

def test_evaluate_ideal_and_on_sampled_chips(digits):
    config = small(profile="analog-mismatch", epochs=1, eval_chips=3)
    metrics = train(config, dataset=digits, progress=False).metrics
    assert 0 <= metrics["test_accuracy"] <= 1
    assert len(metrics["chip_accuracies"]) == 3
    assert metrics["test_accuracy_noisy"] == pytest.approx(sum(metrics["chip_accuracies"]) / 3)
    assert len(set(metrics["chip_accuracies"])) > 1  # different chips, different results
    assert metrics["spikes_per_sample"] == pytest.approx(sum(metrics["spikes_per_layer"]))


# ------------------------------------------------------------------ reproducibility and resume

def test_same_seed_same_metrics_other_seed_other_metrics(digits):
    a = train(small(seed=3), dataset=digits, progress=False).metrics
    b = train(small(seed=3), dataset=digits, progress=False).metrics
    c = train(small(seed=4), dataset=digits, progress=False).metrics
    assert without_timing(a) == without_timing(b)
    assert without_timing(a) != without_timing(c)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, digits):
    config = small(epochs=3, model="mlp:24", grad_scaling={"enabled": True},
                   neuron={"v_init": "mp_init"}, dropout=0.1)
    full = train(config, tmp_path / "full", dataset=digits, progress=False).metrics
    train(config.model_copy(update={"epochs": 2}), tmp_path / "cut", dataset=digits, progress=False)
    resumed = train(config, tmp_path / "cut", resume=True, dataset=digits, progress=False).metrics
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert without_timing(full) == without_timing(resumed)


def test_resume_refuses_other_options_and_missing_checkpoint(tmp_path, digits):
    train(small(), tmp_path / "run", dataset=digits, progress=False)
    with pytest.raises(ConfigError, match="other options"):
        train(small(lr=0.1), tmp_path / "run", resume=True, dataset=digits, progress=False)
    with pytest.raises(Exception, match="no checkpoint"):
        train(small(), tmp_path / "empty", resume=True, dataset=digits, progress=False)


def test_checkpoint_loads_with_weights_only_and_refuses_a_malicious_pickle(tmp_path, digits):
    train(small(), tmp_path / "run", dataset=digits, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and "model" in state
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))
    torch.save({"format": 1, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="not a neurosim checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


# ------------------------------------------------------------------ results that mean something

def test_default_mlp_reaches_95_percent_on_digits_in_20_epochs(digits):
    metrics = train(TrainConfig(epochs=20, eval_chips=4), dataset=digits, progress=False).metrics
    assert metrics["test_accuracy"] >= 0.95, metrics["history"]
    assert metrics["test_accuracy_noisy"] >= 0.95


# ------------------------------------------------------------------ configuration and command

def test_config_file_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nneuron: {reset_grad: detach}\npda: {enabled: true, beta: 0.5}\n")
    config = load_config(path, {"epochs": 5, "neuron": {"surrogate": "psg"}})
    assert config.epochs == 5 and config.neuron.reset_grad == "detach" and config.neuron.surrogate == "psg"
    assert config.pda.beta == 0.5
    path.write_text("epochs: three\nlearning_rate: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "epochs" in str(info.value) and "learning_rate" in str(info.value)


@pytest.mark.parametrize("example", sorted((ROOT / "examples" / "configs").glob("*.yaml")))
def test_every_example_config_is_valid(example):
    config = load_config(example)
    assert config.model


def test_train_command_writes_checkpoint_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    args = ["-m", "neurosim", "train", "--dataset", "digits", "--model", "mlp:32", "--profile",
            "hardreset-noisy", "--timesteps", "4", "--epochs", "2", "--seed", "1", "--eval-chips", "2",
            "--out", str(out)]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_accuracy_noisy", "train_loss", "spikes_per_sample", "epochs", "seconds"):
        assert key in metrics
    assert metrics["epochs"] == 2
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "mlp:32" and config["timesteps"] == 4 and config["seed"] == 1
    torch.load(out / "checkpoint.pt", weights_only=True)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # the saved config re-runs the same training
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(again), "--no-progress"]) == 0
    assert without_timing(json.loads((again / "metrics.json").read_text())) == without_timing(metrics)


def test_train_command_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--model", "mlp:abc", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "mlp:abc" in err[0]
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
    assert main(["train", "--profile", "no-such-chip"]) == 2
    assert "no-such-chip" in capsys.readouterr().err
    assert main(["train", "--surrogate", "atan", "--surrogate-param", "beta=2", "--epochs", "1"]) == 2
    assert "surrogate atan takes alpha; got beta" in capsys.readouterr().err


def _write_idx(path: Path, array) -> None:
    import numpy as np
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_train_command_on_a_local_mnist_folder_with_a_conv_model(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = rng.integers(0, 10, size=n)
        images = np.zeros((n, 12, 12), dtype=np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row encodes the class
            images[i, label, 1:11] = 255
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-root", str(root), "--model", "conv:4c3-mp2-8",
                 "--epochs", "2", "--eval-chips", "1", "--norm", "tdbn", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_accuracy"] <= 1


@pytest.mark.parametrize("options, words", [
    (["--model", "mlp:16", "--surrogate", "fast_sigmoid"], "the model has 1"),
    (["--model", "mlp:16-16"], "needs fast_sigmoid surrogates"),
])
def test_width_tuning_a_model_it_does_not_apply_to_is_one_line(tmp_path, capsys, options, words):
    out = tmp_path / "run"
    assert main(["train", *options, "--tune-width", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: tune_width: ") and words in err[0], err
    assert not out.exists()
