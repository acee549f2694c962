"""The benchmark suite (issue 7) cannot rot: a quick run of a few configurations in their own
processes, the equivalence check refusing peers that compute something else, and the
orchestrator not timing a refused peer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as bench  # noqa: E402
from benchmarks.equivalence import TOLERANCE, check_network, spike_difference  # noqa: E402
from benchmarks.networks import networks  # noqa: E402
from benchmarks.peers import available_peers, peer_model  # noqa: E402
from benchmarks.report import NOTES_HEADING  # noqa: E402

PEERS_INSTALLED = set(available_peers()) == {"snntorch", "spikingjelly"}
needs_peers = pytest.mark.skipif(not PEERS_INSTALLED, reason="extra 'bench' (snntorch, spikingjelly) not installed")


@needs_peers
def test_quick_run_writes_results_with_passed_checks(tmp_path):
    out, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    (out).write_text("# old\n\n" + NOTES_HEADING + "\n\nkept by hand\n")
    selection = ["A/train/neurosim", "A/train/snntorch", "B/check/spikingjelly", "A/engine/one-chip"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--threads", "1", "--only", *selection,
                           "--out", str(out), "--json", str(raw)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())["results"]
    # the GEMM bound and the check the snnTorch timing needs were added to the selection
    assert set(results) == {"gemm/start", "A/check/snntorch", *selection}
    for key in ("A/check/snntorch", "B/check/spikingjelly"):
        check = results[key]
        assert check["passed"] is True
        for what in ("logits", "gradients", "eval_logits", "surrogate_vs_numeric"):
            assert 0 <= check[what] <= TOLERANCE
        assert check["spikes_per_sample"] > 0
    for key in ("A/train/neurosim", "A/train/snntorch", "A/engine/one-chip"):
        r = results[key]
        assert r["threads"] == 1 and r["median_ms"] > 0 and r["gflops"] > 0
        assert r["peak_rss_mib"] >= r["import_rss_mib"] > 0
    assert results["A/engine/one-chip"]["bit_exact"] is True
    assert results["gemm/start"]["gflops"] > 0
    text = out.read_text()
    for heading in ("## Machine and versions", "## Equivalence with neurosim", "## float32 GEMM bound",
                    "## Network A", "### Training step", "### Integer engine (hardreset-noisy)",
                    "## Targets (issue 7)"):
        assert heading in text
    assert "kept by hand" in text and text.index("## Targets") < text.index(NOTES_HEADING)
    ratio = results["A/train/neurosim"]["median_ms"] / results["A/train/snntorch"]["median_ms"]
    assert f"| training step, network A | {ratio:,.2f} | <= 0.8 |" in text
    assert "| float inference, network A | — |" in text  # not selected: reported as not measured


def _wrong_peer(change: str):
    """A peer model that differs from neurosim's function in one respect."""
    def build(name, net):
        if change == "soft_reset":
            import snntorch as snn
            from snntorch import surrogate
            model = peer_model("snntorch", net)
            model.neurons = torch.nn.ModuleList(
                snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism="subtract", spike_grad=surrogate.atan(alpha=2.0))
                for _ in model.neurons)
            return model
        from spikingjelly.activation_based import neuron, surrogate
        model = peer_model("spikingjelly", net)
        for m in model.modules():
            if isinstance(m, neuron.LIFNode):
                if change == "decay_input":
                    m.decay_input = True  # input scaled by 1/tau: a different neuron
                else:
                    m.surrogate_function = surrogate.ATan(alpha=4.0)  # same forward, other gradient
        return model
    return build


@needs_peers
@pytest.mark.parametrize("peer,change", [("spikingjelly", "decay_input"), ("snntorch", "soft_reset"),
                                         ("spikingjelly", "surrogate")])
def test_a_peer_computing_something_else_is_refused(peer, change):
    result = check_network(peer, networks(quick=True)["A"], build=_wrong_peer(change))
    assert result["passed"] is False
    if change == "surrogate":  # same forward: only the gradients tell
        assert result["logits"] == 0.0 and result["gradients"] > TOLERANCE
    else:  # spikes differ far from the threshold: not a rounding tie
        assert result["why"].startswith("train: layer ") and result["threshold_ties"] == 0


def test_threshold_ties_are_told_apart_from_different_spikes():
    theta = 1.0
    ours = [torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])]  # [T=2, batch=1, neurons=2]
    potentials = [[torch.tensor([[1.0, 0.5]]), torch.tensor([[0.3, 1.2]])]]
    tie = [torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])]  # neuron 0 flips where u == theta, then diverges
    assert spike_difference(ours, potentials, ours)["kind"] == "same"
    result = spike_difference(ours, potentials, tie, theta)
    assert result["kind"] == "ties" and result["neurons"] == 1
    far = [torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])]  # neuron 1 fires at u = 0.5
    assert spike_difference(ours, potentials, far, theta)["kind"] == "different"


def test_a_refused_peer_is_not_timed(tmp_path, monkeypatch):
    ran = []

    def fake_child(config, folder, timeout):
        ran.append(config["id"])
        if config["task"] == "check":
            return {"id": config["id"], "config": config, "passed": False, "threshold_ties": 0, "tie_margins": [],
                    "why": "train: layer 0: 5 neurons spike differently, potential up to 0.3 from the threshold",
                    "surrogate_vs_formula": 0.0, "surrogate_vs_numeric": 0.0,
                    "import_rss_mib": 1.0, "peak_rss_mib": 2.0}
        return {"id": config["id"], "config": config, "gflops": 10.0,
                "sizes": [{"n": 8, "median_ms": 1.0, "gflops": 10.0}], "import_rss_mib": 1.0, "peak_rss_mib": 2.0}

    monkeypatch.setattr(bench, "run_child", fake_child)
    monkeypatch.setattr(bench, "available_peers", lambda: ["snntorch"], raising=False)
    import benchmarks.peers
    monkeypatch.setattr(benchmarks.peers, "available_peers", lambda: ["snntorch"])
    out = tmp_path / "R.md"
    assert bench.main(["--quick", "--only", "A/train/snntorch", "--out", str(out)]) == 0
    assert ran == ["gemm/start", "A/check/snntorch"]
    text = out.read_text()
    assert "**refused: train: layer 0: 5 neurons spike differently" in text
    assert "| snntorch | not timed: failed the equivalence check |" in text
    assert "| training step, network A | — | <= 0.8 | not measured |" in text


def test_selection_adds_the_bound_and_the_checks_the_peers_need():
    configs = bench.configurations(quick=True, threads=1, peers=["snntorch", "spikingjelly"])
    ids = [c["id"] for c in configs]
    assert len(ids) == len(set(ids))
    chosen = [c["id"] for c in bench.select(configs, ["B/infer/*"])]
    assert chosen == ["gemm/start", "B/check/snntorch", "B/check/spikingjelly", "B/infer/neurosim",
                      "B/infer/snntorch", "B/infer/spikingjelly"]
    assert [c["id"] for c in bench.select(configs, None)] == ids


def test_rounds_report_the_median_round():
    def timed(ms, rss):
        return {"id": "A/train/neurosim", "median_ms": ms, "min_ms": ms - 1, "max_ms": ms + 1,
                "peak_rss_mib": rss, "import_rss_mib": 100.0, "gflops": 1000 / ms}
    combined = bench.combine_rounds([timed(30.0, 300), timed(10.0, 310), timed(20.0, 305)])
    assert combined["median_ms"] == 20.0 and combined["gflops"] == 50.0  # the median round's own figures
    assert combined["round_medians_ms"] == [30.0, 10.0, 20.0] and combined["rounds"] == 3
    assert (combined["min_ms"], combined["max_ms"], combined["peak_rss_mib"]) == (9.0, 31.0, 310)
    gemm = bench.combine_rounds([{"gflops": 80.0, "sizes": [], "peak_rss_mib": 1, "import_rss_mib": 1},
                                 {"gflops": 90.0, "sizes": [], "peak_rss_mib": 1, "import_rss_mib": 1}])
    assert gemm["gflops"] == 90.0  # a bound: the best round
    failed = bench.combine_rounds([timed(10.0, 300), {"id": "x", "error": "RuntimeError: boom"}])
    assert failed["error"] == "RuntimeError: boom"
