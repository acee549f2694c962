"""A Lava bit-accurate Loihi network (:mod:`neurosim.engine.lava_reference`) as a neurosim
deployment on the ``loihi-like`` profile, so that the integer engine can run it.

The mapping, per (Dense, LIF) pair (the profile's ``references`` give the sources):

* weights: Lava's effective weights ``W`` (clipped and truncated as Lava does). Mixed-sign 8-bit
  weights are even (truncate_weights drops their LSB): codes ``W / 2`` with
  ``weight_shift = weight_exp + 1``, since ``(2 S) << e == S << (e + 1)`` and
  ``(2 S) >> k == S >> (k - 1)`` (floor). Weights with an odd value (excitatory or inhibitory
  sign mode) are codes ``W`` with ``weight_shift = weight_exp``. What does not fit the profile's
  ``weight_bits`` and ``weight_shift`` range is refused (:class:`LavaMappingError`).
* threshold code ``(vth << 6) + 1``: the engine fires on ``v >= theta``, Lava on ``v > vth << 6``.
* bias codes ``bias_mant << bias_exp`` (``>> -bias_exp``, floor, when negative): up to
  ``4095 << 7``, 20 signed bits, so :func:`lava_profile` widens loihi-like's 13-bit
  ``bias_bits`` (which holds the mantissa only) to 20.
* ``beta = (4096 - dv) / 4096`` and ``synapse_decay = (4096 - (du + 1)) / 4096``: the engine's
  multipliers ``round(beta * 4096)`` give back exactly ``4096 - dv`` and ``4095 - du``
  (``du = 4095``: :func:`synapse_decay_for`).
* ``unit = 1``, the profile's ``synapse_delay = 1`` (Lava's one-step Dense buffer),
  ``activation_shift = 6`` and the wrap/clip rules of ``u`` and ``v``.
* an integrating readout after the last LIF, weights 1 (Deployment needs one; Lava has none,
  so only the spiking layers are comparable).

Where the two agree: wherever Lava's single correction of ``u`` by ``2^24`` equals the engine's
reduction modulo ``2^24`` (``wrap_high``), i.e. while ``decay(u) + (a_in << 6)`` stays inside
``(-3 * 2^23, 3 * 2^23]``. Since ``decay(u)`` lies in ``(-2^23, 2^23]``, that holds for every
``|a_in| <= 2^18`` (binary spikes into at most 8 synapses at any weight and exponent; Loihi's own
``a_in`` has 16 bits). Beyond, Lava's Python model leaves ``u`` outside its 24 bits (``2^25``
becomes ``2^24``) where the engine wraps (to ``0``).

The engine takes the network's input as integer codes: ``IntegerEngine(dep).run_codes(codes)``
with ``codes`` [batch, T, n_in] the Lava input (spikes 0/1 or graded integers).
"""

from __future__ import annotations

from neurosim.device import load_profile
from neurosim.device import fixedpoint as fp
from neurosim.device.profile import DeviceProfile
from neurosim.engine.lava_reference import DECAY_UNITY, DS_OFFSET, VTH_SHIFT, LavaNetwork
from neurosim.errors import ExportError
from neurosim.export.deployment import Deployment

LAVA_BIAS_BITS = 20  # signed: bias_mant (13 bits, -4096..4095) << bias_exp (0..7)


class LavaMappingError(ExportError, ValueError):
    """A Lava network that the neurosim profile cannot express (a weight, exponent or bias out
    of its formats); the message names the layer and the value."""


def lava_profile(base: str | DeviceProfile = "loihi-like") -> DeviceProfile:
    """``base`` (loihi-like by default) with ``bias_bits`` widened to 20, so that Lava's scaled
    bias ``bias_mant << bias_exp`` fits; named ``<base>+lava-bias``."""
    profile = load_profile(base)
    num = profile.numerics
    if (num.bias_bits or num.membrane_bits) >= LAVA_BIAS_BITS:
        return profile
    data = profile.to_dict()
    data["name"] = f"{profile.name}+lava-bias"
    data["numerics"]["bias_bits"] = LAVA_BIAS_BITS
    data.setdefault("references", {})["numerics.bias_bits"] = (
        "Lava src/lava/proc/lif/models.py scale_bias: bias_mant (signed 13 bits) << bias_exp (0..7) "
        "needs 20 signed bits.")
    return DeviceProfile.model_validate(data)


def synapse_decay_for(du: int) -> float:
    """``(4096 - (du + 1)) / 4096``, whose 12-bit multiplier is ``4095 - du``. For ``du = 4095``
    (multiplier 0: u keeps nothing of the step before) it is ``2^-14`` instead of 0, because a
    deployment's synapse_decay must lie in (0, 1] (export check_structure); ``round(2^-14 * 4096)``
    is the same multiplier 0."""
    factor = DECAY_UNITY - (du + DS_OFFSET)
    return factor / DECAY_UNITY if factor > 0 else 2.0 ** -14


def deployment_for_lava(network: LavaNetwork, timesteps: int,
                        profile: str | DeviceProfile | None = None) -> Deployment:
    """The Lava ``network`` as a deployment on ``profile`` (default :func:`lava_profile` of
    loihi-like) by the mapping of this module's docstring; :class:`LavaMappingError` (a
    ValueError and an ExportError) for what cannot be mapped."""
    prof = lava_profile() if profile is None else load_profile(profile)
    num = prof.numerics
    w_lo, w_hi = fp.int_range(num.weight_bits)
    s_lo, s_hi = (num.weight_shift.min, num.weight_shift.max) if num.weight_shift else (0, 0)
    b_lo, b_hi = fp.int_range(num.bias_bits or num.membrane_bits)
    if not network.layers:
        raise LavaMappingError("Lava network: no layers")
    specs = []
    for k, (dense, lif) in enumerate(network.layers):
        where = f"Lava layer {k}"
        weights = dense.effective_weights()
        flat = [w for row in weights for w in row]
        if all(w % 2 == 0 for w in flat):
            codes, shift = [[w // 2 for w in row] for row in weights], dense.weight_exp + 1
        else:
            codes, shift = weights, dense.weight_exp
        if min(w for row in codes for w in row) < w_lo or max(w for row in codes for w in row) > w_hi:
            raise LavaMappingError(f"{where}: effective weights {min(flat)}..{max(flat)} "
                                   f"(sign mode {dense.resolved_sign_mode}) need codes outside "
                                   f"{num.weight_bits}-bit weights [{w_lo}, {w_hi}]")
        if not s_lo <= shift <= s_hi:
            raise LavaMappingError(f"{where}: weight_exp {dense.weight_exp} needs weight_shift {shift}, "
                                   f"outside {prof.name}'s [{s_lo}, {s_hi}]")
        n = dense.shape[0]
        if not (0 <= lif.du < DECAY_UNITY and 0 <= lif.dv < DECAY_UNITY):
            raise LavaMappingError(f"{where}: du = {lif.du}, dv = {lif.dv}: Lava's are unsigned 12-bit (0..4095)")
        if lif.vth < 0:
            raise LavaMappingError(f"{where}: vth = {lif.vth} is negative (unsigned 17-bit in Lava)")
        bias = lif.effective_bias(n)
        if min(bias) < b_lo or max(bias) > b_hi:
            raise LavaMappingError(f"{where}: scaled bias {min(bias)}..{max(bias)} outside "
                                   f"{prof.name}'s bias codes [{b_lo}, {b_hi}] (use lava_profile())")
        specs.append({
            "weight": codes, "weight_shift": shift, "bias": bias, "unit": 1.0,
            "threshold": (lif.vth << VTH_SHIFT) + 1, "v_reset": 0,
            "beta": (DECAY_UNITY - lif.dv) / DECAY_UNITY,
            "synapse_decay": synapse_decay_for(lif.du),
        })
    n_last = network.layers[-1][0].shape[0]
    specs.append({"weight": [[1] * n_last], "readout": True, "unit": 1.0})
    n_in = network.layers[0][0].shape[1]
    return Deployment.from_integers(prof, specs, timesteps, (n_in,),
                                    metadata={"source": "lava bit-accurate network (neurosim.export.lava)"})


__all__ = ["LAVA_BIAS_BITS", "LavaMappingError", "deployment_for_lava", "lava_profile", "synapse_decay_for"]
