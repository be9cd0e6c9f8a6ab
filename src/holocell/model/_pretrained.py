"""Pretrained checkpoints: single-file archives, name/path/URL resolution and loading.

A distributable checkpoint is a ``.zip`` holding exactly the two files of a saved model
(``model.safetensors`` and ``config.json``; the vocabulary lives in the config). Loading never
unpickles anything and never lets an archive choose where files are written: only those two
member names are accepted, and they are copied into a fresh temporary directory under fixed
names before the checkpoint reader (:mod:`holocell.model._checkpoint`) checks them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
import zipfile
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

from ..data import _registry
from . import _checkpoint

if TYPE_CHECKING:
    from ._holocell import HoloCell

logger = logging.getLogger("holocell")

ARCHIVE_SUFFIX = ".zip"
_MEMBERS = (_checkpoint.CONFIG, _checkpoint.WEIGHTS)
_MAX_UNPACKED_BYTES = 4 << 30  # refuse archives that would unpack to more than 4 GiB


# ------------------------------------------------------------------------------------ archives
def pack_checkpoint(dir_path: str | os.PathLike[str], archive_path: str | os.PathLike[str]) -> Path:
    """Write the checkpoint directory ``dir_path`` as a single ``.zip`` file.

    Parameters
    ----------
    dir_path
        Directory written by :meth:`HoloCell.save`.
    archive_path
        Output file; must end in ``.zip``. Written to a temporary name and renamed into place.

    Returns
    -------
    The archive path.
    """
    dir_path, archive_path = Path(dir_path), Path(archive_path)
    if archive_path.suffix != ARCHIVE_SUFFIX:
        raise ValueError(f"A checkpoint archive must end in {ARCHIVE_SUFFIX}, got {archive_path.name!r}.")
    _checkpoint.read_config(dir_path)  # refuse to pack something that is not a checkpoint
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive_path.name}.", dir=archive_path.parent)
    os.close(fd)
    try:
        # fixed timestamps and order: the same checkpoint always gives the same bytes (and sha256)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in _MEMBERS:
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, (dir_path / name).read_bytes())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an archive is meant to be shared
        os.replace(tmp, archive_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return archive_path


def _member_map(zf: zipfile.ZipFile, archive: Path) -> dict[str, zipfile.ZipInfo]:
    """The two allowed members, found at the top level or in one top-level folder."""
    found: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = PurePosixPath(info.filename).parts
        unsafe = info.filename.startswith(("/", "\\")) or ".." in parts or "\\" in info.filename
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        if unsafe or is_link or len(parts) > 2 or parts[-1] not in _MEMBERS or parts[-1] in found:
            raise ValueError(
                f"{archive} is not a holocell checkpoint archive: unexpected member {info.filename!r}. "
                f"An archive holds only {list(_MEMBERS)} (optionally inside one folder)."
            )
        found[parts[-1]] = info
        total += info.file_size
    missing = [m for m in _MEMBERS if m not in found]
    if missing:
        raise ValueError(f"{archive} is not a holocell checkpoint archive: it lacks {missing}.")
    if total > _MAX_UNPACKED_BYTES:
        raise ValueError(f"{archive} would unpack to {total:,} bytes; refusing (limit {_MAX_UNPACKED_BYTES:,}).")
    return found


@contextmanager
def unpacked(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager giving a checkpoint directory for a directory or a ``.zip`` archive.

    An archive is unpacked into a temporary directory (removed on exit); only the two checkpoint
    members are read, each written under its fixed name, so member paths cannot escape it.
    """
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is neither a checkpoint directory nor a .zip checkpoint archive "
            "(made by HoloCell.save_pretrained or holocell.model.pack_checkpoint)."
        )
    with tempfile.TemporaryDirectory(prefix="holocell-ckpt-") as tmp, zipfile.ZipFile(path) as zf:
        for name, info in _member_map(zf, path).items():
            with zf.open(info) as src, open(Path(tmp) / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        yield Path(tmp)


# ------------------------------------------------------------------------------------ resolution
def resolve(name_or_path_or_url: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """Local path (directory or archive) of a registry name, a local path or a URL.

    Parameters
    ----------
    name_or_path_or_url
        A checkpoint name of :func:`holocell.data.available` (``kind="checkpoint"``), an existing
        directory / ``.zip`` file, or an ``http(s)://`` URL.
    sha256
        Expected sha256 of the downloaded file; required for URLs (checked for local archives
        when given).
    """
    text = str(name_or_path_or_url)
    if text in _registry.REGISTRY:
        if _registry.REGISTRY[text].kind != "checkpoint":
            raise ValueError(
                f"{text!r} is a registered {_registry.REGISTRY[text].kind}, not a checkpoint; checkpoints: "
                f"{_registry.available('checkpoint')}."
            )
        return _registry.fetch(text)
    scheme = urlparse(text).scheme
    if scheme in ("http", "https", "ftp"):
        if not sha256:
            raise ValueError(
                f"Loading {text} needs its sha256 (load_pretrained(url, sha256='...')): downloaded "
                "checkpoints are always verified."
            )
        sha = sha256.lower().removeprefix("sha256:")
        filename = f"{sha[:16]}-{Path(urlparse(text).path).name or 'checkpoint.zip'}"
        return _registry.fetch_url(text, sha, filename)
    path = Path(text).expanduser()
    if path.exists():
        if sha256 and path.is_file():
            actual = _registry.sha256sum(path)
            if actual != sha256.lower().removeprefix("sha256:"):
                raise ValueError(f"{path} has sha256 {actual}, not the expected {sha256}.")
        return path
    raise ValueError(
        f"{text!r} is not a registered checkpoint, an existing path or a URL. Registered checkpoints: "
        f"{_registry.available('checkpoint')}."
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
    path = resolve(name_or_path_or_url, sha256)
    with unpacked(path) as ckpt:
        if mdata is None:
            config = _checkpoint.read_config(ckpt)
            with warnings.catch_warnings():  # the placeholder's empty cells are not the user's data
                warnings.filterwarnings("ignore", message=".*have no counts at all.*")
                warnings.filterwarnings("ignore", message=".*has fewer than 3 cells.*")
                return cls._from_checkpoint_dir(ckpt, reference_mudata(config), device=device)
        config = _checkpoint.read_config(ckpt)
        expected = config.get("weights_sha256")  # recorded by newer saves
        if expected and _registry.sha256sum(ckpt / _checkpoint.WEIGHTS) != expected:
            raise ValueError(
                f"The weights in {path} do not match the sha256 recorded in its config: the checkpoint is "
                "corrupted. Download or save it again."
            )
        state = _checkpoint.read_weights(ckpt)
    if config["model_name"] != cls.__name__:
        raise ValueError(f"{path} holds a {config['model_name']}, not a {cls.__name__}.")
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
    mdata = md.MuData(mods)
    batch_key = setup.get("batch_key")
    if batch_key is not None:
        mdata.obs[batch_key] = pd.Categorical(batches)
    species_key = setup.get("species_key")
    if species_key is not None and species_key not in mdata.obs:  # a model trained on several species
        mdata.obs[species_key] = setup.get("species") or "human"
    return mdata


__all__ = ["load_pretrained", "pack_checkpoint", "reference_mudata", "resolve", "unpacked"]
