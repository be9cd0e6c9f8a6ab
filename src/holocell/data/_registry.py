"""Registry of downloadable files (datasets and checkpoints), fetched with pooch and verified by sha256.

Resolution order for a registered file:

1. a local directory listed in ``HOLOCELL_DATA_DIR`` (``os.pathsep``-separated) holding a file of the
   registered name: used in place after its sha256 is checked (offline use, CI, shared drives);
2. a copy shipped inside the package (entries with ``shipped=...``, e.g. the ``holocell-small``
   checkpoint), also checked;
3. the cache directory (``HOLOCELL_CACHE_DIR``, default: the platform cache folder of ``holocell``):
   pooch re-uses a cached file whose hash matches and sends no request;
4. a download from the registered URL (progress bar), written to a temporary file, checked, then moved
   into the cache, and recorded there (``<file>.json``). A file whose hash does not match is refused and
   nothing is cached. The record names the file holocell wrote (:mod:`holocell.data._cache_record`): that
   file, damaged since, is downloaded again; any other file at the cache name (the user's own, when
   ``HOLOCELL_CACHE_DIR`` is their folder, or a model saved over the cached copy) is never replaced:
   ``FileExistsError`` names it and the fix.

The real data sets are *converted* entries: their registered URLs and hashes are those of the original
public files (at a pinned commit), which are downloaded, checked, and converted to ``.h5mu`` /
``.h5ad`` once into the cache (:mod:`holocell.data._derived`).

A download is capped in size (``$HOLOCELL_MAX_DOWNLOAD_BYTES``, default 32 GiB; checkpoints 4 GiB),
follows redirects only to ``http(s)://`` URLs, and its errors name the real cause: a cache path
that is a file or not writable, a refused redirect, an oversized file, a hash mismatch, the HTTP status
the server answered (``requests.HTTPError``), or the network (``ConnectionError``). A sha256 (64 hex
characters) and a file name (plain: nothing is written outside the cache) are checked before any request.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pooch

from .._warnings import HoloCellDeprecationWarning, HoloCellWarning
from ._cache_record import download_record, identity, not_downloaded, record_path, recorded_download
from ._download import (
    MAX_CHECKPOINT_BYTES,
    CappedDownloader,
    DownloadRefused,
    max_download_bytes,
    write_stamp,
)
from ._download_errors import download_error
from ._local_copies import DATA_DIR_ENV as DATA_DIR_ENV  # re-exported: its documented home
from ._local_copies import local_copy as _local_copy

#: Environment variable overriding the download cache directory.
CACHE_DIR_ENV = "HOLOCELL_CACHE_DIR"
#: Default URL folder of an entry registered without a ``url`` (the checkpoint release assets).
BASE_URL = "https://github.com/holocell-dev/holocell-data/releases/download/v1/"


@dataclass(frozen=True)
class RegistryEntry:
    """One downloadable file.

    Attributes
    ----------
    name
        Registry key (what users pass, e.g. ``"snareseq2_mop"``).
    filename
        File name in the cache and in local data directories.
    sha256
        Hex sha256 of the file.
    url
        Download URL; ``None`` for a converted data set (``sources`` are its files, each with its URL and sha256).
    kind
        ``"dataset"`` or ``"checkpoint"``.
    description
        One line: what the file is, its source and licence.
    shipped
        Path of a copy shipped inside the package (used before the cache and the URL), or None.
    sources
        Registry names of the original files a converted data set is made from (empty for a file
        that is downloaded as it is); see :mod:`holocell.data._derived`.
    deprecated
        For a deprecated name: the message :func:`fetch` warns with (naming the replacement), else None.
    """

    name: str
    filename: str
    sha256: str
    url: str | None
    kind: str = "dataset"
    description: str = ""
    shipped: str | None = None
    sources: tuple[str, ...] = ()
    deprecated: str | None = None


REGISTRY: dict[str, RegistryEntry] = {}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value, what: str = "sha256") -> str:
    """``value`` as 64 lowercase hex characters (a ``sha256:`` prefix is dropped), or a ``ValueError``.

    Parameters
    ----------
    value
        The expected hash as given by the user.
    what
        Its name, for the message.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string of 64 hex characters, got {type(value).__name__}.")
    sha = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(sha):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ValueError(
            f"{what} must be 64 hex characters (a sha256, e.g. from `sha256sum file`), got {shown!r}; nothing "
            "was fetched or created."
        )
    return sha


def check_file_name(filename, what: str = "filename") -> str:
    """A plain file name (no folder part, not ``.``/``..``), or a ``ValueError``: cache files stay in the cache."""
    if (
        not isinstance(filename, str)
        or not filename
        or filename in (".", "..")
        or "/" in filename
        or "\\" in filename
        or "\0" in filename
        or Path(filename).name != filename
    ):
        raise ValueError(f"{what} must be a plain file name (no folders), got {filename!r}.")
    return filename


def register(
    name: str,
    filename: str,
    sha256: str,
    url: str | None = None,
    kind: str = "dataset",
    description: str = "",
    shipped: str | os.PathLike[str] | None = None,
) -> RegistryEntry:
    """Add (or replace) a registry entry, e.g. a lab's own checkpoint server.

    Parameters
    ----------
    name
        Key used by :func:`fetch`.
    filename
        File name to cache it under.
    sha256
        Expected hex sha256 of the file (64 characters).
    url
        Download URL (default: :data:`BASE_URL` + ``filename``).
    kind
        ``"dataset"``, ``"checkpoint"``, or ``"source"`` (an original file a data set is converted from;
        re-registering one with another ``url`` points a loader at a mirror).
    description
        Free text shown by :func:`available`.
    shipped
        A copy of the file inside the installed package, used offline (checked against ``sha256``).

    Returns
    -------
    The new entry.
    """
    sha256 = check_sha256(sha256, f"sha256 for {name!r}")
    check_file_name(filename, f"filename for {name!r}")
    if kind not in ("dataset", "checkpoint", "source"):
        raise ValueError(f"kind must be 'dataset', 'checkpoint' or 'source', got {kind!r}.")
    shipped = None if shipped is None else str(shipped)
    entry = RegistryEntry(name, filename, sha256, url or BASE_URL + filename, kind, description, shipped)
    REGISTRY[name] = entry
    return entry


def available(kind: str | None = None) -> list[str]:
    """Names in the registry: datasets and checkpoints, or only the given ``kind``.

    Parameters
    ----------
    kind
        ``"dataset"``, ``"checkpoint"``, ``"source"`` (the original files data sets are converted from),
        or None for datasets and checkpoints.
    """
    return sorted(n for n, e in REGISTRY.items() if (e.kind != "source" if kind is None else e.kind == kind))


def cache_dir() -> Path:
    """Directory downloads are cached in (``$HOLOCELL_CACHE_DIR`` or the platform cache)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path(pooch.os_cache("holocell"))


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (:func:`pooch.file_hash`)."""
    return pooch.file_hash(str(path), alg="sha256")


def fetch(name: str, *, progressbar: bool = True) -> Path:
    """Path of a registered file, from a local directory, the cache, or a verified download.

    Parameters
    ----------
    name
        A registry key (see :func:`available`).
    progressbar
        Show a download progress bar.

    Returns
    -------
    Local path of the verified file. For a converted data set (``snareseq2_mop``, ``granja2019_bmmc``,
    ``pbmc_multiome_1k``): the ``.h5mu`` / ``.h5ad`` made from its checked original files, converted
    once into the cache.

    Raises
    ------
    KeyError
        ``name`` is not registered.
    ValueError
        The file's sha256 does not match (nothing is cached).
    ConnectionError
        The file is not local and the server cannot be reached.
    requests.HTTPError
        The server answered with an error status (404: no file at the entry's URL; 5xx: retry later).
    """
    if name not in REGISTRY:
        raise KeyError(f"{name!r} is not in the holocell registry; available: {available()}.")
    entry = REGISTRY[name]
    if entry.deprecated:
        warnings.warn(entry.deprecated, HoloCellDeprecationWarning, stacklevel=2)
    local = _local_copy(entry)
    if local is not None:
        return local
    if entry.sources:
        from ._derived import fetch_converted

        return fetch_converted(entry, progressbar=progressbar)
    cap = MAX_CHECKPOINT_BYTES if entry.kind == "checkpoint" else None
    return fetch_url(entry.url, entry.sha256, entry.filename, progressbar=progressbar, max_bytes=cap)


def _prepare_cache(folder: Path) -> None:
    """Create the cache folder and check it takes files; raise naming the real cause and the fix."""
    fix = f"Set ${CACHE_DIR_ENV} to a writable folder, or fix the permissions of {folder}."
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(
                f"The holocell cache folder {folder} cannot be used: {parent} is a file, not a folder. "
                f"Move that file away, or set ${CACHE_DIR_ENV} to a folder."
            )
        if parent.exists():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except PermissionError as err:
        raise PermissionError(
            f"Cannot write to the holocell cache folder {folder} (permission denied). {fix}"
        ) from err
    except OSError as err:
        raise OSError(
            f"Cannot use the holocell cache folder {folder} ({type(err).__name__}: {err}). {fix}"
        ) from err


def fetch_url(
    url: str, sha256: str, filename: str, *, progressbar: bool = True, max_bytes: int | None = None
) -> Path:
    """Download ``url`` into the cache (or reuse the cached copy), refusing a wrong sha256.

    Parameters
    ----------
    url
        Where to download from (``http(s)://``; redirects are followed to ``http(s)://`` only).
    sha256
        Expected hex sha256 (64 characters; checked before anything is fetched or created).
    filename
        Name of the file in the cache (a plain name).
    progressbar
        Show a download progress bar.
    max_bytes
        Largest accepted download; ``$HOLOCELL_MAX_DOWNLOAD_BYTES`` overrides it (default 32 GiB).

    Returns
    -------
    Path of the verified file in :func:`cache_dir`.

    Raises
    ------
    ValueError
        A malformed sha256 or file name, a hash mismatch, a file above the size cap, or a redirect
        to another scheme (nothing is cached).
    PermissionError, NotADirectoryError, OSError
        The cache folder cannot be created or written (naming it and ``$HOLOCELL_CACHE_DIR``).
    FileExistsError
        A file with another sha256 that is not holocell's download is at the cache name (the user's file, or one
        saved over the cached copy since; :mod:`holocell.data._cache_record`): nothing is sent or replaced.
    ConnectionError
        The server cannot be reached (no network, connection refused, timeout).
    requests.HTTPError
        The server answered with an error status, named with the URL (404: check the URL; 5xx: retry later).
    """
    sha256 = check_sha256(sha256)
    check_file_name(filename)
    if urlparse(url).scheme not in ("http", "https"):
        raise ValueError(f"holocell downloads over http(s) only, got {url!r}.")
    folder = cache_dir()
    cached = folder / filename
    actual = sha256sum(cached) if cached.is_file() else None
    if actual == sha256:
        return cached  # no request, and no need for a writable cache
    _prepare_cache(folder)
    if os.path.lexists(cached) and not recorded_download(cached, actual):
        raise not_downloaded(cached, sha256)  # before any request
    downloader = CappedDownloader(max_download_bytes(max_bytes), progressbar=progressbar)
    from ..model._safe_write import cleanup_on_sigterm, fsync_path, place_file
    with cleanup_on_sigterm():  # a SIGTERM (SLURM, docker stop) removes the partial download first
        stage = Path(tempfile.mkdtemp(prefix=f".{filename}.", suffix=".partial", dir=folder))
        try:
            path = pooch.retrieve(
                url, known_hash=f"sha256:{sha256}", fname=filename, path=stage, downloader=downloader
            )
            fsync_path(path)
            written = identity(Path(path))  # kept by the link or rename into place: the record names this file
            place_file(Path(path), cached, lambda p: _replaceable(p, sha256), lambda p: not_downloaded(p, sha256))
        except DownloadRefused as err:
            raise ValueError(str(err)) from err
        except ValueError as err:  # pooch: hash mismatch (the downloaded file is deleted)
            raise ValueError(
                f"Refusing {url}: its sha256 does not match the expected {sha256} (registered, or passed as "
                "sha256=), so it was not cached. The server holds a different or corrupted file; check the URL or the hash."
            ) from err
        except PermissionError as err:
            raise PermissionError(
                f"Cannot write {filename!r} into the holocell cache folder {folder} (permission denied: {err}). "
                f"Set ${CACHE_DIR_ENV} to a writable folder."
            ) from err
        except OSError as err:
            import requests

            if not isinstance(err, requests.RequestException):
                raise  # a local file-system problem (or a file that is not holocell's, FileExistsError), as it is
            raise download_error(err, url, filename) from err  # an HTTP status the server answered, or no network
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    try:  # the record that lets a later call replace this file if it is ever damaged
        write_stamp(record_path(cached), download_record(url, sha256, written))
    except FileExistsError as err:
        warnings.warn(
            f"{err} (Only its record was not written; {cached} is in place.)", HoloCellWarning, stacklevel=2
        )
    return cached


def _replaceable(path: Path, sha256: str) -> bool:
    """At the rename: holocell's own download (:mod:`._cache_record`), or the same bytes (a parallel download)."""
    return recorded_download(path) or sha256sum(path) == sha256


# ------------------------------------------------------------------------------------ checkpoints
_SHIPPED = Path(__file__).resolve().parents[1] / "model" / "_files"
_SMALL_SHA256 = "c4a79d5517c20c74d2b11e9a5e620fccbd6b50b78cf2330f757cb6494a17bb92"
_SMALL_DESCRIPTION = (
    "Shipped small checkpoint (d_model 64, 2 layers), trained on 15,800 cells, 14,000 of them mouse: "
    "14,000 mouse RNA-only cells (4,000 SNARE-seq2 motor cortex, 10,000 scanpy mouse 10x) and 1,800 human "
    "cells (1,200 PBMC CITE-seq p1-p3, 600 simulated multiome, the only ATAC it saw), on shared human/mouse "
    "gene anchors. Model card: docs/pretrained.md; scripts/train_pretrained.py."
)
_SMALL_V2_SHA256 = "2b166eeaa68b34668f33443dd6315d181b08ff34b494d9b44069f36814db7769"
_SMALL_V2_DESCRIPTION = (
    "Shipped small checkpoint with the cell state (d_model 64, 2 layers), trained on 5,800 cells: 4,000 mouse "
    "RNA-only cells (SNARE-seq2 motor cortex) and 1,800 human cells (1,200 PBMC CITE-seq p1-p3, 600 simulated "
    "multiome, the only ATAC it saw), on shared human/mouse gene anchors. Model card: docs/pretrained.md; "
    "scripts/train_pretrained.py."
)
_SMALL_V3_SHA256 = "c30c215a06a4ebcf9a3069f8d411c88f0b824a13a87ecf80e7f7c98e18681f5e"
_SMALL_V3_DESCRIPTION = (
    "Shipped small checkpoint with the cell state and the RNA <-> protein contrastive alignment (the defaults "
    "since 2026-12-08; d_model 64, 2 layers), trained on the cells v2 saw, 5,800: 4,000 mouse RNA-only cells "
    "(SNARE-seq2 motor cortex) and 1,800 human cells (1,200 PBMC CITE-seq p1-p3, 600 simulated multiome, the only "
    "ATAC it saw), on shared human/mouse gene anchors. Model card: docs/pretrained.md; scripts/train_pretrained.py."
)
register(
    "holocell-small",
    "holocell-small-v3.zip",
    _SMALL_V3_SHA256,
    kind="checkpoint",
    description=_SMALL_V3_DESCRIPTION,
    shipped=_SHIPPED / "holocell-small-v3.zip",
)
register(
    "holocell-small-v3",
    "holocell-small-v3.zip",
    _SMALL_V3_SHA256,
    kind="checkpoint",
    description="Versioned name of holocell-small (same bytes; release asset, resolves to the shipped copy "
    "until the release is published). " + _SMALL_V3_DESCRIPTION,
    shipped=_SHIPPED / "holocell-small-v3.zip",
)
register(
    "holocell-small-v2",
    "holocell-small-v2.zip",
    _SMALL_V2_SHA256,
    kind="checkpoint",
    description="The second holocell-small (the cell state with the previous alignment, `distill_cross`; "
    "holocell-small from 2026-12-06 to 2026-12-08). " + _SMALL_V2_DESCRIPTION,
    shipped=_SHIPPED / "holocell-small-v2.zip",
)
register(
    "holocell-small-v1",
    "holocell-small-v1.zip",
    _SMALL_SHA256,
    kind="checkpoint",
    description="The first holocell-small (before the cell state; holocell-small until 2026-12-06). "
    + _SMALL_DESCRIPTION,
    shipped=_SHIPPED / "holocell-small-v1.zip",
)
REGISTRY["holocell-pbmc-small"] = RegistryEntry(
    "holocell-pbmc-small",
    "holocell-small-v1.zip",
    _SMALL_SHA256,
    BASE_URL + "holocell-small-v1.zip",
    kind="checkpoint",
    description="Deprecated alias of holocell-small-v1 (the name suggested a PBMC model; most of its training "
    "cells are mouse).",
    shipped=str(_SHIPPED / "holocell-small-v1.zip"),
    deprecated="The checkpoint name 'holocell-pbmc-small' is deprecated: the model is not a PBMC model (14,000 of "
    "its 15,800 training cells are mouse; see docs/pretrained.md). Use 'holocell-small' (or the versioned "
    "'holocell-small-v1'); the old name will be removed.",
)

# ------------------------------------------------------------------------------------- datasets
# The real data sets are converted from their original public files (registered there, with the
# URL at a pinned commit and the sha256 of the original bytes); imported last, it uses the above.
from . import _derived  # noqa: E402, F401
