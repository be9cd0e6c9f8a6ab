"""Data sets made on the user's machine from original public files: download, check, convert once.

A converted entry of the registry (``RegistryEntry.sources`` not empty) names the original files it is
made from; each original is a registry entry of its own (``kind="source"``) with the URL of the
public file at a pinned commit and the sha256 of its bytes. :func:`fetch_converted` downloads the
originals with pooch (through the capped downloader), checks their hashes, converts them with the
converter of :mod:`holocell.data._convert`, and writes the result into the cache once, atomically,
with a stamp (``<file>.json``: the sources' hashes, the converter version and the result's sha256).
A later call returns the cached result when its stamp matches; anything else (a stamp from other
sources or an older converter, a damaged file) is converted again from the cached originals. Only a file
holocell converted is replaced, and only when it is unchanged since (its sha256 is in the stamp) or damaged
beyond reading: a file at the cache name without holocell's stamp (the user's own copy, when
``$HOLOCELL_CACHE_DIR`` is their folder), or a conversion the user edited in place, is refused with
``FileExistsError``. The file and its stamp are written through exclusively created temporary files.

A local copy of the converted file in ``$HOLOCELL_DATA_DIR`` (checked against the entry's sha256, the
hash of the copies the benchmarks were run on) is used before any of this.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from . import _convert, _registry
from ._download import read_stamp, write_stamp
from ._registry import CACHE_DIR_ENV, RegistryEntry, _prepare_cache, cache_dir, fetch, register, sha256sum

__all__ = ["CONVERTERS", "fetch_converted", "register_converted"]

#: Converter of each converted entry: original file names (as published) -> local paths, to data.
CONVERTERS: dict[str, Callable[[Mapping[str, Path]], object]] = {
    "snareseq2_mop": _convert.convert_scmomat_mop,
    "granja2019_bmmc": lambda paths: _convert.convert_epichaos_hemato(paths["hemato.rda"]),
    "pbmc_multiome_1k": lambda paths: _convert.convert_muon_multiome(paths["test_rna_atac.h5mu"]),
}


def register_converted(
    name: str, filename: str, sha256: str, sources: Mapping[str, tuple[str, str, str]], description: str
) -> RegistryEntry:
    """Register a converted data set and its original files.

    Parameters
    ----------
    name
        Registry key of the data set (a key of :data:`CONVERTERS`).
    filename
        Name of the converted ``.h5mu`` / ``.h5ad`` file (cache and ``$HOLOCELL_DATA_DIR``).
    sha256
        Hash of the reference converted copy (the one in ``../shared/data``), checked for local copies.
    sources
        Original file name (as published) -> (URL at a pinned commit, sha256 of its bytes, cache file name).
        Each becomes the registry entry ``"<name>:<original file name>"`` of kind ``"source"``; the converted
        entry has no ``url`` (``None``): its file is made from those, not downloaded.
    description
        One line for :func:`holocell.data.available`.
    """
    names = []
    for original, (url, sha, cached_as) in sources.items():
        source = f"{name}:{original}"
        register(source, cached_as, sha, url=url, kind="source", description=f"original file of {name!r}")
        names.append(source)
    entry = register(name, filename, sha256, description=description)
    # no URL: the file is made here from the sources (each "<name>:<file>" entry holds its own URL and sha256)
    entry = replace(entry, url=None, sources=tuple(names))
    _registry.REGISTRY[name] = entry
    return entry


def _stamp(entry: RegistryEntry) -> dict:
    return {
        "converter_version": _convert.CONVERTER_VERSION,
        "sources": {s: _registry.REGISTRY[s].sha256 for s in entry.sources},
    }


def _cached(target: Path, stamp: dict | None, expected: dict) -> bool:
    """Whether ``target`` is a complete conversion of the expected sources by this converter."""
    if stamp is None or not target.is_file() or {k: stamp.get(k) for k in expected} != expected:
        return False
    return stamp.get("sha256") == sha256sum(target)


def _damaged(path: Path) -> bool:
    """Whether ``path`` cannot be opened as an HDF5 file (a truncated or overwritten conversion)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return False
    except Exception:  # noqa: BLE001 - whatever h5py reports, the file holds no readable data
        return True


def _ours(target: Path, stamp_path: Path) -> bool:
    """Whether ``target`` may be replaced: absent, or holocell's conversion (its stamp names its sha256, now or
    before the last conversion) unchanged since, or damaged beyond reading."""
    if not os.path.lexists(target):
        return True
    stamp = read_stamp(stamp_path)
    if stamp is None or target.is_symlink() or not target.is_file():
        return False
    return sha256sum(target) in (stamp.get("sha256"), stamp.get("replaces")) or _damaged(target)


def _refusal(target: Path, stamp_path: Path, entry: RegistryEntry) -> FileExistsError:
    if not os.path.lexists(target):  # only the stamp's name is taken
        target = stamp_path
        why = "it is not a stamp holocell wrote"
    elif read_stamp(stamp_path) is None:
        why = f"holocell did not write it (there is no holocell stamp {stamp_path.name} beside it)"
    else:
        why = f"it has changed since holocell converted it (its sha256 is not the one in {stamp_path.name})"
    return FileExistsError(
        f"{target} exists in the holocell cache folder (${CACHE_DIR_ENV}={target.parent}), but {why}; holocell "
        f"never writes over it. Move or rename that file (to keep it), or set ${CACHE_DIR_ENV} to another folder; "
        f"then {entry.name!r} is converted again from its original files."
    )


def _write(data, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if hasattr(data, "write_h5mu"):
            data.write_h5mu(path, compression="gzip")
        else:
            data.write_h5ad(path, compression="gzip")


def fetch_converted(entry: RegistryEntry, *, progressbar: bool = True) -> Path:
    """Path of the converted file of ``entry`` in the cache, converting it from its originals if needed.

    Parameters
    ----------
    entry
        A registry entry with ``sources``.
    progressbar
        Show download progress bars.

    Returns
    -------
    Path of the converted file in :func:`holocell.data.cache_dir`.

    Raises
    ------
    FileExistsError
        A file that holocell did not convert, or that changed since it did (the user's own copy, their edits),
        is at the cache name, or a file that is not holocell's stamp at ``<file>.json``: it is never replaced.
    """
    folder = cache_dir()
    target, stamp_path = folder / entry.filename, folder / f"{entry.filename}.json"
    expected = _stamp(entry)
    stamp = read_stamp(stamp_path)
    if _cached(target, stamp, expected):
        return target
    if not _ours(target, stamp_path) or (stamp is None and os.path.lexists(stamp_path)):
        raise _refusal(target, stamp_path, entry)  # before anything is downloaded or converted
    paths = {source.split(":", 1)[1]: fetch(source, progressbar=progressbar) for source in entry.sources}
    data = CONVERTERS[entry.name](paths)
    _prepare_cache(folder)
    from ..model._safe_write import (
        write_beside,  # lazily: holocell.model imports holocell.train, which imports data
    )

    with write_beside(
        target, lambda p: _ours(p, stamp_path), lambda p: _refusal(p, stamp_path, entry), target.suffix
    ) as tmp:
        _write(data, tmp)
        record = {"kind": "conversion", **expected, "sha256": sha256sum(tmp)}
        # checked again: a file may have appeared while the originals were fetched and converted
        if os.path.lexists(target):
            if not _ours(target, stamp_path):
                raise _refusal(target, stamp_path, entry)
            if not _damaged(target):
                record["replaces"] = sha256sum(target)  # until the rename, the old file is still holocell's
        write_stamp(stamp_path, record)  # first: whichever file is in place when this stops, it is recorded
    return target


# ---------------------------------------------------------------------------------------- entries
_SCMOMAT = "https://raw.githubusercontent.com/PeterZZQ/scMoMaT/dbd954de4b1be415cdea543baf2856df0fda6992/data/real/MOp_5batches/"
register_converted(
    "snareseq2_mop",
    "scmomat_mop_snareseq2_10k.h5mu",
    "bc1561ed1950932a16f5f7f70daf6554e6f91cb3fac6df3dd3c9a33bd5d772d2",
    {
        name: (_SCMOMAT + name, sha, f"scmomat-dbd954de-MOp_5batches-{name}")
        for name, sha in {
            "RxC1.npz": "59d6f46dc4e908194bfc859b7773bc666d96ab74d9386b0a8f92d6b29dfcacf7",
            "GxC1.npz": "44e48e6243954feafe0541f33b6b116093ca1ed4a25fc2f3ca146d89d1ab1bab",
            "meta_c1.csv": "05ea13be8042f66ee51516ccf9fd28ca43972498a69748a9e89b5b1ca280b037",
            "genes.txt": "9d722d1d281f5ff152dc8a1fb257fec883b8aa28ea3f4f79783d0595dd8b4833",
            "regions.txt": "d77319b1ad8a51af2c97ffa5d23d5458e95356b1926e9ae4e0ab821cc7e492a3",
        }.items()
    },
    "Mouse motor cortex SNARE-seq2 (mm10), paired RNA + ATAC, 10,309 cells; from scMoMaT's files (MIT).",
)
register_converted(
    "granja2019_bmmc",
    "granja2019_bmmc_scatac_14k.h5ad",
    "b6bb7864fa6150dbda0b569fd0c0834a2dcb10fbdb49ee8228e346c8e14c9451",
    {
        "hemato.rda": (
            "https://raw.githubusercontent.com/CompEpigen/epiCHAOS/6a299c5e9b1149094270505b8a7c28ac5b765590/data/hemato.rda",
            "bf805f8ff662e057099464addd95d01b9189ee7584f096578f6b0ee740b57643",
            "epichaos-6a299c5e-hemato.rda",
        )
    },
    "Human bone-marrow scATAC (hg19), Granja et al. 2019, 14,125 cells; from epiCHAOS's hemato.rda (MIT).",
)
register_converted(
    "pbmc_multiome_1k",
    "muon_test_pbmc_multiome_1k.h5mu",
    "917a6beab7e5cd602ebd8151db9020ba088782003b8f262bf08a9ba56b7188ae",
    {
        "test_rna_atac.h5mu": (
            "https://raw.githubusercontent.com/scverse/muon/03c762e5ebe44b5aa23392b1f31d27c41f2e0b44/tests/data/atac/test_rna_atac.h5mu",
            "9f5c1943c1159e9fa494216993f00da26c138ba68d6afe37340774db739da93d",
            "muon-03c762e5-test_rna_atac.h5mu",
        )
    },
    "Human PBMC 10x Multiome (GRCh38), 1,000 cells, 174 peaks + 45 genes; muon's test file (BSD-3).",
)
