"""Lava's bit-accurate Loihi LIF network, restated in plain Python integers.

Lava (the ``lava-nc`` package) does not install on Python 3.11, so this module is neurosim's own,
independent statement of Lava's bit-accurate Loihi models, written from Lava's source. It is
slow and per neuron on purpose: no torch, no :mod:`neurosim.device.fixedpoint`, nothing of the
integer engine. tests/test_loihi_reference.py checks neurosim's
:class:`~neurosim.engine.IntegerEngine` on the ``loihi-like`` profile against it bit for bit
(the network is mapped by :func:`neurosim.export.lava.deployment_for_lava`).

Sources (repository ``lava-nc/lava``):

* ``src/lava/utils/weightutils.py``: ``determine_sign_mode``, ``clip_weights``,
  ``truncate_weights``.
* ``src/lava/proc/dense/models.py``: ``PyDenseModelBitAcc.run_spk``.
* ``src/lava/proc/lif/models.py``: ``AbstractPyLifModelFixed.subthr_dynamics``,
  ``AbstractPyLifModelFixed.scale_bias``, ``AbstractPyLifModelFixed.reset_voltage``,
  ``PyLifModelBitAcc.scale_threshold``, ``PyLifModelBitAcc.spiking_activation``.

The rules, per time step, all integers (``>>`` is the arithmetic shift: floor):

Dense (weights ``W`` [out, in], exponent ``weight_exp``, ``num_weight_bits`` = 8 by default):

* sign mode (``determine_sign_mode``, unless given): ``excitatory`` if min W >= 0, else
  ``inhibitory`` if max W <= 0, else ``mixed``.
* clip (``clip_weights(W, sign_mode, 8)``): mixed to [-256, 255], excitatory to [0, 255],
  inhibitory to [-255, 0] (the magnitude is clipped to [0, 255]).
* truncate (``truncate_weights``): drop ``k = 8 - num_weight_bits + [mixed]`` low bits,
  ``(w >> k) << k``; inhibitory weights are negated around it (their magnitude is truncated).
  With 8 bits a mixed weight loses its LSB: 3 -> 2, -3 -> -4; others are unchanged.
* ``a_accum = W . s_in`` (binary spikes, or graded values with ``num_message_bits > 0``);
  ``a_buff = a_accum << weight_exp`` if ``weight_exp > 0`` else ``a_accum >> -weight_exp``.
* The ``a_out`` sent at step t is the ``a_buff`` of step t - 1 (0 at the first step): one step
  of delay per Dense.

LIF (``PyLifModelBitAcc``; ``du``, ``dv`` unsigned 12-bit, ``bias_mant`` signed 13-bit,
``bias_exp`` 0..7, ``vth`` unsigned 17-bit; ``ds_offset = 1``, ``dm_offset = 0``):

* ``u = u * (4096 - (du + 1))``, then ``u = sign(u) * (|u| >> 12)`` (rounds toward zero).
* ``u = u + (a_in << 6)``.
* wrap: ``w = u - 2^24 if u > 2^23 else u``; then ``u = u + 2^24 if w <= -2^23 else w``
  (the second test looks at the first result, the correction at the unwrapped ``u``, exactly as
  Lava's two ``np.where``): ``u`` ranges over ``(-2^23, 2^23]``.
* ``v = sign(v * (4096 - dv)) * (|v * (4096 - dv)| >> 12) + u + bias`` with
  ``bias = bias_mant << bias_exp`` (``bias_mant >> -bias_exp`` for a negative exponent:
  ``scale_bias``), then ``v = clip(v, -(2^23 - 1), 2^23 - 1)``.
* spike where ``v > vth << 6`` (strict); ``v = 0`` where it spiked; ``u`` is not reset.

What Lava's Python model does and this module copies: ``a_in`` is not cut to 16 bits (the
``int16`` in-port adds the ``int32`` messages into ``np.zeros(..., int16)``, which numpy promotes
to ``int32``), and the wrap of ``u`` is a single correction by ``2^24``, not a modulo, so a sum
outside ``(-3 * 2^23, 3 * 2^23]`` would stay out of range (binary inputs into at most
``2^24 / (256 * 2^7 * 2^6) = 8`` synapses with ``weight_exp <= 7`` never get there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

SignMode = Literal["mixed", "excitatory", "inhibitory"]

DECAY_SHIFT = 12                 # decays are 12-bit multipliers: x * (4096 - d) >> 12
DECAY_UNITY = 1 << DECAY_SHIFT   # 4096
DS_OFFSET = 1                    # added to du (Loihi 1's 1-bit register), not to dv
DM_OFFSET = 0
UV_BITS = 24                     # u and v are 24-bit
MAX_UV = 1 << (UV_BITS - 1)      # 2^23
ACT_SHIFT = 6                    # a_in << 6 before it joins u
VTH_SHIFT = 6                    # spike when v > vth << 6
MAX_WEIGHT_BITS = 8


def sign_mode_of(weights: Sequence[Sequence[int]]) -> SignMode:
    """Lava ``determine_sign_mode``: excitatory if every weight is >= 0, else inhibitory if
    every weight is <= 0, else mixed."""
    flat = [int(w) for row in weights for w in row]
    if min(flat, default=0) >= 0:
        return "excitatory"
    if max(flat, default=0) <= 0:
        return "inhibitory"
    return "mixed"


def clip_weight(w: int, sign_mode: SignMode, num_bits: int = MAX_WEIGHT_BITS) -> int:
    """Lava ``clip_weights``: mixed to [-2^bits, 2^bits - 1], excitatory to [0, 2^bits - 1],
    inhibitory to [-(2^bits - 1), 0]."""
    if sign_mode == "inhibitory":
        return -min(max(-w, 0), (1 << num_bits) - 1)
    lo = -(1 << num_bits) if sign_mode == "mixed" else 0
    return min(max(w, lo), (1 << num_bits) - 1)


def truncate_weight(w: int, sign_mode: SignMode, num_weight_bits: int = MAX_WEIGHT_BITS) -> int:
    """Lava ``truncate_weights``: drop ``8 - num_weight_bits + [mixed]`` low bits with an
    arithmetic shift (floor); an inhibitory weight is negated before and after."""
    k = MAX_WEIGHT_BITS - num_weight_bits + (1 if sign_mode == "mixed" else 0)
    if sign_mode == "inhibitory":
        return -(((-w) >> k) << k)
    return (w >> k) << k


def shift_toward_zero(x: int, k: int) -> int:
    """``sign(x) * (|x| >> k)``: Lava's rounding of a decayed state (toward zero)."""
    magnitude = abs(x) >> k
    return magnitude if x >= 0 else -magnitude


def shift_by_exponent(x: int, exponent: int) -> int:
    """``x << exponent`` for a positive exponent, ``x >> -exponent`` (floor) otherwise (Lava's
    ``weight_exp`` in ``PyDenseModelBitAcc.run_spk``, ``bias_exp`` in ``scale_bias``)."""
    return x << exponent if exponent > 0 else x >> -exponent


def wrap_u(u: int) -> int:
    """Lava's wrap of the current into ``(-2^23, 2^23]`` (two ``np.where`` of
    ``subthr_dynamics``): the second test looks at the first result, its correction starts from
    the unwrapped value."""
    wrapped = u - 2 * MAX_UV if u > MAX_UV else u
    return u + 2 * MAX_UV if wrapped <= -MAX_UV else wrapped


def clip_v(v: int) -> int:
    """Lava's voltage clip to ``[-(2^23 - 1), 2^23 - 1]``."""
    return min(max(v, -(MAX_UV - 1)), MAX_UV - 1)


@dataclass
class LavaDense:
    """A Lava ``Dense`` process on its bit-accurate model: ``weights`` [out, in] as the user
    gives them (clipped and truncated by :meth:`effective_weights`), ``weight_exp``,
    ``sign_mode`` (None: :func:`sign_mode_of` the weights) and ``num_weight_bits``."""

    weights: list[list[int]]
    weight_exp: int = 0
    sign_mode: SignMode | None = None
    num_weight_bits: int = MAX_WEIGHT_BITS

    @property
    def resolved_sign_mode(self) -> SignMode:
        """The sign mode Lava uses: the given one, or the weights' own."""
        return self.sign_mode or sign_mode_of(self.weights)

    def effective_weights(self) -> list[list[int]]:
        """The weights Lava multiplies with: clip_weights(w, mode, 8), then truncate_weights."""
        mode = self.resolved_sign_mode
        return [[truncate_weight(clip_weight(int(w), mode), mode, self.num_weight_bits) for w in row]
                for row in self.weights]

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in)."""
        return len(self.weights), len(self.weights[0]) if self.weights else 0


@dataclass
class LavaLIF:
    """A Lava ``LIF`` process on ``PyLifModelBitAcc``: decays ``du``, ``dv`` (0..4095), threshold
    mantissa ``vth`` (0..2^17 - 1) and per-neuron ``bias_mant`` / ``bias_exp``."""

    du: int
    dv: int
    vth: int
    bias_mant: list[int] = field(default_factory=list)
    bias_exp: list[int] = field(default_factory=list)

    def effective_bias(self, n: int) -> list[int]:
        """Lava ``scale_bias``: ``bias_mant << bias_exp`` (``>> -bias_exp`` when negative);
        missing entries are 0."""
        mant = list(self.bias_mant) + [0] * (n - len(self.bias_mant))
        exp = list(self.bias_exp) + [0] * (n - len(self.bias_exp))
        return [m << e if e >= 0 else m >> -e for m, e in zip(mant[:n], exp[:n])]

    @property
    def effective_threshold(self) -> int:
        """Lava ``scale_threshold``: ``vth << 6``; a neuron spikes when ``v`` exceeds it."""
        return self.vth << VTH_SHIFT


@dataclass
class LavaNetwork:
    """A chain of (Dense, LIF) pairs: input -> Dense_1 -> LIF_1 -> Dense_2 -> LIF_2 ..."""

    layers: list[tuple[LavaDense, LavaLIF]]


def dense_step(weights: list[list[int]], weight_exp: int, s_in: Sequence[int]) -> list[int]:
    """``a_buff`` of ``PyDenseModelBitAcc.run_spk``: ``(W . s_in)`` shifted by ``weight_exp``."""
    return [shift_by_exponent(sum(w * int(s) for w, s in zip(row, s_in)), weight_exp) for row in weights]


def lif_step(lif: LavaLIF, u: list[int], v: list[int], a_in: Sequence[int],
             bias: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """One step of ``PyLifModelBitAcc``: ``subthr_dynamics``, ``spiking_activation``,
    ``reset_voltage``. Returns the new (u, v after reset, spikes)."""
    u_factor = DECAY_UNITY - (lif.du + DS_OFFSET)
    v_factor = DECAY_UNITY - (lif.dv + DM_OFFSET)
    theta = lif.effective_threshold
    new_u, new_v, spikes = [], [], []
    for j in range(len(u)):
        uj = shift_toward_zero(u[j] * u_factor, DECAY_SHIFT) + (int(a_in[j]) << ACT_SHIFT)
        uj = wrap_u(uj)
        vj = clip_v(shift_toward_zero(v[j] * v_factor, DECAY_SHIFT) + uj + bias[j])
        spike = 1 if vj > theta else 0
        new_u.append(uj)
        new_v.append(0 if spike else vj)
        spikes.append(spike)
    return new_u, new_v, spikes


def check_shapes(network: LavaNetwork, inputs: Sequence[Sequence[int]]) -> None:
    """ValueError unless every Dense is a non-empty rectangle whose inputs are the previous
    layer's neurons (the first: the width of ``inputs[t]``), and the LIF parameters are in
    Lava's ranges (du, dv 0..4095, vth >= 0)."""
    if not network.layers:
        raise ValueError("Lava network: no layers")
    width = len(inputs[0]) if len(inputs) else network.layers[0][0].shape[1]
    if any(len(row) != width for row in inputs):
        raise ValueError(f"Lava network: inputs must be [T, {width}]")
    for k, (dense, lif) in enumerate(network.layers):
        out, n_in = dense.shape
        if out == 0 or any(len(row) != n_in for row in dense.weights):
            raise ValueError(f"Lava layer {k}: weights must be a non-empty [out, in] rectangle")
        if n_in != width:
            raise ValueError(f"Lava layer {k}: weights take {n_in} inputs, the layer before gives {width}")
        if not (0 <= lif.du < DECAY_UNITY and 0 <= lif.dv < DECAY_UNITY) or lif.vth < 0:
            raise ValueError(f"Lava layer {k}: du = {lif.du}, dv = {lif.dv} must be 0..4095 and vth = {lif.vth} >= 0")
        width = out


def run_lava(network: LavaNetwork, inputs: Sequence[Sequence[int]]) -> list[dict[str, np.ndarray]]:
    """Run ``network`` on ``inputs`` [T, n_in] (binary spikes or graded integers; ``inputs[t]``
    is what the source sends at step t). Returns, per layer, ``{"spikes", "u", "v"}``: int64
    arrays [T, n] of each step's spikes, current and voltage after the reset."""
    steps = len(inputs)
    check_shapes(network, inputs)
    dense_weights = [dense.effective_weights() for dense, _ in network.layers]
    buffers = [[0] * dense.shape[0] for dense, _ in network.layers]     # a_buff of the step before
    states = [([0] * dense.shape[0], [0] * dense.shape[0]) for dense, _ in network.layers]
    biases = [lif.effective_bias(dense.shape[0]) for dense, lif in network.layers]
    trace = [{"spikes": [], "u": [], "v": []} for _ in network.layers]
    for t in range(steps):
        s_in = [int(x) for x in inputs[t]]
        for k, (dense, lif) in enumerate(network.layers):
            a_in = buffers[k]                                  # a_out sent at t: a_buff of t - 1
            buffers[k] = dense_step(dense_weights[k], dense.weight_exp, s_in)
            u, v, spikes = lif_step(lif, *states[k], a_in, biases[k])
            states[k] = (u, v)
            trace[k]["spikes"].append(spikes)
            trace[k]["u"].append(u)
            trace[k]["v"].append(v)
            s_in = spikes
    return [{key: np.asarray(values, dtype=np.int64).reshape(steps, dense.shape[0])
             for key, values in layer.items()} for layer, (dense, _) in zip(trace, network.layers)]


__all__ = ["LavaDense", "LavaLIF", "LavaNetwork", "clip_weight", "run_lava", "sign_mode_of", "truncate_weight",
           "wrap_u"]
