"""``holocell.tl.fate_shift``: genes whose in-silico perturbation moves cells toward another state."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._warnings import HoloCellDeprecationWarning, HoloCellWarning, user_stacklevel
from ..model._args import as_names, check_count, modality_cells
from ._keys import FATE_COLUMNS, check_mudata, check_outputs, missing_column_message, working_copy

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell

LARGE_FATE_GENES = 200
"""Above this many candidate genes (one regeneration of the source cells each) ``fate_shift`` warns before the work."""
_OLD_POSITIONAL = ("groupby", "source", "target")


def _accept_old_call(func):
    """The old form ``fate_shift(mdata, model, groupby, source, target, ...)`` returned the ranking: it
    still does, with a FutureWarning (it also writes ``mdata.uns[key_added]``, as it did)."""

    @functools.wraps(func)
    def wrapper(mdata, *args, **kwargs):
        if len(args) <= 1:
            return func(mdata, *args, **kwargs)
        if len(args) > 1 + len(_OLD_POSITIONAL):
            raise TypeError("fate_shift() takes 5 positional arguments at most.")
        for name, value in zip(_OLD_POSITIONAL, args[1:], strict=False):
            if name in kwargs:
                raise TypeError(f"fate_shift() got multiple values for argument {name!r}.")
            kwargs[name] = value
        warnings.warn(
            "hc.tl.fate_shift(mdata, model, groupby, source, target) is deprecated: pass groupby=, source=, "
            "target= by keyword; the call then returns None and the ranking is in mdata.uns[key_added]['ranking'].",
            HoloCellDeprecationWarning,
            stacklevel=2,
        )
        kwargs["copy"] = False
        func(mdata, args[0], **kwargs)
        return mdata.uns[kwargs.get("key_added", "holocell_fate_shift")]["ranking"]

    return wrapper


@_accept_old_call
def fate_shift(
    mdata: MuData,
    model: HoloCell,
    *,
    groupby: str,
    source: str,
    target: str,
    genes: Sequence[str] | None = None,
    mode: Literal["knockout", "overexpress"] = "overexpress",
    n_cells: int | None = 200,
    regenerate: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    n_steps: int = 4,
    key_added: str = "holocell_fate_shift",
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress_bar: bool | None = None,
    copy: bool = False,
) -> MuData | None:
    """Rank genes whose in-silico overexpression (or knockout) moves ``source`` cells toward ``target``.

    For each candidate gene, up to ``n_cells`` source cells are perturbed with
    :meth:`~holocell.HoloCell.predict_perturbation` and their embedding shift ``dz`` (perturbed -
    control) is added to their embedding ``z`` (from every modality they have). With the target
    centroid ``c_t`` and the source centroid ``c_s`` (mean embeddings of the populations' cells measured in a
    modality of the model; cells measured in none have no embedding),

    - ``distance_before`` = mean ``||z - c_t||``, ``distance_after`` = mean ``||z + dz - c_t||``;
    - ``score`` = ``(distance_before - distance_after) / ||c_s - c_t||``: the fraction of the way to the
      target covered (positive = toward the target);
    - ``cosine`` = cosine of the mean ``dz`` with ``c_t - c_s``.

    This follows the in-silico cell-fate analysis of GeneCompass. The data are read and checked once for
    the embeddings and once for all the perturbations, not once per gene.

    Parameters
    ----------
    mdata
        MuData the model was set up with (or one with the same features).
    model
        Trained :class:`~holocell.HoloCell` with an RNA modality.
    groupby
        Column of ``mdata.obs`` holding the populations (cells with a missing value belong to none).
    source, target
        Values of ``groupby``: the population perturbed and the one to reach.
    genes
        Candidate genes (RNA features); default every RNA gene (one regeneration each; above
        :data:`LARGE_FATE_GENES` a ``HoloCellWarning`` gives the size of the run).
    mode
        ``"overexpress"`` (default) or ``"knockout"``.
    n_cells
        Source cells with RNA sampled (``None``: all of them); at least 1.
    regenerate, sources, n_steps, batch_size, device, seed, progress_bar
        See :func:`holocell.tl.perturb`.
    key_added
        ``.uns`` key of the result. The result of an earlier ``fate_shift`` there is replaced; any other entry
        (the user's data) is never replaced: ``ValueError``.
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.uns[key_added]`` with ``"params"``
    and ``"ranking"``: a DataFrame with columns ``gene``, ``score``, ``cosine``, ``distance_before``,
    ``distance_after``, ``rank`` (1 = moves furthest toward the target), sorted by ``rank``. Genes whose edit moved
    no sampled source cell (none of them expresses the gene) are ranked last, with a ``HoloCellWarning``.
    """
    check_mudata(mdata, "fate_shift")
    check_outputs(mdata, key_added, "fate_shift")
    if not isinstance(groupby, str) or groupby not in mdata.obs:
        raise KeyError(missing_column_message(mdata, groupby, "groupby"))
    if "rna" not in model.modalities_:
        raise ValueError("fate_shift needs a model with an RNA modality.")
    if mode not in ("knockout", "overexpress"):
        raise ValueError(f"mode must be 'knockout' or 'overexpress', got {mode!r}.")
    column = mdata.obs[groupby]
    in_source = _group_mask(column, source, "source", groupby)
    in_target = _group_mask(column, target, "target", groupby)
    if str(source) == str(target) or (in_source == in_target).all():
        raise ValueError("source and target must differ.")
    all_genes = list(model.feature_space.maps["rna"].features.astype(str))
    genes = all_genes if genes is None else as_names(genes, "genes")
    if not genes:
        raise ValueError("Give at least one candidate gene.")
    model._feature_index("rna", genes, "genes")  # every name checked before any work
    n_cells = check_count(n_cells, "n_cells", none_ok=True)
    if len(genes) > LARGE_FATE_GENES:
        warnings.warn(
            f"fate_shift regenerates the {source!r} cells once per candidate gene: {len(genes):,} genes over "
            f"{n_cells or 'all'} cells, which can take hours on a CPU. Pass genes= (e.g. transcription factors or "
            "genes of interest) to rank fewer.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    # every perturbation setting checked before the embedding pass (iter_perturbations checks them at its first gene);
    # the checked values go on, so a generator of sources / regenerate is read once
    settings = model._perturb_settings(genes[:1], None, mode, regenerate, sources, 0.99, "staged", n_steps, batch_size,
                                       seed)  # fmt: skip
    regenerate, sources = settings["regenerate"], settings["sources"]
    src = np.flatnonzero(in_source & modality_cells(mdata, model.modalities_))
    if not len(src):
        rna = model.modalities_["rna"]
        raise ValueError(f"No {source!r} cell has RNA (mdata.mod[{rna!r}]), so no gene can be perturbed in them.")

    mdata = working_copy(mdata, copy)
    # cells measured in no registered modality have no embedding (NaN rows): left out of the centroids
    z, empty, _ = model._latent(mdata, None, None, batch_size, device, progress_bar)
    if not (in_target & ~empty).any():
        raise ValueError(
            f"No {target!r} cell is measured in a modality of the model ({', '.join(model.modalities_.values())}), "
            "so the target population has no position in the embedding."
        )
    c_s = z[in_source & ~empty].mean(0)  # src holds source cells with RNA: never empty
    c_t = z[in_target & ~empty].mean(0)
    span = max(float(np.linalg.norm(c_t - c_s)), 1e-12)
    if n_cells is not None and n_cells < len(src):
        src = np.sort(np.random.default_rng(seed).choice(src, n_cells, replace=False))

    rows = []
    perturbations = model.iter_perturbations(
        mdata,
        genes,
        mode=mode,
        regenerate=regenerate,
        sources=sources,
        indices=src,
        n_steps=n_steps,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress_bar=progress_bar,  # one bar over the genes
    )
    still = []  # genes whose edit moved no sampled source cell (e.g. knocked out where none expresses them)
    for gene, res in perturbations:
        cells = src[res.applied[src]]  # every one: src holds cells with RNA
        dz = res.embedding_perturbed[cells] - res.embedding_control[cells]
        if not np.abs(np.nan_to_num(dz)).any():
            still.append(gene)
        before = np.linalg.norm(z[cells] - c_t, axis=1).mean()
        after = np.linalg.norm(z[cells] + dz - c_t, axis=1).mean()
        mean_dz = dz.mean(0)
        cosine = float(mean_dz @ (c_t - c_s) / max(np.linalg.norm(mean_dz) * span, 1e-12))
        rows.append(
            {
                "gene": gene,
                "score": (before - after) / span,
                "cosine": cosine,
                "distance_before": before,
                "distance_after": after,
            }
        )
    table = pd.DataFrame(rows)
    table["moved"] = ~table["gene"].isin(still)  # a gene that moved no cell goes last, whatever its score of 0
    table = table.sort_values(["moved", "score"], ascending=False, kind="stable").reset_index(drop=True)
    if still:
        warnings.warn(
            f"{len(still)} of {len(table)} candidate genes moved none of the {len(src)} {source!r} cells (e.g. "
            f"{still[:5]}): their {mode} changed nothing (a gene none of these cells expresses, or no cell for an "
            "overexpression); they are ranked last, with score 0.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    table["rank"] = np.arange(1, len(table) + 1)
    table = table[list(FATE_COLUMNS)]
    mdata.uns[key_added] = {
        "params": {"groupby": groupby, "source": str(source), "target": str(target), "mode": mode},
        "ranking": table,
    }
    return mdata if copy else None


def _group_mask(column: pd.Series, value, what: str, groupby: str) -> np.ndarray:
    """The cells whose ``column`` value is ``value`` (compared as text, then as a value: ``0`` finds ``0.0``, and
    ``"1"`` finds ``1.0``; missing values belong to no group)."""
    valid = column.notna().to_numpy()
    mask = valid & (column.astype(str).to_numpy() == str(value))
    if not mask.any():
        try:
            mask = valid & np.asarray(column == value, dtype=bool)
        except (TypeError, ValueError):
            pass
    if not mask.any():  # "1" (e.g. from the command line) for a float column's 1.0
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and np.isfinite(number):
            mask = valid & (pd.to_numeric(column, errors="coerce").to_numpy(dtype=float) == number)
    if not mask.any():
        values = sorted(map(str, column.dropna().unique()))
        raise ValueError(
            f"{what} {value!r} is not a value of mdata.obs[{groupby!r}] that any cell has; values: {values[:20]}."
        )
    return mask
