"""Checks of the ``holocell pretrain --config`` JSON, key by key, before any data is read.

The same :class:`~holocell.model._config_check.Rule` tables as for checkpoint configs: the
``model`` section uses the checkpoint's ``init_params`` and ``objective`` rules (every key
optional; the objective's fields are constructor keywords of :class:`~holocell.HoloCell`), and its
``train_config`` the ``training`` rules; ``train`` has its own table below. A key that :class:`~holocell.HoloCell` / :meth:`~holocell.HoloCell.train` (or
Lightning's ``Trainer``, for ``train``) accepts but that has no rule is checked by building a
``Trainer`` with it (as ``holocell train`` checks ``--accelerator``); options that need Python objects
(``callbacks``, ``plugins``, a ``logger``) or that holocell's training sets itself are refused; any other
key is refused. ``train.plan_kwargs``, ``genome`` and ``model.priors`` are checked as training and set-up
would check them, so a bad value fails before any data is read.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from .model._config_check import (
    INIT_PARAMS,
    OBJECTIVE,
    TRAINING,
    ConfigError,
    Rule,
    check_section,
    check_training,
)
from .train._devices import trainer_problem  # shared with HoloCell.train
from .vocab import MODALITIES, SPECIES

_HINT = "Fix the config file (see docs/pretrained.md)."

TOP_LEVEL = (
    Rule("model", dict, required=False),
    Rule("train", dict, required=False),
    Rule("datasets", dict, required=False),
    Rule("modalities", dict, required=False),
    Rule("batch_key", str, required=False, null=True),
    Rule("species", str, required=False, choices=tuple(SPECIES)),
    Rule("genome", str, required=False, null=True),
)
TRAIN = (
    Rule("max_epochs", int, 1, 10_000_000, required=False, null=True),
    Rule("batch_size", int, 1, 10_000_000, required=False),
    Rule("validation_size", float, 0, 0.99, required=False),
    Rule("early_stopping", bool, required=False),
    Rule("early_stopping_patience", int, 0, 1_000_000, required=False),
    Rule("lr", float, 0, 10, required=False),
    Rule("ema_decay", float, 0, 1, required=False, null=True),
    Rule("seed", int, 0, 2**32 - 1, required=False),  # Lightning's seed_everything range
    Rule("enable_progress_bar", bool, required=False),
    Rule("progress_bar", bool, required=False),  # the name of HoloCell.train's other methods, the same switch
    Rule("plan_kwargs", dict, required=False, null=True),
    Rule("accelerator", str, required=False),
    Rule("devices", (int, str, list), required=False),
    Rule("strategy", str, required=False),
    Rule("precision", (str, int), required=False, null=True),
    Rule("num_nodes", int, 1, 100_000, required=False),
    Rule("checkpoint_dir", str, required=False, null=True),
    Rule("resume", bool, required=False),
)
_TRAIN_KEYS = {r.key for r in TRAIN}
#: The ``model`` section: constructor arguments, the objective's fields, and ``train_config``.
MODEL = (
    *INIT_PARAMS,
    *(r for r in OBJECTIVE if r.key not in {i.key for i in INIT_PARAMS}),
    Rule("train_config", dict, required=False, null=True),
)
DATASET = (
    Rule("name", str, required=False),
    Rule("modalities", dict, required=False),
    Rule("batch_key", str, required=False, null=True),
    Rule("layers", dict, required=False, null=True),
    Rule("species", str, required=False, choices=tuple(SPECIES)),
)
#: ``train`` options that need Python objects, which a JSON config cannot hold (the values they may take here).
OBJECT_OPTIONS = {"callbacks": (None,), "plugins": (None,), "logger": (None, False)}
#: ``Trainer`` options that holocell's training sets itself (a second value fails once the data are read).
SET_BY_HOLOCELL = {
    "enable_checkpointing": "give train.checkpoint_dir to write checkpoints",
    "enable_model_summary": "holocell prints the model before training",
    "gradient_clip_val": "set model.train_config.gradient_clip_val or train.plan_kwargs.gradient_clip_val",
    "num_sanity_val_steps": "holocell runs no sanity validation",
}
#: ``HoloCell.train`` arguments that Lightning's ``Trainer`` takes too: checked by building one.
_TRAINER_ARGS = ("accelerator", "devices", "strategy", "precision", "num_nodes")


def _with_unchecked(rules: tuple[Rule, ...], names: set[str]) -> tuple[Rule, ...]:
    """``rules`` plus a pass-through rule for every accepted name without one."""
    have = {r.key for r in rules}
    return rules + tuple(Rule(n, object, required=False, null=True) for n in sorted(names - have))


def _params(fn, drop: set[str]) -> set[str]:
    return {
        n
        for n, p in inspect.signature(fn).parameters.items()
        if n not in drop and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _check_modalities(value: dict, where: str, key: str) -> None:
    bad = {k: v for k, v in value.items() if k not in MODALITIES or not isinstance(v, str)}
    if bad:
        raise ConfigError(
            f"{where}: key {key!r} must map holocell modalities {list(MODALITIES)} to modality names, "
            f"got {bad}. {_HINT}"
        )


def _check_layers(spec: dict, modalities, where: str, key: str) -> None:
    """``datasets.<file>.layers``: holocell modalities (of that file, when its modalities are given) to layer names."""
    layers = spec.get("layers") or {}
    for m, layer in layers.items():
        if m not in MODALITIES:
            named = [h for h, name in (modalities or {}).items() if name == m]
            fix = (f"key it by the holocell modality {named[0]!r} (the file's {m!r} is read as {named[0]})" if named
                   else f"e.g. {{\"protein\": \"counts\"}} for a protein modality named {m!r}")  # fmt: skip
            raise ConfigError(
                f"{where}: key '{key}.layers.{m}': layers are keyed by holocell modality {list(MODALITIES)}, "
                f"not {m!r}; {fix}. {_HINT}"
            )
        if layer is not None and (not isinstance(layer, str) or not layer.strip()):
            raise ConfigError(
                f"{where}: key '{key}.layers.{m}' must be the name of a layer (a non-empty string; null reads .X), "
                f"got {json.dumps(layer)}. {_HINT}"
            )
        if modalities and m not in modalities:
            raise ConfigError(
                f"{where}: key '{key}.layers.{m}' names modality {m!r}, which this file's modalities "
                f"{dict(modalities)} do not include; remove it or add {m!r} to '{key}.modalities'. {_HINT}"
            )


def _check_train(config: dict, where: str) -> None:
    """``train`` as ``HoloCell.train`` and Lightning will check it, but before any data is read."""
    from .model._arguments import check_plan_extras, check_train_call, check_training
    from .model._train_safety import check_precision
    from .train._config import TrainingConfig
    from .train._fit import run_config
    from .train._resume import check_checkpoint_dir

    train = config.get("train", {})
    for key, allowed in OBJECT_OPTIONS.items():
        if key in train and not any(train[key] is a for a in allowed):
            raise ConfigError(
                f"{where}: key 'train.{key}' needs Lightning objects, which a JSON config cannot hold; leave it out "
                f"(from Python, pass them to HoloCell.train({key}=...)). {_HINT}"
            )
    for key, fix in SET_BY_HOLOCELL.items():
        if key in train:
            raise ConfigError(f"{where}: key 'train.{key}' is set by holocell's training; leave it out ({fix}). {_HINT}")
    try:
        check_train_call(train.get("max_epochs"), train.get("batch_size", 32), train.get("validation_size", 0.1),
                         train.get("early_stopping_patience", 20), train.get("lr"), train.get("seed", 0),
                         train.get("ema_decay", 0.995))  # fmt: skip
        check_checkpoint_dir(train.get("checkpoint_dir"), train.get("resume", False))
    except (TypeError, ValueError, OSError) as err:
        raise ConfigError(f"{where}: section 'train': {err} {_HINT}") from None
    if train.get("precision") is not None:  # Lightning's Trainer takes '64' and '*-true'; holocell's training does not
        try:
            check_precision(train["precision"])
        except ValueError as err:
            raise ConfigError(f"{where}: key 'train.precision': {err} {_HINT}") from None
    plan = train.get("plan_kwargs") or {}
    known = set(TrainingConfig.__dataclass_fields__) | {"ema_decay", "total_steps"}
    unknown = sorted(set(plan) - known)
    if unknown:
        raise ConfigError(
            f"{where}: key 'train.plan_kwargs.{unknown[0]}' is not a training setting (allowed: {sorted(known)}). {_HINT}"
        )
    base = TrainingConfig.from_dict(config.get("model", {}).get("train_config") or {})
    try:
        _, extra = run_config(base, train.get("lr"), check_training(plan, "train(plan_kwargs=...)", upper_bounds=False))
        check_plan_extras(extra)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: key 'train.plan_kwargs': {err} {_HINT}") from None
    options = {k: v for k, v in train.items()
               if (k in _TRAINER_ARGS or k not in _TRAIN_KEYS) and k not in OBJECT_OPTIONS}  # fmt: skip
    problem = trainer_problem(options) if options else None
    if problem:
        raise ConfigError(
            f"{where}: Lightning cannot train with the options {options} of section 'train' here ({problem}); "
            "use an accelerator (cpu, gpu, mps or auto) and devices this machine has. " + _HINT
        )


def _check_setup(config: dict, where: str) -> None:
    """``genome`` (a shipped name or an existing file) and ``model.priors``, as set-up and the model check them."""
    from .priors import check_prior_names
    from .vocab._tables import normalise_genome

    genome = config.get("genome")
    if genome is not None and not Path(genome).expanduser().is_file():  # "~/genes.bed" as set-up reads it
        try:
            normalise_genome(genome)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"{where}: key 'genome': {err} {_HINT}") from None
    priors = config.get("model", {}).get("priors")
    try:  # its type is checked by the model rules above
        check_prior_names(priors)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: key 'model.priors': {err} {_HINT}") from None


def check_pretrain_config(config: dict, path: str) -> None:
    """Raise :class:`~holocell.model._config_check.ConfigError` naming the first bad key.

    Parameters
    ----------
    config
        The parsed config (an object).
    path
        The file, for the message.
    """
    import lightning.pytorch as pl

    from .model import HoloCell

    where = f"config file {path}"
    check_section(config, TOP_LEVEL, where, hint=_HINT)
    model_names = _params(
        HoloCell.__init__, {"self", "mdata", "feature_space", "grn_edges", "batch_categories"}
    )
    model = config.get("model", {})
    check_section(model, _with_unchecked(MODEL, model_names), where, "model.", partial=True, hint=_HINT)
    if model.get("train_config") is not None:
        check_section(model["train_config"], TRAINING, where, "model.train_config.", hint=_HINT)
        check_training(model["train_config"], where, "model.train_config", hint=_HINT)
    defaults = inspect.signature(HoloCell.__init__).parameters
    d_model = model.get("d_model", defaults["d_model"].default)
    n_heads = model.get("n_heads", defaults["n_heads"].default)
    if d_model % n_heads:
        raise ConfigError(
            f"{where}: key 'model.n_heads' ({n_heads}) must divide model.d_model ({d_model}). {_HINT}"
        )
    train_names = _params(HoloCell.train, {"self"}) | _params(pl.Trainer.__init__, {"self"})
    check_section(config.get("train", {}), _with_unchecked(TRAIN, train_names), where, "train.", hint=_HINT)
    _check_train(config, where)
    _check_setup(config, where)
    if "modalities" in config:
        _check_modalities(config["modalities"], where, "modalities")
    for name, spec in config.get("datasets", {}).items():
        key = f"datasets.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{where}: key {key!r} must be an object (name, modalities, batch_key, layers). {_HINT}"
            )
        check_section(spec, DATASET, where, key + ".", hint=_HINT)
        if "modalities" in spec:
            _check_modalities(spec["modalities"], where, key + ".modalities")
        _check_layers(spec, spec.get("modalities", config.get("modalities")), where, key)


__all__ = ["OBJECT_OPTIONS", "SET_BY_HOLOCELL", "check_pretrain_config"]
