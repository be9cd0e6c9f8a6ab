"""GRN prior: each gene's place in the TF -> target graph (Pathway Commons v9 by default).

The shipped edges are Pathway Commons v9 ``controls-expression-of`` relations (see
``_files/README.md``). A gene's row is its spectral embedding in the directed graph: the top
singular vectors of the regulator x target adjacency, once as a regulator and once as a target,
so TFs with shared targets and targets with shared TFs end up close.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
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
        TF -> target edges with columns ``tf`` and ``target`` named like the anchors (see
        :func:`edges_to_anchors` for edges named like a dataset's genes); default the shipped Pathway
        Commons v9 edges. Pass your own (e.g. a training split of known edges). Other columns (a weight
        or a sign) are ignored: every edge counts once.

    Returns
    -------
    :class:`PriorMatrix` with ``2 * GRN_RANK`` columns (regulator and target roles).
    """
    if edges is None:
        genes, table = _default_embedding()
    else:
        genes, table = _embed(check_edges(edges).drop_duplicates())
    columns = [f"regulator_{i}" for i in range(GRN_RANK)] + [f"target_{i}" for i in range(GRN_RANK)]
    return align(anchors, genes, table, "grn", columns)


def check_edges(edges: pd.DataFrame) -> pd.DataFrame:
    """Own GRN edges as a DataFrame of string columns ``tf`` and ``target`` (other columns dropped)."""
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
    return edges


def edges_to_anchors(
    edges: pd.DataFrame,
    anchors: Sequence[str],
    name_to_anchor: Mapping[str, str],
    map_names: Callable[[list[str]], list[str | None]],
) -> tuple[pd.DataFrame, list[str]]:
    """Rename the ``tf`` and ``target`` of own GRN edges to anchor names.

    A name that is an anchor stays as it is; a feature name of the data goes to its anchor
    (``name_to_anchor``, e.g. the RNA report); any other name goes through ``map_names`` (e.g.
    :func:`~holocell.vocab.map_genes` of the data's species), and a name it does not know (None)
    stays as it is: such a gene shapes the embedding but reaches no anchor.

    Returns
    -------
    The renamed edges (same rows), and the names that are none of these, sorted.
    """
    edges = check_edges(edges)
    anchor_set = set(anchors)
    names = sorted((set(edges["tf"]) | set(edges["target"])) - anchor_set)
    renamed = {n: name_to_anchor[n] for n in names if n in name_to_anchor}
    rest = [n for n in names if n not in renamed]
    unknown = set()
    for name, anchor in zip(rest, map_names(rest) if rest else [], strict=True):
        renamed[name] = anchor if anchor is not None else name
        if anchor is None:
            unknown.add(name)
    out = pd.DataFrame({"tf": edges["tf"].map(lambda n: renamed.get(n, n)),
                        "target": edges["target"].map(lambda n: renamed.get(n, n))})
    return out, sorted(unknown)
