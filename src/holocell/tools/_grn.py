"""``holocell.tl.grn``: TF -> target scores from gene embeddings and in-silico knockouts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ..priors import load_grn_edges

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell

GRN_COLUMNS = ("tf", "target", "similarity", "knockout_effect", "score", "rank")


def grn(
    model: HoloCell,
    tfs: Sequence[str] | None = None,
    *,
    targets: Sequence[str] | None = None,
    method: Literal["embedding", "knockout", "both"] = "both",
    mdata: MuData | None = None,
    sources: Sequence[str] | None = None,
    n_cells: int | None = 500,
    n_steps: int = 4,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> pd.DataFrame:
    """Rank TF -> target edges from the model.

    Two scores are available:

    - ``similarity``: cosine similarity of the TF's and the target's gene embeddings
      (:meth:`~holocell.HoloCell.get_gene_embeddings`); cheap, no cells needed.
    - ``knockout_effect``: mean predicted shift of the target's RNA (log1p CP10k) when the TF's
      RNA is knocked out in silico (:meth:`~holocell.HoloCell.predict_perturbation`, RNA
      regenerated), over ``n_cells`` cells of ``mdata``. Costs one regeneration per TF.

    ``score`` is the absolute similarity (``method="embedding"``), the absolute knockout effect
    (``"knockout"``), or the mean of their percentile ranks among all candidate edges (``"both"``).

    Parameters
    ----------
    model
        Trained :class:`~holocell.HoloCell` with an RNA modality.
    tfs
        Regulators (RNA feature names). Default: the RNA ``.var["is_tf"]`` genes of the
        registered MuData when that column exists; otherwise the genes whose anchor is a regulator
        in the shipped Pathway Commons GRN (:func:`holocell.priors.load_grn_edges`); every gene
        only when none is.
    targets
        Candidate targets (default: every RNA gene). Self-edges are left out.
    method
        Which score(s) to compute.
    mdata
        Cells for the knockouts (default: the registered MuData).
    sources
        Conditioning modalities during the knockouts (see :func:`holocell.tl.perturb`).
    n_cells
        Cells sampled for the knockouts (``None``: all).
    n_steps, batch_size, device, seed, progress_bar
        Regeneration settings.

    Returns
    -------
    DataFrame with columns ``tf``, ``target``, ``similarity`` (NaN unless computed),
    ``knockout_effect`` (signed; NaN unless computed), ``score`` and ``rank`` (1 = strongest),
    sorted by ``rank``.
    """
    if method not in ("embedding", "knockout", "both"):
        raise ValueError(f"method must be 'embedding', 'knockout' or 'both', got {method!r}.")
    if "rna" not in model.modalities_:
        raise ValueError("grn needs a model with an RNA modality.")
    genes = pd.Index(model.feature_space.maps["rna"].features.astype(str))
    if tfs is None:
        var = model.adata.mod[model.modalities_["rna"]].var
        anchors = model.feature_space.maps["rna"].report["anchor"].astype(str).to_numpy()
        tfs = default_tfs(genes, anchors, var)
    tfs = [tfs] if isinstance(tfs, str) else list(tfs)
    targets = list(genes) if targets is None else list(targets)
    for what, names in (("TFs", tfs), ("targets", targets)):
        unknown = [n for n in names if n not in genes]
        if unknown:
            raise KeyError(f"Unknown {what} {unknown[:5]}: use RNA var_names the model was set up with.")
    if not tfs or not targets:
        raise ValueError("Need at least one TF and one target.")

    pairs = pd.MultiIndex.from_product([tfs, targets], names=["tf", "target"])
    table = pd.DataFrame(index=pairs).reset_index()
    table = table[table["tf"] != table["target"]].reset_index(drop=True)
    table["similarity"] = np.nan
    table["knockout_effect"] = np.nan
    if method in ("embedding", "both"):
        emb = model.get_gene_embeddings("rna")
        unit = emb.to_numpy() / np.linalg.norm(emb.to_numpy(), axis=1, keepdims=True).clip(min=1e-12)
        unit = pd.DataFrame(unit, index=emb.index)
        sim = unit.loc[tfs].to_numpy() @ unit.loc[targets].to_numpy().T  # (n_tfs, n_targets)
        sim = pd.DataFrame(sim, index=tfs, columns=targets).stack()
        table["similarity"] = sim.loc[list(zip(table["tf"], table["target"], strict=True))].to_numpy()
    if method in ("knockout", "both"):
        mdata = model.adata if mdata is None else mdata
        rng = np.random.default_rng(seed)
        indices = None
        if n_cells is not None and n_cells < mdata.n_obs:
            indices = np.sort(rng.choice(mdata.n_obs, n_cells, replace=False))
        effects = {}
        for tf in tfs:
            res = model.predict_perturbation(
                mdata,
                genes=[tf],
                regenerate=["rna"],
                sources=sources,
                indices=indices,
                n_steps=n_steps,
                batch_size=batch_size,
                device=device,
                seed=seed,
                progress_bar=progress_bar,
            )
            shift = res.shift("rna")[res.applied]
            effects[tf] = pd.Series(np.nanmean(shift, axis=0) if len(shift) else np.nan, index=genes)
        effect = pd.DataFrame(effects).T.stack()
        table["knockout_effect"] = effect.loc[list(zip(table["tf"], table["target"], strict=True))].to_numpy()
    if method == "embedding":
        table["score"] = table["similarity"].abs()
    elif method == "knockout":
        table["score"] = table["knockout_effect"].abs()
    else:
        table["score"] = (
            table["similarity"].abs().rank(pct=True) + table["knockout_effect"].abs().rank(pct=True)
        ) / 2
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table[list(GRN_COLUMNS)]


def default_tfs(genes: pd.Index, anchors: Sequence[str], var: pd.DataFrame) -> list[str]:
    """Default regulators: ``var["is_tf"]``, else genes on a known regulator's anchor, else all genes.

    Parameters
    ----------
    genes
        RNA feature names the model was set up with.
    anchors
        Anchor name of each feature in ``genes`` (canonical human symbol; mouse genes sit on their
        human ortholog's anchor).
    var
        The RNA ``.var`` of the registered data.
    """
    if "is_tf" in var:
        return list(var.index[var["is_tf"].astype(bool)])
    regulators = set(load_grn_edges()["tf"])
    known = [g for g, a in zip(genes, anchors, strict=True) if a in regulators]
    return known if known else list(genes)
