"""What every ``hc.pl`` function does last: save the figure and show it (scanpy's conventions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 3.5)) -> Axes:
    """``ax``, or the Axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def finish(ax: Axes, show: bool | None, save: str | os.PathLike[str] | None, given_ax: bool = False) -> Axes:
    """Write the figure to ``save`` (format from its extension) and show it.

    ``show=None`` shows the figure unless the caller passed its own ``ax`` (it is then composing a larger
    figure) or asked for a file.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, bbox_inches="tight", dpi=150)
    if show if show is not None else not given_ax and save is None:
        plt.show()
    return ax
