"""``hold_out``: hide one modality of some batches, for evaluating generation against the truth."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

__all__ = ["hold_out"]


def _batch_labels(mdata: md.MuData, adata: ad.AnnData, batch_key: str) -> pd.Series:
    if batch_key in adata.obs:
        return adata.obs[batch_key].astype(str)
    if batch_key in mdata.obs:
        return mdata.obs.loc[adata.obs_names, batch_key].astype(str)
    raise KeyError(f"No column {batch_key!r} in mdata.obs or in the modality's obs; pass batch_key=.")


def hold_out(
    mdata: md.MuData,
    *,
    modality: str,
    batches: str | Sequence[str],
    batch_key: str = "batch",
) -> tuple[md.MuData, ad.AnnData]:
    """Hide ``modality`` for the cells of ``batches``: the data to train on, and the part held out.

    The usual evaluation of cross-modal generation: train on a MuData in which some batches lack a
    modality, generate it for them, and compare with what was measured. The input is never changed.

    Parameters
    ----------
    mdata
        MuData with ``modality`` in ``mdata.mod``.
    modality
        Name of the modality to hide (a key of ``mdata.mod``, e.g. ``"adt"``).
    batches
        Batch name, or names, whose cells lose ``modality``.
    batch_key
        Column with the batch of each cell, in the modality's ``obs`` or in ``mdata.obs``.

    Returns
    -------
    train
        A new MuData: every modality copied, without ``modality``'s cells of ``batches`` (those cells
        keep their other modalities). The global ``obs`` columns, ``obsm`` entries and ``uns`` of
        ``mdata`` are carried over for the cells that remain.
    held_out
        A copy of ``mdata[modality]`` restricted to the hidden cells (their measured values).

    Raises
    ------
    KeyError
        ``modality`` or ``batch_key`` does not exist.
    ValueError
        A batch has no cells with ``modality``, or no cell of ``modality`` would remain.

    Examples
    --------
    >>> mdata = hc.data.pbmc_cite_mosaic()
    >>> train, truth = hc.data.hold_out(mdata, modality="adt", batches="p4_0")
    >>> train["adt"].n_obs + truth.n_obs == mdata["adt"].n_obs
    True
    """
    if modality not in mdata.mod:
        raise KeyError(f"No modality {modality!r} in mdata.mod; it has {list(mdata.mod)}.")
    if not isinstance(batches, str | Sequence | np.ndarray | pd.Index):
        raise TypeError(f"batches must be a batch name or a list of names, got {type(batches).__name__} {batches!r}.")
    wanted = [batches] if isinstance(batches, str) else [str(b) for b in batches]
    if not wanted:
        raise ValueError("batches is empty: name at least one batch to hold out.")
    labels = _batch_labels(mdata, mdata[modality], batch_key)
    missing = [b for b in wanted if not (labels == b).any()]
    if missing:
        raise ValueError(
            f"No {modality!r} cells in batch(es) {missing} of {batch_key!r}; batches with {modality!r}: "
            f"{sorted(set(labels))}."
        )
    hide = labels.isin(wanted).to_numpy()
    if hide.all():
        raise ValueError(f"Holding out {wanted} would remove every {modality!r} cell.")
    source = mdata[modality]
    held_out = source[hide].copy()
    mods = {name: (source[~hide].copy() if name == modality else mdata[name].copy()) for name in mdata.mod}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mudata 0.3: pull-on-update notice
        train = md.MuData(mods)
    prefixes = tuple(f"{name}:" for name in mdata.mod)
    rows = mdata.obs_names.get_indexer(train.obs_names)
    for column in mdata.obs.columns:
        if not str(column).startswith((*prefixes, "_scvi_")) and column not in train.obs:  # not the registration
            train.obs[column] = mdata.obs[column].to_numpy()[rows]
    for key, value in mdata.obsm.items():
        if key not in mdata.mod:
            train.obsm[key] = value.iloc[rows] if isinstance(value, pd.DataFrame) else np.asarray(value)[rows]
    train.uns.update(copy.deepcopy({k: v for k, v in mdata.uns.items() if not str(k).startswith("_scvi_")}))
    return train, held_out
