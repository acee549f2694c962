"""What one benchmark process measures: a float32 GEMM, an equivalence check, a training step,
inference, or the integer engine. :mod:`benchmarks.child` runs exactly one per process.

A configuration is a plain dict (it crosses the process boundary as JSON)::

    {"id": "A/train/neurosim", "task": "train", "network": "A", "library": "neurosim",
     "variant": "float", "quick": false, "threads": 2, "seed": 0}

``variant`` (neurosim's training step): ``float`` (the ideal float model, the one compared with
the peers), ``fixed`` (hardreset-noisy's nominal fixed-point chip, no variation or noise) and
``noisy`` (noise in the loop: a fresh hardreset-noisy chip instance per step with its dynamic
noise, exactly :meth:`neurosim.train.Trainer.training_chip`). Engine configurations carry
``chips`` and ``mode`` (``vectorised``: one pass over all chips; ``separate``: one pass per chip).

Timing: ``warmup`` untimed calls, then ``reps`` timed calls (``time.perf_counter``); the median is
the figure, min and max are kept.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.networks import LEARNING_RATE, MOMENTUM, Network, layer_geometry, networks, neurosim_model, \
    neurosim_parameters, nominal_flops, synthetic_batch

CHIP_PROFILE = "hardreset-noisy"
CHIP_SEED = 1
GEMM_SIZES_FULL = (1024, 2048)
GEMM_SIZES_QUICK = (128,)

REPS_FULL = {"gemm": (2, 10), "train": (3, 20), "infer": (3, 20), "engine": (1, 7), "engine-separate": (1, 3)}
REPS_QUICK = {"gemm": (1, 3), "train": (1, 3), "infer": (1, 3), "engine": (1, 3), "engine-separate": (0, 1)}


def timed(fn: Callable[[], Any], warmup: int, reps: int) -> dict[str, float]:
    """Median, min and max wall time of ``fn`` in ms over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}


def _reps(config: dict[str, Any], kind: str) -> tuple[int, int]:
    return (REPS_QUICK if config["quick"] else REPS_FULL)[kind]


def _network(config: dict[str, Any]) -> Network:
    return networks(config["quick"])[config["network"]]


# ------------------------------------------------------------------ GEMM bound

def run_gemm(config: dict[str, Any]) -> dict[str, Any]:
    """float32 ``[n, n] @ [n, n]`` for each size; GFLOP/s = ``2 n^3 / t``; the bound is the best."""
    sizes = GEMM_SIZES_QUICK if config["quick"] else GEMM_SIZES_FULL
    warmup, reps = _reps(config, "gemm")
    gen = torch.Generator().manual_seed(config["seed"])
    rows = []
    for n in sizes:
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        out = torch.empty(n, n)
        t = timed(lambda: torch.mm(a, b, out=out), warmup, reps)
        rows.append({"n": n, **t, "gflops": 2.0 * n ** 3 / (t["median_ms"] * 1e-3) / 1e9})
    return {"sizes": rows, "gflops": max(r["gflops"] for r in rows)}


# ------------------------------------------------------------------ equivalence

def run_check(config: dict[str, Any]) -> dict[str, Any]:
    """Equivalence of a peer with neurosim on a network (:func:`benchmarks.equivalence.check_network`)."""
    from benchmarks.equivalence import check_network

    return check_network(config["library"], _network(config), seed=config["seed"])


# ------------------------------------------------------------------ models of each library

def _spike_rates(model, net: Network) -> list[float]:
    """Spikes per neuron per step of each spiking layer in neurosim's last forward (batch mean)."""
    sizes = [math.prod(g["out"]) for g in layer_geometry(net)[:-1]]
    return [float(c.float().mean()) / (net.timesteps * n) for c, n in zip(model.last_spike_counts, sizes)]


def _peer(config: dict[str, Any], net: Network) -> torch.nn.Module:
    from benchmarks.peers import copy_weights, peer_model

    model = peer_model(config["library"], net)
    copy_weights(neurosim_parameters(neurosim_model(net, seed=config["seed"])), model.weight_modules())
    return model


def train_workload(config: dict[str, Any]) -> tuple[Callable[[], None], dict[str, Any]]:
    """The training step of a configuration as a closure (zero_grad + forward + backward + SGD
    step on one synthetic batch), and facts about it (neurosim: spike rates at the start)."""
    net = _network(config)
    x, y = synthetic_batch(net, seed=config["seed"])
    info: dict[str, Any] = {}
    if config["library"] == "neurosim":
        from neurosim.device import load_profile
        from neurosim.train import TrainConfig, Trainer
        from neurosim.train.datasets import Dataset, DatasetSplit

        variant = config["variant"]
        profile = load_profile("ideal" if variant == "float" else CHIP_PROFILE)
        # the chip's readout integrates (beta = 1); the float model averages currents like the peers
        model = neurosim_model(net, readout_beta=0.0 if variant == "float" else 1.0, seed=config["seed"]).train()
        train_config = TrainConfig(model=net.spec, profile=profile.name, timesteps=net.timesteps,
                                   batch_size=net.batch, optimizer="sgd", lr=LEARNING_RATE, momentum=MOMENTUM,
                                   noise=variant == "noisy", norm=net.norm, seed=config["seed"])
        split = DatasetSplit(x, y)
        dataset = Dataset("synthetic", split, split, net.input_shape, 10)
        trainer = Trainer(model, profile, train_config, dataset, progress=False)
        counter = {"step": 0}

        def step() -> None:
            chip = trainer.training_chip(counter["step"])
            logits = model(x, chip)
            loss = trainer.loss(logits, y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            counter["step"] += 1

        with torch.no_grad():
            model(x, trainer.training_chip(0))
        info["spike_rates_start"] = _spike_rates(model, net)
    else:
        model = _peer(config, net).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()

    return step, info


def run_train(config: dict[str, Any]) -> dict[str, Any]:
    """Median training step (:func:`train_workload`)."""
    net = _network(config)
    step, result = train_workload(config)
    result.update(timed(step, *_reps(config, "train")))
    result["samples"] = net.batch
    result["gflops"] = nominal_flops(net, training=True) / (result["median_ms"] * 1e-3) / 1e9
    return result


def infer_workload(config: dict[str, Any]) -> tuple[Callable[[], None], dict[str, Any]]:
    """A forward pass in eval mode without gradients, as a closure."""
    net = _network(config)
    x, _ = synthetic_batch(net, seed=config["seed"])
    if config["library"] == "neurosim":
        model = neurosim_model(net, seed=config["seed"])
    else:
        model = _peer(config, net)
    model.eval()

    @torch.no_grad()
    def forward() -> None:
        model(x)

    return forward, {}


def run_infer(config: dict[str, Any]) -> dict[str, Any]:
    """Median forward pass (:func:`infer_workload`); samples/s = batch / median."""
    net = _network(config)
    forward, result = infer_workload(config)
    result.update(timed(forward, *_reps(config, "infer")))
    result["samples"] = net.batch
    result["samples_per_s"] = net.batch / (result["median_ms"] * 1e-3)
    result["gflops"] = nominal_flops(net, training=False) / (result["median_ms"] * 1e-3) / 1e9
    return result


# ------------------------------------------------------------------ integer engine

def _engine_parity(model, profile, deployment, chips, x: torch.Tensor, n_chips: int) -> dict[str, Any]:
    """Spikes of every layer and step and the logits of the engine equal the fake-quant training
    forward's, bit for bit, on the first ``n_chips`` chips (the contract of docs/design.md §4)."""
    from neurosim.device import DynamicNoise
    from neurosim.engine import IntegerEngine
    from neurosim.train import ChipContext

    result = IntegerEngine(deployment, chips[list(range(n_chips))]).run(x, batch=0, record=True)
    for block in model.blocks:
        block.record = True
    spikes_compared = 0
    exact = True
    try:
        with torch.no_grad():
            for k in range(n_chips):
                chip = chips[k]
                ctx = ChipContext(profile, chip, DynamicNoise(profile, chips.seed, chip.indices), batch=0)
                logits = model(x, ctx)
                for block in model.blocks:
                    ours = block.recorded_spikes
                    exact &= torch.equal(result.spikes[block.name][:, k].to(ours.dtype), ours)
                    spikes_compared += int(ours.sum())
                exact &= torch.equal(logits, result.logits[k])
    finally:
        for block in model.blocks:
            block.record = False
    return {"bit_exact": bool(exact), "parity_chips": n_chips, "parity_samples": len(x),
            "parity_spikes": spikes_compared}


def engine_workload(config: dict[str, Any]) -> tuple[Callable[[], Any], dict[str, Any]]:
    """The integer engine on hardreset-noisy as a closure: ``chips`` chip instances, one
    vectorised pass or one pass per chip; each pass builds the engine(s) and runs the batch (a
    sweep's cost). Checked bit for bit against the training forward first (refuses otherwise)."""
    from neurosim.device import load_profile, sample_chips
    from neurosim.engine import IntegerEngine, deployment_shapes
    from neurosim.export import compile_model

    net = _network(config)
    x, _ = synthetic_batch(net, seed=config["seed"])
    profile = load_profile(CHIP_PROFILE)
    model = neurosim_model(net, readout_beta=1.0, seed=config["seed"])
    if net.norm != "none":  # batch-norm running statistics from the benchmark batch
        with torch.no_grad():
            model.train()(x)
    deployment = compile_model(model, profile, adapt=True)  # beta 0.9 -> the shift decay's 0.875
    n_chips, mode = int(config["chips"]), config["mode"]
    chips = sample_chips(profile, deployment_shapes(deployment), n=n_chips, seed=CHIP_SEED)
    info: dict[str, Any] = {"adapted": deployment.metadata.get("adapted", [])}
    info.update(_engine_parity(model, profile, deployment, chips, x[: min(len(x), 16)], min(n_chips, 2)))
    if not info["bit_exact"]:
        raise RuntimeError("integer engine differs from the fake-quant training forward; not timing it")
    info["sum_dtypes"] = {name: str(dtype).removeprefix("torch.")
                          for name, dtype in IntegerEngine(deployment, chips[0]).sum_dtypes.items()}
    if mode == "vectorised":
        return (lambda: IntegerEngine(deployment, chips).run(x, batch=0)), info
    if mode == "separate":
        singles = [chips[k] for k in range(n_chips)]
        return (lambda: [IntegerEngine(deployment, chip).run(x, batch=0) for chip in singles]), info
    raise ValueError(f"engine mode must be vectorised or separate, got {mode!r}")


def run_engine(config: dict[str, Any]) -> dict[str, Any]:
    """Median engine pass (:func:`engine_workload`); samples/s per chip = batch x chips / median."""
    net = _network(config)
    run, result = engine_workload(config)
    result.update(timed(run, *_reps(config, "engine" if config["mode"] == "vectorised" else "engine-separate")))
    samples = net.batch * int(config["chips"])
    result["samples"] = samples
    result["chip_samples_per_s"] = samples / (result["median_ms"] * 1e-3)
    result["gflops"] = nominal_flops(net, training=False, samples=samples) / (result["median_ms"] * 1e-3) / 1e9
    return result


WORKLOADS: dict[str, Callable[[dict[str, Any]], tuple[Callable[[], Any], dict[str, Any]]]] = {
    "train": train_workload, "infer": infer_workload, "engine": engine_workload}
"""The timed closures by task (for :mod:`benchmarks.profile`)."""

TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "gemm": run_gemm, "check": run_check, "train": run_train, "infer": run_infer, "engine": run_engine}
