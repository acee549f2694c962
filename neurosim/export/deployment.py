"""The integer IR of a network on a chip, and its artifact on disk (docs/design.md §4).

A :class:`Deployment` is what a chip runs: per layer the integer weight and bias codes, the
state unit (the float value of one integer state unit), the synapse geometry, and the neuron's
nominal parameters — thresholds, reset, decays, refractory steps, initial state — from which
the engine derives each chip's integers with the same functions the training forward uses
(:mod:`neurosim.device.quantization`). It is made by :func:`neurosim.export.compile_model`, or
directly from integer tensors with :meth:`Deployment.from_integers` for chip configurations made
elsewhere.

Neuron parameters are per layer, or per neuron where a chip holds one per neuron (Xylo's
thresholds, biases and ``dash`` decays): :attr:`LayerDeployment.per_neuron` holds the values of
:data:`NEURON_VALUES` that differ between a layer's neurons, and every reader takes them through
:meth:`LayerDeployment.neuron_values` (a per-layer value is the case where all neurons share it).

Artifact: a folder with ``manifest.yaml`` (format version, the resolved profile and its checksum,
layer graph, shapes, dtypes, scales, timesteps, training metadata, checksum of the tensors) and
``tensors.npz`` (integer and float arrays, loaded with ``allow_pickle=False``: nothing in it can
execute). It is written to a temporary folder and renamed into place.

Format versions: 1, and 2 for an artifact with per-neuron values (``per_neuron`` in a
layer's manifest entry, float64 tensors ``NAME.per_neuron.QUANTITY``). An artifact without them
is written as version 1, as before, so that every reader of version 1 still reads it; one with
them is version 2, which a reader of version 1 refuses rather than running it with one value per
layer. Both are read.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from neurosim import __version__
from neurosim.device.loading import read_yaml
from neurosim.device.profile import DeviceProfile
from neurosim.errors import ArtifactError, brief
from neurosim.files import write_folder
from neurosim.limits import DeclaredSizes, npy_members

FORMAT_VERSION = 2
"""The newest artifact format (written when a layer has per-neuron values)."""
READABLE_VERSIONS = (1, 2)
NEURON_VALUES: tuple[str, ...] = ("threshold", "v_reset", "beta", "synapse_decay", "synapse_decay2")
"""The neuron parameters a layer may hold per neuron (:attr:`LayerDeployment.per_neuron`)."""
MANIFEST = "manifest.yaml"
TENSORS = "tensors.npz"
MAX_TENSOR_BYTES = 1 << 30
"""Largest ``tensors.npz`` read (compressed size on disk); what it declares after decompression is
bounded by :mod:`neurosim.limits`."""


@dataclass
class LayerDeployment:
    """One layer on the chip. ``kind`` is ``linear`` or ``conv2d``; the readout is a linear
    layer with ``readout=True`` (a non-spiking integrator). Shapes are per sample."""

    name: str
    kind: str
    weight: Tensor                      # int64 codes, [out, in] or [out, in, k, k]
    bias: Tensor | None                 # int64 codes, [out]
    unit: Tensor                        # float32, scalar or per output channel ([out] / [out, 1, 1])
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]       # neurons
    threshold: float = 1.0              # nominal, float units
    v_reset: float = 0.0
    beta: float = 1.0
    synapse_decay: float | None = None
    refractory: int = 0
    reset: str = "hard"
    v_init: float = 0.0                 # initial membrane, float units (MP-Init), 0 otherwise
    stride: int = 1
    padding: int = 0
    pool: int = 0                       # max-pool size after the spikes, 0 = none
    input_step: float = 1.0             # float value of one input code (1 for spikes)
    readout: bool = False
    recurrent: Tensor | None = None     # int64 codes [out, out]: W_rec s[t-1] joins the synaptic input
    weight_shift: int = 0               # sum W x is shifted by this (left >= 0, floor right < 0)
    recurrent_shift: int = 0            # the same for W_rec s[t-1]
    max_spikes: int = 1                 # spikes per step (soft reset subtracts n * theta)
    delay: int = 0                      # the input of step t is the previous layer's output of t - delay
    readout_neuron: str = "integrator"  # readout only: integrator | lif (fires and resets, Xylo)
    weight2: Tensor | None = None       # int64 codes [out, in] onto a second synaptic state (Xylo's syn 2)
    recurrent2: Tensor | None = None    # int64 codes [out, out] onto the second synaptic state
    synapse_decay2: float | None = None  # the second synaptic state's decay
    per_neuron: dict[str, Tensor] = field(default_factory=dict)
    """Values of :data:`NEURON_VALUES` that differ between the neurons: float64 ``[*output_shape]``
    (thresholds and resets in float units, like the scalars). The scalar field of the same name
    then holds the first neuron's value (what a reader of one value per layer sees; checked)."""

    def neuron_values(self, name: str) -> Tensor | None:
        """A neuron parameter of :data:`NEURON_VALUES` as float64: its per-neuron tensor
        ``[*output_shape]``, or the layer's value as a 0-d tensor (broadcasting to every neuron);
        None for a synaptic decay the layer does not have."""
        if name in self.per_neuron:
            return self.per_neuron[name].to(torch.float64)
        value = getattr(self, name)
        return None if value is None else torch.tensor(float(value), dtype=torch.float64)

    @property
    def fan_in(self) -> int:
        """Synapses into one neuron."""
        return int(math.prod(self.weight.shape[1:]))

    def sum_bound(self, input_bits: int, max_weight: int | None = None, max_input: int | None = None) -> int:
        """Largest magnitude a synaptic sum (plus bias) can reach: fan_in * max|w| * max|x| + max|b|
        (``max_weight`` overrides max|w|, e.g. for stuck weights; ``max_input`` the largest input,
        e.g. spike counts of a previous layer firing several spikes a step), with the weight
        shift, plus the recurrent sum. Below 2^24 float32 BLAS is exact, below 2^53 float64."""
        max_x = (1 << (input_bits - 1)) - 1 if self.input_step != 1.0 else 1
        if max_input is not None:
            max_x = max_input
        bias = 0 if self.bias is None else int(self.bias.abs().max())
        weight = int(self.weight.abs().max()) if max_weight is None else max_weight
        if self.weight2 is not None and self.weight2.numel():  # the larger of the two synaptic states
            weight = max(weight, int(self.weight2.abs().max()))
        total = (self.fan_in * weight * max_x) << max(self.weight_shift, 0)
        recurrent = [r for r in (self.recurrent, self.recurrent2) if r is not None and r.numel()]
        if recurrent:
            rec = int(recurrent[0].shape[1]) * max(int(r.abs().max()) for r in recurrent) * self.max_spikes
            total += rec << max(self.recurrent_shift, 0)
        return total + bias

    def to_manifest(self, numerics=None, input_bits: int = 8) -> dict[str, Any]:
        """The layer's entry of ``manifest.yaml`` (tensors are referred to by key). With the
        profile's ``numerics`` it also lists the nominal integer codes (for readers and other
        tools; the engine derives each chip's codes from the float values)."""
        entry = self._entry()
        if numerics is not None:
            entry["sum_bound"] = self.sum_bound(input_bits)
            if not self.readout:
                from neurosim.device import quantization as quant
                dtype = quant.code_dtype(numerics)
                unit = self.unit.to(dtype)
                theta = quant.threshold_codes(self.neuron_values("threshold").to(dtype), unit, numerics)
                reset = quant.reset_codes(self.neuron_values("v_reset").to(dtype), unit, numerics)
                v_init = torch.round(torch.tensor(self.v_init, dtype=dtype) / unit)

                def factors(name: str, fmt) -> int | list[int] | None:
                    beta = self.neuron_values(name)
                    if beta is None:
                        return None
                    factor = quant.decay_factor(beta, fmt)
                    return int(factor) if factor.dim() == 0 else factor.flatten().tolist()

                entry["integer"] = {
                    "threshold": theta.to(torch.int64).flatten().tolist(),
                    "v_reset": reset.to(torch.int64).flatten().tolist(),
                    "v_init": v_init.to(torch.int64).flatten().tolist(),
                    "decay_factor": factors("beta", numerics.decay),
                    "synapse_decay_factor": factors("synapse_decay", numerics.synapse_decay)}
        return entry

    def _entry(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "readout": self.readout,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "weight": {"key": f"{self.name}.weight", "shape": list(self.weight.shape), "dtype": "int64"},
            "bias": None if self.bias is None else
            {"key": f"{self.name}.bias", "shape": list(self.bias.shape), "dtype": "int64"},
            "unit": {"key": f"{self.name}.unit", "shape": list(self.unit.shape), "dtype": "float32"},
            "neuron": {"threshold": self.threshold, "v_reset": self.v_reset, "beta": self.beta,
                       "synapse_decay": self.synapse_decay, "refractory": self.refractory,
                       "reset": self.reset, "v_init": self.v_init},
            "stride": self.stride, "padding": self.padding, "pool": self.pool,
            "input_step": self.input_step,
            "recurrent": None if self.recurrent is None else
            {"key": f"{self.name}.recurrent", "shape": list(self.recurrent.shape), "dtype": "int64"},
            "weight_shift": self.weight_shift, "recurrent_shift": self.recurrent_shift,
            "max_spikes": self.max_spikes, "delay": self.delay, "readout_neuron": self.readout_neuron,
            "weight2": None if self.weight2 is None else
            {"key": f"{self.name}.weight2", "shape": list(self.weight2.shape), "dtype": "int64"},
            "recurrent2": None if self.recurrent2 is None else
            {"key": f"{self.name}.recurrent2", "shape": list(self.recurrent2.shape), "dtype": "int64"},
            "synapse_decay2": self.synapse_decay2,
            **({"per_neuron": {name: {"key": f"{self.name}.per_neuron.{name}", "shape": list(values.shape),
                                      "dtype": "float64"} for name, values in self.per_neuron.items()}}
               if self.per_neuron else {}),
        }


@dataclass
class Deployment:
    """A network compiled to a chip profile's integer formats."""

    profile: DeviceProfile
    layers: list[LayerDeployment]
    timesteps: int
    input_shape: tuple[int, ...]
    num_classes: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_bits(self) -> int:
        """Width of the input codes of the first layer."""
        from neurosim.device.quantization import input_bits
        return input_bits(self.profile.numerics)

    def spiking_layers(self) -> list[LayerDeployment]:
        """Layers with spiking neurons, input to output."""
        return [layer for layer in self.layers if not layer.readout]

    @staticmethod
    def from_integers(profile: DeviceProfile, layers: list[dict[str, Any]], timesteps: int,
                      input_shape: tuple[int, ...], metadata: dict[str, Any] | None = None) -> Deployment:
        """A deployment from integer weights and integer neuron parameters made elsewhere.

        Each layer dict has ``weight`` (integer array), optional ``bias`` (integer codes),
        ``threshold`` (integer, state units), optional ``v_reset`` (integer), ``beta`` (float;
        default the profile's, 1 for the integrating readout), ``synapse_decay`` (float; default
        the profile's, none for the readout), ``unit`` (float value of a state unit, default 1), ``kind``
        (linear | conv2d), ``stride``, ``padding``, ``pool``, ``readout`` (the last layer must be
        the readout), ``recurrent`` (integer [out, out]), ``weight_shift``, ``recurrent_shift``,
        ``max_spikes``, ``delay`` and ``readout_neuron`` (defaults: the profile's ``neuron`` and
        ``readout`` sections), and for a second synaptic state ``weight2``, ``recurrent2`` and
        ``synapse_decay2``. The first layer's ``input_step`` is the profile's.

        ``threshold``, ``v_reset``, ``beta``, ``synapse_decay`` and ``synapse_decay2`` may also be
        arrays of the layer's output shape, one value per neuron (Xylo's); where all neurons
        share a value it is kept as the layer's (:func:`per_neuron_values`).
        """
        from neurosim.device.quantization import input_step

        built: list[LayerDeployment] = []
        shape = tuple(input_shape)
        for i, spec in enumerate(layers):
            weight = torch.as_tensor(np.asarray(spec["weight"]), dtype=torch.int64)
            kind = spec.get("kind", "conv2d" if weight.dim() == 4 else "linear")
            unit = torch.as_tensor(spec.get("unit", 1.0), dtype=torch.float32)
            readout = bool(spec.get("readout", i == len(layers) - 1))
            out_shape = _output_shape(kind, weight.shape, shape, spec.get("stride", 1), spec.get("padding", 0))
            bias = spec.get("bias")
            recurrent = spec.get("recurrent")
            n, r = profile.neuron, profile.readout
            name = "readout" if readout else f"block{i}"
            scale = float(unit.max())
            values = per_neuron_values({
                "threshold": _scaled(spec.get("threshold", 1), scale), "v_reset": _scaled(spec.get("v_reset", 0), scale),
                "beta": spec.get("beta", 1.0 if readout else profile.beta),
                "synapse_decay": spec.get("synapse_decay", profile.neuron.synapse_decay
                                          if not readout or spec.get("readout_neuron", r.neuron) == "lif" else None),
                "synapse_decay2": spec.get("synapse_decay2")}, out_shape, name)
            built.append(LayerDeployment(
                name=name, kind=kind, weight=weight,
                bias=None if bias is None else torch.as_tensor(np.asarray(bias), dtype=torch.int64),
                unit=unit, input_shape=shape, output_shape=out_shape,
                threshold=values["threshold"], v_reset=values["v_reset"], beta=values["beta"],
                synapse_decay=values["synapse_decay"],
                refractory=int(spec.get("refractory", 0)), reset=spec.get("reset", profile.neuron.reset),
                stride=int(spec.get("stride", 1)), padding=int(spec.get("padding", 0)),
                pool=int(spec.get("pool", 0)), input_step=input_step(profile.numerics) if i == 0 else 1.0,
                readout=readout,
                recurrent=None if recurrent is None else torch.as_tensor(np.asarray(recurrent), dtype=torch.int64),
                weight_shift=int(spec.get("weight_shift", 0)), recurrent_shift=int(spec.get("recurrent_shift", 0)),
                max_spikes=int(spec.get("max_spikes", r.max_spikes if readout else n.max_spikes)),
                delay=int(spec.get("delay", r.delay if readout else n.synapse_delay)),
                readout_neuron=str(spec.get("readout_neuron", r.neuron if readout else "integrator")),
                weight2=_codes(spec.get("weight2")), recurrent2=_codes(spec.get("recurrent2")),
                synapse_decay2=values["synapse_decay2"], per_neuron=values["per_neuron"]))
            shape = out_shape
            if built[-1].pool:
                shape = (shape[0], shape[1] // built[-1].pool, shape[2] // built[-1].pool)
            if i + 1 < len(layers) and np.asarray(layers[i + 1]["weight"]).ndim == 2:
                shape = (int(math.prod(shape)),)
        deployment = Deployment(profile, built, timesteps, tuple(input_shape),
                                int(built[-1].weight.shape[0]), metadata or {})
        from neurosim.export.compile import check_deployment
        check_deployment(deployment)
        return deployment

    # ------------------------------------------------------------------ artifact

    def manifest(self, tensors_sha256: str) -> dict[str, Any]:
        """The content of ``manifest.yaml``."""
        profile = self.profile.to_dict()
        version = FORMAT_VERSION if any(layer.per_neuron for layer in self.layers) else 1
        return {
            "format": "neurosim-deployment", "format_version": version,
            "neurosim_version": __version__,
            "profile": {"name": self.profile.name, "sha256": profile_checksum(self.profile), "spec": profile},
            "timesteps": self.timesteps, "input_shape": list(self.input_shape),
            "num_classes": self.num_classes, "input_bits": self.input_bits,
            "tensors": {"file": TENSORS, "sha256": tensors_sha256},
            "layers": [layer.to_manifest(self.profile.numerics, self.input_bits) for layer in self.layers],
            "metadata": self.metadata,
        }

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays of ``tensors.npz`` by key."""
        out: dict[str, np.ndarray] = {}
        for layer in self.layers:
            out[f"{layer.name}.weight"] = layer.weight.numpy().astype(np.int64)
            if layer.bias is not None:
                out[f"{layer.name}.bias"] = layer.bias.numpy().astype(np.int64)
            out[f"{layer.name}.unit"] = layer.unit.numpy().astype(np.float32)
            for what in ("recurrent", "weight2", "recurrent2"):
                if getattr(layer, what) is not None:
                    out[f"{layer.name}.{what}"] = getattr(layer, what).numpy().astype(np.int64)
            for what, values in layer.per_neuron.items():
                out[f"{layer.name}.per_neuron.{what}"] = values.numpy().astype(np.float64)
        return out

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the artifact folder atomically: into ``.NAME.<random>.tmp`` beside it, then
        renamed into place (:func:`~neurosim.files.write_folder`). Ctrl-C or SIGTERM is held until
        the folder is complete, so ``path`` is always a complete artifact or absent."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.tensors())
        blob = buffer.getvalue()
        manifest = self.manifest(hashlib.sha256(blob).hexdigest())

        def fill(folder: Path) -> None:
            (folder / TENSORS).write_bytes(blob)
            (folder / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")

        return write_folder(path, fill, overwrite, ArtifactError)


def _codes(values: Any) -> Tensor | None:
    """Integer codes as an int64 tensor (None stays None)."""
    return None if values is None else torch.as_tensor(np.asarray(values), dtype=torch.int64)


def _scaled(value: Any, scale: float) -> Any:
    """An integer code (or per-neuron codes) times the state unit, in float64."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) * scale if array.ndim == 0 else array * scale


def per_neuron_values(values: dict[str, Any], output_shape: tuple[int, ...], where: str) -> dict[str, Any]:
    """The neuron parameters ``values`` (:data:`NEURON_VALUES`: a number, None, or an array of
    ``output_shape``) as a layer holds them: a float per parameter (the first neuron's where they
    differ) and under ``"per_neuron"`` float64 tensors of the parameters that differ between
    neurons. An array of another shape is an :class:`~neurosim.errors.ExportError` naming
    ``where``."""
    from neurosim.errors import ExportError

    out: dict[str, Any] = {"per_neuron": {}}
    for name in NEURON_VALUES:
        value = values.get(name)
        if value is None:
            out[name] = None
            continue
        array = np.asarray(value, dtype=np.float64)
        if array.ndim and tuple(array.shape) != tuple(output_shape):
            raise ExportError(f"{where}: {name} of shape {list(array.shape)}, expected one value or one per "
                              f"neuron {list(output_shape)}")
        first = float(array.reshape(-1)[0])
        out[name] = first
        if array.ndim and not bool((array == first).all()):
            out["per_neuron"][name] = torch.from_numpy(array.copy())
    return out


def profile_checksum(profile: DeviceProfile) -> str:
    """SHA-256 of the profile's canonical YAML (resolved, keys sorted)."""
    return spec_checksum(profile.to_dict())


def spec_checksum(spec: Any) -> str:
    """SHA-256 of a profile spec as an artifact stores it (keys sorted). An artifact's checksum
    is verified on the spec it holds, so artifacts written before the schema gained fields (new
    fields have defaults that keep the old behaviour) still load."""
    text = yaml.safe_dump(spec, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _output_shape(kind: str, weight_shape, input_shape: tuple[int, ...], stride: int, padding: int) -> tuple[int, ...]:
    if kind == "linear":
        return (int(weight_shape[0]),)
    k = int(weight_shape[-1])
    h = (input_shape[1] + 2 * padding - k) // stride + 1
    w = (input_shape[2] + 2 * padding - k) // stride + 1
    return (int(weight_shape[0]), h, w)


# ------------------------------------------------------------------ loading

def load_deployment(path: str | os.PathLike[str]) -> Deployment:
    """Read an artifact folder; verify format version and checksums; one-line ArtifactError on
    a missing, truncated, altered or foreign artifact."""
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such deployment artifact (expected a folder with {MANIFEST})")
    manifest_path, tensors_path = folder / MANIFEST, folder / TENSORS
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder}: not a deployment artifact ({MANIFEST} is missing)")
    for path in (manifest_path, tensors_path):
        if path.is_symlink() and path.resolve().parent != folder.resolve():
            raise ArtifactError(f"{path}: a link to {os.readlink(path)}, outside the artifact folder")
    manifest = read_yaml(manifest_path, ArtifactError)
    _check_format(manifest, manifest_path)
    try:
        arrays = _read_tensors(manifest["tensors"], manifest_path, tensors_path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{manifest_path}: malformed manifest ({type(exc).__name__}: "
                            f"{brief(exc)})") from None
    return deployment_from_manifest(manifest, arrays, manifest_path)


def _check_format(manifest: Any, where: str | Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != "neurosim-deployment":
        raise ArtifactError(f"{where}: not a neurosim deployment manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ArtifactError(f"{where}: format version {version!r}, this neurosim reads "
                            f"version {' or '.join(map(str, READABLE_VERSIONS))}")


def _read_tensors(tensors_entry: dict[str, Any], manifest_path: Path, tensors_path: Path) -> dict[str, np.ndarray]:
    if tensors_entry.get("file") != TENSORS:
        raise ArtifactError(f"{manifest_path}: tensors.file must be {TENSORS!r}, got {tensors_entry.get('file')!r}")
    if not tensors_path.is_file():
        raise ArtifactError(f"{tensors_path}: missing")
    if tensors_path.stat().st_size > MAX_TENSOR_BYTES:
        raise ArtifactError(f"{tensors_path}: larger than {MAX_TENSOR_BYTES} bytes")
    blob = tensors_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != tensors_entry.get("sha256"):
        raise ArtifactError(f"{tensors_path}: checksum mismatch (truncated or altered)")
    try:
        npy_members(io.BytesIO(blob), DeclaredSizes(str(tensors_path), ArtifactError))
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise ArtifactError(f"{tensors_path}: unreadable: it holds pickled Python objects, refused unexecuted (tensors are "
                                "loaded with allow_pickle=False)") from None
        raise ArtifactError(f"{tensors_path}: unreadable ({brief(exc)})") from None


def deployment_from_manifest(manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                             where: str | Path) -> Deployment:
    """The :class:`Deployment` a manifest (as :meth:`Deployment.manifest` writes it) and its
    integer/float arrays (keyed as :meth:`Deployment.tensors`) describe, with the format version,
    the profile checksum and every check of :func:`~neurosim.export.check_deployment` verified;
    one-line ArtifactError naming ``where`` otherwise. Shared by the artifact folder and NIR."""
    _check_format(manifest, where)
    try:
        return _from_manifest(manifest, arrays, str(where))
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"{where}: malformed manifest ({type(exc).__name__}: "
                            f"{brief(exc)})") from None


def _from_manifest(manifest: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Deployment:
    try:
        profile = DeviceProfile.model_validate(manifest["profile"]["spec"])
    except Exception as exc:  # pydantic ValidationError or a wrong type
        raise ArtifactError(f"{where}: profile: invalid ({brief(exc)})") from None
    if spec_checksum(manifest["profile"]["spec"]) != manifest["profile"].get("sha256"):
        raise ArtifactError(f"{where}: profile checksum mismatch (the profile was altered)")
    layers = [_layer_from_manifest(entry, arrays, where, manifest["format_version"]) for entry in manifest["layers"]]
    if not layers or not layers[-1].readout:
        raise ArtifactError(f"{where}: the last layer must be the readout")
    metadata = manifest.get("metadata") or {}
    if not isinstance(metadata, dict) or not isinstance(metadata.get("training", {}), dict):
        raise ArtifactError(f"{where}: metadata and metadata.training must be mappings")
    deployment = Deployment(profile, layers, int(manifest["timesteps"]), tuple(int(d) for d in manifest["input_shape"]),
                            int(manifest["num_classes"]), dict(metadata))
    from neurosim.export.compile import check_deployment
    from neurosim.errors import ExportError
    try:
        check_deployment(deployment)
    except ExportError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    return deployment


def _tensor(arrays: dict[str, np.ndarray], entry: dict[str, Any], where: str) -> Tensor:
    key = entry["key"]
    if key not in arrays:
        raise ArtifactError(f"{where}: tensor {key!r} is missing from {TENSORS}")
    array = arrays[key]
    if list(array.shape) != list(entry["shape"]):
        raise ArtifactError(f"{where}: tensor {key!r} has shape {list(array.shape)}, manifest says {entry['shape']}")
    if str(array.dtype) != entry["dtype"]:
        raise ArtifactError(f"{where}: tensor {key!r} has dtype {array.dtype}, manifest says {entry['dtype']}")
    return torch.from_numpy(array.copy())


def _layer_from_manifest(entry: dict[str, Any], arrays: dict[str, np.ndarray], where: str,
                         version: int = FORMAT_VERSION) -> LayerDeployment:
    neuron = entry["neuron"]
    per_neuron = entry.get("per_neuron") or {}
    if per_neuron and version < 2:
        raise ArtifactError(f"{where}: {entry['name']}: per-neuron values need format version 2, the manifest "
                            f"says {version}")
    unknown = sorted(set(per_neuron) - set(NEURON_VALUES))
    if unknown:
        raise ArtifactError(f"{where}: {entry['name']}: per_neuron {', '.join(map(str, unknown))}: expected some "
                            f"of {', '.join(NEURON_VALUES)}")
    return LayerDeployment(
        name=str(entry["name"]), kind=str(entry["kind"]),
        weight=_tensor(arrays, entry["weight"], str(where)),
        bias=None if entry["bias"] is None else _tensor(arrays, entry["bias"], str(where)),
        unit=_tensor(arrays, entry["unit"], str(where)),
        input_shape=tuple(int(d) for d in entry["input_shape"]),
        output_shape=tuple(int(d) for d in entry["output_shape"]),
        threshold=float(neuron["threshold"]), v_reset=float(neuron["v_reset"]), beta=float(neuron["beta"]),
        synapse_decay=None if neuron["synapse_decay"] is None else float(neuron["synapse_decay"]),
        refractory=int(neuron["refractory"]), reset=str(neuron["reset"]), v_init=float(neuron["v_init"]),
        stride=int(entry["stride"]), padding=int(entry["padding"]), pool=int(entry["pool"]),
        input_step=float(entry["input_step"]), readout=bool(entry["readout"]),
        recurrent=None if entry.get("recurrent") is None else _tensor(arrays, entry["recurrent"], str(where)),
        weight_shift=int(entry.get("weight_shift", 0)), recurrent_shift=int(entry.get("recurrent_shift", 0)),
        max_spikes=int(entry.get("max_spikes", 1)), delay=int(entry.get("delay", 0)),
        readout_neuron=str(entry.get("readout_neuron", "integrator")),
        weight2=None if entry.get("weight2") is None else _tensor(arrays, entry["weight2"], str(where)),
        recurrent2=None if entry.get("recurrent2") is None else _tensor(arrays, entry["recurrent2"], str(where)),
        synapse_decay2=None if entry.get("synapse_decay2") is None else float(entry["synapse_decay2"]),
        per_neuron={str(name): _tensor(arrays, spec, str(where)) for name, spec in per_neuron.items()})


