"""One benchmark configuration in its own process: ``python -m benchmarks.child CONFIG_JSON RESULT_PATH``.

Sets the thread count of the configuration (``torch.set_num_threads``; issue 7 fixes 2), runs the
task of :mod:`benchmarks.tasks`, and writes its result as JSON to ``RESULT_PATH`` (atomically) with
the process's peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``) and the peak it had
already reached after the imports (torch, the library, and for training the lazy imports of the
first optimiser), before the task built anything. A failed task writes
``{"error": ...}`` and exits with status 1.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str]) -> int:
    config, out = json.loads(argv[0]), argv[1]
    import torch

    from neurosim.files import write_json

    torch.set_num_threads(int(config["threads"]))
    from benchmarks import tasks

    result: dict = {"id": config["id"], "config": config, "threads": torch.get_num_threads()}
    try:
        # the libraries' imports count towards the baseline, not the task
        if config.get("library") in ("snntorch", "spikingjelly"):
            __import__(config["library"])
        if config.get("library") == "neurosim":
            import neurosim.engine, neurosim.export, neurosim.train  # noqa: F401, E401
        if config["task"] in ("train", "check"):  # the first optimiser imports torch's compiler stack
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        result["import_rss_mib"] = peak_rss_mib()
        result.update(tasks.TASKS[config["task"]](config))
        status = 0
    except Exception as exc:  # reported in RESULTS.md; the other configurations go on
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=6)
        status = 1
    result["peak_rss_mib"] = peak_rss_mib()
    write_json(out, result)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
