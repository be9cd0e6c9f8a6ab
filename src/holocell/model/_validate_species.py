"""Setup checks on the species of the RNA names: their letter case, and data that combine species (``species_key``).

With ``species_key`` the RNA feature names are the shared human anchors (what
:func:`holocell.vocab.rename_to_anchors` and :func:`holocell.data.merge_datasets` produce), so ``species`` must be
``"human"``. Two mistakes are warned about: mouse symbols that were never renamed (they land on human genes by
letter case or alias only), and panels padded with zeros by ``anndata.concat(join="outer", fill_value=0)`` without
a presence table (the padding is read as measured zero counts).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from mudata import MuData

from .._warnings import HoloCellWarning, user_stacklevel
from ..data.arrays import species_codes
from ..vocab import SPECIES
from ..vocab._genes import other_species_case
from ._counts import CHUNK_VALUES
from ._obs_copy import obs_copy_fix

#: The presence table of a modality (written by :func:`holocell.data.merge_datasets`; read by ``mudata_arrays``):
#: ``varm[MEASURED_KEY]`` features x groups, bool, and ``uns[MEASURED_BY_KEY]`` the obs column of each cell's group.
MEASURED_KEY, MEASURED_BY_KEY = "holocell_measured", "holocell_measured_by"
#: Padded features are warned about from this many on ...
PADDED_MIN_FEATURES = 10
#: ... and from this share of the RNA features on (a gene truly silent in one species is no sign of padding).
PADDED_MIN_SHARE = 0.05

MERGE_FIX = (
    "hc.data.merge_datasets({'human': human, 'mouse': mouse}, species={'human': 'human', 'mouse': 'mouse'}) on the "
    "separate data sets (mouse genes under their own symbols: it renames them to the anchors)"
)


def check_name_case(var_names: pd.Index, name: str, species: str, gene_id_type: str) -> None:
    """Warn when the RNA symbols are written in the other species' case: mouse ``Cd4`` read as human, or the reverse.

    Human symbols are all capitals (``CD4``), mouse symbols title case (``Cd4``). Case-insensitive
    alias matching lets many mouse symbols pass as human genes, so the gene-matching share alone
    does not reveal a forgotten ``species="mouse"``. Only names that start with a letter and are not
    Ensembl ids are counted; fewer than ten of them are not judged
    (:func:`holocell.vocab._genes.other_species_case`).
    """
    found = None if gene_id_type == "ensembl" else other_species_case(var_names, species)
    if found is None:
        return
    hits, n_names, other, style = found
    warnings.warn(
        f"{len(hits)} of {n_names} RNA feature names of modality {name!r} (e.g. {hits[:3]}) are written like "
        f"{other} gene symbols ({style}), but they are read as {species} genes (species={species!r}). If the "
        f"genes are {other}, pass species={other!r}. To combine species in one MuData, rename each species' "
        "genes with holocell.vocab.rename_to_anchors before concatenating, and pass species_key.",
        HoloCellWarning,
        stacklevel=4,
    )


def check_species_arguments(species, species_key) -> None:
    """Raise when ``species_key`` comes with ``species`` other than ``"human"``: the names are human anchors then."""
    if species_key is None or species == "human":
        return
    raise ValueError(
        f"species={species!r} with species_key={species_key!r}: with species_key, the RNA feature names must be the "
        "shared human gene anchors (each cell's species comes from the species_key column, not from `species`), so "
        "pass species='human'. Put each species' genes on the anchors before combining them: "
        "mouse = hc.vocab.rename_to_anchors(mouse, species='mouse'), or merge the data sets with "
        "hc.data.merge_datasets(..., species={'human': 'human', 'mouse': 'mouse'}). Reading the anchors as "
        f"{species} genes would move the genes of the other species off their shared anchors."
    )


def check_species_key(
    mdata: MuData, modalities: Mapping[str, str], layers: Mapping[str, str | None], species_key: str,
    gene_id_type: str = "auto",
) -> None:  # fmt: skip
    """Checks of a ``species_key`` setup: the column (a clear ``KeyError`` / ``ValueError``), then warnings about
    RNA names left in mouse case and about zero-padded panels without a presence table."""
    _check_column(mdata, species_key)
    codes = species_codes(mdata, species_key)  # raises on values other than human / mouse
    if "rna" not in modalities:
        return
    name = modalities["rna"]
    adata = mdata.mod[name]
    rows = np.asarray(mdata.obsmap[name]).astype(np.int64)  # 1-based, 0 = cell without RNA
    row_species = np.zeros(adata.n_obs, dtype=np.int64)
    row_species[rows[rows > 0] - 1] = codes[rows > 0]
    x = adata.X if layers.get("rna") is None else adata.layers[layers["rna"]]
    detected = detected_by_group(x, row_species, len(SPECIES))
    if gene_id_type != "ensembl":
        _warn_mouse_case(adata.var_names[detected[SPECIES.index("mouse")]], name)
    if MEASURED_KEY not in adata.varm or MEASURED_BY_KEY not in adata.uns:
        _warn_padding(adata.var_names, detected, np.bincount(row_species, minlength=len(SPECIES)) > 0, name)


def _check_column(mdata: MuData, species_key: str) -> None:
    """``KeyError`` for a ``species_key`` that is no global column: the columns, and which modality holds it."""
    if species_key in mdata.obs:
        return
    fix = obs_copy_fix(mdata, species_key, "species_key")  # every cell needs one: the modalities' copies joined
    fix = f"{fix}." if fix else "Add each cell's 'human' or 'mouse' there."
    raise KeyError(
        f"species_key {species_key!r} is not a column of the global mdata.obs (columns: "
        f"{list(mdata.obs.columns)[:10]}). {fix}"
    )


def detected_by_group(x, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, n_features)`` bool: the features with a non-zero value in some row of each group.

    Parameters
    ----------
    x
        ``(n_rows, n_features)`` counts: dense, CSR/CSC, or backed (read ~``CHUNK_VALUES`` values at a time).
    groups
        ``(n_rows,)`` group code of each row, in ``range(n_groups)``.
    n_groups
        Number of groups.
    """
    out = np.zeros((n_groups, x.shape[1]), dtype=bool)
    store = _sparse_parts(x)
    if store is not None:  # CSR / CSC, in memory or backed: the (row, column) of each stored non-zero
        data, indices, indptr, fmt = store
        for i in range(0, data.shape[0], CHUNK_VALUES):
            nonzero = np.flatnonzero(np.asarray(data[i : i + CHUNK_VALUES]) != 0)
            minor = np.asarray(indices[i : i + CHUNK_VALUES])[nonzero]
            major = np.searchsorted(indptr, nonzero + i, side="right") - 1
            r, c = (major, minor) if fmt == "csr" else (minor, major)
            out[groups[r], c] = True
        return out
    step = max(1, CHUNK_VALUES // max(1, x.shape[1]))  # dense, in memory or backed
    for i in range(0, x.shape[0], step):
        nonzero = np.asarray(x[i : i + step]) != 0
        for g in np.unique(groups[i : i + step]):
            out[g] |= nonzero[groups[i : i + step] == g].any(axis=0)
    return out


def _sparse_parts(x):
    """``(data, indices, indptr, format)`` of a CSR/CSC matrix (in memory or backed), else None."""
    if sp.issparse(x) and x.format in ("csr", "csc"):
        return x.data, x.indices, x.indptr, x.format
    if hasattr(x, "group") and getattr(x, "format", None) in ("csr", "csc"):
        return x.group["data"], x.group["indices"], np.asarray(x.group["indptr"]), x.format
    return None


def _warn_mouse_case(mouse_names, name: str) -> None:
    """Warn when the features with counts in mouse cells are mostly mouse symbols (``Bach2``), not anchors."""
    found = other_species_case(mouse_names, "human")
    if found is None:
        return
    hits, n_names = found[0], found[1]
    warnings.warn(
        f"{len(hits)} of {n_names} RNA feature names of modality {name!r} with counts in mouse cells (e.g. "
        f"{hits[:3]}) are written like mouse gene symbols (title case), but with species_key the RNA names are read "
        "as the shared human gene anchors: they reach a human gene only by letter case or alias (sometimes not the "
        "ortholog), and a gene measured in both species sits on two features ('Bach2' beside 'BACH2'). Rename the "
        "mouse genes before combining the species: mouse = hc.vocab.rename_to_anchors(mouse, species='mouse'), or "
        f"merge them with {MERGE_FIX}.",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


def _warn_padding(var_names, detected: np.ndarray, has_cells: np.ndarray, name: str) -> None:
    """Warn when many features have counts in one species' cells and none in the other's (zero padding)."""
    human, mouse = SPECIES.index("human"), SPECIES.index("mouse")
    if not (has_cells[human] and has_cells[mouse]):
        return
    only = {"human": detected[human] & ~detected[mouse], "mouse": detected[mouse] & ~detected[human]}
    n_only = int(only["human"].sum() + only["mouse"].sum())
    if n_only < max(PADDED_MIN_FEATURES, PADDED_MIN_SHARE * len(var_names)):
        return
    parts = ", ".join(
        f"{int(mask.sum())} only in {sp_} cells (e.g. {var_names[mask][:3].tolist()})" for sp_, mask in only.items()
    )
    warnings.warn(
        f"{n_only} of {len(var_names)} RNA features of modality {name!r} have counts in the cells of one species and "
        f"none in any cell of the other ({parts}): the sign of species panels padded with zeros, e.g. by "
        "anndata.concat(join='outer', fill_value=0). The modality has no presence table "
        f"(varm[{MEASURED_KEY!r}]), so such zeros are read as measured zero counts: the model trains on them and "
        f"learns to generate them. Merge the species with {MERGE_FIX}: it writes the presence table, so genes a "
        "species did not measure are masked. If these genes were measured in both species, ignore this warning.",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


__all__ = ["check_name_case", "check_species_arguments", "check_species_key", "detected_by_group"]
