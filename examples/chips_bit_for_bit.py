"""neurosim's integer engine against the vendors' bit-accurate models (docs/chips.md).

1. A random Xylo network (recurrent hidden layer with two synaptic states, up to 31 spikes a
   step, weight shifts, a threshold and dashes of its own for each neuron, some dashes 0):
   SynSense's xylosim (the ``xylo`` extra) and neurosim's engine on the ``xylo-like`` rules,
   compared on every spike, membrane and synaptic state of every step.
2. A two-layer Loihi network: neurosim's restatement of Lava's bit-accurate Dense + LIF
   (``neurosim.engine.lava_reference``) and the engine on the ``loihi-like`` rules.

Run: ``python examples/chips_bit_for_bit.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from neurosim.engine import IntegerEngine
from neurosim.engine.lava_reference import LavaDense, LavaLIF, LavaNetwork, run_lava
from neurosim.export.lava import deployment_for_lava
from neurosim.export.xylo import XyloConfig, deployment_from_config, run_xylosim

rng = np.random.default_rng(2026)
steps = 20

# ------------------------------------------------------------------ 1. Xylo
n_in, n_hid, n_out = 16, 24, 8
config = XyloConfig(
    weights_in=rng.integers(-128, 128, (n_in, n_hid)), weights_rec=rng.integers(-40, 40, (n_hid, n_hid)),
    weights_out=rng.integers(-128, 128, (n_hid, n_out)), threshold=rng.integers(1500, 4500, n_hid),
    threshold_out=rng.integers(3000, 5000, n_out), bias=rng.integers(-50, 50, n_hid),
    bias_out=np.zeros(n_out, dtype=int), has_bias=True, weight_shift_inp=3, weight_shift_rec=2, weight_shift_out=4,
    dash_mem=rng.integers(0, 6, n_hid), dash_mem_out=rng.integers(2, 6, n_out), dash_syn=rng.integers(0, 4, n_hid),
    dash_syn_out=np.full(n_out, 2), weights_in2=rng.integers(-128, 128, (n_in, n_hid)),
    weights_rec2=np.zeros((n_hid, n_hid), dtype=int), dash_syn2=rng.integers(3, 8, n_hid))
counts = rng.integers(0, 16, (steps, n_in))  # input events per channel and step
deployment = deployment_from_config(config, steps)  # thresholds and dashes per neuron (LayerDeployment.per_neuron)
result = IntegerEngine(deployment).run_codes(torch.from_numpy(counts)[None], record=True, record_states=True)
engine = {"spikes": result.spikes["block0"], "out_spikes": result.spikes["readout"],
          "v_mem": result.states["block0"]["v"], "i_syn": result.states["block0"]["i"],
          "i_syn2": result.states["block0"]["i2"], "v_mem_out": result.states["readout"]["v"],
          "i_syn_out": result.states["readout"]["i"]}
engine = {key: value[:, 0, 0].numpy().astype(np.int64) for key, value in engine.items()}
print(f"Xylo network: {n_in} inputs, {n_hid} recurrent hidden neurons (2 synaptic states; per neuron: "
      f"{', '.join(sorted(deployment.layers[0].per_neuron))}; {int((config.dash_mem == 0).sum())} with dash_mem 0), "
      f"{n_out} outputs, {steps} steps; hidden spikes {int(engine['spikes'].sum())} (at most {int(engine['spikes'].max())} "
      f"in one step), output spikes {int(engine['out_spikes'].sum())}")
try:
    xylo = run_xylosim(config, counts)
except Exception as exc:  # noqa: BLE001 - the extra is optional; say why and go on
    print(f"xylosim: skipped ({exc})")
else:
    same = all(np.array_equal(engine[key], xylo[key]) for key in xylo)
    print(f"xylosim and neurosim agree on {', '.join(sorted(xylo))} at every step: {same}")

# ------------------------------------------------------------------ 2. Loihi
layers = []
for n_out_, n_in_ in ((12, 10), (6, 12)):
    dense = LavaDense(weights=(rng.integers(-128, 128, (n_out_, n_in_)) * 2).tolist(),
                      weight_exp=int(rng.integers(-2, 4)))
    lif = LavaLIF(du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 4096)), vth=int(rng.integers(50, 400)),
                  bias_mant=rng.integers(-100, 100, n_out_).tolist(), bias_exp=[2] * n_out_)
    layers.append((dense, lif))
network = LavaNetwork(layers)
spikes_in = (rng.random((steps, 10)) < 0.5).astype(np.int64)
want = run_lava(network, spikes_in)
got = IntegerEngine(deployment_for_lava(network, steps)).run_codes(
    torch.from_numpy(spikes_in)[None], record=True, record_states=True)
same = True
for k, layer in enumerate(want):
    name = f"block{k}"
    same &= np.array_equal(got.spikes[name][:, 0, 0].numpy(), layer["spikes"])
    same &= np.array_equal(got.states[name]["i"][:, 0, 0].numpy(), layer["u"])
    same &= np.array_equal(got.states[name]["v"][:, 0, 0].numpy(), layer["v"])
print(f"Loihi network: 10 inputs, 12 and 6 LIF neurons, {steps} steps; spikes "
      f"{sum(int(layer['spikes'].sum()) for layer in want)}")
print(f"Lava's bit-accurate equations and neurosim agree on spikes, u and v at every step: {same}")
