"""Device profiles: the built-ins, strict loading, ``extends:``, hostile YAML, ``show`` round
trips, the ``neurosim profile`` commands and ``DeviceProfile.scaled``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from neurosim.cli import main
from neurosim.device import builtin_profiles, load_profile, profile_to_yaml, unreferenced_numbers
from neurosim.device.loading import PROFILE_PATH_ENV
from neurosim.device.profile import DeviceProfile
from neurosim.errors import ProfileError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "device_profiles").glob("*.yaml"))
REQUIRED = ("ideal", "hardreset-noisy", "analog-mismatch", "xylo-like", "loihi-like")

HEAD = "name: t\ndescription: test chip\n"
FIXED = "numerics: {weight_bits: 8, membrane_bits: 16, decay: {kind: shift, shift: 1}}\n"


@pytest.fixture(autouse=True)
def _only_shipped_profiles(monkeypatch):
    """A user's own profile folder must not change what the built-ins are."""
    monkeypatch.delenv(PROFILE_PATH_ENV, raising=False)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(source) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(source)
    return str(info.value)


def sigmas(profile: DeviceProfile) -> dict[str, object]:
    """Every Sigma of variation and noise that the profile sets, by key path."""
    out = {}
    for section in ("variation", "noise"):
        spec = getattr(profile, section)
        for field in type(spec).model_fields:
            value = getattr(spec, field)
            if value is not None:
                out[f"{section}.{field}"] = value
    return out


# ============================================================== 1. built-in profiles

def test_required_builtins_exist_and_are_the_shipped_files():
    found = builtin_profiles()
    assert set(REQUIRED) <= set(found)
    assert sorted(found) == SHIPPED
    for name, path in found.items():
        assert path.resolve() == (ROOT / "device_profiles" / f"{name}.yaml").resolve()


@pytest.mark.parametrize("name", SHIPPED)
def test_builtin_loads_names_itself_and_references_every_number(name):
    profile = load_profile(name)
    assert isinstance(profile, DeviceProfile)
    assert profile.name == name
    assert profile.description.strip()
    assert load_profile(ROOT / "device_profiles" / f"{name}.yaml") == profile  # by path, same
    assert unreferenced_numbers(name) == []


def test_unreferenced_numbers_does_find_missing_references(tmp_path):
    # the check above could pass vacuously if unreferenced_numbers never reported anything
    path = write(tmp_path, "p.yaml", HEAD + "references: {neuron.decay: here}\n"
                 "neuron: {decay: 0.5, v_threshold: 2.0}\nvariation: {v_reset: {sigma: 0.1}}\n")
    assert sorted(unreferenced_numbers(path)) == ["neuron.v_threshold", "variation.v_reset.sigma"]


def test_hardreset_noisy_facts():
    p = load_profile("hardreset-noisy")
    assert p.neuron.reset == "hard"
    assert not p.numerics.is_float
    assert p.numerics.weight_bits == 8
    assert p.numerics.membrane_bits == 16
    assert p.numerics.decay.kind == "shift"
    assert p.variation.v_threshold.sigma == 0.001 and p.variation.v_threshold.relative is False
    assert p.variation.v_reset.sigma == 0.007 and p.variation.v_reset.relative is False


def test_analog_mismatch_facts():
    p = load_profile("analog-mismatch")
    assert p.numerics.is_float
    for spec in (p.variation.v_threshold, p.variation.decay, p.variation.weight):
        assert spec is not None and spec.relative is True and spec.sigma > 0
    assert p.noise.thermal is not None and p.noise.thermal.sigma > 0


def test_xylo_like_facts():
    p = load_profile("xylo-like")
    n = p.numerics
    assert n.weight_bits == 8
    assert n.membrane_bits == 16 and n.synapse_bits == 16
    assert n.overflow == "saturate"
    assert n.decay.kind == "shift"
    assert p.neuron.reset == "soft"
    assert (p.limits.max_neurons, p.limits.max_inputs, p.limits.max_outputs) == (1000, 16, 8)


def test_loihi_like_facts():
    p = load_profile("loihi-like")
    n = p.numerics
    assert n.weight_bits == 8 and n.weight_shift is not None
    assert n.membrane_bits == 24
    assert n.decay.kind == "multiply" and n.decay.bits == 12
    assert p.neuron.reset == "hard" and p.neuron.v_reset == 0.0
    assert p.neuron.synapse_decay is not None and p.is_current_based


# ============================================================== 2. strict loading

# (file text or None for "no file" or "<dir>" for a directory, key path or None, expected words)
STRICT_CASES = [
    pytest.param(HEAD + "neuron: {decay: 0.5}\nfoo: 1\n", "foo", ("unknown key", "neuron", "variation"),
                 id="unknown-top-level-key"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_threshold: {sigmaa: 0.1}}\n",
                 "variation.v_threshold.sigmaa", ("unknown key", "sigma, relative"), id="unknown-nested-key"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: eight, membrane_bits: 16, "
                 "decay: {kind: shift, shift: 1}}\n", "numerics.weight_bits", ("integer", "'eight'"),
                 id="string-for-int"),
    pytest.param(HEAD + "neuron: {decay: 0.5, v_threshold: true}\n", "neuron.v_threshold",
                 ("number", "boolean"), id="bool-for-float"),
    pytest.param(HEAD + "neuron: [1, 2]\n", "neuron", ("mapping", "list"), id="list-for-mapping"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_threshold: [0.1]}\n", "variation.v_threshold",
                 ("mapping", "list"), id="list-for-nested-mapping"),
    pytest.param("description: d\nneuron: {decay: 0.5}\n", "name", ("required",), id="missing-name"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {membrane_bits: 16, decay: {kind: shift, shift: 1}}\n",
                 "numerics", ("needs", "weight_bits"), id="numerics-without-weight_bits"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_reset: {relative: true}}\n",
                 "variation.v_reset.sigma", ("required",), id="sigma-missing"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_threshold: {sigma: -0.1}}\n",
                 "variation.v_threshold.sigma", (">= 0",), id="negative-sigma"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 0, membrane_bits: 16, "
                 "decay: {kind: shift, shift: 1}}\n", "numerics.weight_bits", (">= 1",), id="bits-0"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 33, "
                 "decay: {kind: shift, shift: 1}}\n", "numerics.membrane_bits", ("<= 32",), id="bits-33"),
    pytest.param(HEAD + "neuron: {decay: 0}\n", "neuron.decay", ("> 0",), id="decay-0"),
    pytest.param(HEAD + "neuron: {decay: 1.5}\n", "neuron.decay", ("<= 1",), id="decay-1.5"),
    pytest.param(HEAD + "neuron: {decay: -0.2}\n", "neuron.decay", ("> 0",), id="decay-negative"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_threshold: {sigma: .nan}}\n",
                 "variation.v_threshold.sigma", ("finite",), id="sigma-yaml-nan"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nvariation: {v_threshold: {sigma: \"nan\"}}\n",
                 "variation.v_threshold.sigma", ("number", "string"), id="sigma-string-nan"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnoise: {thermal: {sigma: .inf}}\n",
                 "noise.thermal.sigma", ("finite",), id="sigma-inf"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 16, decay: {kind: shift}}\n",
                 "numerics.decay", ("needs", "shift"), id="shift-decay-without-shift"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 16, "
                 "decay: {kind: multiply}}\n", "numerics.decay", ("needs", "bits"), id="multiply-decay-without-bits"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 16, "
                 "decay: {kind: shift, shift: 1}, rounding: ceil}\n", "numerics.rounding",
                 ("nearest_even", "'ceil'"), id="unknown-rounding"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 16, "
                 "decay: {kind: shift, shift: 1}, overflow: clamp}\n", "numerics.overflow",
                 ("saturate", "wrap", "'clamp'"), id="unknown-overflow"),
    pytest.param(HEAD + "neuron: {decay: 0.9}\n" + FIXED, "neuron.decay", ("0.9", "shift 1", "0.5"),
                 id="decay-inconsistent-with-shift"),
    pytest.param(HEAD + "references: {neuron.foo: somewhere}\nneuron: {decay: 0.5}\n", "references",
                 ("no such key", "neuron.foo"), id="reference-to-missing-key"),
    pytest.param(HEAD + "neuron: {decay: 0.5, synapse_decay: 0.5}\nnumerics: {weight_bits: 8, membrane_bits: 16, "
                 "synapse_bits: 16, decay: {kind: shift, shift: 1}}\n", "neuron.synapse_decay",
                 ("numerics.synapse_decay", "both"), id="synapse-decay-without-format"),
    pytest.param("", None, ("mapping", "nothing"), id="empty-file"),
    pytest.param("42\n", None, ("mapping", "42"), id="top-level-scalar"),
    pytest.param(HEAD + "neuron: {decay: 0.5}\nneuron: {decay: 0.25}\n", "neuron", ("duplicate", "line 4"),
                 id="duplicate-top-level-key"),
    pytest.param(HEAD + "neuron:\n  decay: 0.5\n  decay: 0.25\n", "decay", ("duplicate", "line 5"),
                 id="duplicate-nested-key"),
    pytest.param(HEAD + "neuron: {decay: 0.5\nvariation: [\n", None, ("invalid YAML", "line 4"),
                 id="invalid-yaml-syntax"),
    pytest.param(HEAD + "neuron:\n  decay: 0.5\n bad: 1\n", None, ("invalid YAML", "line 5"),
                 id="invalid-yaml-indentation"),
    pytest.param(None, None, ("no such file",), id="missing-file"),
    pytest.param("<dir>", None, ("not a regular file",), id="directory"),
]


@pytest.mark.parametrize(("text", "key", "expected"), STRICT_CASES)
def test_strict_loading_names_file_key_and_expectation(tmp_path, text, key, expected):
    path = tmp_path / "chip.yaml"
    if text == "<dir>":
        path.mkdir()
    elif text is not None:
        path.write_text(text, encoding="utf-8")
    message = load_error(path)
    assert str(path) in message
    if key is not None:
        assert key in message
    for word in expected:
        assert word in message
    assert "\n" not in message  # one line
    assert "pydantic" not in message and "Value error" not in message and "Traceback" not in message


def test_strict_loading_accepts_the_boundaries(tmp_path):
    """The checks above are not over-strict: decay 1 (an int for a float), bits 1 and 32, sigma 0."""
    path = write(tmp_path, "edge.yaml", HEAD + "neuron: {decay: 1, v_threshold: 2}\n"
                 "numerics: {weight_bits: 1, membrane_bits: 32, decay: {kind: multiply, bits: 32}}\n"
                 "variation: {v_threshold: {sigma: 0}}\n")
    p = load_profile(path)
    assert p.neuron.decay == 1.0 and p.neuron.v_threshold == 2.0
    assert (p.numerics.weight_bits, p.numerics.membrane_bits) == (1, 32)
    assert p.variation.v_threshold.sigma == 0.0


def test_unknown_builtin_name_lists_the_builtins():
    message = load_error("no-such-chip")
    assert "no-such-chip" in message
    for name in REQUIRED:
        assert name in message


def test_tau_inconsistent_with_shift_names_tau(tmp_path):
    path = write(tmp_path, "tau.yaml", HEAD + "neuron: {tau: 2.0}\n" + FIXED)
    message = load_error(path)
    assert "neuron.tau" in message


# ============================================================== 3. extends

def test_child_of_builtin_overrides_one_field_and_inherits_the_rest(tmp_path):
    child_path = write(tmp_path, "child.yaml",
                       "extends: hardreset-noisy\nname: child\nvariation: {v_threshold: {sigma: 0.01}}\n")
    parent = load_profile("hardreset-noisy")
    child = load_profile(child_path)
    assert child.name == "child"
    assert child.variation.v_threshold.sigma == 0.01
    assert child.variation.v_threshold.relative is False  # merged key by key, not replaced
    expected = parent.to_dict()
    expected["name"] = "child"
    expected["variation"]["v_threshold"]["sigma"] = 0.01
    assert child == DeviceProfile.model_validate(expected)
    assert child != parent


@pytest.mark.parametrize("ref", ["parent.yaml", "parent"])
def test_child_extends_sibling_file_relative_to_itself(tmp_path, monkeypatch, ref):
    folder = tmp_path / "profiles"
    folder.mkdir()
    write(folder, "parent.yaml", "name: parent\ndescription: the parent\nneuron: {decay: 0.5}\n"
          "noise: {thermal: {sigma: 0.1}}\n")
    child_path = write(folder, "child.yaml", f"extends: {ref}\nname: child\nneuron: {{v_threshold: 2.0}}\n")
    monkeypatch.chdir(tmp_path)  # not the profiles' folder: resolution is relative to the child
    child = load_profile(child_path)
    assert child.name == "child" and child.description == "the parent"
    assert child.neuron.v_threshold == 2.0 and child.neuron.decay == 0.5
    assert child.noise.thermal.sigma == 0.1


def test_null_in_child_removes_parent_key(tmp_path):
    child_path = write(tmp_path, "quiet.yaml", "extends: analog-mismatch\nname: quiet\nnoise: {thermal: null}\n")
    parent = load_profile("analog-mismatch")
    child = load_profile(child_path)
    assert parent.noise.thermal is not None
    assert child.noise.thermal is None
    assert child.variation == parent.variation and child.neuron == parent.neuron


def test_extends_cycle_is_refused(tmp_path):
    a = write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\ndescription: b\nneuron: {decay: 0.5}\n")
    message = load_error(a)
    assert "cycle" in message and "a.yaml" in message and "b.yaml" in message


def test_self_extends_is_refused(tmp_path):
    me = write(tmp_path, "me.yaml", "extends: me.yaml\nname: me\ndescription: d\nneuron: {decay: 0.5}\n")
    message = load_error(me)
    assert "cycle" in message and str(me) in message


@pytest.mark.parametrize("ref", ["missing-parent.yaml", "no-such-builtin"])
def test_missing_parent_names_child_and_extends(tmp_path, ref):
    child = write(tmp_path, "child.yaml", f"extends: {ref}\nname: child\n")
    message = load_error(child)
    assert str(child) in message and "extends" in message and ref in message


def test_error_in_parent_is_reported_with_parent_path(tmp_path):
    parent = write(tmp_path, "parent.yaml", "name: parent\ndescription: d\nneuron: {decay: 0.5, v_threshold: -1}\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: child\nneuron: {v_threshold: 1.0}\n")
    message = load_error(child)
    assert message.startswith(str(parent))
    assert "neuron.v_threshold" in message


def test_yaml_error_in_parent_is_reported_with_parent_path(tmp_path):
    parent = write(tmp_path, "parent.yaml", "name: parent\ndescription: d\nneuron: {decay: 0.5\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: child\n")
    message = load_error(child)
    assert message.startswith(str(parent)) and "invalid YAML" in message


# ============================================================== 4. hostile YAML

def test_billion_laughs_is_refused_quickly(tmp_path):
    lines = ["lol0: &lol0 [" + ", ".join(['"lol"'] * 9) + "]"]
    for level in range(1, 9):
        lines.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * 9) + "]")
    bomb = write(tmp_path, "bomb.yaml", HEAD + "neuron: {decay: 0.5}\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    message = load_error(bomb)
    assert time.perf_counter() - start < 5.0
    assert str(bomb) in message


def test_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, "loop.yaml", HEAD + "neuron: {decay: 0.5}\nloop: &a [*a, *a]\n")
    assert str(path) in load_error(path)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused(tmp_path, style):
    if style == "flow":
        body = "x: " + "[" * 100 + "]" * 100 + "\n"
    else:
        body = "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n"
    path = write(tmp_path, "deep.yaml", HEAD + body)
    message = load_error(path)
    assert str(path) in message and "nesting" in message


def test_file_over_one_mebibyte_is_refused(tmp_path):
    # a valid profile padded with comments: only its size is wrong
    text = HEAD + "neuron: {decay: 0.5}\n"
    path = write(tmp_path, "big.yaml", text + "# padding\n" * ((1 << 20) // 10 + 1))
    assert path.stat().st_size > 1 << 20
    message = load_error(path)
    assert str(path) in message and "bytes" in message
    assert load_profile(write(tmp_path, "small.yaml", text)).name == "t"


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/apply:subprocess.call"])
def test_python_object_tags_are_refused_and_run_nothing(tmp_path, tag):
    marker = tmp_path / "executed"
    arg = f'"touch {marker}"' if tag.endswith("os.system") else f'[["touch", "{marker}"]]'
    path = write(tmp_path, "evil.yaml", HEAD + f"neuron: {{decay: 0.5}}\ndescription2: {tag} [{arg}]\n")
    message = load_error(path)
    assert str(path) in message and "python/object" in message
    assert not marker.exists()


# ============================================================== 5. show round trip

@pytest.mark.parametrize("name", SHIPPED)
def test_show_of_builtin_loads_back_equal(tmp_path, capsys, name):
    assert main(["profile", "show", name]) == 0
    shown = capsys.readouterr().out
    assert shown == profile_to_yaml(load_profile(name))
    again = load_profile(write(tmp_path, "shown.yaml", shown))
    assert again == load_profile(name)


def test_show_of_child_resolves_extends_and_loads_back_equal(tmp_path, capsys):
    write(tmp_path, "mid.yaml", "extends: loihi-like\nname: mid\nneuron: {tau: 8.0}\n"
          "variation: {v_threshold: {sigma: 0.02}}\n")
    child_path = write(tmp_path, "child.yaml", "extends: mid.yaml\nname: child\nlimits: {max_fan_in: null}\n"
                       "noise: {read: {sigma: 0.01, relative: true}}\n")
    child = load_profile(child_path)
    assert child.neuron.tau == 8.0 and child.limits.max_fan_in is None and child.numerics.membrane_bits == 24
    assert main(["profile", "show", str(child_path)]) == 0
    shown = capsys.readouterr().out
    data = yaml.safe_load(shown)
    assert "extends" not in data
    assert data["name"] == "child" and data["numerics"]["membrane_bits"] == 24
    assert load_profile(write(tmp_path, "shown.yaml", shown)) == child


# ============================================================== 6. command line

GOOD = HEAD + "neuron: {decay: 0.5}\n"
BAD_FILES = {
    "schema": HEAD + "neuron: {decay: 1.5}\n",
    "unknown-key": HEAD + "neuron: {decay: 0.5}\nfoo: 1\n",
    "syntax": HEAD + "neuron: {decay: 0.5\n",
    "empty": "",
    "not-utf8": None,
    "missing": "<missing>",
    "directory": "<dir>",
}


def make_bad(folder: Path, kind: str) -> Path:
    path = folder / "bad.yaml"
    text = BAD_FILES[kind]
    if kind == "not-utf8":
        path.write_bytes(b"name: t\ndescription: \xff\xfe caf\xe9\n")
    elif text == "<dir>":
        path.mkdir()
    elif text != "<missing>":
        path.write_text(text, encoding="utf-8")
    return path


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_cli_validate_good_and_bad(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "good.yaml", GOOD)
    make_bad(tmp_path, kind)
    assert main(["profile", "validate", "good.yaml", "bad.yaml"]) == 2
    out, err = capsys.readouterr()
    assert lines(out) == ["ok: good.yaml"]
    errors = [line for line in lines(err) if line.startswith("error:")]
    assert len(errors) == 1 and "bad.yaml" in errors[0]
    assert lines(err) == errors  # nothing else on stderr
    assert "Traceback" not in out + err


def test_cli_validate_only_good_files_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "child.yaml", "extends: good.yaml\nname: child\n")
    assert main(["profile", "validate", "good.yaml", "child.yaml"]) == 0
    out, err = capsys.readouterr()
    assert lines(out) == ["ok: good.yaml", "ok: child.yaml"]
    assert err == ""


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PROFILE_PATH_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurosim", *args], capture_output=True, text=True,
                          cwd=cwd, env=subprocess_env(), timeout=120)


def test_cli_validate_as_real_process(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    make_bad(tmp_path, "schema")
    result = run_cli("profile", "validate", "good.yaml", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result.stdout) == ["ok: good.yaml"]
    errors = lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error:") and "bad.yaml" in errors[0]
    assert "neuron.decay" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_help_as_real_process(tmp_path):
    result = run_cli("profile", "validate", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: neurosim profile validate")
    assert "--require-references" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_profile_list(capsys):
    assert main(["profile", "list"]) == 0
    out = lines(capsys.readouterr().out)
    names = builtin_profiles()
    assert len(out) == len(names)
    for line, name in zip(out, names):
        listed_name, description = line.split(None, 1)
        assert listed_name == name
        assert description == load_profile(name).description


def test_cli_show_missing_name(capsys):
    assert main(["profile", "show", "no-such-chip"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(lines(err)) == 1 and lines(err)[0].startswith("error:") and "no-such-chip" in err
    assert "Traceback" not in err


def test_cli_require_references(tmp_path, capsys):
    bare = write(tmp_path, "bare.yaml", GOOD)
    referenced = write(tmp_path, "referenced.yaml", HEAD + "references: {neuron: docs/design.md}\nneuron: {decay: 0.5}\n")
    assert main(["profile", "validate", str(bare)]) == 0
    capsys.readouterr()
    assert main(["profile", "validate", "--require-references", str(bare)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(lines(err)) == 1 and err.startswith("error:") and "neuron.decay" in err and "references" in err
    assert main(["profile", "validate", "--require-references", str(referenced)]) == 0
    shipped = [str(path) for path in builtin_profiles().values()]
    assert main(["profile", "validate", "--require-references", *shipped]) == 0


@pytest.mark.parametrize(("argv", "mentions"), [
    (["--help"], "profile"),
    (["profile", "--help"], "validate"),
    (["profile", "validate", "--help"], "--require-references"),
    (["profile", "sample", "--help"], "--layers"),
    (["demo", "--help"], "--seed"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_cli_help(capsys, argv, mentions):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: neurosim")
    assert mentions in out


def test_cli_error_is_one_line_even_for_multiline_values(tmp_path, capsys):
    bad = write(tmp_path, "bad.yaml", HEAD + "neuron: {decay: 0.5}\nnumerics: |\n  fixed\n  8 bits\n")
    assert main(["profile", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(lines(err)) == 1


def test_yaml_merge_keys_are_allowed_and_may_be_overridden(tmp_path):
    path = write(tmp_path, "merge.yaml", HEAD + "base: &b {sigma: 0.01, relative: false}\n")
    # anchors are fine, but 'base' is no profile key: the strict loader names it
    assert "base" in load_error(path)
    path = write(tmp_path, "merge2.yaml", HEAD + "neuron: {decay: 0.5}\nvariation:\n"
                 "  v_threshold: &b {sigma: 0.01, relative: false}\n"
                 "  v_reset: {<<: *b, sigma: 0.02}\n")
    profile = load_profile(path)
    assert profile.variation.v_reset.sigma == 0.02 and profile.variation.v_reset.relative is False


# ============================================================== 7. scaled

@pytest.mark.parametrize("factor", [0.0, 2.5])
def test_scaled_multiplies_every_sigma(factor):
    base = load_profile("analog-mismatch")
    scaled = base.scaled(factor)
    before, after = sigmas(base), sigmas(scaled)
    assert len(before) >= 4  # v_threshold, decay, weight, thermal
    assert after.keys() == before.keys()
    for key, spec in before.items():
        assert after[key].sigma == pytest.approx(spec.sigma * factor, abs=1e-15), key
        assert after[key].relative == spec.relative
    rest = {"variation", "noise"}
    assert scaled.model_dump(exclude=rest) == base.model_dump(exclude=rest)


def test_scaled_by_one_is_identity_and_absolute_sigmas_scale_too():
    base = load_profile("hardreset-noisy")
    assert base.scaled(1.0) == base
    doubled = base.scaled(2.0)
    assert doubled.variation.v_threshold.sigma == pytest.approx(0.002)
    assert doubled.variation.v_reset.sigma == pytest.approx(0.014)
    assert doubled.variation.v_reset.relative is False


@pytest.mark.parametrize("factor", [-1.0, -1e-9, math.nan, math.inf])
def test_scaled_refuses_negative_or_non_finite(factor):
    base = load_profile("analog-mismatch")
    with pytest.raises(ValueError):
        base.scaled(factor)
