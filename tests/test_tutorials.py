"""Execute every tutorial notebook end to end; any cell error fails the test."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(notebook: Path, tmp_path: Path, shared_data_dir: Path) -> None:
    # the kernel inherits HOLOCELL_DATA_DIR (the mouse multiome tutorial reads SNARE-seq2 from it)
    # Run a copy in a temporary directory so files the notebook writes (saved models) land there.
    path = tmp_path / notebook.name
    shutil.copy(notebook, path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": tmp_path}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors, errors
