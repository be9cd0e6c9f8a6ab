"""Plots of ``hc.tl.perturb`` and ``hc.tl.grn`` results."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ._checks import check_count, require_modality, require_obs_column, require_table, require_unique, shown
from ._utils import check_save, finish, groups_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from mudata import MuData


def perturbation(
    mdata: MuData,
    key: str = "holocell_perturb",
    *,
    modality: Literal["rna", "protein"] = "rna",
    kind: Literal["bar", "heatmap"] = "bar",
    groupby: str | None = None,
    n_top: int = 10,
    include_edited: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """Top responders of :func:`holocell.tl.perturb`.

    Parameters
    ----------
    mdata
        MuData after :func:`holocell.tl.perturb`.
    key
        The ``key_added`` used by :func:`~holocell.tl.perturb`.
    modality
        ``"rna"`` or ``"protein"`` (a regenerated modality).
    kind
        ``"bar"``: mean shift of the top responders. ``"heatmap"``: mean shift per ``groupby``
        group (rows) of the top responders (columns).
    groupby
        Column of ``mdata.obs`` for ``kind="heatmap"``: one row per group that has cells, in the order of a
        categorical's categories (sorted values otherwise, numbers by value), as :func:`~holocell.pl.generated_vs_measured`
        orders its groups; cells without a value are left out. A grouping column: categorical, strings, bool or
        integers, with at most 50 groups that have cells; a float column (e.g. counts per cell) is refused: bin
        it first, e.g. ``mdata.obs["bin"] = pd.cut(mdata.obs["total_counts"], 5)``.
    n_top
        Number of features shown.
    include_edited
        Also show the edited features themselves (their shift is the edit).
    ax, show, save
        See :mod:`holocell.pl`.

    Returns
    -------
    The matplotlib Axes.

    Raises
    ------
    KeyError
        ``mdata.uns`` has no perturbation summary under ``key``, ``mdata.mod`` lacks the shift modality
        ``f"{key}_{modality}"`` (heatmap), or ``groupby`` is no column of ``mdata.obs`` (the message says how to
        reach a column of a modality's own ``.obs``).
    TypeError, ValueError
        ``n_top`` is not an integer >= 1, an unknown ``modality`` or ``kind``, no ``groupby`` for the heatmap (or
        no cell of the shift modality with a ``groupby`` value, a float ``groupby`` column, or more than 50
        groups), no responders to show, or a ``save`` that is not a path. Nothing is drawn or saved.
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    import matplotlib.pyplot as plt

    given_ax = ax is not None
    check_count(n_top, "n_top")
    check_save(save)
    if kind not in ("bar", "heatmap"):
        raise ValueError(f"kind must be 'bar' or 'heatmap', got {kind!r}.")
    if modality not in ("rna", "protein"):
        raise ValueError(
            f"modality must be 'rna' or 'protein' (a modality hc.tl.perturb regenerates), got {modality!r}."
        )
    entry = mdata.uns.get(key) if hasattr(mdata, "uns") else None
    if not isinstance(entry, Mapping) or "summary" not in entry:
        raise KeyError(
            f"mdata.uns has no {key!r} perturbation summary; run hc.tl.perturb(mdata, model, ..., key_added={key!r}) "
            "first, or pass key=<the key_added of an earlier perturb>."
        )
    summary = entry["summary"]
    summary = require_table(
        summary if isinstance(summary, pd.DataFrame) else pd.DataFrame(summary),
        ("modality", "feature", "mean_shift", "edited"),
        arg=f"mdata.uns[{key!r}]['summary']",
        what=f"the summary hc.tl.perturb(..., key_added={key!r}) writes",
    )
    top = summary[summary["modality"] == modality]
    if not include_edited:
        top = top[~top["edited"].astype(bool)]
    top = top.head(n_top)
    if top.empty:
        raise ValueError(
            f"No {modality!r} responders in mdata.uns[{key!r}]['summary']; its modalities: "
            f"{shown(pd.unique(summary['modality'].astype(str)))}."
        )
    params = entry.get("params", {})
    edited = [*list(np.atleast_1d(params.get("genes", []))), *list(np.atleast_1d(params.get("cres", [])))]
    title = f"{params.get('mode', '')} {', '.join(map(str, edited))}: {modality} response".strip()
    if kind == "bar":
        if ax is None:
            _, ax = plt.subplots(figsize=(4, 0.3 * len(top) + 1))
        values = top["mean_shift"].to_numpy()[::-1]
        ax.barh(top["feature"].astype(str).to_numpy()[::-1], values, color=np.where(values > 0, "C3", "C0"))
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("mean predicted shift")
    elif kind == "heatmap":
        if groupby is None:
            raise ValueError("kind='heatmap' needs groupby=<column of mdata.obs>, e.g. groupby='celltype'.")
        require_obs_column(mdata, groupby, arg="groupby")
        if pd.api.types.is_float_dtype(mdata.obs[groupby].dtype):
            raise ValueError(
                f"groupby={groupby!r} is a float column ({mdata.obs[groupby].dtype}): the heatmap has one row per "
                "group, and every distinct value would be a group. Bin it into a categorical column first, e.g. "
                f"mdata.obs['{groupby}_bin'] = pd.cut(mdata.obs[{groupby!r}], 5), and pass groupby='{groupby}_bin'; "
                "or pass a categorical column such as the cell type."
            )
        name = f"{key}_{modality}"
        shift = require_modality(
            mdata,
            name,
            arg="key= and modality=",
            how=f"hc.tl.perturb(..., key_added={key!r}) writes it when it regenerates {modality!r}; run it again "
            "(regenerate=None regenerates every modality the model has), or use kind='bar'.",
        )
        names = pd.Index(shift.var["measured_name"].astype(str) if "measured_name" in shift.var else shift.var_names)
        cols = names.get_indexer(top["feature"].astype(str))
        if (cols < 0).any():
            raise ValueError(
                f"mdata.mod[{name!r}] lacks responders of the summary "
                f"{shown(top['feature'][cols < 0])}; it no longer matches mdata.uns[{key!r}]: run hc.tl.perturb again."
            )
        x = np.asarray(shift.X)[:, cols]
        # each row's group by cell name: mudata may hold the modality's rows in another order than mdata.obs
        # (after mdata[names] or update()), and pairing them by position put cells in other cells' groups
        require_unique(mdata.obs_names, what="mdata (its cells, obs_names)", fix="mdata.obs_names_make_unique()")
        codes, order = groups_of(mdata.obs[groupby].reindex(shift.obs_names))
        labelled = codes >= 0  # cells without a group are left out (not a group 'nan')
        if not labelled.any():
            raise ValueError(
                f"None of the {len(codes)} cells of mdata.mod[{name!r}] has a value in mdata.obs[{groupby!r}]; "
                "pass groupby=<a column that labels them>."
            )
        n_groups = len(np.unique(codes[labelled]))
        if n_groups > _MAX_HEATMAP_GROUPS:
            raise ValueError(
                f"groupby={groupby!r} has {n_groups} groups with cells, one heatmap row each (at most "
                f"{_MAX_HEATMAP_GROUPS}): pass a categorical column with fewer groups, such as the cell type, or bin "
                f"it first, e.g. mdata.obs['{groupby}_bin'] = pd.cut(mdata.obs[{groupby!r}], 5)."
            )
        # groups in the column's order (its categories; sorted values otherwise), those with cells only
        means = pd.DataFrame(x[labelled], columns=top["feature"]).groupby(codes[labelled]).mean()
        means.index = pd.Index([order[c] for c in means.index])
        if ax is None:
            _, ax = plt.subplots(figsize=(0.4 * len(top) + 2, 0.35 * len(means) + 1.5))
        lim = float(np.nanmax(np.abs(means.to_numpy()))) or 1.0
        im = ax.imshow(means.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(means.shape[1]), means.columns.astype(str), rotation=90)
        ax.set_yticks(range(means.shape[0]), means.index.astype(str))
        ax.figure.colorbar(im, ax=ax, label="mean predicted shift")
    ax.set_title(title)
    return finish(ax, show, save, given_ax)


#: the heatmap of :func:`perturbation` draws at most this many groups (rows)
_MAX_HEATMAP_GROUPS = 50


def grn_scores(
    edges: pd.DataFrame,
    tf: str,
    *,
    n_top: int = 10,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """Bar chart of a TF's top targets in a :func:`holocell.tl.grn` table.

    Parameters
    ----------
    edges
        The edge table :func:`holocell.tl.grn` writes to ``mdata.uns[key_added]`` (default
        ``mdata.uns["holocell_grn"]``), not the MuData itself.
    tf
        Regulator to show.
    n_top
        Number of targets (an integer >= 1).
    ax, show, save
        See :mod:`holocell.pl`.

    Returns
    -------
    The matplotlib Axes.

    Raises
    ------
    TypeError
        ``edges`` is not a DataFrame (e.g. the MuData), ``tf`` is not one name (e.g. a list: draw one plot per
        TF), ``n_top`` is not an integer, or ``save`` is not a path.
    ValueError
        ``edges`` lacks the columns ``tf``, ``target``, ``score`` or ``rank``, ``n_top < 1``, or ``tf`` has no edges
        in the table. Nothing is drawn or saved.
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    import matplotlib.pyplot as plt

    given_ax = ax is not None
    if not isinstance(tf, str):
        raise TypeError(
            f"tf must be one regulator name (str), e.g. 'SPI1', got {type(tf).__name__}; for several, draw one plot "
            "each: for tf in tfs: hc.pl.grn_scores(edges, tf, ...)."
        )
    check_save(save)
    edges = require_table(
        edges,
        ("tf", "target", "score", "rank"),
        arg="edges",
        what="the table hc.tl.grn(mdata, model, tfs=...) writes to mdata.uns[key_added], e.g. "
        "mdata.uns['holocell_grn'] (the default key)",
    )
    check_count(n_top, "n_top")
    rows = edges[edges["tf"] == tf].sort_values("rank").head(n_top)
    if rows.empty:
        raise ValueError(
            f"No edges from {tf!r} in the table; its TFs: {shown(pd.unique(edges['tf'].astype(str)))}. Score it "
            f"with hc.tl.grn(mdata, model, tfs=[{tf!r}])."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 0.3 * len(rows) + 1))
    ax.barh(rows["target"].astype(str).to_numpy()[::-1], rows["score"].to_numpy()[::-1], color="C2")
    ax.set_xlabel("edge score")
    ax.set_title(f"{tf}: top predicted targets")
    return finish(ax, show, save, given_ax)


__all__ = ["grn_scores", "perturbation"]
