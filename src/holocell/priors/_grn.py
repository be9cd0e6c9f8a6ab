"""GRN prior: each gene's place in the TF -> target graph (Pathway Commons v9 by default).

The shipped edges are Pathway Commons v9 ``controls-expression-of`` relations (see
``_files/README.md``). A gene's row is its spectral embedding in the directed graph: the top
singular vectors of the regulator x target adjacency, once as a regulator and once as a target,
so TFs with shared targets and targets with shared TFs end up close.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._matrix import PriorMatrix, align, spectral

#: Singular vectors per role (regulator, target); the prior has ``2 * GRN_RANK`` columns.
GRN_RANK = 16


def load_grn_edges() -> pd.DataFrame:
    """The shipped TF -> target edges: columns ``tf`` and ``target`` (canonical human symbols)."""
    return _edges_cached().copy()


@functools.cache
def _edges_cached() -> pd.DataFrame:
    path = Path(__file__).resolve().parent / "_files" / "grn_pathwaycommons9.tsv.gz"
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _embed(edges: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    genes = sorted(set(edges["tf"]) | set(edges["target"]))
    index = {g: i for i, g in enumerate(genes)}
    rows = edges["tf"].map(index).to_numpy()
    cols = edges["target"].map(index).to_numpy()
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genes), len(genes)))
    adj.data[:] = 1.0
    u, s, vt = spectral(adj, GRN_RANK)
    root = np.sqrt(s)
    return genes, np.concatenate([u * root, vt.T * root], axis=1).astype(np.float32)


@functools.cache
def _default_embedding() -> tuple[list[str], np.ndarray]:
    return _embed(_edges_cached())


def grn_prior(anchors: Sequence[str], edges: pd.DataFrame | None = None) -> PriorMatrix:
    """GRN prior aligned to ``anchors``.

    Parameters
    ----------
    anchors
        Anchor names (canonical human symbols; others are unknown to the prior).
    edges
        TF -> target edges with columns ``tf`` and ``target`` named like the anchors; default the
        shipped Pathway Commons v9 edges. Pass your own (e.g. a training split of known edges).

    Returns
    -------
    :class:`PriorMatrix` with ``2 * GRN_RANK`` columns (regulator and target roles).
    """
    if edges is None:
        genes, table = _default_embedding()
    else:
        if not isinstance(edges, pd.DataFrame):
            raise TypeError(
                f"GRN edges must be a DataFrame with columns 'tf' and 'target', got {type(edges).__name__}; e.g. "
                "pd.DataFrame({'tf': ['SPI1'], 'target': ['CD14']})."
            )
        missing = {"tf", "target"} - set(edges.columns)
        if missing:
            raise ValueError(f"GRN edges need columns 'tf' and 'target'; missing {sorted(missing)}.")
        blank = edges["tf"].isna() | edges["target"].isna()
        if blank.any():
            raise ValueError(
                f"{int(blank.sum())} GRN edges have no tf or no target (NaN / None), which would become a gene named "
                "'nan'; drop them first, e.g. edges.dropna(subset=['tf', 'target'])."
            )
        edges = pd.DataFrame({"tf": edges["tf"].astype(str), "target": edges["target"].astype(str)})
        if edges.empty:
            raise ValueError("GRN edges are empty; pass at least one tf -> target edge or edges=None.")
        genes, table = _embed(edges.drop_duplicates())
    columns = [f"regulator_{i}" for i in range(GRN_RANK)] + [f"target_{i}" for i in range(GRN_RANK)]
    return align(anchors, genes, table, "grn", columns)
