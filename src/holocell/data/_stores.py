"""What a folder given as data is, in one wording for the Python API and the command line: a zarr store of a MuData
or of an AnnData, with the call that reads it, and an ``.h5mu`` name beside it to convert it to that does not exist
yet (advice never names a file that following it would replace)."""

from __future__ import annotations

import os
from pathlib import Path


def zarr_store(path: str | os.PathLike) -> tuple[str, str] | None:
    """What the folder ``path`` is and the call that reads it as a MuData, e.g. ``("a MuData zarr store",
    "mudata.read_zarr('x.zarr')")``, if it is a zarr store (of a MuData, or of an AnnData: wrapped as ``rna``);
    else ``None``. The one wording of this advice for the Python API and the command line."""
    path = Path(path).expanduser()
    if not path.is_dir() or not any((path / marker).exists() for marker in (".zgroup", "zarr.json")):
        return None
    where = repr(str(path))
    if (path / "mod").is_dir():
        return "a MuData zarr store", f"mudata.read_zarr({where})"
    return "a zarr store of an AnnData", f"mudata.MuData({{'rna': anndata.read_zarr({where})}})"


def free_h5mu_name(path: str | os.PathLike) -> Path:
    """An ``.h5mu`` path beside ``path`` that does not exist yet (``x.zarr`` -> ``x.h5mu``, else ``x_1.h5mu`` ...):
    advice to write a converted copy never names a file that writing would replace."""
    path = Path(path)
    candidate, number = path.with_suffix(".h5mu"), 0
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.stem}_{number}.h5mu")
    return candidate


__all__ = ["free_h5mu_name", "zarr_store"]
