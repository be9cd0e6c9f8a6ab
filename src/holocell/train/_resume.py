"""The checkpoint folder of a training run: which run a ``last.ckpt`` belongs to, and whether to resume it.

A fresh run never writes into a folder that holds the Lightning checkpoints of an earlier run: Lightning would
write ``last-v1.ckpt`` beside the old ``last.ckpt``, and a later ``resume=True`` would read the old run. Such a
run is refused (nothing is deleted: the files may be the only copy of a long run); ``resume=True`` continues it.
A resumed checkpoint must be a holocell training checkpoint of the same model: its network sizes, feature space
and cells are compared with the model's (``HoloCell._run_identity``, written into every checkpoint by
:class:`~holocell.train.TrainingPlan`) before Lightning loads it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from .._folders import dangling_parent

#: Key of the run's identity in a Lightning checkpoint (see :meth:`TrainingPlan.on_save_checkpoint`).
IDENTITY_KEY = "holocell_run"
#: Key of the run's settings (seed, split, batch size, schedule) in a Lightning checkpoint.
SETTINGS_KEY = "holocell_run_settings"
#: What a changed setting does to a resumed run (the settings :func:`run_settings` records).
_SETTING_EFFECTS = {
    "seed": "the validation cells and the masks differ from the run's: cells it trained on are now validated",
    "validation_size": "the validation cells differ from the run's: cells it trained on are now validated",
    "batch_size": "the data order and the steps per epoch differ from the run's",
    "ema_decay": "the weight average continues with another decay",
}
#: Names Lightning's ``ModelCheckpoint`` gives checkpoints in holocell's set-up (``{epoch}-{step}``, ``last``).
_LIGHTNING_NAMES = re.compile(r"(last(-v\d+)?|epoch=\d+-step=\d+(-v\d+)?)\.ckpt")
_FIX_RESUME = "Pass resume=True to continue that run"


def earlier_checkpoints(folder: Path) -> list[str]:
    """Names of the files in ``folder`` that Lightning's checkpointing of a holocell run writes (sorted)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _LIGHTNING_NAMES.fullmatch(p.name) and not p.is_dir())


def check_checkpoint_dir(checkpoint_dir, resume: bool) -> tuple[Path | None, Path | None]:
    """Check ``train(checkpoint_dir=..., resume=...)`` before any work.

    Returns
    -------
    The folder (``None`` without one) and the checkpoint to resume from (``None``: a fresh run).

    Raises
    ------
    ValueError
        ``resume=True`` without a folder; a fresh run into a folder that holds an earlier run's checkpoints;
        several ``last*.ckpt`` in one folder (written by an older holocell: which run is meant is unclear).
    NotADirectoryError
        ``checkpoint_dir`` (or a folder above it) is a file, or a link to nowhere.
    """
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir, the directory train() wrote checkpoints to.")
        return None, None
    if not isinstance(checkpoint_dir, str | Path):
        raise TypeError(f"checkpoint_dir must be a path (str or pathlib.Path) or None, got {type(checkpoint_dir).__name__}.")
    folder = Path(checkpoint_dir).expanduser()
    _check_folder(folder)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} is a saved holocell model (config.json, model.safetensors). Training "
            "checkpoints written there would make it a folder that save() can no longer replace and load() no longer "
            "reads as a model. Give the run's checkpoints a folder of their own, e.g. "
            f"checkpoint_dir={str(folder.parent / (folder.name + '_checkpoints'))!r}; the model folder is left as it is."
        )
    found = earlier_checkpoints(folder)
    lasts = [n for n in found if n.startswith("last")]
    last = folder / "last.ckpt"
    if resume and len(lasts) > 1:
        raise ValueError(
            f"checkpoint_dir {str(folder)!r} holds several last checkpoints {lasts} (an older holocell wrote "
            "last-v1.ckpt when a fresh run went into a folder holding another run), so which run to continue is "
            "unclear. Keep the checkpoint of the run to continue as last.ckpt and move the others to another folder."
        )
    if resume and last.is_file():
        return folder, last
    if found:
        now = "resume=True found no last.ckpt, so this would be a fresh run, but " if resume else ""
        fix = "Continue it from its last.ckpt, or" if resume else f"{_FIX_RESUME}, or"
        raise ValueError(
            f"{now}checkpoint_dir {str(folder)!r} already holds checkpoint files of an earlier run ({', '.join(found)}). "
            f"A fresh run would write beside them and a later resume=True would continue the earlier run. {fix} "
            "pass another (new or empty) checkpoint_dir for this run, or move those files away; holocell never "
            "deletes them."
        )
    return folder, None


def _check_folder(folder: Path) -> None:
    """Refuse a ``checkpoint_dir`` that is a file, below a file, or a dangling link, or below one (Lightning fails on
    these only when it first saves, after an epoch of training, with a bare ``FileExistsError``, or creates folders
    at the link's target)."""
    if folder.is_symlink() and not folder.exists():
        raise NotADirectoryError(
            f"checkpoint_dir {str(folder)!r} is a link to {str(folder.readlink())!r}, which does not exist. Create "
            "the folder it points to, or pass another checkpoint_dir."
        )
    link = dangling_parent(folder)  # Lightning would create the folders at the link's target
    if link is not None:
        raise NotADirectoryError(
            f"checkpoint_dir {str(folder)!r} lies below {str(link)!r}, a link to {os.readlink(link)!r}, which does not "
            "exist (a moved or unmounted drive?). Create the folder it points to (or mount the drive), or pass "
            "another checkpoint_dir; holocell does not create folders through a link to nothing."
        )
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == folder else f"lies below the file {str(path)!r}"
                raise NotADirectoryError(
                    f"checkpoint_dir {str(folder)!r} {where}, not a folder; holocell writes its training checkpoints "
                    "into a folder. Pass the path of a new or empty folder as checkpoint_dir (the file is left as it is)."
                )
            return


def read_checkpoint(path: Path) -> dict:
    """Load a Lightning checkpoint for a look (``weights_only=True``, on the CPU); ``ValueError`` naming ``path``
    when it is not a holocell training checkpoint (a pickle of other objects, another file, a damaged file)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any reader error means the same thing here)
        if isinstance(err, pickle.UnpicklingError) and "unsupported global" in str(err).lower():
            reason = "it holds Python objects that a holocell checkpoint never holds (holocell does not unpickle them)"
        else:
            reason = f"it is not a PyTorch checkpoint file, or it is damaged or truncated ({type(err).__name__})"
        _not_ours(path, reason)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("module.") for k in state) or "epoch" not in checkpoint:
        _not_ours(path, "it has no training state of a holocell model (no 'state_dict' of module weights and epoch)")
    return checkpoint


def _not_ours(path: Path, reason: str) -> None:
    raise ValueError(
        f"{str(path)!r} is not a holocell training checkpoint: {reason}. train(resume=True) continues only from the "
        "last.ckpt that train(checkpoint_dir=...) wrote. Pass the checkpoint_dir of that run, or start a fresh run "
        "(resume=False) with another, new checkpoint_dir; holocell leaves this file as it is."
    ) from None


def check_same_model(path: Path, checkpoint: dict, identity: dict | None, state: dict) -> None:
    """Refuse to resume ``checkpoint`` (read from ``path``) into another model.

    ``identity`` is the model's run identity (``HoloCell._run_identity``), ``state`` its training plan's
    ``state_dict``. Without an identity on either side (checkpoints written before it was recorded), the tensor
    names and shapes are compared.
    """
    saved = checkpoint.get(IDENTITY_KEY)
    if isinstance(saved, dict) and identity is not None:
        problems = identity_differences(saved, identity)
    else:
        problems = [
            f"tensor {k!r} has shape {tuple(v.shape)} there, {tuple(state[k].shape)} here"
            for k, v in checkpoint["state_dict"].items()
            if k in state and hasattr(v, "shape") and tuple(v.shape) != tuple(state[k].shape)
        ]
        missing = sorted(set(state) ^ set(checkpoint["state_dict"]))
        problems += [f"tensors {missing[:3]} are in only one of the two"] if missing else []
    if problems:
        raise ValueError(
            f"Checkpoint {str(path)!r} was written by another model, so resume=True cannot continue it here: "
            f"{'; '.join(problems[:6])}. Resume with the model that wrote it (the same HoloCell(...) arguments and "
            "the same data), or start a fresh run (resume=False) with another checkpoint_dir."
        )


def epochs_done(checkpoint: dict) -> int:
    """How many epochs the run that wrote ``checkpoint`` has trained (Lightning's fit-loop progress; the epoch
    index + 1 for checkpoints without it)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint.get("epoch", -1)) + 1


def check_epochs_left(path: Path, checkpoint: dict, max_epochs: int) -> None:
    """Refuse ``resume=True`` when the checkpoint's run has already trained ``max_epochs`` epochs or more: Lightning
    would return without training, and the model would look trained with an empty ``history_``."""
    done = epochs_done(checkpoint)
    if max_epochs <= done:
        raise ValueError(
            f"The run in {str(path.parent)!r} has already trained {done} epochs, so resume=True with "
            f"max_epochs={max_epochs} has nothing left to train. max_epochs counts the run's epochs from its start: "
            f"pass max_epochs larger than {done} (e.g. max_epochs={done + 10}) to train further. The model was not "
            "changed."
        )


def identity_differences(saved: dict, current: dict) -> list[str]:
    """What differs between a checkpoint's run identity and the model's, in words (empty: the same model)."""
    problems = []
    old_net, new_net = saved.get("network", {}), current["network"]
    for key in new_net:
        if old_net.get(key) != new_net[key]:
            problems.append(f"network {key} is {old_net.get(key)!r} in the checkpoint, {new_net[key]!r} here")
    for key, what in (("modalities", "modalities"), ("features", "features per modality")):
        if saved.get(key) != current[key]:
            problems.append(f"{what}: {saved.get(key)} in the checkpoint, {current[key]} here")
    if not problems and saved.get("features_sha256") != current["features_sha256"]:
        problems.append("the feature names differ (same numbers of features)")
    if saved.get("n_cells") != current["n_cells"]:
        problems.append(f"it was trained on {saved.get('n_cells')} cells, this model's data have {current['n_cells']}")
    elif saved.get("cells_sha256") != current["cells_sha256"]:
        problems.append(f"it was trained on other cells (the same number, {current['n_cells']}, other cell names)")
    return problems


def check_resumed_run(path: Path, checkpoint: dict, max_epochs: int, settings: dict) -> None:
    """Before a resumed run: epochs left to train (:func:`check_epochs_left`), and a warning for settings other than
    the run's (:func:`warn_changed_settings`)."""
    check_epochs_left(path, checkpoint, max_epochs)
    warn_changed_settings(path, checkpoint, settings)


def warn_changed_settings(path: Path, checkpoint: dict, settings: dict) -> None:
    """Warn when ``resume=True`` continues a run with other settings than the run's (checkpoints that recorded
    them): the result is then neither the run asked for nor the one interrupted."""
    import warnings

    from .._warnings import HoloCellWarning, user_stacklevel

    saved = checkpoint.get(SETTINGS_KEY)
    if not isinstance(saved, dict):
        return
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    if not changed:
        return
    said = "; ".join(
        f"{k}={saved[k]!r} in the run, {settings[k]!r} now ({_SETTING_EFFECTS.get(k, 'the optimiser differs')})"
        for k in changed
    )
    warnings.warn(
        f"resume=True continues the run of {str(path)!r} with other settings: {said}. Pass the run's values to "
        "continue it as it was, or start a fresh run (resume=False, another checkpoint_dir) for the new ones.",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


def relocate_checkpoint_paths(checkpoint: dict, folder: Path) -> None:
    """Point the paths that Lightning's ``ModelCheckpoint`` state records in ``checkpoint`` at ``folder`` when the
    checkpoint folder was moved (or is mounted elsewhere) since it was written. Without this Lightning forgets the
    run's earlier ``epoch=*.ckpt`` (it would never replace it) and warns that the dirpath changed."""
    new = os.path.realpath(folder)
    for state in (checkpoint.get("callbacks") or {}).values():
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not isinstance(old, str) or old == new:
            continue

        def moved(path, old=old):
            if isinstance(path, str) and path and os.path.dirname(path) == old:
                return os.path.join(new, os.path.basename(path))
            return path

        state["dirpath"] = new
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = moved(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}


__all__ = [
    "IDENTITY_KEY",
    "SETTINGS_KEY",
    "check_checkpoint_dir",
    "check_resumed_run",
    "check_same_model",
    "earlier_checkpoints",
    "read_checkpoint",
    "relocate_checkpoint_paths",
    "warn_changed_settings",
]
