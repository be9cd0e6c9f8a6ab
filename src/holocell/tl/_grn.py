"""``holocell.tl.grn``: TF -> target scores from gene embeddings and in-silico knockouts."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._warnings import HoloCellDeprecationWarning, HoloCellWarning
from ..model._args import as_names, check_count, check_seed, modality_cells
from ..model._feature_names import feature_index
from ..priors import load_grn_edges
from ._keys import GRN_COLUMNS, GRN_MARK, check_mudata, check_outputs, working_copy

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell


def _accept_old_call(func):
    """The old form ``grn(model, tfs, ..., mdata=...)`` returned the table and wrote nothing: it still does,
    with a FutureWarning."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ..model import HoloCell

        first = args[0] if args else kwargs.get("mdata")
        if not isinstance(first, HoloCell) and not (not args and "mdata" not in kwargs and "model" in kwargs):
            return func(*args, **kwargs)
        warnings.warn(
            "hc.tl.grn(model, tfs, ...) is deprecated: call hc.tl.grn(mdata, model, tfs=...), which writes the "
            "edge table to mdata.uns[key_added] (default 'holocell_grn').",
            HoloCellDeprecationWarning,
            stacklevel=2,
        )
        model = args[0] if args else kwargs.pop("model")
        if len(args) > 2:
            raise TypeError("grn(model, tfs) takes 2 positional arguments at most.")
        if len(args) == 2:
            if "tfs" in kwargs:
                raise TypeError("grn() got multiple values for argument 'tfs'.")
            kwargs["tfs"] = args[1]
        return edge_table(model, **kwargs)

    return wrapper


@_accept_old_call
def grn(
    mdata: MuData,
    model: HoloCell,
    *,
    tfs: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    method: Literal["embedding", "knockout", "both"] = "both",
    sources: Sequence[str] | None = None,
    n_cells: int | None = 500,
    n_steps: int = 4,
    key_added: str = "holocell_grn",
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
    copy: bool = False,
) -> MuData | None:
    """Rank TF -> target edges from the model and write the table to ``mdata.uns[key_added]``.

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
    mdata
        MuData the model was set up with (or one with the same features): the cells of the knockouts,
        and its RNA ``.var["is_tf"]`` names the default regulators.
    model
        Trained :class:`~holocell.HoloCell` with an RNA modality.
    tfs
        Regulators (RNA feature names). Default: the RNA ``.var["is_tf"]`` genes when that column
        exists; otherwise the genes whose anchor is a regulator in the shipped Pathway Commons GRN
        (:func:`holocell.priors.load_grn_edges`: any gene with a controls-expression-of edge, TFs and others
        alike, e.g. CD2 or CD14 on PBMC); every gene only when none is. Pass ``tfs=`` (or ``var["is_tf"]``)
        for a list of real TFs.
    targets
        Candidate targets (default: every RNA gene). Self-edges are left out.
    method
        Which score(s) to compute.
    sources
        Conditioning modalities during the knockouts (see :func:`holocell.tl.perturb`).
    n_cells
        Cells with RNA sampled for the knockouts (``None``: all); at least 1.
    n_steps, batch_size, device, seed, progress_bar
        Regeneration settings.
    key_added
        ``.uns`` key of the table. A table of an earlier ``grn`` run there (all of grn's columns, and its index
        named ``"holocell_grn_edge"``) is replaced; any other entry (the user's data, also another tool's edge
        table with the same columns) is never replaced: ``ValueError``.
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.uns[key_added]``: a DataFrame with
    columns ``tf``, ``target``, ``similarity`` (NaN unless computed), ``knockout_effect`` (signed; NaN
    unless computed), ``score`` and ``rank`` (1 = strongest), sorted by ``rank``; its index (0, 1, ...) is named
    ``"holocell_grn_edge"``, grn's mark (kept in ``.h5mu`` files), by which a rerun knows the table as its own.

    Examples
    --------
    >>> hc.tl.grn(mdata, model, tfs=["GATA1", "SPI1"], method="embedding")
    >>> hc.pl.grn_scores(mdata.uns["holocell_grn"], "GATA1")
    """
    check_mudata(mdata, "grn")
    check_outputs(mdata, key_added, "grn")
    mdata = working_copy(mdata, copy)
    mdata.uns[key_added] = edge_table(
        model,
        mdata,
        tfs=tfs,
        targets=targets,
        method=method,
        sources=sources,
        n_cells=n_cells,
        n_steps=n_steps,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress_bar=progress_bar,
    )
    return mdata if copy else None


LARGE_GRN_PAIRS = 1_000_000
"""Above this many TF x target pairs (a table of about 150 MB), or :data:`LARGE_GRN_KNOCKOUTS` knockouts, ``grn``
warns before the work."""
LARGE_GRN_KNOCKOUTS = 200


def _warn_if_large(n_tfs: int, n_targets: int, method: str, n_cells: int | None) -> None:
    """A ``HoloCellWarning`` with the size of a run that may take hours or gigabytes (every gene of a large panel as
    TF and target: 20,000 genes give 15 million edges and one knockout per TF)."""
    knockouts = method != "embedding" and n_tfs > LARGE_GRN_KNOCKOUTS
    if n_tfs * n_targets <= LARGE_GRN_PAIRS and not knockouts:
        return
    cost = f", and {n_tfs} in-silico knockouts over {n_cells or 'all'} cells" if method != "embedding" else ""
    warnings.warn(
        f"grn scores {n_tfs:,} TFs x {n_targets:,} targets = {n_tfs * n_targets:,} edges (a table of about "
        f"{n_tfs * n_targets * 150 / 1e9:.1f} GB in memory){cost}; this can take hours. Pass tfs= and targets= "
        "(e.g. known regulators and the genes of interest) to score fewer.",
        HoloCellWarning,
        stacklevel=4,
    )


def edge_table(
    model: HoloCell,
    mdata: MuData | None = None,
    tfs: Sequence[str] | None = None,
    *,
    targets: Sequence[str] | None = None,
    method: Literal["embedding", "knockout", "both"] = "both",
    sources: Sequence[str] | None = None,
    n_cells: int | None = 500,
    n_steps: int = 4,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
) -> pd.DataFrame:
    """The ranked edge table of :func:`grn` (``mdata``: default the registered MuData)."""
    if method not in ("embedding", "knockout", "both"):
        raise ValueError(f"method must be 'embedding', 'knockout' or 'both', got {method!r}.")
    if "rna" not in model.modalities_:
        raise ValueError("grn needs a model with an RNA modality.")
    n_cells = check_count(n_cells, "n_cells", none_ok=True)
    check_count(n_steps, "n_steps")
    check_seed(seed)  # before any work (iter_perturbations checks it only at its first gene)
    check_count(batch_size, "batch_size", none_ok=True)
    mdata = model.adata if mdata is None else mdata
    rna = model.modalities_["rna"]
    has_rna = modality_cells(mdata, model.modalities_) if tfs is None or method != "embedding" else None
    genes = pd.Index(model.feature_space.maps["rna"].features.astype(str))
    if tfs is None:
        space = model.feature_space  # anchor names from the map itself: a loaded model's report is empty
        anchors = np.asarray(space.anchors, dtype=object)[space.maps["rna"].anchor].astype(str)
        tfs = default_tfs(genes, anchors, mdata.mod[rna].var)
    tfs = as_names(tfs, "tfs")
    targets = list(genes) if targets is None else as_names(targets, "targets")
    for what, names in (("TFs", tfs), ("targets", targets)):
        feature_index(model, "rna", names, what)  # KeyError naming unknown ones, with the close names
    if not tfs or not targets:
        raise ValueError("Need at least one TF and one target.")
    if len(tfs) == 1 and targets == tfs:  # names are unique, so every other choice leaves an edge
        raise ValueError(f"The only candidate edge is the self-edge {tfs[0]} -> {tfs[0]}, which grn leaves out.")

    _warn_if_large(len(tfs), len(targets), method, n_cells)
    pairs = pd.MultiIndex.from_product([tfs, targets], names=["tf", "target"])
    table = pd.DataFrame(index=pairs).reset_index()
    table = table[table["tf"] != table["target"]].reset_index(drop=True)
    table["similarity"] = np.nan
    table["knockout_effect"] = np.nan
    edges = list(zip(table["tf"], table["target"], strict=True))
    if method in ("embedding", "both"):
        emb = model.get_gene_embeddings("rna")
        unit = emb.to_numpy() / np.linalg.norm(emb.to_numpy(), axis=1, keepdims=True).clip(min=1e-12)
        unit = pd.DataFrame(unit, index=emb.index)
        sim = unit.loc[tfs].to_numpy() @ unit.loc[targets].to_numpy().T  # (n_tfs, n_targets)
        table["similarity"] = pd.DataFrame(sim, index=tfs, columns=targets).stack().loc[edges].to_numpy()
    if method in ("knockout", "both"):
        indices = np.flatnonzero(has_rna)  # the cells a knockout applies to
        if not len(indices):
            raise ValueError(f"No cell of the MuData has RNA (mdata.mod[{rna!r}]), so no TF can be knocked out.")
        if n_cells is not None and n_cells < len(indices):
            indices = np.sort(np.random.default_rng(seed).choice(indices, n_cells, replace=False))
        effects = {}
        knockouts = model.iter_perturbations(
            mdata,
            tfs,
            mode="knockout",
            regenerate=["rna"],
            sources=sources,
            indices=indices,
            n_steps=n_steps,
            batch_size=batch_size,
            device=device,
            seed=seed,
            progress_bar=progress_bar,
        )
        for tf, res in knockouts:
            shift = res.shift("rna")[res.applied]
            effects[tf] = pd.Series(np.nanmean(shift, axis=0) if len(shift) else np.nan, index=genes)
        table["knockout_effect"] = pd.DataFrame(effects).T.stack().loc[edges].to_numpy()
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
    return table[list(GRN_COLUMNS)].rename_axis(GRN_MARK)  # grn's mark: a rerun replaces only a marked table


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
        The RNA ``.var`` of the data.
    """
    if "is_tf" in var:
        flags = var["is_tf"]
        if flags.isna().any() or not (
            pd.api.types.is_bool_dtype(flags) or (pd.api.types.is_numeric_dtype(flags) and flags.isin([0, 1]).all())
        ):
            raise ValueError(
                f"The RNA .var['is_tf'] column must be True/False for every gene, got dtype {flags.dtype} with "
                f"{int(flags.isna().sum())} missing values; fix it (e.g. var['is_tf'] = var['is_tf'] == 'True'), "
                "or pass tfs= yourself."
            )
        known = set(genes)
        flagged = [g for g in var.index[flags.astype(bool).to_numpy()] if g in known]
        if not flagged:
            raise ValueError("The RNA .var['is_tf'] column marks no gene the model knows as a TF; pass tfs=.")
        return flagged
    regulators = set(load_grn_edges()["tf"])
    known = [g for g, a in zip(genes, anchors, strict=True) if a in regulators]
    return known if known else list(genes)
