"""Robustness sweeps: points of a noise grid x Monte-Carlo chip instances (docs/design.md §6).

:func:`run_sweep` evaluates a training run (with the fake-quant training forward) or a deployment
artifact (on the integer engine) at every point of the grid on chips ``0 .. instances - 1``
drawn with the sweep's seed, so instance ``k`` at a point is the same chip on every run, with its
pattern scaled by the point. Results stream to ``OUT/results.csv`` (one row per point x
instance, appended and fsynced chunk by chunk); a killed sweep continues with ``resume=True``
and ends with exactly the rows of an uninterrupted one. ``OUT/summary.csv`` (mean, std, min and
5/50/95 percentiles per point), ``OUT/sweep.yaml`` (all that is needed to re-run it) and
``OUT/plot.png`` complete it.

Under ``torchrun`` (``WORLD_SIZE > 1``) the work is sharded over processes (torch.distributed,
gloo on CPU): each round every rank evaluates one chunk of instances, rank 0 gathers the rows and
writes them in the order a single process would.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurosim import __version__
from neurosim.device import DynamicNoise, load_profile, sample_chips
from neurosim.device.profile import DeviceProfile
from neurosim.engine.engine import count_synaptic_ops, estimate_energy
from neurosim.engine.evaluate import chip_block, evaluate_deployment
from neurosim.errors import ConfigError, NeurosimError, OutputError
from neurosim.files import make_folder, os_reason, write_text, write_yaml, writing
from neurosim.interrupts import held_signals
from neurosim.sweep.grid import Point, make_points, profile_at
from neurosim.train.distributed import process_group

METRICS = ("accuracy", "spikes_per_sample", "synops_per_sample", "energy_pj_per_sample", "saturations_per_sample")
STATISTICS = ("mean", "std", "min", "p5", "p50", "p95")
RESULTS, SUMMARY, SPEC, PLOT = "results.csv", "summary.csv", "sweep.yaml", "plot.png"


@dataclass
class SweepSpec:
    """What a sweep evaluates; saved as ``sweep.yaml``."""

    source: str
    scales: list[float] | None = None
    vary: list[list[Any]] = field(default_factory=list)
    profile: str | None = None
    instances: int = 16
    seed: int = 0
    batch_size: int = 64
    dataset: str | None = None
    data_root: str | None = None
    chunk: int = 8
    label: str | None = None

    def points(self) -> list[Point]:
        """The grid's points in order."""
        return make_points(self.scales, [(k, list(v)) for k, v in self.vary])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for sweep.yaml."""
        return dataclasses.asdict(self)


def source_kind(source: str | Path) -> str:
    """``artifact`` (a folder with manifest.yaml) or ``run`` (a folder with checkpoint.pt)."""
    path = Path(source)
    if (path / "manifest.yaml").is_file():
        return "artifact"
    if (path / "checkpoint.pt").is_file():
        return "run"
    raise NeurosimError(f"{path}: neither a training run (checkpoint.pt) nor a deployment artifact (manifest.yaml)")


class _Evaluator:
    """Evaluates chips of a profile point on the test split of the source's dataset."""

    def __init__(self, spec: SweepSpec) -> None:
        from neurosim.train.datasets import dataset_of

        self.kind = source_kind(spec.source)
        self.spec = spec
        if self.kind == "artifact":
            from neurosim.export import load_deployment
            self.deployment = load_deployment(spec.source)
            training = self.deployment.metadata.get("training", {})
            base = self.deployment.profile
            self.layers = {layer.name: (int(np.prod(layer.output_shape)), layer.readout) for layer in self.deployment.layers}
            self.timesteps = self.deployment.timesteps
        else:
            from neurosim.train.trainer import load_run
            self.model, config, loaded = load_run(spec.source)
            base = load_profile(config.profile)
            shapes = self.model.layer_shapes()
            self.layers = {name: (int(np.prod(s.neurons)), name == "readout") for name, s in shapes.items()}
            self.timesteps = self.model.timesteps
            training = config.to_dict()
        self.base = load_profile(spec.profile) if spec.profile else base
        if self.kind == "run" and spec.dataset is None and spec.data_root is None:
            self.split = loaded.test  # the run's own dataset, already loaded
        else:
            self.split = dataset_of(training, spec.dataset, spec.data_root, self.timesteps).test

    def spiking_layers(self) -> list[str]:
        return [name for name, (_, readout) in self.layers.items() if not readout]

    def profile_at(self, point: Point) -> DeviceProfile:
        """The profile of a point; an artifact's number formats and neuron model cannot vary."""
        profile = profile_at(self.base, point)
        if self.kind == "artifact":
            dep = self.deployment
            if profile.numerics != dep.profile.numerics or profile.neuron != dep.profile.neuron:
                raise ConfigError(f"point {point}: an artifact's number formats and neuron model are fixed at "
                                  "export; sweep variation, noise or faults keys, or sweep the training run")
        elif not profile.numerics.is_float and self.kind == "run":
            from neurosim.train.noise import ChipContext
            ChipContext(profile)  # refuses what the training forward cannot simulate
        return profile

    def check_memory(self, points: list[Point]) -> None:
        """Refuse (:class:`neurosim.memory.MemoryRefusal`) an artifact of which one chip at some
        point cannot be evaluated in the memory available, before anything is written."""
        if self.kind != "artifact":
            return
        batch = min(self.spec.batch_size, max(len(self.split), 1))
        for point in points:
            chip_block(dataclasses.replace(self.deployment, profile=self.profile_at(point)), 1, batch, self.split)

    def rows(self, point: Point, instances: list[int]) -> list[dict[str, float]]:
        profile = self.profile_at(point)
        return self._artifact_rows(profile, instances) if self.kind == "artifact" else self._run_rows(profile, instances)

    def _artifact_rows(self, profile: DeviceProfile, instances: list[int]) -> list[dict[str, float]]:
        deployment = dataclasses.replace(self.deployment, profile=profile)
        report = evaluate_deployment(deployment, self.split, chips=len(instances), seed=self.spec.seed,
                                     batch_size=self.spec.batch_size, progress=False, first_chip=instances[0])
        rows = []
        for j, k in enumerate(instances):
            counts = {name: {what: values[j] for what, values in c.items()} for name, c in report.layer_counts.items()}
            energy = None if report.energy_pj_per_sample is None else report.energy_pj_per_sample[j]
            layer_energy = (None if report.layer_energy_pj is None
                            else {name: values[j] for name, values in report.layer_energy_pj.items()})
            rows.append(self._row(k, report.accuracies[j], counts, energy, layer_energy))
        return rows

    @torch.no_grad()
    def _run_rows(self, profile: DeviceProfile, instances: list[int]) -> list[dict[str, float]]:
        from neurosim.train.noise import ChipContext

        model, split, size = self.model, self.split, self.spec.batch_size
        shapes = model.layer_shapes()
        for block in model.blocks:
            block.record = True
        model.readout.record = True
        rows = []
        try:
            for k in instances:
                chip = sample_chips(profile, shapes, n=1, seed=self.spec.seed, start=k)
                noise = DynamicNoise(profile, self.spec.seed, chip.indices)
                correct = 0
                counts = {name: {"spikes": 0.0, "synaptic_ops": 0.0, "neuron_updates": 0.0, "saturations": 0.0}
                          for name in self.layers}
                for b, (x, y) in enumerate(split.batches(size)):
                    ctx = ChipContext(profile, chip, noise, batch=b, count_events=True)
                    logits = model(x, ctx)
                    correct += int((logits.argmax(1) == y).sum())
                    self._count_forward(counts, ctx, len(y))
                n = len(split)
                per_sample = {name: {what: v / n for what, v in c.items()} for name, c in counts.items()}
                energy = estimate_energy(profile.energy, *(torch.tensor(sum(c[w] for c in per_sample.values()))
                                                           for w in ("spikes", "synaptic_ops", "neuron_updates")))
                layer_energy = {name: estimate_energy(profile.energy, *(torch.tensor(c[w]) for w in
                                                                        ("spikes", "synaptic_ops", "neuron_updates")))
                                for name, c in per_sample.items()}
                rows.append(self._row(k, correct / n, per_sample, None if energy is None else float(energy),
                                      None if energy is None else {n_: float(e) for n_, e in layer_energy.items()}))
        finally:
            for block in model.blocks:
                block.record = False
            model.readout.record = False
        return rows

    def _count_forward(self, counts: dict[str, dict[str, float]], ctx, batch: int) -> None:
        model = self.model
        for block, spikes in zip(model.blocks, model.last_spike_counts):
            c = counts[block.name]
            c["spikes"] += float(spikes.sum())
            synapse = block.synapse
            kind = "conv2d" if isinstance(synapse, torch.nn.Conv2d) else "linear"
            stride = synapse.stride[0] if kind == "conv2d" else 1
            padding = synapse.padding[0] if kind == "conv2d" else 0
            c["synaptic_ops"] += float(count_synaptic_ops(block.recorded_input, kind, tuple(synapse.weight.shape),
                                                          stride, padding).sum())
            c["neuron_updates"] += float(self.layers[block.name][0] * batch * model.timesteps)
        read = counts["readout"]
        read["synaptic_ops"] += float(count_synaptic_ops(model.readout.recorded_input, "linear",
                                                         tuple(model.readout.synapse.weight.shape)).sum())
        read["neuron_updates"] += float(self.layers["readout"][0] * batch * model.timesteps)
        for name, events in ctx.events.items():
            counts[name]["saturations"] += float(events)

    def _row(self, k: int, accuracy: float, counts: dict[str, dict[str, float]], energy: float | None,
             layer_energy: dict[str, float] | None = None) -> dict[str, float]:
        """One results.csv row: totals per sample over layers, spikes per spiking layer and energy
        per layer (pJ per sample; NaN where the profile has no energy figures)."""
        row = {"instance": k, "accuracy": accuracy,
               "spikes_per_sample": sum(c["spikes"] for c in counts.values()),
               "synops_per_sample": sum(c["synaptic_ops"] for c in counts.values()),
               "energy_pj_per_sample": math.nan if energy is None else energy,
               "saturations_per_sample": sum(c["saturations"] for c in counts.values())}
        for name in self.spiking_layers():
            row[f"spikes_{name}"] = counts[name]["spikes"]
        for name in self.layers:
            row[f"energy_pj_{name}"] = math.nan if layer_energy is None else layer_energy[name]
        return row


# ------------------------------------------------------------------ files

def _columns(setting_keys: list[str], layers: list[str], all_layers: list[str]) -> list[str]:
    """results.csv's columns: the point, its settings, the metrics, spikes per spiking layer and
    energy per layer (readout included)."""
    return ["point", "instance", *setting_keys, *METRICS, *[f"spikes_{name}" for name in layers],
            *[f"energy_pj_{name}" for name in all_layers]]


def _read_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Rows already in results.csv; a trailing partial line (a kill mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        try:
            with open(path, "r+b") as handle:
                handle.truncate(len(data))
        except OSError as exc:
            raise OutputError(f"{path}: cannot cut off its torn last line ({os_reason(exc)})") from None
    lines = data.decode("utf-8").splitlines()
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    if header != columns:
        raise NeurosimError(f"{path}: columns {header} are not this sweep's; use another --out")
    return [dict(zip(columns, row)) for row in csv.reader(lines[1:]) if row]


def unique_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each (point, instance) once, its first row kept: results.csv can hold a pair twice when an
    older neurosim let two processes append to one sweep. The first row is the one written when
    the pair was first evaluated; a later duplicate is a re-evaluation of the same seeded chip
    (identical, or a concurrent writer's), so the summary and ``--resume`` never count it."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for row in rows:
        key = (int(row["point"]), int(row["instance"]))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _summary(rows: list[dict[str, str]], points: list[Point], setting_keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for i, point in enumerate(points):
        mine = [r for r in rows if int(r["point"]) == i]
        entry: dict[str, Any] = {"point": i, **point, "instances": len(mine)}
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in mine], dtype=np.float64)
            if len(values) == 0 or np.isnan(values).all():
                stats = [math.nan] * len(STATISTICS)
            else:
                stats = [values.mean(), values.std(), values.min(), *np.percentile(values, [5, 50, 95])]
            entry.update({f"{metric}_{name}": float(v) for name, v in zip(STATISTICS, stats)})
        for key in rows[0] if rows else []:
            if key.startswith("spikes_block") or (key.startswith("energy_pj_") and key not in METRICS):
                entry[f"{key}_mean"] = float(np.mean([float(r[key]) for r in mine])) if mine else math.nan
        out.append(entry)
    return out


def _csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    import io
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in row.items()})
    return buffer.getvalue()


# ------------------------------------------------------------------ the sweep

def run_sweep(spec: SweepSpec, out: str | Path, resume: bool = False, progress: bool | None = None,
              strict: bool = False) -> list[dict[str, Any]]:
    """Run (or continue) a sweep into ``out``; returns the summary rows (rank 0; others get []).

    With ``strict``, the first result row with saturation or wrap events (integer overflow of a
    membrane or synaptic state) stops the sweep with a :class:`NeurosimError`; the rows written
    until then are kept and ``resume`` continues after them."""
    from tqdm.auto import tqdm

    out = Path(out)
    group = process_group()
    rank, world = group.rank, group.world
    points = spec.points()
    if spec.instances < 1 or spec.chunk < 1 or spec.batch_size < 1:
        raise ConfigError("--instances, --chunk and --batch-size must be at least 1")
    if spec.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {spec.seed}")
    evaluator = _Evaluator(spec)
    for point in points:  # every point must be valid before anything is written
        evaluator.profile_at(point)
    evaluator.check_memory(points)
    setting_keys = list(points[0])
    layers = evaluator.spiking_layers()
    columns = _columns(setting_keys, layers, list(evaluator.layers))
    facts = {"layers": {name: n for name, (n, readout) in evaluator.layers.items() if not readout},
             "timesteps": evaluator.timesteps, "kind": evaluator.kind, "profile_name": evaluator.base.name}
    summary: list[dict[str, Any]] = []
    with ExitStack() as held:  # one writer per sweep folder, from sweep.yaml to plot.png
        results = out / RESULTS
        group.on_main(lambda: (held.enter_context(writing(out)), _prepare(out, spec, resume, columns, facts)))
        existing = unique_rows(_read_rows(results, columns))
        if strict:
            _refuse_overflow(existing, points, results)
        done = {(int(r["point"]), int(r["instance"])) for r in existing}
        chunk = min(spec.chunk, chunk_limit(len(columns)))
        finished = Counter(i for i, k in done if k < spec.instances)
        total = sum(math.ceil((spec.instances - finished[i]) / chunk) for i in range(len(points)))
        items = _chunks(len(points), spec.instances, chunk, done)
        bar = tqdm(total=total, desc="sweep", disable=(rank != 0) or (None if progress is None else not progress))
        for r in range(0, total, world):
            round_items = list(itertools.islice(items, world))
            mine = round_items[rank] if rank < len(round_items) else None
            rows = [] if mine is None else [{"point": mine[0], **points[mine[0]], **row}
                                            for row in evaluator.rows(points[mine[0]], mine[1])]
            new_rows = [row for part in group.gather(rows) for row in part]
            if rank == 0:
                _append_rows(results, columns, new_rows)
                bar.update(len(round_items))
            if strict:
                _refuse_overflow(new_rows, points, results)
        bar.close()
        if rank == 0:
            rows = unique_rows(_read_rows(results, columns))
            summary = _summary(rows, points, setting_keys)
            write_text(out / SUMMARY, _csv_text(summary))
            from neurosim.sweep.plot import plot_sweeps
            plot_sweeps([out], out / PLOT)
        group.barrier()
    return summary


ROW_BYTES_PER_COLUMN = 160
"""Memory one results.csv value takes while its chunk is held (a dict entry, a float, its text)."""


def chunk_limit(columns: int) -> int:
    """Most instances one chunk may hold: rows within :func:`neurosim.memory.block_budget`, and
    no more chips than an evaluation reports one by one (:data:`~neurosim.engine.evaluate.PER_CHIP_LIMIT`).
    A larger ``--chunk`` is cut to it; rows do not depend on the chunk. The limit does not
    depend on the memory free at the moment, so every process of a sharded sweep cuts alike."""
    from neurosim.engine.evaluate import PER_CHIP_LIMIT
    from neurosim.memory import BLOCK_CAP, BLOCK_SHARE, block_budget

    budget = block_budget(available=BLOCK_SHARE * BLOCK_CAP)  # BLOCK_CAP, or NEUROSIM_BLOCK_BYTES
    return max(1, min(PER_CHIP_LIMIT, budget // (ROW_BYTES_PER_COLUMN * max(columns, 1))))


def _chunks(points: int, instances: int, chunk: int, done: set[tuple[int, int]]):
    """``(point, [instances])`` of at most ``chunk`` instances not yet ``done``, in order, made one
    at a time so that memory does not grow with the number of instances."""
    for i in range(points):
        part: list[int] = []
        for k in range(instances):
            if (i, k) in done:
                continue
            part.append(k)
            if len(part) == chunk:
                yield i, part
                part = []
        if part:
            yield i, part


def _append_rows(results: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Append result rows and fsync them; a signal is held until the chunk is on disk, so the
    file never ends in a torn line unless the process is killed outright."""
    with held_signals():
        try:
            with open(results, "a", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                for row in rows:
                    writer.writerow([_format(row[c]) for c in columns])
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise OutputError(f"{results}: cannot append result rows ({os_reason(exc)}); the rows before "
                              "them are kept, --resume continues") from None


def _refuse_overflow(rows: list[dict[str, Any]], points: list[Point], results: Path) -> None:
    """``--strict``: a NeurosimError naming the first row with saturation/wrap events."""
    for row in rows:
        events = float(row["saturations_per_sample"])
        if events > 0:
            point = points[int(row["point"])]
            setting = ", ".join(f"{k}={v:g}" for k, v in point.items())
            raise NeurosimError(f"{results}: point {row['point']} ({setting}), chip {row['instance']}: "
                                f"{events:g} saturation/wrap events per sample (integer overflow; --strict)")


def _prepare(out: Path, spec: SweepSpec, resume: bool, columns: list[str], facts: dict[str, Any]) -> None:
    spec_path = out / SPEC
    saved = {**spec.to_dict(), "neurosim_version": __version__, "columns": columns, **facts}
    if resume:
        if not spec_path.is_file():
            raise NeurosimError(f"{out}: no sweep to resume ({SPEC} is missing)")
        from neurosim.device.loading import read_yaml
        previous = read_yaml(spec_path, NeurosimError)
        if not isinstance(previous, dict) or {k: v for k, v in previous.items() if k != "neurosim_version"} != \
                {k: v for k, v in saved.items() if k != "neurosim_version"}:
            raise NeurosimError(f"{spec_path}: this sweep was started with other options; resume it with "
                                "the same ones (see that file)")
        if not (out / RESULTS).exists():  # stopped between sweep.yaml and the header
            write_text(out / RESULTS, ",".join(columns) + "\n")
        return
    if spec_path.exists() or (out / RESULTS).exists():
        raise NeurosimError(f"{out}: a sweep is already there; --resume continues it, or choose another --out")
    make_folder(out)
    write_yaml(spec_path, saved)
    write_text(out / RESULTS, ",".join(columns) + "\n")
