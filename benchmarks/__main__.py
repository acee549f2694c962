"""The benchmark suite of issue 7: ``python -m benchmarks`` (or ``make bench``).

Runs every configuration — (library, network, task) — in its own process
(:mod:`benchmarks.child`), one after the other: a float32 GEMM bound at the start and the end,
the equivalence check of each installed peer on each network, then the training step and
inference of neurosim, snnTorch and SpikingJelly, neurosim's training step on the
hardreset-noisy chip (fixed point; noise in the loop), and the integer engine. A peer whose check
fails is not timed. The results go to ``benchmarks/RESULTS.md`` (atomically), with the machine,
the versions and the targets of issue 7.

Installs nothing: the peers are used when installed (extra ``bench``:
``pip install --no-deps snntorch spikingjelly loguru``) and reported as not installed otherwise.

Options: ``--quick`` (tiny sizes, few repetitions: the smoke test; writes
``benchmarks/RESULTS.quick.md`` unless ``--out`` says otherwise), ``--only PATTERN ...`` (glob
patterns on configuration ids such as ``A/train/*`` or ``*/check/*``; the GEMM bound and the checks
the selected peers need always run), ``--out PATH``, ``--json PATH`` (all raw results),
``--threads N`` (default 2, as issue 7 fixes), ``--rounds N`` (repeat every timed configuration
N times round-robin, each in a fresh process, and report the median round: steadier figures on a
machine that is not quite idle), ``--list`` (print the ids and exit).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "RESULTS.md"
QUICK_OUT = ROOT / "benchmarks" / "RESULTS.quick.md"
ENGINE_CHIPS = {False: 64, True: 4}
TIMED = ("gemm", "train", "infer", "engine")
"""Tasks that ``--rounds`` repeats (the equivalence checks run once)."""
CHILD_TIMEOUT_S = {False: 1800, True: 300}


def configurations(quick: bool, threads: int, peers: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """Every configuration of the suite, in the order they run."""
    base = {"quick": quick, "threads": threads, "seed": seed}
    out: list[dict[str, Any]] = [{"id": "gemm/start", "task": "gemm", **base}]
    chips = ENGINE_CHIPS[quick]
    for net in ("A", "B"):
        for peer in peers:
            out.append({"id": f"{net}/check/{peer}", "task": "check", "network": net, "library": peer, **base})
        for variant, suffix in (("float", ""), ("fixed", "-fixed"), ("noisy", "-noisy")):
            out.append({"id": f"{net}/train/neurosim{suffix}", "task": "train", "network": net,
                        "library": "neurosim", "variant": variant, **base})
        for task in ("train", "infer"):
            if task == "infer":
                out.append({"id": f"{net}/infer/neurosim", "task": "infer", "network": net, "library": "neurosim",
                            **base})
            for peer in peers:
                out.append({"id": f"{net}/{task}/{peer}", "task": task, "network": net, "library": peer, **base})
        engines = (("one-chip", 1, "vectorised"), ("vectorised", chips, "vectorised"), ("separate", chips, "separate"))
        for name, n, mode in (engines if net == "A" else engines[:1]):
            out.append({"id": f"{net}/engine/{name}", "task": "engine", "network": net, "library": "neurosim",
                        "chips": n, "mode": mode, **base})
    out.append({"id": "gemm/end", "task": "gemm", **base})
    return out


def select(configs: list[dict[str, Any]], patterns: list[str] | None) -> list[dict[str, Any]]:
    """Configurations whose id matches one of ``patterns`` (all without patterns), plus the GEMM
    bound at the start and the equivalence checks that the selected peer timings need."""
    if not patterns:
        return configs
    chosen = {c["id"] for c in configs if any(fnmatch.fnmatchcase(c["id"], p) for p in patterns)}
    chosen.add("gemm/start")
    for c in configs:
        if c["id"] in chosen and c["task"] in ("train", "infer") and c["library"] != "neurosim":
            chosen.add(f"{c['network']}/check/{c['library']}")
    return [c for c in configs if c["id"] in chosen]


def run_child(config: dict[str, Any], folder: Path, timeout: float) -> dict[str, Any]:
    """Run one configuration in a fresh ``python -m benchmarks.child`` process; its result."""
    out = folder / (config["id"].replace("/", "_") + ".json")
    cmd = [sys.executable, "-m", "benchmarks.child", json.dumps(config), str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"id": config["id"], "config": config, "error": f"timed out after {timeout:.0f} s"}
    if out.exists():
        return json.loads(out.read_text())
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"id": config["id"], "config": config, "error": f"exit status {proc.returncode}: {tail[0]}"}


def combine_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the rounds of a configuration: the first failure if any round failed;
    for the GEMM the fastest round (it is a bound); otherwise the round whose median time is the
    median of the rounds' medians (lower middle for an even count), with every round's median in
    ``round_medians_ms``, min and max over all rounds, and the largest peak RSS."""
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if "error" in r or r.get("skipped")]
    if failed:
        return failed[0]
    if "sizes" in results[0]:
        chosen = dict(max(results, key=lambda r: r["gflops"]))
    else:
        ordered = sorted(results, key=lambda r: r["median_ms"])
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        chosen["round_medians_ms"] = [r["median_ms"] for r in results]
        chosen["min_ms"] = min(r["min_ms"] for r in results)
        chosen["max_ms"] = max(r["max_ms"] for r in results)
    chosen["rounds"] = len(results)
    chosen["peak_rss_mib"] = max(r["peak_rss_mib"] for r in results)
    chosen["import_rss_mib"] = min(r["import_rss_mib"] for r in results)
    return chosen


def _summary(r: dict[str, Any]) -> str:
    if "error" in r:
        return "FAILED " + r["error"].splitlines()[0]
    if r.get("skipped"):
        return r["skipped"]
    if "passed" in r:
        return "same function" if r["passed"] else "REFUSED (computes something else)"
    if "samples_per_s" in r:
        return f"{r['samples_per_s']:,.0f} samples/s"
    if "chip_samples_per_s" in r:
        return f"{r['median_ms']:.1f} ms, {r['chip_samples_per_s']:,.0f} samples/s per chip"
    if "median_ms" in r:
        return f"{r['median_ms']:.2f} ms"
    return f"{r.get('gflops', 0):.1f} GFLOP/s"


def machine() -> tuple[str, int]:
    """CPU model name (from /proc/cpuinfo) and core count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model, os.cpu_count() or 0


def versions() -> dict[str, str | None]:
    """Versions of python and every library the suite touches (neurosim: this checkout's)."""
    import importlib.metadata

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    text = (ROOT / "neurosim" / "__init__.py").read_text()
    neurosim = next((line.split("=", 1)[1].strip().strip("\"'") for line in text.splitlines()
                     if line.startswith("__version__")), None)
    return {"python": platform.python_version(), "torch": version("torch"), "numpy": version("numpy"),
            "snntorch": version("snntorch"), "spikingjelly": version("spikingjelly"), "neurosim": neurosim}


def commit() -> str:
    """``git describe``-like id of the checkout (``+dirty`` when it has local changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions (smoke test)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="glob patterns on configuration ids")
    parser.add_argument("--out", type=Path, help="RESULTS.md to write (default benchmarks/RESULTS.md, "
                                                 "benchmarks/RESULTS.quick.md with --quick)")
    parser.add_argument("--json", type=Path, help="also write all raw results as JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process (default 2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every timed configuration this many times, round-robin, each in its own "
                             "process, and report the median round (default 1; more on a busy machine)")
    parser.add_argument("--list", action="store_true", help="print the configuration ids and exit")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")

    sys.path.insert(0, str(ROOT))
    from benchmarks.networks import networks
    from benchmarks.peers import PEERS, available_peers
    from benchmarks.report import keep_notes, render
    from neurosim.files import write_json, write_text

    peers = available_peers()
    configs = select(configurations(args.quick, args.threads, peers), args.only)
    if args.list:
        print("\n".join(c["id"] for c in configs))
        return 0
    if not configs:
        parser.error("--only matches no configuration (see --list)")
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    missing = [p for p in PEERS if p not in peers]
    if missing:
        print(f"not installed (skipped): {', '.join(missing)}; pip install --no-deps snntorch spikingjelly loguru",
              file=sys.stderr)

    load_start = os.getloadavg()[0]
    started = dt.datetime.now(dt.timezone.utc)
    rounds: dict[str, list[dict[str, Any]]] = {}
    refused: set[tuple[str, str]] = set()
    schedule = [(r, c) for r in range(args.rounds) for c in configs if r == 0 or c["task"] in TIMED]
    with tempfile.TemporaryDirectory(prefix="neurosim-bench-") as tmp:
        for i, (round_, config) in enumerate(schedule, 1):
            key = (config.get("network"), config.get("library"))
            if config["task"] in ("train", "infer") and key in refused:
                result = {"id": config["id"], "config": config,
                          "skipped": "not timed: failed the equivalence check"}
            else:
                t0 = time.perf_counter()
                result = run_child(config, Path(tmp), CHILD_TIMEOUT_S[args.quick])
                result["wall_s"] = time.perf_counter() - t0
                if config["task"] == "check" and not result.get("passed"):
                    refused.add(key)
            rounds.setdefault(config["id"], []).append(result)
            where = f" (round {round_ + 1})" if args.rounds > 1 else ""
            print(f"[{i}/{len(schedule)}] {config['id']}{where}: {_summary(result)}", file=sys.stderr, flush=True)
    results = {key: combine_rounds(values) for key, values in rounds.items()}

    cpu, cores = machine()
    command = "python -m benchmarks" + ("" if argv is None and len(sys.argv) <= 1 else
                                        " " + shlex.join(sys.argv[1:] if argv is None else argv))
    meta = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
            "cpu": cpu, "cores": cores, "threads": args.threads, "load_start": load_start,
            "load_end": os.getloadavg()[0], "versions": versions(), "quick": args.quick, "rounds": args.rounds}
    previous = out.read_text() if out.exists() else None
    text = render(results, networks(args.quick), peers, meta, keep_notes(previous))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, {"meta": meta, "results": results})
    print(f"wrote {out}", file=sys.stderr)
    failed = [k for k, r in results.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
