"""Which file at a cache name holocell downloaded: the record ``<file>.json`` and the file's identity.

When holocell puts a verified download into the cache it records, beside the expected sha256, what it
wrote: the file's size, inode and modification time (ns). A file at that name is holocell's own download,
which a later fetch may replace, only while

- its record is holocell's (``kind: "download"``), the file is a regular file and not a link, and
- it is the file holocell wrote (the same size, inode and mtime, so no hashing is needed), or it holds the
  bytes holocell recorded (the cache was copied elsewhere), or it is a damaged download: empty, a ``.zip``
  or HDF5 file that cannot be opened, or another file shorter than the recorded download (cut off).

Any other file there (the user's own, e.g. a fine-tuned model saved over the cached archive, or a file copied
to that name when ``$HOLOCELL_CACHE_DIR`` is a project folder) is never replaced: :func:`not_downloaded` is
raised before any request. Records written before the identity was recorded have only the sha256: a file
there is holocell's when it holds those bytes or is a damaged ``.zip`` / HDF5 file.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pooch

from ._download import read_stamp

#: Environment variable overriding the download cache directory (also in :mod:`._registry`).
CACHE_DIR_ENV = "HOLOCELL_CACHE_DIR"
_IDENTITY = ("size", "inode", "mtime_ns")
_ZIP_SUFFIXES = (".zip", ".npz")
_HDF5_SUFFIXES = (".h5", ".h5ad", ".h5mu", ".hdf5")


def record_path(path: Path) -> Path:
    """Where the record of the cached file ``path`` is (``<file>.json`` beside it)."""
    return path.with_name(f"{path.name}.json")


def identity(path: Path) -> dict[str, int]:
    """Size, inode and mtime (ns) of the file at ``path`` (the link itself for a link)."""
    info = os.lstat(path)
    return {"size": info.st_size, "inode": info.st_ino, "mtime_ns": info.st_mtime_ns}


def download_record(url: str, sha256: str, written: dict[str, int]) -> dict:
    """The record of a download of ``url`` (``sha256``) that holocell put into the cache as the file ``written``
    (:func:`identity` of it)."""
    return {"kind": "download", "url": url, "sha256": sha256, **written}


def recorded_download(path: Path, sha_now: str | None = None) -> bool:
    """Whether the file at ``path`` is holocell's download (see the module docstring), which may be replaced.

    Parameters
    ----------
    path
        A file at a cache name.
    sha_now
        Its sha256 when the caller has it already (it is computed only when the identity has changed).
    """
    record = read_stamp(record_path(path))
    if record is None or record.get("kind") != "download":
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    written = {k: record.get(k) for k in _IDENTITY}
    if all(isinstance(v, int) for v in written.values()) and identity(path) == written:
        return True  # the file holocell wrote (perhaps damaged since), recognised without hashing it
    if sha_now is None:
        sha_now = pooch.file_hash(str(path), alg="sha256")
    return sha_now == record["sha256"] or damaged(path, record.get("size"))


def damaged(path: Path, recorded_size: object = None) -> bool:
    """Whether ``path`` is a damaged or cut-off download: empty, an unreadable ``.zip`` / HDF5 file, or (any other
    file) shorter than the ``recorded_size`` of the download. A readable archive or data file is never damaged."""
    size = os.lstat(path).st_size
    if size == 0:
        return True
    name = path.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        try:
            with zipfile.ZipFile(path):  # reads the central directory at the end: a cut-off file has none
                return False
        except (OSError, zipfile.BadZipFile, ValueError):
            return True
    if name.endswith(_HDF5_SUFFIXES):
        import h5py

        try:
            with h5py.File(path, "r"):
                return False
        except Exception:  # noqa: BLE001 - whatever h5py reports, the file holds no readable data
            return True
    return isinstance(recorded_size, int) and size < recorded_size


def not_downloaded(path: Path, sha256: str) -> FileExistsError:
    """The refusal for a file at a cache name that is not holocell's download (naming it, the cache and the fix)."""
    if read_stamp(record_path(path)) is None:
        why = (
            f"holocell did not download it (there is no record {path.name}.json beside it) and its sha256 is not the "
            f"expected {sha256}"
        )
    else:
        why = (
            f"it is not the file holocell downloaded there (recorded in {path.name}.json): it was replaced or changed "
            f"since (e.g. a model saved over the cached copy), its sha256 is not the expected {sha256}, and it is not "
            "a damaged download"
        )
    return FileExistsError(
        f"{path} exists in the holocell cache folder (${CACHE_DIR_ENV}={path.parent}), but {why}; holocell never "
        f"writes over it. Move or rename that file (to keep it), or set ${CACHE_DIR_ENV} to another folder, then "
        "fetch again."
    )


__all__ = [
    "damaged",
    "download_record",
    "identity",
    "not_downloaded",
    "record_path",
    "recorded_download",
]
