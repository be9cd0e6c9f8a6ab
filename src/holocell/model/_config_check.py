"""Validation of an untrusted checkpoint ``config.json`` before anything is built from it.

A checkpoint may come from anywhere, so its config is checked in full before a module, a MuData
or a tensor is made from it: JSON types, every required key, ranges (sizes positive and bounded),
cross-field agreement (heads divide ``d_model``, feature lists as long as their anchor lists,
anchors in range) and agreement with the tensor shapes in the safetensors header (read from the
header only, :mod:`._config_header`; no weights are loaded). Each problem is a ``ValueError``
naming the key.

**Adding a field** is one line in the table of its section (:data:`SECTIONS`): a :class:`Rule`
with the key, its JSON type, its range or choices and whether it is required. The ``objective`` and
``training`` tables have one line per field of :class:`~holocell.nn.ObjectiveConfig` and
:class:`~holocell.train.TrainingConfig` (a test keeps them in step). **Unknown keys are refused** in
every section and at the top level: a config holocell does not fully understand is not used (a newer
holocell writes a newer ``format_version``, refused with "upgrade holocell").

Layouts: configs written since issue 17 hold ``objective`` and ``training`` and no ``network``;
older ones hold ``network`` (validated, and checked against the rest, but not used) and no typed
sections (their settings load as the defaults). Both are accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..nn._align import ALIGN_MODES
from ..nn._mixing import ADVERSARY_MODES
from ..priors import PRIOR_INPUT_DIMS
from ..train import TrainingConfig
from ..vocab import MODALITIES, N_BUCKETS, SPECIES

#: Largest accepted ``d_model`` (and other per-token widths).
MAX_D_MODEL = 65_536
#: Largest accepted number of anchors / features of one modality / batches.
MAX_ANCHORS = 4_000_000
MAX_BATCHES = 1_000_000
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Rule:
    """One key of a config section.

    Attributes
    ----------
    key
        The key.
    kind
        JSON type: ``int`` (not bool), ``float`` (any finite number), ``str``, ``bool``,
        ``dict`` (object), ``list`` (array), or a tuple of them.
    low, high
        Inclusive range of a number.
    required
        Whether the key must be present.
    null
        Whether ``null`` is accepted.
    choices
        The accepted values (strings).
    bounds
        Whether ``low`` / ``high`` belong to the range: ``"[]"`` (both, the default), ``"(]"``,
        ``"[)"`` or ``"()"``.
    """

    key: str
    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None
    required: bool = True
    null: bool = False
    choices: tuple = ()
    bounds: str = "[]"


TOP_LEVEL = (
    Rule("format", str),
    Rule("format_version", int, low=1),
    Rule("holocell_version", str, required=False),
    Rule("model_name", str),
    Rule("setup_args", dict),
    Rule("init_params", dict),
    Rule("network", dict, required=False),  # written before issue 17
    Rule("objective", dict, required=False),  # written since issue 17 (absent: the defaults)
    Rule("training", dict, required=False),
    Rule("batch_categories", list),
    Rule("feature_space", dict),
    Rule("is_trained", bool, required=False),
    Rule("weights_sha256", str, required=False),  # required from format 2 on (checked below)
    Rule("history", dict, required=False),  # history_, from format 5 on
    Rule("transfer", dict, required=False),  # a transferred model's rows, freeze and report, from format 6 on
)
SETUP_ARGS = (
    Rule("modalities", dict),
    Rule("rna_layer", str, required=False, null=True),
    Rule("atac_layer", str, required=False, null=True),
    Rule("protein_layer", str, required=False, null=True),
    Rule("batch_key", str, required=False, null=True),
    Rule("species", str, required=False, choices=tuple(SPECIES)),
    Rule("genome", str, required=False, null=True),
    Rule("gene_id_type", str, required=False, choices=("auto", "symbol", "ensembl")),
    Rule("species_key", str, required=False, null=True),
    Rule("allow_unmatched_genes", bool, required=False),
)
INIT_PARAMS = (
    Rule("d_model", int, 1, MAX_D_MODEL),
    Rule("n_layers", int, 0, 1024),
    Rule("n_heads", int, 1, MAX_D_MODEL),
    Rule("n_latents", int, 1, 65_536),
    Rule("n_bins", int, 2, 65_536),
    Rule("dropout", float, 0, 1, required=False, bounds="[)"),
    Rule("p_drop_modality", float, 0, 1, required=False),
    Rule("align_weight", float, 0, 1e6, required=False),
    Rule("read_in_tokens", str, required=False, choices=("all", "values")),
    Rule("n_latent", int, 1, MAX_D_MODEL, required=False),
    Rule("cell_state_kwargs", dict, required=False, null=True),
    Rule("seed", int, 0, 2**63 - 1, required=False),
    Rule("priors", (str, list), required=False, null=True),
)
NETWORK = (
    Rule("n_anchors", int, 1, MAX_ANCHORS),
    Rule("n_bins", int, 2, 65_536),
    Rule("n_batches", int, 0, MAX_BATCHES),
    Rule("n_species", int, 1, 64),
    Rule("n_buckets", int, 1, 65_536),
    Rule("d_model", int, 1, MAX_D_MODEL),
    Rule("n_layers", int, 0, 1024),
    Rule("n_heads", int, 1, MAX_D_MODEL),
    Rule("n_latents", int, 1, 65_536),
    Rule("mlp_ratio", int, 1, 64),
    Rule("dropout", float, 0, 1, bounds="[)"),
    Rule("read_in_tokens", str, required=False, choices=("all", "values")),
    *(CELL_STATE := (
        Rule("cell_state", bool, required=False),
        Rule("n_hidden", int, 1, MAX_D_MODEL, required=False),
        *(Rule(name, bool, required=False) for name in (
            "peak_factors", "peak_embeddings", "value_path", "latents_in_posterior", "tie_peaks_to_genes",
            "tie_peak_decoder_to_genes", "z_in_denoiser", "z_grad_from_denoiser", "batch_after_norm",
            "batch_in_encoder", "library_in_encoder")),
    )),
    Rule("n_latent", int, 1, MAX_D_MODEL, required=False),
)
#: One line per field of :class:`holocell.nn.ObjectiveConfig` (its checks, as ranges).
OBJECTIVE = (
    Rule("p_drop_modality", float, 0, 1, required=False),
    Rule("p_whole", float, 0, 1, required=False),
    Rule("p_hide_library", float, 0, 1, required=False),
    Rule("eps", float, 0, 1, required=False, bounds="()"),
    Rule("regression_weight", float, 0, 1e6, required=False),
    Rule("align_weight", float, 0, 1e6, required=False),
    Rule("align_temperature", float, 0, 1e6, required=False, bounds="(]"),
    Rule("align_contrast_weight", float, 0, 1e6, required=False),
    Rule("align_mode", str, required=False, choices=ALIGN_MODES),
    Rule("diffusion_weight", float, 0, 1e6, required=False),
    Rule("elbo_weight", float, 0, 1e6, required=False),
    Rule("kl_weight", float, 0, 1e6, required=False),
    Rule("kl_warmup", float, 0, 1, required=False),
    Rule("elbo_input", str, required=False, choices=("noised", "clean")),
    Rule("batch_mmd_weight", float, 0, 1e6, required=False),
    Rule("batch_adversary_weight", float, 0, 1e6, required=False),
    Rule("batch_adversary_mode", str, required=False, choices=ADVERSARY_MODES),
    Rule("gene_activity_weight", float, 0, 1e6, required=False),
)
#: One line per field of :class:`holocell.train.TrainingConfig` (``betas``: two numbers in [0, 1)).
TRAINING = (
    Rule("lr", float, 0, 1e3, required=False, bounds="(]"),
    Rule("weight_decay", float, 0, 1e3, required=False),
    Rule("betas", list, required=False),
    Rule("warmup_steps", int, 1, 10**9, required=False),
    Rule("lr_floor", float, 0, 1, required=False),
    Rule("gradient_clip_val", float, 0, 1e9, required=False, null=True, bounds="(]"),
    Rule("validation_seed", int, 0, 2**63 - 1, required=False),
    Rule("target_steps", int, 1, 10**9, required=False),
    Rule("min_epochs", int, 1, 10**7, required=False),
    Rule("max_epochs", int, 1, 10**7, required=False),
)
FEATURE_SPACE = (Rule("anchors", list), Rule("maps", dict))
MODALITY_MAP = (Rule("features", list), Rule("anchor", list), Rule("bucket", list, required=False))
#: Section name -> its rules (the top level is :data:`TOP_LEVEL`).
SECTIONS: dict[str, tuple[Rule, ...]] = {
    "setup_args": SETUP_ARGS,
    "init_params": INIT_PARAMS,
    "network": NETWORK,
    "objective": OBJECTIVE,
    "training": TRAINING,
    "feature_space": FEATURE_SPACE,
}


class ConfigError(ValueError):
    """A checkpoint config that holocell refuses to use; the message names the key."""


_CHECKPOINT_HINT = "The checkpoint is corrupted, edited or not written by this holocell; save the model again or fetch a fresh copy."


def _fail(where: str, key: str, problem: str, hint: str = _CHECKPOINT_HINT) -> ConfigError:
    return ConfigError(f"{where}: key {key!r} {problem}. {hint}")


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if k is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if k not in (int, float) and isinstance(value, k):
            return True
    return False


_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
               list: "an array"}  # fmt: skip


def check_section(
    section: Mapping,
    rules: Sequence[Rule],
    where: str,
    prefix: str = "",
    *,
    partial: bool = False,
    hint: str = _CHECKPOINT_HINT,
) -> None:
    """Check ``section`` against ``rules``: unknown keys, missing keys, JSON types, ranges, choices.

    Parameters
    ----------
    section
        The JSON object.
    rules
        Its rules.
    where
        What is checked (file name), for the message.
    prefix
        Dotted path of the section (``"init_params."``), for the message.
    partial
        Accept missing required keys (e.g. a user's partial ``model`` settings).
    hint
        The fix, appended to every message (default: save or fetch the checkpoint again).
    """
    known = {r.key for r in rules}
    unknown = sorted(str(k) for k in section if k not in known)
    if unknown:
        raise _fail(
            where, prefix + unknown[0], f"is not a key holocell knows here (allowed: {sorted(known)})", hint
        )
    for rule in rules:
        key = prefix + rule.key
        if rule.key not in section:
            if rule.required and not partial:
                raise _fail(where, key, "is missing", hint)
            continue
        value = section[rule.key]
        if value is None:
            if not rule.null:
                raise _fail(where, key, "is null", hint)
            continue
        if not _type_ok(value, rule.kind):
            kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
            want = " or ".join(_JSON_NAMES[k] for k in kinds)
            raise _fail(where, key, f"must be {want}, got {type(value).__name__} {_short(value)}", hint)
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(where, key, f"must be a finite number, got {value}", hint)
        if not _in_range(value, rule):
            span = f"{rule.bounds[0]}{rule.low}, {rule.high}{rule.bounds[1]}"
            raise _fail(where, key, f"must lie in {span}, got {_short(value)}", hint)
        if rule.choices and value not in rule.choices:
            raise _fail(where, key, f"must be one of {list(rule.choices)}, got {_short(value)}", hint)


def _in_range(value, rule: Rule) -> bool:
    low_ok = rule.low is None or (value > rule.low if rule.bounds[0] == "(" else value >= rule.low)
    high_ok = rule.high is None or (value < rule.high if rule.bounds[1] == ")" else value <= rule.high)
    return low_ok and high_ok


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_list(
    values: list, where: str, key: str, kind: type, high: int | None = None, unique=False
) -> None:
    if len(values) > MAX_ANCHORS:
        raise _fail(
            where, key, f"has {len(values):,} entries, more than the {MAX_ANCHORS:,} holocell accepts"
        )
    for i, v in enumerate(values):
        if not _type_ok(v, kind):
            raise _fail(where, f"{key}[{i}]", f"must be {_JSON_NAMES[kind]}, got {_short(v)}")
        if high is not None and not 0 <= v < high:
            raise _fail(where, f"{key}[{i}]", f"must lie in [0, {high}), got {v}")
    if unique and len(set(values)) != len(values):
        raise _fail(where, key, "has duplicated entries")


def validate_config(config, where: str) -> dict:
    """Check a parsed checkpoint config in full (JSON only; see :func:`check_header` for the weights).

    Parameters
    ----------
    config
        The parsed JSON (any type: a list or a string is refused too).
    where
        The file, for the messages.

    Returns
    -------
    ``config``, unchanged.

    Raises
    ------
    ConfigError
        A ``ValueError`` naming the first offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f"{where} is not a holocell checkpoint config: it holds a JSON {type(config).__name__}, not an "
            "object. Save the model again or fetch a fresh copy."
        )
    check_section(config, TOP_LEVEL, where)
    for name, rules in SECTIONS.items():
        if name in config:
            check_section(config[name], rules, where, f"{name}.")
    if config["format_version"] >= 2 and "weights_sha256" not in config:
        version = config["format_version"]
        raise _fail(where, "weights_sha256", f"is missing (required from format 2 on, this is format {version})")
    if "weights_sha256" in config and not _HEX64.fullmatch(config["weights_sha256"]):
        raise _fail(where, "weights_sha256", "must be 64 lowercase hex characters")
    init, setup = config["init_params"], config["setup_args"]
    if init.get("cell_state_kwargs") is not None:
        check_section(init["cell_state_kwargs"], CELL_STATE, where, "init_params.cell_state_kwargs.")
    if init["d_model"] % init["n_heads"]:
        raise _fail(
            where, "init_params.n_heads", f"must divide d_model={init['d_model']}, got {init['n_heads']}"
        )
    priors = init.get("priors")
    known = list(PRIOR_INPUT_DIMS)
    names = ([] if priors == "all" else [priors]) if isinstance(priors, str) else list(priors or [])
    bad = [p for p in names if not isinstance(p, str) or p not in known]
    if bad:
        raise _fail(
            where, "init_params.priors", f"names unknown priors {_short(bad)} (known: 'all' or {known})"
        )
    modalities = setup["modalities"]
    if not modalities or any(m not in MODALITIES or not isinstance(v, str) for m, v in modalities.items()):
        problem = f"must map some of {list(MODALITIES)} to modality names, got {_short(modalities)}"
        raise _fail(where, "setup_args.modalities", problem)
    _check_list(config["batch_categories"], where, "batch_categories", str, unique=True)
    if len(config["batch_categories"]) > MAX_BATCHES:
        raise _fail(where, "batch_categories", f"has more than {MAX_BATCHES:,} batches")
    if "transfer" in config:  # first: it names the modalities a query model kept from its reference
        from ._transfer_record import check_transfer  # imported here: it builds on this module's helpers
        check_transfer(config["transfer"], where)
    kept = config.get("transfer", {}).get("reference_modalities", {})
    _check_feature_space(config["feature_space"], modalities | kept, where, config.get("network", {}))
    if "network" in config:
        _check_network(config, where)
    if "training" in config:
        check_training(config["training"], where)
    if "history" in config:
        _check_history(config["history"], where)
    return config


def _check_history(history: dict, where: str) -> None:
    """``epoch`` and each metric's name -> lists of one length: epochs, then numbers or ``null``."""
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or any(not isinstance(v, list) or len(v) != len(epochs) for v in history.values()):
        raise _fail(where, "history", "must map 'epoch' and each metric's name to lists of one length")
    _check_list(epochs, where, "history.epoch", int, unique=True)
    for name, values in history.items():
        _check_list([v for v in values if v is not None], where, f"history.{name}", float)


def check_training(
    training: Mapping, where: str, key: str = "training", hint: str = _CHECKPOINT_HINT
) -> None:
    """What the :data:`TRAINING` table cannot say: ``betas`` are two numbers in [0, 1), and
    ``min_epochs <= max_epochs`` (with the defaults of :class:`~holocell.train.TrainingConfig`
    for a missing one). ``training`` passed :func:`check_section` already; ``key`` names it."""
    betas = training.get("betas", [0.0, 0.0])
    if len(betas) != 2 or not all(_type_ok(b, float) and math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise _fail(where, f"{key}.betas", f"must be two numbers in [0, 1), got {_short(betas)}", hint)
    low = training.get("min_epochs", TrainingConfig.min_epochs)
    high = training.get("max_epochs", TrainingConfig.max_epochs)
    if low > high:
        raise _fail(where, f"{key}.min_epochs", f"is {low}, more than {key}.max_epochs {high}", hint)


def _check_feature_space(space: dict, modalities: dict, where: str, network: dict) -> None:
    anchors = space["anchors"]
    _check_list(anchors, where, "feature_space.anchors", str, unique=True)
    if not anchors:
        raise _fail(where, "feature_space.anchors", "is empty")
    maps = space["maps"]
    if set(maps) != set(modalities):
        problem = f"has modalities {sorted(maps)}, setup_args.modalities {sorted(modalities)}"
        raise _fail(where, "feature_space.maps", problem)
    n_buckets = network.get("n_buckets", N_BUCKETS)
    for m, fmap in maps.items():
        key = f"feature_space.maps.{m}"
        if not isinstance(fmap, dict):
            raise _fail(where, key, "must be an object")
        check_section(fmap, MODALITY_MAP, where, key + ".")
        n = len(fmap["features"])
        _check_list(fmap["features"], where, key + ".features", str, unique=True)
        if n == 0:
            raise _fail(where, key + ".features", "is empty")
        if len(fmap["anchor"]) != n:
            raise _fail(where, key + ".anchor", f"has {len(fmap['anchor'])} entries for {n} features")
        _check_list(fmap["anchor"], where, key + ".anchor", int, high=len(anchors))
        if m == "atac" and "bucket" not in fmap:
            raise _fail(where, key + ".bucket", "is missing (ATAC peaks need their distance buckets)")
        if "bucket" in fmap:
            if len(fmap["bucket"]) != n:
                raise _fail(where, key + ".bucket", f"has {len(fmap['bucket'])} entries for {n} features")
            _check_list(fmap["bucket"], where, key + ".bucket", int, high=n_buckets)


def _check_network(config: dict, where: str) -> None:
    net, init = config["network"], config["init_params"]
    for key in ("d_model", "n_layers", "n_heads", "n_latents", "n_bins", "dropout", "read_in_tokens"):
        if key in net and key in init and net[key] != init[key]:
            raise _fail(
                where, f"network.{key}", f"is {_short(net[key])}, init_params.{key} {_short(init[key])}"
            )
    expected = {
        "n_anchors": len(config["feature_space"]["anchors"]),
        "n_batches": len(config["batch_categories"]),
    }
    for key, value in expected.items():
        if net[key] != value:
            raise _fail(where, f"network.{key}", f"is {net[key]}, but the config lists {value}")


__all__ = [
    "CELL_STATE", "OBJECTIVE", "TRAINING", "ConfigError", "Rule", "SECTIONS", "check_section", "check_training",
    "validate_config",
]  # fmt: skip
