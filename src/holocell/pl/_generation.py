"""Measured vs generated values: one feature at a time, and the distribution of per-feature scores."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._warnings import HoloCellWarning, user_stacklevel
from ._checks import require_counts, require_modality, require_obs_column, require_unique, shown
from ._utils import NA_COLOR, check_save, finish, group_colors, groups_of, new_axes

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes
    from mudata import MuData
    from numpy.typing import ArrayLike


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _target(gen: ad.AnnData) -> str:
    params = gen.uns.get("holocell", {}).get("params", {})
    if "target" not in params:
        raise ValueError(
            "The generated modality has no uns['holocell']['params']['target']; was it made by generate?"
        )
    return str(params["target"])


class Paired(NamedTuple):
    truth: np.ndarray
    prediction: np.ndarray
    features: pd.Index
    cells: pd.Index
    target: str


def paired_values(
    mdata: MuData, measured: str | ad.AnnData, generated: str, layer: str | None = None
) -> Paired:
    """Measured values (on the generated modality's scale) and generated ones, for the cells and features in both.

    Cells whose generated row is NaN (measured in none of the source modalities, so nothing was generated for
    them: e.g. protein-only cells of a mosaic when generating protein) are left out.

    Parameters
    ----------
    mdata
        MuData holding the generated modality (and the measured one when ``measured`` is a name).
    measured
        Name of the measured modality in ``mdata.mod``, or an AnnData of raw counts (e.g. the held-out part
        returned by :func:`holocell.data.hold_out`).
    generated
        Name of the generated modality (:meth:`holocell.HoloCell.generate`'s ``key_added``).
    layer
        Layer of the measured data with raw counts (default ``.X``). The counts are transformed here, so
        normalised values (non-integer or negative for RNA and protein, e.g. ``.X`` after ``sc.pp.log1p`` or
        muon's CLR; NaN or negative for ATAC) are refused, as :meth:`holocell.HoloCell.setup_mudata` refuses
        them, never transformed a second time.

    Returns
    -------
    ``Paired(truth, prediction, features, cells, target)``: cells x features arrays (RNA: log1p CP10k;
    protein: CLR; ATAC: 0/1 accessibility), the features' and cells' names, and the generated modality
    (``"rna"``, ``"protein"`` or ``"atac"``). Only cells with generated values are included.

    Raises
    ------
    KeyError
        ``mdata.mod`` lacks ``generated`` or the named ``measured`` modality, or the measured data lacks ``layer``
        (the message lists what there is and how to make it).
    TypeError
        ``mdata`` is no MuData, or ``measured`` is neither a name nor an AnnData.
    ValueError
        The measured data and the generated modality share no cells or no features, none of the shared cells
        has generated values, the measured values are not raw counts (pass ``layer='counts'``), or names that
        pair the values repeat: the measured data's cells (``obs_names``) or shared features (``var_names``), or
        the generated modality's (the message names them and ``obs_names_make_unique()`` /
        ``var_names_make_unique()``).
    """
    from ..evaluation import clr, log_normalize

    gen = require_modality(
        mdata,
        generated,
        arg="generated=",
        how=f"Make it with model.generate(mdata, target=..., key_added={generated!r}) (or hc.tl.generate), or "
        "pass generated=<the key_added of an earlier generate>.",
    )
    if isinstance(measured, str):
        meas = require_modality(
            mdata,
            measured,
            arg="measured=",
            how="Pass measured=<the measured modality's name in mdata.mod>, or an AnnData of raw counts (e.g. the "
            "held-out cells from hc.data.hold_out).",
        )
    elif hasattr(measured, "obs_names") and hasattr(measured, "var_names"):
        meas = measured
    else:
        raise TypeError(
            f"measured must be the name (str) of a modality in mdata.mod or an AnnData of raw counts, got "
            f"{type(measured).__name__}."
        )
    if layer is not None and layer not in meas.layers:
        raise KeyError(
            f"The measured data has no layer {layer!r} (layer=); its layers: {shown(meas.layers)}. Pass the layer "
            "with raw counts, or layer=None to use .X."
        )
    target = _target(gen)
    names = pd.Index(gen.var["measured_name"].astype(str) if "measured_name" in gen.var else gen.var_names)
    # values are paired by name: a repeated name would pair the wrong cells or features (or fail in pandas)
    source = f"measured={measured!r}" if isinstance(measured, str) else "the measured AnnData"
    meas_fix = f"mdata[{measured!r}]" if isinstance(measured, str) else "measured"
    require_unique(names, what=f"generated={generated!r}", fix="make it again with model.generate(mdata, ...)")
    require_unique(gen.obs_names, what=f"generated={generated!r} (its cells)", fix="mdata.obs_names_make_unique()")
    cells = meas.obs_names[meas.obs_names.isin(gen.obs_names)]
    require_unique(cells, what=f"{source} (its cells, obs_names)", fix=f"{meas_fix}.obs_names_make_unique()")
    keep = meas.var_names.isin(names)
    if len(cells) == 0 or not keep.any():
        raise ValueError(f"The measured data and {generated!r} share no cells or no features.")
    features = meas.var_names[keep]
    require_unique(
        features,
        what=f"{source} (its features, var_names)",
        fix=f"{meas_fix}.var_names_make_unique()" + (", then mdata.update()" if isinstance(measured, str) else ""),
    )
    prediction = _dense(gen[cells].X)[:, names.get_indexer(features)]
    # cells generate had no source modality for (NaN rows) have no prediction to compare: left out
    generated_rows = np.isfinite(prediction).all(axis=1)
    if not generated_rows.any():
        raise ValueError(
            f"None of the {len(cells)} cells of the measured data has generated values in {generated!r} (their rows "
            "are NaN: generate had no source modality for them); compare cells measured in a source modality too."
        )
    cells, prediction = cells[generated_rows], prediction[generated_rows]
    counts = meas[cells].layers[layer] if layer is not None else meas[cells].X
    require_counts(counts, what=f"{source}, {'.X' if layer is None else f'layer={layer!r}'}", target=target)
    transform = {"protein": clr, "rna": log_normalize}.get(target)
    truth = transform(counts) if transform else (_dense(counts) > 0).astype(np.float64)
    truth = np.asarray(truth)[:, keep]
    return Paired(truth, prediction, features, cells, target)


def generated_vs_measured(
    mdata: MuData,
    feature: str,
    *,
    measured: str | ad.AnnData = "adt",
    generated: str = "adt_generated",
    layer: str | None = None,
    color: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """Measured vs generated values of one feature, one point per cell.

    Parameters
    ----------
    mdata
        MuData with the generated modality.
    feature
        Measured feature name (e.g. ``"cd14"``; the generated one is ``"cd14_generated"``).
    measured
        Measured modality (name in ``mdata.mod``) or an AnnData of raw counts, e.g. held-out cells.
    generated
        Generated modality (name in ``mdata.mod``).
    layer
        Layer of the measured data with raw counts (default ``.X``); normalised values are refused (see
        :func:`paired_values`).
    color
        Column of ``mdata.obs`` to colour the cells by. A grouping column (e.g. the cell type: categorical,
        strings, bool, or integers with at most 20 distinct values such as cluster numbers) gets one colour per
        group, in the order of a categorical's categories (sorted values otherwise). A numeric column (floats,
        or integers with more than 20 distinct values, e.g. counts per cell) gets a colour bar (``viridis``).
        Cells without a value are grey (``"nan"``). Colour has no effect for ATAC (a box plot of closed and
        open cells): a :class:`~holocell.HoloCellWarning` says so.
    ax
        Axes to draw on (default: a new figure).
    show
        Show the figure (default: unless ``ax`` or ``save`` is given).
    save
        Write the figure to this path (format from the extension); a figure the plot made is then closed, as
        scanpy does, unless it is shown on screen.

    Returns
    -------
    The matplotlib Axes. RNA is on the log1p CP10k scale and protein on the CLR scale on both axes;
    for ATAC, the generated accessibility probability of closed and open cells.

    Raises
    ------
    KeyError
        A missing modality or layer (see :func:`paired_values`), a ``color`` that is no column of ``mdata.obs``
        (the message says how to reach a column of a modality's own ``.obs``), or a ``feature`` not in both the
        measured and the generated data. Nothing is drawn or saved.
    TypeError
        ``feature`` is not one name (e.g. a list: draw one plot per feature), or ``save`` is not a path.
    ValueError
        The measured values are not raw counts, or cell or feature names repeat (see :func:`paired_values`).
        Nothing is drawn or saved.
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    given_ax = ax is not None
    if not isinstance(feature, str):
        raise TypeError(
            f"feature must be one feature name (str), e.g. 'cd14', got {type(feature).__name__}; for several, draw "
            "one plot each: for f in features: hc.pl.generated_vs_measured(mdata, f, ...)."
        )
    check_save(save)
    if color is not None:
        require_obs_column(mdata, color, arg="color")
        require_unique(mdata.obs_names, what="mdata (its cells, obs_names)", fix="mdata.obs_names_make_unique()")
    truth, prediction, features, cells, target = paired_values(mdata, measured, generated, layer)
    if color is not None and target == "atac":
        warnings.warn(
            f"color={color!r} has no effect for ATAC: the plot is a box plot of the generated accessibility of "
            "closed and open cells. Pass color=None, or compare groups with mdata.obs.",
            HoloCellWarning,
            stacklevel=user_stacklevel(),
        )
    if feature not in features:
        raise KeyError(
            f"{feature!r} is not a feature of both the measured data and {generated!r}; shared features include "
            f"{shown(features)}."
        )
    j = features.get_loc(feature)
    x, y = truth[:, j], prediction[:, j]
    ax = new_axes(ax)
    if target == "atac":
        ax.boxplot([y[x == 0], y[x > 0]], tick_labels=["closed", "open"])
        ax.set_xlabel("measured")
        ax.set_ylabel("generated accessibility")
    else:
        if color is not None:
            values = mdata.obs.loc[cells, color]
            (_scatter_numeric if _is_numeric(values) else _scatter_groups)(ax, x, y, values, color)
        else:
            ax.scatter(x, y, s=6, alpha=0.6, color="C0")
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        scale = "CLR" if target == "protein" else "log1p CP10k"
        ax.set_xlabel(f"measured ({scale})")
        ax.set_ylabel(f"generated ({scale})")
    r = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else np.nan
    ax.set_title(f"{feature}: r = {r:.2f}")
    return finish(ax, show, save, given_ax)


#: integer columns with more distinct values than this are coloured on a colour bar (counts), not by group
_MAX_INTEGER_GROUPS = 20


def _is_numeric(values: pd.Series) -> bool:
    """Whether ``color=`` values get a colour bar: floats, or integers with more than 20 distinct values;
    categoricals, strings, bools, integers with fewer values (cluster numbers) and empty columns are groups."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype) or not values.notna().any():
        return False
    if pd.api.types.is_float_dtype(dtype):
        return True
    return pd.api.types.is_integer_dtype(dtype) and values.nunique() > _MAX_INTEGER_GROUPS


def _scatter_groups(ax: Axes, x: np.ndarray, y: np.ndarray, values: pd.Series, color: str) -> None:
    """One colour per group, in the column's order (its categories; sorted values otherwise), so that a group
    has the same colour in every plot; cells without a label are the group 'nan', in grey."""
    codes, order = groups_of(values)
    for k, (name, c) in enumerate(zip([*order, "nan"], [*group_colors(len(order)), NA_COLOR], strict=True)):
        sel = codes == (k if k < len(order) else -1)
        if sel.any():
            ax.scatter(x[sel], y[sel], s=6, alpha=0.7, color=c, label=name)
    ax.legend(fontsize=6, markerscale=2, frameon=False, bbox_to_anchor=(1, 1), loc="upper left")


def _scatter_numeric(ax: Axes, x: np.ndarray, y: np.ndarray, values: pd.Series, color: str) -> None:
    """Cells coloured by a numeric column on a colour bar; cells without a value in grey (``"nan"``) beneath."""
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = ~np.isfinite(v)
    if missing.any():
        ax.scatter(x[missing], y[missing], s=6, alpha=0.7, color=NA_COLOR, label="nan")
        ax.legend(fontsize=6, markerscale=2, frameon=False, loc="upper left")
    points = ax.scatter(x[~missing], y[~missing], s=6, alpha=0.7, c=v[~missing], cmap="viridis")
    ax.figure.colorbar(points, ax=ax, label=color)


def feature_scores(
    mdata: MuData,
    *,
    measured: str | ad.AnnData = "adt",
    generated: str = "adt_generated",
    layer: str | None = None,
    metric: Literal["auto", "pearson", "auroc"] = "auto",
    others: Mapping[str, ArrayLike] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """Distribution of per-feature scores of a generated modality against the measured values.

    Parameters
    ----------
    mdata
        MuData with the generated modality.
    measured
        Measured modality (name in ``mdata.mod``) or an AnnData of raw counts, e.g. held-out cells.
    generated
        Generated modality (name in ``mdata.mod``).
    layer
        Layer of the measured data with raw counts (default ``.X``); normalised values are refused (see
        :func:`paired_values`).
    metric
        ``"pearson"`` (per-feature correlation; the default for RNA and protein) or ``"auroc"`` (per
        peak; the default for ATAC). Computed by :func:`holocell.evaluation.per_feature_pearson` /
        :func:`~holocell.evaluation.per_feature_auroc`; features that do not vary are left out.
    others
        More distributions to draw beside holocell's, e.g. ``{"kNN": scores}`` (a mapping of a label to numbers,
        one value per feature).
    ax, show, save
        Axes to draw on; show the figure (default: unless ``ax`` or ``save`` is given); write it to a path (a
        figure the plot made is then closed, as scanpy does, unless it is shown on screen).

    Returns
    -------
    The matplotlib Axes: one box per method, with its median in the label.

    Raises
    ------
    KeyError
        A missing modality or layer (see :func:`paired_values`); nothing is drawn or saved.
    TypeError
        ``others`` is not a mapping of labels to numbers, or ``save`` is not a path.
    ValueError
        An unknown ``metric``, measured values that are not raw counts, or repeated cell or feature names (see
        :func:`paired_values`).
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    from ..evaluation import per_feature_auroc, per_feature_pearson

    given_ax = ax is not None
    if metric not in ("auto", "pearson", "auroc"):
        raise ValueError(f"metric must be 'auto', 'pearson' or 'auroc', got {metric!r}.")
    extra = _other_scores(others)
    check_save(save)
    truth, prediction, _, _, target = paired_values(mdata, measured, generated, layer)
    metric = ("auroc" if target == "atac" else "pearson") if metric == "auto" else metric
    score = per_feature_pearson if metric == "pearson" else per_feature_auroc
    series = {"holocell": score(truth, prediction), **extra}
    series = {k: v[np.isfinite(v)] for k, v in series.items()}
    ax = new_axes(ax, (1.2 + 1.1 * len(series), 3.5))
    labels = [f"{k}\n(median {np.median(v):.2f})" if len(v) else f"{k}\n(none)" for k, v in series.items()]
    ax.boxplot(list(series.values()), tick_labels=labels, showfliers=False)
    rng = np.random.default_rng(0)
    for k, (values, c) in enumerate(zip(series.values(), group_colors(len(series)), strict=True)):
        ax.scatter(k + 1 + rng.uniform(-0.15, 0.15, len(values)), values, s=4, alpha=0.5, color=c)
    if metric == "auroc":
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_ylabel("per-feature Pearson r" if metric == "pearson" else "per-feature AUROC")
    ax.set_title(f"{generated}: {metric} per feature")
    return finish(ax, show, save, given_ax)


def _other_scores(others) -> dict[str, np.ndarray]:
    """``others`` of :func:`feature_scores` as float arrays; ``TypeError`` naming what is not a mapping of labels to
    numbers."""
    example = "e.g. others={'kNN': knn_scores} (one number per feature)"
    if others is None:
        return {}
    if not isinstance(others, Mapping):
        raise TypeError(f"others must be a mapping of a label to scores, {example}; got {type(others).__name__}.")
    extra = {}
    for label, values in others.items():
        try:
            if isinstance(values, (str, bytes)):
                raise TypeError
            extra[label] = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(
                f"others[{label!r}] must be numbers, {example}; got {type(values).__name__} {str(values)[:40]!r}."
            ) from None
    return extra


__all__ = ["feature_scores", "generated_vs_measured", "paired_values"]
