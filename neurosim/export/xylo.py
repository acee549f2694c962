"""Xylo export: a deployment as the configuration SynSense's xylosim takes, and back (issue 9).

A Xylo network (xylosim 0.1.3, ``src/v2/cpp/XyloLayer.cpp``) is one population of hidden
current-based LIF neurons with input and recurrent synapses, and up to 8 output neurons fed by
the hidden spikes of the previous step. In neurosim it is a :class:`Deployment` of two layers on
a profile with Xylo's rules (``xylo-like``: ``accumulate: per_source``, ``synapse_update:
add_then_decay``, ``membrane_update: increment``, ``max_spikes: 31``, readout ``{neuron: lif,
max_spikes: 1, delay: 1}``):

* ``block0``: linear, input -> hidden, with ``recurrent`` weights; ``weight_shift`` is Xylo's
  ``weight_shift_inp``, ``recurrent_shift`` its ``weight_shift_rec``;
* ``readout``: linear, hidden -> output, ``readout_neuron: lif``, ``weight_shift`` =
  ``weight_shift_out``, delay 1.

Every Xylo quantity is an integer code: thresholds ``v_th`` are the threshold codes, biases the
bias codes (added to the membrane each step, as Xylo does), and the bit-shift decays map to
``beta = 1 - 2^-dash_mem`` and ``synapse_decay = 1 - 2^-dash_syn`` (the engine takes the shift
back with :func:`~neurosim.device.fixedpoint.decay_shift_for`). ``dash = 0`` is ``beta = 0``:
xylosim's decrement ``v >> 0`` is the whole state, which is cleared every step (a membrane with
``dash_mem = 0`` holds only this step's synaptic state and bias; the negated decrement of
``-32768`` wraps to ``-32768`` in xylosim's int16, :func:`~neurosim.device.fixedpoint.membrane_increment`).
Hidden neurons may have Xylo's second synaptic state (``target_synapse_id = 1``):
``weights_in2`` / ``weights_rec2`` onto it and its decay ``dash_syn2`` are neurosim's
``weight2`` / ``recurrent2`` / ``synapse_decay2``; output neurons have one.

Thresholds, biases and dashes are per neuron on Xylo; a deployment holds them per neuron where
they differ (:attr:`~neurosim.export.deployment.LayerDeployment.per_neuron`), so every
configuration xylosim takes converts to a deployment and back unchanged (``has_bias`` off: the
biases, which xylosim then ignores, come back as zeros).

A network trained on ``xylo-like`` is trained with these rules (the fake-quant training forward
follows them), and :func:`~neurosim.export.compile_model` writes them into its deployment; a
network trained for another chip is converted with ``neurosim export --format xylo --adapt``
(its neuron models and readout become Xylo's, the changes are listed).

:func:`save_xylo` writes the configuration as one ``.npz`` of integer arrays (keys
:data:`XYLO_KEYS`, read back with ``allow_pickle=False``); :func:`xylo_layer` and
:func:`run_xylosim` build and run xylosim's ``XyloLayer`` (needs the ``xylo`` extra, imported
only when called).
"""

from __future__ import annotations

import io
import math
import os
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurosim.device import load_profile
from neurosim.device import quantization as quant
from neurosim.device.profile import DeviceProfile
from neurosim.errors import ArtifactError, ExportError, brief
from neurosim.export.deployment import Deployment, LayerDeployment
from neurosim.files import atomic_write, make_folder
from neurosim.limits import DeclaredSizes, npy_members

XYLO_PROFILE = "xylo-like"
MAX_INPUTS = 16
"""Xylo Audio 2's SNN input channels (Rockpool xylo_mapper.py DRC ``le_16_input_channels``)."""
MAX_INPUT_EVENTS = 15
"""xylosim ``MAX_NUM_INP_SPIKES``: input events per channel and step are clipped to 15."""
MAX_HIDDEN_SPIKES = 31
"""xylosim ``MAX_NUM_SPIKES``: spikes a hidden neuron fires per step."""
MAX_OUTPUT_SPIKES = 1
"""xylosim ``MAX_NUM_OUT_SPIKES``: spikes an output neuron fires per step."""
WEIGHT_RANGE = (-128, 127)          # XyloSynapse int8_t weight
SHIFT_RANGE = (0, 7)                # CTRL1 IWBS / RWBS / OWBS, u3
DASH_RANGE = (0, 15)                # 4-bit dash; 0 clears the state every step (beta 0)
THRESHOLD_RANGE = (1, 32767)        # int16_t v_th; a threshold <= 0 would fire forever
BIAS_RANGE = (-32768, 32767)        # int16_t bias
XYLO_KEYS: tuple[str, ...] = (
    "weights_in", "weights_rec", "weights_out", "threshold", "threshold_out", "bias", "bias_out",
    "has_bias", "weight_shift_inp", "weight_shift_rec", "weight_shift_out", "dash_mem", "dash_mem_out",
    "dash_syn", "dash_syn_out")
"""The keys of a Xylo ``.npz``: the fields of :class:`XyloConfig`."""
SECOND_SYNAPSE_KEYS: tuple[str, ...] = ("weights_in2", "weights_rec2", "dash_syn2")
"""The optional keys of the hidden neurons' second synaptic state (all three or none)."""
MAX_FILE_BYTES = 64 << 20
"""Largest Xylo ``.npz`` read (compressed size on disk)."""
MAX_DECLARED_BYTES = 64 << 20
"""Most bytes the arrays of a Xylo ``.npz`` may declare, each and together, after decompression
(checked from the zip and ``.npy`` headers before any is read): a configuration of a Xylo-sized
chip (16 inputs, a few hundred hidden neurons, 8 outputs) holds a few MiB."""


@dataclass
class XyloConfig:
    """What ``xylosim.v2.XyloLayer`` takes, as dense integer arrays.

    Weights are in xylosim's pre -> post orientation (neurosim's are ``[out, in]``):
    ``weights_in`` ``[N_in, N_hid]``, ``weights_rec`` ``[N_hid, N_hid]`` (row = source), and
    ``weights_out`` ``[N_hid, N_out]``, int8 codes. ``threshold`` / ``bias`` / ``dash_mem`` /
    ``dash_syn`` are ``[N_hid]``, their ``_out`` versions ``[N_out]``; ``has_bias`` switches both
    biases on (xylosim has one flag); the three weight shifts are the left shifts of
    ``deliver_spikes`` (``weight << shift``).
    """

    weights_in: np.ndarray
    weights_rec: np.ndarray
    weights_out: np.ndarray
    threshold: np.ndarray
    threshold_out: np.ndarray
    bias: np.ndarray
    bias_out: np.ndarray
    has_bias: bool
    weight_shift_inp: int
    weight_shift_rec: int
    weight_shift_out: int
    dash_mem: np.ndarray
    dash_mem_out: np.ndarray
    dash_syn: np.ndarray
    dash_syn_out: np.ndarray
    weights_in2: np.ndarray | None = None
    weights_rec2: np.ndarray | None = None
    dash_syn2: np.ndarray | None = None

    @property
    def second_synapse(self) -> bool:
        """True when the hidden neurons use Xylo's second synaptic state."""
        return self.dash_syn2 is not None

    @property
    def keys(self) -> tuple[str, ...]:
        """The fields this configuration holds (the optional second synapse's when used)."""
        return XYLO_KEYS + (SECOND_SYNAPSE_KEYS if self.second_synapse else ())

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(N_in, N_hid, N_out)``."""
        return int(self.weights_in.shape[0]), int(self.weights_in.shape[1]), int(self.weights_out.shape[1])

    def check(self) -> None:
        """Every array of the right shape, integer and in Xylo's range (:data:`WEIGHT_RANGE`,
        :data:`SHIFT_RANGE`, :data:`DASH_RANGE`, :data:`THRESHOLD_RANGE`, :data:`BIAS_RANGE`);
        :class:`ExportError` naming the field otherwise."""
        for name in ("weights_in", "weights_rec", "weights_out"):
            if np.asarray(getattr(self, name)).ndim != 2:
                raise ExportError(f"{name}: expected a 2-d array, got shape {list(np.shape(getattr(self, name)))}")
        n_in, n_hid, n_out = self.sizes
        given = [name for name in SECOND_SYNAPSE_KEYS if getattr(self, name) is not None]
        if given and len(given) != len(SECOND_SYNAPSE_KEYS):
            raise ExportError(f"second synaptic state: {', '.join(given)} given without "
                              f"{', '.join(k for k in SECOND_SYNAPSE_KEYS if k not in given)}")
        if min(n_in, n_hid, n_out) < 1:
            raise ExportError(f"sizes: {n_in} inputs, {n_hid} hidden, {n_out} outputs; each must be at least 1")
        shapes = {"weights_in": (n_in, n_hid), "weights_rec": (n_hid, n_hid), "weights_out": (n_hid, n_out),
                  "threshold": (n_hid,), "bias": (n_hid,), "dash_mem": (n_hid,), "dash_syn": (n_hid,),
                  "threshold_out": (n_out,), "bias_out": (n_out,), "dash_mem_out": (n_out,),
                  "dash_syn_out": (n_out,), "has_bias": (), "weight_shift_inp": (), "weight_shift_rec": (),
                  "weight_shift_out": (), "weights_in2": (n_in, n_hid), "weights_rec2": (n_hid, n_hid),
                  "dash_syn2": (n_hid,)}
        ranges = {"weights": WEIGHT_RANGE, "threshold": THRESHOLD_RANGE, "bias": BIAS_RANGE,
                  "dash": DASH_RANGE, "weight_shift": SHIFT_RANGE, "has_bias": (0, 1)}
        for name, shape in shapes.items():
            if getattr(self, name) is None and name in SECOND_SYNAPSE_KEYS:
                continue
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise ExportError(f"{name}: shape {list(value.shape)}, expected {list(shape)}")
            if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
                raise ExportError(f"{name}: dtype {value.dtype}, expected integers")
            lo, hi = next(r for key, r in ranges.items() if name.startswith(key))
            if value.size and (int(value.min()) < lo or int(value.max()) > hi):
                bad = int(value.min()) if int(value.min()) < lo else int(value.max())
                raise ExportError(f"{name}: value {bad} outside Xylo's range [{lo}, {hi}]")


def _as_config(values: dict[str, Any]) -> XyloConfig:
    """A :class:`XyloConfig` of ``values`` as they are (checked by :meth:`XyloConfig.check`)."""
    return XyloConfig(**{name: np.asarray(values[name]) for name in XYLO_KEYS + SECOND_SYNAPSE_KEYS
                         if name in values})


def _canonical(config: XyloConfig) -> XyloConfig:
    """``config`` with int64 arrays and Python scalars (after :meth:`XyloConfig.check`)."""
    out: dict[str, Any] = {}
    for name in config.keys:
        value = np.asarray(getattr(config, name))
        out[name] = (bool(value) if name == "has_bias" else int(value)) if value.ndim == 0 else value.astype(np.int64)
    return XyloConfig(**out)


# ------------------------------------------------------------------ file


def save_xylo(config: XyloConfig, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``config`` to one ``.npz`` (keys :data:`XYLO_KEYS`, int64 arrays) atomically
    (:func:`~neurosim.files.atomic_write`): ``path`` is absent, the old file or the complete new
    one. An existing file is replaced only with ``overwrite``."""
    config.check()
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give a file name such as xylo.npz")
    if path.exists() and not overwrite:
        raise ExportError(f"{path}: already exists (use --force to replace it)")
    arrays = {name: np.asarray(getattr(config, name)).astype(np.int64) for name in config.keys}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    make_folder(path.parent)
    return atomic_write(path, lambda handle: handle.write(blob))


def load_xylo(path: str | os.PathLike[str]) -> XyloConfig:
    """Read a Xylo ``.npz`` written by :func:`save_xylo`, checked (:meth:`XyloConfig.check`);
    a missing, corrupt or foreign file is one :class:`ArtifactError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such Xylo configuration file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ArtifactError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a Xylo configuration")
    blob = path.read_bytes()
    if not blob.startswith(b"PK\x03\x04"):
        raise ArtifactError(f"{path}: not a Xylo configuration (not an .npz archive)")
    try:
        npy_members(io.BytesIO(blob), DeclaredSizes(str(path), ArtifactError, max_bytes=MAX_DECLARED_BYTES,
                                                    max_total=MAX_DECLARED_BYTES))
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            missing = [key for key in XYLO_KEYS if key not in npz.files]
            if missing:
                raise ArtifactError(f"{path}: not a Xylo configuration (missing {', '.join(missing)})")
            config = _as_config({key: npz[key] for key in XYLO_KEYS + SECOND_SYNAPSE_KEYS if key in npz.files})
    except ArtifactError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, TypeError) as exc:
        if "Object arrays" in str(exc) or "pickle" in str(exc):
            raise ArtifactError(f"{path}: holds pickled Python objects, refused unexecuted") from None
        raise ArtifactError(f"{path}: unreadable ({brief(exc)})") from None
    try:
        config.check()
    except ExportError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    return _canonical(config)


# ------------------------------------------------------------------ xylosim

_KEEP_ALIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""xylosim's XyloLayer keeps raw pointers to the XyloSynapse objects it was given; they must live
as long as the layer (else evolve() reads freed memory), so each layer's synapses are kept here."""


def _synapse_lists(module: Any, weights: np.ndarray, second: np.ndarray | None = None) -> list[list[Any]]:
    """Per presynaptic source, its synapses to every target of non-zero weight (synaptic state 0,
    then those of ``second`` onto synaptic state 1)."""
    lists = []
    for pre in range(weights.shape[0]):
        row = [module.XyloSynapse(int(post), 0, int(weights[pre, post])) for post in np.flatnonzero(weights[pre])]
        if second is not None:
            row += [module.XyloSynapse(int(post), 1, int(second[pre, post])) for post in np.flatnonzero(second[pre])]
        lists.append(row)
    return lists


def xylo_layer(config: XyloConfig) -> Any:
    """xylosim's ``v2.XyloLayer`` for ``config`` (zero weights are no synapse; no aliases; one
    synaptic state per neuron). Needs the ``xylo`` extra (``pip install xylosim==0.1.3``)."""
    try:
        import xylosim.v2 as xylosim
    except ImportError as exc:
        raise ExportError(f"xylosim is not installed ({brief(exc)}); pip install 'neurosim[xylo]'") from None
    config.check()
    _, n_hid, _ = config.sizes

    def ints(values: np.ndarray) -> list[int]:
        return [int(v) for v in np.asarray(values)]

    two = config.second_synapse
    synapses = (_synapse_lists(xylosim, np.asarray(config.weights_in), np.asarray(config.weights_in2) if two else None),
                _synapse_lists(xylosim, np.asarray(config.weights_rec), np.asarray(config.weights_rec2) if two else None),
                _synapse_lists(xylosim, np.asarray(config.weights_out)))
    dash_syns = [[d, d2] for d, d2 in zip(ints(config.dash_syn), ints(config.dash_syn2))] if two else \
        [[d] for d in ints(config.dash_syn)]

    layer = xylosim.XyloLayer(
        *synapses, [[] for _ in range(n_hid)], ints(config.threshold), ints(config.threshold_out),
        bool(config.has_bias), ints(config.bias), ints(config.bias_out), int(config.weight_shift_inp),
        int(config.weight_shift_rec), int(config.weight_shift_out), ints(config.dash_mem),
        ints(config.dash_mem_out), dash_syns, [[d] for d in ints(config.dash_syn_out)],
        "neurosim")
    _KEEP_ALIVE[layer] = synapses
    return layer


def run_xylosim(config: XyloConfig, counts: np.ndarray, layer: Any = None) -> dict[str, np.ndarray]:
    """Run xylosim on input event counts ``[T, N_in]`` (0..255; xylosim clips them to 15) from
    the reset state. Returns int64 arrays ``[T, n]``: ``spikes`` (hidden spike counts),
    ``out_spikes``, ``v_mem``, ``i_syn``, ``v_mem_out``, ``i_syn_out`` (states after the step's
    spikes), and ``i_syn2`` with a second synaptic state. ``layer`` reuses a :func:`xylo_layer` of the same ``config`` (it is reset first)."""
    counts = np.asarray(counts)
    n_in, n_hid, n_out = config.sizes
    if counts.ndim != 2 or counts.shape[1] != n_in:
        raise ValueError(f"input counts of shape {list(counts.shape)}, expected [T, {n_in}]")
    if not np.issubdtype(counts.dtype, np.integer) or (counts.size and (counts.min() < 0 or counts.max() > 255)):
        raise ValueError("input counts must be integers in 0..255")
    layer = xylo_layer(config) if layer is None else layer
    layer.reset_all()
    layer.evolve([[int(c) for c in row] for row in counts])
    steps = counts.shape[0]

    def per_step(recording: Any, n: int) -> np.ndarray:
        return np.asarray([list(r) for r in recording], dtype=np.int64).reshape(n, steps).T

    out = {"spikes": np.asarray(layer.rec_recurrent_spikes, dtype=np.int64).reshape(steps, n_hid),
           "out_spikes": np.asarray(layer.rec_out_spikes, dtype=np.int64).reshape(steps, n_out),
           "v_mem": per_step(layer.rec_v_mem, n_hid), "i_syn": per_step(layer.rec_i_syn, n_hid),
           "v_mem_out": per_step(layer.rec_v_mem_out, n_out), "i_syn_out": per_step(layer.rec_i_syn_out, n_out)}
    if config.second_synapse:
        out["i_syn2"] = per_step(layer.rec_i_syn2, n_hid)
    return out


# ------------------------------------------------------------------ deployment <-> config


def xylo_rule_differences(profile: DeviceProfile) -> list[str]:
    """How ``profile``'s arithmetic differs from Xylo's (xylosim 0.1.3, see the references of
    ``device_profiles/xylo-like.yaml``); empty when a deployment on it runs as Xylo does."""
    num, neuron, readout = profile.numerics, profile.neuron, profile.readout
    if num.is_float:
        return ["numerics: float, Xylo computes in 16-bit integers"]
    want = {
        "numerics.weight_bits": (num.weight_bits, 8), "numerics.membrane_bits": (num.membrane_bits, 16),
        "numerics.synapse_bits": (num.synapse_bits, 16), "numerics.input_bits": (num.input_bits, 5),
        "numerics.overflow": (num.overflow, "saturate"),
        "numerics.synapse_overflow": (num.synapse_overflow or num.overflow, "saturate"),
        "numerics.activation_shift": (num.activation_shift, 0), "numerics.accumulate": (num.accumulate, "per_source"),
        "numerics.synapse_update": (num.synapse_update, "add_then_decay"),
        "numerics.membrane_update": (num.membrane_update, "increment"),
        "neuron.model": (neuron.model, "lif"), "neuron.reset": (neuron.reset, "soft"),
        "neuron.refractory": (neuron.refractory, 0), "neuron.max_spikes": (neuron.max_spikes, MAX_HIDDEN_SPIKES),
        "neuron.synapse_delay": (neuron.synapse_delay, 0), "readout.neuron": (readout.neuron, "lif"),
        "readout.max_spikes": (readout.max_spikes, MAX_OUTPUT_SPIKES), "readout.delay": (readout.delay, 1),
        "current-based synapse": (profile.is_current_based, True)}
    diffs = [f"{key} is {got!r}, Xylo's is {expected!r}" for key, (got, expected) in want.items() if got != expected]
    for key, fmt in (("numerics.decay", num.decay), ("numerics.synapse_decay", num.synapse_decay)):
        if fmt is None or fmt.kind != "shift" or fmt.rounding != "floor" or not fmt.nonzero_step:
            diffs.append(f"{key} is not Xylo's shift decay (kind shift, rounding floor, nonzero_step true)")
    for key, bits in (("numerics.threshold_bits", num.threshold_bits), ("numerics.bias_bits", num.bias_bits)):
        if bits is not None and bits > 16:
            diffs.append(f"{key} is {bits}, Xylo holds 16")
    return diffs


def _dash(beta: torch.Tensor, fmt, n: int, where: str, what: str) -> np.ndarray:
    """Xylo's ``dash`` ``[n]`` of decays ``beta`` (one, or one per neuron): the shifts whose
    ``1 - 2^-dash`` is exactly ``beta``, within :data:`DASH_RANGE`; :class:`ExportError` naming
    ``where``, ``what`` and the first decay that is not otherwise."""
    beta = beta.to(torch.float64)
    dash = quant.decay_factor(beta, fmt)
    wrong = ((quant.realised_decay(beta, fmt) - beta).abs() > 1e-9) | (dash < DASH_RANGE[0]) | (dash > DASH_RANGE[1])
    if bool(wrong.any()):
        bad = float(beta[wrong].reshape(-1)[0]) if beta.dim() else float(beta)
        raise ExportError(f"{where}: {what}: decay {bad:g} is not 1 - 2^-dash with dash in {list(DASH_RANGE)}")
    return np.broadcast_to(dash.numpy().astype(np.int64).reshape(-1), (n,)).copy()


def _population(layer: LayerDeployment, profile: DeviceProfile) -> dict[str, np.ndarray]:
    """A layer's Xylo neuron codes ``[n]`` (one per neuron, per-layer values repeated): threshold
    (as the engine derives it from the float threshold and the state unit), bias, dash_mem and
    dash_syn."""
    num, n = profile.numerics, int(layer.weight.shape[0])
    where = layer.name
    if (layer.reset != "soft" and not layer.readout) or layer.refractory != 0 or layer.v_init != 0.0:
        raise ExportError(f"{where}: Xylo neurons reset by subtraction, have no refractory steps and start "
                          f"at 0; the layer has reset {layer.reset}, refractory {layer.refractory}, "
                          f"v_init {layer.v_init}")
    if layer.unit.numel() != 1:
        raise ExportError(f"{where}: a state unit per neuron; Xylo's membranes are compared unscaled, so the "
                          "layer needs one unit")
    dtype = quant.code_dtype(num)
    theta, unit = layer.neuron_values("threshold").to(dtype), layer.unit.to(dtype)
    threshold = quant.threshold_codes(theta, unit, num)
    raw = torch.round(theta / unit)
    if float(raw.max()) > THRESHOLD_RANGE[1]:  # below 1 the engine's code is 1, as Xylo's
        raise ExportError(f"{where}: threshold code {float(raw.max()):.0f} outside Xylo's range {list(THRESHOLD_RANGE)}")
    dashes = {}
    for what, name, fmt in (("dash_mem", "beta", num.decay), ("dash_syn", "synapse_decay", num.synapse_decay)):
        beta = layer.neuron_values(name)
        if beta is None or bool((beta >= 1).any()):
            raise ExportError(f"{where}: {'no synaptic state' if beta is None else 'no decay (beta 1)'}: Xylo's "
                              f"neurons are current-based and decay by dash in {list(DASH_RANGE)}")
        dashes[what] = _dash(beta, fmt, n, where, what)
    bias = np.zeros(n, dtype=np.int64) if layer.bias is None else layer.bias.numpy().astype(np.int64)
    codes = np.broadcast_to(threshold.to(torch.int64).numpy().reshape(-1), (n,)).copy()
    return {"threshold": codes, "bias": bias, **dashes}


def xylo_differences(deployment: Deployment) -> list[str]:
    """How the per-layer spike limits, delays and readout neuron of ``deployment`` differ from
    what Xylo runs (hidden neurons: up to 31 spikes a step, no delay; output neurons: ``lif``, one
    spike a step, one step of delay). :func:`compile_model` takes them from the profile, so only
    a deployment made otherwise (:meth:`Deployment.from_integers`, an edited artifact) can differ."""
    diffs = []
    for layer in deployment.layers:
        spikes, delay = (MAX_OUTPUT_SPIKES, 1) if layer.readout else (MAX_HIDDEN_SPIKES, 0)
        if layer.max_spikes != spikes:
            diffs.append(f"{layer.name}: max_spikes is {layer.max_spikes}, Xylo's is {spikes}")
        if layer.delay != delay:
            diffs.append(f"{layer.name}: delay is {layer.delay}, Xylo's is {delay}")
        if layer.readout and layer.readout_neuron != "lif":
            diffs.append(f"{layer.name}: an {layer.readout_neuron} readout, Xylo's output neurons are lif")
    return diffs


def config_from_deployment(deployment: Deployment) -> XyloConfig:
    """The Xylo configuration of ``deployment``: its profile computes as Xylo does
    (:func:`xylo_rule_differences`), it fits the profile's limits (:func:`check_deployment`), it
    is one dense hidden layer (``block0``, optional recurrent weights) and a ``lif`` readout with
    Xylo's spike limits and delays (:func:`xylo_differences`), and every code is in Xylo's range. Anything else is an
    :class:`ExportError` naming what does not fit."""
    from neurosim.export.compile import check_deployment

    profile = deployment.profile
    diffs = xylo_rule_differences(profile)
    if diffs:
        raise ExportError(f"profile {profile.name}: does not compute as Xylo does: " + "; ".join(diffs))
    check_deployment(deployment)
    n_in = int(math.prod(deployment.input_shape))
    if n_in > MAX_INPUTS:
        raise ExportError(f"input: Xylo has {MAX_INPUTS} input channels, the model needs {n_in}")
    layers = deployment.layers
    if len(layers) != 2 or layers[0].kind != "linear" or layers[0].pool:
        raise ExportError(f"model: Xylo runs one dense hidden layer and a readout; the model has "
                          f"{len(layers) - 1} hidden layers ({', '.join(layer.kind for layer in layers[:-1])})")
    hidden, readout = layers
    diffs = xylo_differences(deployment)
    if diffs:
        raise ExportError("model: runs differently from Xylo: " + "; ".join(diffs))
    if hidden.input_step != quant.input_step(profile.numerics):
        raise ExportError(f"{hidden.name}: input step {hidden.input_step:g}, Xylo takes event counts "
                          f"0..{MAX_INPUT_EVENTS} (input step 1/{MAX_INPUT_EVENTS})")
    for where, what, shift in ((hidden.name, "weight_shift", hidden.weight_shift),
                               (hidden.name, "recurrent_shift", hidden.recurrent_shift),
                               (readout.name, "weight_shift", readout.weight_shift)):
        if not SHIFT_RANGE[0] <= shift <= SHIFT_RANGE[1]:
            raise ExportError(f"{where}: {what} = {shift} outside Xylo's weight shifts {list(SHIFT_RANGE)}")
    n_hid = int(hidden.weight.shape[0])
    recurrent = (torch.zeros(n_hid, n_hid, dtype=torch.int64) if hidden.recurrent is None else hidden.recurrent)
    hid, out = _population(hidden, profile), _population(readout, profile)
    second: dict[str, Any] = {}
    if hidden.synapse_decay2 is not None:
        beta2 = hidden.neuron_values("synapse_decay2")
        if bool((beta2 >= 1).any()):
            raise ExportError(f"{hidden.name}: no decay (beta 1) of the second synaptic state: Xylo's decays by "
                              f"dash in {list(DASH_RANGE)}")
        dash = _dash(beta2, profile.numerics.synapse_decay, n_hid, hidden.name, "dash_syn2")
        second = {"weights_in2": (torch.zeros_like(hidden.weight) if hidden.weight2 is None
                                  else hidden.weight2).numpy().T.astype(np.int64),
                  "weights_rec2": (torch.zeros_like(recurrent) if hidden.recurrent2 is None
                                   else hidden.recurrent2).numpy().T.astype(np.int64),
                  "dash_syn2": dash}
    if readout.synapse_decay2 is not None:
        raise ExportError(f"{readout.name}: Xylo's output neurons have one synaptic state")
    config = XyloConfig(
        weights_in=hidden.weight.numpy().T.astype(np.int64), weights_rec=recurrent.numpy().T.astype(np.int64),
        weights_out=readout.weight.numpy().T.astype(np.int64),
        threshold=hid["threshold"], threshold_out=out["threshold"], bias=hid["bias"], bias_out=out["bias"],
        has_bias=hidden.bias is not None or readout.bias is not None,
        weight_shift_inp=int(hidden.weight_shift), weight_shift_rec=int(hidden.recurrent_shift),
        weight_shift_out=int(readout.weight_shift), dash_mem=hid["dash_mem"], dash_mem_out=out["dash_mem"],
        dash_syn=hid["dash_syn"], dash_syn_out=out["dash_syn"], **second)
    config.check()
    return config


def deployment_from_config(config: XyloConfig, timesteps: int, profile: DeviceProfile | str = XYLO_PROFILE,
                           metadata: dict[str, Any] | None = None) -> Deployment:
    """The neurosim :class:`Deployment` that runs ``config`` as xylosim does (unit 1: every code
    is Xylo's integer), through :meth:`Deployment.from_integers`; input shape ``[N_in]``, input
    codes are Xylo's event counts. Thresholds, biases and dashes that differ between a
    population's neurons are the layer's per-neuron values; ``dash = 0`` is ``beta = 0``."""
    config.check()
    profile = load_profile(profile)
    diffs = xylo_rule_differences(profile)
    if diffs:
        raise ExportError(f"profile {profile.name}: does not compute as Xylo does: " + "; ".join(diffs))
    n_in, _, _ = config.sizes
    def decay(dash: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp2(-np.asarray(dash, dtype=np.float64))  # exact: 1 - 2^-dash, 0 for dash 0

    specs = []
    for suffix in ("", "_out"):
        bias = np.asarray(getattr(config, "bias" + suffix)) if config.has_bias else None
        specs.append({"threshold": np.asarray(getattr(config, "threshold" + suffix)),
                      "beta": decay(getattr(config, "dash_mem" + suffix)),
                      "synapse_decay": decay(getattr(config, "dash_syn" + suffix)), "bias": bias, "unit": 1.0,
                      "v_reset": 0})
    hidden, output = specs
    if config.second_synapse:
        hidden.update(weight2=np.asarray(config.weights_in2).T, recurrent2=np.asarray(config.weights_rec2).T,
                      synapse_decay2=decay(config.dash_syn2))
    layers = [dict(hidden, weight=np.asarray(config.weights_in).T, recurrent=np.asarray(config.weights_rec).T,
                   weight_shift=int(config.weight_shift_inp), recurrent_shift=int(config.weight_shift_rec),
                   max_spikes=MAX_HIDDEN_SPIKES, delay=0, readout=False),
              dict(output, weight=np.asarray(config.weights_out).T, weight_shift=int(config.weight_shift_out),
                   max_spikes=MAX_OUTPUT_SPIKES, delay=1, readout=True, readout_neuron="lif")]
    return Deployment.from_integers(profile, layers, timesteps, (n_in,), metadata=metadata)
