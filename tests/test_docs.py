"""The documentation cannot rot: the Sphinx build (``make docs``) passes with warnings as errors,
the API reference covers every module, and every "docs/design.md §n" citation in the repository
names a section that docs/design.md has.

The build needs the ``docs`` extra (Sphinx, MyST), which ``make test`` installs; without it the
build tests are skipped with that reason, the citation tests still run.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import neurosim

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DESIGN = DOCS / "design.md"
OLD_NAME = "DESIGN" + ".md"  # the original note outside the repository (spelt so that this file does not cite it)

# Files that may name the old note: the design page's own history, and the generated corpus of bad
# inputs, whose artifacts embed the profile text as it was when they were generated (editing them
# would break their checksums; tests/data/bad/generate.py rebuilds them).
MAY_NAME_OLD = ("docs/design.md", "tests/data/bad/")
TEXT_SUFFIXES = {".py", ".md", ".rst", ".txt", ".yaml", ".yml", ".cfg", ".toml", ".ini", ".json", ""}


def repository_files() -> list[str]:
    """Text files of the checkout, tracked or new (git), relative to the root, '/'-separated."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in listed.decode("utf-8").split("\0") if n]
    except (OSError, subprocess.SubprocessError):  # not a git checkout (an unpacked sdist)
        skip = {".git", ".venv", "_build", "__pycache__", "build", "dist", ".pytest_cache", ".hypothesis"}
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            names += [Path(folder, f).relative_to(ROOT).as_posix() for f in files]
    return sorted(n for n in names if Path(n).suffix in TEXT_SUFFIXES and (ROOT / n).is_file())


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8", errors="replace")


def design_sections() -> set[str]:
    """Section numbers of docs/design.md: '## 2. Title' gives '2', '### 2.1 Title' gives '2.1'."""
    found = set()
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line)
        if match:
            found.add(match.group(1))
    return found


CITATION = re.compile(r"docs/design\.md((?:\s*(?:,|and|or)?\s*§\s*\d+(?:\.\d+)*)+)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")


# ------------------------------------------------------------------ citations


def test_design_has_the_numbered_sections_citations_rely_on():
    sections = design_sections()
    assert {"1", "2", "3", "4", "5", "6", "7", "8"} <= sections, sorted(sections)


def test_nothing_cites_the_design_note_outside_the_repository():
    offenders = []
    for name in repository_files():
        if name.startswith(MAY_NAME_OLD) or name == "tests/test_docs.py":
            continue
        for number, line in enumerate(read(name).splitlines(), 1):
            if OLD_NAME in line:
                offenders.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not offenders, "cite docs/design.md instead:\n" + "\n".join(offenders)


def test_every_design_citation_names_a_section_that_exists():
    sections = design_sections()
    cited = 0
    wrong = []
    for name in repository_files():
        text = read(name)
        for match in CITATION.finditer(text):
            for number in SECTION.findall(match.group(1)):
                cited += 1
                if number not in sections:
                    line = text.count("\n", 0, match.start()) + 1
                    wrong.append(f"{name}:{line}: §{number}")
    assert cited > 20, f"only {cited} citations of docs/design.md found: is the pattern still right?"
    assert not wrong, f"docs/design.md has no such section (it has {sorted(sections)}):\n" + "\n".join(wrong)


def test_design_page_refers_only_to_its_own_sections():
    sections = design_sections()
    text = DESIGN.read_text(encoding="utf-8")
    missing = sorted({n for n in SECTION.findall(text) if n not in sections})
    assert not missing, f"docs/design.md refers to sections it does not have: {missing}"


# ------------------------------------------------------------------ the Sphinx build


def public_modules() -> list[str]:
    """Every module of the package (``neurosim.__main__`` aside)."""
    names = ["neurosim"]
    for info in pkgutil.walk_packages(neurosim.__path__, "neurosim."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_api_reference_lists_every_module():
    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", api, flags=re.MULTILINE))
    missing = [m for m in public_modules() if m not in documented]
    assert not missing, f"docs/api.rst has no automodule for {missing}"


@pytest.fixture(scope="module")
def built_html(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="the docs extra (pip install -e '.[docs]') is not installed")
    pytest.importorskip("myst_parser", reason="the docs extra (pip install -e '.[docs]') is not installed")
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # the command of `make docs`, into a fresh folder (no cached environment hides a warning)
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(DOCS), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"sphinx failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_docs_build_with_warnings_as_errors(built_html):
    for page in ("index", "design", "chips", "reliability", "api", "py-modindex"):
        assert (built_html / f"{page}.html").is_file(), page


def test_api_page_documents_the_main_objects(built_html):
    api = (built_html / "api.html").read_text(encoding="utf-8")
    for anchor in ("neurosim.engine.engine.IntegerEngine", "neurosim.engine.engine.IntegerEngine.run",
                   "neurosim.device.profile.DeviceProfile", "neurosim.device.profile.NumericsSpec",
                   "neurosim.device.fixedpoint.decay_by_shift", "neurosim.device.chips.sample_chips",
                   "neurosim.nn.neuron.lif_step", "neurosim.nn.surrogate.PSG",
                   "neurosim.train.config.TrainConfig", "neurosim.train.methods.pda_loss",
                   "neurosim.export.compile.compile_model", "neurosim.export.deployment.Deployment",
                   "neurosim.export.deployment.load_deployment", "neurosim.sweep.runner.run_sweep",
                   "neurosim.errors.ProfileError"):
        assert f'id="{anchor}"' in api, anchor
    index = (built_html / "py-modindex.html").read_text(encoding="utf-8")
    missing = [m for m in public_modules() if f">{m}<" not in index]
    assert not missing, f"modules missing from the module index: {missing}"


def test_design_page_has_its_sections(built_html):
    html = (built_html / "design.html").read_text(encoding="utf-8")
    for anchor in ("1-the-layers-and-the-flow-of-data", "2-neuron-dynamics", "3-device-profiles",
                   "4-export-and-the-integer-engine", "5-training-bridge", "8-chip-rules"):
        assert f'id="{anchor}"' in html, anchor
