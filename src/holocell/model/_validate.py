"""Checks on user input at setup, with messages that name the problem and the fix."""

from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from mudata import MuData
from scvi.data import AnnDataManager

from .._warnings import HoloCellWarning, user_stacklevel
from ..vocab import (
    MODALITIES,
    SPECIES,
    map_genes,
)
from ._counts import CHUNK_VALUES, check_counts
from ._validate_links import check_pairing, check_vocabulary
from ._validate_obs import (
    check_batch_column,
    check_in_sync,
    check_modality_keys,
    check_not_view,
    warn_replaced_batch_column,
)
from ._validate_species import check_name_case, check_species_arguments, check_species_key

_LAYER_SUFFIX = "_layer"
#: Below this share of RNA features on a known gene of the vocabulary, setup_mudata warns.
MIN_MATCHED_SHARE = 0.5


def normalise_modalities(modalities: Mapping[str, str] | None) -> dict[str, str]:
    """``{"rna": "rna", "protein": "adt"}``; scvi-style keys (``"rna_layer"``) are accepted too."""
    if not modalities:
        raise ValueError(
            "setup_mudata needs `modalities`, a dict from holocell modality to a key of mdata.mod, "
            "e.g. modalities={'rna': 'rna', 'protein': 'adt'} (any non-empty subset of 'rna', 'atac', 'protein')."
        )
    out = {}
    for key, name in modalities.items():
        m = key[: -len(_LAYER_SUFFIX)] if key.endswith(_LAYER_SUFFIX) else key
        if key == "batch_key":  # scvi-tools' modalities={"batch_key": "rna"}: the modality whose .obs holds it
            raise ValueError(
                f"modalities={{'batch_key': {name!r}}} is scvi-tools' way to name the modality whose .obs holds the "
                "batch; holocell reads batch_key=... from mdata.obs. Leave 'batch_key' out of `modalities` and pass "
                f"batch_key='<column>', after copying the column if only mdata[{name!r}].obs has it "
                f"(mdata.obs['<column>'] = mdata[{name!r}].obs['<column>'].reindex(mdata.obs_names))."
            )
        if m not in MODALITIES:
            raise ValueError(f"Unknown modality {key!r} in `modalities`; use keys from {list(MODALITIES)}.")
        if m in out:  # "rna" and "rna_layer": the same modality twice
            raise ValueError(
                f"`modalities` names {m!r} twice ({m!r} and {m + _LAYER_SUFFIX!r}: {out[m]!r} and {name!r}); give "
                f"each modality once, e.g. {{{m!r}: {name!r}}}."
            )
        out[m] = name
    return out


def validate_setup(
    mdata: MuData,
    modalities: Mapping[str, str],
    layers: Mapping[str, str | None],
    batch_key: str | None,
    species: str,
    genome=None,
    gene_id_type: str = "auto",
    allow_unmatched_genes: bool = False,
    species_key: str | None = None,
) -> None:
    """Raise a clear error for input holocell cannot use; never modifies ``mdata``.

    Warns (does not raise) about cells with all-zero counts in a modality they are measured in,
    about an antibody panel of which no antibody maps to a gene, about RNA features of which fewer
    than :data:`MIN_MATCHED_SHARE` map to a known gene (and raises when none does, unless
    ``allow_unmatched_genes``), about RNA symbols written in the other species' letter case (see
    :func:`check_name_case`), and about non-integer ATAC values. With ``species_key``: ``species`` must be
    ``"human"``, and the column and the RNA names of the species are checked (:func:`check_species_key`).
    """
    if isinstance(mdata, str | Path):
        where = "" if Path(mdata).expanduser().exists() else f" (and {str(mdata)!r} does not exist: check the path)"
        raise TypeError(
            f"setup_mudata needs a MuData object, got the path {str(mdata)!r}{where}. Read the file first: "
            f"mdata = {_read_call(mdata)}."
        )
    if not isinstance(mdata, MuData):
        raise TypeError(
            f"setup_mudata needs a MuData, got {type(mdata).__name__}. Wrap an AnnData with "
            "mudata.MuData({'rna': adata})."
        )
    check_species_arguments(species, species_key)
    if species not in SPECIES:
        raise ValueError(
            f"species must be one of {list(SPECIES)}, got {species!r}. holocell's gene tables cover "
            "these species only; pass species='human' or species='mouse'."
        )
    _check_unique(mdata.obs_names, "cell names (mdata.obs_names)", SAME_PREFIX_FIX)
    check_modality_keys(mdata, modalities)
    for m, name in modalities.items():
        if name not in mdata.mod:
            raise KeyError(
                f"Modality {name!r} (for {m!r}) is not in mdata.mod; available: {list(mdata.mod)}. "
                f"Fix the `modalities` argument{_unused_hint(mdata, modalities, m)}."
            )
        check_not_view(mdata, name)
        check_in_sync(mdata, name, ", then run HoloCell.setup_mudata again")
        adata = mdata.mod[name]
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ValueError(
                f"Modality {name!r} has shape {adata.shape}; it needs cells and features. Leave it out "
                f"of `modalities`, or pass the modality that holds the data."
            )
        _check_unique(adata.obs_names, f"cell names in modality {name!r}", SAME_PREFIX_FIX)
        _check_unique(
            adata.var_names, f"feature names in modality {name!r}", f"mdata.mod[{name!r}].var_names_make_unique()"
        )
        layer = layers.get(m)
        if layer is not None and layer not in adata.layers:
            raw = (
                f" Counts kept in .raw go to a layer first: mdata[{name!r}].layers[{layer!r}] = "
                f"mdata[{name!r}].raw[:, mdata[{name!r}].var_names].X."
                if adata.raw is not None
                else ""
            )
            raise KeyError(
                f"Layer {layer!r} not in mdata.mod[{name!r}].layers; available: {list(adata.layers)}. "
                f"Pass {m}_layer=None to use .X, or the name of the layer with raw counts.{raw}"
            )
        x = adata.X if layer is None else adata.layers[layer]
        check_counts(x, name, m)
        _warn_empty_cells(x, name)
        if m != "atac":
            _warn_equal_libraries(x, name)
    check_batch_column(mdata, batch_key)
    warn_replaced_batch_column(mdata)
    check_vocabulary(mdata, modalities, genome, species, gene_id_type)
    check_pairing(mdata, modalities)
    if "rna" in modalities:
        rna_names = mdata.mod[modalities["rna"]].var_names
        check_gene_matching(rna_names, modalities["rna"], species, gene_id_type, allow_unmatched_genes)
        if species_key is None:  # data that combine species on purpose mix the two cases
            check_name_case(rna_names, modalities["rna"], species, gene_id_type)
    if species_key is not None:  # the column, mouse names not renamed to anchors, zero-padded species panels
        check_species_key(mdata, modalities, layers, species_key, gene_id_type)


def check_gene_matching(
    var_names: pd.Index, name: str, species: str, gene_id_type: str, allow_unmatched: bool
) -> float:
    """Share of RNA features on a known gene of the vocabulary; warn when low, raise when zero.

    Parameters
    ----------
    var_names
        RNA feature names.
    name
        Modality name in ``mdata.mod`` (for the message).
    species, gene_id_type
        As given to ``setup_mudata``.
    allow_unmatched
        With no feature matched, train on dataset-only anchors (a warning) instead of raising.

    Returns
    -------
    The matched share.
    """
    names = var_names.astype(str).tolist()
    report = map_genes(names, species, gene_id_type)
    matched = (report["how"] != "unmapped").to_numpy()
    share = float(matched.mean()) if len(names) else 1.0
    if share >= MIN_MATCHED_SHARE:
        return share
    unmatched = [n for n, ok in zip(names, matched, strict=True) if not ok][:3]
    causes = (
        f"Likely causes: the wrong species (these were read as {species} genes; pass species='human' or "
        "'mouse'), names of another kind (gene symbols vs Ensembl ids: set gene_id_type='symbol' or "
        "'ensembl', or use the symbols, e.g. var_names = var['gene_symbols']), ids of another annotation "
        "release, or features that are not genes (integer indices, probe ids)."
    )
    what = (
        f"{int(matched.sum())} of {len(names)} RNA features of modality {name!r} ({share:.0%}) map to a "
        f"known {species} gene of holocell's vocabulary (unmatched e.g. {unmatched})."
    )
    if matched.any():
        warnings.warn(
            f"Only {what} Unmatched features get anchors of their own: no gene identity, no priors and no "
            f"cross-species sharing. {causes}",
            HoloCellWarning,
            stacklevel=4,
        )
    elif not allow_unmatched:
        raise ValueError(
            f"None of the {len(names)} RNA features of modality {name!r} (e.g. {unmatched}) is a known "
            f"{species} gene of holocell's vocabulary. {causes} To train on dataset-only anchors anyway "
            "(no gene identity, no priors, no transfer by gene), pass allow_unmatched_genes=True."
        )
    else:
        warnings.warn(
            f"{what} allow_unmatched_genes=True: every RNA feature keeps a dataset-only anchor.",
            HoloCellWarning,
            stacklevel=4,
        )
    return share


#: How to make cell names unique without pairing one cell's RNA with another's ATAC: ``obs_names_make_unique`` numbers
#: the repeats per modality, so a cell missing from one modality shifts the numbers (and it fails on a MuData).
SAME_PREFIX_FIX = (
    "the same rule in every modality, e.g. add each sample's name to its cells' names before the MuData is built "
    "(anndata.concat({'s1': a1, 's2': a2}, index_unique='_') per modality makes '<barcode>_s1', or "
    "adata.obs_names = 's1_' + adata.obs_names), then mdata.update(). Not obs_names_make_unique() per modality: it "
    "numbers repeats in each modality's own order, so a cell missing from one modality pairs the others wrongly"
)


def _check_unique(names: pd.Index, what: str, fix: str) -> None:
    if not names.is_unique:
        dup = names[names.duplicated()][:3].tolist()
        raise ValueError(f"Duplicated {what} (e.g. {dup}); make them unique with {fix}.")


EQUAL_LIBRARY_CV = 0.01
"""Raw counts whose per-cell totals vary less than this (coefficient of variation) were normalised, then rounded."""


def _warn_equal_libraries(x, name: str) -> None:
    """:class:`HoloCellWarning` when (in memory) nearly every cell has the same total count: raw counts vary from
    cell to cell, counts normalised to a target sum and then rounded do not. Exactly equal totals are raw counts
    downsampled to one depth (``sc.pp.downsample_counts``): rounding never lands every cell on one total."""
    if not (sp.issparse(x) or isinstance(x, np.ndarray)) or x.shape[0] < 20:
        return  # a backed matrix is not read again for this
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    totals = totals[totals > 0]
    if len(totals) >= 20 and 0 < totals.std() < EQUAL_LIBRARY_CV * totals.mean():
        warnings.warn(
            f"Every cell of modality {name!r} has about the same total count ({np.median(totals):.0f}, varying by "
            f"{totals.std() / totals.mean():.2%}): raw counts vary from cell to cell, so these look normalised "
            "(e.g. normalize_total) and then rounded. holocell needs the raw counts: pass the layer that holds them.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )


def _empty_rows(x) -> np.ndarray:
    """Whether each row of ``x`` has no non-zero count; a backed matrix is read ~``CHUNK_VALUES`` values at a time
    (a backed CSC matrix through its stored values: anndata would read it whole to slice rows)."""
    if sp.issparse(x) or isinstance(x, np.ndarray):
        return np.asarray(x.sum(axis=1)).ravel() == 0
    if hasattr(x, "group") and getattr(x, "format", None) in ("csr", "csc"):
        return ~_backed_sparse_filled_rows(x)
    step = max(1, CHUNK_VALUES // max(1, x.shape[1]))  # backed dense (h5py / zarr)
    return np.concatenate([np.asarray(x[i : i + step]).sum(axis=1) == 0 for i in range(0, x.shape[0], step)])


def _backed_sparse_filled_rows(x) -> np.ndarray:
    """Rows of a backed CSR / CSC matrix with a non-zero stored value, read chunk by chunk."""
    data, indices = x.group["data"], x.group["indices"]
    indptr = np.asarray(x.group["indptr"]) if x.format == "csr" else None
    filled = np.zeros(x.shape[0], dtype=bool)
    for i in range(0, data.shape[0], CHUNK_VALUES):
        nonzero = np.flatnonzero(np.asarray(data[i : i + CHUNK_VALUES]) != 0)
        if indptr is None:  # CSC: the stored row index of each value
            rows = np.asarray(indices[i : i + CHUNK_VALUES])[nonzero]
        else:  # CSR: the row whose indptr range holds the value's position
            rows = np.searchsorted(indptr, nonzero + i, side="right") - 1
        filled[rows] = True
    return filled


def _warn_empty_cells(x, name: str) -> None:
    empty = _empty_rows(x)
    n_empty = int(empty.sum())
    if n_empty:
        warnings.warn(
            f"{n_empty} of {len(empty)} cells in modality {name!r} have no counts at all. holocell treats "
            "them as measured with zero counts. If they were not measured, remove them from that modality "
            "(holocell masks absent modalities); otherwise filter them, e.g. with "
            "scanpy.pp.filter_cells(adata, min_counts=1), then mdata.update().",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )


# ------------------------------------------------------------------ data seen after setup
def _index_digest(index: pd.Index) -> str:
    return hashlib.sha256(pd.util.hash_array(index.astype(str).to_numpy(dtype=object)).tobytes()).hexdigest()


def data_fingerprint(mdata: MuData, modalities: Mapping[str, str], batch_key: str | None = None) -> dict:
    """Cells and features of ``mdata`` and of its registered modalities, and its cells' batches (``batch_key``), to
    detect later changes."""
    mods = {}
    for name in modalities.values():
        adata = mdata.mod[name]
        mods[name] = {
            "shape": tuple(adata.shape),
            "obs_names": _index_digest(adata.obs_names),
            "var_names": _index_digest(adata.var_names),
        }
    out = {"n_obs": mdata.n_obs, "obs_names": _index_digest(mdata.obs_names), "mods": mods}
    if batch_key is not None and batch_key in mdata.obs:
        out["batch"] = (batch_key, _index_digest(pd.Index(mdata.obs[batch_key])))
    return out


def check_unchanged(mdata: MuData, modalities: Mapping[str, str], fingerprint: dict) -> None:
    """Raise if the registered ``mdata`` lost a modality or changed cells or features since setup."""
    problems = []
    missing = [name for name in modalities.values() if name not in mdata.mod]
    if missing:
        problems.append(f"modalities {missing} were removed")
    else:  # name the modality whose cells changed; the global cells change with it
        now, cells_named = data_fingerprint(mdata, modalities)["mods"], False
        for name, before in fingerprint["mods"].items():
            after, (n_obs, n_vars) = now[name], tuple(before["shape"])
            if after["shape"][0] != n_obs:
                problems.append(f"modality {name!r} changed cells ({n_obs} at setup, {after['shape'][0]} now)")
            elif after["obs_names"] != before["obs_names"]:
                problems.append(f"modality {name!r} changed its cell names or their order (still {n_obs} cells)")
            cells_named = cells_named or after["obs_names"] != before["obs_names"]
            if after["var_names"] != before["var_names"]:
                problems.append(f"modality {name!r} changed features ({n_vars} at setup, {after['shape'][1]} now)")
        if not cells_named and mdata.n_obs != fingerprint["n_obs"]:
            problems.append(f"its cells changed ({fingerprint['n_obs']} at setup, {mdata.n_obs} now)")
        elif not cells_named and _index_digest(mdata.obs_names) != fingerprint["obs_names"]:
            problems.append(f"its cell names or their order changed (still {mdata.n_obs} cells)")
        elif "batch" in fingerprint:
            key, digest = fingerprint["batch"]
            if key not in mdata.obs or _index_digest(pd.Index(mdata.obs[key])) != digest:
                problems.append(f"the batch column mdata.obs[{key!r}] changed")
    if problems:
        raise ValueError(
            "The MuData this model was set up with changed after setup: " + "; ".join(problems) + ". "
            "Did you modify it in place? To train on the changed data, run HoloCell.setup_mudata on it "
            "and create a new model; to embed or generate on other cells, pass them as their own MuData "
            "(mdata=...)."
        )


class _WeakDataManager(AnnDataManager):
    """An ``AnnDataManager`` whose ``adata`` is a weak reference (``None`` once the data are gone)."""

    @property
    def adata(self):
        return None if self._adata_ref is None else self._adata_ref()

    @adata.setter
    def adata(self, value) -> None:
        self._adata_ref = None if value is None else weakref.ref(value)


def data_manager(mdata: MuData, **kwargs) -> AnnDataManager:
    """The ``AnnDataManager`` (``kwargs``: its arguments) that ``setup_mudata`` registers; for a backed MuData one
    holding it weakly. scvi-tools keeps every manager in class-level stores for the whole process, so a strong
    reference kept the ``.h5mu`` open after the user dropped the MuData and its models (a model holds its own data).
    """
    return (_WeakDataManager if getattr(mdata, "isbacked", False) else AnnDataManager)(**kwargs)


def require_mudata(mdata, then: str = "") -> None:
    """``TypeError`` unless ``mdata`` is a MuData: how to read a path or wrap an AnnData, and ``then`` what to do."""
    if not isinstance(mdata, MuData):
        how = f"read it with {_read_call(mdata)}" if isinstance(mdata, str | os.PathLike) else (
            "wrap it with mudata.MuData({name: adata})")
        raise TypeError(f"Expected a MuData, got {type(mdata).__name__}: {how}{then}.")


def _read_call(path) -> str:
    """The call that reads ``path`` as a MuData: ``mudata.read_h5mu(path)``, or for a zarr store the call
    :func:`holocell.data._stores.zarr_store` gives, naming what the store is."""
    from ..data._stores import zarr_store

    store = zarr_store(path)
    return "mudata.read_h5mu(path)" if store is None else f"{store[1]} (it is {store[0]})"


def _unused_hint(mdata: MuData, modalities: Mapping[str, str], m: str) -> str:
    """``, e.g. modalities={m: <a key of mdata.mod no other modality reads>}``, or ``""`` when every key is read."""
    unused = [k for k in mdata.mod if k not in modalities.values()]
    return f", e.g. modalities={{{m!r}: {unused[0]!r}}}" if unused else ""


def _read_counts_fix(name: str, layer: str | None, layers: list[str]) -> str:
    """The fix of a count error in data a set-up model reads: where the model reads them, and how to put them
    there (``setup_mudata``'s ``<m>_layer=`` is not an argument of the model's calls)."""
    where = f"mdata.mod[{name!r}]." + ("X" if layer is None else f"layers[{layer!r}]")
    source = f"mdata.mod[{name!r}].layers[{layers[0]!r}]" if layer is None and layers else "<raw counts>"
    return f"the model reads the raw counts from {where} (as it was set up); put them there, e.g. {where} = {source}"


def check_mudata(
    mdata: MuData, modalities: Mapping[str, str], layers: Mapping[str, str | None], *, warn_empty: bool = False
) -> None:
    """Checks before reading ``mdata`` (registered or new): modalities in sync with the MuData, unique cell and
    feature names, counts valid; with ``warn_empty`` (new data, which setup did not check) the setup's warning
    about cells without any count in a modality they are measured in."""
    require_mudata(mdata)
    for m, name in modalities.items():
        check_in_sync(mdata, name)
        adata = mdata.mod[name]
        _check_unique(adata.obs_names, f"cell names in modality {name!r}", SAME_PREFIX_FIX)
        _check_unique(
            adata.var_names, f"feature names in modality {name!r}",
            f"mdata.mod[{name!r}].var_names_make_unique(), then mdata.update()",
        )
        layer = layers.get(m)
        if layer is not None and layer not in adata.layers:
            raise KeyError(
                f"Layer {layer!r} not in mdata.mod[{name!r}].layers; the model was set up to read counts "
                f"from it. Available: {list(adata.layers)}. Put the raw counts there, e.g. "
                f"mdata.mod[{name!r}].layers[{layer!r}] = mdata.mod[{name!r}].X.copy() when .X holds them."
            )
        x = adata.X if layer is None else adata.layers[layer]
        check_counts(x, name, m, fix=_read_counts_fix(name, layer, list(adata.layers)))
        if warn_empty:
            _warn_empty_cells(x, name)
