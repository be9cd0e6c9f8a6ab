"""What a model tells about itself: its training history and, after a transfer, what it shares with the data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._checks import model_table, require_table, shown
from ._utils import check_save, finish, group_colors, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..model import HoloCell


def training_history(
    model: HoloCell | pd.DataFrame,
    *,
    keys: Sequence[str] | None = None,
    logy: bool = False,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """Losses per epoch of a trained model (``model.history_``).

    Parameters
    ----------
    model
        A trained :class:`~holocell.HoloCell`, or its ``history_`` DataFrame (one row per epoch).
    keys
        Column, or columns, to draw (default: ``train_loss`` and ``validation_loss`` when present, else every
        loss).
    logy
        Logarithmic y axis.
    ax, show, save
        Axes to draw on; show the figure (default: unless ``ax`` or ``save`` is given); write it to a path (a
        figure the plot made is then closed, as scanpy does, unless it is shown on screen).

    Returns
    -------
    The matplotlib Axes: training losses as solid lines, validation losses dashed.

    Raises
    ------
    TypeError
        ``model`` is neither a HoloCell nor a DataFrame, or ``save`` is not a path.
    ValueError
        The model is not trained; or was transferred onto data (:meth:`~holocell.HoloCell.load_pretrained` with
        data, :meth:`~holocell.HoloCell.load_query_data`) and not trained on it since (the pretraining history is
        on ``hc.HoloCell.load_pretrained(name)`` without data); or was loaded from a file written without its
        history (checkpoint format below 5); or there is no column to draw, or a column holds no numbers.
    KeyError
        ``keys`` names a column ``history_`` lacks (the message lists its columns). Nothing is drawn or saved.
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    given_ax = ax is not None
    history = model_table(model, "history_", fallback="its history_ DataFrame")
    check_save(save)
    if history is None and getattr(model, "transfer_report_", None) is not None:  # transferred, not trained since
        raise ValueError(
            "This model was transferred from a pretrained one onto this data (load_pretrained(name, mdata) or "
            "load_query_data) and has not been trained on it, so it has no training history of its own. The "
            "pretraining history is on the pretrained model loaded without data: "
            "hc.pl.training_history(hc.HoloCell.load_pretrained(name)) (or the reference model passed to "
            "load_query_data). After model.train(...) on this data, its history_ is plotted here."
        )
    if history is None and getattr(model, "is_trained_", False):  # trained, then saved and loaded
        raise ValueError(
            "This model is trained, but has no training history: it was loaded from a file written without one "
            "(holocell saves history_ from checkpoint format 5 on; older files have none). Plot it in the session "
            "that trained the model, or pass a history you kept (model.history_.to_csv(path)) as a DataFrame: "
            "hc.pl.training_history(pd.read_csv(path, index_col='epoch'))."
        )
    if history is None or len(history) == 0:
        raise ValueError("The model has no training history yet: call model.train(...) first.")
    if keys is None:
        keys = [k for k in ("train_loss", "validation_loss") if k in history] or [
            c for c in history.columns if "loss" in str(c)
        ]
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError(
            f"No column to draw: pass keys=<columns of history_>, e.g. {shown(history.columns)}."
        )
    missing = [k for k in keys if k not in history]
    if missing:
        raise KeyError(f"history_ has no columns {missing} (keys=); it has {list(history.columns)}.")
    values = {k: _numbers(history[k]) for k in keys}
    text = [k for k, v in values.items() if v is None]
    if text:
        numeric = [c for c in history.columns if pd.api.types.is_numeric_dtype(history[c].dtype)]
        raise ValueError(
            f"history_ columns {text} (keys=) hold values that are not numbers ({history[text[0]].dtype}), so they "
            f"cannot be drawn; pass keys=<numeric columns>, e.g. {shown(numeric)}."
        )
    ax = new_axes(ax, (4.5, 3.2))
    epochs = np.asarray(history.index, dtype=float)
    for key, c in zip(keys, group_colors(len(keys)), strict=True):
        style = "--" if str(key).startswith(("validation", "val_")) else "-"
        ax.plot(epochs, values[key], style, color=c, label=str(key), marker=".")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("training history")
    return finish(ax, show, save, given_ax)


def _numbers(column: pd.Series) -> np.ndarray | None:
    """A ``history_`` column as floats (missing values NaN), or ``None`` when it holds something else (text)."""
    try:
        return column.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        return None


def transfer_report(
    model: HoloCell | pd.DataFrame,
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Axes:
    """How much of the data a pretrained model knows (``model.transfer_report_``).

    Parameters
    ----------
    model
        A model from :meth:`~holocell.HoloCell.load_pretrained` (with data) or
        :meth:`~holocell.HoloCell.load_query_data`, or its ``transfer_report_`` DataFrame.
    ax, show, save
        Axes to draw on; show the figure (default: unless ``ax`` or ``save`` is given); write it to a path (a
        figure the plot made is then closed, as scanpy does, unless it is shown on screen).

    Returns
    -------
    The matplotlib Axes: per row of the report (gene anchors, each modality, batches) the share of the
    data's items that have pretrained parameters, labelled ``n_shared / n_query``.

    Raises
    ------
    TypeError
        ``model`` is neither a HoloCell nor a DataFrame, or ``save`` is not a path.
    ValueError
        The model has no transfer report, or the report lacks ``fraction_shared``, ``n_shared`` or ``n_query``.
        Nothing is drawn or saved.
    FileExistsError
        ``save`` is a folder (or ends with a path separator), or a file holocell did not write (see
        :mod:`holocell.pl`). Nothing is drawn or saved.
    """
    given_ax = ax is not None
    report = model_table(model, "transfer_report_", fallback="its transfer_report_ DataFrame")
    check_save(save)
    if report is None:
        raise ValueError(
            "The model has no transfer report: it was not made by load_pretrained / load_query_data."
        )
    require_table(
        report,
        ("fraction_shared", "n_shared", "n_query"),
        arg="the transfer report",
        what="model.transfer_report_ of a model from HoloCell.load_pretrained(..., mdata) or load_query_data",
    )
    ax = new_axes(ax, (4.5, 0.45 * len(report) + 1.2))
    names = report.index.astype(str).to_numpy()[::-1]
    shares = report["fraction_shared"].to_numpy(dtype=float)[::-1]
    ax.barh(names, shares, color="C0")
    ax.barh(names, 1 - shares, left=shares, color="0.85")
    for y, row in enumerate(report.iloc[::-1].itertuples()):
        ax.text(0.02, y, f"{row.n_shared:,} / {row.n_query:,}", va="center", fontsize=8, color="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share with pretrained parameters")
    ax.set_title("transfer: shared with the pretrained model")
    return finish(ax, show, save, given_ax)


__all__ = ["training_history", "transfer_report"]
