"""Pretrained checkpoints: single-file archives, name/path/URL resolution and loading.

A distributable checkpoint is a ``.zip`` holding exactly the two files of a saved model
(``model.safetensors`` and ``config.json``; the vocabulary lives in the config), at its top level
or inside one folder. Loading never unpickles anything and never lets an archive choose where
files are written: only those two member names are accepted, and they are copied into a fresh
temporary directory under fixed names before the checkpoint reader
(:mod:`holocell.model._checkpoint`) validates them. Before any byte is unpacked, members that are
encrypted, use a compression holocell does not read, are larger than the caps or compress
suspiciously well (a zip bomb) are refused; a corrupted member (bad CRC, broken stream) is
reported with the archive and member names.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._folders import existing_folder
from ..data import _download, _registry
from ..data._local_copies import data_dirs, registered_places
from . import _checkpoint
from ._args import check_device
from ._safe_write import atomic_file, check_regular, cleanup_on_sigterm, replaceable_target
from ._validate import require_mudata

if TYPE_CHECKING:
    from ._holocell import HoloCell

logger = logging.getLogger("holocell")

ARCHIVE_SUFFIX = ".zip"
_MEMBERS = (_checkpoint.CONFIG, _checkpoint.WEIGHTS)
#: Largest archive downloaded, and largest total size its members may unpack to.
MAX_ARCHIVE_BYTES = _download.MAX_CHECKPOINT_BYTES
_MAX_UNPACKED_BYTES = MAX_ARCHIVE_BYTES
#: A member larger than 1 MiB that unpacks to more than this many times its packed size is refused.
MAX_COMPRESSION_RATIO = 100
_COMPRESSIONS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


# ------------------------------------------------------------------------------------ archives
def is_checkpoint_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a holocell checkpoint archive (which ``save_pretrained`` may replace): a
    regular ``.zip`` file whose members pass the archive checks and whose ``config.json`` says
    ``"format": "holocell-checkpoint"``."""
    path = Path(path)
    if path.is_symlink() or not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read(_member_map(zf, path)[_checkpoint.CONFIG]))
    except (ValueError, RecursionError, OSError, zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError):
        return False
    return isinstance(config, dict) and config.get("format") == _checkpoint.FORMAT


def pack_checkpoint(
    dir_path: str | os.PathLike[str], archive_path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the checkpoint directory ``dir_path`` as a single ``.zip`` file.

    Parameters
    ----------
    dir_path
        Directory written by :meth:`HoloCell.save`.
    archive_path
        Output file; must end in ``.zip``. Written to a temporary name, fsynced and renamed into place.
    overwrite
        Replace an existing holocell checkpoint archive (anything else at ``archive_path`` is
        refused with ``FileExistsError``; a symlink to an archive is kept and its target replaced).

    Returns
    -------
    The archive path.
    """
    dir_path, archive_path = Path(dir_path).expanduser(), Path(archive_path).expanduser()
    if archive_path.suffix != ARCHIVE_SUFFIX:
        raise ValueError(f"A checkpoint archive must end in {ARCHIVE_SUFFIX}, got {archive_path.name!r}.")
    _checkpoint.read_checkpoint(dir_path)  # refuse to pack something that is not a valid checkpoint
    existing_folder(archive_path, str(archive_path))  # a folder above that links to nothing, before any work
    target = replaceable_target(archive_path, overwrite, is_checkpoint_archive, "holocell checkpoint archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as tmp:
        # fixed timestamps and order: the same checkpoint always gives the same bytes (and sha256)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in _MEMBERS:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(dir_path / name, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                        dst.write(chunk)
    return archive_path


def save_pretrained(model: HoloCell, archive_path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """See :meth:`HoloCell.save_pretrained`: checks the target before saving anything."""
    archive_path = Path(archive_path)
    if archive_path.suffix != ARCHIVE_SUFFIX:
        raise ValueError(f"A checkpoint archive must end in {ARCHIVE_SUFFIX}, got {archive_path.name!r}.")
    existing_folder(archive_path, str(archive_path))  # a folder above that links to nothing, before the save
    name = registered_copy(archive_path)
    if name is not None:
        raise FileExistsError(
            f"{archive_path} is holocell's registered copy of {name!r} (what load_pretrained({name!r}) reads): "
            "saving over it would break that name. Save to another path."
        )
    replaceable_target(archive_path, overwrite, is_checkpoint_archive, "holocell checkpoint archive")
    with cleanup_on_sigterm(), tempfile.TemporaryDirectory(prefix="holocell-save-") as tmp:
        model.save(Path(tmp) / "model")
        return pack_checkpoint(Path(tmp) / "model", archive_path, overwrite=overwrite)


def _refuse(archive: Path, problem: str) -> ValueError:
    return ValueError(
        f"{archive} is not a usable holocell checkpoint archive: {problem}. Archives written by "
        "HoloCell.save_pretrained hold only config.json and model.safetensors, deflate-compressed, unencrypted "
        "(optionally inside one folder); download or save it again."
    )


def _member_map(zf: zipfile.ZipFile, archive: Path) -> dict[str, zipfile.ZipInfo]:
    """The two allowed members, checked before anything is unpacked (see the module docstring)."""
    found: dict[str, zipfile.ZipInfo] = {}
    folders: set[str] = set()
    total = 0
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        unsafe = info.filename.startswith(("/", "\\")) or ".." in parts or "\\" in info.filename or not parts
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        if info.is_dir() and not unsafe and not is_link and len(parts) == 1:
            folders.add(parts[0])
            continue
        if unsafe or is_link or len(parts) > 2 or parts[-1] not in _MEMBERS or parts[-1] in found:
            raise ValueError(
                f"{archive} is not a holocell checkpoint archive: unexpected member {info.filename!r}. "
                f"An archive holds only {list(_MEMBERS)} (optionally inside one folder)."
            )
        folders.add(parts[0] if len(parts) == 2 else "")
        if info.flag_bits & 0x1:
            raise _refuse(archive, f"member {info.filename!r} is encrypted")
        if info.compress_type not in _COMPRESSIONS:
            raise _refuse(
                archive,
                f"member {info.filename!r} uses compression method {info.compress_type}, which holocell does not read",
            )
        limit = _checkpoint.MAX_CONFIG_BYTES if parts[-1] == _checkpoint.CONFIG else _MAX_UNPACKED_BYTES
        if info.file_size > limit:
            raise _refuse(
                archive,
                f"member {info.filename!r} would unpack to {info.file_size:,} bytes (limit {limit:,})",
            )
        if info.file_size > 1 << 20 and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise _refuse(
                archive,
                f"member {info.filename!r} would unpack to {info.file_size:,} bytes from {info.compress_size:,} "
                f"(more than {MAX_COMPRESSION_RATIO}:1, the mark of a zip bomb)",
            )
        found[parts[-1]] = info
        total += info.file_size
    if len(folders) > 1:
        shown = sorted(f + "/" if f else "(top level)" for f in folders)
        raise _refuse(
            archive, f"its members lie in more than one folder ({shown}); an archive has one folder at most"
        )
    missing = [m for m in _MEMBERS if m not in found]
    if missing:
        raise ValueError(f"{archive} is not a holocell checkpoint archive: it lacks {missing}.")
    if total > _MAX_UNPACKED_BYTES:
        raise _refuse(archive, f"it would unpack to {total:,} bytes (limit {_MAX_UNPACKED_BYTES:,})")
    return found


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: Path, archive: Path) -> None:
    """Copy one member to ``dst``, never more than its declared size; corruption named."""
    try:
        with zf.open(info) as src, open(dst, "wb") as out:
            written = 0
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > info.file_size:  # zipfile stops at the declared size; belt and braces
                    raise _refuse(archive, f"member {info.filename!r} unpacks to more than its declared size")
                out.write(chunk)
    except zipfile.BadZipFile as err:
        cause = "bad CRC-32: its bytes were changed" if "CRC" in str(err) else str(err)
        raise _refuse(archive, f"member {info.filename!r} is corrupted ({cause})") from err
    except (zlib.error, EOFError, lzma.LZMAError) as err:  # a broken compressed stream
        raise _refuse(
            archive, f"member {info.filename!r} is corrupted ({type(err).__name__}: {err})"
        ) from err


@contextmanager
def unpacked(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager giving a checkpoint directory for a directory or a ``.zip`` archive.

    An archive is checked (see :func:`_member_map`) and unpacked into a temporary directory
    (removed on exit); only the two checkpoint members are read, each written under its fixed
    name, so member paths cannot escape it.
    """
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is neither a checkpoint directory nor a .zip checkpoint archive "
            "(made by HoloCell.save_pretrained or holocell.model._pretrained.pack_checkpoint)."
        )
    with cleanup_on_sigterm(), tempfile.TemporaryDirectory(prefix="holocell-ckpt-") as tmp:
        try:
            with zipfile.ZipFile(path) as zf:
                for name, info in _member_map(zf, path).items():
                    _extract(zf, info, Path(tmp) / name, path)
        except zipfile.BadZipFile as err:  # a damaged central directory
            raise _refuse(path, f"the zip structure is corrupted ({err})") from err
        yield Path(tmp)


# ------------------------------------------------------------------------------------ resolution
def _url_file_name(url: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(urlparse(url).path).name).lstrip(".")
    return name[:100] or "checkpoint.zip"


def resolve(name_or_path_or_url: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """Local path (directory or archive) of a registry name, a local path or a URL.

    Parameters
    ----------
    name_or_path_or_url
        A checkpoint name of :func:`holocell.data.available` (``kind="checkpoint"``), an existing
        directory / ``.zip`` file, or an ``http(s)://`` URL.
    sha256
        Expected sha256 (64 hex characters, checked before anything is fetched or created);
        required for URLs. A local archive is checked against its file's sha256, a checkpoint
        directory against :func:`holocell.model.checkpoint_sha256`, a registry name against its
        registered hash.
    """
    sha = None if sha256 is None else _registry.check_sha256(sha256, "sha256")
    text = str(name_or_path_or_url)
    if not text.strip():
        raise ValueError(
            f"load_pretrained needs a registered checkpoint name, a path or a URL, got {text!r}; registered "
            f"checkpoints: {_registry.available('checkpoint')}."
        )
    if text in _registry.REGISTRY:
        check_not_shadowed(text)
        entry = _registry.REGISTRY[text]
        if entry.kind != "checkpoint":
            raise ValueError(
                f"{text!r} is a registered {entry.kind}, not a checkpoint; checkpoints: "
                f"{_registry.available('checkpoint')}."
            )
        if sha is not None and sha != entry.sha256:
            raise ValueError(
                f"{text!r} is registered with sha256 {entry.sha256}, not the {sha} you passed; refusing. "
                "Pass the registered hash (or none), or register the checkpoint you mean."
            )
        return _registry.fetch(text)
    scheme = urlparse(text).scheme
    if scheme in ("http", "https"):
        if sha is None:
            raise ValueError(
                f"Loading {text} needs its sha256 (load_pretrained(url, sha256='...')): downloaded "
                "checkpoints are always verified."
            )
        filename = f"{sha[:16]}-{_url_file_name(text)}"
        return _registry.fetch_url(text, sha, filename, max_bytes=MAX_ARCHIVE_BYTES)
    path = Path(text).expanduser().absolute()  # "." has no name to report otherwise
    if path.exists():
        if not path.is_dir():
            check_regular(path)  # a FIFO would block zipfile's read for ever
        if sha is not None:
            _verify_local(path, sha)
        return path
    raise ValueError(
        f"{text!r} is not a registered checkpoint, an existing path or a URL. Registered checkpoints: "
        f"{_registry.available('checkpoint')}."
    )


def check_not_shadowed(name: str) -> None:
    """``ValueError`` when the registered checkpoint ``name`` is also an existing path here (e.g. a model the user
    saved as ``holocell-small``): which one is meant is not guessed."""
    here = Path(name).expanduser()
    if os.path.lexists(here):
        raise ValueError(
            f"{name!r} is both a registered checkpoint and a path here ({here.absolute()}). Pass './{name}' (or its "
            f"absolute path) for that path, or the registered checkpoint's file, holocell.data.fetch({name!r}), "
            "for the registered one."
        )


def registered_copy(path: Path) -> str | None:
    """The registry name of the file at ``path`` when it is one of holocell's registered copies (shipped with the
    package, in a ``$HOLOCELL_DATA_DIR`` folder or in the cache), else ``None``."""
    if not path.is_file():
        return None
    cache, folders = _registry.cache_dir(), data_dirs()  # read once, not per registry entry
    for entry in _registry.REGISTRY.values():
        for place in registered_places(entry, cache, folders):
            if place.is_file() and os.path.samefile(place, path):
                return entry.name
    return None


def _verify_local(path: Path, sha: str) -> None:
    how = "of the file" if path.is_file() else "of the directory's config.json and model.safetensors"
    try:
        actual = _checkpoint.checkpoint_sha256(path)
    except FileNotFoundError as err:
        raise ValueError(f"Cannot verify sha256 {sha} for {path}: {err}") from err
    if actual != sha:
        raise ValueError(
            f"{path} has sha256 {actual} ({how}, see holocell.model.checkpoint_sha256), not the expected {sha}: "
            "it is another checkpoint or was changed. Refusing to load it."
        )


# ------------------------------------------------------------------------------------ loading
def load_pretrained(
    cls: type[HoloCell],
    name_or_path_or_url: str | os.PathLike[str],
    mdata: md.MuData | None = None,
    *,
    sha256: str | None = None,
    device=None,
) -> HoloCell:
    """See :meth:`HoloCell.load_pretrained`."""
    device = None if device is None else check_device(device)  # before any download
    if mdata is not None:
        require_mudata(mdata, ", set it up with HoloCell.setup_mudata, then pass it (or leave mdata out to load the "
                              "model alone)")  # fmt: skip
    path = resolve(name_or_path_or_url, sha256)
    label = None if path.is_dir() else str(path)
    with unpacked(path) as ckpt:
        config = _checkpoint.read_checkpoint(ckpt, label)  # validated in full before anything is built
        if config["model_name"] != cls.__name__:
            raise ValueError(f"{path} holds a {config['model_name']}, not a {cls.__name__}.")
        if mdata is None:
            with warnings.catch_warnings():  # the placeholder's empty cells and features are not the user's data
                warnings.filterwarnings("ignore", message=".*have no counts at all.*")
                warnings.filterwarnings("ignore", message=".*has fewer than 3 cells.*")
                # its features are the checkpoint's names only (no .var columns), and the feature space is the
                # checkpoint's: their vocabulary match was reported when the checkpoint's data was set up
                warnings.filterwarnings("ignore", message=r".*RNA features of modality .* map to a known")
                warnings.filterwarnings("ignore", message=r"No antibody of modality .* maps to a gene")
                model = cls._from_checkpoint_dir(ckpt, reference_mudata(config), device=device)
                model._placeholder_data = True  # its data are one empty cell per batch: not for training
                return model
        state = _checkpoint.read_weights(ckpt, config.get("weights_sha256"))
    model = cls._transferred(mdata, state, config)
    if device is not None:
        model.module.to(device)
    return model


def reference_mudata(config: dict) -> md.MuData:
    """A placeholder MuData with the checkpoint's modalities and features (one empty cell per batch).

    A model loaded without data sits on it: enough to inspect it, embed data with the very same
    features, or serve as the reference of :meth:`HoloCell.load_query_data`.
    """
    setup = config["setup_args"]
    batches = list(config["batch_categories"]) or ["0"]
    mods = {}
    for m, name in setup["modalities"].items():
        features = pd.Index([str(f) for f in config["feature_space"]["maps"][m]["features"]])
        x = sp.csr_matrix((len(batches), len(features)), dtype=np.float32)
        mods[name] = ad.AnnData(X=x, obs=pd.DataFrame(index=[f"cell{i}" for i in range(len(batches))]))
        mods[name].var_names = features
        if setup.get(f"{m}_layer") is not None:
            mods[name].layers[setup[f"{m}_layer"]] = x.copy()
    with warnings.catch_warnings():  # mudata 0.3 warns about its future `pull_on_update` default
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
    batch_key = setup.get("batch_key")
    if batch_key is not None:
        mdata.obs[batch_key] = pd.Categorical(batches)
    species_key = setup.get("species_key")
    if species_key is not None and species_key not in mdata.obs:  # a model trained on several species
        mdata.obs[species_key] = setup.get("species") or "human"
    return mdata


__all__ = [
    "is_checkpoint_archive",
    "load_pretrained",
    "pack_checkpoint",
    "reference_mudata",
    "resolve",
    "save_pretrained",
    "unpacked",
]
