"""A second synaptic state per hidden neuron in training (Xylo's syn 2): ``neuron.synapse_decay2``
gives every dense spiking layer weights ``synapse2`` (and ``recurrent2`` where it is recurrent)
onto a state updated by the chip's rules like the first; the membrane takes both. Parity with the
integer engine (spikes of every layer, logits, saturation counts), gradients, the refusals, and a
training run exported as a Xylo configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosim.cli import main
from neurosim.device import load_profile
from neurosim.engine import IntegerEngine
from neurosim.errors import ConfigError, ExportError
from neurosim.export import compile_model, load_deployment
from neurosim.export.nir_graph import to_nir
from neurosim.nn import build_model
from neurosim.nn.layers import SpikingBlock
from neurosim.nn.neuron import LIFNode
from neurosim.train import TrainConfig
from neurosim.train.config import config_from_data
from neurosim.train.trainer import build_for, neuron_options, readout_beta

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_chip_rules import SmoothSigmoid, parity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
DECAY2 = 0.875  # dash 3 on xylo-like's shift decay: exact on the chip


def second_state_model(spec: str, gain: float = 4.0, gain2: float = 4.0, threshold: float | None = None,
                       seed: int = 0, decay2: float = DECAY2):
    """A xylo-like model with a second synaptic state, weights scaled so that it spikes."""
    profile = load_profile("xylo-like")
    torch.manual_seed(seed)
    neuron = {"synapse_decay2": decay2} | ({} if threshold is None else {"threshold": threshold})
    model = build_model(spec, (1, 4, 4), 6, 5, neuron_options(TrainConfig(neuron=neuron), profile),
                        readout_beta=readout_beta(profile))
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(gain)
            block.synapse2.weight.mul_(gain2)
            if block.recurrent is not None:
                block.recurrent.weight.mul_(gain)
                block.recurrent2.weight.mul_(gain2)
    return profile, model.eval()


@pytest.mark.parametrize("spec", ["mlp:12-8", "mlp:12r-8"])
def test_training_forward_matches_the_engine_with_a_second_synaptic_state(spec):
    profile, model = second_state_model(spec)
    for block in model.blocks:
        assert block.synapse2.bias is None and block.synapse2.weight.shape == block.synapse.weight.shape
        assert (block.recurrent2 is None) == (block.recurrent is None)
    assert model.readout.synapse_decay == profile.neuron.synapse_decay  # the readout has one state
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(11))
    result, total, _ = parity(model, profile, x)
    assert total > 0
    deployment = compile_model(model, profile)
    for layer in deployment.layers[:-1]:
        assert layer.synapse_decay2 == pytest.approx(DECAY2) and int(layer.weight2.abs().max()) > 0
        assert (layer.recurrent2 is None) == (layer.recurrent is None)
        if layer.recurrent2 is not None:
            assert layer.recurrent2.shape == layer.recurrent.shape and int(layer.recurrent2.abs().max()) > 0
    assert deployment.layers[-1].weight2 is None
    for source in (model, deployment):  # NIR has no second synaptic state: refused, not dropped
        with pytest.raises(ExportError, match="recurrent weights" if "r" in spec else "second synaptic state"):
            to_nir(source)
    # the second state carries current, and it changes the spikes: without it the network differs
    states = IntegerEngine(deployment).run(x, batch=3, record_states=True).states
    assert int(states["block0"]["i2"].abs().max()) > 0
    with torch.no_grad():
        for block in model.blocks:
            block.synapse2.weight.zero_()
            if block.recurrent2 is not None:
                block.recurrent2.weight.zero_()
    without = IntegerEngine(compile_model(model, profile)).run(x, batch=3, record=True)
    assert any(not torch.equal(without.spikes[name], result.spikes[name]) for name in without.spikes)


def test_parity_where_the_second_synaptic_state_saturates():
    """Large positive weights onto the second state only: its 16-bit state saturates (per source,
    in the chip's order) and the saturation events are counted alike."""
    profile, model = second_state_model("mlp:12r-8", gain=1.0, gain2=1.0, threshold=0.3, seed=4)
    with torch.no_grad():
        block = model.blocks[0]
        block.synapse2.weight.copy_(block.synapse.weight.abs().amax() * 3.0 *
                                    torch.rand(block.synapse2.weight.shape, generator=torch.Generator().manual_seed(1)))
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    result, total, events = parity(model, profile, x)
    states = IntegerEngine(compile_model(model, profile)).run(x, batch=3, record_states=True).states["block0"]
    top = (1 << (profile.numerics.synapse_bits - 1)) - 1
    held = states["i2"] >= top * 0.75  # at the limit, then decayed (add_then_decay: decay(fit(i + input)))
    assert bool((held & (states["i"].abs() < top * 0.75)).any())  # where the first state does not saturate
    assert float(result.counts["block0"].saturations.sum()) > 0 and events > 0 and total > 0


@pytest.mark.parametrize("recurrent", [False, True])
def test_second_synapse_gradients_match_finite_differences(recurrent):
    """The float chip in float64: autograd through the second synaptic state (its weights and
    recurrent weights) equals finite differences, with a smooth spike function."""
    torch.manual_seed(3)
    node = LIFNode(beta=0.7, threshold=0.8, reset="soft", surrogate=SmoothSigmoid(), synapse_decay=0.6,
                   synapse_decay2=0.9)
    block = SpikingBlock(torch.nn.Linear(3, 4), node,
                         recurrent=torch.nn.Linear(4, 4, bias=False) if recurrent else None,
                         synapse2=torch.nn.Linear(3, 4, bias=False),
                         recurrent2=torch.nn.Linear(4, 4, bias=False) if recurrent else None).double()
    x = torch.rand(6, 2, 3, dtype=F64)
    names = ["synapse2.weight"] + (["recurrent2.weight"] if recurrent else [])
    params = dict(block.named_parameters())
    fixed = {name: p.detach().clone() for name, p in params.items() if name not in names}

    def loss(*weights):
        return torch.func.functional_call(block, {**fixed, **dict(zip(names, weights))}, (x,)) \
            .mul(torch.arange(1, 5, dtype=F64)).sum()

    args = tuple(params[name].detach().clone().requires_grad_(True) for name in names)
    assert torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(loss(*args), args)
    assert all(float(g.abs().max()) > 1e-4 for g in grads)


def test_second_synaptic_state_is_refused_where_it_cannot_exist(tmp_path, capsys):
    ideal = load_profile("ideal")
    with pytest.raises(ConfigError, match="not current-based") as info:
        neuron_options(TrainConfig(profile="ideal", neuron={"synapse_decay2": 0.5}), ideal)
    assert "\n" not in str(info.value)
    xylo = load_profile("xylo-like")
    config = TrainConfig(profile="xylo-like", model="conv:4c3-8", neuron={"synapse_decay2": 0.5})
    with pytest.raises(ConfigError, match="dense layers only") as info:
        build_for(config, xylo, (1, 4, 4), 3)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="neuron.synapse_decay2: Input should be less than or equal to 1"):
        config_from_data({"neuron": {"synapse_decay2": 1.5}}, "options")
    # the command line: one line, no traceback
    config_file = tmp_path / "two.yaml"
    config_file.write_text("profile: hardreset-noisy\nneuron:\n  synapse_decay2: 0.5\n")
    assert main(["train", "--config", str(config_file), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "synapse_decay2" in err[0], err


def test_cli_trains_a_second_synapse_model_and_exports_it_for_xylo(tmp_path, capsys):
    """``neurosim train --config`` with ``neuron.synapse_decay2``, then ``export --format xylo``:
    the file holds weights_in2 and dash_syn2, and (with xylosim installed) xylosim runs it as the
    engine does, both synaptic states included."""
    config_file = tmp_path / "two.yaml"
    config_file.write_text(f"dataset: digits4x4-8\nprofile: xylo-like\ntimesteps: 6\neval_chips: 0\n"
                           f"neuron:\n  synapse_decay2: {DECAY2}\n")
    run, path = tmp_path / "run", tmp_path / "net.npz"
    assert main(["train", "--config", str(config_file), "--model", "mlp:16", "--epochs", "2", "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    result = subprocess.run([sys.executable, "-m", "neurosim", "export", str(run), "--profile", "xylo-like",
                             "--format", "xylo", "--out", str(path)], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    from neurosim.export.xylo import load_xylo, run_xylosim, xylo_layer
    from neurosim.train.trainer import load_run

    config = load_xylo(path)
    model, _, dataset = load_run(run)
    assert model.blocks[0].synapse2 is not None
    deployment = compile_model(model, "xylo-like")
    hidden = deployment.layers[0]
    assert config.second_synapse and np.array_equal(config.weights_in2, hidden.weight2.numpy().T)
    assert np.abs(config.weights_in2).max() > 0 and int(np.asarray(config.dash_syn2).max()) == 3
    art = tmp_path / "art"
    assert main(["export", str(run), "--out", str(art)]) == 0
    assert torch.equal(load_deployment(art).layers[0].weight2, hidden.weight2)
    try:
        import xylosim.v2  # noqa: F401
    except ImportError:
        return  # the comparison with xylosim needs the xylo extra (test_xylo.py skips it too)
    engine = IntegerEngine(deployment)
    codes = engine.encode(dataset.test.inputs[:6])
    frames = codes[:, None].expand(-1, deployment.timesteps, *codes.shape[1:])
    states = engine.run_codes(frames, record=True, record_states=True)
    layer = xylo_layer(config)
    for s in range(frames.shape[0]):
        want = run_xylosim(config, frames[s].reshape(deployment.timesteps, -1).numpy(), layer)
        assert np.array_equal(states.spikes["block0"][:, 0, s].numpy(), want["spikes"]), s
        assert np.array_equal(states.states["block0"]["i2"][:, 0, s].numpy(), want["i_syn2"]), s
        assert np.array_equal(states.spikes["readout"][:, 0, s].numpy(), want["out_spikes"]), s
