"""The training bridge (docs/design.md §5): noise-in-the-loop BPTT, fake quantization, the seeds'
training methods, datasets, the trainer and DistributedDataParallel under torchrun.

The package is callable: ``neurosim.train(config, out=…, **options)`` is :func:`train_model`, the
documented library entry point (the same run as ``neurosim train``).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Mapping
from typing import Any

from neurosim.train.config import TrainConfig, config_from_data, load_config
from neurosim.train.datasets import Dataset, DatasetSplit, load_dataset
from neurosim.train.noise import ChipContext
from neurosim.train.trainer import (TrainResult, Trainer, build_for, chip_accuracies, load_checkpoint, load_run,
                                    train)


def train_model(config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                out: str | os.PathLike[str] | None = None, *, resume: bool = False,
                progress: bool | None = None, dataset: Dataset | None = None, **options: Any) -> TrainResult:
    """Train a spiking network as ``neurosim train`` does and return the :class:`TrainResult`
    (trained model, config, metrics).

    ``config`` is a :class:`TrainConfig`, a mapping of its options, the path of a YAML file of
    them, or None (defaults); keyword ``options`` (e.g. ``model="mlp:128"``, ``epochs=5``,
    ``profile="hardreset-noisy"``) override it. With ``out`` the run folder is written
    (checkpoint, config, metrics), which ``neurosim export`` and :func:`load_run` read.
    """
    if isinstance(config, TrainConfig):
        config = config.model_copy(update=options) if options else config
        config = config_from_data(config.to_dict(), "options")  # validate the updated options
    elif isinstance(config, Mapping):
        config = config_from_data({**config, **options}, "options")
    elif config is not None:
        config = load_config(config, options)
    else:
        config = config_from_data(dict(options), "options")
    return train(config, out, resume=resume, progress=progress, dataset=dataset)


class _CallableTrainPackage(types.ModuleType):
    # ``neurosim.train`` is both this package and the documented function; a module subclass
    # with __call__ keeps ``neurosim.train.trainer`` importable and ``neurosim.train(...)`` working.
    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableTrainPackage

__all__ = ["ChipContext", "Dataset", "DatasetSplit", "TrainConfig", "TrainResult", "Trainer", "build_for",
           "chip_accuracies", "config_from_data", "load_checkpoint", "load_config", "load_dataset", "load_run",
           "train", "train_model"]
