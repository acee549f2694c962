"""Sphinx configuration of neurosim's documentation (``make docs``; tests/test_docs.py builds it too).

Sphinx, not MkDocs: the docstrings are written in reST (``:class:`~neurosim...```, ``:func:``,
``:data:``, double-backtick literals), which Sphinx's autodoc reads as they are; MyST renders the
Markdown pages (design.md, chips.md, reliability.md). Nothing is fetched: no intersphinx
inventories, so the build works offline. The build is nitpicky: a reference to a neurosim object
that does not resolve fails it (``-W``), so the cross-references cannot rot either.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import neurosim  # noqa: E402

project = "neurosim"
author = "neurosim developers"
release = neurosim.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to ###, for links such as design.md#21-the-step (a link to a
# missing anchor is a warning, hence an error)
myst_heading_anchors = 3

# autodoc: every member (documented or not; a module's __all__, where it has one, decides), in
# source order; type hints in the description rather than the signature
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource",
                           "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"

# Nitpicky: a reference to a neurosim object that does not resolve is a warning, hence an error
# under -W. Names of other libraries (torch, numpy, the standard library, nir, pydantic) cannot
# resolve without intersphinx inventories, which would need the network: they are ignored below.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|nir|pydantic|yaml|llvmlite|numba|tonic|xylosim|"
               + "|".join(sorted(sys.stdlib_module_names)) + r")(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Linear|Conv2d|Path|PathLike|Generator|dtype|ndarray|floating|NIRGraph|"
               r"Sequence|Mapping|Iterator|Iterable|Callable|BaseModel|ProcessGroup|Namespace|"
               r"ArgumentParser|NamedTuple|Protocol|Enum|Any|Literal)"),
    (r"py:func", r"(round|open|print|len|isinstance)"),  # builtins
    (r"py:.*", r"(.*\.)?_[A-Za-z]\w*"),  # private names (bases shown by show-inheritance, helpers)
    # module constants named in docstrings; autodoc leaves out those without a doc comment
    (r"py:data", r"(.*\.)?[A-Z][A-Z0-9_]*"),
]


def _import_object(name: str):
    """The object a dotted name denotes, importing the longest module prefix; None if none."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return None
        return obj
    return None


def _canonical_name(obj) -> str | None:
    """Where autodoc documents ``obj``: its defining module and qualified name."""
    import inspect

    if inspect.ismodule(obj):
        return obj.__name__
    obj = getattr(obj, "__func__", obj)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname and module.startswith("neurosim"):
        return f"{module}.{qualname}"
    return None


def _resolve_reexports(app, env, node, contnode):
    """Resolve a reference to a re-exported or module-relative neurosim name
    (``neurosim.export.compile_model``, ``fixedpoint.fire``, ``Deployment.from_integers``) to the
    place autodoc documents it (``neurosim.export.compile.compile_model``, ...)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates += [f"{module}.{cls}.{target}"] if cls else []
        candidates.append(f"{module}.{target}")
        package = module.rsplit(".", 1)[0]
        candidates += [f"{package}.{target}", f"{module.split('.')[0]}.{target}"]
    head, _, rest = target.partition(".")
    if rest:  # a module named by its last component: fixedpoint.fire, quantization.input_step
        candidates += [f"{name}.{rest}" for name in sorted(sys.modules)
                       if name.startswith("neurosim.") and name.rsplit(".", 1)[-1] == head]
    domain = env.get_domain("py")
    for candidate in candidates:
        obj = _import_object(candidate) if candidate.startswith("neurosim") else None
        canonical = _canonical_name(obj) if obj is not None else None
        for name in filter(None, (canonical, candidate if obj is not None else None)):
            found = domain.resolve_any_xref(env, node["refdoc"], app.builder, name, node, contnode)
            if found:
                return found[0][1]
    return None


def setup(app):
    app.connect("missing-reference", _resolve_reexports)

html_theme = "alabaster"
html_title = f"neurosim {release}"
html_static_path: list[str] = []
