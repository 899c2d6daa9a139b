"""MkDocs hook: every public name of dlnjax must be documented on an API page.

The public names are those that ``dlnjax/__init__.py`` (and ``dlnjax/{flows,losses,sweep,internal}/__init__.py``)
re-export as ``from .x import name as name``, read statically (nothing is imported). A name counts as documented
when some ``::: dlnjax...name`` directive of ``docs/api/*.md`` renders it. A missing one is logged as a warning,
which fails the ``--strict`` build (``make docs``), so the API reference cannot fall behind ``__init__``.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.api_coverage")

_MODULES = {
    "dlnjax": "dlnjax/__init__.py",
    "dlnjax.flows": "dlnjax/flows/__init__.py",
    "dlnjax.losses": "dlnjax/losses/__init__.py",
    "dlnjax.sweep": "dlnjax/sweep/__init__.py",
    "dlnjax.internal": "dlnjax/internal.py",
}
_SUBPACKAGES = {"flows", "losses", "sweep", "internal", "experiments"}


def _public_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names += [
                a.name for a in node.names if a.asname == a.name and a.name not in _SUBPACKAGES
            ]
    return names


def on_pre_build(config, **kwargs):
    root = Path(config["config_file_path"]).parent
    targets = set()
    for page in sorted((Path(config["docs_dir"]) / "api").glob("*.md")):
        targets |= set(re.findall(r"^:::\s+(dlnjax[\w.]*)", page.read_text(encoding="utf-8"), re.M))
    documented = {t.rsplit(".", 1)[-1] for t in targets}
    for module, rel in _MODULES.items():
        path = root / rel
        if not path.exists():
            continue
        for name in _public_names(path):
            if name not in documented:
                log.warning(
                    f"{module}.{name} is public ({rel}) but no '::: {module}.{name}' on a docs/api page"
                )
