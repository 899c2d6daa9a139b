"""Every notebook in notebooks/ is committed without outputs, and executes in a fresh kernel.

The executions are marked ``notebook``: outside the default suite (they take ~5 min of the 2-core CPU between them),
run by ``make test-notebooks``, which ``.ci/run`` calls after the default suite. Each notebook tells an experiment
whose ``--quick`` run is in the default suite (tests/test_<experiment>.py).
"""

from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK_DIR, execute_notebook

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


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path):
    execute_notebook(path.name)
