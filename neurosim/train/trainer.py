"""The training bridge: BPTT with surrogate gradients and the chip in the loop (docs/design.md §5).

:class:`Trainer` trains a :class:`~neurosim.nn.layers.SpikingNetwork` for a device profile. With
``noise`` on, every training batch runs on a chip instance of the profile — a fresh one per batch
(chip index = global step) or one of a seeded pool — with its dynamic noise, and on a fixed-point
profile on the chip's integer formats (fake quantization, straight-through gradients). The
seeds' methods are switches of :class:`~neurosim.train.config.TrainConfig`.

Under ``torchrun`` the trainer runs DistributedDataParallel: every rank walks the same shuffled
global batches and takes its slice of each, the loss is scaled so that the all-reduced gradient is
the gradient of the global batch's mean loss, rank ``r`` of ``W`` trains step ``g`` on chip
instance ``g·W + r`` (disjoint seeded streams), metrics are summed over ranks, and only rank 0
writes files.

:func:`train` is the whole ``neurosim train``: it builds data, model and trainer from a config,
writes ``checkpoint.pt`` (atomically, every epoch), ``config.yaml`` and ``metrics.json`` to the
output folder, and resumes a run from its last checkpoint with identical results.
"""

from __future__ import annotations

import math
import pickle
import re
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neurosim.device import load_profile, sample_chips
from neurosim.device.chips import ChipInstances, DynamicNoise
from neurosim.device.profile import DeviceProfile
from neurosim.errors import BiasRangeWarning, ConfigError, NeurosimError, TrainingDiverged, brief
from neurosim.files import atomic_write, make_folder, write_json, write_yaml, writing
from neurosim.nn.builder import NeuronOptions, build_model, training_bytes
from neurosim.nn.layers import SpikingNetwork
from neurosim.train import methods
from neurosim.train.config import TrainConfig, config_from_data
from neurosim.train.datasets import Dataset, DatasetSplit, dataset_of
from neurosim.train.distributed import ProcessGroup, process_group
from neurosim.train.noise import ChipContext

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
METRICS = "metrics.json"
CHECKPOINT_FORMAT = 1


def neuron_options(config: TrainConfig, profile: DeviceProfile) -> NeuronOptions:
    """Neuron settings: the config's where given, else the profile's neuron model. A second
    synaptic state (``neuron.synapse_decay2``) needs a current-based profile (ConfigError)."""
    n, p = config.neuron, profile.neuron
    if n.synapse_decay2 is not None and not profile.is_current_based:
        raise ConfigError(f"neuron.synapse_decay2: profile {profile.name}'s neurons are not current-based; a second "
                          "synaptic state needs a profile with neuron.synapse_decay")
    return NeuronOptions(
        beta=n.beta if n.beta is not None else profile.beta,
        threshold=n.threshold if n.threshold is not None else p.v_threshold,
        v_reset=n.v_reset if n.v_reset is not None else p.v_reset,
        reset=n.reset or p.reset, reset_grad=n.reset_grad, synapse_decay=p.synapse_decay,
        refractory=p.refractory, learn_beta=n.learn_beta, learn_threshold=n.learn_threshold,
        v_init=n.v_init, surrogate=n.surrogate, surrogate_params=dict(n.surrogate_params),
        synapse_decay2=n.synapse_decay2)


def readout_beta(profile: DeviceProfile) -> float:
    """The readout's membrane decay on ``profile``: 1 for docs/design.md §2's integrator; a ``lif``
    readout is a neuron of the chip's own model, so its membrane decays as the chip's do."""
    return profile.beta if profile.readout.neuron == "lif" else 1.0


def build_for(config: TrainConfig, profile: DeviceProfile, input_shape: tuple[int, ...],
              num_classes: int) -> SpikingNetwork:
    """The model a config describes, for a dataset's input shape and classes; refused in one
    line (:class:`neurosim.memory.MemoryRefusal`) before anything of its size is allocated when
    training it cannot fit in the memory available (:func:`neurosim.nn.builder.training_bytes`)."""
    try:
        check_training_memory(config, profile, input_shape, num_classes)
        return build_model(config.model, input_shape, num_classes, config.timesteps,
                           neuron_options(config, profile), norm=config.norm, dropout=config.dropout,
                           tdbn_alpha=config.tdbn_alpha, readout_beta=readout_beta(profile))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from None


def check_training_memory(config: TrainConfig, profile: DeviceProfile, input_shape: tuple[int, ...],
                          num_classes: int) -> None:
    """Refuse (:class:`neurosim.memory.MemoryRefusal`) a model whose training cannot fit in memory."""
    from neurosim.memory import refuse_if_too_large

    parameters, estimate = training_bytes(config.model, input_shape, num_classes, config.timesteps,
                                          config.batch_size, neuron=neuron_options(config, profile),
                                          norm=config.norm, dropout=config.dropout, tdbn_alpha=config.tdbn_alpha,
                                          readout_beta=readout_beta(profile))
    refuse_if_too_large(f"training model {config.model} ({parameters:,} parameters, batch {config.batch_size}, "
                        f"{config.timesteps} steps)", estimate)


def training_chip_index(step: int, group: ProcessGroup) -> int:
    """The chip instance rank ``r`` of ``W`` trains global step ``g`` on: ``g·W + r``, so ranks
    draw from disjoint seeded streams and one process trains step ``g`` on chip ``g``."""
    return step * group.world + group.rank


class Trainer:
    """Train ``model`` for ``profile`` with the options of ``config`` on ``dataset``; ``group`` is
    this process's place under ``torchrun`` (default: the single process)."""

    def __init__(self, model: SpikingNetwork, profile: DeviceProfile, config: TrainConfig,
                 dataset: Dataset, progress: bool | None = None, group: ProcessGroup | None = None) -> None:
        self.model, self.profile, self.config, self.dataset = model, profile, config, dataset
        self.progress = progress
        self.group = group or ProcessGroup()
        if self.group.world > config.batch_size:
            raise ConfigError(f"batch_size {config.batch_size} is smaller than the {self.group.world} "
                              "processes sharing each batch")
        # DDP all-reduces gradients during backward; one process trains the module itself.
        self.network: torch.nn.Module = model
        if self.group.distributed:
            from torch.nn.parallel import DistributedDataParallel
            self.network = DistributedDataParallel(model)
        self.shapes = model.layer_shapes()
        params = list(model.parameters())
        if config.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        elif config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.pool: ChipInstances | None = None
        if config.noise and config.chip_pool:
            self.pool = sample_chips(profile, self.shapes, n=config.chip_pool, seed=config.seed)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.tuned_width: float | None = None
        self.width_tuning: methods.WidthTuning | None = None
        for block in model.blocks:
            block.record = config.grad_scaling.enabled
        for node in model.spiking_nodes():
            node.record = config.pda.enabled

    # ------------------------------------------------------------------ the chip

    def training_chip(self, step: int) -> ChipContext | None:
        """The chip a training batch runs on: None (ideal float) when noise and fixed point are
        both off; the nominal fixed-point chip when only noise is off; otherwise chip instance
        ``k = step·world + rank`` (fresh) or ``k mod pool`` (pool) with its dynamic noise."""
        if not self.config.noise:
            return ChipContext(self.profile) if not self.profile.numerics.is_float else None
        index = training_chip_index(step, self.group)
        if self.pool is not None:
            chips = self.pool[index % len(self.pool)]
        else:
            chips = sample_chips(self.profile, self.shapes, n=1, seed=self.config.seed, start=index)
        noise = DynamicNoise(self.profile, self.config.seed, chips.indices)
        return ChipContext(self.profile, chips, noise, batch=step)

    # ------------------------------------------------------------------ one epoch

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Cross entropy, plus ``beta`` times seed 002's PDA loss when enabled."""
        loss = F.cross_entropy(logits, targets)
        if self.config.pda.enabled:
            potentials = [node.recorded_potentials for node in self.model.spiking_nodes()]
            loss = loss + self.config.pda.beta * methods.pda_loss(potentials)
        return loss

    def batches(self, split: DatasetSplit, shuffle: bool) -> list[tuple[Tensor, Tensor]]:
        """Mini-batches of ``split`` (shuffled with the trainer's seeded generator)."""
        order = torch.randperm(len(split), generator=self.shuffle) if shuffle else None
        return split.batches(self.config.batch_size, order)

    def tune_width(self) -> methods.WidthTuning:
        """Seed 003's bisection of the surrogate width on the first training batch; one warning
        line on stderr when it ends at a bound."""
        inputs, targets = self.batches(self.dataset.train, shuffle=False)[0]
        chip = self.training_chip(0)
        cfg = self.config.tune_width
        try:
            tuning = methods.tune_surrogate_width(
                self.model, lambda m: self.loss(m(inputs, chip), targets), cfg.low, cfg.high, cfg.iterations)
        except ValueError as exc:  # a model the method does not apply to: the user's options
            raise ConfigError(f"tune_width: {exc}") from None
        self.tuned_width, self.width_tuning = tuning.gamma, tuning
        warning = tuning.warning(cfg.low, cfg.high)
        if warning and self.group.is_main:
            print(f"warning: {warning}", file=sys.stderr)
        return tuning

    def _diverged(self, why: str) -> TrainingDiverged:
        """The error that stops a run whose loss, step or state became non-finite."""
        return TrainingDiverged(f"training diverged at epoch {self.epoch + 1}, step {self.global_step}: {why}")

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training set; returns mean loss and accuracy."""
        from tqdm.auto import tqdm

        self.model.train()
        group = self.group
        total_loss, correct, seen, local_seen = 0.0, 0, 0, 0
        overflows: dict[str, str] = {}
        batches = self.batches(self.dataset.train, shuffle=True)
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False,
                   disable=not group.is_main or (None if self.progress is None else not self.progress))
        for inputs, targets in bar:
            if len(targets) < group.world:  # a last batch too small to give every rank a sample
                continue
            global_size = len(targets)
            inputs, targets = inputs.tensor_split(group.world)[group.rank], targets.tensor_split(group.world)[group.rank]
            chip = self.training_chip(self.global_step)
            logits = self.network(inputs, chip)
            if chip is not None and chip.bias_overflows:
                overflows.update(chip.bias_overflows)
            loss = self.loss(logits, targets)
            batch_loss = loss.item() * len(targets)
            if group.distributed:  # every rank must see the same verdict below, or the others hang
                batch_loss, = group.sum([batch_loss])
            if not math.isfinite(batch_loss):
                raise self._diverged(f"the loss is {batch_loss / global_size}; lower --lr or check the model")
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; this scale makes that average the gradient of the
            # global batch's mean loss (exactly the one-process gradient when slices are uneven).
            (loss * (group.world * len(targets) / global_size)).backward()
            if self.config.grad_scaling.enabled:
                methods.scale_gradients(self.model, self.config.grad_scaling.alpha, reduce=group.mean_)
            # the ranks' parameters are equal after DDP's averaged step, so both verdicts below are too
            try:
                self.optimizer.step()
            except RuntimeError as exc:  # a step too large for float32 ("... without overflow")
                if "overflow" not in str(exc):
                    raise
                raise self._diverged(f"the optimiser step overflows ({_short(exc)}); lower --lr") from None
            bad = non_finite_state(self.model)
            if bad is not None:
                raise self._diverged(f"{bad} became NaN or inf after the optimiser step; lower --lr or check the "
                                     "model")
            self.global_step += 1
            total_loss += batch_loss
            correct += (logits.argmax(1) == targets).sum().item()
            seen += global_size
            local_seen += len(targets)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / local_seen:.3f}")
        correct, = group.sum([correct])
        self.epoch += 1
        metrics = {"train_loss": total_loss / seen, "train_accuracy": correct / seen}
        if overflows:  # never silently: the line export will refuse the model with
            metrics["bias_out_of_range"] = sorted(overflows.values())
            for line in metrics["bias_out_of_range"]:
                warnings.warn(f"epoch {self.epoch}: {line}; training saturates it, export will refuse the model",
                              BiasRangeWarning, stacklevel=2)
        return metrics

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, split: DatasetSplit | None = None, chips: int = 0) -> dict[str, Any]:
        """Accuracy on the ideal float chip and, with ``chips > 0``, on that many chip instances
        of the profile (seed ``eval_seed``, chip indices 0..chips-1, with their noise). Under
        torchrun rank ``r`` evaluates batches ``b ≡ r (mod world)`` and the counts are summed, so
        the figures equal one process's."""
        split = split or self.dataset.test
        group = self.group
        self.model.eval()
        batches = self.batches(split, shuffle=False)
        mine = list(range(group.rank, len(batches), group.world))
        correct, spikes = 0, [0.0] * len(self.model.blocks)
        for b in mine:
            inputs, targets = batches[b]
            logits = self.model(inputs)
            correct += (logits.argmax(1) == targets).sum().item()
            for i, count in enumerate(self.model.last_spike_counts):
                spikes[i] += count.sum().item()
        correct, *spikes = group.sum([correct, *spikes])
        result: dict[str, Any] = {
            "accuracy": correct / len(split),
            "spikes_per_sample": sum(spikes) / len(split),
            "spikes_per_layer": [s / len(split) for s in spikes],
        }
        if chips:
            counts = chip_correct_counts(self.model, self.profile, batches, chips, self.config.eval_seed, mine)
            accuracies = [c / len(split) for c in group.sum(counts)]
            mean = sum(accuracies) / chips
            result["chip_accuracies"] = accuracies
            result["accuracy_noisy"] = mean
            result["accuracy_noisy_std"] = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / chips)
        self.model.train()
        return result


    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and plain data only); under torchrun
        every rank's random state is gathered (a collective: all ranks call it)."""
        state = {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "epoch": self.epoch,
                 "global_step": self.global_step, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "shuffle_rng": self.shuffle.get_state(),
                 "torch_rng": torch.get_rng_state(), "history": self.history,
                 "tuned_width": self.tuned_width}
        if self.group.distributed:
            state["world_size"] = self.group.world
            state["torch_rng_ranks"] = self.group.gather(torch.get_rng_state())
        return state

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically (rank 0 writes; every rank must call it)."""
        state = self.state()
        if self.group.is_main:
            atomic_write(path, lambda f: torch.save(state, f))

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` written by a run with the same number of processes."""
        world = int(state.get("world_size", 1))
        if world != self.group.world:
            raise ConfigError(f"the checkpoint was written by {world} process(es); resume it with "
                              f"the same number (torchrun --nproc_per_node), not {self.group.world}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng_ranks"][self.group.rank] if world > 1 else state["torch_rng"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history = list(state["history"])
        self.tuned_width = state.get("tuned_width")
        if self.tuned_width is not None:
            for node in self.model.spiking_nodes():
                node.surrogate.gamma = float(self.tuned_width)


@torch.no_grad()
def non_finite_state(model: torch.nn.Module) -> str | None:
    """The name of the first parameter or floating-point buffer of ``model`` (weights,
    thresholds, decays, surrogate widths, BN statistics, MP-Init potentials) that holds a NaN or
    an infinity, or None if all are finite."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


@torch.no_grad()
def chip_accuracies(model: SpikingNetwork, profile: DeviceProfile, batches: list[tuple[Tensor, Tensor]],
                    chips: int, seed: int) -> list[float]:
    """Accuracy of ``model`` (in eval mode) on chip instances 0..chips-1 of ``profile`` drawn with
    ``seed``, each with its dynamic noise (batch ``b`` of the list keys the noise)."""
    total = sum(len(targets) for _, targets in batches)
    return [c / total for c in chip_correct_counts(model, profile, batches, chips, seed)]


@torch.no_grad()
def chip_correct_counts(model: SpikingNetwork, profile: DeviceProfile, batches: list[tuple[Tensor, Tensor]],
                        chips: int, seed: int, which: list[int] | None = None) -> list[int]:
    """Correct answers of ``model`` on chip instances 0..chips-1 of ``profile`` over the batches
    numbered ``which`` (default all); batch ``b`` keys the chip's dynamic noise."""
    shapes = model.layer_shapes()
    which = range(len(batches)) if which is None else which
    result = []
    for k in range(chips):
        chip = sample_chips(profile, shapes, n=1, seed=seed, start=k)
        noise = DynamicNoise(profile, seed, chip.indices)
        correct = 0
        for b in which:
            inputs, targets = batches[b]
            logits = model(inputs, ChipContext(profile, chip, noise, batch=b))
            correct += int((logits.argmax(1) == targets).sum().item())
        result.append(correct)
    return result


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :meth:`Trainer.save`, loaded without executing code."""
    try:
        with warnings.catch_warnings():  # a plain pickle makes torch warn about its protocol before
            warnings.simplefilter("ignore")  # refusing it: the refusal below is the one line to print
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NeurosimError(f"{path}: no checkpoint there") from None
    except pickle.UnpicklingError as exc:  # weights_only refused something that is not plain data
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"the Python global {found.group(1)}" if found else "a Python object that is not plain data"
        raise NeurosimError(f"{path}: not a neurosim checkpoint: it holds {what}, refused unexecuted "
                            "(checkpoints are loaded with weights_only=True)") from None
    except Exception as exc:  # noqa: BLE001 - any other problem of a truncated, corrupt or foreign file
        reason = brief(exc) or type(exc).__name__
        raise NeurosimError(f"{path}: not a neurosim checkpoint (truncated, corrupt or another format: "
                            f"{reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NeurosimError(f"{path}: not a neurosim checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def load_run(run_dir: str | Path, dataset: Dataset | None = None) -> tuple[SpikingNetwork, TrainConfig, Dataset]:
    """The trained model of a ``neurosim train`` output folder (in eval mode), its config and
    its dataset."""
    from neurosim.train.config import load_config

    run = Path(run_dir)
    if not run.is_dir():
        raise NeurosimError(f"{run}: no such training run folder")
    config = load_config(run / CONFIG)
    state = load_checkpoint(run / CHECKPOINT)
    dataset = dataset or dataset_of(config.to_dict())
    model = build_for(config, load_profile(config.profile), dataset.input_shape, dataset.num_classes)
    try:
        model.load_state_dict(state["model"])
        if state.get("tuned_width") is not None:
            for node in model.spiking_nodes():
                node.surrogate.gamma = float(state["tuned_width"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise NeurosimError(f"{run / CHECKPOINT}: does not fit the model of {run / CONFIG} "
                            f"({_short(exc)})") from None
    bad = non_finite_state(model)
    if bad is not None:
        raise NeurosimError(f"{run / CHECKPOINT}: {bad} holds NaN or inf")
    return model.eval(), config, dataset


def init_from_run(model: SpikingNetwork, run_dir: str | Path) -> None:
    """Load the weights (and every buffer) of the model saved in training-run folder ``run_dir``
    into ``model``, which must have the same architecture (e.g. a run ``neurosim import`` wrote)."""
    path = Path(run_dir) / CHECKPOINT
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise ConfigError(f"--init-from {run_dir}: its model does not fit this run's --model/--profile; train with "
                          f"its config.yaml ({_short(exc)})") from None


@dataclass
class TrainResult:
    """What :func:`train` gives back: the trained model (eval mode), its config, the metrics
    (also written to ``metrics.json``) and the run folder (None when nothing was written)."""

    model: SpikingNetwork
    config: TrainConfig
    metrics: dict[str, Any]
    out: Path | None = None


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters (PyTorch's state-dict errors
    put the useful part on the lines after a heading)."""
    text = brief(str(exc).replace("Error(s) in loading state_dict for SpikingNetwork:", ""))
    return text or type(exc).__name__


def _kept_checkpoint(out: Path | None, epoch: int | None) -> str:
    """What a stopped run leaves: its last checkpoint (written at the end of ``epoch``), or none."""
    if out is None:
        return "nothing was saved (no output folder)"
    if epoch is None:
        return "it stopped before its first checkpoint"
    return f"kept the last good checkpoint {out / CHECKPOINT} (epoch {epoch})"


def train(config: TrainConfig, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, dataset: Dataset | None = None,
          init_from: str | Path | None = None) -> TrainResult:
    """Train as ``config`` says; with ``out_dir`` write checkpoint, config and metrics there.

    ``resume`` continues from ``out_dir/checkpoint.pt`` (the config of the run must match apart
    from ``epochs``) and ends with the weights of an uninterrupted run. ``init_from`` starts a new
    run from the weights of another run folder (:func:`init_from_run`).
    """
    start = time.perf_counter()
    group = process_group()
    out = Path(out_dir) if out_dir is not None else None
    profile = load_profile(config.profile)
    dataset = dataset or dataset_of(config.to_dict())
    torch.manual_seed(config.seed)
    model = build_for(config, profile, dataset.input_shape, dataset.num_classes)
    if group.rank > 0:  # same initial weights on every rank, but each rank its own dropout masks
        torch.manual_seed(int(np.random.SeedSequence(config.seed, spawn_key=(group.rank,)).generate_state(1)[0]))
    if init_from is not None:
        if resume:
            raise ConfigError("--init-from starts a new run; it cannot be combined with --resume")
        init_from_run(model, init_from)
    trainer = Trainer(model, profile, config, dataset, progress, group)
    with ExitStack() as held:  # one writer per run folder, from reading its checkpoint to metrics.json
        if out is not None:
            group.on_main(lambda: held.enter_context(writing(out)))
        if resume:
            if out is None:
                raise ConfigError("--resume needs --out, the folder of the run to continue")
            state = load_checkpoint(out / CHECKPOINT)
            if "optimizer" not in state:
                raise ConfigError(f"{out / CHECKPOINT}: holds weights only (an imported model), nothing to resume; "
                                  "start a run from it with --init-from")
            saved = state.get("config")
            try:  # through the schema, so options added since the run was written take their defaults
                saved = (config_from_data(dict(saved, epochs=config.epochs), "checkpoint").to_dict()
                         if isinstance(saved, dict) else None)
            except ConfigError:
                saved = None
            if saved != config.to_dict():
                raise ConfigError(f"{out / CHECKPOINT}: was trained with other options than these; "
                                  "resume with the run's own config.yaml")
            try:
                trainer.restore(state)
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise NeurosimError(f"{out / CHECKPOINT}: does not fit this model ({_short(exc)})") from None
            bad = non_finite_state(model)
            if bad is not None:
                raise NeurosimError(f"{out / CHECKPOINT}: {bad} holds NaN or inf; nothing to resume from")
        elif config.tune_width.enabled:
            trainer.tune_width()
        if out is not None and group.is_main:  # only now: a run refused above leaves no folder behind
            make_folder(out)
            write_yaml(out / CONFIG, config.to_dict())
        saved_epoch = trainer.epoch if resume else None  # the epoch of the checkpoint this run has on disk
        while trainer.epoch < config.epochs:
            try:
                epoch_metrics = trainer.train_epoch()
            except TrainingDiverged as exc:
                raise TrainingDiverged(f"{exc}; {_kept_checkpoint(out, saved_epoch)}") from None
            test = trainer.evaluate()
            epoch_metrics.update(epoch=trainer.epoch, test_accuracy=test["accuracy"])
            trainer.history.append(epoch_metrics)
            if out is not None:
                trainer.save(out / CHECKPOINT)
                saved_epoch = trainer.epoch
        final = trainer.evaluate(chips=config.eval_chips)
        metrics = {
            "test_accuracy": final["accuracy"],
            "test_accuracy_noisy": final.get("accuracy_noisy"),
            "test_accuracy_noisy_std": final.get("accuracy_noisy_std"),
            "chip_accuracies": final.get("chip_accuracies"),
            "eval_chips": config.eval_chips,
            "train_loss": trainer.history[-1]["train_loss"] if trainer.history else None,
            "spikes_per_sample": final["spikes_per_sample"],
            "spikes_per_layer": final["spikes_per_layer"],
            "epochs": trainer.epoch,
            "seconds": time.perf_counter() - start,
            "processes": group.world,
            "tuned_surrogate_width": trainer.tuned_width,
            "width_tuning": None if trainer.width_tuning is None else trainer.width_tuning._asdict(),
            "history": trainer.history,
        }
        if init_from is not None:
            metrics["initialized_from"] = str(init_from)
        if out is not None and group.is_main:
            write_json(out / METRICS, metrics)
    return TrainResult(model.eval(), config, metrics, out)
