"""Robustness sweeps (DESIGN.md §6): noise grids x Monte-Carlo chip instances, resumable and
sharded under torchrun, with CSV results and plots."""

from neurosim.sweep.grid import make_points, parse_values, parse_vary, profile_at
from neurosim.sweep.plot import plot_sweeps
from neurosim.sweep.runner import SweepSpec, run_sweep, source_kind

__all__ = ["SweepSpec", "make_points", "parse_values", "parse_vary", "plot_sweeps", "profile_at", "run_sweep",
           "source_kind"]
