"""The bad-input corpus (tests/data/bad/): every file through the command that reads it.

Each entry is a hand-written or generated input with one thing wrong, named for it. For every
command that reads it, the command must exit with status 2, print exactly one line on stderr
that starts with ``error:``, names the input and says what is wrong (the words in ``CASES``),
print no traceback, and leave every file as it was: the corpus is copied to a temporary folder
that is also the working directory and the output location, and that whole folder is hashed
before and after. A malicious pickle or YAML tag in the corpus would create a marker file there
if anything executed it.

This is the one place where every bad file goes through the CLI; the loaders' own tests
(test_profiles, test_export, test_datasets, test_training) check the details of each error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurosim.cli import main
from neurosim.device.loading import PARSERS, read_yaml
from neurosim.errors import NeurosimError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "bad"
NOT_CASES = {"README.md", "generate.py"}

# ------------------------------------------------------------------ which command reads what

PROFILE = (("profile", "validate", "{input}"),
           ("train", "--profile", "{input}", "--epochs", "1", "--out", "{out}", "--no-progress"))
CONFIG = (("train", "--config", "{input}", "--out", "{out}", "--no-progress"),)
ARTIFACT = (("run", "{input}", "--chips", "2", "--no-progress"),
            ("sweep", "{input}", "--scale", "1", "--instances", "2", "--out", "{out}", "--no-progress"))
RUN = (("export", "{input}", "--out", "{out}"),
       ("sweep", "{input}", "--scale", "1", "--instances", "2", "--out", "{out}", "--no-progress"),
       ("train", "--config", "{input}/config.yaml", "--out", "{input}", "--resume", "--no-progress"))
MNIST = (("train", "--dataset", "mnist", "--data-root", "{input}", "--epochs", "1", "--out", "{out}",
          "--no-progress"),)
CIFAR = (("train", "--dataset", "cifar10", "--data-root", "{input}", "--epochs", "1", "--out", "{out}",
          "--no-progress"),)
NIR = (("import", "{input}", "--out", "{out}", "--timesteps", "3"),
       ("import", "{input}", "--artifact", "--out", "{out}"))
NIR_ARTIFACT = (("import", "{input}", "--artifact", "--out", "{out}"),)

# entry -> (commands, words every error line must contain; a dict gives words per command)
CASES: dict[str, tuple[tuple[tuple[str, ...], ...], list[str] | dict[str, list[str]]]] = {
    # profiles: schema errors
    "profile-negative-sigma.yaml": (PROFILE, ["variation.v_threshold.sigma", ">= 0"]),
    "profile-unknown-key.yaml": (PROFILE, ["neuron.v_treshold", "unknown key", "v_threshold"]),
    "profile-unknown-section.yaml": (PROFILE, ["noise_model", "unknown key"]),
    "profile-missing-name.yaml": (PROFILE, ["name", "required"]),
    "profile-weight-bits-zero.yaml": (PROFILE, ["numerics.weight_bits", ">= 1"]),
    "profile-weight-bits-64.yaml": (PROFILE, ["numerics.weight_bits", "<= 32", "64"]),
    "profile-huge-membrane-bits.yaml": (PROFILE, ["numerics.membrane_bits", "<= 32"]),
    "profile-decay-above-one.yaml": (PROFILE, ["neuron.decay", "<= 1"]),
    "profile-string-for-number.yaml": (PROFILE, ["neuron.v_threshold", "expected a number", "'one'"]),
    "profile-nan-string.yaml": (PROFILE, ["neuron.v_threshold", "expected a number", "'NaN'"]),
    "profile-nan-threshold.yaml": (PROFILE, ["neuron.v_threshold", "finite", "nan"]),
    "profile-infinite-reset.yaml": (PROFILE, ["neuron.v_reset", "finite", "inf"]),
    "profile-huge-float-sigma.yaml": (PROFILE, ["noise.thermal.sigma", "finite"]),
    "profile-integer-of-5000-digits.yaml": (PROFILE, ["invalid YAML", "digits"]),
    "profile-boolean-sigma.yaml": (PROFILE, ["variation.v_reset.sigma", "expected a number", "boolean"]),
    "profile-reset-medium.yaml": (PROFILE, ["neuron.reset", "'hard' or 'soft'", "medium"]),
    "profile-dead-fraction-above-one.yaml": (PROFILE, ["faults.dead_neurons", "<= 1"]),
    "profile-sigma-not-a-mapping.yaml": (PROFILE, ["variation.v_threshold", "expected a mapping"]),
    "profile-shift-decay-without-shift.yaml": (PROFILE, ["numerics.decay", "needs 'shift'"]),
    "profile-if-neuron-with-decay.yaml": (PROFILE, ["neuron", "does not decay"]),
    "profile-negative-limit.yaml": (PROFILE, ["limits.max_fan_in", ">= 1"]),
    "profile-extends-missing-parent.yaml": (PROFILE, ["extends", "no-such-parent.yaml", "no such file"]),
    "profile-extends-itself.yaml": (PROFILE, ["extends", "cycle"]),
    # profiles: not a mapping / not YAML / hostile YAML
    "profile-list-at-top.yaml": (PROFILE, ["expected a mapping", "list"]),
    "profile-empty.yaml": (PROFILE, ["expected a mapping", "nothing"]),
    "profile-duplicate-key.yaml": (PROFILE, ["duplicate key", "v_threshold"]),
    "profile-unclosed-bracket.yaml": (PROFILE, ["invalid YAML", "line 4"]),
    "profile-tab-indent.yaml": (PROFILE, ["invalid YAML", "line 4"]),
    "profile-bad-indent.yaml": (PROFILE, ["invalid YAML", "line 5"]),
    "profile-not-utf8.yaml": (PROFILE, ["not UTF-8"]),
    "profile-billion-laughs.yaml": (PROFILE, ["invalid YAML", "more than 100000 values"]),
    "profile-deep-nesting.yaml": (PROFILE, ["invalid YAML", "nesting deeper than 32"]),
    "profile-python-object-tag.yaml": (PROFILE, ["invalid YAML", "python/object/apply:os.system"]),
    # training configs
    "config-epochs-string.yaml": (CONFIG, ["epochs", "integer", "'three'"]),
    "config-huge-epochs.yaml": (CONFIG, ["epochs", "integer", "1e+300"]),
    "config-fractional-batch-size.yaml": (CONFIG, ["batch_size", "integer", "1.5"]),
    "config-zero-timesteps.yaml": (CONFIG, ["timesteps", "greater than or equal to 1"]),
    "config-unknown-option.yaml": (CONFIG, ["learning_rate", "unknown option"]),
    "config-negative-lr.yaml": (CONFIG, ["lr", "greater than 0"]),
    "config-nan-lr.yaml": (CONFIG, ["lr", "finite"]),
    "config-nan-string-lr.yaml": (CONFIG, ["lr", "valid number", "'NaN'"]),
    "config-neuron-not-a-mapping.yaml": (CONFIG, ["neuron", "'atan'"]),
    "config-model-unparseable.yaml": (CONFIG, ["model", "mlp:abc"]),
    "config-wrong-surrogate-parameter.yaml": (CONFIG, ["surrogate atan takes alpha", "beta"]),
    "config-unknown-profile.yaml": (CONFIG, ["no-such-chip", "no such profile"]),
    "config-unknown-dataset.yaml": (CONFIG, ["unknown dataset", "imagenet"]),
    "config-missing-data-root.yaml": (CONFIG, ["mnist", "no-such-folder", "does not exist"]),
    "config-list-at-top.yaml": (CONFIG, ["expected a mapping"]),
    "config-yaml-bomb.yaml": (CONFIG, ["invalid YAML", "more than 100000 values"]),
    "config-python-object-tag.yaml": (CONFIG, ["invalid YAML", "python/object/apply:os.system"]),
    # deployment artifacts
    "artifact-truncated-tensors": (ARTIFACT, ["tensors.npz", "checksum mismatch"]),
    "artifact-flipped-byte-in-tensors": (ARTIFACT, ["tensors.npz", "checksum mismatch"]),
    "artifact-truncated-manifest": (ARTIFACT, ["manifest.yaml", "invalid YAML", "end of stream"]),
    "artifact-format-version-99": (ARTIFACT, ["manifest.yaml", "format version 99", "reads version 1"]),
    "artifact-foreign-manifest": (ARTIFACT, ["manifest.yaml", "not a neurosim deployment manifest"]),
    "artifact-manifest-is-a-list": (ARTIFACT, ["manifest.yaml", "not a neurosim deployment manifest"]),
    "artifact-manifest-yaml-bomb": (ARTIFACT, ["manifest.yaml", "invalid YAML", "more than 100000 values"]),
    "artifact-tensors-path-escapes-folder": (ARTIFACT, ["tensors.file must be 'tensors.npz'", "../../../etc/passwd"]),
    "artifact-tensors-link-outside-folder": (ARTIFACT, ["tensors.npz", "outside the artifact folder"]),
    "artifact-missing-tensors": (ARTIFACT, ["tensors.npz", "missing"]),
    "artifact-weight-of-wrong-shape": (ARTIFACT, ["block0.weight", "shape [2, 64]", "[4, 64]"]),
    "artifact-weight-of-wrong-dtype": (ARTIFACT, ["block0.weight", "dtype float64", "int64"]),
    "artifact-object-array-in-tensors": (ARTIFACT, ["tensors.npz", "pickled Python objects", "refused"]),
    "artifact-pickle-disguised-as-tensors": (ARTIFACT, ["tensors.npz", "pickled Python objects", "refused"]),
    "artifact-profile-altered": (ARTIFACT, ["manifest.yaml", "profile checksum mismatch"]),
    "artifact-nan-threshold": (ARTIFACT, ["block0", "threshold is nan"]),
    "artifact-weight-code-beyond-8-bits": (ARTIFACT, ["block0", "weight code 1000", "weight_bits = 8"]),
    "artifact-training-metadata-not-a-mapping": (ARTIFACT, ["metadata.training", "mappings"]),
    "artifact-without-layers": (ARTIFACT, ["last layer must be the readout"]),
    "artifact-negative-timesteps": (ARTIFACT, ["timesteps = -4"]),
    "artifact-tensors-zip-bomb": (ARTIFACT, ["tensors.npz", "'block0.weight'", "48x12800000", "614400000 elements",
                                             "limit of 268435456"]),
    "artifact-empty-folder": (ARTIFACT, {"run": ["manifest.yaml is missing"], "sweep": ["neither", "manifest.yaml"]}),
    # training runs (folders of neurosim train)
    "run-malicious-checkpoint": (RUN, ["checkpoint.pt", "not a neurosim checkpoint", "io.open", "refused"]),
    "run-truncated-checkpoint": (RUN, ["checkpoint.pt", "not a neurosim checkpoint", "truncated"]),
    "run-checkpoint-format-99": (RUN, ["checkpoint.pt", "not a neurosim checkpoint of format 1"]),
    "run-checkpoint-with-nan-weight": (RUN, ["checkpoint.pt", "blocks.0.synapse.weight", "NaN or inf"]),
    "run-checkpoint-of-another-model": (RUN, {"export": ["checkpoint.pt", "does not fit", "size mismatch"],
                                              "sweep": ["checkpoint.pt", "does not fit", "size mismatch"],
                                              "train": ["checkpoint.pt", "other options"]}),
    "run-missing-checkpoint": (RUN, {"export": ["checkpoint.pt", "no checkpoint"],
                                     "sweep": ["neither a training run", "checkpoint.pt"],
                                     "train": ["checkpoint.pt", "no checkpoint"]}),
    "run-config-with-unknown-option": (RUN, ["config.yaml", "learning_rate", "unknown option"]),
    # dataset folders
    "dataset-mnist-empty-folder": (MNIST, ["mnist", "is empty"]),
    "dataset-mnist-without-dataset-files": (MNIST, ["mnist", "none of the files found"]),
    "dataset-mnist-truncated-images": (MNIST, ["train-images-idx3-ubyte", "truncated"]),
    "dataset-mnist-labels-with-image-magic": (MNIST, ["train-labels-idx1-ubyte", "wrong magic number"]),
    "dataset-mnist-missing-test-labels": (MNIST, ["missing t10k-labels-idx1-ubyte"]),
    "dataset-mnist-label-out-of-range": (MNIST, ["t10k-labels-idx1-ubyte", "label 12", "out of range"]),
    "dataset-mnist-corrupt-gzip": (MNIST, ["train-images-idx3-ubyte.gz", "cannot read"]),
    "dataset-mnist-huge-declared-images": (MNIST, ["train-images-idx3-ubyte", "IDX header", "4000000000x28x28",
                                                   "limit of 268435456"]),
    "dataset-mnist-gzip-bomb": (MNIST, ["train-images-idx3-ubyte.gz", "IDX header", "4000000000x28x28",
                                        "limit of 268435456"]),
    "dataset-root-is-a-file.txt": (MNIST, ["is not a folder"]),
    "dataset-cifar10-malicious-pickle": (CIFAR, ["data_batch_1", "refused pickle global io.open"]),
    "dataset-cifar10-text-instead-of-pickle": (CIFAR, ["data_batch_1", "not a readable pickle"]),
    # NIR graphs (neurosim import)
    "nir-not-hdf5.nir": (NIR, ["not a readable NIR graph", "file signature not found"]),
    "nir-truncated.nir": (NIR, ["not a readable NIR graph", "truncated file"]),
    "nir-unsupported-node.nir": (NIR, {"import": ["node 'delay'", "no neurosim equivalent"],
                                       "import --artifact": ["holds no neurosim deployment"]}),
    "nir-recurrent.nir": (NIR, {"import": ["block0.neuron", "recurrent edge"],
                                "import --artifact": ["holds no neurosim deployment"]}),
    "nir-float-model-as-artifact.nir": (NIR_ARTIFACT, ["holds no neurosim deployment"]),
    "nir-affine-declares-huge-weight.nir": (NIR, ["node 'block0.synapse' weight", "48x12800000", "614400000 elements",
                                                  "limit of 268435456"]),
}

CREATED_BY_THE_TEST = {"dataset-mnist-empty-folder", "artifact-empty-folder"}
"""Empty folders, which git cannot hold: the fixture makes them in the copy of the corpus."""

SUBPROCESS_SAMPLE = {  # entry -> index of its command run as a real ``python -m neurosim`` process
    "profile-python-object-tag.yaml": 0, "artifact-pickle-disguised-as-tensors": 0, "run-malicious-checkpoint": 0,
}
"""Three real processes (each costs a few seconds of imports) check what the in-process calls
cannot: the exit status of the process and that nothing else (a warning, a traceback) reaches
stderr."""


def snapshot(folder: Path) -> dict[str, str]:
    """Every file, link and folder under ``folder`` with its content hash or link target."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = "link:" + os.readlink(path)
        elif path.is_dir():
            state[key] = "dir"
        else:
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A copy of the corpus (links kept as links), with the empty folders added."""
    work = tmp_path_factory.mktemp("bad")
    shutil.copytree(CORPUS, work / "bad", symlinks=True)
    for name in CREATED_BY_THE_TEST:
        (work / "bad" / name).mkdir()
    return work


def arguments(command: tuple[str, ...], entry: Path, out: Path) -> list[str]:
    return [part.format(input=entry, out=out) for part in command]


def words_for(words, command: tuple[str, ...]) -> list[str]:
    """The words for ``command``: a dict is keyed by the command name, or by ``import --artifact``."""
    if not isinstance(words, dict):
        return words
    return words.get(f"{command[0]} --artifact" if "--artifact" in command else command[0]) or words[command[0]]


def check_error_line(stderr: str, entry: Path, words: list[str]) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in line, line
    assert str(entry) in line, f"the error does not name {entry}: {line}"
    for word in words:
        assert word in line, f"{word!r} missing from: {line}"


# ------------------------------------------------------------------ the tests

def test_the_corpus_and_the_table_agree():
    on_disk = {p.name for p in CORPUS.iterdir() if p.name not in NOT_CASES} | CREATED_BY_THE_TEST
    assert on_disk == set(CASES), (f"not in CASES: {sorted(on_disk - set(CASES))}; "
                                   f"not on disk: {sorted(set(CASES) - on_disk)}")
    assert len([p for p in CORPUS.iterdir() if p.name not in NOT_CASES]) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_in_one_line_and_changes_nothing(name, corpus, capsys, monkeypatch):
    monkeypatch.chdir(corpus)  # anything written relative to the working folder is caught too
    entry = corpus / "bad" / name
    commands, words = CASES[name]
    for command in commands:
        argv = arguments(command, entry, corpus / "out")
        before = snapshot(corpus)
        try:
            status = main(argv)
        except BaseException as exc:  # noqa: BLE001 - an escaped exception is the failure we look for
            pytest.fail(f"neurosim {' '.join(argv)} raised {type(exc).__name__}: {exc}")
        captured = capsys.readouterr()
        assert status == 2, f"neurosim {' '.join(argv)} exited {status}\n{captured.err}"
        check_error_line(captured.err, entry, words_for(words, command))
        assert snapshot(corpus) == before, f"neurosim {' '.join(argv)} wrote or changed files"


YAML_REFUSALS = sorted(name for name, (_, words) in CASES.items()
                       if isinstance(words, list) and any(w in ("invalid YAML", "duplicate key") for w in words))
"""The entries that the YAML reader itself refuses (not the schema behind it)."""


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", YAML_REFUSALS)
def test_yaml_refusals_read_the_same_with_every_parser(name, parser):
    """libyaml and PyYAML's pure-Python parser detect some problems at different layers (libyaml
    0.2.6 has a nesting limit of its own); the refusal must carry the same words either way."""
    entry = CORPUS / name
    path = entry / "manifest.yaml" if entry.is_dir() else entry
    with pytest.raises(NeurosimError) as refused:
        read_yaml(path, parser=parser)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    for word in CASES[name][1]:
        if word != "tensors.npz" and not word.endswith(".yaml"):
            assert word in message, f"{parser.name}: {word!r} missing from: {message}"


@pytest.mark.parametrize("name", sorted(SUBPROCESS_SAMPLE))
def test_bad_input_through_a_real_process(name, corpus):
    entry = corpus / "bad" / name
    commands, words = CASES[name]
    command = commands[SUBPROCESS_SAMPLE[name]]
    before = snapshot(corpus)
    result = subprocess.run([sys.executable, "-m", "neurosim", *arguments(command, entry, corpus / "out")],
                            capture_output=True, text=True, cwd=corpus, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    check_error_line(result.stderr, entry, words_for(words, command))
    assert snapshot(corpus) == before
