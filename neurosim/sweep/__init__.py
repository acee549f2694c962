"""Robustness sweeps (docs/design.md §6): noise grids x Monte-Carlo chip instances, resumable and
sharded under torchrun, with CSV results and plots.

The package is callable: ``neurosim.sweep(source, out, scales=[…])`` is :func:`sweep_noise`, the
documented library entry point (the same run as ``neurosim sweep``).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

from neurosim.errors import ConfigError
from neurosim.sweep.grid import make_points, parse_values, parse_vary, profile_at
from neurosim.sweep.plot import plot_sweeps
from neurosim.sweep.runner import SweepSpec, run_sweep, source_kind


def sweep_noise(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
                scales: Sequence[float] | None = None,
                vary: Mapping[str, Sequence[float]] | Sequence[tuple[str, Sequence[float]]] | None = None,
                instances: int = 16, seed: int = 0, profile: str | None = None, batch_size: int = 64,
                dataset: str | None = None, data_root: str | None = None, chunk: int = 8,
                label: str | None = None, resume: bool = False, progress: bool | None = None) -> list[dict[str, Any]]:
    """Evaluate ``source`` (an exported artifact folder, run on the integer engine, or a training
    run folder, run on its fake-quant forward) on ``instances`` seeded chips at every grid point,
    as ``neurosim sweep`` does; writes ``results.csv``, ``summary.csv``, ``sweep.yaml`` and
    ``plot.png`` to ``out`` and returns the summary rows (mean, std, min, p5, p50, p95 per point).

    The grid is either ``scales`` (every sigma of the profile times k) or ``vary`` (profile keys
    such as ``"variation.v_threshold.sigma"`` to lists of values; the product of the lists).
    """
    pairs = list(vary.items()) if isinstance(vary, Mapping) else list(vary or [])
    try:
        scale_list = [float(k) for k in scales] if scales is not None else None
        vary_list = [[str(key), [float(v) for v in values]] for key, values in pairs]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep grid: scales and vary values must be numbers ({exc})") from None
    spec = SweepSpec(source=str(source), scales=scale_list, vary=vary_list, profile=profile,
                     instances=instances, seed=seed, batch_size=batch_size, dataset=dataset,
                     data_root=data_root, chunk=chunk, label=label)
    return run_sweep(spec, out, resume=resume, progress=progress)


class _CallableSweepPackage(types.ModuleType):
    # ``neurosim.sweep`` is both this package and the documented function (see neurosim.train).
    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return sweep_noise(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableSweepPackage

__all__ = ["SweepSpec", "make_points", "parse_values", "parse_vary", "plot_sweeps", "profile_at", "run_sweep",
           "source_kind", "sweep_noise"]
