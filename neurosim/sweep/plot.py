"""Plots of robustness sweeps: accuracy against noise with a 5-95 % band over chip instances,
several sweeps overlaid (e.g. trained with vs without noise), and per-layer firing rates."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from neurosim.device.loading import read_yaml
from neurosim.errors import NeurosimError
from neurosim.files import atomic_write


def _load(folder: Path) -> tuple[dict, list[dict[str, str]]]:
    spec_path, summary_path = folder / "sweep.yaml", folder / "summary.csv"
    if not spec_path.is_file() or not summary_path.is_file():
        raise NeurosimError(f"{folder}: not a finished sweep (sweep.yaml and summary.csv are needed)")
    spec = read_yaml(spec_path, NeurosimError)
    with open(summary_path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise NeurosimError(f"{summary_path}: no points")
    return spec, rows


def plot_sweeps(folders: list[str | os.PathLike[str]], out: str | os.PathLike[str],
                labels: list[str] | None = None) -> Path:
    """Accuracy vs noise (mean line, 5-95 percentile band) and firing rate per layer vs noise for
    each sweep folder, overlaid; written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folders = [Path(f) for f in folders]
    if labels is not None and len(labels) != len(folders):
        raise NeurosimError(f"--label: {len(labels)} labels for {len(folders)} sweeps")
    loaded = [_load(f) for f in folders]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 8.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    x_key = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (folder, (spec, rows)) in enumerate(zip(folders, loaded)):
        key = "scale" if spec.get("scales") else spec["vary"][0][0]
        if x_key is not None and key != x_key:
            raise NeurosimError(f"{folder}: sweeps over {key} and {x_key} cannot share an axis")
        x_key = key
        label = (labels[i] if labels else None) or spec.get("label") or folder.name
        color = colors[i % len(colors)]
        xs = [float(r[key]) for r in rows]
        mean = [float(r["accuracy_mean"]) for r in rows]
        top.fill_between(xs, [float(r["accuracy_p5"]) for r in rows], [float(r["accuracy_p95"]) for r in rows],
                         color=color, alpha=0.2, linewidth=0)
        top.plot(xs, mean, "o-", color=color,
                 label=f"{label} ({spec['instances']} chips of {spec.get('profile_name', '?')})")
        steps = spec.get("timesteps", 1)
        for j, (layer, neurons) in enumerate(spec.get("layers", {}).items()):
            column = f"spikes_{layer}_mean"
            if column in rows[0]:
                rate = [float(r[column]) / (neurons * steps) for r in rows]
                bottom.plot(xs, rate, ("o-", "s--", "^:", "d-.")[j % 4], color=color, label=f"{label}: {layer}")
    scale_axis = x_key == "scale"
    xlabel = "noise scale (x every sigma of the profile)" if scale_axis else x_key
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        if scale_axis:  # noise scales grow geometrically; symlog also shows scale 0
            ax.set_xscale("symlog", linthresh=0.5, base=2)
    top.set_ylabel("test accuracy (line: mean, band: 5-95 % of chips)")
    top.set_title("Accuracy on sampled chip instances as noise grows")
    top.legend(loc="lower left", fontsize=8)
    bottom.set_ylabel("firing rate (spikes / neuron / step)")
    bottom.set_xlabel(xlabel)
    bottom.legend(loc="best", fontsize=7, ncol=2)
    fig.tight_layout()
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return target


