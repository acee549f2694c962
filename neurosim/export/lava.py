"""A Lava bit-accurate Loihi network (:mod:`neurosim.engine.lava_reference`) as a neurosim
deployment on the ``loihi-like`` profile, so that the integer engine can run it.

The mapping, per (Dense, LIF) pair (the profile's ``references`` give the sources):

* weights: Lava's effective weights ``W`` (clipped and truncated as Lava does). Mixed-sign 8-bit
  weights are even (truncate_weights drops their LSB): codes ``W / 2`` with
  ``weight_shift = weight_exp + 1``, since ``(2 S) << e == S << (e + 1)`` and
  ``(2 S) >> k == S >> (k - 1)`` (floor). Weights with an odd value (excitatory or inhibitory
  sign mode) are codes ``W`` with ``weight_shift = weight_exp``. What does not fit the profile's
  ``weight_bits`` and ``weight_shift`` range is refused (:class:`LavaMappingError`).
* threshold ``vth << 6``: loihi-like stores the mantissa ``vth`` (``threshold_shift: 6``) and fires
  where ``v > vth << 6`` (``threshold_compare: greater``); the engine's code is ``(vth << 6) + 1``.
* bias codes ``bias_mant << bias_exp``: loihi-like's ``bias_bits: 13`` and ``bias_exp: 0..7`` hold
  every Lava bias (:func:`neurosim.device.quantization.split_bias` is the check).
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

The other way, :func:`lava_network_for` states a deployment compiled for loihi-like (a trained
model) as the Lava network that runs it: per spiking layer a Dense (weights ``2 w``, sign mode
``mixed``, ``weight_exp = weight_shift - 1``; the first takes the input codes as graded spikes,
Lava ``num_message_bits > 0``) and a LIF (``du = 4095 - round(alpha 4096)``,
``dv = 4096 - round(beta 4096)``, ``vth`` the threshold mantissa, ``bias_mant`` / ``bias_exp`` of
:func:`~neurosim.device.quantization.split_bias`). The readout (an integrator) has no Lava process:
the spiking layers are what compares. :func:`compare_with_lava` runs both on the same input codes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neurosim.device import load_profile
from neurosim.device import fixedpoint as fp
from neurosim.device import quantization as quant
from neurosim.device.profile import DeviceProfile
from neurosim.engine.lava_reference import (ACT_SHIFT, DECAY_SHIFT, DECAY_UNITY, DS_OFFSET, VTH_SHIFT, LavaDense,
                                            LavaLIF, LavaNetwork, run_lava)
from neurosim.errors import ExportError
from neurosim.export.deployment import Deployment

LAVA_BIAS_BITS = 20  # signed: bias_mant (13 bits, -4096..4095) << bias_exp (0..7)
LAVA_INPUT_BITS = 16  # graded input spikes of the hand-made Lava networks (up to 2^15 - 1)


class LavaMappingError(ExportError, ValueError):
    """A Lava network that the neurosim profile cannot express (a weight, exponent or bias out
    of its formats); the message names the layer and the value."""


def lava_profile(base: str | DeviceProfile = "loihi-like") -> DeviceProfile:
    """``base`` (loihi-like by default) made to hold every Lava network of the tests: Lava's
    scaled bias ``bias_mant << bias_exp`` (kept where ``bias_exp`` holds it, else ``bias_bits``
    widened to 20) and graded input spikes of up to ``LAVA_INPUT_BITS`` signed bits (loihi-like's
    own 8-bit codes are what a trained model takes); named ``<base>+lava`` when changed."""
    profile = load_profile(base)
    num = profile.numerics
    data = profile.to_dict()
    refs = data.setdefault("references", {})
    changed = False
    if (num.bias_bits or num.membrane_bits) < LAVA_BIAS_BITS and not (
            num.bias_exp is not None and quant.bias_range(num)[1] >= 4095 << 7):
        data["numerics"]["bias_bits"] = LAVA_BIAS_BITS
        data["numerics"].pop("bias_exp", None)
        refs.pop("numerics.bias_exp", None)
        refs["numerics.bias_bits"] = ("Lava src/lava/proc/lif/models.py scale_bias: bias_mant (signed 13 bits) "
                                      "<< bias_exp (0..7) needs 20 signed bits.")
        changed = True
    if (num.input_bits or quant.DEFAULT_INPUT_BITS) < LAVA_INPUT_BITS:
        data["numerics"]["input_bits"] = LAVA_INPUT_BITS
        refs["numerics.input_bits"] = ("Lava dense/models.py: graded spikes (num_message_bits > 0) into a Dense "
                                       "whose a_out has precision 16.")
        changed = True
    if not changed:
        return profile
    data["name"] = f"{profile.name}+lava"
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
        if quant.split_bias(torch.tensor(bias, dtype=torch.int64), num) is None:
            raise LavaMappingError(f"{where}: scaled bias {min(bias)}..{max(bias)} is not a bias of "
                                   f"{prof.name} (bias_bits {num.bias_bits}, bias_exp {quant.bias_exponents(num)}; "
                                   "use lava_profile())")
        if num.threshold_shift != VTH_SHIFT or num.threshold_compare != "greater":
            raise LavaMappingError(f"{where}: {prof.name} does not compare v > vth << {VTH_SHIFT} (threshold_shift "
                                   f"{num.threshold_shift}, threshold_compare {num.threshold_compare})")
        specs.append({
            "weight": codes, "weight_shift": shift, "bias": bias, "unit": 1.0,
            "threshold": float(lif.vth << VTH_SHIFT), "v_reset": 0,
            "beta": (DECAY_UNITY - lif.dv) / DECAY_UNITY,
            "synapse_decay": synapse_decay_for(lif.du),
        })
    n_last = network.layers[-1][0].shape[0]
    specs.append({"weight": [[1] * n_last], "readout": True, "unit": 1.0})
    n_in = network.layers[0][0].shape[1]
    return Deployment.from_integers(prof, specs, timesteps, (n_in,),
                                    metadata={"source": "lava bit-accurate network (neurosim.export.lava)"})


def lava_network_for(deployment: Deployment) -> LavaNetwork:
    """The Lava network that runs ``deployment``'s spiking layers (a deployment on loihi-like, as
    :func:`neurosim.export.compile_model` makes it), by the mapping of this module's docstring;
    :class:`LavaMappingError` naming the layer for what Lava's LIF and Dense cannot express."""
    num = deployment.profile.numerics
    if num.is_float or num.activation_shift != ACT_SHIFT or num.threshold_shift != VTH_SHIFT \
            or num.threshold_compare != "greater" or num.decay is None or num.decay.kind != "multiply" \
            or num.decay.bits != DECAY_SHIFT or num.membrane_bits != 24 or (num.synapse_bits or 0) != 24:
        raise LavaMappingError(f"profile {deployment.profile.name}: not Loihi's numerics (activation_shift 6, "
                               "threshold_shift 6 with v > vth, 12-bit multiply decays, 24-bit u and v)")
    layers = []
    for layer in deployment.spiking_layers():
        where = layer.name
        if layer.kind != "linear" or layer.recurrent is not None or layer.weight2 is not None:
            raise LavaMappingError(f"{where}: only dense feed-forward layers map to Lava's Dense")
        if layer.synapse_decay is None or layer.reset != "hard" or layer.refractory or layer.delay != 1 \
                or layer.max_spikes != 1 or layer.pool:
            raise LavaMappingError(f"{where}: Lava's LIF is current-based, resets v to 0, has no refractory "
                                   "period and one step of Dense delay")
        if layer.unit.numel() != 1:
            raise LavaMappingError(f"{where}: per-neuron state units; Lava's LIF has one threshold per process")
        dtype = quant.code_dtype(num)
        unit = layer.unit.to(dtype).reshape(())
        theta = int(quant.threshold_codes(torch.tensor(layer.threshold, dtype=dtype), unit, num))
        if int(quant.reset_codes(torch.tensor(layer.v_reset, dtype=dtype), unit, num)) != 0 or \
                round(layer.v_init / float(unit)) != 0:
            raise LavaMappingError(f"{where}: v_reset and v_init must be 0 (Lava's reset_voltage)")
        dv = DECAY_UNITY - int(quant.decay_factor(layer.beta, num.decay))
        du = DECAY_UNITY - DS_OFFSET - int(quant.decay_factor(layer.synapse_decay, num.synapse_decay))
        if not (0 <= du < DECAY_UNITY and 0 <= dv < DECAY_UNITY):
            raise LavaMappingError(f"{where}: decays need du = {du}, dv = {dv}, outside Lava's 0..4095")
        n = int(layer.weight.shape[0])
        mant, exp = [0] * n, [0] * n
        if layer.bias is not None:
            split = quant.split_bias(layer.bias, num)
            if split is None:
                raise LavaMappingError(f"{where}: bias codes are not bias_mant << bias_exp")
            mant, exp = split[0].tolist(), split[1].tolist()
        weights = (2 * layer.weight.to(torch.int64)).tolist()   # mixed: Lava keeps even weights as they are
        dense = LavaDense(weights, layer.weight_shift - 1, "mixed")
        if not -8 <= dense.weight_exp <= 7:
            raise LavaMappingError(f"{where}: weight_shift {layer.weight_shift} needs weight_exp {dense.weight_exp}, "
                                   "outside Loihi's -8..7")
        layers.append((dense, LavaLIF(du, dv, (theta - 1) >> VTH_SHIFT, mant, exp)))
    return LavaNetwork(layers)


def compare_with_lava(deployment: Deployment, codes: torch.Tensor) -> list[str]:
    """Run ``deployment`` in the integer engine and its :func:`lava_network_for` in the Lava
    reference on the same input codes ``[batch, T, *input_shape]``; returns one line per
    (sample, layer, quantity) that differs (empty: bit for bit the same spikes, ``u`` and ``v``
    of every spiking layer at every step)."""
    from neurosim.engine import IntegerEngine

    network = lava_network_for(deployment)
    result = IntegerEngine(deployment).run_codes(codes, record=True, record_states=True)
    flat = codes.reshape(codes.shape[0], codes.shape[1], -1).to(torch.int64).numpy()
    differences = []
    for b in range(flat.shape[0]):
        want = run_lava(network, flat[b].tolist())
        for k, layer in enumerate(deployment.spiking_layers()):
            got = {"spikes": result.spikes[layer.name][:, 0, b], "u": result.states[layer.name]["i"][:, 0, b],
                   "v": result.states[layer.name]["v"][:, 0, b]}
            for quantity, values in got.items():
                values = values.reshape(values.shape[0], -1).numpy().astype(np.int64)
                if not np.array_equal(values, want[k][quantity]):
                    t, j = np.argwhere(values != want[k][quantity])[0]
                    differences.append(f"sample {b}, {layer.name}, {quantity}, step {t}, neuron {j}: engine "
                                       f"{values[t, j]}, Lava {want[k][quantity][t, j]}")
    return differences


def compare_inputs_with_lava(deployment: Deployment, x: torch.Tensor) -> list[str]:
    """:func:`compare_with_lava` on inputs ``x`` in [0, 1] (``[batch, *input_shape]``, repeated
    over the time steps, or frames ``[batch, T, *input_shape]``), encoded as the engine encodes
    them (the first layer's graded input codes)."""
    from neurosim.engine import IntegerEngine

    codes = IntegerEngine(deployment).encode(x)
    if codes.dim() == 1 + len(deployment.input_shape):
        codes = codes.unsqueeze(1).expand(-1, deployment.timesteps, *codes.shape[1:])
    return compare_with_lava(deployment, codes)


__all__ = ["LAVA_BIAS_BITS", "LAVA_INPUT_BITS", "LavaMappingError", "compare_inputs_with_lava", "compare_with_lava", "deployment_for_lava", "lava_network_for",
           "lava_profile", "synapse_decay_for"]
