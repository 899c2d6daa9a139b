"""Every notebook in notebooks/ is committed without outputs, and a test executes it.

The executions live in the test file of the experiment each notebook tells (`conftest.execute_notebook`), where
they run after that file's ``--quick`` run and reuse its compiled programs.
"""

import re
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK_DIR

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "commit notebooks with outputs stripped"
            )


def test_every_notebook_is_executed_by_a_test():
    called = set()
    for f in Path(__file__).parent.glob("test_*.py"):
        called |= set(
            re.findall(r"^\s+execute_notebook\(\"([^\"]+)\"\)", f.read_text(), flags=re.M)
        )
    assert called == {p.name for p in NOTEBOOKS}
