"""Writing holocell's outputs into the user's MuData: the generated (and perturbation-shift) modalities, their
feature names and ``.var``, and the checks that keep them off data holocell did not write."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData

from ..data.arrays import update_axes


def is_presence_mask(value) -> bool:
    """Whether an ``mdata.obsm`` entry is mudata's mask of a modality's cells (kept after the modality is removed)."""
    return getattr(getattr(value, "dtype", None), "kind", "") == "b" and np.shape(value)[1:] in ((), (1,))


def check_obsm_free(mdata: MuData, names: Sequence[str]) -> None:
    """Refuse new modality ``names`` that are ``mdata.obsm`` keys of other data (e.g. ``"X_umap"``): mudata
    writes each modality's mask of cells to ``mdata.obsm[<modality name>]``, which would replace them."""
    taken = [k for k in names if k not in mdata.mod and k in mdata.obsm and not is_presence_mask(mdata.obsm[k])]
    if taken:
        raise ValueError(
            f"The new modality name(s) {taken} are keys of mdata.obsm holding other data (e.g. an embedding): mudata "
            "stores each modality's mask of cells in mdata.obsm[<modality name>], which would replace them, and "
            "holocell never replaces data it did not write. Pass another key_added=."
        )


def check_generated_key(mdata: MuData, key: str, overwrite: bool, registered: set[str]) -> None:
    """Refuse to write the generated modality over data holocell did not generate."""
    check_obsm_free(mdata, [key])
    if key not in mdata.mod:
        return
    if key in registered:
        raise ValueError(
            f"key_added={key!r} is a modality the model reads (the measured data); generate never replaces it, "
            "even with overwrite=True. Pass another key_added."
        )
    if not overwrite:
        raise ValueError(f"mdata.mod already has {key!r}; pass overwrite=True or another key_added.")
    record = mdata.mod[key].uns.get("holocell")
    if not (isinstance(record, dict) and "params" in record and "X" in record):
        raise ValueError(
            f"mdata.mod[{key!r}] was not written by holocell's generate, so overwrite=True does not replace it; "
            "pass another key_added."
        )


def one_feature_message(model, target: str) -> str:
    """Warning text of :meth:`InferenceMixin.generate` for an RNA or protein target with a single feature."""
    name = model.modalities_[target]
    how = "log1p(1e4) = 9.21 for one gene" if target == "rna" else "0, the CLR of one antibody"
    return (
        f"{target} (mdata.mod[{name!r}]) has 1 feature, so the generated X is the same for every cell ({how}) and "
        f"so are layers['bins']: the output carries no information about the cells. Generate a modality with two or "
        f"more features (set the model up with them)."
    )


def generated_var(mdata: MuData, name: str, measured: pd.Index, suffix: str) -> pd.DataFrame:
    """``.var`` of a generated modality: its feature names (``measured`` + ``suffix``), ``measured_name``, and the
    columns of the measured modality ``name``'s own ``.var`` (gene ids, feature types, peak coordinates), when
    it holds every generated feature once (a model transferred onto other data may not)."""
    var = pd.DataFrame({"measured_name": measured.to_numpy()}, index=measured + suffix)
    own = mdata.mod[name].var if name in mdata.mod else None
    if own is None or not own.index.is_unique or not measured.isin(own.index.astype(str)).all():
        return var
    columns = own.drop(columns=["measured_name"], errors="ignore")
    columns = columns.set_axis(own.index.astype(str)).loc[measured].set_axis(var.index)
    return pd.concat([var, columns], axis=1)


def repeated_names_message(mdata: MuData, key: str, names: pd.Index, suffix: str) -> str | None:
    """Warning text of :meth:`InferenceMixin.generate` when the new modality ``key``'s feature ``names`` repeat
    those of other modalities of ``mdata`` (``None`` when they do not)."""
    others = [k for k, adata in mdata.mod.items() if k != key and names.isin(adata.var_names).any()]
    return None if not others else (
        f"The feature names of mdata.mod[{key!r}] (measured names + var_suffix={suffix!r}) repeat those of "
        f"mdata.mod{others} (e.g. an earlier generate of the same target under another key_added), so "
        "mdata.var_names are not unique: mdata[:, features] fails and plots by feature name cannot tell them apart. "
        f'Pass var_suffix=f"_{{key_added}}" (here {"_" + key!r}) to give each output its own names.'
    )


def add_output_modalities(mdata: MuData, modalities: Mapping[str, ad.AnnData]) -> None:
    """Add holocell's output ``modalities`` (name -> AnnData) to ``mdata``, replacing holocell's own earlier ones
    of those names (removed first: mudata cannot update features renamed and filtered at once), and make mudata
    record their cells and features (:func:`forget_axes`: also when the user removed a modality of that name)."""
    with warnings.catch_warnings():  # var_names shared with the measured data (var_suffix=None) are allowed
        warnings.filterwarnings("ignore", message="Cannot join columns with the same name")
        for key in [key for key in modalities if key in mdata.mod]:
            del mdata.mod[key]
            update_axes(mdata)
        for key, adata in modalities.items():
            forget_axes(mdata, key)
            mdata.mod[key] = adata
        update_axes(mdata)


def forget_axes(mdata: MuData, key: str) -> None:
    """Drop mudata's record of the cell and feature names of a removed modality ``key``.

    ``MuData.update`` rebuilds the axes only when a modality's names differ from the ones it recorded (a hash
    per modality name, kept after the modality is removed). A modality added again under the same name with the
    same cells was taken as unchanged, so it got no entry in ``obsmap`` / ``varmap`` (nor its features in
    ``mdata.var``), and ``mdata[cells]`` raised ``KeyError``; forgetting the record makes it a new modality.
    """
    for record in ("_obshash", "_varhash"):
        hashes = getattr(mdata, record, None)
        if isinstance(hashes, dict):
            hashes.pop(key, None)


__all__ = ["add_output_modalities", "check_generated_key", "check_obsm_free", "forget_axes", "generated_var", "is_presence_mask", "one_feature_message", "repeated_names_message"]
