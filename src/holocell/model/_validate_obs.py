"""Setup checks on the MuData's structure and cell annotations: views, modalities out of sync, the batch column."""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from mudata import MuData
from scvi import REGISTRY_KEYS

from .._warnings import HoloCellWarning, user_stacklevel
from ._obs_copy import obs_copy_fix


def check_modality_keys(mdata: MuData, modalities: Mapping[str, str]) -> None:
    """Raise when one ``mdata.mod`` entry is given for two holocell modalities (e.g. a typo)."""
    seen: dict[str, str] = {}
    for m, name in modalities.items():
        if name in seen:
            unused = [k for k in mdata.mod if k not in modalities.values()]
            raise ValueError(
                f"`modalities` maps both {seen[name]!r} and {m!r} to mdata.mod[{name!r}]; each holocell modality "
                f"needs its own mdata.mod entry (the same counts as two modalities would let the model read "
                f"one from the other). Give {m!r} the key of its own data, e.g. modalities={{{seen[name]!r}: "
                f"{name!r}, {m!r}: <key>}} (mdata.mod keys not used: {unused}), or leave {m!r} out."
            )
        seen[name] = m


def check_not_view(mdata: MuData, name: str) -> None:
    """Raise when ``mdata`` or its modality ``name`` is a view (scvi-tools refuses views at registration)."""
    if mdata.is_view:
        raise ValueError(
            "mdata is a view of another MuData (a subset such as mdata[cells]); setup_mudata registers the "
            "MuData it is given and needs one of its own. Make a copy first: mdata = mdata.copy()."
        )
    if mdata.mod[name].is_view:
        raise ValueError(
            f"mdata.mod[{name!r}] is a view of another AnnData (e.g. mdata.mod[{name!r}] = adata[:, genes]); "
            f"setup_mudata needs the modality's own data. Make a copy: mdata.mod[{name!r}] = "
            f"mdata.mod[{name!r}].copy(); mdata.update()."
        )


def check_not_view_output(mdata, call: str, copy_ok: bool = False) -> None:
    """Raise when ``mdata`` is a view of another MuData and ``call`` would add modalities to it: mudata cannot add
    one to a view, so the run would be lost at its end (and the view left half written)."""
    if not getattr(mdata, "is_view", False):
        return
    copy = ", or pass copy=True (the results then go to the copy returned)" if copy_ok else ""
    raise ValueError(
        f"mdata is a view of another MuData (a subset such as mdata[mask]), and {call} adds new modalities to it, "
        f"which mudata cannot do to a view. Make the subset a MuData of its own first: mdata = mdata[mask].copy()"
        f"{copy}."
    )


def check_in_sync(mdata: MuData, name: str, then: str = "") -> None:
    """Raise when modality ``name`` was changed (subset, reordered, replaced) without ``mdata.update()``.

    Parameters
    ----------
    mdata
        The MuData.
    name
        Key of the modality in ``mdata.mod``.
    then
        Appended to the message (what to do after the update).
    """
    adata = mdata.mod[name]
    rows = np.asarray(mdata.obsmap[name]).astype(np.int64)
    present = rows > 0
    in_sync = (
        len(rows) == mdata.n_obs
        and int(present.sum()) == adata.n_obs
        and (rows.max(initial=0) <= adata.n_obs)
        and mdata.obs_names[present].equals(adata.obs_names[rows[present] - 1])
    )
    if not in_sync:
        raise ValueError(
            f"mdata.mod[{name!r}] changed after the MuData was last updated: its cells no longer match "
            f"mdata.obsmap. Call mdata.update() after changing a modality{then}."
        )


MANY_BATCHES = 20
"""More batches than this, and at least half as many as cells, is a cell-id column given as ``batch_key``."""


def check_batch_column(mdata: MuData, batch_key: str | None) -> None:
    """Raise for a ``batch_key`` that is not a global column, has missing values or mixes value types."""
    if batch_key is None:
        return
    if batch_key not in mdata.obs:
        hint = obs_copy_fix(mdata, batch_key, "batch_key")  # works in a mosaic too; never "run pull_obs()" again
        hint = f" {hint}." if hint else ""
        raise KeyError(
            f"batch_key {batch_key!r} is not a column of the global mdata.obs "
            f"(columns: {list(mdata.obs.columns)[:10]}).{hint}"
        )
    col = mdata.obs[batch_key]
    missing = pd.isna(col)
    if missing.any():
        raise ValueError(
            f"mdata.obs[{batch_key!r}] has {int(missing.sum())} missing values (NaN) in {len(col)} cells; every "
            f"cell needs a batch. Fill them, e.g. mdata.obs[{batch_key!r}] = "
            f"mdata.obs[{batch_key!r}].astype(object).fillna('unknown').astype(str) (a batch of its own), or "
            f"drop those cells: mdata = mdata[mdata.obs[{batch_key!r}].notna()].copy()."
        )
    if col.dtype == object or isinstance(col.dtype, pd.CategoricalDtype):
        distinct = (
            col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else pd.unique(col.to_numpy())
        )
        if len({_kind(v) for v in distinct}) > 1:
            found = Counter(type(v).__name__ for v in col.astype(object).to_numpy())
            types = ", ".join(f"{t} ({n} cells)" for t, n in found.most_common())
            raise ValueError(
                f"mdata.obs[{batch_key!r}] mixes value types ({types}), so its batches cannot be ordered "
                f"(e.g. after merging sample sheets). Make them all strings: mdata.obs[{batch_key!r}] = "
                f"mdata.obs[{batch_key!r}].astype(str) (then 1 and '1' are one batch)."
            )
    n_batches = col.nunique()
    if n_batches > MANY_BATCHES and n_batches >= 0.5 * len(col):
        warnings.warn(
            f"mdata.obs[{batch_key!r}] has {n_batches} different values for {len(col)} cells: most batches hold one "
            "or two cells, as a cell id or barcode column would. holocell learns an embedding per batch; pass the "
            "column of the samples / libraries / donors as batch_key.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )


def _kind(value) -> str:
    """Values of one kind can be sorted together: all numbers (bool included) are one kind, all strings another."""
    if isinstance(value, numbers.Real | np.bool_):
        return "number"
    return "str" if isinstance(value, str) else type(value).__name__


def absent_modalities(mdata: MuData, modalities: Mapping[str, str], expected: Collection[str] = ()) -> dict[str, str]:
    """The model's ``modalities`` that ``mdata`` has; the others are read as measured in no cell (a data set of
    RNA only for an RNA + protein model), with a :class:`HoloCellWarning` naming them, since a modality under
    another name (``"prot"`` for ``"adt"``) would read the same; not for the ``expected`` ones (modalities a query
    model kept from its reference). ``KeyError`` when ``mdata`` has none of them."""
    have = {m: name for m, name in modalities.items() if name in mdata.mod}
    if not have:
        example = (f", e.g. mdata.mod[{next(iter(modalities.values()))!r}] = mdata.mod.pop({next(iter(mdata.mod))!r}), "
                   "then mdata.update()" if len(mdata.mod) else "")  # fmt: skip
        raise KeyError(
            f"MuData has none of the model's modalities {dict(modalities)}; available: {list(mdata.mod)}. Name "
            f"them as the model was set up{example}."
        )
    if missing := {m: name for m, name in modalities.items() if name not in have.values() and m not in expected}:
        warnings.warn(
            f"mdata has no modality {list(missing.values())} (the model's {list(missing)}): every cell is read as "
            f"not measured in it, as a mosaic cell is. If it is there under another name (available: "
            f"{list(mdata.mod)}), rename it to {list(missing.values())} first.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    return have


def warn_unseen_batches(
    mdata: MuData, batch_key: str | None, categories: Sequence[str], codes: np.ndarray
) -> None:
    """:class:`HoloCellWarning` when cells of new data are in batches the model was not trained on.

    Their ``codes`` are the "unseen batch" code (``len(categories)``): the count decoders and the denoiser read
    that batch's embedding, so generated values differ from those of any training batch, and a misspelt batch
    (another case, a trailing space, category codes instead of names) would change the results without a word.
    The message names the batches, the training ones, spellings that meet a training batch, and the fixes.
    """
    unseen = codes == len(categories)
    if batch_key is None or not unseen.any():
        return
    names = list(dict.fromkeys(map(str, mdata.obs[batch_key].to_numpy()[unseen])))
    known = [str(c) for c in categories]
    folded = {c.strip().casefold(): c for c in known}
    near = {n: folded[n.strip().casefold()] for n in names if n.strip().casefold() in folded}
    hint = ""
    if near:
        pairs = dict(list(near.items())[:3])
        hint = (f" {list(pairs)} differ from the training batches {list(pairs.values())} only by case or spaces: "
                f"rename them, e.g. mdata.obs[{batch_key!r}] = mdata.obs[{batch_key!r}].astype(str).replace({pairs}).")
    elif all(n.isdigit() and int(n) < len(known) for n in names) and not any(c.isdigit() for c in known):
        hint = (f" They look like the training batches' category codes (0 to {len(known) - 1}), not their names: "
                f"put the names back, e.g. mdata.obs[{batch_key!r}] = pd.Categorical.from_codes("
                f"mdata.obs[{batch_key!r}].astype(int), categories=model.batch_categories_).")
    warnings.warn(
        f"{int(unseen.sum())} of {len(codes)} cells are in batches the model was not trained on (mdata.obs"
        f"[{batch_key!r}]: {names[:5]}); holocell decodes them with its 'unseen batch' embedding, so their generated "
        f"values are not those of any training batch (the embedding itself does not read the batch). Training "
        f"batches: {known[:8]}.{hint} To decode them as one training batch, pass transform_batch=<its name>; to "
        f"learn the new batches, map the data with HoloCell.load_query_data(mdata, model) and train.",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


def warn_replaced_batch_column(mdata: MuData) -> None:
    """:class:`HoloCellWarning` when ``mdata.obs`` holds a ``_scvi_batch`` column that no scvi-tools set-up of this
    MuData wrote (no ``mdata.uns["_scvi_uuid"]``): registration replaces it with the batch codes."""
    column = f"_scvi_{REGISTRY_KEYS.BATCH_KEY}"  # the column scvi-tools' MuDataCategoricalObsField writes
    if column in mdata.obs and "_scvi_uuid" not in mdata.uns:
        warnings.warn(
            f"mdata.obs[{column!r}] exists, but no scvi-tools or holocell set-up of this MuData wrote it; "
            f"setup_mudata replaces it with the batch codes it registers (scvi-tools keeps them in that column). If "
            f"the column is yours, rename it and set up again: mdata.obs = mdata.obs.rename(columns={{{column!r}: "
            f"'my_batch'}}).",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )


def check_batch_unchanged(manager, mdata: MuData) -> None:
    """Raise when ``mdata.obs[batch_key]`` was edited after ``setup_mudata``: the cells' batches no longer match
    the codes scvi-tools registered (its ``_scvi_batch`` column), so the model would train cells under batches
    nothing registered (read as the "unseen batch") without a word."""
    batch_key = manager.registry["setup_args"].get("batch_key")
    column = f"_scvi_{REGISTRY_KEYS.BATCH_KEY}"
    if batch_key is None or batch_key not in mdata.obs or column not in mdata.obs:
        return
    mapping = [str(c) for c in manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
    now = pd.Categorical(mdata.obs[batch_key].astype(str), categories=mapping).codes
    registered = np.asarray(mdata.obs[column])
    changed = now != registered
    if changed.any():
        unregistered = sorted(set(mdata.obs[batch_key].astype(str)[now < 0]))
        raise ValueError(
            f"mdata.obs[{batch_key!r}] changed after setup_mudata: {int(changed.sum())} of {mdata.n_obs} cells now "
            f"have another batch than the one registered (batches now not registered: {unregistered[:5]}; "
            f"registered: {mapping[:5]}). Run HoloCell.setup_mudata(mdata, ..., batch_key={batch_key!r}) again "
            "after editing the batch column, then create the model."
        )


def batches_with_cells(manager, mdata: MuData) -> list[str]:
    """The registered batch categories (of scvi-tools' ``manager``) that have cells in ``mdata``: a subset
    (``mdata[mask].copy()``) keeps pandas' unused categories, which would become batches nothing trains."""
    mapping = manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    batch_key = manager.registry["setup_args"].get("batch_key")
    present = set(mdata.obs[batch_key].astype(str)) if batch_key else None
    return [str(c) for c in mapping if present is None or str(c) in present]


__all__ = ["MANY_BATCHES", "absent_modalities", "batches_with_cells", "check_batch_column", "check_batch_unchanged", "check_in_sync", "check_modality_keys", "check_not_view", "check_not_view_output", "warn_replaced_batch_column", "warn_unseen_batches"]
