"""The device-profile schema (docs/design.md §3) as typed, frozen models.

A profile is the single description of a chip. The models below are the contract: every key a
profile may hold is a field here, unknown keys are refused, and cross-field rules (e.g. a
current-based synapse needs a synapse format on a fixed-point chip) are checked on construction.

We use pydantic for the schema because it gives, for free and well tested, what a strict loader
needs: exact type checks (``True`` is not an int, ``"nan"`` is not a float), refusal of unknown
keys, numeric bounds, and the key path of every error, which :mod:`neurosim.device.loading`
turns into one readable line.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

Rounding = Literal["nearest_even", "floor", "stochastic"]
"""How a float is rounded to an integer: half to even, toward minus infinity, or stochastically."""

Overflow = Literal["saturate", "wrap", "saturate_symmetric", "wrap_high"]
"""What a state does past its bit width: clamp to the range, or wrap around (two's complement).
``saturate_symmetric`` clamps to ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (Lava's ``np.clip`` of the Loihi
membrane); ``wrap_high`` wraps modulo ``2^b`` into ``(-2^(b-1), 2^(b-1)]`` (Lava's wrap of the Loihi
current, which keeps ``+2^(b-1)`` and sends ``-2^(b-1)`` to ``+2^(b-1)``)."""


class _Spec(BaseModel):
    """Base of all profile sections: strict types, no unknown keys, finite numbers, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# --------------------------------------------------------------------------------------------
# neuron


class NeuronSpec(_Spec):
    """The neuron model of docs/design.md §2 in float units (threshold 1 is the usual scale).

    ``decay`` is the membrane factor beta of ``u[t] = beta * v[t-1] + I[t]``; ``tau`` (in time
    steps) is an alternative, beta = exp(-1/tau). A LIF neuron on a shift-decay chip may leave
    both out: beta then follows from the shift, 1 - 2^-k. ``synapse_decay`` (alpha) makes the
    neuron current-based: ``i[t] = alpha * i[t-1] + W x[t]``.
    """

    model: Literal["lif", "if"] = "lif"
    reset: Literal["hard", "soft"] = "hard"
    v_threshold: float = Field(default=1.0, gt=0)
    v_reset: float = 0.0
    decay: float | None = Field(default=None, gt=0, le=1)
    tau: float | None = Field(default=None, gt=0)
    synapse_decay: float | None = Field(default=None, gt=0, le=1)
    refractory: int = Field(default=0, ge=0)
    max_spikes: int = Field(default=1, ge=1, le=127)
    synapse_delay: int = Field(default=0, ge=0, le=64)

    @model_validator(mode="after")
    def _decay_given_once(self) -> NeuronSpec:
        if self.max_spikes > 1 and self.reset != "soft":
            raise ValueError("max_spikes > 1 (several spikes per step) needs reset: soft")
        if self.decay is not None and self.tau is not None:
            raise ValueError("give either 'decay' or 'tau', not both")
        if self.model == "if" and (self.tau is not None or self.decay not in (None, 1.0)):
            raise ValueError("an 'if' neuron does not decay: leave out 'decay'/'tau' or set decay: 1.0")
        return self


# --------------------------------------------------------------------------------------------
# numerics


class DecayFormat(_Spec):
    """Integer form of a decay (docs/design.md §3).

    ``kind: shift`` computes ``v - (v >> shift)`` (beta = 1 - 2^-shift, as Xylo does);
    ``kind: multiply`` computes ``(v * d) >> bits`` with ``d = round(beta * 2^bits)`` (as Loihi
    does). ``rounding`` says how the shifted quantity is rounded: ``floor`` is the arithmetic
    shift of two's-complement hardware (toward minus infinity); ``toward_zero`` shifts the
    magnitude and restores the sign (Lava's bit-accurate Loihi model). ``nonzero_step`` (shift
    only) makes a state that is not zero always decay by at least one unit: when ``v >> k`` is 0
    it becomes ``sign(v)``, as xylosim's ``decay()`` does.
    """

    kind: Literal["shift", "multiply"]
    shift: int | None = Field(default=None, ge=1, le=31)
    bits: int | None = Field(default=None, ge=1, le=32)
    rounding: Literal["floor", "toward_zero"] = "floor"
    nonzero_step: bool = False

    @model_validator(mode="after")
    def _fields_of_kind(self) -> DecayFormat:
        if self.kind == "shift":
            if self.shift is None:
                raise ValueError("kind 'shift' needs 'shift' (the k of v - (v >> k))")
            if self.bits is not None:
                raise ValueError("kind 'shift' takes 'shift', not 'bits'")
        else:
            if self.bits is None:
                raise ValueError("kind 'multiply' needs 'bits' (the b of (v * d) >> b)")
            if self.shift is not None:
                raise ValueError("kind 'multiply' takes 'bits', not 'shift'")
            if self.nonzero_step:
                raise ValueError("'nonzero_step' applies to kind 'shift' only")
        return self

    @property
    def shift_beta(self) -> float | None:
        """The decay factor a shift decay implements, 1 - 2^-k; None for multiply."""
        return None if self.shift is None else 1.0 - 2.0 ** (-self.shift)


class ReadoutSpec(_Spec):
    """The chip's output neurons. ``integrator`` is docs/design.md §2's non-spiking readout; ``lif``
    is a neuron of the chip's own model (current-based if the chip is, its decays) that fires
    and resets by subtraction, at most ``max_spikes`` per step (Xylo's output neurons: 1); the
    logits are the mean of its membrane over time either way. ``delay``: steps between the last
    hidden layer's spikes and the readout's current (Xylo delivers them one step later)."""

    neuron: Literal["integrator", "lif"] = "integrator"
    max_spikes: int = Field(default=1, ge=1, le=127)
    delay: int = Field(default=0, ge=0, le=64)


class WeightShiftRange(_Spec):
    """Range of a power-of-two gain 2^s a chip applies: the per-layer weight gain (Xylo's weight
    shift, Loihi's weight exponent) or the per-neuron bias exponent (Loihi's ``bias_exp``)."""

    min: int = Field(ge=-31, le=31)
    max: int = Field(ge=-31, le=31)

    @model_validator(mode="after")
    def _ordered(self) -> WeightShiftRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self




def _bits() -> Any:
    """An optional bit width in 1..32."""
    return Field(default=None, ge=1, le=32)


class NumericsSpec(_Spec):
    """Number formats of the chip: ``float`` (ideal or analog target) or fixed point.

    In YAML a float chip is written ``numerics: float``; a fixed-point chip is a mapping of the
    fields below. All integers are signed two's complement of the given width.

    How a step's integers are combined (defaults: docs/design.md §2 as written):

    * ``activation_shift``: a layer's synaptic sum is shifted left by this many bits before it
      reaches the state (Loihi's 6-bit MSB alignment, Lava ``act_shift``).
    * ``accumulate``: ``sum`` adds a step's whole synaptic input at once, then applies the
      overflow rule; ``per_source`` adds each presynaptic source's contribution in turn with the
      overflow rule after each (inputs by index, then recurrent sources: xylosim's
      ``deliver_spikes`` with ``safe_add``), which differs from the sum only when a state
      saturates on the way. It applies to the synaptic state of dense layers (a convolution,
      which Xylo does not have, adds one sum).
    * ``synapse_update``: ``decay_then_add`` is ``i[t] = decay(i[t-1]) + input``;
      ``add_then_decay`` is ``i[t] = decay(fit(i[t-1] + input))`` (xylosim delivers spikes
      before the neurons evolve).
    * ``membrane_update``: ``sum`` is ``v = fit(decay(v) + i + bias)``; ``increment`` is
      xylosim's ``dv = fit(decay(v) - v + i)``, ``dv = fit(dv + bias)``, ``v = fit(v + dv)``.

    How biases and thresholds are stored:

    * ``bias_exp``: a neuron's bias is ``mant << e`` with a ``bias_bits``-bit mantissa and a
      per-neuron exponent ``e`` in this range (Loihi's ``bias_mant`` / ``bias_exp``, Lava
      ``scale_bias``); without it the bias is a plain ``bias_bits``-bit code.
      :func:`neurosim.device.quantization.bias_codes` is the one rule (training and export).
    * ``threshold_shift``, ``threshold_compare``: the threshold is a mantissa ``m`` shifted left
      by ``threshold_shift`` bits (Loihi's ``vth << 6``, Lava ``scale_threshold``), and a neuron
      fires where ``v >= m << s`` (``greater_equal``) or ``v > m << s`` (``greater``, Lava
      ``spiking_activation``); neurosim's threshold code is ``(m << s) + [greater]``.
    """

    format: Literal["float", "fixed"] = "fixed"
    weight_bits: int | None = _bits()
    weight_scale: Literal["per_layer", "per_channel", "power_of_two"] = "per_layer"
    weight_shift: WeightShiftRange | None = None
    membrane_bits: int | None = _bits()
    synapse_bits: int | None = _bits()
    threshold_bits: int | None = _bits()
    bias_bits: int | None = _bits()
    bias_exp: WeightShiftRange | None = None
    threshold_shift: int = Field(default=0, ge=0, le=31)
    threshold_compare: Literal["greater_equal", "greater"] = "greater_equal"
    input_bits: int | None = _bits()
    decay: DecayFormat | None = None
    synapse_decay: DecayFormat | None = None
    rounding: Rounding = "nearest_even"
    overflow: Overflow = "saturate"
    synapse_overflow: Overflow | None = None
    activation_shift: int = Field(default=0, ge=0, le=31)
    accumulate: Literal["sum", "per_source"] = "sum"
    synapse_update: Literal["decay_then_add", "add_then_decay"] = "decay_then_add"
    membrane_update: Literal["sum", "increment"] = "sum"

    @model_validator(mode="before")
    @classmethod
    def _float_shorthand(cls, data: Any) -> Any:
        if data == "float":
            return {"format": "float"}
        if isinstance(data, str):
            raise ValueError(f"expected 'float' or a mapping of fixed-point formats, got '{data}'")
        return data

    @model_validator(mode="after")
    def _complete(self) -> NumericsSpec:
        if self.format == "float":
            extra = sorted(k for k in self.model_fields_set if k != "format")
            if extra:
                raise ValueError(f"a float chip takes no fixed-point fields, got {', '.join(extra)}")
            return self
        missing = [k for k in ("weight_bits", "membrane_bits", "decay") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a fixed-point chip needs {', '.join(missing)}")
        bias_bits = self.bias_bits or self.membrane_bits
        if self.bias_exp is not None and (self.bias_exp.min < 0 or bias_bits + self.bias_exp.max > 62):
            raise ValueError(f"bias_exp: {self.bias_exp.min}..{self.bias_exp.max} with {bias_bits}-bit mantissas: "
                             f"expected exponents >= 0 whose scaled biases fit 62 bits")
        threshold_bits = self.threshold_bits or self.membrane_bits
        if self.threshold_shift + 1 >= threshold_bits:
            raise ValueError(f"threshold_shift = {self.threshold_shift} leaves no mantissa in threshold_bits = "
                             f"{threshold_bits}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        return "float" if self.format == "float" else handler(self)

    @property
    def is_float(self) -> bool:
        """True for an ideal/analog chip that computes in floating point."""
        return self.format == "float"


# --------------------------------------------------------------------------------------------
# variation, noise, faults, limits, energy


class Sigma(_Spec):
    """A Gaussian spread: ``relative`` draws value * (1 + sigma * z) (seed 002's mismatch level
    xi); absolute draws value + sigma * z (seed 000's sigma = 0.001 for the threshold)."""

    sigma: float = Field(ge=0)
    relative: bool = False


class VariationSpec(_Spec):
    """Static, fixed-pattern variation: drawn once per chip instance from its seed."""

    v_threshold: Sigma | None = None
    v_reset: Sigma | None = None
    decay: Sigma | None = None
    synapse_decay: Sigma | None = None
    weight: Sigma | None = None


class NoiseSpec(_Spec):
    """Dynamic noise, drawn anew every time step: ``thermal`` on the input current (seed 002),
    cycle-to-cycle ``v_threshold`` noise, ``read`` noise on the weights."""

    thermal: Sigma | None = None
    v_threshold: Sigma | None = None
    read: Sigma | None = None


class FaultsSpec(_Spec):
    """Manufacturing faults per chip: fraction of neurons that never fire and of synapses whose
    weight is stuck (at zero, at the largest or smallest weight, or at one of the two at
    random)."""

    dead_neurons: float = Field(default=0.0, ge=0, le=1)
    stuck_weights: float = Field(default=0.0, ge=0, le=1)
    stuck_at: Literal["zero", "max", "min", "random"] = "zero"


class LimitsSpec(_Spec):
    """Hard resource limits of the chip; None means unlimited. Checked at export."""

    max_fan_in: int | None = Field(default=None, ge=1)
    max_fan_out: int | None = Field(default=None, ge=1)
    max_neurons: int | None = Field(default=None, ge=1)
    max_synapses: int | None = Field(default=None, ge=1)
    max_layers: int | None = Field(default=None, ge=1)
    max_timesteps: int | None = Field(default=None, ge=1)
    max_inputs: int | None = Field(default=None, ge=1)
    max_outputs: int | None = Field(default=None, ge=1)


class EnergySpec(_Spec):
    """Energy per operation, in picojoules, for estimates."""

    per_synaptic_op_pj: float | None = Field(default=None, ge=0)
    per_spike_pj: float | None = Field(default=None, ge=0)
    per_neuron_update_pj: float | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------------------------
# the profile


class DeviceProfile(_Spec):
    """A chip: neuron model, number formats, variation, noise, faults, limits and energy.

    Load one with :func:`neurosim.load_profile` (by built-in name or path); ``extends`` is
    resolved by the loader, so a ``DeviceProfile`` is always complete. ``references`` maps a key
    path (or a section) to where its figures come from.
    """

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    version: int = Field(default=1, ge=1)
    references: dict[str, str] = Field(default_factory=dict)
    neuron: NeuronSpec = Field(default_factory=NeuronSpec)
    numerics: NumericsSpec = Field(default_factory=lambda: NumericsSpec(format="float"))
    variation: VariationSpec = Field(default_factory=VariationSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    faults: FaultsSpec = Field(default_factory=FaultsSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    readout: ReadoutSpec = Field(default_factory=ReadoutSpec)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        num, neuron = self.numerics, self.neuron
        if neuron.model == "lif" and neuron.decay is None and neuron.tau is None:
            if num.is_float or num.decay is None or num.decay.kind != "shift":
                raise ValueError("neuron: a 'lif' neuron needs 'decay' or 'tau' (or a shift decay in numerics)")
        if not num.is_float:
            if neuron.tau is not None:
                _check_shift_matches("tau", math.exp(-1.0 / neuron.tau), num.decay, "decay")
            _check_shift_matches("decay", neuron.decay, num.decay)
            _check_shift_matches("synapse_decay", neuron.synapse_decay, num.synapse_decay)
            if (neuron.synapse_decay is None) != (num.synapse_decay is None):
                raise ValueError("neuron.synapse_decay and numerics.synapse_decay go together on a "
                                 "fixed-point chip: give both or neither")
            if neuron.synapse_decay is not None and num.synapse_bits is None:
                raise ValueError("numerics: a current-based neuron needs 'synapse_bits'")
            if self.variation.weight is not None and self.variation.weight.sigma > 0:
                raise ValueError("variation.weight: a fixed-point chip stores exact integer weights; "
                                 "model weight errors with faults.stuck_weights, or use float numerics")
        unknown = sorted(k for k in self.references if not _is_key_path(self, k))
        if unknown:
            raise ValueError(f"references: no such key {', '.join(unknown)}")
        return self

    @property
    def beta(self) -> float:
        """The nominal membrane decay factor beta (1 for IF)."""
        n = self.neuron
        if n.model == "if":
            return 1.0
        if n.decay is not None:
            return n.decay
        if n.tau is not None:
            return math.exp(-1.0 / n.tau)
        return self.numerics.decay.shift_beta  # validated to exist

    @property
    def is_current_based(self) -> bool:
        """True when neurons carry a synaptic current state (docs/design.md §2, optional synapse)."""
        return self.neuron.synapse_decay is not None

    def scaled(self, factor: float) -> DeviceProfile:
        """This profile with every sigma (variation and noise) multiplied by ``factor`` >= 0."""
        if factor < 0 or not math.isfinite(factor):
            raise ValueError(f"noise scale must be a finite number >= 0, got {factor}")
        data = self.to_dict()
        for section in ("variation", "noise"):
            for spec in data.get(section, {}).values():
                if isinstance(spec, dict) and "sigma" in spec:
                    spec["sigma"] = spec["sigma"] * factor
        return DeviceProfile.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved profile as plain YAML-ready data (None fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _check_shift_matches(key: str, beta: float | None, fmt: DecayFormat | None,
                         numerics_key: str | None = None) -> None:
    """A float decay given beside a shift decay must be the one the shift computes."""
    if beta is None or fmt is None or fmt.shift_beta is None:
        return
    if abs(beta - fmt.shift_beta) > 1e-9:
        what = f"neuron.tau (beta = exp(-1/tau) = {beta:g})" if key == "tau" else f"neuron.{key} {beta:g}"
        raise ValueError(f"{what} is not what numerics.{numerics_key or key} shift {fmt.shift} "
                         f"computes (1 - 2^-{fmt.shift} = {fmt.shift_beta:g})")


def _is_key_path(profile: DeviceProfile, path: str) -> bool:
    node: Any = profile
    for part in path.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        else:
            return False
    return True
