"""Load the requested priors as gene x k matrices aligned to a model's anchors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._coexpression import COEXPRESSION_RANK, coexpression_prior
from ._family import FAMILY_RANK, family_prior
from ._grn import GRN_RANK, grn_prior
from ._matrix import PriorMatrix
from ._position import POSITION_COLUMNS, position_prior

#: Prior names, in the order the network adds them.
PRIORS: tuple[str, ...] = ("grn", "family", "position", "coexpression")

#: Columns of each prior's network input (its ``k`` values plus the known flag).
PRIOR_INPUT_DIMS: dict[str, int] = {
    "grn": 2 * GRN_RANK + 1,
    "family": FAMILY_RANK + 1,
    "position": len(POSITION_COLUMNS) + 1,
    "coexpression": COEXPRESSION_RANK + 1,
}


def check_prior_names(priors: str | Sequence[str] | None) -> list[str]:
    """Validated, de-duplicated prior names in :data:`PRIORS` order (``None``/empty: none; ``"all"``: all)."""
    if priors is None:
        return []
    if isinstance(priors, str):
        priors = list(PRIORS) if priors == "all" else [priors]
    if isinstance(priors, Mapping) or not isinstance(priors, Iterable):  # priors=True, a number, a dict
        raise TypeError(
            f"priors takes a prior name, a list of them, 'all' or None, got {type(priors).__name__} {priors!r}; "
            f"choose from {list(PRIORS)} (priors='all' for every one)."
        )
    bad = [p for p in priors if p not in PRIORS]
    if bad:
        raise ValueError(f"Unknown prior {bad}; choose from {list(PRIORS)} (or priors='all' / None).")
    return [p for p in PRIORS if p in set(priors)]


def load_priors(
    anchors: Sequence[str],
    priors: str | Sequence[str] | None = PRIORS,
    *,
    rna_counts: sp.spmatrix | np.ndarray | None = None,
    rna_anchor: Sequence[int] | None = None,
    rna_present: np.ndarray | None = None,
    grn_edges: pd.DataFrame | None = None,
    rna_measured: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, PriorMatrix]:
    """Prior matrices aligned to ``anchors``.

    Parameters
    ----------
    anchors
        Anchor names (e.g. ``model.feature_space.anchors``); canonical human symbols get prior
        knowledge, other anchors (``mouse:...``, ``protein:...``, chromosome bins) are unknown.
    priors
        Which priors: any of ``"grn"``, ``"family"``, ``"position"``, ``"coexpression"``.
    rna_counts, rna_anchor, rna_present
        Training RNA counts ``(cells, genes)``, the anchor of each gene and the cells that have
        RNA: needed for ``"coexpression"``.
    grn_edges
        TF -> target edges (columns ``tf``, ``target``) replacing the shipped Pathway Commons GRN.
    rna_measured
        The RNA presence table, ``(group of each row of rna_counts, groups x genes bool)``, for genes measured
        in some cells only: ``"coexpression"`` then reads no count where a gene was not measured (see
        :func:`~holocell.priors.coexpression_prior`). Default: every gene measured in every cell.

    Returns
    -------
    dict
        Prior name -> :class:`PriorMatrix` (rows in ``anchors`` order, zeros and ``known=False``
        for anchors the prior does not cover).
    """
    names = check_prior_names(priors)
    anchors = [str(a) for a in anchors]
    out: dict[str, PriorMatrix] = {}
    for name in names:
        if name == "grn":
            out[name] = grn_prior(anchors, grn_edges)
        elif name == "family":
            out[name] = family_prior(anchors)
        elif name == "position":
            out[name] = position_prior(anchors)
        else:
            if rna_counts is None or rna_anchor is None:
                raise ValueError(
                    "The 'coexpression' prior is computed from RNA counts: the model needs an RNA modality "
                    "(or drop 'coexpression' from `priors`)."
                )
            out[name] = coexpression_prior(
                len(anchors), rna_counts, rna_anchor, rna_present, measured=rna_measured
            )
    return out
