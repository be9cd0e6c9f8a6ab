"""Checkpoint files: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Nothing is unpickled on load: a pickle (``model.pt``, or a pickle in place of the safetensors
file) is refused, and the sha256 of the weights recorded in ``config.json`` at save is checked at
load. ``config.json`` is untrusted input: it is size-capped and validated in full, and checked
against the tensor shapes of the safetensors header, before anything is built from it
(:mod:`holocell.model._config_check`). Saves go to a temporary sibling directory, fsynced and
renamed into place, so an interrupted save leaves any previous model intact; an existing path is
replaced only when it is a holocell checkpoint (:mod:`holocell.model._safe_write`), and never when that would
delete a MuData saved with it that the save does not write again, or the file the model's data are backed on. Only
regular files are read (never a FIFO or a device such as ``/dev/zero``), config.json with a cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import mudata as md
import pooch
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .._folders import existing_folder
from .._warnings import HoloCellWarning
from ._build import LEGACY_CELL_STATE
from ._config_check import validate_config
from ._config_header import check_header
from ._history import history_entry
from ._paths import check_backing, keeping_cwd, not_a_model_folder, output_path
from ._safe_write import (
    check_regular,
    fsync_path,
    fsync_tree,
    output_mode,
    read_regular,
    remove_tree,
    replaceable_target,
    sibling_name,
    staging_dir,
)
from ._transfer_record import check_transfer_header, transfer_entry
from ._validate import require_mudata

if TYPE_CHECKING:
    from ._holocell import HoloCell

FORMAT = "holocell-checkpoint"
# 2: sha256 of the weights in config.json; 3: the cell state; 4: peaks' input vectors; 5: history; 6: transfer
FORMAT_VERSION = 6
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MUDATA = "mdata.h5mu"
#: The files a checkpoint directory may hold; a directory with anything else is not replaced.
CHECKPOINT_FILES = frozenset({CONFIG, WEIGHTS, MUDATA})
#: Largest config.json read (a config of a million features is about 40 MB).
MAX_CONFIG_BYTES = 256 << 20
_PICKLE_NAMES = ("model.pt", "model.pth", "model.pkl", "model.ckpt", "pytorch_model.bin")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip container
# (checked only after safetensors failed to parse: a safetensors header length may start with 0x80 too)


def _holocell_version() -> str:
    try:
        return version("holocell")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)  # e.g. a genome given as a DataFrame: not needed again once anchors exist


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (:func:`pooch.file_hash`)."""
    return pooch.file_hash(str(path), alg="sha256")


def model_config(model: HoloCell) -> dict:
    """Everything but the weights, as JSON-compatible data.

    ``init_params`` rebuilds the network; ``objective`` and ``training`` are the typed settings
    (:class:`~holocell.nn.ObjectiveConfig`, :class:`~holocell.train.TrainingConfig`; absent from files
    written before them, which load with the defaults). Older files also hold a ``"network"`` entry
    (the network sizes, a copy of what ``init_params`` rebuilds); it is not written any more, and
    when read it is validated (:mod:`._config_check`) but not used. ``history`` is ``history_`` (format 5);
    ``transfer`` a transferred model's frozen rows, freeze and report (format 6, :mod:`._transfer_record`).
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "holocell_version": _holocell_version(),
        "model_name": type(model).__name__,
        "setup_args": _jsonable(model.adata_manager.registry["setup_args"]),
        "init_params": _jsonable(model.init_params_["non_kwargs"]),
        "objective": model.objective_config.to_dict(),
        "training": model.train_config.to_dict(),
        "batch_categories": list(model.batch_categories_),
        "feature_space": model.feature_space.to_dict(),
        "is_trained": bool(model.is_trained_),
    } | history_entry(model) | transfer_entry(model)


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` is a holocell checkpoint directory (or an empty one), which a save may replace.

    A checkpoint directory holds only regular files among :data:`CHECKPOINT_FILES`, including a
    ``config.json`` (at most :data:`MAX_CONFIG_BYTES`) whose ``format`` is ``"holocell-checkpoint"``.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries:
        return True
    if any(e.name not in CHECKPOINT_FILES or e.is_symlink() or not e.is_file() for e in entries):
        return False
    try:
        raw = read_regular(path / CONFIG, MAX_CONFIG_BYTES)
        parsed = json.loads(raw) if len(raw) <= MAX_CONFIG_BYTES else None
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("format") == FORMAT


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 that identifies a checkpoint (``sha256=`` of :meth:`HoloCell.load_pretrained`).

    For a ``.zip`` archive (or any file): the sha256 of the file. For a checkpoint directory: the
    sha256 of, for ``config.json`` and then ``model.safetensors``, the UTF-8 bytes
    ``"<file name>\\0<size in bytes, decimal>\\0"`` followed by the file's bytes (other files, such as
    ``mdata.h5mu``, are not covered).

    Parameters
    ----------
    path
        A checkpoint directory or archive.

    Returns
    -------
    64 lowercase hex characters.
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        member = path / name
        if not os.path.lexists(member):
            raise FileNotFoundError(f"{path} is not a holocell checkpoint directory: it has no {name}.")
        check_regular(member)
        digest.update(f"{name}\0{member.stat().st_size}\0".encode())
        with open(member, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_save_path(dir_path: Path, overwrite: bool, save_mudata: bool = True) -> Path:
    """Where :func:`save_model` writes ``dir_path``, or ``FileExistsError`` if that would lose data: also a folder of
    training checkpoints, or an ``mdata.h5mu`` that the save would delete (``save_mudata=False``, a leftover ``.old``).
    """
    from ..train._resume import earlier_checkpoints

    dir_path = output_path(dir_path)  # "." has a name and a parent; "" is refused
    existing_folder(dir_path, str(dir_path))  # a folder above that links to nothing, before any work
    found = earlier_checkpoints(dir_path.resolve() if dir_path.is_symlink() else dir_path)
    if found:
        raise FileExistsError(
            f"{dir_path} holds training checkpoints ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}) "
            "written by train(checkpoint_dir=...), not a saved model; holocell does not replace them (resume=True "
            "reads them). Save the model to another path, a folder of its own, not the checkpoint folder."
        )
    target = replaceable_target(dir_path, overwrite, is_checkpoint_dir, "holocell checkpoint directory")
    old = _aside(target)
    if os.path.lexists(old) and not is_checkpoint_dir(old):
        raise FileExistsError(
            f"{old} exists and is not a holocell checkpoint: holocell keeps the previous model under that name "
            f"while it replaces {target}. Move {old} away, then save again."
        )
    if os.path.lexists(old / MUDATA):
        raise FileExistsError(
            f"{old} holds {MUDATA}, left there by an interrupted save of {target}; holocell does not delete a "
            f"saved MuData. Move {old / MUDATA} (or all of {old}) away, then save again."
        )
    if not save_mudata and os.path.lexists(target / MUDATA):
        raise FileExistsError(
            f"{target} holds {MUDATA} (a MuData saved with the model, maybe the only copy of those data), which "
            f"this save would delete: it does not write one (save_mudata=False). Pass save_mudata=True to write "
            f"the model's MuData there again, save to another path, or move {target / MUDATA} out of {target} first."
        )
    return target


def _aside(path: Path) -> Path:
    return path.with_name(f".{sibling_name(path.name, 5)}.old")


def save_model(model: HoloCell, dir_path: Path, *, overwrite: bool, save_mudata: bool) -> None:
    """Write ``model`` to ``dir_path`` atomically (see module docstring).

    A new ``mdata.h5mu`` is written and fsynced in full before the old checkpoint (with the file the data may have
    been read from) is renamed aside and removed. Replaced files keep their modes; new ones follow the umask.
    """
    target = check_save_path(dir_path, overwrite, save_mudata)
    check_backing(model.adata, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = output_mode(target, directory=True)
    with staging_dir(target) as tmp:  # removed however the save ends, SIGTERM included
        state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        config = model_config(model) | {"weights_sha256": file_sha256(tmp / WEIGHTS)}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        if save_mudata:
            # not MuData.write, which re-points a backed MuData at the file it wrote (the staging folder's)
            md.write_h5mu(str(tmp / MUDATA), model.adata)
        for name in [n for n in CHECKPOINT_FILES if (tmp / n).exists()]:  # safetensors creates its file 0600
            os.chmod(tmp / name, output_mode(target / name))  # a replaced file keeps its mode, a new one the umask's
        os.chmod(tmp, mode)  # mkdtemp creates 0700
        fsync_tree(tmp)
        with keeping_cwd(target):  # save(".") from inside the folder: the process stays in it, not the old one
            _swap_in(tmp, target)


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the complete checkpoint ``tmp`` onto ``target``: a checkpoint there is renamed aside, then removed."""
    if target.exists() and any(target.iterdir()):
        old = _aside(target)
        if os.path.lexists(old):  # a checkpoint left by an interrupted save (checked before)
            remove_tree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(target.parent)
        try:
            remove_tree(old)
        except OSError as err:  # the new model is in place; say what is left behind
            warnings.warn(
                f"Saved {target}, but could not remove the previous model at {old}: {err}", HoloCellWarning, stacklevel=4
            )
    else:  # a new path, or an empty directory (renamed over)
        os.replace(tmp, target)
    fsync_path(target.parent)


def read_config(dir_path: Path, label: str | None = None) -> dict:
    """Read ``config.json`` of a checkpoint directory and validate it in full (JSON only).

    ``label`` names the file in messages (e.g. ``"model.zip:config.json"`` for an unpacked archive).

    Raises
    ------
    FileNotFoundError
        No ``config.json`` (naming an interrupted save's leftover when there is one).
    ValueError
        Too large, not JSON, not a holocell config, a newer format, or any invalid key (named).
    """
    path = Path(dir_path) / CONFIG
    old = _aside(Path(dir_path))
    if not path.exists() and (old / CONFIG).exists():
        raise FileNotFoundError(
            f"No holocell checkpoint at {dir_path}, but {old} holds the model it replaced: a save with "
            f"overwrite=True was interrupted between two renames. Rename {old} to {dir_path} to recover it."
        )
    if not path.exists():
        raise FileNotFoundError(f"No holocell checkpoint at {dir_path}: {CONFIG} is missing.{not_a_model_folder(Path(dir_path))}")
    where = label or str(path)
    raw = read_regular(path, MAX_CONFIG_BYTES, where)  # never a FIFO or /dev/zero: they would be read without end
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{where} is {max(path.stat().st_size, len(raw)):,} bytes, more than the {MAX_CONFIG_BYTES:,} a "
            f"holocell {CONFIG} may have; "
            "refusing to read it. The checkpoint is corrupted or not a holocell checkpoint."
        )
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{where} is corrupted (not valid JSON): {err}. Save the model again.") from err
    if not isinstance(config, dict):
        validate_config(config, where)  # raises: names the JSON type
    if config.get("format") != FORMAT:
        raise ValueError(f"{where} is not a holocell checkpoint (format={config.get('format')!r}).")
    version_ = config.get("format_version")
    if not isinstance(version_, int) or isinstance(version_, bool) or version_ < 1:
        raise ValueError(f"{where} has no valid format_version; it is corrupted. Save the model again.")
    if version_ > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by holocell {config.get('holocell_version')} with checkpoint format "
            f"{version_}; this holocell reads format <= {FORMAT_VERSION}. Upgrade holocell."
        )
    config = validate_config(config, where)
    if version_ < 3:  # written before the cell state: the network without one
        config["init_params"].setdefault("cell_state_kwargs", dict(LEGACY_CELL_STATE))
    if version_ < 4:  # written before the peaks had input vectors of their own
        kwargs = config["init_params"].get("cell_state_kwargs") or {}
        config["init_params"]["cell_state_kwargs"] = {"peak_embeddings": False, **kwargs}
    return config


def read_checkpoint(dir_path: Path, label: str | None = None) -> dict:
    """The validated config of a checkpoint directory, checked against its weights' header (no weights
    read); ``label`` names the checkpoint in messages (default: the directory)."""
    config = read_config(dir_path, None if label is None else f"{label}:{CONFIG}")
    header = read_header(dir_path)
    check_header(config, header, label or str(dir_path))
    check_transfer_header(config, header, label or str(dir_path))
    return config


def _weights_path(dir_path: Path) -> Path:
    path = dir_path / WEIGHTS
    if not os.path.lexists(path):
        pickles = [n for n in _PICKLE_NAMES if (dir_path / n).exists()]
        if pickles:
            raise ValueError(
                f"{dir_path} holds {pickles[0]}, a pickled checkpoint. holocell never unpickles files (a pickle "
                "can run arbitrary code); it reads only model.safetensors. Load it with the tool that wrote it, "
                "or re-save the model with holocell."
            )
        raise FileNotFoundError(f"No holocell weights at {path}.")
    check_regular(path)  # safetensors would wait on a FIFO for ever
    return path


def _unreadable(path: Path, err: Exception) -> ValueError:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_PICKLE_MAGIC):
        return ValueError(
            f"{path} is a pickle (torch.save output), not a safetensors file. holocell never unpickles "
            "files (a pickle can run arbitrary code); re-save the model with holocell."
        )
    return ValueError(f"{path} is corrupted or not a safetensors file ({err}). Save the model again.")


def read_header(dir_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header only (safetensors checks that the header's
    offsets cover the file exactly; no tensor data is read)."""
    path = _weights_path(Path(dir_path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def read_weights(dir_path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` (never unpickles) and check its sha256 when one is given."""
    path = _weights_path(Path(dir_path))
    try:
        state = load_file(str(path))  # safetensors parses a JSON header and raw bytes: never unpickles
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ValueError(
                f"{path} does not match the sha256 recorded in {CONFIG} (expected {expected_sha256[:12]}..., "
                f"got {actual[:12]}...): the weights were changed or corrupted after saving. Refusing to load; "
                "save the model again or fetch a fresh copy."
            )
    return state


def load_checkpoint(
    model_name: str, dir_path: Path, mdata: md.MuData | None
) -> tuple[dict, dict[str, torch.Tensor], md.MuData]:
    """Config, weights and the MuData to load onto (see :meth:`HoloCell.load`), all checked.

    The config is validated in full and against the weights' header (:func:`read_checkpoint`)
    before the weights are read. ``mdata`` defaults to the MuData saved with the model; its
    features must cover the model's.
    """
    if mdata is not None:  # a path or an AnnData: the TypeError load_pretrained gives, before anything is read
        require_mudata(mdata, ", then pass it (or leave mdata out to load the MuData saved with the model)")
    dir_path = Path(dir_path)
    config = read_checkpoint(dir_path)
    if config["model_name"] != model_name:
        raise ValueError(f"{dir_path} holds a {config['model_name']}, not a {model_name}.")
    expected = config.get("weights_sha256")
    if expected is None:
        warnings.warn(
            f"{dir_path} records no sha256 of its weights (written by an older holocell); they cannot be "
            "verified. Save the model again to add it.",
            HoloCellWarning,
            stacklevel=4,
        )
    state = read_weights(dir_path, expected)
    if mdata is None:
        if not (dir_path / MUDATA).exists():
            raise ValueError(f"Pass the MuData to load onto; {dir_path} has no saved {MUDATA}.")
        check_regular(dir_path / MUDATA)
        mdata = md.read_h5mu(str(dir_path / MUDATA))
    _check_features(mdata, config["setup_args"]["modalities"], config["feature_space"])
    return config, state, mdata


def setup_args(config: dict) -> dict:
    """The saved setup arguments, to replay with ``setup_mudata`` on the data a model is loaded onto."""
    args = dict(config["setup_args"])
    args.setdefault("allow_unmatched_genes", True)  # older checkpoints: their setup passed without it
    return args


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], dir_path: Path, config: dict) -> None:
    """Load ``state`` into ``module``, with a clear error when the weights and the config disagree."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch: weights for another vocabulary or network size
        raise ValueError(
            f"Weights in {dir_path} do not fit the vocabulary and network sizes in its {CONFIG} "
            f"({len(config['feature_space']['anchors'])} anchors): {str(err).splitlines()[-1].strip()} "
            "The checkpoint mixes files from different models; save the model again."
        ) from err
    if missing or unexpected:
        raise ValueError(
            f"Weights in {dir_path} do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the checkpoint is corrupted or from an incompatible holocell version."
        )


def _check_features(mdata: md.MuData, modalities: dict, feature_space: dict) -> None:
    for m, name in modalities.items():
        if name not in mdata.mod:
            raise KeyError(f"The checkpoint needs modality {name!r} ({m}); mdata.mod has {list(mdata.mod)}.")
        expected = feature_space["maps"][m]["features"]
        have = set(mdata.mod[name].var_names.astype(str))
        lacking = [f for f in expected if f not in have]
        if lacking:
            raise ValueError(
                f"mdata.mod[{name!r}] lacks {len(lacking)} of the {len(expected)} features the model was "
                f"trained on (e.g. {lacking[:5]}). Load onto data with the same features."
            )
