"""What a new model is built from: the feature space of its data and the prior-knowledge matrices."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from mudata import MuData

from .._warnings import HoloCellWarning
from ..data._rna_rows import iter_rna_rows
from ..data.arrays import BackedMosaicArrays, MosaicArrays
from ..priors import PRIOR_INPUT_DIMS, _coexpression, load_priors
from ..priors._grn import edges_to_anchors
from ..vocab import MODALITIES, FeatureSpace, build_feature_space, map_genes, map_proteins_to_genes
from ..vocab._genes import mouse_case
from ..vocab._tables import normalise_genome
from ._arguments import python_scalar
from ._config_check import CELL_STATE, check_section
from ._validate_links import gene_table_for


def feature_space_for(
    mdata: MuData, modalities: Mapping[str, str], setup_args: Mapping, absent: Mapping[str, np.ndarray] | None = None
) -> FeatureSpace:
    """Gene anchors and feature maps of the registered modalities of ``mdata`` (``absent``: modalities the model has
    though ``mdata`` lacks them, with their features: those kept from a reference)."""
    absent = absent or {}
    var = {m: pd.DataFrame(index=pd.Index(absent[m].astype(str))) if m in absent else mdata.mod[name].var
           for m, name in modalities.items()}  # fmt: skip
    genome = setup_args.get("genome")
    if "atac" not in var and isinstance(genome, str | os.PathLike) and not Path(genome).expanduser().is_file():
        # the TSS table links peaks only, but a typo (genome="hg99") must not pass silently and surface only when
        # the model meets chromatin data (transfer): checked as with ATAC, when the model is built
        normalise_genome(str(genome))
    return build_feature_space(
        var,
        map_proteins=partial(map_proteins_to_genes, species=setup_args.get("species", "human")),  # mouse: no aliases
        gene_table=gene_table_for(mdata, {m: n for m, n in modalities.items() if m not in absent}, setup_args.get("genome"))
        if "atac" in var else None,
        species=setup_args.get("species", "human"),
        gene_id_type=setup_args.get("gene_id_type", "auto"),
    )


def restore_reports(space: FeatureSpace, mdata: MuData, modalities: Mapping[str, str], setup_args: Mapping) -> None:
    """Fill the ``report`` of a loaded feature space's maps (a checkpoint saves anchors, not reports).

    The reports are rebuilt from the data's features and the saved setup arguments, as when the model was
    built; a row whose rebuilt anchor is not the saved one (e.g. the vocabulary tables changed since) keeps
    the saved anchor and says ``how="checkpoint"``. Where a modality's links cannot be rebuilt (e.g. ATAC
    without its TSS table), every row of it says ``how="checkpoint"``.
    """
    rebuilt = _try_feature_space(mdata, dict(modalities), setup_args)
    if rebuilt is None and "atac" in modalities and len(modalities) > 1:
        rebuilt = _try_feature_space(mdata, {m: n for m, n in modalities.items() if m != "atac"}, setup_args)
    space.attach_reports(rebuilt)


def _try_feature_space(mdata: MuData, modalities: dict[str, str], setup_args: Mapping) -> FeatureSpace | None:
    try:
        return feature_space_for(mdata, modalities, setup_args)
    except (ValueError, OSError, KeyError, TypeError):
        return None


def prior_inputs(
    space: FeatureSpace,
    priors: Sequence[str],
    *,
    grn_edges: pd.DataFrame | None = None,
    arrays: MosaicArrays | BackedMosaicArrays | None = None,
    loading: bool = False,
    species: str = "human",
    gene_id_type: str = "auto",
    mixed_species: bool = False,
) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    """Prior matrices (values + known flag) for the network, and a report (columns, anchors known per prior).

    Parameters
    ----------
    space
        The model's anchors.
    priors
        Prior names.
    grn_edges
        Own TF -> target edges for the ``"grn"`` prior, named like the anchors, the RNA features or
        genes of ``species`` (see :func:`grn_edges_on_anchors`).
    arrays
        The registered counts (needed by ``"coexpression"``), in memory or backed: from a backed MuData
        only the RNA rows of the cells the prior uses are read (at most ``MAX_CELLS``), chunk by chunk.
    loading
        The weights will be loaded: the matrices are zeros (they are buffers in the saved weights) and
        there is no report.
    species, gene_id_type
        The setup arguments: how edge names that are no anchor and no RNA feature are read.
    mixed_species
        The cells are of several species (setup's ``species_key``): a name written like a mouse symbol goes to
        its human ortholog's anchor.
    """
    if loading:
        return {p: np.zeros((space.n_anchors, PRIOR_INPUT_DIMS[p]), np.float32) for p in priors}, None
    rna = {}
    if "coexpression" in priors and "rna" in space.maps:
        rna = {"rna_anchor": space.maps["rna"].anchor, **_coexpression_counts(arrays)}
    lost: np.ndarray | None = None
    if grn_edges is not None and "grn" in priors:
        grn_edges, lost, unknown = grn_edges_on_anchors(grn_edges, space, species, gene_id_type, mixed_species)
    mats = load_priors(space.anchors, list(priors), grn_edges=grn_edges, **rna)
    report = pd.DataFrame(
        {"n_columns": [m.values.shape[1] for m in mats.values()], "n_known": [m.n_known for m in mats.values()]},
        index=pd.Index(list(mats), name="prior"),
    )
    if lost is not None:
        _warn_grn_edges(mats["grn"].n_known, lost, unknown, species)
    return {p: m.network_input() for p, m in mats.items()}, report


#: Share of own GRN edges with a tf or target of unknown name above which :func:`grn_edges_on_anchors` warns.
GRN_UNKNOWN_SHARE = 0.1


def grn_edges_on_anchors(
    edges: pd.DataFrame, space: FeatureSpace, species: str, gene_id_type: str, mixed_species: bool = False
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Own GRN edges renamed to the model's anchors, which of them name an unknown gene, and those names.

    An anchor name stays, an RNA feature name goes to its feature's anchor, any other name is read with
    :func:`~holocell.vocab.map_genes` (``species``, ``gene_id_type``). Edges already named like the anchors
    are left exactly as they are. With ``mixed_species`` (human anchors shared with mouse cells) a name in mouse
    case (``Cxcl1``) is first read as a mouse gene, through its human ortholog: read as human it would land on
    the human gene of that spelling, which for some genes is not the ortholog.
    """
    rna = space.maps.get("rna")
    name_to_anchor = {} if rna is None else {str(f): space.anchors[i] for f, i in zip(rna.features, rna.anchor, strict=True)}

    def read(names: list[str], as_species: str) -> list[str | None]:
        rep = map_genes(names, as_species, gene_id_type)
        return [a if h != "unmapped" else None for a, h in zip(rep["anchor"], rep["how"], strict=True)]

    def map_names(names: list[str]) -> list[str | None]:
        out = read(names, species)
        mouse = [i for i, n in enumerate(names) if mouse_case(n)] if mixed_species else []
        for i, anchor in zip(mouse, read([names[i] for i in mouse], "mouse") if mouse else [], strict=True):
            out[i] = anchor if anchor is not None else out[i]
        return out

    out, unknown = edges_to_anchors(edges, space.anchors, name_to_anchor, map_names)
    lost = (edges["tf"].astype(str).isin(unknown) | edges["target"].astype(str).isin(unknown)).to_numpy()
    return out, lost, unknown


def _warn_grn_edges(n_known: int, lost: np.ndarray, unknown: list[str], species: str) -> None:
    """One warning: the own edges reach no anchor at all, or more than ``GRN_UNKNOWN_SHARE`` name unknown genes."""
    if n_known == 0:
        message = (
            "None of the grn_edges' genes is an anchor of this model (each name was read as an anchor, an RNA "
            f"var_name, or a {species} gene symbol / Ensembl id), so the 'grn' prior is all zeros."
        )
    elif lost.mean() > GRN_UNKNOWN_SHARE:
        message = (
            f"{int(lost.sum())} of {len(lost)} grn_edges ({lost.mean():.0%}) name a tf or target (e.g. {unknown[:3]}) "
            f"that is no anchor, no RNA var_name of this model and no known {species} gene: these genes reach no "
            "anchor (they only shape the GRN embedding)."
        )
    else:
        return
    warnings.warn(
        f"{message} Name the edges' tf and target like the RNA var_names or the anchors (model.feature_space.anchors).",
        HoloCellWarning,
        stacklevel=4,
    )


def _coexpression_counts(arrays: MosaicArrays | BackedMosaicArrays) -> dict:
    """The ``rna_counts`` / ``rna_present`` / ``rna_measured`` arguments of :func:`~holocell.priors.load_priors`.

    In memory: every cell's counts and the cells with RNA. Backed: only the cells the co-expression prior uses
    (those with RNA, or the same seeded subsample of ``MAX_CELLS`` of them that it draws in memory), read chunk
    by chunk, so the prior equals that of the same data in memory and memory depends on ``MAX_CELLS``, not on the
    file. ``rna_measured`` is the RNA presence table (``arrays.measured``; None without one), with the group of
    each row of ``rna_counts``: the prior reads no count where a gene was not measured.
    """
    present = arrays.present[:, MODALITIES.index("rna")]
    measured = arrays.measured.get("rna")
    if not isinstance(arrays, BackedMosaicArrays):
        return {"rna_counts": arrays.counts["rna"], "rna_present": present, "rna_measured": measured}
    cells = np.flatnonzero(present)
    if len(cells) > _coexpression.MAX_CELLS:  # the subsample coexpression_prior(seed=0) draws in memory
        cells = np.sort(np.random.default_rng(0).choice(cells, _coexpression.MAX_CELLS, replace=False))
    parts = [counts for _, counts in iter_rna_rows(arrays, cells)]
    n_genes = len(arrays.modalities["rna"].order)
    counts = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_genes), dtype=np.float32)
    measured = None if measured is None else (measured[0][cells], measured[1])
    return {"rna_counts": counts, "rna_present": None, "rna_measured": measured}


CELL_STATE_KEYS = tuple(rule.key for rule in CELL_STATE)
"""The :class:`~holocell.nn.NetworkConfig` fields ``HoloCell(cell_state_kwargs=...)`` may set."""

LEGACY_CELL_STATE = {"cell_state": False, "batch_in_encoder": True, "library_in_encoder": True, "z_in_denoiser": False}
"""The network of checkpoints written before the cell state (format < 3)."""


def cell_state_settings(kwargs: Mapping | None) -> dict:
    """Check ``HoloCell(cell_state_kwargs=...)``: a dict of known keys (a clear error names the others)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"cell_state_kwargs must be a dict or None, got {type(kwargs).__name__}.")
    unknown = sorted(set(kwargs) - set(CELL_STATE_KEYS))
    if unknown:
        raise ValueError(f"Unknown cell_state_kwargs {unknown}; known: {list(CELL_STATE_KEYS)}.")
    # a switch given as "no" or 1.5 would otherwise be read as True; numpy scalars count as Python values
    plain = {k: python_scalar(v) for k, v in kwargs.items()}
    check_section(plain, CELL_STATE, "HoloCell(cell_state_kwargs=...)", partial=True,
                  hint="Pass True or False for a switch, an integer for n_hidden (see HoloCell's docstring).")
    return plain


__all__ = [
    "CELL_STATE_KEYS",
    "LEGACY_CELL_STATE",
    "cell_state_settings",
    "feature_space_for",
    "grn_edges_on_anchors",
    "prior_inputs",
    "restore_reports",
]
