"""NIR interchange (docs/design.md §4): a trained model or a Deployment to a NIR graph, and a NIR graph
(written by neurosim, snnTorch, ...) to a neurosim model that trains further, compiles and runs.

NIR (the ``nir`` package, extra ``neurosim[nir]``) describes neurons as continuous-time ODEs;
neurosim's neurons are discrete-time (docs/design.md §2). Graphs are read and written with forward-Euler
steps of ``dt`` — the graph's ``metadata["dt"]``, else :data:`NIR_DT` = 1e-4, the step snnTorch's
``export_to_nir`` and ``import_from_nir`` assume. Per step, with input current ``I = W x + b``::

    LIF      tau dv/dt = v_leak - v + r I      beta = 1 - dt/tau,  gain g = r dt / tau
    IF       dv/dt = r I                       beta = 1,           g = r dt
    CubaLIF  i: alpha = 1 - dt/tau_syn, v: beta = 1 - dt/tau_mem,  g = (w_in dt/tau_syn)(r dt/tau_mem)
    LI, I    the readout (no firing), as LIF and IF

    neurosim: u[t] = beta v[t-1] + g I[t];  s = H(u - theta);  v = u (1 - s) + v_reset s

Written graphs set ``r = tau/dt`` (and ``w_in = tau_syn/dt``, ``r = 1/dt`` for IF and I), so
``g = 1``, as snnTorch does; on reading, a gain other than 1 is folded into the synapse before
the neurons. ``v_leak`` must be 0. A graph must be a chain
``Input -> ([Flatten] synapse [Scale] neurons [SumPool2d Threshold] [Scale])* -> [readout] -> Output``
(the readout: a dense synapse then LI or I, or the affine form below)
with synapses Affine, Linear or Conv2d. Max pooling of spikes, which NIR lacks, is written as
SumPool2d then Threshold(0.5) (for 0/1 spikes the same thing). TrSG's output gain (spikes times
theta, seed 004) is a Scale node after the neurons. A graph that ends in spiking neurons (as
snnTorch's do) gets neurosim's integrating readout with identity weights: the logits are the mean
over the steps of each output neuron's running spike count.

The readout is written in one of two forms (``readout=``, ``neurosim export --nir-readout``):
``integrator`` (the default, lossless in NIR's own terms) ends in NIR's ``I`` node (``LI`` for a
leaky readout); ``affine`` ends at the readout's Affine, whose value at each step the graph
outputs, with the integrator (its beta) in that node's metadata under ``"readout_integrator"``:
logits = mean over the steps of ``v[t] = beta v[t-1] + out[t]``. snnTorch 1.0's
``import_from_nir`` and SpikingJelly 2.0's ``nir_exchange.import_from_nir`` map neither ``I`` nor
``LI`` (nor SumPool2d, Threshold, Scale), so they load only the affine form of a network without
max pooling or TrSG's gain. neurosim reads both forms back to the same model.

What NIR cannot express is written to metadata — a JSON object under the key ``"neurosim"`` of
the graph and of each node — and listed in the graph's ``not_expressed`` (the CLI prints it):
soft reset, refractory steps, MP-Init's initial potential, and for a Deployment the integer
formats, codes, scales, profile (name, checksum, variation and noise sigmas). Batch norm and tdBN
are folded into the synapse at export (their eval statistics), so an imported model has none.
Reading refuses, with one line naming the node and the reason, what neurosim cannot represent:
recurrent edges or subgraphs, branches, node types without a neurosim equivalent, per-neuron
parameters that differ within a layer, neuron models that differ between layers.

:func:`to_nir`, :func:`from_nir`, :func:`deployment_from_nir`, :func:`read_nir`,
:func:`write_nir` and :func:`import_run` are the API; ``neurosim export --format nir`` and
``neurosim import`` the commands.
"""

from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from neurosim import __version__
from neurosim.errors import ArtifactError, ExportError, NeurosimError, brief
from neurosim.export.deployment import Deployment, deployment_from_manifest
from neurosim.files import atomic_write, write_folder, write_yaml
from neurosim.limits import DeclaredSizes
from neurosim.nn.builder import NeuronOptions, build_model
from neurosim.nn.layers import SpikingNetwork, fold_norm
from neurosim.nn.surrogate import PSG

if TYPE_CHECKING:
    import nir

NIR_DT = 1e-4
FORMAT = "neurosim-nir"
FORMAT_VERSION = 1
META_KEY = "neurosim"
IMPORT_RECORD = "import.yaml"
GAIN_TOLERANCE = 1e-5  # relative: a per-step gain this close to 1 is 1 (tau and r stored in float32)
VALUE_TOLERANCE = 1e-6  # relative: metadata and node values agree (beta from tau is not bit-exact)

READOUTS = ("integrator", "affine")  # the readout's forms in a written graph (module docstring)
READOUT_KEY = "readout_integrator"    # affine form: the integrator's facts, in the readout Affine's metadata
CONVENTIONS = [
    "time: forward Euler with step dt (graph metadata 'dt'); LIF and LI: beta = 1 - dt/tau, input gain "
    "r*dt/tau; IF and I: gain r*dt; CubaLIF: alpha = 1 - dt/tau_syn, gain (w_in*dt/tau_syn)*(r*dt/tau_mem)",
    "input: the same input enters at each of 'timesteps' steps (direct encoding)",
    "output: the logits are the mean over the steps of the readout potential",
    "firing: neurosim fires when the potential reaches the threshold (u >= threshold), NIR when it "
    "exceeds it (u > threshold); they differ only on exact ties",
    "max pooling of spikes is written as SumPool2d followed by Threshold(0.5)",
]
AFFINE_OUTPUT = ("output: the graph's output is the readout Affine's value at each step, out[t]; the logits are the "
                 "mean over the steps of v[t] = beta v[t-1] + out[t] (v[0] = 0, beta in the Affine's metadata)")


def _nir():
    try:
        import nir
    except ImportError:
        raise NeurosimError("NIR support needs the nir package: pip install 'neurosim[nir]'") from None
    return nir


@dataclass
class _Layer:
    """One synapse + neurons (or the readout) in the form both directions share."""

    name: str
    kind: str                         # linear | conv2d
    weight: np.ndarray                # [out, in] or [out, in, k, k], float
    bias: np.ndarray | None           # [out]
    stride: int = 1
    padding: int = 0
    readout: bool = False
    beta: float = 1.0
    threshold: float = 1.0
    v_reset: float = 0.0
    synapse_decay: float | None = None
    pool: int = 0
    output_gain: float | None = None  # TrSG: spikes leave multiplied by theta
    neuron: dict[str, Any] = field(default_factory=dict)   # neuron facts (the neuron node's metadata)
    synapse: dict[str, Any] = field(default_factory=dict)  # synapse facts (the synapse node's metadata)
    node: str = ""                    # reading: the NIR synapse node it came from
    out_shape: tuple[int, ...] = ()   # reading: neurons of a convolution (C, H, W)


# ================================================================== export

def to_nir(source: SpikingNetwork | Deployment, metadata: dict[str, Any] | None = None,
           dt: float = NIR_DT, readout: str = "integrator") -> nir.NIRGraph:
    """The NIR graph of a float model or of a :class:`Deployment` (conventions in the module
    docstring). A model is written in its eval form: batch norm folded (running statistics),
    MP-Init, soft reset and refractory steps in metadata. A deployment is written as floats —
    weights ``code * scale`` (exact multiples of their scale), biases ``code * unit``, nominal
    thresholds, resets and decays — with its manifest (profile, formats, integer codes) in
    metadata, so that :func:`deployment_from_nir` gives it back exactly. ``metadata`` (e.g. the
    training config under ``"training"``) is stored in the graph's metadata for a model; a
    deployment stores its own. ``readout`` is the readout's form: ``"integrator"`` (NIR's ``I``
    or ``LI`` node after the readout Affine, the lossless default) or ``"affine"`` (the graph ends
    at the readout Affine, whose per-step outputs the peers' importers compute; the integrator
    is in metadata, see the module docstring). Raises :class:`ExportError` for what NIR cannot hold.
    """
    if not (dt > 0 and math.isfinite(dt)):
        raise ExportError(f"dt must be a positive number of seconds, got {dt}")
    if readout not in READOUTS:
        raise ExportError(f"readout form {readout!r}: choose one of {', '.join(READOUTS)}")
    if isinstance(source, Deployment):
        layers = _deployment_layers(source)
        manifest = source.manifest("")
        for key in ("layers", "tensors", "metadata"):
            manifest.pop(key, None)
        head = {"kind": "deployment", "spec": str(source.metadata.get("training", {}).get("model", "")),
                "timesteps": source.timesteps, "input_shape": list(source.input_shape),
                "num_classes": source.num_classes, "deployment": manifest, "metadata": source.metadata}
        num = source.profile.numerics
        extra = [f"the integer formats of profile {source.profile.name} (weight_bits {num.weight_bits}, membrane_bits "
                 f"{num.membrane_bits}, decay {num.decay.kind}, rounding {num.rounding}, overflow {num.overflow}), "
                 "its input quantization, variation and noise: the NIR nodes hold float values (weights are integer "
                 "codes times their scale); the integers are in metadata"]
    else:
        layers = _model_layers(source)
        head = {"kind": "model", "spec": source.spec, "timesteps": source.timesteps,
                "input_shape": list(source.input_shape), "num_classes": int(source.readout.synapse.out_features),
                "metadata": dict(metadata or {})}
        extra = []
    not_expressed = extra + [note for layer in layers for note in _layer_notes(layer, readout)]
    conventions = CONVENTIONS if readout == "integrator" else \
        [AFFINE_OUTPUT if c.startswith("output:") else c for c in CONVENTIONS]
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "neurosim_version": __version__, **head,
            "readout": readout, "conventions": conventions, "not_expressed": not_expressed}
    return _graph(tuple(head["input_shape"]), layers, head, dt, readout)


def _model_layers(model: SpikingNetwork) -> list[_Layer]:
    layers: list[_Layer] = []
    for block in model.blocks:
        if block.pool is not None and not isinstance(block.pool, nn.MaxPool2d):
            raise ExportError(f"{block.name}: only max pooling of spikes has a NIR form here")
        if block.recurrent is not None:
            raise ExportError(f"{block.name}: recurrent weights have no NIR form here yet")
        if block.synapse2 is not None:
            raise ExportError(f"{block.name}: a second synaptic state has no NIR form here")
        with torch.no_grad():
            weight, bias = (fold_norm(block.synapse, block.norm) if block.norm is not None
                            else (block.synapse.weight, block.synapse.bias))
        node = block.node
        threshold = float(node.threshold.detach())
        synapse = {"layer": block.name}
        if block.norm is not None:
            synapse["folded_batch_norm"] = {"scale": block.norm.scale}
        conv = isinstance(block.synapse, nn.Conv2d)
        beta = float(node.beta.detach().clamp(0, 1))
        surrogate = {"name": node.surrogate.name, **node.surrogate.config()}
        layers.append(_Layer(
            name=block.name, kind="conv2d" if conv else "linear", weight=_array(weight, block.name, "weight"),
            bias=None if bias is None else _array(bias, block.name, "bias"),
            stride=int(block.synapse.stride[0]) if conv else 1, padding=int(block.synapse.padding[0]) if conv else 0,
            beta=beta, threshold=threshold, v_reset=float(node.v_reset),
            synapse_decay=None if node.synapse_decay is None else float(node.synapse_decay),
            pool=int(block.pool.kernel_size) if block.pool is not None else 0,
            output_gain=threshold if node.output_gain is not None else None,
            synapse=synapse,
            neuron={"layer": block.name, "reset": node.reset, "reset_grad": node.reset_grad, "beta": beta,
                    "threshold": threshold, "v_reset": float(node.v_reset),
                    "synapse_decay": None if node.synapse_decay is None else float(node.synapse_decay),
                    "refractory": node.refractory, "v_init": node.v_init, "mp_init": float(node.mp_init),
                    "surrogate": surrogate, "learn_beta": isinstance(node.beta, nn.Parameter),
                    "learn_threshold": isinstance(node.threshold, nn.Parameter)}))
    readout = model.readout
    layers.append(_Layer(
        name="readout", kind="linear", weight=_array(readout.synapse.weight, "readout", "weight"),
        bias=_array(readout.synapse.bias, "readout", "bias"), readout=True, beta=float(readout.beta),
        synapse={"layer": "readout"}, neuron={"layer": "readout", "beta": float(readout.beta)}))
    return layers


def _deployment_layers(deployment: Deployment) -> list[_Layer]:
    layers = []
    num, bits = deployment.profile.numerics, deployment.input_bits
    for layer in deployment.layers:
        if layer.recurrent is not None:
            raise ExportError(f"{layer.name}: recurrent weights have no NIR form here yet")
        if layer.weight2 is not None:
            raise ExportError(f"{layer.name}: a second synaptic state has no NIR form here")
        if layer.per_neuron:
            raise ExportError(f"{layer.name}: per-neuron {', '.join(sorted(layer.per_neuron))} have no NIR form here")
        # a weight code is worth unit * 2^activation_shift / input_step (the sums are shifted left)
        unit = layer.unit.double() * (1 << num.activation_shift)
        w_step = (unit / layer.input_step).reshape(-1, *([1] * (layer.weight.dim() - 1))) if unit.dim() else \
            unit / layer.input_step
        weight = (layer.weight.double() * w_step).numpy()
        bias = None if layer.bias is None else (layer.bias.double() * layer.unit.double().reshape(-1)).numpy()
        entry = layer.to_manifest(num, bits)
        entry["unit_values"] = layer.unit.reshape(-1).tolist()
        v_init = "mp_init" if layer.v_init != 0 else "zero"
        neuron = ({"layer": layer.name, "beta": layer.beta} if layer.readout else
                  {"layer": layer.name, "reset": layer.reset, "beta": layer.beta, "threshold": layer.threshold,
                   "v_reset": layer.v_reset, "synapse_decay": layer.synapse_decay, "refractory": layer.refractory,
                   "v_init": v_init, "mp_init": layer.v_init, "integer": entry.get("integer")})
        layers.append(_Layer(
            name=layer.name, kind=layer.kind, weight=weight, bias=bias, stride=layer.stride, padding=layer.padding,
            readout=layer.readout, beta=layer.beta, threshold=layer.threshold, v_reset=layer.v_reset,
            synapse_decay=layer.synapse_decay, pool=layer.pool, neuron=neuron,
            synapse={"layer": layer.name, "manifest_layer": entry}))
    return layers


def _array(tensor: torch.Tensor, layer: str, what: str) -> np.ndarray:
    value = tensor.detach().cpu().numpy().copy()
    if not np.isfinite(value).all():
        raise ExportError(f"{layer}: {what} holds NaN or inf")
    return value


def _layer_notes(layer: _Layer, readout: str = "integrator") -> list[str]:
    """What of ``layer`` the NIR nodes do not say (kept in its metadata)."""
    n = layer.neuron
    notes = []
    if layer.readout and readout == "affine":
        notes.append(f"{layer.name}: the integrator after the readout Affine (beta {layer.beta:.6g}): the graph "
                     "outputs the Affine's value at each step; the logits are the mean over the steps of "
                     "v[t] = beta v[t-1] + out[t]")
    if n.get("reset") == "soft":
        notes.append(f"{layer.name}: soft reset (v = u - threshold on a spike); the NIR node says reset to v_reset")
    if n.get("refractory"):
        notes.append(f"{layer.name}: refractory period of {n['refractory']} steps")
    if n.get("v_init") == "mp_init" and n.get("mp_init"):
        notes.append(f"{layer.name}: initial membrane potential {n['mp_init']:.6g} (MP-Init, seed 004); NIR starts "
                     "at 0")
    return notes


def _graph(input_shape: tuple[int, ...], layers: list[_Layer], head: dict[str, Any], dt: float,
           readout: str) -> nir.NIRGraph:
    nir = _nir()
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    last = ["input"]

    def add(name: str, node: Any) -> None:
        nodes[name] = node
        edges.append((last[0], name))
        last[0] = name

    shape = tuple(int(d) for d in input_shape)
    for layer in layers:
        if layer.kind == "linear" and len(shape) > 1:
            add(f"{layer.name}.flatten", nir.Flatten(input_type=np.array(shape), start_dim=0, end_dim=-1))
            shape = (math.prod(shape),)
        affine_readout = layer.readout and readout == "affine"
        meta = {META_KEY: _json({**layer.synapse, READOUT_KEY: layer.neuron} if affine_readout else layer.synapse,
                                layer.name)}
        out = layer.weight.shape[0]
        if layer.kind == "conv2d":
            k = layer.weight.shape[-1]
            bias = layer.bias if layer.bias is not None else np.zeros(out, dtype=layer.weight.dtype)
            add(f"{layer.name}.synapse", nir.Conv2d(
                input_shape=shape[1:], weight=layer.weight, stride=layer.stride, padding=layer.padding,
                dilation=1, groups=1, bias=bias, metadata=meta))
            shape = (out, (shape[1] + 2 * layer.padding - k) // layer.stride + 1,
                     (shape[2] + 2 * layer.padding - k) // layer.stride + 1)
        else:
            add(f"{layer.name}.synapse", nir.Linear(weight=layer.weight, metadata=meta) if layer.bias is None
                else nir.Affine(weight=layer.weight, bias=layer.bias, metadata=meta))
            shape = (out,)
        if affine_readout:
            continue
        add(f"{layer.name}.neuron", _neuron_node(nir, layer, shape, dt))
        if layer.pool:
            k = layer.pool
            add(f"{layer.name}.pool", nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                                    padding=np.array([0, 0])))
            shape = (shape[0], shape[1] // k, shape[2] // k)
            add(f"{layer.name}.pool_spikes", nir.Threshold(threshold=np.full(shape, 0.5)))
        if layer.output_gain is not None:
            add(f"{layer.name}.output_gain", nir.Scale(scale=np.full(shape, layer.output_gain)))
    add("output", nir.Output(output_type=np.array(shape)))
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META_KEY: _json(head, "graph"), "dt": float(dt)},
                            type_check=True)
    except (ValueError, AssertionError) as exc:  # a shape this module got wrong: say so, do not write it
        raise ExportError(f"NIR graph failed its type check ({brief(exc)})") from None


def _json(data: dict[str, Any], where: str) -> str:
    """Metadata as a JSON string (HDF5 keeps it exactly; nested dicts and None would not survive)."""
    try:
        return json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where}: metadata is not plain data ({exc})") from None


def _neuron_node(nir, layer: _Layer, shape: tuple[int, ...], dt: float):
    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    meta = {META_KEY: _json(layer.neuron, layer.name)}
    if layer.readout:
        if layer.beta >= 1:
            return nir.I(r=full(1 / dt), metadata=meta)
        tau = dt / (1 - layer.beta)
        return nir.LI(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), metadata=meta)
    if layer.synapse_decay is not None:
        if layer.synapse_decay >= 1 or layer.beta >= 1:
            raise ExportError(f"{layer.name}: a current-based neuron without leak (synapse decay "
                              f"{layer.synapse_decay}, beta {layer.beta}) has no NIR CubaLIF form")
        tau_syn, tau_mem = dt / (1 - layer.synapse_decay), dt / (1 - layer.beta)
        return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem / dt), v_leak=full(0.0),
                           v_threshold=full(layer.threshold), v_reset=full(layer.v_reset), w_in=full(tau_syn / dt),
                           metadata=meta)
    if layer.beta >= 1:
        return nir.IF(r=full(1 / dt), v_threshold=full(layer.threshold), v_reset=full(layer.v_reset), metadata=meta)
    tau = dt / (1 - layer.beta)
    return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(layer.threshold),
                   v_reset=full(layer.v_reset), metadata=meta)


def write_nir(graph: nir.NIRGraph, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``) atomically: the file is either absent,
    the old one, or the complete new one."""
    nir = _nir()
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give a file name such as model.nir")
    if path.exists() and not overwrite:
        raise ExportError(f"{path}: already exists (use --force to replace it)")
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror})") from None
    return path


def graph_notes(graph: nir.NIRGraph) -> list[str]:
    """The ``not_expressed`` list of a graph written by :func:`to_nir` (empty for other graphs)."""
    head = _meta(graph, "graph") or {}
    return [str(note) for note in head.get("not_expressed", [])]


# ================================================================== import

@dataclass
class NirImport:
    """What :func:`from_nir` read from a graph besides the network: the model spec and neuron
    settings a :class:`~neurosim.train.TrainConfig` needs to rebuild it, and notes."""

    spec: str
    input_shape: tuple[int, ...]
    num_classes: int
    timesteps: int
    dt: float
    source: str                    # "neurosim model" | "neurosim deployment" | "foreign"
    neuron: dict[str, Any]         # NeuronConfig fields shared by the spiking layers
    readout_added: bool
    training: dict[str, Any] | None
    notes: list[str]

    def record(self) -> dict[str, Any]:
        """Plain data for the imported run's ``import.yaml``."""
        return {"spec": self.spec, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "timesteps": self.timesteps, "dt": self.dt, "source": self.source, "neuron": self.neuron,
                "readout_added": self.readout_added, "notes": self.notes}


def read_nir(path: str | Path) -> nir.NIRGraph:
    """A NIR graph from a file (``nir.read`` without its type check: :func:`from_nir` checks the
    structure and names what is wrong); one-line ArtifactError for a missing or unreadable file."""
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such NIR file")
    _check_declared_sizes(path)
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py, nir's asserts, KeyError ...: any failure to parse the file
        raise ArtifactError(f"{path}: not a readable NIR graph ({type(exc).__name__}: "
                            f"{brief(exc)})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise ArtifactError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    return graph


def _check_declared_sizes(path: Path) -> None:
    """Walk the HDF5 datasets of ``path`` (shapes and item sizes from their headers, no data
    read: ``nir.read`` reads every dataset whole) and refuse, before ``nir.read``, one that
    declares more than :data:`neurosim.limits.MAX_ARRAY_ELEMENTS` or the file's total beyond
    :data:`neurosim.limits.MAX_DECLARED_BYTES`. A file h5py cannot open is left to ``nir.read``."""
    import h5py

    sizes = DeclaredSizes(str(path), ArtifactError)
    found: list[tuple[str, tuple[int, ...], int]] = []
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: found.append((name, item.shape or (), item.dtype.itemsize))
                              if isinstance(item, h5py.Dataset) else None)
    except Exception:  # noqa: BLE001 - not HDF5, truncated ...: nir.read names the reason
        return
    for name, shape, itemsize in found:
        sizes.add(_dataset_name(name), shape, itemsize)


def _dataset_name(path: str) -> str:
    """An HDF5 dataset path of a NIR file as its node and key: ``node/nodes/block0.synapse/weight``
    is ``node 'block0.synapse' weight`` (a subgraph's nodes joined by ``/``)."""
    parts = path.split("/")
    nodes = [parts[i + 1] for i, part in enumerate(parts[:-2]) if part == "nodes"]
    return f"node {'/'.join(nodes)!r} {parts[-1]}" if nodes else f"dataset {path!r}"


def _refuse(where: str, name: str, reason: str) -> ArtifactError:
    return ArtifactError(f"{where}: node {name!r}: {reason}")


def _meta(node: Any, name: str, where: str = "NIR graph") -> dict[str, Any] | None:
    raw = (getattr(node, "metadata", None) or {}).get(META_KEY)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(str(raw))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _refuse(where, name, f"metadata {META_KEY!r} is not a JSON object")
    return data


def _chain(graph: nir.NIRGraph, where: str) -> list[tuple[str, Any]]:
    """The nodes from the Input to the Output, in order; refuses anything but one chain."""
    nir = _nir()
    nodes = graph.nodes
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise _refuse(where, name, "is a subgraph (snnTorch writes recurrent layers, RLeaky and RSynaptic, "
                                       "this way); neurosim has no recurrent or nested layers")
    succ: dict[str, list[str]] = defaultdict(list)
    pred: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        a, b = str(a), str(b)
        for end in (a, b):
            if end not in nodes:
                raise ArtifactError(f"{where}: edge {a} -> {b} names node {end!r}, which the graph lacks")
        succ[a].append(b)
        pred[b].append(a)
    back = _back_edge(nodes, succ)
    if back is not None:
        raise _refuse(where, back[1], f"recurrent edge {back[0]} -> {back[1]}; neurosim has no recurrent connections")
    for name in nodes:
        if len(succ[name]) > 1:
            raise _refuse(where, name, f"branches to {', '.join(succ[name])}; neurosim networks are one chain")
        if len(pred[name]) > 1:
            raise _refuse(where, name, f"merges inputs from {', '.join(pred[name])}; neurosim networks are one chain")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactError(f"{where}: has {len(inputs)} Input and {len(outputs)} Output nodes; neurosim reads "
                            "graphs with one of each")
    order, name = [], inputs[0]
    while succ[name]:
        name = succ[name][0]
        order.append(name)
    if not order or order[-1] != outputs[0]:
        raise ArtifactError(f"{where}: the path from {inputs[0]!r} does not reach the Output {outputs[0]!r}")
    missing = [n for n in nodes if n not in order and n != inputs[0]]
    if missing:
        raise _refuse(where, missing[0], "is not on the path from the input to the output")
    return [(n, nodes[n]) for n in order[:-1]]


def _back_edge(nodes: dict[str, Any], succ: dict[str, list[str]]) -> tuple[str, str] | None:
    """An edge that closes a cycle (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in nodes:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                return node, child
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(succ[child])))
    return None


class _Reader:
    """Parses a chain of NIR nodes into :class:`_Layer` objects (one pass, input to output)."""

    def __init__(self, where: str, dt: float, input_shape: tuple[int, ...]) -> None:
        self.where, self.dt = where, dt
        self.shape = input_shape
        self.layers: list[_Layer] = []
        self.pending: _Layer | None = None       # a synapse waiting for its neurons
        self.input_gain: np.ndarray | None = None  # a Scale after neurons, for the next synapse's inputs

    def refuse(self, name: str, reason: str) -> ArtifactError:
        return _refuse(self.where, name, reason)

    # ---------------------------------------------------------------- values

    def values(self, name: str, what: str, array: Any, count: int) -> np.ndarray:
        """A parameter as ``count`` float64 values (a single value broadcasts)."""
        try:
            a = np.asarray(array, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise self.refuse(name, f"{what} is not numeric") from None
        if a.size not in (1, count):
            raise self.refuse(name, f"{what} has {a.size} values for {count} neurons")
        if not np.isfinite(a).all():
            raise self.refuse(name, f"{what} holds NaN or inf")
        return np.broadcast_to(a, (count,)) if a.size == 1 else a

    def uniform(self, name: str, what: str, array: Any, count: int) -> float:
        a = self.values(name, what, array, count)
        if float(a.max() - a.min()) > VALUE_TOLERANCE * max(1.0, float(np.abs(a).max())):
            raise self.refuse(name, f"per-neuron {what} differ ({a.min():.6g} to {a.max():.6g}); the neurons of a "
                                    "neurosim layer share one value")
        return float(a[0])

    def decay(self, name: str, what: str, tau: float) -> float:
        beta = 1 - self.dt / tau
        if not 0 < beta < 1:
            raise self.refuse(name, f"{what} = {tau:.6g} is not above the time step dt = {self.dt:.6g} (decay "
                                    f"1 - dt/{what} = {beta:.6g}); give the graph's time step (--dt)")
        return beta

    # ---------------------------------------------------------------- nodes

    def read(self, chain: list[tuple[str, Any]]) -> None:
        nir = _nir()
        i = 0
        while i < len(chain):
            name, node = chain[i]
            if self.layers and self.layers[-1].readout:
                raise self.refuse(name, "comes after the readout neurons (LI or I), which must be the last layer")
            if isinstance(node, nir.Flatten):
                self.flatten(name, node)
            elif isinstance(node, (nir.Affine, nir.Linear)):
                self.dense(name, node)
            elif isinstance(node, nir.Conv2d):
                self.conv(name, node)
            elif isinstance(node, nir.Scale):
                self.scale(name, node)
            elif isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.I)):
                self.neurons(name, node)
            elif isinstance(node, nir.SumPool2d):
                following = chain[i + 1] if i + 1 < len(chain) else (None, None)
                self.pool(name, node, *following)
                i += 1
            elif isinstance(node, nir.AvgPool2d):
                raise self.refuse(name, "average pooling of spikes gives fractions, not spikes; neurosim pools spikes "
                                        "by max only (SumPool2d followed by Threshold)")
            elif isinstance(node, nir.Threshold):
                raise self.refuse(name, "a Threshold that does not follow a SumPool2d (max pooling) has no neurosim "
                                        "equivalent")
            else:
                reason = {"Delay": "synaptic delays", "CubaLI": "a readout with a synaptic current",
                          "Conv1d": "1-D convolutions"}.get(type(node).__name__, f"{type(node).__name__} nodes")
                raise self.refuse(name, f"{reason}: no neurosim equivalent")
            i += 1
        if self.pending is not None:
            self.affine_readout()
        if self.input_gain is not None:
            raise ArtifactError(f"{self.where}: a Scale after the last neurons has no synapse to fold into")
        if not self.layers:
            raise ArtifactError(f"{self.where}: no layers between the input and the output")

    def affine_readout(self) -> None:
        """The last synapse of a graph written with ``readout="affine"``: the readout, with the
        integrator its metadata holds; any other synapse with no neurons after it is refused."""
        synapse = self.pending
        facts = synapse.synapse.get(READOUT_KEY)
        if not isinstance(facts, dict):
            raise self.refuse(synapse.node, "a synapse with no neurons after it (a per-step output); neurosim's "
                                            "readout integrates over time: end with LI or I")
        if synapse.kind != "linear":
            raise self.refuse(synapse.node, "a readout needs a dense synapse (Affine or Linear)")
        try:
            beta = float(facts["beta"])
        except (KeyError, TypeError, ValueError):
            raise self.refuse(synapse.node, f"metadata {READOUT_KEY!r} has no numeric beta") from None
        if not 0 <= beta <= 1:
            raise self.refuse(synapse.node, f"metadata {READOUT_KEY!r} gives beta {beta:.6g}, outside [0, 1]")
        synapse.name = str(facts.get("layer") or "readout")
        synapse.readout, synapse.beta, synapse.neuron = True, beta, facts
        self.layers.append(synapse)
        self.pending = None
        self.shape = (synapse.weight.shape[0],)

    def flatten(self, name: str, node: Any) -> None:
        if self.pending is not None:
            raise self.refuse(name, "a Flatten between a synapse and its neurons")
        rank = len(self.shape)
        start, end = int(node.start_dim), int(node.end_dim)
        if start not in (0, -rank) or end not in (-1, rank - 1):
            raise self.refuse(name, f"flattens dimensions {start}..{end} of a {self.shape} tensor; neurosim flattens "
                                    "whole samples only")
        self.shape = (math.prod(self.shape),)

    def _start_synapse(self, name: str) -> None:
        if self.pending is not None:
            raise self.refuse(name, f"follows synapse {self.pending.node!r} with no neurons between them")

    def dense(self, name: str, node: Any) -> None:
        self._start_synapse(name)
        weight = np.asarray(node.weight, dtype=np.float64)
        if weight.ndim != 2:
            raise self.refuse(name, f"weight of shape {weight.shape}; expected [outputs, inputs]")
        if weight.shape[1] != math.prod(self.shape):
            raise self.refuse(name, f"takes {weight.shape[1]} inputs, the layer before gives {math.prod(self.shape)}")
        bias = getattr(node, "bias", None)
        bias = None if bias is None else self.values(name, "bias", bias, weight.shape[0]).copy()
        if self.input_gain is not None:
            weight = weight * self.input_gain.reshape(1, -1)
            self.input_gain = None
        self.pending = _Layer(name="", kind="linear", weight=weight, bias=bias, node=name,
                              synapse=_meta(node, name, self.where) or {})

    def conv(self, name: str, node: Any) -> None:
        self._start_synapse(name)
        if len(self.shape) != 3:
            raise self.refuse(name, f"a convolution needs (channels, height, width) inputs, the layer before gives "
                                    f"{self.shape}")
        weight = np.asarray(node.weight, dtype=np.float64)
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
            raise self.refuse(name, f"weight of shape {weight.shape}; neurosim convolutions have square kernels")
        if weight.shape[1] != self.shape[0]:
            raise self.refuse(name, f"takes {weight.shape[1]} channels, the layer before gives {self.shape[0]}")
        if int(node.groups) != 1 or any(int(d) != 1 for d in np.atleast_1d(node.dilation)):
            raise self.refuse(name, "grouped or dilated convolutions have no neurosim equivalent")
        stride = {int(s) for s in np.atleast_1d(node.stride)}
        if len(stride) != 1:
            raise self.refuse(name, f"strides {tuple(np.atleast_1d(node.stride))} differ; neurosim's are square")
        stride_v, k = stride.pop(), int(weight.shape[-1])
        padding = node.padding
        if isinstance(padding, bytes):
            padding = padding.decode()
        if isinstance(padding, str):
            if padding == "valid":
                pad = 0
            elif padding == "same" and stride_v == 1 and k % 2 == 1:
                pad = k // 2
            else:
                raise self.refuse(name, f"padding {padding!r} with stride {stride_v} and kernel {k}")
        else:
            pads = {int(p) for p in np.atleast_1d(padding)}
            if len(pads) != 1:
                raise self.refuse(name, f"paddings {tuple(np.atleast_1d(padding))} differ; neurosim's are symmetric")
            pad = pads.pop()
        out = (weight.shape[0], (self.shape[1] + 2 * pad - k) // stride_v + 1,
               (self.shape[2] + 2 * pad - k) // stride_v + 1)
        if out[1] < 1 or out[2] < 1:
            raise self.refuse(name, f"leaves no pixels of a {self.shape} input")
        bias = self.values(name, "bias", node.bias, weight.shape[0]).copy()
        if self.input_gain is not None:
            weight = weight * self._per_channel(name, self.input_gain, self.shape).reshape(1, -1, 1, 1)
            self.input_gain = None
        self.pending = _Layer(name="", kind="conv2d", weight=weight, bias=bias, stride=stride_v, padding=pad,
                              node=name, out_shape=out, synapse=_meta(node, name, self.where) or {})

    def _per_channel(self, name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        per = values.reshape(shape[0], -1)
        if float(np.ptp(per, axis=1).max()) > VALUE_TOLERANCE * max(1.0, float(np.abs(per).max())):
            raise self.refuse(name, "a gain that varies within a channel of a convolution; neurosim folds gains per "
                                    "channel")
        return per[:, 0]

    def _fold_gain(self, name: str, synapse: _Layer, gain: np.ndarray, shape: tuple[int, ...]) -> None:
        """Multiply the synapse's outputs (weight rows and bias) by ``gain`` (one per neuron)."""
        if np.allclose(gain, 1.0, rtol=GAIN_TOLERANCE, atol=0.0):
            return
        per_out = gain if synapse.kind == "linear" else self._per_channel(name, gain, shape)
        synapse.weight = synapse.weight * per_out.reshape(-1, *([1] * (synapse.weight.ndim - 1)))
        if synapse.bias is not None:
            synapse.bias = synapse.bias * per_out

    def scale(self, name: str, node: Any) -> None:
        if self.pending is not None:
            shape = self._out_shape(self.pending)
            gain = self.values(name, "scale", node.scale, math.prod(shape))
            self._fold_gain(name, self.pending, gain, shape)
            return
        if not self.layers:
            raise self.refuse(name, "scales the raw input; neurosim feeds the input unscaled")
        gain = self.values(name, "scale", node.scale, math.prod(self.shape))
        last = self.layers[-1]
        trsg = (last.neuron.get("surrogate") or {}).get("name") == "trsg"
        if trsg and last.output_gain is None and self.input_gain is None \
                and np.allclose(gain, last.threshold, rtol=VALUE_TOLERANCE, atol=0.0):
            last.output_gain = last.threshold  # seed 004's TrSG: the spikes leave multiplied by theta
            return
        self.input_gain = gain.copy() if self.input_gain is None else self.input_gain * gain

    def _out_shape(self, synapse: _Layer) -> tuple[int, ...]:
        return synapse.out_shape if synapse.kind == "conv2d" else (synapse.weight.shape[0],)

    def neurons(self, name: str, node: Any) -> None:
        nir = _nir()
        synapse = self.pending
        readout = isinstance(node, (nir.LI, nir.I))
        if synapse is None:
            raise self.refuse(name, "has no synapse (Affine, Linear or Conv2d) before it")
        if readout and synapse.kind != "linear":
            raise self.refuse(name, "a readout needs a dense synapse (Affine or Linear) before it")
        shape = self._out_shape(synapse)
        count = math.prod(shape)
        dt = self.dt
        alpha = None
        if isinstance(node, (nir.LIF, nir.LI, nir.CubaLIF)):
            leak = self.values(name, "v_leak", node.v_leak, count)
            if np.any(leak != 0):
                raise self.refuse(name, "v_leak is not 0; neurosim neurons rest at 0")
        if isinstance(node, (nir.LIF, nir.LI)):
            tau = self.uniform(name, "tau", node.tau, count)
            beta = self.decay(name, "tau", tau)
            gain = self.values(name, "r", node.r, count) * dt / tau
        elif isinstance(node, nir.CubaLIF):
            tau_syn = self.uniform(name, "tau_syn", node.tau_syn, count)
            tau_mem = self.uniform(name, "tau_mem", node.tau_mem, count)
            alpha, beta = self.decay(name, "tau_syn", tau_syn), self.decay(name, "tau_mem", tau_mem)
            gain = (self.values(name, "w_in", node.w_in, count) * dt / tau_syn
                    * self.values(name, "r", node.r, count) * dt / tau_mem)
        else:  # IF, I
            beta = 1.0
            gain = self.values(name, "r", node.r, count) * dt
        self._fold_gain(name, synapse, gain, shape)
        meta = _meta(node, name, self.where) or {}
        synapse.name = str(meta.get("layer") or ("readout" if readout else f"block{len(self.layers)}"))
        synapse.readout = readout
        synapse.beta = self.agree(name, "beta", beta, meta)
        if not readout:
            threshold = self.uniform(name, "v_threshold", node.v_threshold, count)
            if threshold <= 0:
                raise self.refuse(name, f"threshold {threshold:.6g} is not positive")
            synapse.threshold = self.agree(name, "threshold", threshold, meta)
            synapse.v_reset = self.agree(name, "v_reset", self.uniform(name, "v_reset", node.v_reset, count), meta)
            synapse.synapse_decay = None if alpha is None else self.agree(name, "synapse_decay", alpha, meta)
        synapse.neuron = meta
        self.layers.append(synapse)
        self.pending = None
        self.shape = shape

    def agree(self, name: str, key: str, value: float, meta: dict[str, Any]) -> float:
        """``meta[key]`` (neurosim's exact value) where it matches the node's ``value``, else the
        node's value; a mismatch means the graph was altered after export and is refused."""
        if meta.get(key) is None:
            return value
        exact = float(meta[key])
        if abs(exact - value) > VALUE_TOLERANCE * max(1.0, abs(exact)):
            raise self.refuse(name, f"neurosim metadata says {key} = {exact:.9g}, the node's parameters give "
                                    f"{value:.9g} (altered after export?)")
        return exact

    def pool(self, name: str, node: Any, next_name: str | None, next_node: Any) -> None:
        nir = _nir()
        last = self.layers[-1] if self.layers else None
        if self.pending is not None or last is None or last.readout or last.pool or last.output_gain is not None \
                or len(self.shape) != 3:
            raise self.refuse(name, "sum pooling must directly follow spiking neurons of a convolution")
        if not isinstance(next_node, nir.Threshold):
            raise self.refuse(name, "sum pooling of spikes gives counts, not spikes; neurosim pools spikes by max "
                                    "(SumPool2d followed by Threshold)")
        kernel = {int(k) for k in np.atleast_1d(node.kernel_size)}
        stride = {int(s) for s in np.atleast_1d(node.stride)}
        if len(kernel) != 1 or stride != kernel or any(int(p) for p in np.atleast_1d(node.padding)):
            raise self.refuse(name, "neurosim pools square windows with stride = kernel and no padding")
        k = kernel.pop()
        shape = (self.shape[0], self.shape[1] // k, self.shape[2] // k)
        level = self.values(next_name, "threshold", next_node.threshold, math.prod(shape))
        if np.any(level < 0) or np.any(level >= 1):
            raise self.refuse(next_name, "a Threshold after SumPool2d is max pooling of spikes only for values in "
                                         "[0, 1)")
        last.pool, self.shape = k, shape


def _graph_head(graph: nir.NIRGraph, where: str) -> dict[str, Any] | None:
    head = _meta(graph, "(graph)", where)
    if head is None:
        return None
    if head.get("format") != FORMAT:
        raise ArtifactError(f"{where}: graph metadata {META_KEY!r} is not neurosim's (format {head.get('format')!r})")
    if head.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{where}: written in neurosim NIR format version {head.get('format_version')!r}, this "
                            f"neurosim reads version {FORMAT_VERSION}")
    return head


def _graph_dt(graph: nir.NIRGraph, dt: float | None, where: str) -> float:
    if dt is None:
        raw = (graph.metadata or {}).get("dt")
        try:
            dt = NIR_DT if raw is None else float(np.asarray(raw).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise ArtifactError(f"{where}: metadata dt = {raw!r} is not a number") from None
    if not (dt > 0 and math.isfinite(dt)):
        raise ArtifactError(f"{where}: dt must be a positive number of seconds, got {dt}")
    return float(dt)


def _read_layers(graph: nir.NIRGraph, dt: float | None, where: str) -> tuple[list[_Layer], tuple[int, ...], float]:
    nir = _nir()
    chain = _chain(graph, where)
    step = _graph_dt(graph, dt, where)
    input_node = next(node for node in graph.nodes.values() if isinstance(node, nir.Input))
    try:
        input_shape = tuple(int(d) for d in np.atleast_1d(input_node.input_type["input"]))
    except (TypeError, ValueError, KeyError):
        raise ArtifactError(f"{where}: the Input node has no shape") from None
    if not input_shape or min(input_shape) < 1:
        raise ArtifactError(f"{where}: the Input node has shape {input_shape}")
    reader = _Reader(where, step, input_shape)
    reader.read(chain)
    return reader.layers, input_shape, step


def from_nir(graph: nir.NIRGraph, timesteps: int | None = None, dt: float | None = None,
             where: str = "NIR graph") -> tuple[SpikingNetwork, NirImport]:
    """A :class:`SpikingNetwork` (eval mode) computing what ``graph`` describes, and what a
    training config needs to rebuild it. ``timesteps`` defaults to the graph's neurosim metadata
    (other graphs do not say; then it is required); ``dt`` to the graph's ``metadata["dt"]``, else
    1e-4 (snnTorch's). Raises one-line :class:`ArtifactError` naming ``where``, the node and the
    reason for anything neurosim cannot represent."""
    head = _graph_head(graph, where)
    layers, input_shape, step = _read_layers(graph, dt, where)
    if timesteps is None:
        timesteps = (head or {}).get("timesteps")
        if timesteps is None:
            raise ArtifactError(f"{where}: the graph does not say how many time steps to run; give them (--timesteps)")
    if int(timesteps) < 1:
        raise ArtifactError(f"{where}: timesteps must be at least 1, got {timesteps}")
    notes = []
    readout_added = not layers[-1].readout
    if readout_added:
        n = math.prod(_shape_after(layers[-1]))
        layers.append(_Layer(name="readout", kind="linear", weight=np.eye(n), bias=np.zeros(n), readout=True,
                             neuron={}, synapse={}))
        notes.append(f"the graph ends in spiking neurons: an integrating readout with identity weights was added for "
                     f"its {n} outputs (logits = mean over the steps of each output's running spike count)")
    kind = (head or {}).get("kind")
    source = {"model": "neurosim model", "deployment": "neurosim deployment"}.get(kind, "foreign")
    training = ((head or {}).get("metadata") or {}).get("training")
    model, neuron = _build(layers, input_shape, int(timesteps), where, source, training)
    notes += [f"kept from metadata: {note}" for note in (head or {}).get("not_expressed", [])]
    if any(layer.synapse.get("folded_batch_norm") for layer in layers):
        notes.append("batch norm was folded into the synapses at export; the imported model has none")
    info = NirImport(spec=model.spec, input_shape=input_shape, num_classes=int(layers[-1].weight.shape[0]),
                     timesteps=int(timesteps), dt=step, source=source, neuron=neuron, readout_added=readout_added,
                     training=training if isinstance(training, dict) else None, notes=notes)
    return model, info


def _shape_after(last: _Layer) -> tuple[int, ...]:
    """What a spiking layer read from a graph emits, per sample (after its pooling)."""
    if last.kind == "linear":
        return (last.weight.shape[0],)
    out = last.out_shape
    return (out[0], out[1] // last.pool, out[2] // last.pool) if last.pool else out


def _build(layers: list[_Layer], input_shape: tuple[int, ...], timesteps: int, where: str, source: str,
           training: Any) -> tuple[SpikingNetwork, dict[str, Any]]:
    """The network of ``layers`` via the model builder (so a config can rebuild it), and the
    NeuronConfig fields its spiking layers share."""
    spiking, readout = layers[:-1], layers[-1]
    trained = (training or {}).get("neuron", {}) if isinstance(training, dict) else {}
    settings = []
    for layer in spiking:
        n = layer.neuron
        surrogate = dict(n.get("surrogate") or {})
        if not surrogate and source == "neurosim deployment" and trained.get("surrogate") not in (None, "trsg"):
            surrogate = {"name": trained["surrogate"], **trained.get("surrogate_params", {})}
        name = str(surrogate.pop("name", "atan"))
        if name == "psg":
            surrogate.pop("shape", None)  # graphs written before every layer took the arctan shape differ per layer
        settings.append({
            "reset": n.get("reset", "hard"), "reset_grad": n.get("reset_grad"),
            "refractory": int(n.get("refractory", 0)), "v_init": n.get("v_init", "zero"),
            "current_based": layer.synapse_decay is not None, "surrogate": name,
            "surrogate_params": {k: v for k, v in surrogate.items() if not (name == "psg" and k == "gamma")},
            "learn_beta": bool(n.get("learn_beta", False)), "learn_threshold": bool(n.get("learn_threshold", False))})
    for layer, s in zip(spiking[1:], settings[1:]):
        for key, value in s.items():
            if value != settings[0][key]:
                raise _refuse(where, layer.node or layer.name,
                              f"its {key} ({value}) differs from {spiking[0].name}'s ({settings[0][key]}); the "
                              "layers of a neurosim network share one neuron model")
    first = settings[0] if settings else {"reset": "hard", "reset_grad": None, "refractory": 0, "v_init": "zero",
                                          "surrogate": "atan", "surrogate_params": {}, "learn_beta": False,
                                          "learn_threshold": False}
    tokens = []
    for layer in spiking:
        out = layer.weight.shape[0]
        tokens.append(f"{out}c{layer.weight.shape[-1]}s{layer.stride}p{layer.padding}" if layer.kind == "conv2d"
                      else str(out))
        if layer.pool:
            tokens.append(f"mp{layer.pool}")
    spec = ("conv:" if any(layer.kind == "conv2d" for layer in spiking) else "mlp:") + "-".join(tokens)
    lead = spiking[0] if spiking else None
    options = NeuronOptions(
        beta=lead.beta if lead else 0.5, threshold=lead.threshold if lead else 1.0,
        v_reset=lead.v_reset if lead else 0.0, reset=first["reset"], reset_grad=first["reset_grad"],
        synapse_decay=lead.synapse_decay if lead else None, refractory=first["refractory"],
        learn_beta=first["learn_beta"], learn_threshold=first["learn_threshold"], v_init=first["v_init"],
        surrogate=first["surrogate"], surrogate_params=dict(first["surrogate_params"]))
    try:
        model = build_model(spec, input_shape, int(readout.weight.shape[0]), timesteps, options,
                            readout_beta=readout.beta)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{where}: cannot build the network ({exc})") from None
    with torch.no_grad():
        for block, layer in zip(model.blocks, spiking):
            _load_synapse(block.synapse, layer)
            node = block.node
            node.beta.fill_(layer.beta)
            node.threshold.fill_(layer.threshold)
            node.v_reset.fill_(layer.v_reset)
            if layer.synapse_decay is not None:
                node.synapse_decay.fill_(layer.synapse_decay)
            node.mp_init.fill_(float(layer.neuron.get("mp_init", 0.0)))
            gamma = (layer.neuron.get("surrogate") or {}).get("gamma")
            if isinstance(node.surrogate, PSG) and gamma is not None:
                node.surrogate.gamma.fill_(float(gamma))
            if (layer.output_gain is not None) != (node.output_gain is not None):
                raise _refuse(where, layer.node or layer.name,
                              "TrSG's output gain (a Scale of theta after the neurons) and the surrogate disagree")
        _load_synapse(model.readout.synapse, readout)
    neuron = {"beta": options.beta, "threshold": options.threshold, "v_reset": options.v_reset,
              "reset": options.reset, "reset_grad": options.reset_grad, "surrogate": options.surrogate,
              "surrogate_params": options.surrogate_params, "v_init": options.v_init,
              "learn_beta": options.learn_beta, "learn_threshold": options.learn_threshold}
    return model.eval(), neuron


def _load_synapse(module: nn.Module, layer: _Layer) -> None:
    module.weight.copy_(torch.as_tensor(layer.weight, dtype=module.weight.dtype))
    if module.bias is not None:
        module.bias.copy_(torch.zeros_like(module.bias) if layer.bias is None
                          else torch.as_tensor(layer.bias, dtype=module.bias.dtype))


def deployment_from_nir(graph: nir.NIRGraph, where: str = "NIR graph") -> Deployment:
    """The :class:`Deployment` a graph written by ``to_nir(deployment)`` carries: integer codes
    from the node weights (which must be exact multiples of their recorded scale) and everything
    else from the metadata manifest, checked as an artifact is (profile checksum, formats,
    limits)."""
    head = _graph_head(graph, where)
    if head is None or head.get("kind") != "deployment":
        raise ArtifactError(f"{where}: holds no neurosim deployment (export with --format nir --profile P to "
                            "carry integer codes)")
    layers, _, _ = _read_layers(graph, None, where)
    numerics = ((head.get("deployment") or {}).get("profile") or {}).get("spec", {}).get("numerics")
    activation = int(numerics.get("activation_shift", 0)) if isinstance(numerics, dict) else 0
    entries, arrays = [], {}
    for layer in layers:
        entry = dict(layer.synapse.get("manifest_layer") or {})
        node = layer.node
        if not entry:
            raise _refuse(where, node, "has no deployment metadata (manifest_layer)")
        try:
            unit = np.asarray(entry.pop("unit_values"), dtype=np.float64).reshape(entry["unit"]["shape"])
            step = unit * float(1 << activation) / float(entry["input_step"])
            w_step = step.reshape(-1, *([1] * (layer.weight.ndim - 1))) if step.ndim else step
            name = str(entry["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse(where, node, f"malformed deployment metadata ({type(exc).__name__}: {exc})") from None
        arrays[f"{name}.weight"] = _codes(layer.weight / w_step, where, node, "weight")
        if layer.bias is not None and entry.get("bias") is not None:
            arrays[f"{name}.bias"] = _codes(layer.bias / unit.reshape(-1), where, node, "bias")
        arrays[f"{name}.unit"] = unit.astype(np.float32)
        entries.append(entry)
    manifest = {**head["deployment"], "layers": entries, "metadata": head.get("metadata") or {}}
    return deployment_from_manifest(manifest, arrays, where)


def _codes(scaled: np.ndarray, where: str, node: str, what: str) -> np.ndarray:
    codes = np.rint(scaled)
    if not np.isfinite(scaled).all() or float(np.abs(scaled - codes).max(initial=0.0)) > 1e-6:
        raise _refuse(where, node, f"{what}s are not whole multiples of their recorded scale (altered after export?)")
    return codes.astype(np.int64)


# ================================================================== a run folder from a graph

def import_run(path: str | Path, out_dir: str | Path, *, dataset: str | None = None, data_root: str | None = None,
               profile: str | None = None, timesteps: int | None = None, dt: float | None = None,
               overwrite: bool = False) -> NirImport:
    """Write a training-run folder (``config.yaml``, ``checkpoint.pt``, ``import.yaml``) holding
    the network of NIR file ``path``, which :func:`~neurosim.train.load_run`, ``neurosim export``,
    ``neurosim sweep`` and ``neurosim train --init-from`` accept. Dataset, data root, profile and
    timesteps default to those the graph's neurosim metadata records, else ``digits``, ``ideal``
    (and timesteps are required). The dataset must fit the graph's input and output sizes, and
    the profile its neurons (current-based or not, refractory steps). All checks run before
    anything is written; the folder appears whole or not at all."""
    from neurosim.device import load_profile
    from neurosim.train.config import config_from_data
    from neurosim.train.datasets import dataset_of
    from neurosim.train.trainer import CHECKPOINT, CHECKPOINT_FORMAT, CONFIG, build_for

    where = str(path)
    model, info = from_nir(read_nir(path), timesteps=timesteps, dt=dt, where=where)
    base = dict(info.training or {})
    options = dict(base, model=info.spec, timesteps=info.timesteps, norm="none", neuron=info.neuron,
                   profile=profile or base.get("profile") or "ideal",
                   dataset=dataset or base.get("dataset") or "digits")
    if data_root is not None or dataset is not None:
        options["data_root"] = data_root
    config = config_from_data(options, f"{where}: training options")
    chip = load_profile(config.profile)
    data = dataset_of(config.to_dict())
    convolutional = any(isinstance(block.synapse, nn.Conv2d) for block in model.blocks)
    fits = (tuple(data.input_shape) == info.input_shape if convolutional
            else math.prod(data.input_shape) == math.prod(info.input_shape))
    if not fits or data.num_classes != info.num_classes:
        raise ArtifactError(f"{where}: the graph takes inputs of shape {info.input_shape} and gives {info.num_classes} "
                            f"outputs; dataset {config.dataset} has shape {tuple(data.input_shape)} and "
                            f"{data.num_classes} classes (choose it with --dataset)")
    rebuilt = build_for(config, chip, data.input_shape, data.num_classes)
    for ours, theirs in zip(model.spiking_nodes(), rebuilt.spiking_nodes()):
        if (ours.synapse_decay is None) != (theirs.synapse_decay is None):
            state = "are" if ours.synapse_decay is not None else "are not"
            raise ArtifactError(f"{where}: the graph's neurons {state} current-based (CubaLIF) and profile "
                                f"{chip.name}'s are {'not ' if ours.synapse_decay is not None else ''}so; choose a "
                                "profile that matches (--profile)")
        if ours.refractory != theirs.refractory:
            raise ArtifactError(f"{where}: the graph's neurons have {ours.refractory} refractory steps, profile "
                                f"{chip.name}'s {theirs.refractory}; choose a profile that matches (--profile)")
    rebuilt.load_state_dict(model.state_dict())
    state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "epoch": 0, "global_step": 0,
             "model": rebuilt.state_dict(), "history": [], "tuned_width": None, "imported_from": where}
    record = {"imported_from": where, **info.record()}

    def fill(folder: Path) -> None:
        atomic_write(folder / CHECKPOINT, lambda f: torch.save(state, f))
        write_yaml(folder / CONFIG, config.to_dict())
        write_yaml(folder / IMPORT_RECORD, record)

    write_folder(out_dir, fill, overwrite, ArtifactError)
    return info
