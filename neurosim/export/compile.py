"""Compile a trained model to a chip profile: the train -> convert step (docs/design.md §4).

:func:`compile_model` folds batch norm (and tdBN's alpha * theta scale, and TrSG's output gain)
into each synapse, quantizes weights, biases, thresholds and resets with the profile's rules —
the very functions the fake-quant training forward uses (:mod:`neurosim.device.quantization`) —
and checks every ``limits`` entry and every value against the formats. Any violation raises
:class:`~neurosim.errors.ExportError` naming the layer, the limit and the value.

A model whose neuron model differs from the profile's (reset kind, current-based synapse, a
decay the chip cannot realise, IF vs LIF) is refused with the differences listed, unless
``adapt=True``: then the model's neurons are set to the profile's, and the deployment's
``metadata["adapted"]`` says what changed (the compiled network is what the chip runs; accuracy
may drop — evaluate it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from neurosim.device import fixedpoint as fp
from neurosim.device import load_profile
from neurosim.device import quantization as quant
from neurosim.device.profile import DeviceProfile
from neurosim.errors import ExportError
from neurosim.export.deployment import NEURON_VALUES, Deployment, LayerDeployment
from neurosim.nn.layers import SpikingNetwork, fold_norm
from neurosim.nn.neuron import LIFNode
from neurosim.nn.surrogate import TrSG

DECAY_TOLERANCE = 1e-6


def _decay_tolerance(fmt) -> float:
    """A multiply decay realises any beta to half a step of its b bits; a shift decay only
    1 - 2^-k, which must match."""
    return DECAY_TOLERANCE if fmt.kind == "shift" else 2.0 ** -(fmt.bits + 1) + DECAY_TOLERANCE


def neuron_differences(node: LIFNode, profile: DeviceProfile) -> list[str]:
    """How ``node``'s neuron model differs from what ``profile``'s chip implements."""
    diffs = []
    p = profile.neuron
    if node.reset != p.reset:
        diffs.append(f"reset is {node.reset}, the chip resets {p.reset}")
    model_synapse = node.synapse_decay is not None
    if model_synapse != profile.is_current_based:
        diffs.append("the model has a current-based synapse, the chip does not" if model_synapse
                     else "the chip's neurons are current-based, the model's are not")
    beta = float(node.beta)
    fmt = profile.numerics.decay
    realised = float(quant.realised_decay(beta, fmt))
    if abs(realised - beta) > _decay_tolerance(fmt):
        form = "shift v - (v >> k)" if fmt.kind == "shift" else f"multiply by d / 2^{fmt.bits}"
        diffs.append(f"decay beta = {beta:.6g} is not exact on the chip ({form} gives {realised:.6g})")
    if node.refractory != p.refractory:
        diffs.append(f"refractory is {node.refractory} steps, the chip's is {p.refractory}")
    return diffs


def readout_differences(readout, profile: DeviceProfile) -> list[str]:
    """How a model's readout differs from a chip whose output neurons are ``lif`` (a neuron of
    the chip's model: its decay must be one the chip realises, current-based if the chip is)."""
    if profile.readout.neuron != "lif":
        return []
    diffs = []
    beta, fmt = float(readout.beta), profile.numerics.decay
    realised = float(quant.realised_decay(beta, fmt))
    if beta >= 1 or abs(realised - beta) > _decay_tolerance(fmt):
        diffs.append(f"decay beta = {beta:.6g} is not one the chip's output neurons have "
                     f"({'an integrating readout' if beta >= 1 else f'the chip gives {realised:.6g}'})")
    if (readout.synapse_decay is not None) != profile.is_current_based:
        diffs.append("the chip's output neurons are current-based, the model's readout is not"
                     if profile.is_current_based else "the model's readout is current-based, the chip's is not")
    return diffs


def _adapt_readout(readout, profile: DeviceProfile) -> list[str]:
    """Set a readout to the chip's ``lif`` output neuron model (the chip's decays); return what changed."""
    changes = []
    beta, fmt = float(readout.beta), profile.numerics.decay
    if beta >= 1 or abs(float(quant.realised_decay(beta, fmt)) - beta) > _decay_tolerance(fmt):
        new = float(quant.realised_decay(profile.beta, fmt))
        changes.append(f"beta {beta:.6g} -> {new:.6g}")
        with torch.no_grad():
            readout.beta.fill_(new)
    if (readout.synapse_decay is not None) != profile.is_current_based:
        changes.append(f"synapse_decay {readout.synapse_decay} -> {profile.neuron.synapse_decay}")
        readout.synapse_decay = profile.neuron.synapse_decay
    return changes


def _adapt(node: LIFNode, profile: DeviceProfile) -> list[str]:
    """Set ``node`` to the chip's neuron model; return what changed."""
    changes = []
    p, fmt = profile.neuron, profile.numerics.decay
    if node.reset != p.reset:
        changes.append(f"reset {node.reset} -> {p.reset}")
        node.reset = p.reset
        node.reset_grad = "clip" if p.reset == "hard" else "full"
    beta = float(node.beta)
    realised = float(quant.realised_decay(beta, fmt))
    if abs(realised - beta) > _decay_tolerance(fmt):
        changes.append(f"beta {beta:.6g} -> {realised:.6g}")
        with torch.no_grad():
            node.beta.fill_(realised)
    if (node.synapse_decay is not None) != profile.is_current_based:
        new = p.synapse_decay
        changes.append(f"synapse_decay {None if node.synapse_decay is None else float(node.synapse_decay)} -> {new}")
        node.synapse_decay = None if new is None else torch.tensor(float(new))
    if node.refractory != p.refractory:
        changes.append(f"refractory {node.refractory} -> {p.refractory}")
        node.refractory = p.refractory
    return changes


@torch.no_grad()
def compile_model(model: SpikingNetwork, profile: DeviceProfile | str, adapt: bool = False,
                  metadata: dict[str, Any] | None = None) -> Deployment:
    """The :class:`Deployment` of ``model`` on ``profile``'s chip (model put in eval mode)."""
    profile = load_profile(profile)
    if profile.numerics.is_float:
        raise ExportError(f"profile {profile.name}: computes in float (numerics: float); export needs a "
                          "fixed-point chip profile")
    model.eval()
    num = profile.numerics
    adapted: list[str] = []
    for block in model.blocks:
        diffs = neuron_differences(block.node, profile)
        if diffs and not adapt:
            raise ExportError(f"{block.name}: neuron model differs from profile {profile.name}: "
                              + "; ".join(diffs) + " (use --adapt to convert it)")
        if diffs:
            adapted += [f"{block.name}: {change}" for change in _adapt(block.node, profile)]
        if block.pool is not None and not isinstance(block.pool, nn.MaxPool2d):
            raise ExportError(f"{block.name}: only max pooling of spikes exists on a chip")
    diffs = readout_differences(model.readout, profile)
    if diffs and not adapt:
        raise ExportError(f"readout: differs from profile {profile.name}'s output neurons: " + "; ".join(diffs)
                          + " (use --adapt to convert it)")
    if diffs:
        adapted += [f"readout: {change}" for change in _adapt_readout(model.readout, profile)]
    layers: list[LayerDeployment] = []
    shape = tuple(model.input_shape)
    gain: torch.Tensor | None = None
    for i, block in enumerate(model.blocks):
        if isinstance(block.synapse, nn.Linear):
            shape = (int(math.prod(shape)),)
        weight, bias = (fold_norm(block.synapse, block.norm) if block.norm is not None
                        else (block.synapse.weight, block.synapse.bias))
        if gain is not None:
            weight = weight * gain
        node = block.node
        weight2 = None
        if block.synapse2 is not None:
            weight2 = block.synapse2.weight if gain is None else block.synapse2.weight * gain
        layer = _quantize_layer(block.name, block.synapse, weight, bias, node.threshold, num, i == 0, shape, weight2)
        for second, linear in ((False, block.recurrent), (True, block.recurrent2)):
            if linear is None:
                continue
            rec = linear.weight if node.output_gain is None else linear.weight * node.output_gain
            if not bool(torch.isfinite(rec).all()):
                raise ExportError(f"{block.name}: recurrent{'2' if second else ''} weight holds NaN or inf")
            if not second:  # W_rec2 takes the first recurrent weights' shift, as in training
                layer.recurrent_shift = quant.recurrent_shift(rec, layer.unit, num)
            codes = fp.quantize(rec, quant.recurrent_step(layer.unit, layer.recurrent_shift, num), num.weight_bits)
            if second:
                layer.recurrent2 = codes
            else:
                layer.recurrent = codes
        layer.max_spikes, layer.delay = profile.neuron.max_spikes, profile.neuron.synapse_delay
        node_v_init = float(node.mp_init) if node.v_init == "mp_init" else 0.0
        layer.threshold, layer.v_reset, layer.beta = float(node.threshold), float(node.v_reset), float(node.beta)
        layer.synapse_decay = None if node.synapse_decay is None else float(node.synapse_decay)
        layer.synapse_decay2 = None if node.synapse_decay2 is None else float(node.synapse_decay2)
        layer.refractory, layer.reset, layer.v_init = node.refractory, node.reset, node_v_init
        layer.pool = int(block.pool.kernel_size) if block.pool is not None else 0
        layers.append(layer)
        shape = layer.output_shape
        if layer.pool:
            shape = (shape[0], shape[1] // layer.pool, shape[2] // layer.pool)
        gain = node.threshold if isinstance(node.surrogate, TrSG) else None
    shape = (int(math.prod(shape)),)
    readout = model.readout
    weight = readout.synapse.weight if gain is None else readout.synapse.weight * gain
    lif = profile.readout.neuron == "lif"
    last = _quantize_layer("readout", readout.synapse, weight, readout.synapse.bias,
                           torch.tensor(readout.threshold) if lif else None, num, not model.blocks, shape)
    last.readout, last.beta = True, float(readout.beta)
    last.delay, last.readout_neuron = profile.readout.delay, profile.readout.neuron
    if lif:  # a neuron of the chip's model: its threshold, the chip's synapse, soft reset
        last.threshold, last.reset, last.max_spikes = readout.threshold, "soft", profile.readout.max_spikes
        last.synapse_decay = readout.synapse_decay
    layers.append(last)
    info = dict(metadata or {})
    if adapted:
        info["adapted"] = adapted
    deployment = Deployment(profile, layers, model.timesteps, tuple(model.input_shape),
                            int(readout.synapse.out_features), info)
    check_deployment(deployment)
    return deployment


def _quantize_layer(name: str, synapse: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None,
                    threshold: torch.Tensor | None, num, first: bool, shape: tuple[int, ...],
                    weight2: torch.Tensor | None = None) -> LayerDeployment:
    """A layer's codes; ``weight2`` (a second synaptic state's) is quantized on the weight step of
    ``weight``, as :meth:`neurosim.train.noise.ChipContext.synapse2` does in training."""
    for what, tensor in (("weight", weight), ("bias", bias), ("threshold", threshold), ("weight2", weight2)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise ExportError(f"{name}: {what} holds NaN or inf")
    in_step = quant.input_step(num) if first else 1.0
    w_step = quant.weight_step(weight, num, threshold, in_step, bias)
    codes = fp.quantize(weight, w_step, num.weight_bits)
    unit = quant.state_unit(w_step, in_step, weight.dim(), num.activation_shift).to(torch.float32)
    bias_codes = None
    if bias is not None:  # the rule and the check of the training forward (noise.ChipContext._bias)
        scaled = bias / (unit.reshape(-1) if unit.dim() else unit)
        codes_of_bias, _, over = quant.bias_codes(scaled, num)
        refused = quant.bias_overflow(name, scaled, over, num)
        if refused is not None:
            raise ExportError(refused)
        bias_codes = codes_of_bias.to(torch.int64)
    if isinstance(synapse, nn.Conv2d):
        kind, stride, padding = "conv2d", int(synapse.stride[0]), int(synapse.padding[0])
        k = synapse.kernel_size[0]
        out_shape = (synapse.out_channels, (shape[1] + 2 * padding - k) // stride + 1,
                     (shape[2] + 2 * padding - k) // stride + 1)
    else:
        kind, stride, padding, out_shape = "linear", 1, 0, (synapse.out_features,)
    codes2 = None if weight2 is None else fp.quantize(weight2, w_step, num.weight_bits)
    return LayerDeployment(name=name, kind=kind, weight=codes, bias=bias_codes, unit=unit, input_shape=shape,
                           output_shape=out_shape, stride=stride, padding=padding, input_step=in_step,
                           weight2=codes2)


def check_structure(deployment: Deployment) -> None:
    """The layer graph is one the engine can run: positive time steps and sizes, each layer's
    weight of its kind's rank, its input the previous layer's (pooled) output, known reset and
    geometry, a state unit per layer or per output channel, and a linear readout with one
    output per class. (A compiled model always passes; a hand-edited artifact may not.)"""
    if deployment.timesteps < 1:
        raise ExportError(f"model: timesteps = {deployment.timesteps}, expected at least 1")
    if not deployment.input_shape or min(deployment.input_shape) < 1:
        raise ExportError(f"input: shape {list(deployment.input_shape)} is not a list of positive sizes")
    shape = tuple(deployment.input_shape)
    for layer in deployment.layers:
        where, weight = layer.name, layer.weight
        if layer.kind not in ("linear", "conv2d"):
            raise ExportError(f"{where}: unknown layer kind {layer.kind!r}")
        if weight.dim() != (2 if layer.kind == "linear" else 4) or weight.numel() == 0:
            raise ExportError(f"{where}: a {layer.kind} weight of shape {list(weight.shape)}")
        if layer.stride < 1 or layer.padding < 0 or layer.pool < 0 or layer.refractory < 0:
            raise ExportError(f"{where}: stride {layer.stride}, padding {layer.padding}, pool {layer.pool}, "
                              f"refractory {layer.refractory}: expected stride >= 1 and the others >= 0")
        if layer.reset not in ("hard", "soft"):
            raise ExportError(f"{where}: reset {layer.reset!r}, expected 'hard' or 'soft'")
        if not (math.isfinite(layer.input_step) and layer.input_step > 0):
            raise ExportError(f"{where}: input_step = {layer.input_step}, expected a positive number")
        _check_neuron_values(layer)
        if layer.max_spikes < 1 or (layer.max_spikes > 1 and layer.reset != "soft" and not layer.readout):
            raise ExportError(f"{where}: max_spikes = {layer.max_spikes}: expected 1, or more with a soft reset")
        if layer.delay < 0:
            raise ExportError(f"{where}: delay = {layer.delay}, expected >= 0")
        if layer.readout_neuron not in ("integrator", "lif"):
            raise ExportError(f"{where}: readout_neuron {layer.readout_neuron!r}, expected 'integrator' or 'lif'")
        if layer.weight2 is not None or layer.recurrent2 is not None:
            if layer.synapse_decay is None or layer.synapse_decay2 is None:
                raise ExportError(f"{where}: a second synaptic state needs synapse_decay and synapse_decay2")
            if layer.weight2 is not None and tuple(layer.weight2.shape) != tuple(weight.shape):
                raise ExportError(f"{where}: weight2 of shape {list(layer.weight2.shape)}, the layer's weight is "
                                  f"{list(weight.shape)}")
            if layer.recurrent2 is not None and (layer.recurrent is None
                                                 or layer.recurrent2.shape != layer.recurrent.shape):
                raise ExportError(f"{where}: recurrent2 needs recurrent weights of the same shape")
        if layer.recurrent is not None:
            n_out = int(weight.shape[0])
            if layer.kind != "linear" or layer.readout or tuple(layer.recurrent.shape) != (n_out, n_out):
                raise ExportError(f"{where}: recurrent weights of shape {list(layer.recurrent.shape)}: only a "
                                  f"dense hidden layer has them, as [{n_out}, {n_out}]")
        if layer.kind == "linear":
            if int(math.prod(shape)) != int(weight.shape[1]) or int(math.prod(layer.input_shape)) != int(weight.shape[1]):
                raise ExportError(f"{where}: takes {int(weight.shape[1])} inputs, the layer before gives "
                                  f"{int(math.prod(shape))}")
            expected = (int(weight.shape[0]),)
        else:
            k = int(weight.shape[-1])
            if len(shape) != 3 or tuple(layer.input_shape) != shape or int(weight.shape[1]) != shape[0] \
                    or int(weight.shape[2]) != k:
                raise ExportError(f"{where}: a convolution of weight {list(weight.shape)} does not fit its input "
                                  f"{list(shape)}")
            expected = (int(weight.shape[0]), (shape[1] + 2 * layer.padding - k) // layer.stride + 1,
                        (shape[2] + 2 * layer.padding - k) // layer.stride + 1)
        if tuple(layer.output_shape) != expected or min(expected) < 1:
            raise ExportError(f"{where}: output shape {list(layer.output_shape)}, the weight and input give "
                              f"{list(expected)}")
        if layer.unit.numel() not in (1, int(weight.shape[0])):
            raise ExportError(f"{where}: {layer.unit.numel()} state units for {int(weight.shape[0])} outputs")
        shape = expected
        if layer.pool:
            if layer.kind != "conv2d" or shape[1] < layer.pool or shape[2] < layer.pool:
                raise ExportError(f"{where}: max pool {layer.pool} needs a convolution output of at least that size")
            shape = (shape[0], shape[1] // layer.pool, shape[2] // layer.pool)
    readout = deployment.layers[-1] if deployment.layers else None
    if readout is None or not readout.readout or readout.kind != "linear" or readout.pool:
        raise ExportError("model: the last layer must be a linear readout")
    if int(readout.weight.shape[0]) != deployment.num_classes:
        raise ExportError(f"readout: {int(readout.weight.shape[0])} outputs for {deployment.num_classes} classes")


def check_deployment(deployment: Deployment) -> None:
    """The layer graph (:func:`check_structure`), every ``limits`` entry of the profile and
    every value against the number formats."""
    profile, num = deployment.profile, deployment.profile.numerics
    if num.is_float:
        raise ExportError(f"profile {profile.name}: computes in float; a deployment needs fixed point")
    check_structure(deployment)
    w_lo, w_hi = fp.int_range(num.weight_bits)
    bias_bits = num.bias_bits or num.membrane_bits
    for layer in deployment.layers:
        where = layer.name  # kind and a non-empty weight: check_structure above
        for what, codes in (("weight", layer.weight), ("recurrent weight", layer.recurrent),
                            ("weight2", layer.weight2), ("recurrent2", layer.recurrent2)):
            if codes is not None and codes.numel() and (int(codes.min()) < w_lo or int(codes.max()) > w_hi):
                raise ExportError(f"{where}: {what} code {int(codes.abs().max())} outside weight_bits = "
                                  f"{num.weight_bits} ([{w_lo}, {w_hi}])")
        shifts = num.weight_shift
        for what, shift in (("weight_shift", layer.weight_shift), ("recurrent_shift", layer.recurrent_shift)):
            lo, hi = (shifts.min, shifts.max) if shifts is not None else (0, 0)
            if not lo <= shift <= hi:
                raise ExportError(f"{where}: {what} = {shift} outside the chip's weight shifts [{lo}, {hi}]")
        if layer.bias is not None:
            if quant.split_bias(layer.bias, num) is None:
                b_lo, b_hi = fp.int_range(bias_bits)
                e_lo, e_hi = quant.bias_exponents(num)
                form = f" << bias_exp {e_lo}..{e_hi}" if num.bias_exp is not None else ""
                raise ExportError(f"{where}: bias code {int(layer.bias.abs().max())} is not a bias_bits = {bias_bits} "
                                  f"mantissa [{b_lo}, {b_hi}]{form}")
            if layer.bias.shape != (layer.weight.shape[0],):
                raise ExportError(f"{where}: bias shape {tuple(layer.bias.shape)} does not match "
                                  f"{layer.weight.shape[0]} outputs")
        if not bool(torch.isfinite(layer.unit).all()) or bool((layer.unit <= 0).any()):
            raise ExportError(f"{where}: state unit must be finite and positive")
        if not math.isfinite(layer.v_init):
            raise ExportError(f"{where}: v_init is {layer.v_init}")
        if not layer.readout:
            dtype = quant.code_dtype(num)
            theta, unit = layer.neuron_values("threshold").to(dtype), layer.unit.to(dtype)
            raw = quant.threshold_needed(theta, unit, num)
            if bool((raw > quant.threshold_limit(num)).any()):
                raise ExportError(f"{where}: threshold needs {float(raw.max()):.0f} units, more than threshold_bits "
                                  f"= {num.threshold_bits or num.membrane_bits} hold (max {quant.threshold_limit(num)})")
        bound = layer.sum_bound(deployment.input_bits)
        if bound >= 1 << 63:
            raise ExportError(f"{where}: synaptic sums can reach {bound}, beyond 64-bit integers "
                              "(fewer weight or input bits, or a smaller fan-in)")
        if layer.readout != (layer is deployment.layers[-1]):
            raise ExportError(f"{where}: only the last layer is the readout")
        if layer.readout:
            _check_logits_fit_float32(layer, bound, deployment.timesteps, num.membrane_bits, where)
    _check_limits(deployment)


def _check_neuron_values(layer: LayerDeployment) -> None:
    """A layer's neuron parameters, per layer or per neuron (:data:`~neurosim.export.deployment.NEURON_VALUES`):
    finite, decays in [0, 1] (0: the state is cleared every step, Xylo's ``dash = 0``), a
    per-neuron tensor of the layer's output shape only for a parameter the layer has, and the
    scalar field its first neuron's value."""
    where = layer.name
    for name in NEURON_VALUES:
        scalar = getattr(layer, name)
        values = layer.per_neuron.get(name)
        if values is not None:
            if scalar is None:
                raise ExportError(f"{where}: per-neuron {name} for a layer without {name}")
            if tuple(values.shape) != tuple(layer.output_shape) or not values.is_floating_point():
                raise ExportError(f"{where}: per-neuron {name} of shape {list(values.shape)} ({values.dtype}), "
                                  f"expected float values of the output shape {list(layer.output_shape)}")
        if scalar is None:
            continue
        if not math.isfinite(scalar):
            raise ExportError(f"{where}: {name} is {scalar}")
        array = layer.neuron_values(name)
        if not bool(torch.isfinite(array).all()):
            raise ExportError(f"{where}: per-neuron {name} holds NaN or inf")
        if values is not None and float(values.reshape(-1)[0]) != scalar:
            raise ExportError(f"{where}: {name} is {scalar:g}, its first neuron's per-neuron value "
                              f"{float(values.reshape(-1)[0]):g}")
        if name in ("beta", "synapse_decay", "synapse_decay2") and bool(((array < 0) | (array > 1)).any()):
            bad = float(array[(array < 0) | (array > 1)].reshape(-1)[0])
            label = "decay beta" if name == "beta" else name
            raise ExportError(f"{where}: {label} = {bad:g} outside [0, 1]")


def _check_logits_fit_float32(layer: LayerDeployment, bound: int, timesteps: int, membrane_bits: int | None,
                              where: str) -> None:
    """The readout's logits are its state codes times its state unit, in float32: the largest code
    it can hold (the membrane format's, else every step's largest sum added up) times the unit
    must stay finite, or a chip's logits would read inf."""
    largest_code = (1 << (membrane_bits - 1)) if membrane_bits else bound * max(timesteps, 1)
    largest = float(layer.unit.max()) * float(largest_code)
    if not largest < float(torch.finfo(torch.float32).max):
        raise ExportError(f"{where}: state unit {float(layer.unit.max()):.3g} times the largest state code "
                          f"{largest_code} overflows float32 logits")


def _check_limits(deployment: Deployment) -> None:
    limits = deployment.profile.limits
    layers = deployment.layers
    name = deployment.profile.name

    def over(limit: str, value: int, where: str) -> None:
        bound = getattr(limits, limit)
        if bound is not None and value > bound:
            raise ExportError(f"{where}: {limit} of profile {name} is {bound}, the model needs {value}")

    over("max_timesteps", deployment.timesteps, "model")
    over("max_layers", len(layers), "model")
    over("max_inputs", int(math.prod(deployment.input_shape)), "input")
    over("max_outputs", deployment.num_classes, "readout")
    over("max_neurons", sum(int(math.prod(layer.output_shape)) for layer in layers if not layer.readout), "model")
    over("max_synapses", sum(_synapses(layer) for layer in layers), "model")
    for i, layer in enumerate(layers):
        recurrent = 0 if layer.recurrent is None else int(layer.recurrent.shape[1])
        over("max_fan_in", layer.fan_in + recurrent, layer.name)
        if i + 1 < len(layers):
            nxt = layers[i + 1]
            fan_out = int(nxt.weight.shape[0]) * (int(nxt.weight.shape[2]) * int(nxt.weight.shape[3])
                                                 if nxt.kind == "conv2d" else 1)
            if layer.recurrent is not None:  # a source's recurrent targets: its non-zero synapses
                fan_out += int((layer.recurrent != 0).sum(0).max())
            over("max_fan_out", fan_out, layer.name)


def _synapses(layer: LayerDeployment) -> int:
    """Synapses a layer occupies on the chip: weights, times output positions for convolutions
    (each position is its own neuron with its own synapses)."""
    if layer.kind == "conv2d":
        return int(layer.weight.numel()) // int(layer.weight.shape[0]) * int(math.prod(layer.output_shape))
    return sum(int(w.numel()) for w in (layer.weight, layer.recurrent, layer.weight2, layer.recurrent2)
               if w is not None)
