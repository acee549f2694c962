"""The integer arithmetic of neurosim.device.fixedpoint against plain-Python models.

Small bit widths are tested exhaustively (every representable value and a margin beyond the
range), on int64 tensors (the engine) and on float64 tensors holding integers (the training
forward): both must give the Python model's numbers exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neurosim.device import fixedpoint as fp
from neurosim.device.profile import DecayFormat

SMALL_BITS = range(1, 9)


# ------------------------------------------------------------------ plain-Python models

def py_range(bits):
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def py_saturate(x, bits):
    lo, hi = py_range(bits)
    return min(max(x, lo), hi)


def py_wrap(x, bits):
    # two's complement: keep the low `bits` bits, read them as signed
    low = x & ((1 << bits) - 1)
    return low - (1 << bits) if low >= (1 << (bits - 1)) else low


def py_shift_floor(x, k):
    return x >> k  # Python's >> on ints is floor division by 2^k


def py_shift_toward_zero(x, k):
    return -((-x) >> k) if x < 0 else x >> k


def py_xylo_decay(v, dash):
    """xylosim 0.1.3 src/v2/cpp/XyloIAFNeuron.cpp decay(), then v -= dv."""
    dv = v >> dash
    if dv == 0:
        dv = 1 if v > 0 else (-1 if v < 0 else 0)
    return v - dv


def values_around(bits):
    lo, hi = py_range(bits)
    span = 1 << bits
    return list(range(lo - 2 * span, hi + 2 * span + 1))


def as_tensors(values):
    return torch.tensor(values, dtype=torch.int64), torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------ ranges and overflow

@pytest.mark.parametrize("bits", range(1, 33))
def test_int_range(bits):
    assert fp.int_range(bits) == py_range(bits)


@pytest.mark.parametrize("bad", [0, 33, -1, 8.0, True])
def test_int_range_refuses_bad_widths(bad):
    with pytest.raises(ValueError, match="bit width"):
        fp.int_range(bad)


@pytest.mark.parametrize("bits", SMALL_BITS)
def test_saturate_and_wrap_exhaustive(bits):
    values = values_around(bits)
    ints, floats = as_tensors(values)
    expect_sat = [py_saturate(v, bits) for v in values]
    expect_wrap = [py_wrap(v, bits) for v in values]
    assert fp.saturate(ints, bits).tolist() == expect_sat
    assert fp.saturate(floats, bits).tolist() == expect_sat
    assert fp.wrap(ints, bits).tolist() == expect_wrap
    assert fp.wrap(floats, bits).tolist() == expect_wrap
    assert fp.fit_to_bits(ints, bits, "saturate").tolist() == expect_sat
    assert fp.fit_to_bits(ints, bits, "wrap").tolist() == expect_wrap
    lo, hi = py_range(bits)
    assert fp.out_of_range(ints, bits).tolist() == [not lo <= v <= hi for v in values]


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_wrap_edges_of_wide_formats(bits):
    lo, hi = py_range(bits)
    values = [lo - 1, lo, lo + 1, -1, 0, 1, hi - 1, hi, hi + 1, 3 * hi]
    assert fp.wrap(torch.tensor(values), bits).tolist() == [py_wrap(v, bits) for v in values]
    assert fp.saturate(torch.tensor(values), bits).tolist() == [py_saturate(v, bits) for v in values]


def test_fit_to_bits_refuses_unknown_rule():
    with pytest.raises(ValueError, match="overflow"):
        fp.fit_to_bits(torch.zeros(2), 8, "clip")


# ------------------------------------------------------------------ shifts and decays

@pytest.mark.parametrize("bits", SMALL_BITS)
def test_shift_right_exhaustive(bits):
    values = values_around(bits)
    ints, floats = as_tensors(values)
    for k in range(0, bits + 2):
        floor = [py_shift_floor(v, k) for v in values]
        toward_zero = [py_shift_toward_zero(v, k) for v in values]
        assert fp.shift_right(ints, k).tolist() == floor
        assert fp.shift_right(floats, k).tolist() == floor
        assert fp.shift_right(ints, k, "toward_zero").tolist() == toward_zero
        assert fp.shift_right(floats, k, "toward_zero").tolist() == toward_zero


def test_arithmetic_shift_rounds_toward_minus_infinity():
    # the documented hardware convention: -1 >> 1 == -1, -5 >> 1 == -3
    x = torch.tensor([-1, -5, 5, -4])
    assert fp.shift_right(x, 1).tolist() == [-1, -3, 2, -2]
    assert fp.shift_right(x, 1, "toward_zero").tolist() == [0, -2, 2, -2]


@pytest.mark.parametrize("bits", SMALL_BITS)
def test_decay_by_shift_exhaustive(bits):
    lo, hi = py_range(bits)
    values = list(range(lo, hi + 1))
    ints, floats = as_tensors(values)
    for k in range(1, bits + 1):
        expect = [v - py_shift_floor(v, k) for v in values]
        assert fp.decay_by_shift(ints, k).tolist() == expect
        assert fp.decay_by_shift(floats, k).tolist() == expect
        expect_tz = [v - py_shift_toward_zero(v, k) for v in values]
        assert fp.decay_by_shift(ints, k, "toward_zero").tolist() == expect_tz
        xylo = [py_xylo_decay(v, k) for v in values]
        assert fp.decay_by_shift(ints, k, nonzero_step=True).tolist() == xylo
        assert fp.decay_by_shift(floats, k, nonzero_step=True).tolist() == xylo


def test_xylo_decay_is_asymmetric_as_xylosim():
    # facts measured on xylosim's decay(): dash 1 takes 5 -> 3 but -5 -> -2; dash 3: 100 -> 88, -100 -> -87
    fmt = DecayFormat(kind="shift", shift=1, nonzero_step=True)
    assert fp.apply_decay(torch.tensor([5, -5, 1, -1, 0]), fmt).tolist() == [3, -2, 0, 0, 0]
    fmt3 = DecayFormat(kind="shift", shift=3, nonzero_step=True)
    assert fp.apply_decay(torch.tensor([100, -100]), fmt3).tolist() == [88, -87]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_decay_by_multiply_exhaustive(bits):
    lo, hi = py_range(bits + 2)
    values = list(range(lo, hi + 1))
    ints, floats = as_tensors(values)
    for d in range(0, (1 << bits) + 1):
        expect = [py_shift_floor(v * d, bits) for v in values]
        assert fp.decay_by_multiply(ints, d, bits).tolist() == expect
        assert fp.decay_by_multiply(floats, d, bits).tolist() == expect
        expect_tz = [py_shift_toward_zero(v * d, bits) for v in values]
        assert fp.decay_by_multiply(ints, d, bits, "toward_zero").tolist() == expect_tz


def test_multiply_decay_matches_lava_expression():
    # Lava PyLifModelBitAcc: np.sign(x) * np.right_shift(np.abs(x), 12) with x = v * (4096 - dv)
    rng = np.random.default_rng(7)
    v = rng.integers(-(2 ** 23) + 1, 2 ** 23, size=5000)
    dv = rng.integers(0, 4096, size=5000)
    x = v.astype(np.int64) * (4096 - dv)
    lava = np.sign(x) * np.right_shift(np.abs(x), 12)
    fmt = DecayFormat(kind="multiply", bits=12, rounding="toward_zero")
    ours = fp.apply_decay(torch.from_numpy(v), fmt, torch.from_numpy(4096 - dv))
    assert ours.tolist() == lava.tolist()


def test_per_neuron_shift_tensor():
    v = torch.tensor([100, 100, -100, -100])
    k = torch.tensor([1, 2, 1, 2])
    assert fp.decay_by_shift(v, k).tolist() == [100 - 50, 100 - 25, -100 + 50, -100 + 25]
    assert fp.decay_by_shift(v.double(), k).tolist() == [50, 75, -50, -75]


def test_apply_decay_needs_multiplier_for_multiply():
    with pytest.raises(ValueError, match="integer factor"):
        fp.apply_decay(torch.tensor([1]), DecayFormat(kind="multiply", bits=12))


def test_decay_multiplier_and_shift_for():
    assert fp.decay_multiplier(0.75, 12).item() == 3072
    assert fp.decay_multiplier(torch.tensor([0.5, 1.0]), 4).tolist() == [8, 16]
    for k in range(1, 16):
        assert fp.decay_shift_for(1 - 2.0 ** -k).item() == k
    assert fp.decay_shift_for(0.9).item() == 3  # 1 - 2^-3 = 0.875 is the nearest in log scale
    assert fp.decay_shift_for(1.0).item() == 31
    # beta 0 is 1 - 2^0: shift 0 clears the state (Xylo's dash 0); just above 0 the nearest is 1
    assert fp.decay_shift_for(torch.tensor([0.0, 1e-6, 0.25])).tolist() == [0, 1, 1]
    v = torch.tensor([-32768, -5, -1, 0, 1, 7, 32767])
    assert fp.decay_by_shift(v, 0, "floor", nonzero_step=True).tolist() == [0] * 7
    # xylosim's -decay(v) is int16: with dash 0, v = -32768 gives -(-32768) = -32768, so dv = -32768 + 32766
    # = -2 and v stays at -32768 (unwrapped, dv would saturate at 32767 and v become -1)
    assert fp.membrane_increment(torch.tensor([-32768]), torch.tensor([0]), torch.tensor([32766]), None, 16,
                                 "saturate").tolist() == [-32768]


# ------------------------------------------------------------------ rounding and quantization

def test_round_nearest_even_and_floor_match_python():
    xs = [k / 4 for k in range(-41, 42)]
    t = torch.tensor(xs, dtype=torch.float64)
    assert fp.round_to_int(t, "nearest_even").tolist() == [float(round(x)) for x in xs]
    assert fp.round_to_int(t, "floor").tolist() == [float(math.floor(x)) for x in xs]
    ints = torch.arange(-3, 4)
    assert fp.round_to_int(ints, "floor") is ints


def test_stochastic_rounding_is_seeded_and_unbiased():
    x = torch.full((200_000,), 0.3, dtype=torch.float64)
    a = fp.round_to_int(x, "stochastic", torch.Generator().manual_seed(1))
    b = fp.round_to_int(x, "stochastic", torch.Generator().manual_seed(1))
    c = fp.round_to_int(x, "stochastic", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / x.numel())
    neg = fp.round_to_int(-x, "stochastic", torch.Generator().manual_seed(1))
    assert set(neg.unique().tolist()) == {-1.0, 0.0}
    assert abs(neg.mean().item() + 0.3) < 0.01
    with pytest.raises(ValueError, match="seeded"):
        fp.round_to_int(x, "stochastic")


def test_quantization_scales():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.1, 0.2, -0.05]])
    s = fp.quantization_scale(w, 8, "per_layer")
    assert s.item() == pytest.approx(1.0 / 127)
    assert fp.quantize(w, s, 8).abs().max().item() == 127
    sc = fp.quantization_scale(w, 8, "per_channel")
    assert sc.shape == (2, 1)
    q = fp.quantize(w, sc, 8)
    assert q.abs().amax(dim=1).tolist() == [127, 127]
    sp = fp.quantization_scale(w, 8, "power_of_two")
    assert math.log2(sp.item()).is_integer()
    assert s.item() <= sp.item() < 2 * s.item()
    assert fp.quantization_scale(torch.zeros(3, 3), 8, "per_layer").item() == 1.0
    with pytest.raises(ValueError, match="1-bit"):
        fp.quantization_scale(w, 1, "per_layer")
    with pytest.raises(ValueError, match="scale rule"):
        fp.quantization_scale(w, 8, "per_tensor")


def test_per_channel_scale_on_conv_weights():
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    s = fp.quantization_scale(w, 6, "per_channel")
    assert s.shape == (4, 1, 1, 1)
    assert fp.quantize(w, s, 6).flatten(1).abs().amax(dim=1).tolist() == [31] * 4


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(2, 16), values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
       rounding=st.sampled_from(["nearest_even", "floor"]), overflow=st.sampled_from(["saturate", "wrap"]))
def test_quantize_matches_python_model(bits, values, rounding, overflow):
    scale = 0.37
    x = torch.tensor(values, dtype=torch.float64)
    q = fp.quantize(x, scale, bits, rounding, overflow)
    assert q.dtype == torch.int64
    for value, code in zip(values, q.tolist()):
        r = value / scale
        integer = round(r) if rounding == "nearest_even" else math.floor(r)
        expect = py_saturate(integer, bits) if overflow == "saturate" else py_wrap(integer, bits)
        assert code == expect
    inside = (x / scale).abs() < 2 ** (bits - 1) - 1
    err = (fp.dequantize(q, scale).double() - x).abs()
    bound = scale / 2 if rounding == "nearest_even" else scale  # floor may lose up to one step
    assert bool((err[inside] <= bound * (1 + 1e-6)).all())  # dequantize returns float32


@settings(max_examples=100, deadline=None)
@given(k=st.integers(0, 20), values=st.lists(st.integers(-(2 ** 23), 2 ** 23), min_size=1, max_size=50),
       rounding=st.sampled_from(["floor", "toward_zero"]))
def test_float_and_integer_paths_agree(k, values, rounding):
    ints = torch.tensor(values, dtype=torch.int64)
    assert fp.shift_right(ints, k, rounding).tolist() == fp.shift_right(ints.double(), k, rounding).tolist()
    assert fp.decay_by_shift(ints, max(k, 1), rounding).tolist() == \
        fp.decay_by_shift(ints.float(), max(k, 1), rounding).tolist()


def test_exact_float_bound():
    assert fp.exact_float_bound(torch.float32) == 2 ** 24
    assert fp.exact_float_bound(torch.float64) == 2 ** 53
    big = torch.tensor(2 ** 24 + 1, dtype=torch.int64)
    assert big.float().long().item() != big.item()  # the bound is where exactness ends
