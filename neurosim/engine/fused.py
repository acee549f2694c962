"""The integer engine's compiled neuron loop: one layer of current-based LIF neurons on many chips.

:func:`run_layer` runs the same step as :meth:`IntegerEngine._neurons` (docs/design.md §2 with the
profile's rules: decay by shift or multiply, ``u = fit(decay(v) + I)`` with saturation,
``s = u >= theta``, hard reset ``v = u - (u - r) s`` or soft reset ``v = u - theta s``), for the
layers whose rules it covers (the engine's ``_Layer.fusable``: current-based neurons, one spike
a step, no refractory period, a saturating membrane held in float32). numba compiles it into
one loop per (chip, sample) row that keeps the row's membrane in cache over all time steps,
without branches in the neuron update so that it vectorises. Every value is an integer held
exactly in float32, so the results are the same integers as the tensor steps':
``tests/test_fused.py`` compares both on each rule, and ``tests/test_reference.py`` compares the
loop with the slow reference on random networks and chips.

Spikes leave the loop packed 64 to a uint64 word (:class:`PackedSpikes`): a 32nd of the memory
of float32 spikes, and what the next layer compares.

**Chips as differences from chip 0.** Chips of one profile differ by their variation only, so
their input spikes mostly agree. For a dense layer whose inputs differ per chip, the caller
passes chip 0's current ``I_0 = W x_0`` (one GEMM) and each chip's current is
``I_c = I_0 + sum over k with x_c[k] != x_0[k] of (x_c[k] - x_0[k]) W[:, k]``: the same integers
(every partial sum is ``W`` times an input the layer can receive, inside the bound that makes
float32 exact), at the cost of the inputs that differ instead of a GEMM per chip. The
differing inputs are found a word (64 inputs) at a time, by counting trailing zeros of
``x_c XOR x_0``.

numba is a dependency (``setup.cfg``): it compiles these loops to vectorised machine code; the
same loop as tensor operations makes a pass over memory per operation and step. numba's
threads follow ``torch.get_num_threads()``. Its default OpenMP threading layer is not
fork-safe: a process that forks after using the engine should use the engine in the children
only with ``NUMBA_THREADING_LAYER=workqueue`` (or ``tbb``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import Tensor

DECAY_SHIFT, DECAY_MULTIPLY = 0, 1
BY_DIFFERENCE = sys.byteorder == "little"
"""Whether chips may be run as differences from chip 0 here (the word views assume little-endian
byte order)."""
RESET_HARD, RESET_SOFT = 0, 1


PACK_BYTES = np.uint64(0x0102040810204080)
"""(x * PACK_BYTES) >> 56 packs the eight 0/1 bytes of a little-endian word x into bits 0..7."""


@dataclass
class PackedSpikes:
    """0/1 spikes ``[T, C, B, *shape]`` packed 64 to a word: ``words`` ``[T, C, B, ceil(N / 64)]``
    (int64 holding uint64 bits; bit j of word w is neuron 64 w + j of the flattened ``shape``).
    A compiled layer writes them and the next one compares chips word by word; other readers
    :meth:`unpack` them."""

    words: Tensor
    shape: tuple[int, ...]

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)

    def unpack(self, dtype: torch.dtype = torch.uint8) -> Tensor:
        """The spikes as 0/1 ``[T, C, B, *shape]`` of ``dtype`` (uint8 or float32)."""
        lead = tuple(self.words.shape[:-1])
        out = torch.empty((*lead, self.words.shape[-1] * 64), dtype=dtype)
        with _Threads():
            _unpack_rows(_bits(self.words).reshape(-1, self.words.shape[-1]), out.numpy().reshape(-1, out.shape[-1]))
        return out[..., :self.neurons].reshape(*lead, *self.shape)

    def chip(self, index: int) -> PackedSpikes:
        """One chip's spikes, keeping the chip dimension (``[T, 1, B, ...]``)."""
        return PackedSpikes(self.words[:, index:index + 1], self.shape)


def pack(spikes: Tensor) -> PackedSpikes:
    """Pack 0/1 spikes ``[T, C, B, *shape]`` (any dtype) into :class:`PackedSpikes`."""
    lead, shape = tuple(spikes.shape[:3]), tuple(spikes.shape[3:])
    flat = spikes.reshape(*lead, -1)
    if flat.numel() and (float(flat.min()) < 0 or float(flat.max()) > 1):
        raise ValueError("only 0/1 spikes can be packed into bits")
    n = flat.shape[-1]
    padded = torch.zeros((*lead, -(-n // 64) * 64), dtype=torch.uint8)
    padded[..., :n] = flat
    words = torch.empty((*lead, padded.shape[-1] // 64), dtype=torch.int64)
    with _Threads():
        _pack_rows(padded.numpy().reshape(-1, padded.shape[-1]).view(np.uint64),
                   _bits(words).reshape(-1, words.shape[-1]))
    return PackedSpikes(words, shape)


def _bits(words: Tensor) -> np.ndarray:
    """An int64 tensor's memory as a uint64 numpy array (no copy)."""
    return words.numpy().view(np.uint64)


@intrinsic
def _trailing_zeros(typingctx, word):  # pragma: no cover
    """Trailing zero bits of a non-zero uint64 (LLVM's ``cttz``, one instruction)."""
    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.uint64(types.uint64), codegen


@intrinsic
def _popcount(typingctx, word):  # pragma: no cover
    """Set bits of a uint64 (LLVM's ``ctpop``)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@njit(inline="always")
def _pack_row(byte_words, out):  # pragma: no cover
    """Pack a row of 0/1 bytes (seen as uint64 words, eight bytes each) into bits ``out``."""
    for w in range(out.shape[0]):
        word = np.uint64(0)
        for j in range(8):
            word |= ((byte_words[8 * w + j] * PACK_BYTES) >> np.uint64(56)) << np.uint64(8 * j)
        out[w] = word


@njit(parallel=True, cache=True, nogil=True)
def _pack_rows(byte_words, out):  # pragma: no cover
    """:func:`_pack_row` for every row of ``byte_words`` ``[R, K / 8]`` into ``out`` ``[R, K / 64]``."""
    for r in prange(out.shape[0]):
        _pack_row(byte_words[r], out[r])


@njit(parallel=True, cache=True, nogil=True)
def _unpack_rows(words, out):  # pragma: no cover
    """Bits ``words`` ``[R, K / 64]`` to 0/1 values ``out`` ``[R, K]`` (any numeric dtype)."""
    for r in prange(words.shape[0]):
        for w in range(words.shape[1]):
            word = words[r, w]
            for j in range(64):
                out[r, 64 * w + j] = (word >> np.uint64(j)) & np.uint64(1)


@njit(inline="always")
def _difference_current(own, current, words, weight_t, step, c, b):  # pragma: no cover
    """Chip ``c``'s current ``current[step, 0, b] + sum_k (x_c[k] - x_0[k]) W^T[k]`` (module doc)
    for 0/1 inputs packed in ``words`` ``[L, C, B, K / 64]``: 64 inputs are compared (and
    counted) at once, and the differing ones of a word found by counting trailing zeros.
    Returns (inputs that are 1, whether ``own`` holds the current): where no input differs the
    current is chip 0's and ``own`` is left alone."""
    mine, reference = words[step, c, b], words[step, 0, b]
    active = np.uint64(0)
    differ = np.uint64(0)
    for w in range(mine.shape[0]):
        active += _popcount(mine[w])
        differ |= mine[w] ^ reference[w]
    if differ == 0:
        return np.int64(active), False
    own[:] = current[step, 0, b]
    for w in range(mine.shape[0]):
        word = mine[w]
        bits = word ^ reference[w]
        while bits != 0:  # each differing input 64 w + j in turn
            j = _trailing_zeros(bits)
            d = np.float32(1.0) if (word >> j) & np.uint64(1) else np.float32(-1.0)
            row = weight_t[64 * w + np.int64(j)]
            for n in range(own.shape[0]):
                own[n] += d * row[n]
            bits &= bits - np.uint64(1)
    return np.int64(active), True


@njit(parallel=True, cache=True, nogil=True)
def _currents_rows(current, words, weight_t, out, active):  # pragma: no cover
    """Every chip's currents ``out`` ``[L, C, B, N]`` from chip 0's ``current`` ``[L, 1, B, N]``
    and the packed inputs ``words`` ``[L, C, B, K / 64]`` (:func:`_difference_current`);
    ``active`` ``[C, B]`` gets the inputs that are 1."""
    steps, chips, batch = out.shape[0], out.shape[1], out.shape[2]
    for row in prange(chips * batch):
        c = row // batch
        b = row % batch
        total = 0
        for step in range(steps):
            own = out[step, c, b]
            count, differs = _difference_current(own, current, words, weight_t, step, c, b)
            if not differs:
                own[:] = current[step, 0, b]
            total += count
        active[c, b] = total


@njit(inline="always")
def _fire(raw, lo, hi, threshold, alive, reset, hard):  # pragma: no cover
    """One neuron's step after its decay and input: ``u = clamp(raw, lo, hi)``, ``s = u >= theta``
    (times ``alive``), then the hard (``u - (u - r) s``) or soft (``u - theta s``) reset.
    Returns (new state, spike, 1 if ``raw`` was clipped) as float32."""
    u = min(max(raw, lo), hi)
    s = (np.float32(1.0) if u >= threshold else np.float32(0.0)) * alive
    lost = u - reset if hard else threshold
    return u - lost * s, s, np.float32(1.0) if raw != u else np.float32(0.0)


@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
def _lif_rows(current, words, weight_t, theta, reset, v_init, factor, keep, alive, noise, jitter,  # pragma: no cover
              decay_kind, toward_zero, nonzero_step, decay_scale, lo, hi, reset_kind, spikes, stats):
    """The compiled loop (numba; arrays are numpy views of the caller's tensors).

    current ``[L, P, B, N]`` float32 currents in state units (P = 1: shared by all chips, or
    chip 0's when ``words`` are given); words ``[L, C, B, K / 64]`` and weight_t ``[K, N]``
    (empty when unused): per-chip packed 0/1 inputs and ``W^T`` times the layer's gain; theta,
    reset, factor, keep, alive ``[1 | C, N]``; v_init ``[N]``; noise, jitter ``[T, C, B, N]`` or
    empty; spikes ``[T, C, B, N / 64]`` packed (written); stats ``[C, B, 3]`` (written): spikes,
    membrane saturations, inputs that are 1 (only counted with ``words``).

    The neuron loop has no branches (selects only; counts are float32 sums, which
    ``fastmath={"reassoc"}`` lets vectorise: every value is an integer below 2^24), so that it
    vectorises; noise and jitter are added to row buffers first.
    """
    steps, chips, batch = spikes.shape[:3]
    neurons = current.shape[3]
    n_current, n_sources = current.shape[0], current.shape[1]
    with_inputs = words.shape[0] > 0
    with_noise = noise.shape[0] > 0
    with_jitter = jitter.shape[0] > 0
    shift = decay_kind == DECAY_SHIFT
    hard = reset_kind == RESET_HARD
    # a shift decay rounding down, without a minimum step, on every neuron
    plain = shift and not toward_zero and not nonzero_step and decay_scale == 1.0
    for row in prange(chips * batch):
        c = row // batch
        b = row % batch
        p = c if n_sources > 1 else 0
        th_row = theta[c if theta.shape[0] > 1 else 0]
        r_row = reset[c if reset.shape[0] > 1 else 0]
        f_row = factor[c if factor.shape[0] > 1 else 0]
        k_row = keep[c if keep.shape[0] > 1 else 0]
        plain_row = plain and not np.any(k_row)
        a_row = alive[c if alive.shape[0] > 1 else 0]
        v = v_init.copy()
        row_words = np.zeros(8 * spikes.shape[3], np.uint64)  # the step's 0/1 spikes as bytes, packed after
        row_bytes = row_words.view(np.uint8)
        own = np.empty(neurons, np.float32)
        noisy = np.empty(neurons, np.float32)
        step_theta = np.empty(neurons, np.float32)
        fired = 0
        saturated = 0
        active = 0
        differs = False
        for t in range(steps):
            step = t if n_current > 1 else 0
            row_current = current[step, p, b]
            if with_inputs:
                if t == 0 or n_current > 1:  # a static input's current is the same every step
                    count, differs = _difference_current(own, current, words, weight_t, step, c, b)
                    active += count * (steps if n_current == 1 else 1)
                if differs:
                    row_current = own
            if with_noise:
                for n in range(neurons):
                    noisy[n] = row_current[n] + noise[t, c, b, n]
                row_current = noisy
            row_theta = th_row
            if with_jitter:
                for n in range(neurons):
                    step_theta[n] = th_row[n] + jitter[t, c, b, n]
                row_theta = step_theta
            fired_now = np.float32(0.0)
            saturated_now = np.float32(0.0)
            if plain_row:  # the common decay, written out without its options' selects (twice as fast)
                for n in range(neurons):
                    x = v[n]
                    v[n], s, clipped = _fire(x - np.floor(x * f_row[n]) + row_current[n], lo, hi, row_theta[n],
                                             a_row[n], r_row[n], hard)
                    saturated_now += clipped
                    fired_now += s
                    row_bytes[n] = np.uint8(s)
            else:
                for n in range(neurons):
                    x = v[n]
                    scaled = x * f_row[n] * decay_scale
                    shifted = np.trunc(scaled) if toward_zero else np.floor(scaled)
                    shifted = np.sign(x) if nonzero_step and shifted == 0.0 else shifted
                    decayed = x - shifted if shift else shifted
                    decayed = x if k_row[n] != 0.0 else decayed
                    v[n], s, clipped = _fire(decayed + row_current[n], lo, hi, row_theta[n], a_row[n], r_row[n], hard)
                    saturated_now += clipped
                    fired_now += s
                    row_bytes[n] = np.uint8(s)
            fired += np.int64(fired_now)
            saturated += np.int64(saturated_now)
            _pack_row(row_words, spikes[t, c, b])
        stats[c, b, 0] = fired
        stats[c, b, 1] = saturated
        stats[c, b, 2] = active


def _per_neuron(value: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A parameter of a layer of neurons ``shape`` as a contiguous float32 ``[1 | C, N]``: a
    scalar, a tensor that broadcasts to ``shape`` (e.g. per channel ``[channels, 1, 1]``), or per
    chip ``[C, 1, ...]`` broadcasting to ``[C, 1, *shape]``."""
    value = value.to(torch.float32)
    neurons = math.prod(shape)
    if value.dim() <= len(shape):
        return torch.broadcast_to(value, shape).reshape(1, neurons).contiguous()
    return torch.broadcast_to(value, (value.shape[0], 1, *shape)).reshape(value.shape[0], neurons).contiguous()


def _sources(inputs: Tensor | PackedSpikes, weight_t: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[L, C, B, K]`` as the loops read them, packed 64 to a word (a 32nd of float32's
    memory traffic; :func:`pack`), and ``W^T`` padded with zero rows to whole words."""
    packed = inputs if isinstance(inputs, PackedSpikes) else pack(inputs)
    rows = packed.words.shape[-1] * 64
    weight_t = weight_t.to(torch.float32)
    if rows > weight_t.shape[0]:
        weight_t = torch.nn.functional.pad(weight_t, (0, 0, 0, rows - weight_t.shape[0]))
    return _bits(packed.words.contiguous()), weight_t.contiguous().numpy()


class _Threads:
    """numba's thread count set to torch's for the duration of a call (the 2-thread benchmarks,
    ``torch.set_num_threads`` in user code)."""

    def __enter__(self) -> None:
        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc) -> None:
        numba.set_num_threads(self.previous)


def currents_by_difference(current: Tensor, inputs: Tensor | PackedSpikes, weight_t: Tensor) -> tuple[Tensor, Tensor]:
    """Every chip's currents ``[L, C, B, N]`` (float32) of a dense layer from chip 0's
    ``current`` ``[L, 1, B, N]``, the per-chip 0/1 ``inputs`` ``[L, C, B, K]`` (or packed) and
    ``weight_t`` ``[K, N]`` (``W^T`` times the layer's gain): the same integers as a GEMM per
    chip (module doc). Also returns each chip's non-zero inputs ``[C]`` (float64)."""
    steps, chips, batch = (inputs.words if isinstance(inputs, PackedSpikes) else inputs).shape[:3]
    out = torch.empty((steps, chips, batch, current.shape[-1]), dtype=torch.float32)
    active = torch.zeros((chips, batch), dtype=torch.float64)
    with _Threads():
        _currents_rows(current.to(torch.float32).contiguous().numpy(), *_sources(inputs, weight_t), out.numpy(),
                       active.numpy())
    return out, active.sum(1)


def run_layer(current: Tensor, *, chips: int, steps: int, theta: Tensor, reset: Tensor, v_init: Tensor,
              factor: Tensor, keep: Tensor | None, alive: Tensor | None, decay_kind: int, toward_zero: bool,
              nonzero_step: bool, decay_bits: int, lo: float, hi: float, soft_reset: bool,
              inputs: Tensor | PackedSpikes | None = None, weight_t: Tensor | None = None,
              noise: Tensor | None = None, jitter: Tensor | None = None,
              shape: tuple[int, ...] | None = None) -> tuple[PackedSpikes, Tensor]:
    """Run one layer over ``steps`` time steps on ``chips`` chips; returns its spikes
    ``[T, chips, B, *shape]`` packed (``shape`` defaults to ``(N,)``) and per-chip counts
    ``[chips, 3]`` (float64: spikes, membrane saturations, non-zero inputs when ``inputs`` is
    given).

    ``current`` ``[L, P, B, N]`` (L = 1 or T, P = 1 or chips) holds the currents in state units
    (float32 integers); with 0/1 ``inputs`` ``[L, chips, B, K]`` (or packed) and ``weight_t``
    ``[K, N]`` it is chip 0's and the others' follow from their differing inputs (module doc). ``factor`` is the
    decay's per-neuron shift ``k`` or multiplier ``d`` and ``keep`` marks neurons that do not
    decay; ``lo``, ``hi`` the membrane's range under a saturating rule; ``noise`` and ``jitter``
    ``[T, chips, B, N]`` are thermal noise and threshold jitter in state units. The per-neuron
    parameters (theta, reset, v_init, factor, keep, alive) are scalars, broadcast to ``shape``
    (per channel too), or per chip ``[chips, 1, ...]``."""
    neurons = current.shape[-1]
    batch = current.shape[2]
    spikes = torch.empty((steps, chips, batch, -(-neurons // 64)), dtype=torch.int64)
    stats = torch.zeros((chips, batch, 3), dtype=torch.float64)
    if decay_kind == DECAY_SHIFT:  # x * 2^-k; a multiply decay's (x * d) * 2^-bits
        factor, scale = torch.exp2(-factor.to(torch.float32)), 1.0
    else:
        factor, scale = factor.to(torch.float32), 2.0 ** -decay_bits
    empty = torch.empty(0, 0, 0, 0)
    sources = (np.empty((0, 0, 0, 0), np.uint64), np.empty((0, 0), np.float32)) if inputs is None \
        else _sources(inputs, weight_t)
    shape = tuple(shape or (neurons,))
    args = (_per_neuron(theta, shape), _per_neuron(reset, shape), _per_neuron(v_init, shape)[0].contiguous(),
            _per_neuron(factor, shape), torch.zeros(1, neurons) if keep is None else _per_neuron(keep, shape),
            torch.ones(1, neurons) if alive is None else _per_neuron(alive, shape),
            empty if noise is None else noise.to(torch.float32).contiguous(),
            empty if jitter is None else jitter.to(torch.float32).contiguous())
    with _Threads():
        _lif_rows(current.to(torch.float32).contiguous().numpy(), *sources, *(a.numpy() for a in args), decay_kind,
                  toward_zero, nonzero_step, np.float32(scale), np.float32(lo), np.float32(hi),
                  RESET_SOFT if soft_reset else RESET_HARD, _bits(spikes), stats.numpy())
    return PackedSpikes(spikes, shape), stats.sum(1)
