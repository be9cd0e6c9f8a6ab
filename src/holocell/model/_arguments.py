"""Checks of the arguments a user passes to :class:`~holocell.HoloCell`, before anything is built from them.

The same rules as a checkpoint's config (:mod:`._config_check`): a size that is not an integer, a weight that is
a string, NaN or infinite, or a probability outside [0, 1] is refused with a message that names the argument,
instead of failing deep inside torch or silently training on NaN. numpy scalars count as Python numbers.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from lightning.pytorch.callbacks import Checkpoint

from ..train._config import TrainingConfig
from ._args import check_count
from ._config_check import INIT_PARAMS, OBJECTIVE, TRAINING, check_section

#: Largest ``train(seed=...)``: Lightning's ``seed_everything`` refuses seeds outside 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
_HINT = "Pass a value of that type and range to HoloCell(...) (see its docstring)."
#: Constructor arguments checked here (the others have checks of their own: priors, feature space, batches).
_CHECKED = ("d_model", "n_layers", "n_heads", "n_latents", "n_bins", "dropout", "p_drop_modality", "align_weight",
            "read_in_tokens", "n_latent", "seed")  # fmt: skip


def python_scalar(value):
    """numpy scalars as Python numbers; anything else unchanged."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def check_arguments(arguments: Mapping, objective_kwargs: Mapping) -> dict:
    """Check the constructor's ``arguments`` and the ``objective_kwargs`` it forwards to
    :class:`~holocell.nn.ObjectiveConfig`; raise a ``ValueError`` naming the first bad one.

    Returns the objective keyword arguments with numpy scalars turned into Python numbers (unknown keys are
    left for :meth:`~holocell.nn.ObjectiveConfig.from_dict` to refuse).
    """
    check_train_config(arguments.get("train_config"))
    init = {k: python_scalar(arguments[k]) for k in _CHECKED if k in arguments}
    check_section(init, [r for r in INIT_PARAMS if r.key in _CHECKED], "HoloCell()", partial=True, hint=_HINT)
    d_model, n_heads = init.get("d_model", 128), init.get("n_heads", 4)
    if d_model % n_heads:
        raise ValueError(
            f"HoloCell(): n_heads={n_heads} must divide d_model={d_model} (each attention head gets d_model / n_heads "
            "dimensions); e.g. d_model=64 with n_heads=4."
        )
    # types and finiteness here; ranges and choices by ObjectiveConfig, whose messages say what each field is
    types_only = [replace(r, low=None, high=None, choices=()) for r in OBJECTIVE]
    known = {r.key for r in OBJECTIVE}
    unknown = sorted(set(objective_kwargs) - known)
    if unknown:  # a typo of a constructor argument (d_modle=) lands here too: name the close ones
        own = sorted(set(arguments) - {"self", "mdata", "objective_kwargs", "__class__"})
        close = {n: difflib.get_close_matches(n, [*own, *known], n=1, cutoff=0.6) for n in unknown}
        hint = " ".join(f"Did you mean {c[0]!r} for {n!r}?" for n, c in close.items() if c)
        raise ValueError(
            f"HoloCell(): Unknown objective settings {unknown}, and not constructor arguments either. "
            + (f"{hint} " if hint else "")
            + f"HoloCell's arguments: {own}; objective settings (holocell.nn.ObjectiveConfig): {sorted(known)}."
        )
    objective = {k: python_scalar(v) for k, v in objective_kwargs.items()}
    check_section({k: v for k, v in objective.items() if k in known}, types_only, "HoloCell()", partial=True,
                  hint=_HINT)  # fmt: skip
    return objective


def check_training(values: Mapping | None, where: str, *, upper_bounds: bool = True) -> dict:
    """Check a dict of :class:`~holocell.train.TrainingConfig` fields (``HoloCell(train_config=...)``,
    ``train(plan_kwargs=...)``) with the checkpoint's rules: a learning rate given as a string, NaN or a negative
    number is refused naming the field. ``upper_bounds=False`` (a run's overrides, which are not saved) keeps
    only the types, finiteness and lower bounds. Returns the dict with numpy scalars as Python numbers (unknown
    keys are left to ``TrainingConfig``, which names them)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{where} must be a dict or None, got {type(values).__name__}.")
    plain = {k: python_scalar(v) for k, v in values.items()}
    known = {r.key for r in TRAINING}
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items() if k in known}
    # a run's overrides: no upper bound on numbers (a list has no bounds to drop)
    rules = TRAINING if upper_bounds else [r if r.high is None else replace(r, high=float("inf"), bounds=r.bounds[0] + ")")
                                           for r in TRAINING]  # fmt: skip
    hint = "See holocell.train.TrainingConfig for each field."
    check_section(as_json, rules, where, partial=True, hint=hint)
    betas = as_json.get("betas")
    if betas is not None and (len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"{where}: key 'betas' must be two numbers in [0, 1) (e.g. (0.9, 0.98)), got {betas!r}. {hint}")
    return plain


def check_train_config(value) -> None:
    """``HoloCell(train_config=...)``: a :class:`~holocell.train.TrainingConfig`, a dict of its fields, or ``None``
    (a string such as ``"fast"`` was kept and failed only in :meth:`~holocell.HoloCell.train`)."""
    if value is None or isinstance(value, dict):
        return  # a dict is checked field by field with check_training
    if not isinstance(value, TrainingConfig):
        raise TypeError(
            f"HoloCell(train_config=...) must be a holocell.train.TrainingConfig, a dict of its fields (e.g. "
            f"{{'lr': 1e-3}}) or None, got {type(value).__name__} {value!r}."
        )
    check_training(value.to_dict(), "HoloCell(train_config=...)")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_plan_extras(extra: Mapping) -> None:
    """The ``plan_kwargs`` of :meth:`~holocell.HoloCell.train` that are not config fields: ``total_steps`` (an
    integer >= 1; 0 and negative values were silently replaced) and ``ema_decay`` (as ``train(ema_decay=...)``)."""
    if "total_steps" in extra:
        check_count(python_scalar(extra["total_steps"]), "train(plan_kwargs=...): key 'total_steps'", none_ok=True)
    if "ema_decay" in extra:
        check_ema_decay(python_scalar(extra["ema_decay"]), "train(plan_kwargs=...): key 'ema_decay'")


def check_ema_decay(value, what: str = "ema_decay") -> None:
    """``None`` or a number strictly between 0 and 1."""
    if value is not None and not (_is_number(value) and 0 < value < 1):
        raise ValueError(
            f"{what} must be a number in (0, 1), e.g. 0.995, or None (keep the last weights), got {value!r}."
        )


def as_callbacks(value) -> list:
    """``train(callbacks=...)`` as a list: ``None`` gives none, one callback a list of one."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def check_train_call(
    max_epochs, batch_size, validation_size, early_stopping_patience, lr, seed, ema_decay=None
) -> tuple[int | None, int, int, int]:
    """Check the arguments of :meth:`~holocell.HoloCell.train` before anything runs (a string, a float epoch
    count, a zero batch size or a NaN learning rate used to fail deep inside Lightning or numpy).

    Returns ``(max_epochs, batch_size, early_stopping_patience, seed)`` as Python ints (``max_epochs`` may be
    ``None``): NumPy integers passed the check but failed in Lightning (``max_epochs``, ``batch_size``) or torch
    (``seed``)."""
    max_epochs = check_count(max_epochs, "max_epochs", none_ok=True)
    batch_size = check_count(batch_size, "batch_size")
    early_stopping_patience = check_count(early_stopping_patience, "early_stopping_patience", minimum=0)
    seed = check_count(seed, "seed", minimum=0)
    if seed > MAX_SEED:
        raise ValueError(
            f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1, the range of Lightning's seed_everything and "
            f"numpy's legacy seeding), got {seed}; pass a smaller seed, e.g. seed % 2**32."
        )
    check_ema_decay(python_scalar(ema_decay))
    if isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Real):
        raise TypeError(f"validation_size must be a number in [0, 1), got {type(validation_size).__name__}.")
    if lr is not None:
        check_training({"lr": lr}, "train()", upper_bounds=False)
    return max_epochs, batch_size, early_stopping_patience, seed


def progress_switch(enable_progress_bar, progress_bar):
    """``train``'s progress display: ``enable_progress_bar`` (scvi-tools' name) or ``progress_bar`` (the name every
    other holocell method uses; it reached Lightning's ``Trainer``, "unexpected keyword argument"), one switch.
    Both given with different values is refused; ``None`` is "not given" (follow :data:`holocell.settings`)."""
    if progress_bar is None:
        return enable_progress_bar
    if enable_progress_bar is not None and enable_progress_bar != progress_bar:
        raise ValueError(
            f"train() got enable_progress_bar={enable_progress_bar!r} and progress_bar={progress_bar!r}: two names "
            "of the same switch, with different values. Pass one of them (e.g. progress_bar=False)."
        )
    return progress_bar


#: scvi-tools ``train()`` / ``scvi.train.Trainer`` arguments that holocell does not take -> holocell's way
SCVI_TRAIN_ARGUMENTS = {
    "train_size": "pass validation_size=1 - train_size instead (e.g. validation_size=0.1 for train_size=0.9)",
    "shuffle_set_split": "the train/validation split is always random, drawn from seed= (the same seed gives the "
    "same split)",
    "load_sparse_tensor": "holocell reads sparse and dense counts itself; leave it out",
    "datasplitter_kwargs": "holocell builds its own data loaders: set batch_size= and validation_size=",
    "datamodule": "holocell builds its data module from the MuData registered with setup_mudata",
    "plan_config": "pass holocell.train.TrainingConfig fields as plan_kwargs= (or HoloCell(train_config=...))",
    "trainer_config": "pass Lightning Trainer arguments directly as keywords of train()",
    "early_stopping_monitor": "early stopping always monitors validation_loss (early_stopping=False turns it off)",
    "early_stopping_min_delta": "early stopping counts any decrease of validation_loss; tune "
    "early_stopping_patience= instead",
    "early_stopping_mode": "early stopping always minimises validation_loss",
    "early_stopping_warmup_epochs": "early stopping already ignores the epochs of the KL warm-up",
    "checkpointing_monitor": "checkpoint_dir= writes a resumable last.ckpt every epoch; for best-model checkpoints "
    "pass callbacks=[lightning.pytorch.callbacks.ModelCheckpoint(monitor='validation_loss', ...)]",
    "learning_rate_monitor": "pass callbacks=[lightning.pytorch.callbacks.LearningRateMonitor()] and a logger=",
    "simple_progress_bar": "use enable_progress_bar= (or holocell.settings.progress_bar)",
    "progress_bar_refresh_rate": "pass callbacks=[lightning.pytorch.callbacks.TQDMProgressBar(refresh_rate=...)]",
    "log_save_dir": "pass logger=lightning.pytorch.loggers.CSVLogger(folder) (history_ keeps the epoch losses)",
    "use_gpu": "pass accelerator='gpu' (or 'cpu') and devices= instead, as scvi-tools itself does since 1.0",
}
#: scvi-tools ``setup_anndata`` / ``setup_mudata`` arguments that holocell does not take -> holocell's way
SCVI_SETUP_ARGUMENTS = {
    "layer": "each modality's counts layer is its own argument: pass rna_layer= (and atac_layer=, protein_layer=)",
    "labels_key": "the model trains without labels; give them to hc.tl.annotate(mdata, model, labels_key=...) "
    "after training",
    "unlabeled_category": "the model trains without labels; hc.tl.annotate(method='finetune') trains a head "
    "semi-supervised, as scANVI does",
    "categorical_covariate_keys": "batch_key= is the one categorical covariate: join several columns into one, e.g. "
    "mdata.obs['batch_cov'] = mdata.obs['a'].astype(str) + '_' + mdata.obs['b'].astype(str), and pass "
    "batch_key='batch_cov'",
    "continuous_covariate_keys": "the model takes no continuous covariates; each cell's library size is read from "
    "its counts",
    "size_factor_key": "each cell's library size is read from its counts; leave it out",
}


def check_trainer_kwargs(trainer_kwargs: Mapping) -> None:
    """Refuse the scvi-tools ``train()`` arguments that holocell does not take (:data:`SCVI_TRAIN_ARGUMENTS`):
    they reached Lightning's ``Trainer``, whose "unexpected keyword argument" named no holocell equivalent."""
    if "device" in trainer_kwargs:  # the other methods' name: it reached Lightning after the data were read
        raise TypeError(
            f"train() got device={trainer_kwargs['device']!r}; training runs where Lightning puts it: pass "
            "accelerator='cpu' or 'gpu' and devices= (a count, or indices such as [0] for 'cuda:0'). The other "
            "methods (get_latent_representation, generate, ...) take device=."
        )
    known = [k for k in trainer_kwargs if k in SCVI_TRAIN_ARGUMENTS]
    if not known:
        return
    size = python_scalar(trainer_kwargs.get("train_size"))
    hints = {k: SCVI_TRAIN_ARGUMENTS[k] for k in known}
    if "train_size" in hints and _is_number(size) and 0 < size <= 1:
        hints["train_size"] = f"pass validation_size={1 - size:.6g} (1 - train_size) instead"
    given = ", ".join(f"{k}={trainer_kwargs[k]!r}"[:80] for k in known)
    raise TypeError(
        f"train() got {given}, {'arguments' if len(known) > 1 else 'an argument'} of scvi-tools' train() that "
        "HoloCell.train does not take. " + " ".join(f"{k}: {h}." for k, h in hints.items())
    )


def check_setup_kwargs(kwargs: Mapping) -> None:
    """Refuse the scvi-tools set-up arguments holocell does not take (:data:`SCVI_SETUP_ARGUMENTS`): they reached
    scvi-tools' ``register_fields``, whose "unexpected keyword arguments ... passed without a source_registry"
    named no holocell equivalent."""
    known = [k for k in kwargs if k in SCVI_SETUP_ARGUMENTS]
    if known:
        given = ", ".join(f"{k}={kwargs[k]!r}"[:80] for k in known)
        raise TypeError(
            f"setup_mudata() got {given}, {'arguments' if len(known) > 1 else 'an argument'} of scvi-tools' set-up "
            "that HoloCell.setup_mudata does not take. " + " ".join(f"{k}: {SCVI_SETUP_ARGUMENTS[k]}." for k in known)
        )


def clip_in_plan(overrides: dict, trainer_kwargs: dict) -> dict:
    """``train(gradient_clip_val=...)``, a Lightning ``Trainer`` argument that holocell sets from the run's
    :class:`~holocell.train.TrainingConfig`: moved from ``trainer_kwargs`` into the run's checked ``plan_kwargs``
    (``overrides``). ``0`` means no clipping, as in Lightning (``None`` in holocell's config)."""
    if "gradient_clip_val" not in trainer_kwargs:
        return overrides
    value = python_scalar(trainer_kwargs.pop("gradient_clip_val"))
    if "gradient_clip_val" in overrides:
        raise ValueError(
            "gradient_clip_val is given twice, as train(gradient_clip_val=...) and in plan_kwargs; pass it once "
            "(plan_kwargs={'gradient_clip_val': ...} is holocell's place for it)."
        )
    value = None if _is_number(value) and value == 0 else value
    check_training({"gradient_clip_val": value}, "train(gradient_clip_val=...)", upper_bounds=False)
    return {**overrides, "gradient_clip_val": value}


def check_checkpointing(trainer_kwargs: dict, callbacks: list, checkpoint_dir) -> None:
    """``train(enable_checkpointing=...)``: holocell turns Lightning's checkpointing on exactly when the run writes
    checkpoints (``checkpoint_dir``, or a :class:`~lightning.pytorch.callbacks.Checkpoint` such as ``ModelCheckpoint``
    in ``callbacks``). A value that agrees is dropped from ``trainer_kwargs``; one that contradicts it is refused."""
    if "enable_checkpointing" not in trainer_kwargs:
        return
    wanted = trainer_kwargs.pop("enable_checkpointing")
    has_callback = any(isinstance(c, Checkpoint) for c in callbacks)
    if bool(wanted) == (checkpoint_dir is not None or has_callback):
        return
    if wanted:
        raise ValueError(
            "train(enable_checkpointing=True) with nothing to write the checkpoints: pass checkpoint_dir='folder' "
            "(a resumable last.ckpt every epoch, see resume=) or callbacks=[lightning.pytorch.callbacks."
            "ModelCheckpoint(...)]; holocell then turns checkpointing on itself."
        )
    given = "checkpoint_dir=" if checkpoint_dir is not None else "a ModelCheckpoint in callbacks"
    raise ValueError(
        f"train(enable_checkpointing=False) contradicts {given}, which writes checkpoints: leave enable_checkpointing "
        f"out (holocell turns it on exactly when the run writes checkpoints), or drop {given}."
    )


__all__ = [
    "SCVI_SETUP_ARGUMENTS",
    "SCVI_TRAIN_ARGUMENTS",
    "as_callbacks",
    "check_arguments",
    "check_checkpointing",
    "check_ema_decay",
    "check_plan_extras",
    "check_train_call",
    "check_train_config",
    "check_setup_kwargs",
    "check_trainer_kwargs",
    "check_training",
    "clip_in_plan",
    "progress_switch",
    "python_scalar",
]
