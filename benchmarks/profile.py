"""Where a benchmark configuration spends its time: ``python -m benchmarks.profile ID``.

Builds the same closure the suite times (:data:`benchmarks.tasks.WORKLOADS`), warms it up, and
runs it under ``torch.profiler`` (operators by self CPU time, with their autograd backward
nodes) and ``cProfile`` (Python functions by own time, for the interpreter overhead around
the operators). Example::

    python -m benchmarks.profile A/train/neurosim --threads 2
    python -m benchmarks.profile A/engine/one-chip --calls 5

Ids are those of ``python -m benchmarks --list``. Writes nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

from benchmarks.__main__ import ENGINE_CHIPS, configurations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("id", help="configuration id, e.g. A/train/neurosim")
    parser.add_argument("--quick", action="store_true", help="the tiny sizes of --quick")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--calls", type=int, default=5, help="profiled calls (default 5)")
    parser.add_argument("--rows", type=int, default=25, help="rows of each table (default 25)")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.peers import available_peers
    from benchmarks.tasks import WORKLOADS

    configs = {c["id"]: c for c in configurations(args.quick, args.threads, available_peers())}
    if args.id not in configs or configs[args.id]["task"] not in WORKLOADS:
        known = ", ".join(k for k, c in configs.items() if c["task"] in WORKLOADS)
        parser.error(f"{args.id!r} is not a timed configuration; one of: {known}")
    config = configs[args.id]
    torch.set_num_threads(args.threads)
    run, _ = WORKLOADS[config["task"]](config)
    for _ in range(2):
        run()
    start = time.perf_counter()
    for _ in range(args.calls):
        run()
    per_call = (time.perf_counter() - start) / args.calls * 1e3
    print(f"{args.id}: {per_call:.2f} ms per call ({args.calls} calls, {torch.get_num_threads()} threads"
          + (f", {ENGINE_CHIPS[args.quick]} chips" if config["task"] == "engine" and config["chips"] > 1 else "")
          + ")\n")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.calls):
            run()
    print("torch.profiler, operators by self CPU time (totals over the calls):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    stats_out = io.StringIO()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.calls):
        run()
    profiler.disable()
    pstats.Stats(profiler, stream=stats_out).sort_stats("tottime").print_stats(args.rows)
    print("cProfile, Python functions by own time:")
    print(stats_out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
