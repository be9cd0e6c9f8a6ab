"""Registered files found on this machine before any download: the folders of ``HOLOCELL_DATA_DIR`` and the copies
shipped inside the package (see :mod:`holocell.data._registry` for the order of the search)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pooch

from .._warnings import HoloCellWarning, user_stacklevel

if TYPE_CHECKING:
    from ._registry import RegistryEntry

DATA_DIR_ENV = "HOLOCELL_DATA_DIR"
"""Environment variable naming local directories searched before any download."""


def data_dirs() -> list[Path]:
    """The folders of ``$HOLOCELL_DATA_DIR``; a :class:`~holocell.HoloCellWarning` names any that does not exist
    (a typo in the variable would otherwise send every data set to a download without a word)."""
    folders = [Path(f).expanduser() for f in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if f]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        warnings.warn(
            f"${DATA_DIR_ENV} names folders that do not exist: {missing}; they are skipped (the files are looked "
            f"for in the cache and downloaded). Correct ${DATA_DIR_ENV} if the data are in another folder.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    return folders


def local_copy(entry: RegistryEntry) -> Path | None:
    """A verified copy of ``entry`` in a ``$HOLOCELL_DATA_DIR`` folder, else the package's shipped copy, else
    ``None``; ``ValueError`` for a copy whose sha256 is not the registered one."""
    for folder in data_dirs():
        candidate = folder / entry.filename
        if candidate.is_file():
            actual = pooch.file_hash(str(candidate), alg="sha256")
            if actual != entry.sha256:
                raise ValueError(
                    f"{candidate} (found through ${DATA_DIR_ENV}) has sha256 {actual}, but the registry "
                    f"expects {entry.sha256} for {entry.name!r}. The file is corrupted or a different "
                    f"version: replace it, or remove it from that directory to download a fresh copy."
                )
            return candidate
    if entry.shipped is not None and Path(entry.shipped).is_file():
        actual = pooch.file_hash(str(entry.shipped), alg="sha256")
        if actual != entry.sha256:
            raise ValueError(
                f"The copy of {entry.name!r} shipped with holocell ({entry.shipped}) has sha256 {actual}, "
                f"expected {entry.sha256}: the installation is damaged. Reinstall holocell."
            )
        return Path(entry.shipped)
    return None


def registered_places(entry: RegistryEntry, cache: Path, folders: list[Path]) -> list[Path]:
    """Every path where holocell looks for ``entry`` (the data ``folders``, :func:`data_dirs`; the shipped copy;
    ``cache``), existing or not."""
    places = [folder / entry.filename for folder in folders]
    places += [Path(entry.shipped)] if entry.shipped is not None else []
    return [*places, cache / entry.filename]


__all__ = ["DATA_DIR_ENV", "data_dirs", "local_copy", "registered_places"]
