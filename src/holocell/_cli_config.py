"""Checks of the ``holocell pretrain --config`` JSON, key by key, before any data is read.

The same :class:`~holocell.model._config_check.Rule` tables as for checkpoint configs: the
``model`` section uses the checkpoint's ``init_params`` and ``objective`` rules (every key
optional; the objective's fields are constructor keywords of :class:`~holocell.HoloCell`), and its
``train_config`` the ``training`` rules; ``train`` has its own table below. A key that :class:`~holocell.HoloCell` / :meth:`~holocell.HoloCell.train` (or
Lightning's ``Trainer``, for ``train``) accepts but that has no rule is passed through unchecked;
any other key is refused.
"""

from __future__ import annotations

import inspect

from .model._config_check import (
    INIT_PARAMS,
    OBJECTIVE,
    TRAINING,
    ConfigError,
    Rule,
    check_section,
    check_training,
)
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
    Rule("seed", int, 0, 2**63 - 1, required=False),
    Rule("enable_progress_bar", bool, required=False),
    Rule("plan_kwargs", dict, required=False, null=True),
    Rule("accelerator", str, required=False),
    Rule("devices", (int, str, list), required=False),
    Rule("strategy", str, required=False),
    Rule("precision", (str, int), required=False, null=True),
    Rule("num_nodes", int, 1, 100_000, required=False),
    Rule("checkpoint_dir", str, required=False, null=True),
    Rule("resume", bool, required=False),
)
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
)


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


__all__ = ["check_pretrain_config"]
