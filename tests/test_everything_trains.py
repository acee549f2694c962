"""Everything that trains must train: every seed method, every surrogate at its default width and
every built-in profile, trained end to end on a small deep network.

A unit test of a formula cannot catch a method that kills training; only training does. Each case
trains a 3-layer network on digits for a few epochs (deterministic on the CPU with a fixed seed)
and asserts that the loss falls, that every spiking layer past the first fires, and, for each
fixed-point profile, that the run exports to the chip and runs in the integer engine with the
accuracy the training forward measured on the same chips. The accuracy a method reaches belongs
in examples/README.md (examples/method_table.py), not here.
"""

from __future__ import annotations

import pytest
import torch

from neurosim.device import load_profile
from neurosim.engine import IntegerEngine
from neurosim.export import compile_model
from neurosim.train import ChipContext, TrainConfig, train
from neurosim.train.config import SEED_METHODS, with_options
from neurosim.train.datasets import load_dataset

BASE = {"dataset": "digits", "model": "mlp:32-32-32", "profile": "hardreset-noisy", "timesteps": 4,
        "epochs": 4, "seed": 0, "eval_chips": 0}

METHODS = {**SEED_METHODS,
           # PDA's distribution loss dominates the first epochs of a small plain network (examples/README.md)
           "PDA (seed 002)": {**SEED_METHODS["PDA (seed 002)"], "epochs": 14},
           "PSG + PDA (seed 002)": {**SEED_METHODS["PSG + PDA (seed 002)"], "epochs": 14}}


def check_trained(metrics: dict, what: str) -> None:
    """The loss (with PDA: cross entropy plus its distribution loss) falls, the test accuracy is
    well above chance (0.1) and every layer past the first fires."""
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < 0.95 * losses[0], f"{what}: the loss did not fall: {losses}"
    assert metrics["test_accuracy"] > 0.3, f"{what}: test accuracy {metrics['test_accuracy']:.3f} after {losses}"
    spikes = metrics["spikes_per_layer"]
    assert all(s > 1.0 for s in spikes[1:]), f"{what}: layers past the first are silent: {spikes}"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_a_deep_network(method, digits):
    result = train(TrainConfig(**with_options(BASE, METHODS[method])), progress=False, dataset=digits)
    check_trained(result.metrics, method)


def test_a_surrogate_that_kills_a_deep_network_is_caught(digits):
    """The check can fail: a rectangle of width 1 (the old default) leaves layers 2-3 silent."""
    config = with_options(BASE, {"neuron": {"surrogate": "rectangle", "surrogate_params": {"width": 1.0}}})
    with pytest.raises(AssertionError, match="silent|did not fall|test accuracy"):
        check_trained(train(TrainConfig(**config), progress=False, dataset=digits).metrics, "rectangle width 1")


PROFILES = {  # profile -> what it trains on (Xylo: 16 inputs, 8 outputs)
    "ideal": {},
    "analog-mismatch": {},
    "hardreset-noisy": {},
    # Lava's Dense delivers step t-1's sum: 3 hidden layers and the readout delay the input by 4
    # steps, so T=4 would leave the readout nothing to hear
    "loihi-like": {"timesteps": 8},
    "xylo-like": {"dataset": "digits4x4-8", "model": "mlp:32-32", "timesteps": 8, "epochs": 6},
}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_builtin_profile_trains_exports_and_runs(name):
    config = TrainConfig(**with_options({**BASE, "profile": name, "eval_chips": 2}, PROFILES[name]))
    result = train(config, progress=False)
    check_trained(result.metrics, name)
    profile = load_profile(name)
    if profile.numerics.is_float:
        return
    deployment = compile_model(result.model, profile)
    dataset = load_dataset(config.dataset)
    engine = IntegerEngine(deployment)
    logits = engine.run(dataset.test.inputs).logits[0]
    accuracy = (logits.argmax(1) == dataset.test.targets).float().mean().item()
    assert accuracy > 0.3, f"{name}: the exported network runs at {accuracy:.3f}"
    with torch.no_grad():  # the training forward on the same nominal chip answers the same
        forward = result.model.eval()(dataset.test.inputs, ChipContext(profile))
    assert torch.equal(forward.argmax(1), logits.argmax(1)), f"{name}: engine and training forward differ"
