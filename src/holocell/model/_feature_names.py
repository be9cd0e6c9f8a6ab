"""Names of the features to perturb: each looked up among the model's features, with a hint for a name that misses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..vocab import map_genes


def feature_index(model, modality: str, names: Sequence[str], what: str) -> np.ndarray:
    """Column of each of ``names`` among ``model``'s ``modality`` features; ``KeyError`` naming the unknown ones, with
    a hint: another case, the peak spelling of the data, or (RNA) the model's name of the same gene."""
    if modality not in model.modalities_:
        raise ValueError(f"The model has no {modality!r} modality, so {what} cannot be perturbed.")
    features = pd.Index(model.feature_space.maps[modality].features.astype(str))
    idx = features.get_indexer(list(names))
    if (idx < 0).any():
        bad = [n for n, i in zip(names, idx, strict=True) if i < 0]
        lower = {f.lower(): f for f in features}
        close = {n: lower[n.strip().lower()] for n in bad if n.strip().lower() in lower}
        hint = f" Names must match exactly (case, spaces): did you mean {list(close.values())[:5]}?" if close else ""
        if not close and modality == "atac":  # chr1-100-200 / chr1_100_200 for chr1:100-200
            hint = f" Peaks are named as in the data, e.g. {features[0]!r}."
        if not close and modality == "rna":  # an Ensembl id (or another spelling) of a gene the model has
            hint = _same_gene_hint(model, bad, features)
        raise KeyError(
            f"Unknown {what} {bad[:5]}: the model knows {len(features)} {modality} features, the var_names of "
            f"mdata.mod[{model.modalities_[modality]!r}] it was set up with "
            f"(model.feature_space.maps[{modality!r}].features).{hint}"
        )
    return idx


def _same_gene_hint(model, names: list[str], features: pd.Index) -> str:
    """`` Ensembl id -> the model's feature of that gene`` for ``names`` that are another name of a gene the model
    has (placed on the same anchor by the gene tables); ``""`` when none is."""
    space = model.feature_space
    anchor_of = pd.Series(features, index=np.asarray(space.anchors, dtype=object)[space.maps["rna"].anchor])
    anchor_of = anchor_of[~anchor_of.index.duplicated()]
    placed = map_genes(names, model._setup_args.get("species", "human"), "auto")["anchor"]
    same = {n: anchor_of[a] for n, a in zip(names, placed, strict=True) if a in anchor_of.index and n != anchor_of[a]}
    return f" They name genes the model has under other names: {dict(list(same.items())[:5])}." if same else ""


__all__ = ["feature_index"]
