"""The house rules of ``dlnjax/``, checked on the source: no module imports another module's underscore names
(shared helpers live under plain names, e.g. in ``dlnjax._numerics``), and no function over 80 lines (docstring
excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

import dlnjax

ROOT = Path(dlnjax.__file__).parent
FILES = sorted(ROOT.rglob("*.py"))


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``from M import _name`` where ``_name`` is not itself a module (importing a private module is allowed)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = path.parent
        for _ in range(max(node.level - 1, 0)):
            base = base.parent
        package = base.joinpath(*(node.module or "").split(".")) if node.level else None
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or name.startswith("__"):
                continue
            if package is not None and (
                (package / f"{name}.py").exists() or (package / name).is_dir()
            ):
                continue
            found.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    return found


def _long_functions(path: Path, limit: int, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                n = node.end_lineno - first.end_lineno
            else:
                n = node.end_lineno - node.lineno + 1
            if n > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_the_checks_see_the_package():
    assert len(FILES) >= 40
    assert any(p.name == "_numerics.py" for p in FILES)


def test_the_private_import_check_finds_one(tmp_path):
    (tmp_path / "_numerics.py").write_text("dot = 1\n_secret = 2\n")
    f = tmp_path / "m.py"
    f.write_text("from ._numerics import dot, _secret\nfrom . import _numerics\n")
    assert _private_imports(f, tmp_path) == ["m.py:1 imports _secret"]


def test_the_length_check_counts_past_the_docstring(tmp_path):
    f = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    f.write_text(
        f'def long():\n    """Doc."""\n{body}\n\n\ndef short():\n    """Doc\n\n    more."""\n    return 1\n'
    )
    assert [h.split(" ")[1] for h in _long_functions_at(f)] == ["long"]


def _long_functions_at(path: Path) -> list[str]:
    return _long_functions(path, 80, path.parent)


def test_no_module_imports_another_modules_private_names():
    found = [hit for p in FILES for hit in _private_imports(p)]
    assert found == []


def test_no_function_over_80_lines():
    found = [hit for p in FILES for hit in _long_functions(p, 80)]
    assert found == []
