"""What every ``hc.pl`` function does last: save the figure and show it (scanpy's conventions).

A figure is written to a temporary file beside its path and moved into place, so an interrupted save leaves no
half-written file. It replaces an existing file only when holocell wrote that file: the figure carries holocell's
name in its metadata, and an existing file without it (the user's own paper, data or figure) is never written over.
Only the formats that can carry the mark (PNG, PDF, SVG, PS, EPS) are saved, so that re-running a notebook replaces
its own figures; other formats (JPEG, TIFF, WebP, ...) are refused before anything is written (save those with
``ax.figure.savefig``).
"""

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
        save_figure(ax.figure, save)
    if show if show is not None else not given_ax and save is None:
        plt.show()
    return ax


#: written into every saved figure's metadata; an existing file is replaced only when it holds this mark
FIGURE_MARK = "holocell.pl"
#: the formats whose metadata matplotlib writes, and the field it goes to
_MARKED_FORMATS = {"png": "Software", "pdf": "Creator", "svg": "Creator", "ps": "Creator", "eps": "Creator"}
#: bytes of an existing file searched for the mark (matplotlib writes it near the start, or at the end of a PDF)
_MAX_SCAN = 64 * 2**20


def save_figure(figure, save: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``save`` atomically (format from the extension; none: matplotlib's default format,
    whose extension is added, as matplotlib does) and return the path written.

    Raises
    ------
    ValueError
        The extension names no format matplotlib writes, or one that cannot carry holocell's mark (JPEG, TIFF,
        WebP, raw, ...), so that a second save to the path would be refused. Nothing is written.
    FileExistsError
        The path exists and is not a figure holocell wrote (a directory, or a file without holocell's mark).
    """
    import matplotlib

    path = Path(save).expanduser()
    fmt = path.suffix[1:].lower()
    if not fmt:
        fmt = str(matplotlib.rcParams["savefig.format"])
        path = path.with_name(f"{path.name}.{fmt}")
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"save={str(save)!r}: matplotlib cannot write {fmt!r} figures; use one of {list(_MARKED_FORMATS)} "
            "(e.g. 'figure.png' or 'figure.pdf')."
        )
    if fmt not in _MARKED_FORMATS:
        raise ValueError(
            f"save={str(save)!r}: holocell saves figures only as {'/'.join(_MARKED_FORMATS)}, whose metadata carries "
            f"its mark, so that saving again (a re-run) replaces the figure; a {fmt!r} file cannot be told apart "
            f"from the user's own. Use e.g. {path.with_suffix('.png').name!r}, or write {fmt!r} yourself with "
            "ax.figure.savefig(path)."
        )
    if path.is_dir() or (path.exists() and not _written_by_holocell(path)):
        what = "a directory" if path.is_dir() else "a file holocell did not write"
        raise FileExistsError(
            f"save={str(save)!r}: {path} is {what}; holocell never writes over it. Choose another path, or move or "
            "remove it yourself."
        )
    from ..model._safe_write import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {_MARKED_FORMATS[fmt]: FIGURE_MARK}
    with atomic_file(path, suffix=f".{fmt}") as tmp:
        figure.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150, metadata=metadata)
    return path


def _written_by_holocell(path: Path) -> bool:
    """Whether the file at ``path`` is a figure holocell saved (its metadata holds :data:`FIGURE_MARK`)."""
    if not path.is_file() or path.stat().st_size > _MAX_SCAN:
        return False
    return FIGURE_MARK.encode() in path.read_bytes()
