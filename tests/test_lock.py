"""The lock (``constraints.txt``) against setup.cfg, the Makefile and this environment.

``make demo``, ``make test`` and ``.ci/run`` install every package at the version the lock names
(``pip install -c constraints.txt``); ``pip install neurosim`` keeps setup.cfg's ranges. These
tests fail when the two disagree (a requirement the lock lacks or locks outside its range), when
the Makefile pins a peer at another version, and when the environment running the tests holds a
version the lock does not name, so that no test depends on an unlocked version.
"""

from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def locked() -> dict[str, Version]:
    """Package name (canonical) -> locked version."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> dict[str, list[Requirement]]:
    """setup.cfg's requirements: install_requires and each extra."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    groups = {"install_requires": config["options"]["install_requires"]}
    groups.update(config["options.extras_require"])
    out = {}
    for group, text in groups.items():
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        out[group] = [Requirement(line) for line in lines if line]
    return out


def makefile_pins() -> list[Requirement]:
    """The packages the Makefile names by version (torch, the peers)."""
    text = (ROOT / "Makefile").read_text()
    names = []
    for var in ("TORCH", "PEERS"):
        match = re.search(rf"^{var}\s*:=\s*(.+)$", text, re.M)
        assert match, f"Makefile: {var} not found"
        names += match.group(1).split()
    return [Requirement(name) for name in names]


def test_the_lock_pins_every_package_once():
    names = [line.split("==")[0] for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert len(names) == len({canonicalize_name(n) for n in names}) > 20


def test_every_requirement_of_setup_cfg_is_locked_within_its_range():
    pins = locked()
    problems = []
    for group, requirements in declared().items():
        for req in requirements:
            name = canonicalize_name(req.name)
            if name not in pins:
                problems.append(f"{group}: {req} is not in constraints.txt")
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{group}: {req} but constraints.txt locks {pins[name]}")
    assert not problems, "setup.cfg and the lock disagree (run `make lock`):\n" + "\n".join(problems)


def test_the_makefiles_pins_are_the_locked_versions():
    pins = locked()
    for req in makefile_pins():
        name = canonicalize_name(req.name)
        assert name in pins, f"Makefile installs {req}, which constraints.txt does not lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"Makefile: {req}, lock: {pins[name]}"


def test_this_environment_holds_the_locked_versions():
    """Every locked package that is installed here is installed at its locked version."""
    wrong = []
    for name, version in locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
        if installed != version:
            wrong.append(f"{name} {installed} (lock: {version})")
    assert not wrong, "installed versions differ from constraints.txt (make install):\n" + "\n".join(wrong)
