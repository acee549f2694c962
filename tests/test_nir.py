"""NIR interchange: neurosim -> NIR -> neurosim (both readout forms), Deployment -> NIR -> Deployment,
snnTorch -> NIR -> neurosim, neurosim -> NIR -> snnTorch and SpikingJelly (the affine readout),
refusals, and the export/import/train/run commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir", reason="the nir extra (pip install 'neurosim[nir]') is not installed")

from neurosim.cli import main  # noqa: E402
from neurosim.device import load_profile, sample_chips  # noqa: E402
from neurosim.engine import IntegerEngine, deployment_shapes  # noqa: E402
from neurosim.errors import ArtifactError, ConfigError, ExportError  # noqa: E402
from neurosim.export import compile_model, load_deployment  # noqa: E402
from neurosim.export.nir_graph import (META_KEY, deployment_from_nir, from_nir, graph_notes, read_nir,  # noqa: E402
                                       to_nir, write_nir)
from neurosim.nn import NeuronOptions, build_model  # noqa: E402
from neurosim.train import TrainConfig, load_run, train  # noqa: E402
from neurosim.train.datasets import dataset_of  # noqa: E402
from neurosim.train.trainer import init_from_run, neuron_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def spiking_model(spec, timesteps=5, norm="none", gain=3.0, seed=0, **neuron):
    """A model on 1x8x8 inputs whose weights are scaled up so that every layer spikes."""
    torch.manual_seed(seed)
    model = build_model(spec, (1, 8, 8), 10, timesteps, NeuronOptions(**neuron), norm=norm)
    with torch.no_grad():
        for block in model.blocks:
            block.synapse.weight.mul_(gain)
    if norm != "none":  # running statistics of its own
        model.train()
        model(torch.rand(32, 1, 8, 8))
    return model.eval()


def run_recorded(model, x):
    """Logits and each block's spikes."""
    for block in model.blocks:
        block.record = True
    with torch.no_grad():
        logits = model(x)
    spikes = [block.recorded_spikes for block in model.blocks]
    for block in model.blocks:
        block.record = False
    return logits, spikes


def through_file(graph, tmp_path, name="g.nir"):
    return read_nir(write_nir(graph, tmp_path / name))


def head(graph) -> dict:
    return json.loads(graph.metadata[META_KEY])


INPUT = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------ neurosim -> NIR -> neurosim

@pytest.mark.parametrize("readout", ["integrator", "affine"])
@pytest.mark.parametrize("spec,neuron", [
    ("mlp:24-12", {"reset": "hard", "v_reset": 0.1, "beta": 0.9}),
    ("mlp:24-12", {"reset": "soft", "beta": 0.75}),
    ("conv:4c3-mp2-6c3s2-16", {"reset": "hard", "beta": 0.5}),
    ("conv:4c3-mp2-6c3s2-16", {"reset": "soft", "beta": 1.0}),  # IF neurons
    ("conv:4c3-8c3s2", {"reset": "soft", "beta": 0.8, "surrogate": "trsg", "learn_threshold": True}),
    ("mlp:20-12", {"reset": "hard", "beta": 0.7, "synapse_decay": 0.6, "refractory": 1, "v_init": "mp_init",
                   "surrogate": "psg"}),
])
def test_model_round_trip_gives_identical_logits_and_spikes(spec, neuron, readout, tmp_path):
    model = spiking_model(spec, **neuron)
    for i, node in enumerate(model.spiking_nodes()):
        node.mp_init.fill_(0.2 + 0.1 * i)
        if neuron.get("surrogate") == "psg":
            node.surrogate.gamma.data.fill_(1.5 + i)
    with torch.no_grad():
        model.readout.beta.fill_(0.8 if "v_reset" in neuron else 1.0)  # a leaky readout (LI) and an integrator (I)
    graph = through_file(to_nir(model, {"training": {"model": spec}}, readout=readout), tmp_path)
    last = [a for a, b in graph.edges if b == "output"][0]
    assert last == ("readout.synapse" if readout == "affine" else "readout.neuron")
    assert head(graph)["readout"] == readout
    imported, info = from_nir(graph)
    assert info.spec.split(":")[0] == spec.split(":")[0] and info.timesteps == model.timesteps
    assert not info.readout_added and info.source == "neurosim model"
    logits, spikes = run_recorded(model, INPUT)
    logits2, spikes2 = run_recorded(imported, INPUT)
    assert torch.equal(logits, logits2)
    for s, s2 in zip(spikes, spikes2):
        assert torch.equal(s, s2)
        assert 0 < float(s.mean()) < 1  # the comparison saw activity, not silence or saturation
    assert imported.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, imported.state_dict()[key]), key


def test_nir_nodes_follow_the_snntorch_dt_convention_and_metadata_keeps_the_rest():
    model = spiking_model("conv:4c3-mp2-10", reset="soft", beta=0.9, refractory=2, v_init="mp_init")
    model.blocks[0].node.mp_init.fill_(0.25)
    graph = to_nir(model)
    assert float(graph.metadata["dt"]) == 1e-4
    lif = graph.nodes["block0.neuron"]
    assert isinstance(lif, nir.LIF)
    tau = lif.tau.reshape(-1)[0]
    assert tau == pytest.approx(1e-4 / (1 - 0.9)) and lif.r.reshape(-1)[0] == pytest.approx(tau / 1e-4)
    assert isinstance(graph.nodes["block0.pool"], nir.SumPool2d)
    assert isinstance(graph.nodes["block0.pool_spikes"], nir.Threshold)
    assert isinstance(graph.nodes["readout.neuron"], nir.I)  # readout beta = 1: an integrator
    notes = " ".join(graph_notes(graph))
    assert "soft reset" in notes and "refractory period of 2 steps" in notes and "MP-Init" in notes
    node_meta = json.loads(lif.metadata[META_KEY])
    assert node_meta["reset"] == "soft" and node_meta["refractory"] == 2 and node_meta["mp_init"] == 0.25


@pytest.mark.parametrize("norm", ["bn", "tdbn"])
def test_batch_norm_is_folded_at_export(norm, tmp_path):
    model = spiking_model("conv:4c3-mp2-16", norm=norm, gain=1.0)
    graph = through_file(to_nir(model), tmp_path)
    imported, info = from_nir(graph)
    assert all(block.norm is None for block in imported.blocks)
    assert any("batch norm was folded" in note for note in info.notes)
    logits, spikes = run_recorded(model, INPUT)
    logits2, spikes2 = run_recorded(imported, INPUT)
    assert torch.equal(logits, logits2)  # eval mode runs the folded synapse too
    assert all(torch.equal(a, b) for a, b in zip(spikes, spikes2))


def test_export_refuses_what_nir_cannot_hold():
    model = spiking_model("mlp:16", beta=1.0, synapse_decay=0.5)
    with pytest.raises(ExportError, match="block0: a current-based neuron without leak"):
        to_nir(model)
    model = spiking_model("mlp:16")
    with torch.no_grad():
        model.blocks[0].synapse.weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match="block0: weight holds NaN"):
        to_nir(model)


# ------------------------------------------------------------------ Deployment -> NIR -> Deployment

@pytest.mark.parametrize("name,spec,norm", [("hardreset-noisy", "conv:4c3-mp2-8c3s2-16", "bn"),
                                            ("loihi-like", "mlp:20-12", "none")])
def test_deployment_round_trip_gives_the_same_integer_engine_output(name, spec, norm, tmp_path):
    profile = load_profile(name)
    torch.manual_seed(0)
    model = build_model(spec, (1, 8, 8), 10, 4, neuron_options(TrainConfig(), profile), norm=norm)
    with torch.no_grad():
        for block in model.blocks:
            # loihi-like's 16-bit inputs << activation_shift 6 make a first-layer weight step of about
            # 2 theta (quantization.weight_step): weights that large, so that the chip spikes
            block.synapse.weight.mul_(3 if not profile.numerics.activation_shift else 30)
            if norm == "none":
                block.synapse.bias.zero_()
        if norm == "none":  # loihi-like: 13-bit bias mantissas in a state unit 2^6 finer (activation_shift)
            model.readout.synapse.bias.zero_()
    if norm != "none":
        model.train()
        model(torch.rand(32, 1, 8, 8))
    deployment = compile_model(model.eval(), profile, metadata={"training": {"model": spec, "profile": name}})
    graph = through_file(to_nir(deployment), tmp_path)
    back = deployment_from_nir(graph)
    for a, b in zip(deployment.layers, back.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.unit, b.unit) and a.name == b.name
        assert (a.bias is None and b.bias is None) or torch.equal(a.bias, b.bias)
    chips = sample_chips(profile, deployment_shapes(deployment), n=3, seed=5)
    first = IntegerEngine(deployment, chips).run(INPUT, batch=2, record=True)
    second = IntegerEngine(back, chips).run(INPUT, batch=2, record=True)
    assert torch.equal(first.logits, second.logits)
    assert all(torch.equal(first.spikes[k], second.spikes[k]) for k in first.spikes)
    assert sum(float(s.sum()) for s in first.spikes.values()) > 0
    # what NIR cannot say is in metadata: profile name, checksum, formats, sigmas, integer codes
    meta = head(graph)["deployment"]
    assert meta["profile"]["name"] == name and len(meta["profile"]["sha256"]) == 64
    assert meta["profile"]["spec"]["numerics"]["weight_bits"] == profile.numerics.weight_bits
    assert meta["profile"]["spec"].get("variation") == profile.to_dict().get("variation")
    neuron = json.loads(graph.nodes["block0.neuron"].metadata[META_KEY])
    assert isinstance(neuron["integer"]["threshold"][0], int)
    assert any("integer formats" in note for note in graph_notes(graph))
    # the float reading of the same graph is the model with quantized weights
    imported, info = from_nir(graph)
    assert info.source == "neurosim deployment"
    w_step = deployment.layers[0].unit.double() * 2 ** profile.numerics.activation_shift / deployment.layers[0].input_step
    expected = deployment.layers[0].weight.double() * (w_step.reshape(-1, *[1] * (deployment.layers[0].weight.dim()
                                                                                   - 1)) if w_step.dim() else w_step)
    assert torch.equal(imported.blocks[0].synapse.weight, expected.float())


def test_altered_deployment_weights_are_refused(tmp_path):
    profile = load_profile("hardreset-noisy")
    deployment = compile_model(spiking_model("mlp:16", beta=0.5), profile)
    graph = to_nir(deployment)
    graph.nodes["block0.synapse"].weight[0, 0] += 1e-3
    with pytest.raises(ArtifactError, match="node 'block0.synapse': weights are not whole multiples"):
        deployment_from_nir(graph)
    with pytest.raises(ArtifactError, match="holds no neurosim deployment"):
        deployment_from_nir(to_nir(spiking_model("mlp:16")))


# ------------------------------------------------------------------ snnTorch -> NIR -> neurosim

def snntorch_net(kind: str, reset_delay: bool):
    snn = pytest.importorskip("snntorch", reason="snntorch (optional test dependency) is not installed")
    torch.manual_seed(1)

    def leaky(shape, beta, threshold=1.0, **kw):  # snnTorch's export needs per-neuron beta and threshold
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.full(shape, threshold), init_hidden=True,
                         reset_mechanism="zero", reset_delay=reset_delay, **kw)

    if kind == "mlp":
        layers = [torch.nn.Flatten(), torch.nn.Linear(64, 20), leaky((20,), 0.9), torch.nn.Linear(20, 10),
                  leaky((10,), 0.8, 0.7, output=True)]
    else:
        layers = [torch.nn.Conv2d(1, 4, 3, padding=1), leaky((4, 8, 8), 0.9),
                  torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), leaky((6, 4, 4), 0.7, 0.8), torch.nn.Flatten(),
                  torch.nn.Linear(96, 10), leaky((10,), 0.9, 0.5, output=True)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for module in net:
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.mul_(2.5)
    return snn, net


SNNTORCH_WARNINGS = pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated")


@SNNTORCH_WARNINGS
@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_snntorch_graph_imports_and_spikes_as_snntorch_does(kind, reset_delay, tmp_path):
    snn, net = snntorch_net(kind, reset_delay)
    from snntorch import utils as snn_utils
    from snntorch.export_nir import export_to_nir

    graph = export_to_nir(net, torch.rand(1, 1, 8, 8), ignore_dims=[0])
    nir.write(tmp_path / "snn.nir", graph)
    steps = 8
    model, info = from_nir(read_nir(tmp_path / "snn.nir"), timesteps=steps)
    assert info.source == "foreign" and info.readout_added and info.dt == 1e-4
    leakies = [m for m in net if isinstance(m, snn.Leaky)]
    theirs: dict[int, list] = {i: [] for i in range(len(leakies))}
    for i, leaky in enumerate(leakies):
        leaky.register_forward_hook(
            lambda mod, inp, out, i=i: theirs[i].append(out[0] if isinstance(out, tuple) else out))
    snn_utils.reset(net)
    with torch.no_grad():
        for _ in range(steps):
            net(INPUT)
    logits, ours = run_recorded(model, INPUT)
    assert len(ours) == len(leakies)
    for i, spikes in enumerate(ours):
        expected = torch.stack(theirs[i]).reshape(spikes.shape)
        assert torch.equal(spikes, expected), f"layer {i}"
        assert float(spikes.sum()) > 0
    # the added readout integrates the output spikes: mean over t of the running count
    assert torch.allclose(logits, torch.stack(theirs[len(leakies) - 1]).cumsum(0).mean(0))


@SNNTORCH_WARNINGS
def test_snntorch_recurrent_layer_is_refused(tmp_path):
    snn = pytest.importorskip("snntorch", reason="snntorch (optional test dependency) is not installed")
    from snntorch.export_nir import export_to_nir

    net = torch.nn.Sequential(torch.nn.Linear(64, 8),
                              snn.RLeaky(beta=torch.full((8,), 0.9), linear_features=8, init_hidden=True))
    graph = export_to_nir(net, torch.rand(1, 64), ignore_dims=[0])
    with pytest.raises(ArtifactError, match="no recurrent"):  # a cycle, or a subgraph in older snnTorch
        from_nir(graph, timesteps=4)


# ------------------------------------------------------------------ neurosim -> NIR -> snnTorch, SpikingJelly

PEERS = ["snntorch", "spikingjelly"]


def load_in_peer(peer: str, path: Path) -> torch.nn.Module:
    """The graph in ``path`` as snnTorch 1.0's or SpikingJelly 2.0's ``import_from_nir`` builds it
    (a torch.fx GraphModule whose submodules are named after the NIR nodes, dots as underscores)."""
    if peer == "snntorch":
        pytest.importorskip("snntorch", reason="snntorch (optional test dependency) is not installed")
        from snntorch.import_nir import import_from_nir

        net = import_from_nir(nir.read(path))
        flattens = [m for m in net.modules() if isinstance(m, torch.nn.Flatten)]
        # snnTorch maps NIR's Flatten (whose dimensions exclude the batch) to torch's with the same start_dim,
        # so start_dim=0 flattens the batch too; the workaround (README's NIR section): start at dimension 1
        assert all(m.start_dim == 0 for m in flattens)
        for m in flattens:
            m.start_dim = 1
        return net
    pytest.importorskip("spikingjelly", reason="spikingjelly (optional test dependency) is not installed")
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    return import_from_nir(path, step_mode="s")


def run_in_peer(net: torch.nn.Module, x: torch.Tensor, steps: int, layers: list[str]):
    """The per-step outputs ``[T, B, outputs]`` and each of ``layers``' spikes ``[T, B, ...]`` of an
    imported net, ``x`` entering at every step. Both peers' modules return ``(output, state)``;
    SpikingJelly's neurons keep their state in it (passed back each step), snnTorch's in themselves
    (a fresh import starts at rest)."""
    spikes: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for name in layers:
        net.get_submodule(f"{name}_neuron").register_forward_hook(
            lambda module, inputs, out, name=name: spikes[name].append(out[0] if isinstance(out, tuple) else out))
    outputs, state = [], None
    with torch.no_grad():
        for _ in range(steps):
            out, state = net(x, state)
            outputs.append(out)
    return torch.stack(outputs), [torch.stack(spikes[name]) for name in layers]


def integrate(outputs: torch.Tensor, beta: float) -> torch.Tensor:
    """neurosim's logits from the readout Affine's per-step outputs: the mean over the steps of
    v[t] = beta v[t-1] + out[t] (the affine form's convention)."""
    v = torch.zeros_like(outputs[0])
    total = torch.zeros_like(v)
    for out in outputs:
        v = beta * v + out
        total = total + v
    return total / outputs.shape[0]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A trained digits model with two hidden layers, 8 steps (hardreset-noisy: beta 0.5, hard reset to 0)."""
    out = tmp_path_factory.mktemp("peers") / "run"
    train(TrainConfig(epochs=1, model="mlp:32-32", timesteps=8, eval_chips=0), out, progress=False)
    return out


@SNNTORCH_WARNINGS
@pytest.mark.parametrize("peer", PEERS)
def test_affine_readout_loads_in_the_peers_with_neurosim_spikes_and_logits(peer, digits_run, tmp_path, capsys):
    graph_file = tmp_path / "digits.nir"
    assert main(["export", str(digits_run), "--format", "nir", "--nir-readout", "affine",
                 "--out", str(graph_file)]) == 0
    assert "the integrator after the readout Affine (beta 1)" in capsys.readouterr().out
    model, config, _ = load_run(digits_run)
    x = dataset_of(config.to_dict()).test.inputs[:32]
    logits, ours = run_recorded(model, x)
    names = [block.name for block in model.blocks]
    outputs, theirs = run_in_peer(load_in_peer(peer, graph_file), x, model.timesteps, names)
    for name, spikes, peer_spikes in zip(names, ours, theirs):
        assert torch.equal(peer_spikes.reshape(spikes.shape), spikes), name
        assert 0 < float(spikes.mean()) < 1, name  # the comparison saw activity, not silence or saturation
    assert torch.allclose(integrate(outputs, float(model.readout.beta)), logits, rtol=0, atol=1e-5)
    # the default, lossless form ends in NIR's I node, which neither importer maps
    default = tmp_path / "default.nir"
    assert main(["export", str(digits_run), "--format", "nir", "--out", str(default)]) == 0
    with pytest.raises(ValueError, match="Unknown node type .*neuron.I'"):
        load_in_peer(peer, default)


@SNNTORCH_WARNINGS
@pytest.mark.parametrize("peer", PEERS)
def test_peers_run_a_convolutional_graph_as_neurosim_does(peer, tmp_path):
    model = spiking_model("conv:4c3-6c3s2-16", timesteps=6, beta=0.5)  # no max pooling: NIR's SumPool2d/Threshold
    graph_file = write_nir(to_nir(model, readout="affine"), tmp_path / "conv.nir")  # neither peer maps those
    logits, ours = run_recorded(model, INPUT)
    names = [block.name for block in model.blocks]
    outputs, theirs = run_in_peer(load_in_peer(peer, graph_file), INPUT, model.timesteps, names)
    for name, spikes, peer_spikes in zip(names, ours, theirs):
        assert torch.equal(peer_spikes.reshape(spikes.shape), spikes), name
        assert 0 < float(spikes.mean()) < 1, name
    assert torch.allclose(integrate(outputs, 1.0), logits, rtol=0, atol=1e-5)


def test_affine_readout_imports_back_as_the_same_run(digits_run, tmp_path):
    graph_file, imported = tmp_path / "digits.nir", tmp_path / "imported"
    assert main(["export", str(digits_run), "--format", "nir", "--nir-readout", "affine",
                 "--out", str(graph_file)]) == 0
    assert main(["import", str(graph_file), "--out", str(imported)]) == 0
    original, config, _ = load_run(digits_run)
    model, imported_config, _ = load_run(imported)
    assert imported_config.model == config.model and imported_config.timesteps == config.timesteps
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_deployment_with_an_affine_readout_round_trips():
    deployment = compile_model(spiking_model("mlp:16", beta=0.5), load_profile("hardreset-noisy"))
    graph = to_nir(deployment, readout="affine")
    assert "readout.neuron" not in graph.nodes and ("readout.synapse", "output") in graph.edges
    back = deployment_from_nir(graph)
    for a, b in zip(deployment.layers, back.layers):
        assert (a.name, a.readout, a.beta) == (b.name, b.readout, b.beta)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.unit, b.unit)
        assert (a.bias is None and b.bias is None) or torch.equal(a.bias, b.bias)


def test_readout_form_errors(digits_run, tmp_path, capsys):
    with pytest.raises(ExportError, match="readout form 'li': choose one of integrator, affine"):
        to_nir(spiking_model("mlp:16"), readout="li")
    graph = to_nir(spiking_model("mlp:16"), readout="affine")
    meta = json.loads(graph.nodes["readout.synapse"].metadata[META_KEY])
    graph.nodes["readout.synapse"].metadata[META_KEY] = json.dumps({**meta, "readout_integrator": {"beta": 2}})
    with pytest.raises(ArtifactError, match="node 'readout.synapse': metadata 'readout_integrator' gives beta 2"):
        from_nir(graph)
    out = tmp_path / "art"
    assert main(["export", str(digits_run), "--nir-readout", "affine", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --nir-readout chooses the readout's form in a NIR graph: it needs --format nir"]
    assert not out.exists()


# ------------------------------------------------------------------ refusals

def chain_graph(*middle, edges=None, shape=(4,)):
    nodes = {"input": nir.Input(input_type=np.array(shape)), **dict(middle),
             "output": nir.Output(output_type=np.array([3]))}
    names = list(nodes)
    edges = edges if edges is not None else list(zip(names[:-1], names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def lif(n, threshold=1.0, tau=2e-4):
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / 1e-4), v_leak=np.zeros(n),
                   v_threshold=np.full(n, threshold) if np.isscalar(threshold) else np.asarray(threshold))


def affine(n_out, n_in):
    return nir.Affine(weight=np.ones((n_out, n_in)), bias=np.zeros(n_out))


def test_refusals_name_the_node_and_the_reason():
    good = chain_graph(("fc", affine(3, 4)), ("lif", lif(3)), ("ro", affine(3, 3)), ("li", nir.I(r=np.full(3, 1e4))))
    model, info = from_nir(good, timesteps=2)
    assert info.spec == "mlp:3" and not info.readout_added
    cases = [
        (chain_graph(("fc", affine(3, 4)), ("delay", nir.Delay(delay=np.ones(3))), ("lif", lif(3))),
         "node 'delay': synaptic delays: no neurosim equivalent"),
        (chain_graph(("fc", affine(3, 4)), ("lif", lif(3)), ("rec", affine(3, 3)),
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]),
         "recurrent edge rec -> lif"),
        (chain_graph(("fc", affine(3, 4)), ("lif", lif(3)), ("other", lif(3)),
                     edges=[("input", "fc"), ("fc", "lif"), ("fc", "other"), ("lif", "output")]),
         "node 'fc': branches to lif, other"),
        (chain_graph(("fc", affine(3, 4)), ("lif", lif(3, threshold=[1.0, 1.0, 2.0]))),
         "node 'lif': per-neuron v_threshold differ"),
        (chain_graph(("fc", affine(3, 4)), ("lif", lif(3, tau=1e-4))), "node 'lif': tau = 0.0001 is not above"),
        (chain_graph(("fc", affine(3, 4)), ("fc2", affine(3, 3)), ("lif", lif(3))), "node 'fc2': follows synapse 'fc'"),
        (chain_graph(("fc", affine(3, 4))), "node 'fc': a synapse with no neurons after it"),
        (chain_graph(("lif", lif(4)), shape=(4,)), "node 'lif': has no synapse"),
        (chain_graph(("conv", nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1,
                                         dilation=1, groups=1, bias=np.zeros(2))),
                     ("lif", lif((2, 4, 4))), ("avg", nir.AvgPool2d(kernel_size=np.array([2, 2]),
                                                                   stride=np.array([2, 2]), padding=np.array([0, 0]))),
                     shape=(1, 4, 4)),
         "node 'avg': average pooling"),
    ]
    for graph, message in cases:
        with pytest.raises(ArtifactError, match=message):
            from_nir(graph, timesteps=2)
    nested = chain_graph(("sub", good))
    with pytest.raises(ArtifactError, match="node 'sub': is a subgraph"):
        from_nir(nested, timesteps=2)
    with pytest.raises(ArtifactError, match="does not say how many time steps"):
        from_nir(good)


def test_an_altered_graph_disagrees_with_its_metadata(tmp_path):
    graph = to_nir(spiking_model("mlp:16"))
    graph.nodes["block0.neuron"].v_threshold[:] = 1.5
    with pytest.raises(ArtifactError, match="node 'block0.neuron': neurosim metadata says threshold = 1"):
        from_nir(graph)


# ------------------------------------------------------------------ the commands

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nir") / "run"
    train(TrainConfig(epochs=1, model="mlp:24", timesteps=3, eval_chips=0), out, progress=False)
    return out


def neurosim(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "neurosim", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_cli_round_trip_export_import_export_run(trained_run, tmp_path, capsys):
    graph_file, imported, artifact = tmp_path / "model.nir", tmp_path / "imported", tmp_path / "art"
    result = neurosim("export", trained_run, "--format", "nir", "--out", graph_file)
    assert result.returncode == 0, result.stderr
    result = neurosim("import", graph_file, "--out", imported)
    assert result.returncode == 0, result.stderr
    assert "--init-from" in result.stdout
    # export and run of the imported folder in-process (test_export runs those commands as subprocesses)
    assert main(["export", str(imported), "--out", str(artifact)]) == 0
    assert main(["run", str(artifact), "--chips", "1", "--no-noise", "--no-progress"]) == 0
    assert "accuracy" in capsys.readouterr().out
    # the imported run is the trained one: same weights, and the same artifact as exporting it directly
    original, config, _ = load_run(trained_run)
    model, imported_config, _ = load_run(imported)
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert imported_config.dataset == config.dataset and imported_config.profile == config.profile
    direct = compile_model(original, config.profile)
    for a, b in zip(direct.layers, load_deployment(artifact).layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_deployment_through_the_commands(trained_run, tmp_path, capsys):
    graph_file, artifact = tmp_path / "dep.nir", tmp_path / "art"
    assert main(["export", str(trained_run), "--format", "nir", "--profile", "hardreset-noisy",
                 "--out", str(graph_file)]) == 0
    assert "note: kept in NIR metadata only: the integer formats of profile hardreset-noisy" in capsys.readouterr().out
    assert main(["import", str(graph_file), "--artifact", "--out", str(artifact)]) == 0
    model, config, _ = load_run(trained_run)
    direct = compile_model(model, "hardreset-noisy")
    loaded = load_deployment(artifact)
    for a, b in zip(direct.layers, loaded.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert loaded.metadata["training"] == config.to_dict()
    # an existing file is not replaced without --force
    assert main(["export", str(trained_run), "--format", "nir", "--out", str(graph_file)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_import_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.nir"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    out = tmp_path / "out"
    result = neurosim("import", corrupt, "--out", out)  # the real command: exit 2, one line, no traceback
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "not a readable NIR graph" in result.stderr and not out.exists()
    recurrent = tmp_path / "recurrent.nir"
    nir.write(recurrent, chain_graph(("fc", affine(3, 4)), ("lif", lif(3)), ("rec", affine(3, 3)),
                                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"),
                                            ("lif", "output")]))
    foreign = tmp_path / "foreign.nir"
    nir.write(foreign, chain_graph(("fc", affine(10, 64)), ("lif", lif(10)), shape=(64,)))
    small = tmp_path / "small.nir"
    nir.write(small, chain_graph(("fc", affine(3, 4)), ("lif", lif(3))))
    cases = [(recurrent, ["--timesteps", "2"], "recurrent edge rec -> lif"),
             (foreign, [], "does not say how many time steps"),
             (foreign, ["--timesteps", "2", "--profile", "loihi-like"], "current-based"),
             (small, ["--timesteps", "2"], "dataset digits has shape (1, 8, 8) and 10 classes"),
             (foreign, ["--timesteps", "0"], "--timesteps must be at least 1"),
             (foreign, ["--timesteps", "2", "--dt", "-1"], "dt must be a positive number"),
             (foreign, ["--timesteps", "2", "--artifact"], "holds no neurosim deployment"),
             (tmp_path / "missing.nir", [], "no such NIR file")]
    for path, extra, message in cases:
        assert main(["import", str(path), "--out", str(out), *extra]) == 2, message
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (message, lines)
        assert not out.exists()
        assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind


def test_foreign_graph_imports_as_a_run_that_trains_further(tmp_path, capsys):
    foreign = tmp_path / "foreign.nir"
    torch.manual_seed(0)
    nir.write(foreign, chain_graph(("fc", nir.Affine(weight=np.random.default_rng(0).normal(0, 0.5, (16, 64)),
                                                     bias=np.zeros(16))), ("lif", lif(16)),
                                   ("fc2", nir.Linear(weight=np.random.default_rng(1).normal(0, 0.5, (10, 16)))),
                                   ("lif2", lif(10)), shape=(64,)))
    run = tmp_path / "run"
    assert main(["import", str(foreign), "--out", str(run), "--timesteps", "3"]) == 0
    out = capsys.readouterr().out
    assert "identity weights was added" in out
    model, config, _ = load_run(run)
    assert config.model == "mlp:16-10" and config.profile == "ideal" and config.dataset == "digits"
    assert torch.equal(model.readout.synapse.weight, torch.eye(10))
    with pytest.raises(ConfigError, match="holds weights only"):
        train(config.model_copy(update={"epochs": 1}), run, resume=True, progress=False)
    # train further from it: a tiny learning rate leaves the weights as they were imported
    further = train(config.model_copy(update={"epochs": 1, "lr": 1e-12, "eval_chips": 0}), tmp_path / "further",
                    progress=False, init_from=run)
    assert further.metrics["initialized_from"] == str(run)
    trained, _, _ = load_run(tmp_path / "further")
    assert torch.equal(trained.blocks[0].synapse.weight, model.blocks[0].synapse.weight)
    with pytest.raises(ConfigError, match="--init-from .* does not fit"):
        init_from_run(build_model("mlp:8", (1, 8, 8), 10, 3), run)
