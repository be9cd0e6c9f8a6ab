"""Execute the tutorials in place and keep their outputs (the docs show the committed outputs).

Run after a change that alters what the notebooks print: ``python scripts/run_tutorials.py [name ...]``.
Each notebook runs in a temporary folder (files it writes land there) with the environment of this process
(``HOLOCELL_DATA_DIR`` for the real data sets), and execution metadata (timings) is dropped so the diff shows
only what changed. ``tests/test_tutorials.py`` checks the committed outputs for banners, adverts and local paths.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def run(path: Path) -> None:
    # The kernel inherits this environment: a non-interactive MPLBACKEND (e.g. Agg under CI) would keep the
    # figures out of the saved outputs.
    os.environ.pop("MPLBACKEND", None)
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        client = nbclient.NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": folder}}, record_timing=False
        )
        client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in TUTORIALS.glob("*.ipynb"))
    for name in names:
        start = time.time()
        run(TUTORIALS / f"{name}.ipynb")
        print(f"{name}: {time.time() - start:.0f} s")
