"""What a model tells about itself: its training history and, after a transfer, what it shares with the data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._checks import model_table, require_table, shown
from ._utils import finish, group_colors, new_axes

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
        ``model`` is neither a HoloCell nor a DataFrame.
    ValueError
        The model is not trained, or was loaded from a file written without its history (checkpoint format
        below 5, e.g. the shipped ``holocell-small``, or a transferred model), or there is no column to draw.
    KeyError
        ``keys`` names a column ``history_`` lacks (the message lists its columns). Nothing is drawn or saved.
    """
    given_ax = ax is not None
    history = model_table(model, "history_", fallback="its history_ DataFrame")
    if history is None and getattr(model, "is_trained_", False):  # trained, then saved and loaded
        raise ValueError(
            "This model is trained, but has no training history: it was loaded from a file written without one "
            "(holocell saves history_ from checkpoint format 5 on; older files, the shipped checkpoints and "
            "transferred models have none). Plot it in the session that trained the model, or pass a history you "
            "kept (model.history_.to_csv(path)) as a DataFrame: "
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
    ax = new_axes(ax, (4.5, 3.2))
    epochs = np.asarray(history.index, dtype=float)
    for key, c in zip(keys, group_colors(len(keys)), strict=True):
        style = "--" if str(key).startswith(("validation", "val_")) else "-"
        ax.plot(epochs, history[key].to_numpy(dtype=float), style, color=c, label=str(key), marker=".")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("training history")
    return finish(ax, show, save, given_ax)


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
        ``model`` is neither a HoloCell nor a DataFrame.
    ValueError
        The model has no transfer report, or the report lacks ``fraction_shared``, ``n_shared`` or ``n_query``.
        Nothing is drawn or saved.
    """
    given_ax = ax is not None
    report = model_table(model, "transfer_report_", fallback="its transfer_report_ DataFrame")
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
