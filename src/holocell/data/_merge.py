"""Several MuData -> one mosaic MuData for pretraining (``holocell pretrain``).

Anchors are built per MuData, so a model trained over several data sets needs them in one
object. Each input's modalities are renamed to holocell's (``rna``, ``atac``, ``protein``), cells
are prefixed with the data set name, batches become ``<name>:<batch>``, and a modality an input
lacks is simply absent for its cells (masked, as in any mosaic). Features are joined by name;
data sets of different species are first put on the shared human anchors (each RNA feature renamed to its anchor,
:func:`holocell.vocab.rename_to_anchors`), so a mouse gene and its one-to-one human ortholog become one feature, and
each cell's species is recorded in ``obs["species"]`` (set up with ``species_key="species"``);
a feature one input does not measure is **masked** in that input's cells, never read as a zero:
the merged modality carries a presence table, ``varm["holocell_measured"]`` (features x data sets,
bool) with ``uns["holocell_measured_by"] = "source"`` (the ``obs`` column naming each cell's data
set), which holocell's setup reads and turns into masked slots (``holocell.data._mosaic``). The
count matrix holds zeros there only as storage. The inputs are only read.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._warnings import HoloCellWarning, user_stacklevel
from ..vocab import MODALITIES, map_proteins_to_genes, rename_to_anchors
from ..vocab._genes import other_species_case
from ._modality_names import recognised_modalities
from ._mosaic import MEASURED_BY_KEY, MEASURED_KEY

BATCH_KEY = "batch"
SOURCE_KEY = "source"
SPECIES_KEY = "species"
_RNA_COORDS = {"chrom": "none", "tss": -1e9, "strand": "+"}  # for genes without coordinates


@dataclass
class MergeInput:
    """One data set to merge.

    Attributes
    ----------
    name
        Short name; prefixes cell names and batches.
    mdata
        The data set.
    modalities
        holocell modality -> key of ``mdata.mod``.
    batch_key
        Column of ``mdata.obs`` with batches (None: the whole data set is one batch).
    layers
        holocell modality -> layer with raw counts (missing: ``.X``).
    species
        ``"human"`` or ``"mouse"``: the species of its cells and feature names (``None``: the merge's
        ``species``).
    """

    name: str
    mdata: md.MuData
    modalities: Mapping[str, str]
    batch_key: str | None = None
    layers: Mapping[str, str] | None = None
    species: str | None = None


def merge_for_pretraining(inputs: Sequence[MergeInput], species: str = "human") -> md.MuData:
    """One mosaic MuData with modalities ``rna`` / ``atac`` / ``protein`` and ``obs["batch"]``, ``obs["source"]``.

    Set it up with ``modalities={m: m for m in merged.mod}`` and ``batch_key="batch"``. When the inputs are of more
    than one species (``MergeInput.species``, default ``species``), the RNA features are the shared human anchors and
    ``obs["species"]`` holds each cell's species: set it up with ``species="human"``, ``species_key="species"`` and
    ``gene_id_type="symbol"`` (:func:`mixed_species`). Their ATAC must then come from human inputs only: peaks are
    linked to genes of one genome, on the human anchors.
    """
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"Data set names must be unique, got {names}.")
    if bad := [n for n in names if "/" in str(n) or str(n).strip() in (".", "..")]:
        raise ValueError(
            f"Data set names {bad} cannot be stored: each names a column of the merged modalities' "
            "varm['holocell_measured'] table, and .h5mu / .zarr files refuse '/' and the names '.' and '..' there "
            "(mdata.write() would fail after the merge). Name each data set without them, e.g. "
            f"{[str(n).replace('/', '_').strip('.') or 'dataset' for n in bad]}."
        )
    of = {i.name: i.species or species for i in inputs}
    mixed = len(set(of.values())) > 1
    if mixed:
        for i in inputs:
            if "atac" in i.modalities and of[i.name] != "human":
                raise ValueError(
                    f"data set {i.name!r} ({of[i.name]}) brings ATAC to a pretraining of several species: peaks are "
                    "linked to genes of one genome, on the shared human anchors, so only human inputs may bring ATAC. "
                    f"Leave its ATAC out (its 'modalities') or pretrain {of[i.name]} data on their own."
                )
    parts: dict[str, list[ad.AnnData]] = {m: [] for m in MODALITIES}
    for item in inputs:
        for m, key in item.modalities.items():
            if m not in MODALITIES:
                raise ValueError(f"{item.name}: unknown modality {m!r}; use keys from {list(MODALITIES)}.")
            if key not in item.mdata.mod:
                raise KeyError(f"{item.name}: no modality {key!r} in mdata.mod ({list(item.mdata.mod)}).")
            part = _part(item, m, item.mdata.mod[key])
            if mixed and m == "rna":  # the report's columns would clash between inputs: only the names change
                part = rename_to_anchors(part, species=of[item.name])
                part.var = part.var.drop(columns=["original_name", "how"])
            elif m == "rna":
                _warn_species_case(item.name, part.var_names, of[item.name])
            parts[m].append(part)
    joined = {m: _join(m, p) for m, p in parts.items() if p}
    with warnings.catch_warnings():  # mudata 0.3 warns about its future `pull_on_update` default
        warnings.simplefilter("ignore", FutureWarning)
        merged = md.MuData(joined)
    obs = pd.concat([a.obs for a in joined.values()])
    merged.obs = obs[~obs.index.duplicated()].loc[merged.obs_names]
    if mixed:
        merged.obs[SPECIES_KEY] = merged.obs[SOURCE_KEY].astype(str).map(of).to_numpy()
    return merged


def merge_datasets(
    datasets: Mapping[str, md.MuData | ad.AnnData],
    *,
    modalities: Mapping[str, str] | None = None,
    batch_key: str | None = None,
    layers: Mapping[str, str] | None = None,
    species: str | Mapping[str, str] = "human",
    obs_columns: Sequence[str] = (),
) -> md.MuData:
    """Concatenate data sets, of one species or of human and mouse, into one mosaic MuData: a feature a data set did
    not measure is **masked** in its cells, never read as a zero count.

    ``ad.concat(..., join="outer", fill_value=0)`` writes zeros where a data set lacks a gene, and holocell reads
    them as measured zeros. This writes the same matrix plus a presence table (``varm["holocell_measured"]``, features
    x data sets, with ``uns["holocell_measured_by"] = "source"``), which setup turns into masked slots. Mouse data are
    put on the shared human anchors first (:func:`holocell.vocab.rename_to_anchors`), so a mouse gene and its
    one-to-one human ortholog become one feature. The inputs are only read.

    Parameters
    ----------
    datasets
        Data set name -> MuData (or AnnData, read as RNA). The name prefixes cell names (``"<name>:<cell>"``) and
        batches.
    modalities
        holocell modality -> key of each data set's ``mod``. A data set without one of them has no cell in that
        modality (a mosaic). Default: per data set, the keys named ``"rna"``, ``"atac"``, ``"protein"`` or a
        common alias, as on the command line (``gex`` / ``expression`` / ``genes`` for RNA, ``peaks`` /
        ``chromatin`` for ATAC, ``adt`` / ``prot`` / ``cite`` for protein; any case).
    batch_key
        Column of each data set's ``obs`` with its batches (default: each data set is one batch).
    layers
        holocell modality -> layer holding raw counts (default ``.X``).
    species
        ``"human"`` or ``"mouse"``, for all data sets or per data set name (the species of the cells and of the
        feature names). ATAC may come from human data sets only when the species differ.
    obs_columns
        Columns of the data sets' global ``obs`` (e.g. ``"celltype"``) copied to the result's ``obs``; the cells of a
        data set without the column get missing values (e.g. the cells to label beside a labelled reference).

    Returns
    -------
    The merged MuData: modalities ``rna`` / ``atac`` / ``protein``, ``obs["batch"]`` (``"<name>:<batch>"``),
    ``obs["source"]`` (the data set) and, for several species, ``obs["species"]``. Set it up with
    ``modalities={m: m for m in merged.mod}``, ``batch_key="batch"`` and, for several species,
    ``species="human"``, ``species_key="species"``, ``gene_id_type="symbol"``.

    Raises
    ------
    KeyError
        A data set has none of the modalities to merge, or no data set has one named in ``modalities``; a
        ``species`` mapping misses a data set, or no data set has an ``obs_columns`` column.
    ValueError
        ``modalities`` has a key other than ``"rna"``, ``"atac"``, ``"protein"``; ``batch_key`` is NaN for some cells;
        a data set that is not human brings ATAC to a merge of several species.

    Warns
    -----
    HoloCellWarning
        A data set's modality is left out: by default, one not named as a holocell modality or an alias; with
        ``modalities``, one not named there when that data set lacks one of the named modalities (it may be that
        one under another name). The message names them and the ``modalities=`` that merges them. A data set of
        one species whose RNA symbols are written in the other species' case (mouse ``Cd4`` merged as human):
        the message names it and the ``species=`` mapping that merges its genes with the others'.
    """
    of = dict.fromkeys(datasets, species) if isinstance(species, str) else dict(species)
    if missing := [name for name in datasets if name not in of]:
        raise KeyError(f"species has no entry for data set(s) {missing}; give one per data set, or one string.")
    wrapped = {name: _as_mudata(d) for name, d in datasets.items()}
    chosen = _chosen_modalities(wrapped, modalities)
    inputs = [
        MergeInput(name=name, mdata=d, modalities=chosen[name], batch_key=batch_key, layers=layers, species=of[name])
        for name, d in wrapped.items()
    ]
    merged = merge_for_pretraining(inputs, species=next(iter(of.values()), "human"))
    for column in obs_columns:
        have = {name: d.obs for name, d in datasets.items() if column in d.obs}
        if not have:
            raise KeyError(f"obs has no column {column!r} to copy (obs_columns) in any data set ({list(datasets)}).")
        # a data set without it (the cells to label beside a labelled reference) gets missing values
        values = [pd.Series(obs[column].to_numpy(), index=[f"{name}:{c}" for c in obs.index]) for name, obs in have.items()]
        merged.obs[column] = pd.concat(values).reindex(merged.obs_names).to_numpy()
    return merged


def _as_mudata(d: md.MuData | ad.AnnData) -> md.MuData:
    if not isinstance(d, ad.AnnData):
        return d
    with warnings.catch_warnings():  # mudata 0.3 warns about its future `pull_on_update` default
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData({"rna": d})


def _chosen_modalities(
    datasets: Mapping[str, md.MuData], modalities: Mapping[str, str] | None
) -> dict[str, dict[str, str]]:
    """Per data set, holocell modality -> its ``mod`` key: those of ``modalities`` it has (a mosaic: the others are
    absent for its cells), or by default the keys named as holocell's modalities or their common aliases
    (``adt``, ``gex``, ``peaks``, ...). ``KeyError`` for a data set with none of them; a ``HoloCellWarning`` names a
    modality of a data set that is left out when it may be one of the merged ones under another name."""
    if modalities is not None:
        if unknown := [m for m in modalities if m not in MODALITIES]:
            raise ValueError(f"unknown modality {unknown} in modalities=; use keys from {list(MODALITIES)}.")
        if nowhere := {m: k for m, k in modalities.items() if not any(k in d.mod for d in datasets.values())}:
            raise KeyError(
                f"No data set has the modality {nowhere} named in modalities= (their modalities: "
                f"{ {name: list(d.mod) for name, d in datasets.items()} }); fix the key or leave it out."
            )
    chosen, left_out = {}, {}
    for name, d in datasets.items():
        if modalities is None:
            chosen[name] = recognised_modalities(d.mod)
        else:
            chosen[name] = {m: k for m, k in modalities.items() if k in d.mod}
        if not chosen[name]:
            wanted = f"the modalities {dict(modalities)}" if modalities is not None else "a modality named as " + (
                "holocell's (rna, atac, protein) or a common alias (gex, peaks, adt, prot, ...)")
            raise KeyError(
                f"Data set {name!r} has none of {wanted}; its modalities are {list(d.mod)}. Pass modalities= "
                f"mapping holocell modalities to its keys, e.g. modalities={{'rna': {next(iter(d.mod), 'rna')!r}}}."
            )
        rest = [k for k in d.mod if k not in chosen[name].values()]
        if rest and (modalities is None or len(chosen[name]) < len(modalities)):
            left_out[name] = rest
    if left_out:
        name, rest = next(iter(left_out.items()))
        free = next((m for m in (modalities or ("protein", "atac", "rna")) if m not in chosen[name]), "protein")
        example = {**(modalities or chosen[name]), free: rest[0]}
        why = ("not named in modalities=" if modalities is not None else
               "not named as holocell's modalities (rna, atac, protein) nor a common alias (gex, peaks, adt, ...)")
        warnings.warn(
            f"merge_datasets leaves out modalities {left_out} (data set: its modalities not merged), {why}. To "
            f"merge one, pass modalities= mapping the holocell modality to its key, e.g. modalities={example} "
            f"if {rest[0]!r} holds {free} counts; "
            "the key is the same for every data set, so rename a differing one in a copy of its data set first.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    return chosen


def mixed_species(merged: md.MuData) -> bool:
    """Whether ``merged`` (:func:`merge_for_pretraining`) holds cells of several species (``obs["species"]``)."""
    return SPECIES_KEY in merged.obs


def _warn_species_case(name: str, var_names, species: str) -> None:
    """Warn when one data set's gene symbols are written in the other species' case (mouse ``Cd4`` merged as
    human): joined by name, its genes would not meet the other data sets' (``Cd4`` beside ``CD4``)."""
    found = other_species_case(var_names, species)
    if found is None:
        return
    hits, n, other, style = found
    warnings.warn(
        f"data set {name!r}: {len(hits)} of its {n} RNA var_names (e.g. {hits[:3]}) are written like {other} gene "
        f"symbols ({style}), but it is merged as {species} (species={species!r}). Joined by name, its genes stay "
        f"apart from the same genes of the other data sets. If its cells are {other}, pass "
        f"species={{{name!r}: {other!r}, ...}} (one entry per data set): the genes then meet on the shared human "
        "anchors through the orthologs.",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


def _part(item: MergeInput, m: str, adata: ad.AnnData) -> ad.AnnData:
    layer = (item.layers or {}).get(m)
    x = adata.X if layer is None else adata.layers[layer]
    if item.batch_key is None:
        batch = pd.Series(item.name, index=adata.obs_names)
    else:
        source = adata.obs if item.batch_key in adata.obs else item.mdata.obs.loc[adata.obs_names]
        if item.batch_key not in source:
            raise KeyError(f"{item.name}: batch_key {item.batch_key!r} is not an obs column.")
        n_missing = int(source[item.batch_key].isna().sum())
        if n_missing:
            raise ValueError(
                f"{item.name}: batch_key {item.batch_key!r} is missing (NaN) for {n_missing} cells of modality {m!r}; "
                f"fill them (.fillna('unknown'), a batch of its own) or drop those cells. They would become a batch "
                f"'{item.name}:nan' otherwise."
            )
        batch = item.name + ":" + source[item.batch_key].astype(str)
    obs = pd.DataFrame(
        {BATCH_KEY: batch.to_numpy(), SOURCE_KEY: item.name},
        index=[f"{item.name}:{c}" for c in adata.obs_names],
    )
    var = adata.var.copy()
    if m == "protein" and "gene" not in var.columns:
        var["gene"] = map_proteins_to_genes(var.index.astype(str).tolist())["gene"].to_numpy()
    keep = {"rna": list(_RNA_COORDS), "atac": ["chrom", "start", "end"], "protein": ["gene"]}[m]
    var = var[[c for c in keep if c in var.columns]]
    return ad.AnnData(sp.csr_matrix(x, dtype=np.float32), obs=obs, var=var)


def _join(m: str, parts: list[ad.AnnData]) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.concat(parts, join="outer", fill_value=0)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    # which data set measured which feature: a feature one set lacks is masked in its cells, not zero
    measured = pd.DataFrame(
        {str(p.obs[SOURCE_KEY].iloc[0]): a.var_names.isin(p.var_names) for p in parts if p.n_obs},
        index=a.var_names,
    )
    if not measured.to_numpy().all():
        a.varm[MEASURED_KEY] = measured
        a.uns[MEASURED_BY_KEY] = SOURCE_KEY
    # feature annotations: the first non-missing value over the inputs that have the feature
    a.var = pd.concat([p.var for p in parts]).groupby(level=0, sort=False).first().reindex(a.var_names)
    if m == "rna" and "tss" in a.var.columns:
        known = a.var["tss"].notna()
        for col, fill in _RNA_COORDS.items():
            a.var[col] = a.var[col].astype(object).where(known, fill)
        a.var["tss"] = a.var["tss"].astype(float)
    return a


__all__ = ["MergeInput", "merge_datasets", "merge_for_pretraining", "mixed_species"]
