"""HoloCell save / load (mixed into :class:`HoloCell`); the file format is in :mod:`._checkpoint`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._warnings import HoloCellWarning
from . import _checkpoint, _pretrained
from ._args import check_device
from ._history import history_from_config
from ._paths import output_path
from ._transfer_record import restore_transfer
from ._validate_links import saved_feature_space

if TYPE_CHECKING:
    from mudata import MuData

    from ._holocell import HoloCell


def init_kwargs(config: dict) -> dict:
    """Constructor keywords of a saved model: its ``init_params``, objective and training settings.

    Files written before the typed settings have only ``init_params`` (the objective's
    ``p_drop_modality`` and ``align_weight`` among them): the other settings take their defaults.
    Files of format 1-2 (before the cell state and ``align_mode``) were trained with the contrastive alignment
    term, off unless their ``align_weight`` says otherwise, and keep it.
    """
    kwargs = {**config["init_params"], **config.get("objective", {})}
    if config.get("format_version", 1) < 3:
        kwargs.setdefault("align_mode", "contrastive")
        kwargs.setdefault("align_weight", 0.0)
    if "training" in config:
        kwargs["train_config"] = config["training"]
    return kwargs


#: Set-up arguments that describe the data, not the model: ``load(setup_overrides=...)`` may replace the saved ones.
DATA_SETUP_ARGS = ("batch_key", "rna_layer", "atac_layer", "protein_layer")


def setup_with_overrides(config: dict, overrides: Mapping[str, str | None] | None) -> dict:
    """The saved setup arguments of ``config`` with ``overrides`` (see :meth:`SaveLoadMixin.load`) in place."""
    args = _checkpoint.setup_args(config)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DATA_SETUP_ARGS))
    if unknown:
        raise ValueError(
            f"setup_overrides may replace {list(DATA_SETUP_ARGS)}, which describe the data; {unknown} describe the "
            f"model and are replayed as saved ({ {k: args.get(k) for k in unknown} }). Leave them out."
        )
    for key in overrides.keys() - {"batch_key"}:
        if key.removesuffix("_layer") not in args["modalities"]:
            raise ValueError(
                f"setup_overrides[{key!r}]: the model reads no {key.removesuffix('_layer')} modality (it reads "
                f"{list(args['modalities'])}). Leave it out."
            )
    if "batch_key" in overrides and (args.get("batch_key") is None) != (overrides["batch_key"] is None):
        raise ValueError(
            "setup_overrides['batch_key']: the model was trained without batches, so it has no batch to match a "
            "batch column to. Leave it out." if args.get("batch_key") is None else
            f"setup_overrides['batch_key'] is None, but the model was trained with batches (batch_key="
            f"{args['batch_key']!r}); name the column of mdata.obs that holds them."
        )  # fmt: skip
    return {**args, **overrides}


#: Environment variables by which launchers (torchrun, Lightning's DDP, MPI wrappers) tell a process its rank.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def other_rank() -> str | None:
    """Which process this is when it is not the first of a multi-process run (``"rank 1 of 2"``), else ``None``.

    The rank is ``torch.distributed``'s once its process group is initialised (as after
    ``train(strategy="ddp")``, in every rank); before that, a non-zero :data:`RANK_VARIABLES` set by the launcher
    (``"LOCAL_RANK=1"``). A single process, and global rank 0, give ``None``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return None if rank == 0 else f"rank {rank} of {dist.get_world_size()}"
    named = []
    for name in RANK_VARIABLES:
        try:
            if int(os.environ.get(name, "0") or 0) != 0:
                named.append(f"{name}={os.environ[name]}")
        except ValueError:  # not a rank: not ours to judge
            continue
    return ", ".join(named) or None


def _skipped_on_other_rank(call: str, path: Path) -> bool:
    """Whether ``call`` writes nothing here because this is not global rank 0 (with a warning saying so)."""
    rank = other_rank()
    if rank is None:
        return False
    warnings.warn(
        f"{call} wrote nothing to {path}: this process is {rank} of a multi-process run, and only global rank 0 "
        "writes (every rank holds the same trained weights). Call it from rank 0 only, e.g. under "
        "`if not dist.is_initialized() or dist.get_rank() == 0:` (docs/scaling.md).",
        HoloCellWarning,
        stacklevel=3,
    )
    return True


class SaveLoadMixin:
    """:meth:`save`, :meth:`load`, :meth:`save_pretrained`, and scvi-tools' views of a saved model that read only
    ``config.json`` (:meth:`load_registry`, :meth:`view_setup_args`)."""

    def save(
        self, dir_path: str | Path, overwrite: bool = False, save_mudata: bool = False, *, save_anndata: bool | None = None
    ) -> None:
        """Save weights (safetensors) and a JSON config atomically into ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to create (``~`` is expanded; ``"."`` is the current folder, an empty path is refused with
            ``ValueError``). Written to a temporary sibling first and renamed into place, so an interrupted save
            never leaves a half-written model. A new folder and its files get the modes the umask gives; a
            replaced one keeps its modes. A folder above it that is a symlink to nothing is refused
            (``NotADirectoryError``) before anything is written.
        overwrite
            Replace an existing holocell checkpoint directory. Anything else at ``dir_path`` (a
            folder with other files or training checkpoints, a plain file, a link to something
            else) is refused with ``FileExistsError``, overwrite or not; a symlink to a checkpoint
            is kept and the checkpoint it points to replaced. The files are fsynced before the
            rename. A checkpoint holding ``mdata.h5mu`` is replaced only with ``save_mudata=True``
            (the new file is complete before the old one goes), and never while the model's MuData
            is backed on a file inside it.
        save_mudata
            Also write the registered MuData as ``mdata.h5mu``.
        save_anndata
            scvi-tools' name of ``save_mudata`` (the same switch; giving both is a ``ValueError``).

        Notes
        -----
        In a multi-process run (``train(strategy="ddp")``, torchrun, SLURM) only global rank 0 writes: on any other
        rank ``save`` writes nothing and warns (:class:`~holocell.HoloCellWarning`), since every rank holds the same
        weights and their saves would race for ``dir_path``. The rank is ``torch.distributed``'s once its process
        group is initialised (in every rank after ``train``), else the launcher's ``RANK`` / ``LOCAL_RANK`` /
        ``NODE_RANK``.
        """
        if save_anndata is not None:
            if save_mudata:
                raise ValueError("save_anndata is scvi-tools' name of save_mudata: pass one of them.")
            save_mudata = save_anndata
        path = output_path(dir_path, "dir_path")  # absolute: "." has a name and a parent like any path
        if _skipped_on_other_rank("HoloCell.save", path):
            return
        _checkpoint.save_model(self, path, overwrite=overwrite, save_mudata=save_mudata)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        mdata: MuData | None = None,
        accelerator: str = "auto",
        device: str | torch.device | None = None,
        *,
        setup_overrides: Mapping[str, str | None] | None = None,
        adata: MuData | None = None,
        prefix: str | None = None,
    ) -> HoloCell:
        """Load a model saved with :meth:`save` onto ``mdata``.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save` (``~`` is expanded).
        mdata
            MuData with the same modality names and features; set up with the saved setup
            arguments. Default: ``dir_path/mdata.h5mu`` when it was saved.
        accelerator
            Unused placeholder for scvi-tools signature compatibility.
        device
            Device to place the weights on (default CPU).
        setup_overrides
            Set-up arguments that describe ``mdata`` rather than the model, used instead of the saved ones:
            ``batch_key`` (a column of ``mdata.obs``; its batches are matched to the training batches by name, and
            a batch not seen in training is read as a new batch) and ``rna_layer`` / ``atac_layer`` /
            ``protein_layer`` (``None``: ``.X``). Other keys, a layer of a modality the model does not read, and a
            ``batch_key`` for a model trained without one (or ``None`` for one trained with one) are refused with
            ``ValueError``.
        adata
            scvi-tools' name of ``mdata`` (the same argument; giving both is a ``ValueError``).
        prefix
            Unused: holocell checkpoints have fixed file names (``None`` only), as in :meth:`load_registry`.

        Returns
        -------
        The model. A model made by :meth:`load_query_data` or ``load_pretrained(name, mdata)`` comes back as that
        query model: its ``transfer_report_``, which rows came from the reference, and the :meth:`freeze` that was
        active when it was saved (saved since checkpoint format 6; older files load as plain models).
        """
        if adata is not None:
            if mdata is not None:
                raise ValueError("load() got its data twice (mdata and adata=, scvi-tools' name of it): pass it once.")
            mdata = adata
        if prefix is not None:
            raise ValueError(f"holocell checkpoints have fixed file names; pass prefix=None, not {prefix!r}.")
        device = None if device is None else check_device(device)
        return cls._from_checkpoint_dir(Path(dir_path).expanduser(), mdata, device, setup_overrides)

    @classmethod
    def _from_checkpoint_dir(
        cls, dir_path: Path, mdata: MuData | None, device=None, setup_overrides: Mapping | None = None
    ) -> HoloCell:
        """The model saved in ``dir_path``, rebuilt on ``mdata`` (set up here with the saved setup arguments, the
        data's own ``setup_overrides`` replacing theirs)."""
        config, state, mdata = _checkpoint.load_checkpoint(cls.__name__, dir_path, mdata)
        with saved_feature_space():  # the saved feature space links the peaks: no genome= needed here
            cls.setup_mudata(mdata, **setup_with_overrides(config, setup_overrides))
        model = cls(
            mdata,
            **init_kwargs(config),
            feature_space=config["feature_space"],
            batch_categories=config["batch_categories"],
        )
        _checkpoint.load_state(model.module, state, dir_path, config)
        model.is_trained_ = bool(config.get("is_trained", True))
        model.history_ = history_from_config(config)
        model.module.eval()
        if device is not None:
            model.module.to(device)
        restore_transfer(model, config)  # a query model's frozen rows, freeze() and transfer_report_ (format 6)
        return model

    def save_pretrained(self, archive_path: str | Path, overwrite: bool = False) -> Path:
        """Save the model as one ``.zip`` file (weights + JSON config with the vocabulary).

        Parameters
        ----------
        archive_path
            Output path ending in ``.zip`` (``~`` is expanded); :meth:`load_pretrained` reads it. A folder
            above it that is a symlink to nothing is refused (``NotADirectoryError``) before anything is written.
        overwrite
            Replace an existing holocell checkpoint archive. Anything else at ``archive_path`` (another
            file, a directory) is refused with ``FileExistsError``; a symlink to an archive is kept
            and the archive it points to replaced.

        Returns
        -------
        The archive path (also on a rank that writes nothing).

        Notes
        -----
        In a multi-process run only global rank 0 writes; other ranks write nothing and warn, as :meth:`save`.
        """
        path = output_path(archive_path, "archive_path")
        if _skipped_on_other_rank("HoloCell.save_pretrained", path):
            return path
        return _pretrained.save_pretrained(self, path, overwrite)

    @classmethod
    def load_registry(cls, dir_path: str | Path, prefix: str | None = None) -> dict:
        """How a saved model's data were set up, read from its validated ``config.json``.

        Replaces scvi-tools' method, which unpickles ``model.pt``: holocell never unpickles a file.

        Parameters
        ----------
        dir_path
            A holocell model folder (``save``'s ``dir_path``; ``~`` is expanded).
        prefix
            Unused: holocell checkpoints have fixed file names (``None`` only).

        Returns
        -------
        ``{"model_name": ..., "setup_method_name": "setup_mudata", "setup_args": {...}}``.
        """
        if prefix is not None:
            raise ValueError(f"holocell checkpoints have fixed file names; pass prefix=None, not {prefix!r}.")
        config = _checkpoint.read_checkpoint(Path(dir_path).expanduser())
        return {"model_name": config["model_name"], "setup_method_name": "setup_mudata", "setup_args": config["setup_args"]}

    @classmethod
    def view_setup_args(cls, dir_path: str | Path, prefix: str | None = None) -> None:
        """Print the ``setup_mudata`` arguments of a saved model (:meth:`load_registry`; nothing is unpickled)."""
        registry = cls.load_registry(dir_path, prefix)
        args = ", ".join(f"{k}={v!r}" for k, v in registry["setup_args"].items())
        print(f"{registry['model_name']}.setup_mudata(mdata, {args})")

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> None:
        """Not a holocell operation: scvi-tools' conversion unpickles files; holocell reads only its own
        ``model.safetensors`` + ``config.json`` checkpoints (:meth:`load`)."""
        raise NotImplementedError(
            "convert_legacy_save converts pickled scvi-tools saves, which holocell never reads. Load a holocell "
            "model with HoloCell.load(dir_path), or save it again with model.save(dir_path) in the session that "
            "trained it."
        )


__all__ = ["DATA_SETUP_ARGS", "RANK_VARIABLES", "SaveLoadMixin", "init_kwargs", "other_rank", "setup_with_overrides"]
