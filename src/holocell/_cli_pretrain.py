"""``holocell pretrain``: the config and the inputs checked before any data is read, each input checked as it is
opened, then merged (:func:`holocell.data._merge.merge_for_pretraining`), trained and saved.

Before any data is read: every key of the config (:mod:`holocell._cli_config`), the output path, that each input
exists, that every ``datasets`` entry names an input (a key that matches none, a typo, is refused naming the inputs
it could be) and that the data set names are unique. As each input is opened, before anything is merged or
trained: its modalities, the layers ``datasets.<file>.layers`` names, its ``batch_key`` and that the values read
are raw counts, each refused naming the input and the config key that fixes it.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._cli_files import UsageError

CONFIG_KEYS = {"model", "train", "datasets", "modalities", "batch_key", "species", "genome"}
#: Largest pretraining config read (it lists the inputs and settings: kilobytes).
MAX_CONFIG_BYTES = 16 << 20


def read_config(path: str) -> dict:
    """The pretraining config, checked key by key (types and ranges) before any data is read."""
    if not Path(path).exists():
        raise UsageError(f"config file {path} does not exist.")
    with open(path, "rb") as f:  # a pipe (<(...)) is fine; /dev/zero is read no further than the cap
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes; a pretraining config is small.")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise UsageError(f"config file {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise UsageError(
            f"config file {path} holds a JSON {type(config).__name__}; it must be an object with keys "
            f"{sorted(CONFIG_KEYS)} (see docs/pretrained.md)."
        )
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"config file {path} has unknown keys {unknown}; allowed: {sorted(CONFIG_KEYS)} (see docs/pretrained.md)."
        )
    from ._cli_config import check_pretrain_config
    from .model._config_check import ConfigError

    try:
        check_pretrain_config(config, path)
    except ConfigError as err:
        raise UsageError(" ".join(str(err).split())) from None
    return config


@dataclass
class Planned:
    """One input: its path, the ``datasets`` key that configures it (``None``: none does), that entry, its name."""

    path: str
    key: str | None
    spec: dict = field(default_factory=dict)
    name: str = ""

    @property
    def fix_key(self) -> str:
        """The config key of this input's entry (its file name when it has none yet)."""
        return f"datasets.{self.key or Path(self.path).name}"


def plan_inputs(config: dict, config_path: str, inputs: list[str]) -> list[Planned]:
    """Each input with its ``datasets`` entry, refusing entries that match no input and names used twice."""
    for path in inputs:
        if not Path(path).exists():
            raise UsageError(f"input file {path} does not exist; check the path.")
    datasets = config.get("datasets", {})
    planned, used = [], set()
    for path in inputs:
        keys = [k for k in (path, Path(path).name) if k in datasets]  # "~/a.h5mu" too: inputs are expanded
        keys = list(dict.fromkeys([*keys, *(k for k in datasets if os.path.expanduser(k) == path)]))
        if len(keys) > 1:
            raise UsageError(
                f"config file {config_path}: 'datasets' keys {keys} both name input {path}; keep one of them."
            )
        key = keys[0] if keys else None
        used.update(keys)
        spec = dict(datasets.get(key, {}))
        planned.append(Planned(path, key, spec, spec.get("name", Path(path).stem)))
    unmatched = [k for k in datasets if k not in used]
    if unmatched:
        candidates = list(dict.fromkeys([*inputs, *(Path(p).name for p in inputs)]))
        guesses = {k: difflib.get_close_matches(k, candidates, n=1, cutoff=0.5) for k in unmatched}
        could = ", ".join(f"{k!r} could be {g[0]!r}" for k, g in guesses.items() if g)
        raise UsageError(
            f"config file {config_path}: 'datasets' key(s) {unmatched} match no input file (inputs: {list(inputs)})"
            + (f"; {could}" if could else "")
            + ". Key each entry by an input's path as given or its file name; nothing was read."
        )
    by_name: dict[str, list[str]] = {}
    for item in planned:
        by_name.setdefault(item.name, []).append(item.path)
    for name, paths in by_name.items():
        if len(paths) > 1:
            raise UsageError(
                f"inputs {paths} would all be data set {name!r}; data set names must be unique. Pass each file once, "
                f"or give each a \"name\" under \"datasets\" in config file {config_path}, keyed by its path."
            )
    return planned


def open_input(item: Planned, config: dict):
    """Read ``item`` and check what only the file can tell, before anything is merged or trained."""
    from .cli import _guess_modalities, _read
    from .data._merge import MergeInput

    mdata = _read(item.path)
    spec, where, fix = item.spec, f"input {item.path}", item.fix_key
    modalities = _guess_modalities(mdata, spec.get("modalities", config.get("modalities")))
    for m, name in modalities.items():
        if name not in mdata.mod:
            raise UsageError(
                f"{where} has no modality {name!r} (to read as {m}); its modalities are {list(mdata.mod)}. "
                f"Fix '{fix}.modalities' (or the top-level 'modalities') in the config."
            )
    layers = spec.get("layers") or {}
    for m, layer in layers.items():
        if m not in modalities:
            raise UsageError(
                f"{where}: '{fix}.layers' names modality {m!r}, which is not among the modalities read from it "
                f"{dict(modalities)}; remove it, or add it under '{fix}.modalities' in the config."
            )
        have = list(mdata.mod[modalities[m]].layers)
        if layer is not None and layer not in have:
            raise UsageError(
                f"{where}: modality {modalities[m]!r} ({m}) has no layer {layer!r}; layers: {have}. "
                f"Fix '{fix}.layers.{m}' in the config (null reads .X)."
            )
    batch_key = spec.get("batch_key", config.get("batch_key"))
    if batch_key is not None:
        for name in modalities.values():
            if batch_key not in mdata.mod[name].obs and batch_key not in mdata.obs:
                columns = list(dict.fromkeys([*mdata.obs.columns, *mdata.mod[name].obs.columns]))
                raise UsageError(
                    f"{where}: batch_key {batch_key!r} is not an obs column of the file or of its modality {name!r} "
                    f"(columns: {columns[:12]}{' ...' if len(columns) > 12 else ''}). Fix '{fix}.batch_key' (or the "
                    "top-level 'batch_key') in the config; null makes the file one batch."
                )
            obs = mdata.mod[name].obs if batch_key in mdata.mod[name].obs else mdata.obs.loc[mdata.mod[name].obs_names]
            n_missing = int(obs[batch_key].isna().sum())
            if n_missing:
                raise UsageError(
                    f"{where}: batch_key {batch_key!r} is missing (NaN) for {n_missing} cells of modality {name!r}. "
                    f"Fill them in the file (e.g. obs[{batch_key!r}].fillna('unknown'), a batch of its own) or drop "
                    "those cells; holocell does not guess a cell's batch."
                )
    _check_counts(mdata, modalities, layers, item)
    return MergeInput(item.name, mdata, modalities, batch_key=batch_key, layers=spec.get("layers"),
                      species=spec.get("species", config.get("species", "human")))  # fmt: skip


def _check_counts(mdata, modalities: dict, layers: dict, item: Planned) -> None:
    """Raw counts in what is read of each modality: a normalised ``.X`` names the input and its config fix."""
    from ._warnings import HoloCellWarning
    from .model._counts import check_counts

    key = item.key or Path(item.path).name
    for m, name in modalities.items():
        adata, layer = mdata.mod[name], layers.get(m)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HoloCellWarning)  # ATAC half-counts: the merged data warn at set-up
                check_counts(adata.X if layer is None else adata.layers[layer], name, m)
        except (ValueError, TypeError) as err:
            have = list(adata.layers)
            example = json.dumps({"datasets": {key: {"layers": {m: have[0] if have else "counts"}}}})[1:-1]
            text = str(err).replace(
                f"({m}_layer='counts')", f"as datasets.{key}.layers.{m} in the config ({example})"
            )
            read = f"layer {layer!r}" if layer is not None else ".X"
            raise UsageError(
                " ".join(f"input {item.path} ({read} of modality {name!r}): {text.rstrip('.')}; "
                         f"layers of {name!r}: {have}.".split())  # fmt: skip
            ) from None


def run_pretrain(args) -> None:
    """``holocell pretrain``: check, read, merge, train, save."""
    from ._cli_files import save_model_out
    from .cli import _check_model_out
    from .data._merge import merge_for_pretraining, mixed_species
    from .model import HoloCell

    config = read_config(args.config)
    _check_model_out(
        args.out, args.overwrite, [*args.inputs, args.config], option="--out", command="pretrain", archives=True,
        checkpoint_dir=config.get("train", {}).get("checkpoint_dir"),
        checkpoint_option=f"train.checkpoint_dir of config file {args.config}",
    )  # fmt: skip
    inputs = []
    for item in plan_inputs(config, args.config, list(args.inputs)):
        inputs.append(open_input(item, config))
        print(f"{item.path}: {item.name}, modalities {dict(inputs[-1].modalities)}, batch_key {inputs[-1].batch_key}")
    merged = merge_for_pretraining(inputs, species=config.get("species", "human"))
    # several species: the RNA features are the shared human anchors, and each cell carries its species
    species = {"species": "human", "species_key": "species", "gene_id_type": "symbol"} if mixed_species(merged) else {
        "species": config.get("species", "human")}  # fmt: skip
    HoloCell.setup_mudata(
        merged, modalities={m: m for m in merged.mod}, batch_key="batch", genome=config.get("genome"), **species
    )
    model = HoloCell(merged, **config.get("model", {}))
    train = config.get("train", {})  # its switch, under either name, beats --no-progress's default
    default = {} if "progress_bar" in train else {"enable_progress_bar": False if args.no_progress else None}
    model.train(**{**default, **train})
    print(model)  # after training: its summary says what was trained, not "Not Trained"
    if save_model_out(model, args.out, args.overwrite, archives=True):  # global rank 0 only (train.devices > 1)
        print(
            f"Saved pretrained model ({merged.n_obs} cells, {model.feature_space.n_anchors} anchors) to {args.out}"
        )


__all__ = ["CONFIG_KEYS", "open_input", "plan_inputs", "read_config", "run_pretrain"]
