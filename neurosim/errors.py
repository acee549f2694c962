"""Error types of neurosim.

Every error a user can cause (a bad profile, a model that does not fit a chip, a corrupt
artifact, a wrong path) is a :class:`NeurosimError`. The command line prints its message as one
line and exits with status 2; nothing else escapes as a traceback.
"""

from __future__ import annotations


def brief(exc: BaseException | str, limit: int = 200) -> str:
    """An exception's message (or a text) on one line, cut to ``limit`` characters, for quoting
    inside a one-line error ("... (reason)")."""
    return " ".join(str(exc).split())[:limit]


class NeurosimError(Exception):
    """Base class of the errors a user can cause; the CLI turns them into one line and exit 2."""


class ProfileError(NeurosimError):
    """A device profile is missing, not valid YAML, or breaks the schema of docs/design.md §3.

    The message names the file, the key path (e.g. ``variation.v_threshold.sigma``) and what
    was expected.
    """


class DatasetError(NeurosimError):
    """A dataset folder is missing, empty, or holds files that are not what the loader expects.

    The message names the folder or file and what was wrong with it.
    """


class ConfigError(NeurosimError):
    """A training or experiment configuration has an unknown key or a value of the wrong type."""


class ExportError(NeurosimError):
    """A model does not fit a chip: a limit, a number format or the neuron model.

    The message names the layer, the limit and the value; nothing is written.
    """


class ArtifactError(NeurosimError):
    """A deployment artifact is missing, truncated, altered, of another format version, or not
    an artifact at all."""



class OutputError(NeurosimError):
    """An output file or folder cannot be written: no permission, a read-only or full disk, a
    path that runs through a regular file. The message names the path and the system's reason;
    the file that was there before, if any, is unchanged."""


class TrainingDiverged(NeurosimError):
    """Training produced a NaN or infinite loss, weight, threshold or state; the message names
    the epoch, the step and what became non-finite, and the last good checkpoint is kept."""


class BiasRangeWarning(UserWarning):
    """Training saturated a bias the chip cannot hold (mantissa and exponent of
    ``numerics.bias_bits`` / ``bias_exp``); export will refuse the model with the same line
    (:func:`neurosim.device.quantization.check_bias`)."""
