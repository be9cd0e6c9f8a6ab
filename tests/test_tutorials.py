"""The tutorials: executed end to end, written on the public API only, committed with clean outputs."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))
IDS = [p.stem for p in TUTORIALS]

#: What must never show in a committed output: Lightning's start-up banners and adverts, tqdm's missing-widget
#: note, and paths of the machine the notebook ran on.
FORBIDDEN = [
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "LOCAL_RANK",
    "Tip:",
    "litlogger",
    "IProgress not found",
    "site-packages",
    ".venv",
    "/work/",
    "/home/",
    "/tmp/",
    "/Users/",
    "C:\\\\",
    "Traceback",
]


def _code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("notebook", TUTORIALS, ids=IDS)
def test_notebook_uses_only_the_public_api(notebook: Path) -> None:
    """No ``holocell._private`` import or attribute, no reading of the repository's own files."""
    for cell in _code_cells(notebook):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "holocell":
                assert not any(p.startswith("_") for p in node.module.split(".")), node.module
                assert not any(a.name.startswith("_") for a in node.names), [a.name for a in node.names]
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "holocell":
                        assert not any(p.startswith("_") for p in alias.name.split(".")), alias.name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hc":
                assert not node.attr.startswith("_"), f"hc.{node.attr}"
        assert "tests/data" not in cell.source and "hc.__file__" not in cell.source


@pytest.mark.parametrize("notebook", TUTORIALS, ids=IDS)
def test_committed_outputs_are_clean(notebook: Path) -> None:
    cells = _code_cells(notebook)
    assert all(c.execution_count is not None for c in cells), "run scripts/run_tutorials.py and commit the outputs"
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    text = json.dumps([c.outputs for c in cells])
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    found = [s for s in FORBIDDEN if s in text]
    assert not found, f"{notebook.name} outputs contain {found}"
    for output in (o for c in cells for o in c.outputs if o.output_type == "display_data"):
        if output.data.get("text/plain", "").startswith("<Figure"):
            assert "image/png" in output.data  # a figure was drawn, not only named


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=IDS)
def test_tutorial_runs(
    notebook: Path, tmp_path: Path, shared_data_dir: Path, require_real_data, real_data_loaders
) -> None:
    """The notebook runs top to bottom without an error (one that loads a real data set needs that data).

    The kernel inherits ``HOLOCELL_DATA_DIR`` (``shared_data_dir``): the notebooks on real cells read the
    converted copies from there, or download the originals with ``HOLOCELL_TEST_DOWNLOADS=1``.
    """
    sources = "\n".join(c.source for c in _code_cells(notebook))
    for name in real_data_loaders:
        if f"hc.data.{name}(" in sources:
            require_real_data(name)
    # Run a copy in a temporary directory so files the notebook writes (saved models) land there.
    path = tmp_path / notebook.name
    shutil.copy(notebook, path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": tmp_path}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors, errors
