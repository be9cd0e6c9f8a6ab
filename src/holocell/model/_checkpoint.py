"""Checkpoint files: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Nothing is unpickled on load: a pickle (``model.pt``, or a pickle in place of the safetensors
file) is refused, and the sha256 of the weights recorded in ``config.json`` at save is checked at
load. Saves go to a temporary sibling directory that is renamed into place, so an interrupted save
leaves any previous model intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import mudata as md
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._warnings import HoloCellWarning

if TYPE_CHECKING:
    from ._holocell import HoloCell

FORMAT = "holocell-checkpoint"
FORMAT_VERSION = 2  # 2: config.json records the sha256 of the weights
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MUDATA = "mdata.h5mu"
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
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_config(model: HoloCell) -> dict:
    """Everything but the weights, as JSON-compatible data."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "holocell_version": _holocell_version(),
        "model_name": type(model).__name__,
        "setup_args": _jsonable(model.adata_manager.registry["setup_args"]),
        "init_params": _jsonable(model.init_params_["non_kwargs"]),
        "network": model.config.to_dict(),
        "batch_categories": list(model.batch_categories_),
        "feature_space": model.feature_space.to_dict(),
        "is_trained": bool(model.is_trained_),
    }


def save_model(model: HoloCell, dir_path: Path, *, overwrite: bool, save_mudata: bool) -> None:
    """Write ``model`` to ``dir_path`` atomically (see module docstring)."""
    dir_path = Path(dir_path)
    if dir_path.exists() and not overwrite:
        raise FileExistsError(f"{dir_path} already exists; pass overwrite=True to replace it.")
    dir_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dir_path.name}.", dir=dir_path.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        config = model_config(model) | {"weights_sha256": file_sha256(tmp / WEIGHTS)}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        if save_mudata:
            model.adata.write(str(tmp / MUDATA))
        if dir_path.exists():
            old = dir_path.with_name(f".{dir_path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dir_path, old)
            os.replace(tmp, dir_path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dir_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_config(dir_path: Path) -> dict:
    """Read and check ``config.json`` of a checkpoint directory."""
    path = Path(dir_path) / CONFIG
    old = Path(dir_path).with_name(f".{Path(dir_path).name}.old")
    if not path.exists() and (old / CONFIG).exists():
        raise FileNotFoundError(
            f"No holocell checkpoint at {dir_path}, but {old} holds the model it replaced: a save with "
            f"overwrite=True was interrupted between two renames. Rename {old} to {dir_path} to recover it."
        )
    if not path.exists():
        raise FileNotFoundError(f"No holocell checkpoint at {dir_path}: {CONFIG} is missing.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is corrupted (not valid JSON): {err}. Save the model again.") from err
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a holocell checkpoint (format={config.get('format')!r}).")
    if not isinstance(config.get("format_version"), int) or config["format_version"] < 1:
        raise ValueError(f"{path} has no valid format_version; it is corrupted. Save the model again.")
    if config["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by holocell {config.get('holocell_version')} with checkpoint format "
            f"{config['format_version']}; this holocell reads format <= {FORMAT_VERSION}. Upgrade holocell."
        )
    return config


def read_weights(dir_path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` (never unpickles) and check its sha256 when one is given."""
    dir_path = Path(dir_path)
    path = dir_path / WEIGHTS
    if not path.exists():
        pickles = [n for n in _PICKLE_NAMES if (dir_path / n).exists()]
        if pickles:
            raise ValueError(
                f"{dir_path} holds {pickles[0]}, a pickled checkpoint. holocell never unpickles files (a pickle "
                "can run arbitrary code); it reads only model.safetensors. Load it with the tool that wrote it, "
                "or re-save the model with holocell."
            )
        raise FileNotFoundError(f"No holocell weights at {path}.")
    try:
        state = load_file(str(path))  # safetensors parses a JSON header and raw bytes: never unpickles
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(_PICKLE_MAGIC):
            raise ValueError(
                f"{path} is a pickle (torch.save output), not a safetensors file. holocell never unpickles "
                "files (a pickle can run arbitrary code); re-save the model with holocell."
            ) from err
        raise ValueError(
            f"{path} is corrupted or not a safetensors file ({err}). Save the model again."
        ) from err
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ValueError(
                f"{path} does not match the sha256 recorded in {CONFIG} (expected {expected_sha256[:12]}..., "
                f"got {actual[:12]}...): the weights were changed or corrupted after saving. Refusing to load; "
                "save the model again or fetch a fresh copy."
            )
    return state


def load_model(cls: type[HoloCell], dir_path: Path, mdata: md.MuData | None, device=None) -> HoloCell:
    """Rebuild a saved model on ``mdata`` (see :meth:`HoloCell.load`)."""
    dir_path = Path(dir_path)
    config = read_config(dir_path)
    if config["model_name"] != cls.__name__:
        raise ValueError(f"{dir_path} holds a {config['model_name']}, not a {cls.__name__}.")
    expected = config.get("weights_sha256")
    if expected is None:
        warnings.warn(
            f"{dir_path} records no sha256 of its weights (written by an older holocell); they cannot be "
            "verified. Save the model again to add it.",
            HoloCellWarning,
            stacklevel=3,
        )
    state = read_weights(dir_path, expected)
    if mdata is None:
        if not (dir_path / MUDATA).exists():
            raise ValueError(f"Pass the MuData to load onto; {dir_path} has no saved {MUDATA}.")
        mdata = md.read_h5mu(str(dir_path / MUDATA))
    setup_args = dict(config["setup_args"])
    _check_features(mdata, setup_args["modalities"], config["feature_space"])
    cls.setup_mudata(mdata, **setup_args)
    model = cls(mdata, **config["init_params"], feature_space=config["feature_space"])
    model.batch_categories_ = list(config["batch_categories"])
    try:
        missing, unexpected = model.module.load_state_dict(state, strict=False)
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
    model.is_trained_ = bool(config.get("is_trained", True))
    model.module.eval()
    if device is not None:
        model.module.to(device)
    return model


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
