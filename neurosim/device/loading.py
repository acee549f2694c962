"""Loading device profiles from YAML: built-in lookup, ``extends:``, strict validation.

A profile is found by path or by built-in name (the YAML files of ``device_profiles/``). The
YAML is read with a safe loader that also refuses duplicate keys, deep nesting and alias
bombs; ``extends:`` names a parent (a built-in or a file beside the child) whose data the child
overrides key by key, ``null`` removing a key. The merged data is validated against
:class:`~neurosim.device.profile.DeviceProfile`; any problem raises one
:class:`~neurosim.errors.ProfileError` naming the file, the key path and what was expected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from neurosim.device.profile import DeviceProfile
from neurosim.errors import NeurosimError, ProfileError

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 32
MAX_EXTENDS = 16
PROFILE_PATH_ENV = "NEUROSIM_PROFILE_PATH"


# --------------------------------------------------------------------------------------------
# where profiles live


def profile_dirs() -> list[Path]:
    """Folders searched for built-in profiles, first match wins: ``$NEUROSIM_PROFILE_PATH``
    (os.pathsep-separated), the checkout's ``device_profiles/``, then the installed copy."""
    dirs = [Path(p) for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "device_profiles")
    dirs.append(Path(sys.prefix) / "share" / "neurosim" / "device_profiles")
    return [d for d in dirs if d.is_dir()]


def builtin_profiles() -> dict[str, Path]:
    """Built-in profile names mapped to their files."""
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def resolve_profile_path(name_or_path: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """The file of a profile given by path (absolute, or relative to ``relative_to``'s folder
    or the working directory) or by built-in name."""
    text = os.fspath(name_or_path)
    candidates = []
    if relative_to is not None:
        candidates += [relative_to.parent / text, relative_to.parent / f"{text}.yaml"]
    candidates.append(Path(text))
    for path in candidates:
        if path.is_file():
            return path
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text
    if not looks_like_path:
        builtins = builtin_profiles()
        if text in builtins:
            return builtins[text]
        raise ProfileError(f"{text}: no such profile file or built-in profile "
                           f"(built-ins: {', '.join(builtins) or 'none found'})")
    where = relative_to.parent / text if relative_to is not None and not Path(text).is_absolute() else Path(text)
    if where.exists():
        raise ProfileError(f"{where}: not a regular file")
    raise ProfileError(f"{where}: no such file")


# --------------------------------------------------------------------------------------------
# safe YAML


class YamlParser(NamedTuple):
    """One YAML implementation: the loader class whose events :func:`_check_shape` streams, and the
    strict loader built on it that constructs the data."""

    name: str
    events: Any
    strict: Any


def _strict_loader(base: Any) -> Any:
    """``base`` (a PyYAML safe loader) made to refuse duplicate keys (depth and size are bounded
    by :func:`_check_shape` before the loader runs)."""

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:  # noqa: D102
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merge keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable key: the base loader reports it
                    break
                if duplicate:
                    raise yaml.YAMLError(f"duplicate key '{key}' at line {key_node.start_mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


PYTHON_PARSER = YamlParser("python", yaml.SafeLoader, _strict_loader(yaml.SafeLoader))
"""PyYAML's pure-Python parser."""

LIBYAML_PARSER = (YamlParser("libyaml", yaml.CSafeLoader, _strict_loader(yaml.CSafeLoader))
                  if hasattr(yaml, "CSafeLoader") else None)
"""libyaml's parser where PyYAML was built with it (about 10x faster)."""

PARSERS = tuple(p for p in (LIBYAML_PARSER, PYTHON_PARSER) if p is not None)
"""The parsers this PyYAML offers, the one :func:`read_yaml` uses first. A refusal says the same
whichever of them reads the file (tests/test_bad_inputs.py reads the corpus with each)."""


def _nesting_error(line: int) -> yaml.YAMLError:
    return yaml.YAMLError(f"nesting deeper than {MAX_DEPTH} levels at line {line}")


def _check_shape(text: str, parser: YamlParser) -> None:
    """Stream the parser's events (no objects are built) and stop at the first level of nesting
    deeper than :data:`MAX_DEPTH` or the first value past :data:`MAX_NODES`, so that a hostile
    document costs at most a bounded parse before it is refused.

    libyaml (0.2.6 and later) has a nesting limit of its own and may reach it before this check
    sees level ``MAX_DEPTH + 1`` (it scans ahead); its refusal is reported as this one's, so that
    the message does not depend on which PyYAML wheel is installed."""
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=parser.events):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _nesting_error(event.start_mark.line + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
                continue
            elif not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
                continue
            nodes += 1
            if nodes > MAX_NODES:
                raise yaml.YAMLError(f"document has more than {MAX_NODES} values")
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem) and exc.problem_mark is not None:
            raise _nesting_error(exc.problem_mark.line + 1) from None
        raise


def _count_nodes(data: Any, budget: list[int]) -> None:
    """Walk ``data`` (following aliases as copies would) and fail once it exceeds the budget, so
    that an alias bomb is refused before anything expands it."""
    budget[0] -= 1
    if budget[0] < 0:
        raise yaml.YAMLError(f"document has more than {MAX_NODES} values (alias bomb?)")
    if isinstance(data, dict):
        for key, value in data.items():
            _count_nodes(key, budget)
            _count_nodes(value, budget)
    elif isinstance(data, list):
        for value in data:
            _count_nodes(value, budget)


def read_yaml(path: Path, error: type[NeurosimError] = ProfileError, parser: YamlParser = PARSERS[0]) -> Any:
    """Read one YAML document safely (no code, no duplicate keys, bounded size, depth and alias
    expansion); any problem raises ``error`` naming the file. ``parser`` is one of
    :data:`PARSERS` (the fastest by default)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise error(f"{path}: file is {size} bytes, more than a YAML file here may be ({MAX_FILE_BYTES})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    try:
        _check_shape(text, parser)
        data = yaml.load(text, Loader=parser.strict)  # noqa: S506 - a SafeLoader (_strict_loader)
        _count_nodes(data, [MAX_NODES])
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: invalid YAML{where}: {exc.problem or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more digits than int() converts
        reason = str(exc).split(";")[0] if "digits" in str(exc) else str(exc)
        raise error(f"{path}: invalid YAML: a value cannot be read ({' '.join(reason.split())[:200]})") from None
    return data


# --------------------------------------------------------------------------------------------
# extends + validation


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: mappings merge key by key, other values replace, None removes."""
    out = dict(parent)
    for key, value in child.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolved_data(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The data of ``path`` with its ``extends`` chain merged in, each parent validated alone."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ProfileError(f"{path}: extends: cycle {cycle}")
    if len(chain) >= MAX_EXTENDS:
        raise ProfileError(f"{path}: extends: chain longer than {MAX_EXTENDS} profiles")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of profile sections at the top level, "
                           f"got {_kind(data)}")
    if "name" not in data:
        raise ProfileError(f"{path}: name: required field missing (every profile file names itself)")
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        return _merge({}, data)
    if not isinstance(parent_ref, str) or not parent_ref:
        raise ProfileError(f"{path}: extends: expected a profile name or path, got {parent_ref!r}")
    try:
        parent_path = resolve_profile_path(parent_ref, relative_to=path)
    except ProfileError as exc:
        raise ProfileError(f"{path}: extends: {exc}") from None
    parent = _resolved_data(parent_path, (*chain, path.resolve()))
    _validate(parent, parent_path)
    return _merge(parent, data)


def _validate(data: dict[str, Any], path: Path) -> DeviceProfile:
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: " + "; ".join(_describe(err) for err in exc.errors())) from None


def load_profile(source: str | os.PathLike[str] | DeviceProfile) -> DeviceProfile:
    """Load, resolve and validate a profile given by built-in name or path.

    Raises ProfileError (file, key path, what was expected) on any problem.
    """
    if isinstance(source, DeviceProfile):
        return source
    path = resolve_profile_path(source)
    return _validate(_resolved_data(path, ()), path)


def profile_to_yaml(profile: DeviceProfile) -> str:
    """The fully resolved profile as YAML; loading it back gives an equal profile."""
    return yaml.safe_dump(profile.to_dict(), sort_keys=False, allow_unicode=True)


def unreferenced_numbers(source: str | os.PathLike[str]) -> list[str]:
    """Key paths of numbers written in a profile file that no ``references`` entry of that file
    covers (an entry covers its key path and everything below it)."""
    path = resolve_profile_path(source)
    data = read_yaml(path)
    refs = (data.get("references") or {}) if isinstance(data, dict) else {}
    missing = []
    for key in _number_paths(data):
        parts = key.split(".")
        if not any(".".join(parts[:i]) in refs for i in range(1, len(parts) + 1)):
            missing.append(key)
    return missing


def _number_paths(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, bool) or data is None:
        return []
    if isinstance(data, (int, float)):
        return [prefix]
    if isinstance(data, dict):
        out: list[str] = []
        for key, value in data.items():
            if not prefix and key in ("references", "version"):
                continue
            out += _number_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return []


# --------------------------------------------------------------------------------------------
# error messages

_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
    "int_from_float": "an integer",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the schema model at key path ``loc`` (for 'unknown key' messages)."""
    model: Any = DeviceProfile
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        model = _model_of(field.annotation)
        if model is None:
            return None
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    if kind == "missing":
        return f"{key}: required field missing"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {_kind(value)}"
    if kind in _BOUNDS:
        bound = next(iter(err["ctx"].values()))
        return f"{key}: expected a value {_BOUNDS[kind]} {bound}, got {_kind(value)}"
    if kind == "literal_error":
        return f"{key}: expected {err['ctx']['expected']}, got {_kind(value)}"
    if kind == "string_too_short":
        return f"{key}: expected a non-empty string"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}"
