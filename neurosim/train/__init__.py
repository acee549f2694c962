"""The training bridge (DESIGN.md §5): noise-in-the-loop BPTT, fake quantization, the seeds'
training methods, datasets and the trainer."""

from neurosim.train.config import TrainConfig, load_config
from neurosim.train.noise import ChipContext
from neurosim.train.trainer import Trainer, build_for, chip_accuracies, load_checkpoint, load_run, train

__all__ = ["ChipContext", "TrainConfig", "Trainer", "build_for", "chip_accuracies", "load_checkpoint", "load_config", "load_run", "train"]
