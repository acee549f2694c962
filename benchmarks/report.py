"""RESULTS.md from the children's results: tables, the targets of issue 7, machine and versions.

The hand-written section that starts with :data:`NOTES_HEADING` (why a target is missed, what a
run showed) is carried over from the previous file each time the report is rewritten.
"""

from __future__ import annotations

from typing import Any

from benchmarks.networks import Network

NOTES_HEADING = "## Notes"
DEFAULT_NOTES = (NOTES_HEADING + "\n\nHand-written remarks on the figures (e.g. why a target is missed). "
                 "`python -m benchmarks` keeps this section when it rewrites the file.\n")

BUSY_LOAD = 0.5
"""1-minute load average above which RESULTS.md warns that the figures are not valid."""

Results = dict[str, dict[str, Any]]


def keep_notes(previous: str | None) -> str:
    """The notes section of a previous RESULTS.md (from its heading to the end), or the default."""
    if previous:
        at = previous.find("\n" + NOTES_HEADING + "\n")
        if at >= 0:
            return previous[at + 1:].rstrip() + "\n"
    return DEFAULT_NOTES


def _ok(results: Results, key: str) -> dict[str, Any] | None:
    r = results.get(key)
    return r if r is not None and "error" not in r and not r.get("skipped") else None


def gemm_bound(results: Results) -> float | None:
    """Best float32 GEMM GFLOP/s of the run (measured at its start and end)."""
    values = [r["gflops"] for k, r in results.items() if k.startswith("gemm/") and _ok(results, k)]
    return max(values) if values else None


def fastest_peer(results: Results, network: str, task: str, peers: list[str]) -> tuple[str, dict] | None:
    """The peer with the lowest median time for ``task`` on ``network`` among those measured."""
    measured = [(p, results[f"{network}/{task}/{p}"]) for p in peers if _ok(results, f"{network}/{task}/{p}")]
    return min(measured, key=lambda item: item[1]["median_ms"]) if measured else None


def targets(results: Results, peers: list[str]) -> list[dict[str, Any]]:
    """Each target of issue 7 point 3 with its measured ratio (None where something it needs was
    not measured) and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bound: float, at_most: bool, how: str) -> None:
        met = None if value is None else (value <= bound if at_most else value >= bound)
        out.append({"target": name, "measured": value, "required": f"{'<=' if at_most else '>='} {bound:g}",
                    "met": met, "how": how})

    for net in ("A", "B"):
        ours = _ok(results, f"{net}/train/neurosim")
        peer = fastest_peer(results, net, "train", peers)
        add(f"training step, network {net}", ours["median_ms"] / peer[1]["median_ms"] if ours and peer else None,
            0.8, True, "neurosim ms / fastest peer ms" + (f" ({peer[0]})" if peer else ""))
    for net in ("A", "B"):
        ours = _ok(results, f"{net}/infer/neurosim")
        peer = fastest_peer(results, net, "infer", peers)
        add(f"float inference, network {net}",
            ours["samples_per_s"] / peer[1]["samples_per_s"] if ours and peer else None,
            1.25, False, "neurosim samples/s / fastest peer samples/s" + (f" ({peer[0]})" if peer else ""))
    engine = _ok(results, "A/engine/one-chip")
    peer = fastest_peer(results, "A", "infer", peers)
    add("integer engine vs peer float inference, network A",
        engine["chip_samples_per_s"] / peer[1]["samples_per_s"] if engine and peer else None, 1.0, False,
        "engine samples/s on one chip / fastest peer's float samples/s" + (f" ({peer[0]})" if peer else ""))
    bound = gemm_bound(results)
    add("integer engine vs GEMM bound, network A", engine["gflops"] / bound if engine and bound else None,
        0.5, False, "engine GFLOP/s on one chip (nominal FLOPs) / float32 GEMM GFLOP/s")
    for net in ("A", "B"):
        noisy, plain = _ok(results, f"{net}/train/neurosim-noisy"), _ok(results, f"{net}/train/neurosim-fixed")
        add(f"noise in the loop, network {net}", noisy["median_ms"] / plain["median_ms"] if noisy and plain else None,
            1.15, True, "hardreset-noisy step with noise ms / the same chip's noiseless step ms (fixed)")
    vec, sep = _ok(results, "A/engine/vectorised"), _ok(results, "A/engine/separate")
    add("chips in one vectorised pass, network A", sep["median_ms"] / vec["median_ms"] if vec and sep else None,
        8.0, False, f"{vec['config']['chips'] if vec else 'N'} one-chip passes ms / one pass ms")
    return out


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _e(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def _status(results: Results, key: str) -> str | None:
    r = results.get(key)
    if r is None:
        return None
    if r.get("skipped"):
        return r["skipped"]
    if "error" in r:
        return "failed: " + r["error"].splitlines()[0][:160]
    return None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _rss(r: dict) -> str:
    return f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['import_rss_mib']:+.0f})"


def render(results: Results, nets: dict[str, Network], peers: list[str], meta: dict[str, Any], notes: str) -> str:
    """The whole RESULTS.md."""
    bound = gemm_bound(results)
    pct = lambda g: "—" if bound is None or g is None else f"{100 * g / bound:.0f} %"  # noqa: E731
    L: list[str] = ["# Benchmark results", ""]
    if meta.get("quick"):
        L += ["**Quick run (`--quick`): tiny sizes and few repetitions, a smoke test of the harness; "
              "these figures say nothing about speed.**", ""]
    # only the start says whether other work was running: at the end the 1-minute average still
    # holds the suite's own (2-thread) processes
    busy = meta["load_start"]
    if busy > BUSY_LOAD:
        L += [f"**Warning: the machine was not idle (load average {busy:.1f} at the start on {meta['cores']} cores). "
              "Other processes on the cores make multi-threaded OpenMP loops many times slower; these "
              "figures are not valid measurements of the libraries.**", ""]
    L += [f"Written by `{meta['command']}` on {meta['date']} (commit {meta['commit']}); "
          f"{len(results)} configurations, each in its own process"
          + (f", every timed one in {meta['rounds']} rounds (round-robin; the median round is reported, "
             "min – max over all rounds)" if meta.get("rounds", 1) > 1 else "") + ".", "",
          "## Machine and versions", "",
          f"- CPU: {meta['cpu']}, {meta['cores']} cores; every process ran with "
          f"`torch.set_num_threads({meta['threads']})`.",
          f"- Load average (1 min) at start / end: {meta['load_start']:.2f} / {meta['load_end']:.2f}"
          " (an idle machine reads about 0 at the start; at the end the average still holds the suite's own "
          "processes).",
          "- " + ", ".join(f"{name} {version or 'not installed'}" for name, version in meta["versions"].items()) + ".",
          "- The peers are the extra `bench`, installed beside torch without letting pip replace it: "
          "`pip install --no-deps snntorch spikingjelly loguru`.", "",
          "## Method", "",
          "- **Function** (the same in every library, checked before timing): LIF, beta 0.9, threshold 1, "
          "hard reset to 0 with the reset detached, ATan surrogate (alpha 2), direct input repeated each "
          "step, output layer averaged over time (the sum over time divided by T: neurosim's readout with "
          "`readout_beta=0` reports the mean, so the peers divide their sum by T), cross-entropy, SGD with "
          "momentum 0.9 (lr 0.01), float32. Synthetic inputs uniform in [0, 1] with random labels; the "
          "spiking layers' default weights are doubled so that every layer fires (rates below).",
          "- **Peers**: snnTorch `Leaky(beta=0.9, threshold=1, reset_mechanism='zero', "
          "spike_grad=surrogate.atan(alpha=2))` stepped over t after its stateless layers ran on all steps "
          "at once (needed for batch norm over time and batch, as neurosim's); SpikingJelly `LIFNode(tau=10, "
          "decay_input=False, v_reset=0, detach_reset=True, surrogate_function=ATan(alpha=2), step_mode='m')` "
          "with its multi-step layers. Details: `benchmarks/peers.py`.",
          "- **Equivalence**: neurosim's weights copied into the peer; on the benchmark batch, in float64 (the "
          "same function; float32 rounding would make threshold ties common at network B's size), the "
          "training-mode logits of the timed path (neurosim's fused neuron) and every parameter gradient of one cross-entropy backward, the eval-mode logits, and "
          "the ATan gradient against its formula and a numerical derivative must agree to 1e-5 (absolute). "
          "Spikes are compared layer by layer first: a batch where the only difference is a neuron whose "
          "potential lies within 1e-5 of the threshold (float rounding decides it; the libraries round "
          "differently) is skipped for the next seed's batch; any other difference refuses the peer, and a "
          "refused peer is not timed. The optimiser is `torch.optim.SGD(lr=0.01, momentum=0.9)` in every "
          "library (`benchmarks/tasks.py`).",
          "- **Training step**: `zero_grad` + forward + backward + `step` on one batch; **inference**: forward "
          "in eval mode under `no_grad`, samples/s = batch / median. Medians over the repetitions after "
          "warm-up calls (`benchmarks/tasks.py`).",
          "- **neurosim on a chip** (hardreset-noisy: 8-bit weights, 16-bit membrane, shift decay, threshold "
          "and reset variation): `fixed` = the nominal fixed-point chip without variation or noise, `noisy` = "
          "noise in the loop, a fresh chip instance per step (`Trainer.training_chip`). The chip's readout "
          "integrates (`readout_beta=1`); its shift decay realises beta 0.875 for 0.9.",
          "- **Integer engine**: `compile_model(..., adapt=True)` (beta 0.9 -> 0.875, the shift decay's), then "
          "each timed pass builds `IntegerEngine` for the chips and runs the batch, with the chips' variation. "
          "Before timing, spikes of every layer and step and the logits are compared bit for bit with the "
          "fake-quant training forward on two chips. Samples/s per chip: batch x chips / median.",
          "- **GFLOP/s**: nominal FLOPs of the function, 2 x MACs of the linear and convolution layers per "
          "sample and step x T x batch (x chips for the engine; x 3 for a training step: forward, input "
          "gradient, weight gradient); batch norm and neurons not counted. Work an implementation skips (e.g. "
          "the repeated input's first layer computed once) still counts. The bound is the best float32 GEMM "
          "(`torch.mm`, n x n) measured at the start and the end of the run.",
          "- **Peak RSS**: `getrusage(RUSAGE_SELF).ru_maxrss` of the configuration's own process, in MiB; in "
          "brackets the growth over the peak after the imports (torch, the library, the optimiser machinery).",
          ""]

    # equivalence
    L += ["## Equivalence with neurosim", ""]
    rows = []
    for name in nets:
        for peer in peers:
            key = f"{name}/check/{peer}"
            status = _status(results, key)
            r = _ok(results, key)
            if r is None:
                if status is not None:
                    rows.append([name, peer, status, "", "", "", "", "not reported"])
                continue
            ties = r.get("threshold_ties", 0)
            tie_text = "none" if not ties else (
                f"{ties} (potential within {max(r['tie_margins']):.1e} of the threshold)")
            verdict = "same function" if r["passed"] else f"**refused: {r.get('why', 'computes something else')}**"
            rows.append([name, peer, _e(r.get("logits")),
                         f"{_e(r.get('gradients'))} (of {r['gradient_scale']:.2g})" if "gradient_scale" in r else "—",
                         _e(r.get("eval_logits")),
                         f"{_e(r['surrogate_vs_formula'])} / {_e(r['surrogate_vs_numeric'])}", tie_text, verdict])
    L += _table(["net", "peer", "logits", "gradients", "eval logits", "ATan grad vs formula / numeric",
                 "batches skipped for threshold ties", "verdict"], rows) + [""]

    # GEMM
    L += ["## float32 GEMM bound", ""]
    rows = []
    for key in ("gemm/start", "gemm/end"):
        r = _ok(results, key)
        for size in (r["sizes"] if r else []):
            rows.append([key.split("/")[1], str(size["n"]), _f(size["median_ms"], 2), _f(size["gflops"])])
    L += _table(["when", "n", "median ms", "GFLOP/s"], rows)
    L += ["", f"Bound used below: **{_f(bound)} GFLOP/s**." if bound else "No GEMM bound measured.", ""]

    for name, net in nets.items():
        L += [f"## Network {name}: {net.description}", ""]
        for task, title in (("train", "Training step"), ("infer", "Inference")):
            peer = fastest_peer(results, name, task, peers)
            rows = []
            for lib in ["neurosim"] + peers:
                key = f"{name}/{task}/{lib}"
                r, status = _ok(results, key), _status(results, key)
                if r is None:
                    if status is not None:
                        rows.append([lib, status, "", "", "", "", ""])
                    continue
                ratio = "—" if peer is None else (
                    f"{r['median_ms'] / peer[1]['median_ms']:.2f}x time" if task == "train"
                    else f"{r['samples_per_s'] / peer[1]['samples_per_s']:.2f}x samples/s")
                first = _f(r["median_ms"], 2) if task == "train" else _f(r["samples_per_s"], 0)
                rows.append([lib, first, f"{_f(r['min_ms'], 2)} – {_f(r['max_ms'], 2)}", _f(r["gflops"]),
                             pct(r["gflops"]), _rss(r), ratio])
            head = "median ms" if task == "train" else "samples/s"
            L += [f"### {title}", ""] + _table(
                ["library", head, "min – max ms", "GFLOP/s", "of GEMM bound", "peak RSS MiB", "vs fastest peer"],
                rows) + [""]
        rows = []
        plain = _ok(results, f"{name}/train/neurosim")
        fixed = _ok(results, f"{name}/train/neurosim-fixed")
        for variant in ("neurosim", "neurosim-fixed", "neurosim-noisy"):
            key = f"{name}/train/{variant}"
            r, status = _ok(results, key), _status(results, key)
            if r is None:
                if status is not None:
                    rows.append([variant, status, "", "", "", ""])
                continue
            rates = ", ".join(f"{x:.3f}" for x in r.get("spike_rates_start", []))
            rows.append([variant.replace("neurosim-", "") if "-" in variant else "float (ideal)",
                         _f(r["median_ms"], 2),
                         f"{r['median_ms'] / plain['median_ms']:.2f}x" if plain else "—",
                         f"{r['median_ms'] / fixed['median_ms']:.2f}x" if fixed else "—", _rss(r), rates])
        if rows:
            L += ["### neurosim training step on the chip (hardreset-noisy)", ""] + _table(
                ["variant", "median ms", "vs float", "vs fixed", "peak RSS MiB", "spike rate per layer (start)"],
                rows) + [""]
        rows = []
        for mode in ("one-chip", "vectorised", "separate"):
            key = f"{name}/engine/{mode}"
            r, status = _ok(results, key), _status(results, key)
            if r is None:
                if status is not None:
                    rows.append([mode, status, "", "", "", "", "", ""])
                continue
            chips = r["config"]["chips"]
            what = {"one-chip": "one chip", "vectorised": f"{chips} chips, one pass",
                    "separate": f"{chips} chips, one pass each"}[mode]
            rows.append([what, _f(r["median_ms"], 1), _f(r["chip_samples_per_s"], 0), _f(r["gflops"]),
                         pct(r["gflops"]), _rss(r), "yes" if r["bit_exact"] else "NO",
                         ", ".join(sorted(set(r["sum_dtypes"].values())))])
        if rows:
            L += ["### Integer engine (hardreset-noisy)", ""] + _table(
                ["configuration", "median ms", "samples/s per chip", "GFLOP/s", "of GEMM bound", "peak RSS MiB",
                 "bit-exact", "synaptic sums in"], rows) + [""]

    L += ["## Targets (issue 7)", ""]
    rows = []
    for t in targets(results, peers):
        met = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        rows.append([t["target"], _f(t["measured"], 2), t["required"], met, t["how"]])
    L += _table(["target", "measured", "required", "status", "ratio"], rows) + [""]
    L += [notes.rstrip(), ""]
    return "\n".join(L)
