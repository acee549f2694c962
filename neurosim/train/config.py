"""The training configuration: every option of ``neurosim train``, as flags or a YAML file.

Each training method of the seeds is one switch (docs/design.md §5), so an ablation is one flag:

==========================  ====  ==========================================================
switch                      seed  what
==========================  ====  ==========================================================
``neuron.reset_grad``       000   clip (default for hard reset) | detach | full
``noise``                   000   chip noise in the loop (variation, dynamic noise, fake-quant)
``grad_scaling.enabled``    001   scale weight gradients by the pre/post spike-trace relation
``neuron.surrogate: psg``   002   learnable surrogate width per layer
``pda.enabled``             002   potential-distribution loss, weight ``pda.beta``
``norm: bn``                003   batch norm on the input currents
``tune_width.enabled``      003   bisection of the fast-sigmoid width before training
``neuron.v_init: mp_init``  004   membrane-potential initialisation
``neuron.surrogate: trsg``  004   threshold-robust surrogate (with ``learn_threshold``)
``norm: tdbn``              000+  threshold-dependent batch norm (alpha * theta)
==========================  ====  ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neurosim.device.loading import read_yaml
from neurosim.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class NeuronConfig(_Section):
    """Neuron settings; values left out come from the profile's ``neuron`` section."""

    beta: float | None = Field(default=None, gt=0, le=1)
    threshold: float | None = Field(default=None, gt=0)
    v_reset: float | None = None
    reset: Literal["hard", "soft"] | None = None
    reset_grad: Literal["clip", "detach", "full"] | None = None
    surrogate: Literal["atan", "fast_sigmoid", "rectangle", "triangle", "psg", "trsg"] = "atan"
    surrogate_params: dict[str, float | str | bool] = Field(default_factory=dict)
    v_init: Literal["zero", "mp_init"] = "zero"
    learn_threshold: bool = False
    learn_beta: bool = False
    synapse_decay2: float | None = Field(default=None, gt=0, le=1)
    """A second synaptic state per hidden neuron with this decay (Xylo's syn 2): current-based
    profiles and dense layers only."""


class GradScalingConfig(_Section):
    """Seed 001: ``g <- alpha (g o R) + (1 - alpha) g``."""

    enabled: bool = False
    alpha: float = Field(default=0.1, ge=0, le=1)


class PDAConfig(_Section):
    """Seed 002: potential-distribution loss with weight ``beta``."""

    enabled: bool = False
    beta: float = Field(default=1.0, ge=0)


class TuneWidthConfig(_Section):
    """Seed 003: bisection of the fast-sigmoid width gamma in ``[low, high]``."""

    enabled: bool = False
    low: float = Field(default=0.5, gt=0)
    high: float = Field(default=100.0, gt=0)
    iterations: int = Field(default=8, ge=1, le=40)


class EventsConfig(_Section):
    """Event datasets (nmnist, dvsgesture, event-folder): how a recording becomes ``timesteps``
    frames (:mod:`neurosim.train.events`): x and y divided by ``downsample``, and frame values
    ``min(count, clip) / clip``."""

    downsample: int = Field(default=1, ge=1)
    clip: int = Field(default=1, ge=1)


class TrainConfig(_Section):
    """Everything ``neurosim train`` needs to rebuild and re-run a training."""

    dataset: str = "digits"
    data_root: str | None = None
    model: str = "mlp:128-128"
    profile: str = "hardreset-noisy"
    timesteps: int = Field(default=4, ge=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=2e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, ge=0)
    noise: bool = True
    chip_pool: int = Field(default=0, ge=0)
    eval_chips: int = Field(default=8, ge=0)
    eval_seed: int = Field(default=1234, ge=0)
    norm: Literal["none", "bn", "tdbn"] = "none"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    tdbn_alpha: float = Field(default=1.0, gt=0)
    neuron: NeuronConfig = Field(default_factory=NeuronConfig)
    grad_scaling: GradScalingConfig = Field(default_factory=GradScalingConfig)
    pda: PDAConfig = Field(default_factory=PDAConfig)
    tune_width: TuneWidthConfig = Field(default_factory=TuneWidthConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``config.yaml``."""
        return self.model_dump(mode="json")


SEED_METHODS: dict[str, dict[str, Any]] = {
    "default: atan, reset gradient clip (seed 000)": {},
    "reset gradient detach": {"neuron": {"reset_grad": "detach"}},
    "reset gradient full": {"neuron": {"reset_grad": "full"}},
    "gradient scaling (seed 001)": {"grad_scaling": {"enabled": True}},
    "PSG (seed 002)": {"neuron": {"surrogate": "psg"}},
    "PDA (seed 002)": {"pda": {"enabled": True}},
    "PSG + PDA (seed 002)": {"neuron": {"surrogate": "psg"}, "pda": {"enabled": True}},
    "BN on currents (seed 003)": {"norm": "bn"},
    "BN + width tuning, fast_sigmoid (seed 003)": {"norm": "bn", "neuron": {"surrogate": "fast_sigmoid"},
                                                   "tune_width": {"enabled": True}},
    "tdBN (alpha 1)": {"norm": "tdbn"},
    "MP-Init (seed 004)": {"neuron": {"v_init": "mp_init"}},
    "TrSG + learnable threshold (seed 004)": {"neuron": {"surrogate": "trsg", "learn_threshold": True}},
    "MP-Init + TrSG (seed 004)": {"neuron": {"surrogate": "trsg", "learn_threshold": True, "v_init": "mp_init"}},
    "surrogate fast_sigmoid (gamma 5)": {"neuron": {"surrogate": "fast_sigmoid"}},
    "surrogate rectangle (width 2)": {"neuron": {"surrogate": "rectangle"}},
    "surrogate triangle (width 2)": {"neuron": {"surrogate": "triangle"}},
}
"""Each method of the seeds, and each surrogate at its default width, as the options that switch
it on (over the defaults): the catalogue that examples/method_table.py trains and
tests/test_everything_trains.py checks."""


def with_options(base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over the config mapping ``base``, section by section (``neuron``, ``pda``, ...)."""
    return _merge(base, options)


def config_from_data(data: Any, where: str) -> TrainConfig:
    """Validate a mapping as a TrainConfig; errors name ``where`` and the key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of training options, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            value = "" if err["type"] in ("missing", "extra_forbidden") else f", got {err.get('input')!r}"
            parts.append(f"{key}: {msg}{value}")
        raise ConfigError(f"{where}: " + "; ".join(parts)) from None


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file, with ``overrides`` (e.g. command-line flags) on top."""
    path = Path(path)
    data = read_yaml(path, ConfigError)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of training options")
    return config_from_data(_merge(data, overrides or {}), str(path))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
