"""Differentiable spiking layers for training (docs/design.md §2): LIF/IF neurons, surrogate
gradients, reset-gradient modes, tdBN, and model builders."""

from neurosim.nn.builder import NeuronOptions, build_model, parse_spec
from neurosim.nn.layers import Readout, SpikingBlock, SpikingNetwork, TemporalBatchNorm
from neurosim.nn.neuron import LayerDevice, LIFNode, LIFState, StepParameters, lif_step
from neurosim.nn.surrogate import (PSG, SURROGATES, ATan, FastSigmoid, Rectangle, Surrogate, Triangle,
                                   TrSG, make_surrogate)

__all__ = [
    "ATan", "FastSigmoid", "LIFNode", "LIFState", "LayerDevice", "NeuronOptions", "PSG", "Readout",
    "Rectangle", "SURROGATES", "SpikingBlock", "SpikingNetwork", "StepParameters", "Surrogate",
    "TemporalBatchNorm", "Triangle", "TrSG", "build_model", "lif_step", "make_surrogate", "parse_spec",
]
