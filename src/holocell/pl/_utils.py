"""What every ``hc.pl`` function does last: save the figure and show it (scanpy's conventions).

A figure is written to an exclusively created temporary file beside its path and moved into place, so an
interrupted save leaves no half-written file. Each saved figure's SHA-256 is recorded in ``.holocell_figures.json``
in its folder (as the demo records its outputs), and an existing file is replaced only when it is a figure holocell
saved there and has not changed since: the user's own paper, data or figure, and a holocell figure the user edited,
are never written over (``FileExistsError``), even when it mentions holocell. ``save=`` a symlink writes the file
it points to and keeps the link. The formats whose metadata names holocell (PNG, PDF, SVG, PS, EPS) are saved;
other formats (JPEG, TIFF, WebP, ...) are refused before anything is written (save those with
``ax.figure.savefig``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data._registry import sha256sum

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
    figure) or asked for a file. A figure the plot made itself (no ``ax`` given) and saved is closed afterwards,
    as scanpy closes the figures it saves, unless it is on screen (shown with an interactive backend): a loop of
    saved plots no longer keeps every figure open. The returned Axes stays usable (its ``figure`` can still be
    drawn or saved); a figure of the caller's own ``ax`` is left open.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        save_figure(ax.figure, save)
    shown = show if show is not None else not given_ax and save is None
    if shown:
        plt.show()
    if save is not None and not given_ax and not (shown and on_screen(ax.figure)):
        plt.close(ax.figure)
    return ax


def on_screen(figure) -> bool:
    """Whether ``figure`` is drawn by an interactive backend (a window; not Agg, PDF, SVG or Jupyter's inline
    backend, which only renders images)."""
    return getattr(figure.canvas, "required_interactive_framework", None) is not None


NA_COLOR = "lightgray"
"""Colour of the cells whose group is missing (scanpy's ``na_color``)."""


def group_colors(n: int) -> list:
    """``n`` distinct colours, one per group: the style's colour cycle (``"C0"``, ``"C1"``, ...) when it has ``n``
    or more, else matplotlib's ``tab20`` up to 20 groups, else ``n`` samples of the ``turbo`` colormap."""
    import matplotlib

    n_cycle = len(matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", []))
    if n <= n_cycle:
        return [f"C{k}" for k in range(n)]
    if n <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:n])
    return [tuple(c) for c in matplotlib.colormaps["turbo"].resampled(n)(np.arange(n))]


def groups_of(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each cell's group (its position in the groups; -1 for a missing value) and the group names in order: a
    categorical's categories in their order (all of them, so that a group keeps its colour in every plot of the
    column), else the sorted unique values."""
    missing = values.isna().to_numpy()
    if isinstance(values.dtype, pd.CategoricalDtype):
        order = [str(c) for c in values.cat.categories]
    else:
        unique = pd.unique(values[~missing].to_numpy(dtype=object))
        try:
            unique = sorted(unique)
        except TypeError:  # mixed types
            unique = sorted(unique, key=str)
        order = list(dict.fromkeys(str(v) for v in unique))
    names = np.asarray(values.to_numpy(dtype=object)).astype(str)
    codes = pd.Index(order).get_indexer(names)
    codes[missing] = -1
    return codes, order


#: written into every saved figure's metadata (the record of what may be replaced is :data:`FIGURES_MANIFEST`)
FIGURE_MARK = "holocell.pl"
#: the formats whose metadata matplotlib writes, and the field it goes to
_MARKED_FORMATS = {"png": "Software", "pdf": "Creator", "svg": "Creator", "ps": "Creator", "eps": "Creator"}
#: in a figure's folder: the SHA-256 of each figure holocell saved there; only those, unchanged, are replaced
FIGURES_MANIFEST = ".holocell_figures.json"
_MAX_MANIFEST_BYTES = 16 * 2**20


def check_save(save: str | os.PathLike[str] | None) -> None:
    """Check ``save=`` of a plot before anything is drawn: the errors :func:`save_figure` would raise (a path that
    is no file path, a folder, a format holocell does not save, a file holocell did not write) come first, not
    after the work of the plot. :func:`save_figure` checks again when it writes."""
    if save is not None:
        _save_target(save)


def save_figure(figure, save: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``save`` atomically (format from the extension; none: matplotlib's default format,
    whose extension is added, as matplotlib does) and return the path written.

    A symlink is followed: the file it points to is written and the link kept. The figure's SHA-256 is recorded
    in :data:`FIGURES_MANIFEST` in the folder it is written to.

    Raises
    ------
    TypeError
        ``save`` is not a path (``str`` or :class:`os.PathLike`; bytes, numbers, ... are refused).
    ValueError
        ``save`` is empty, or the extension names no format matplotlib writes, or one whose metadata cannot name
        holocell (JPEG, TIFF, WebP, raw, ...). Nothing is written.
    FileExistsError
        ``save`` is an existing directory or ends with a path separator (it names a folder: the message suggests a
        file in it), or the path exists and is not a figure holocell saved there, unchanged since (a directory,
        the user's file, a holocell figure the user edited), or it is a symlink to nothing, or the folder's
        :data:`FIGURES_MANIFEST` is not holocell's.
    NotADirectoryError
        A folder above the path is a symlink to nothing (a moved or unmounted drive), or a file.
    """
    path, target, fmt = _save_target(save)
    manifest = target.parent / FIGURES_MANIFEST
    from ..model._safe_write import write_beside

    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = {_MARKED_FORMATS[fmt]: FIGURE_MARK}
    with write_beside(
        target, lambda p: _unchanged(p, manifest), lambda p: _refusal(save, p, manifest), f".{fmt}"
    ) as tmp:
        figure.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150, metadata=metadata)
        digest = sha256sum(tmp)
    _record(manifest, target.name, digest)
    return path


def _save_target(save) -> tuple[Path, Path, str]:
    """``(path, target, format)`` of ``save=``: the path as given (with the default extension added), the file
    written (a symlink's target) and the format; raises what :func:`save_figure` documents, writing nothing."""
    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    from .._folders import existing_folder

    text = os.fspath(save) if isinstance(save, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(
            f"save must be a file path (str or pathlib.Path) such as save='figures/plot.png', got "
            f"{type(save).__name__} {save!r}."
        )
    if not text.strip():
        raise ValueError(
            f"save={text!r} names no file: pass a file path such as save='figures/plot.png', or save=None to write "
            "no file."
        )
    path = Path(text).expanduser()
    separators = tuple(c for c in (os.sep, os.altsep) if c)
    if text.endswith(separators) or os.path.basename(text) in (".", "..") or path.is_dir():
        what = "is a directory" if path.is_dir() else "names a folder (it ends with a path separator)"
        raise FileExistsError(
            f"save={text!r}: {path} {what}, not a figure file; holocell never writes over a folder or beside it. "
            f"Pass a file path inside it, e.g. save={str(path / 'plot.png')!r}."
        )
    fmt = path.suffix[1:].lower()
    if not fmt:
        fmt = str(matplotlib.rcParams["savefig.format"])
        path = path.with_name(f"{path.name}.{fmt}")
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise ValueError(
            f"save={text!r}: matplotlib cannot write {fmt!r} figures; use one of {list(_MARKED_FORMATS)} "
            "(e.g. 'figure.png' or 'figure.pdf')."
        )
    if fmt not in _MARKED_FORMATS:
        raise ValueError(
            f"save={text!r}: holocell saves figures only as {'/'.join(_MARKED_FORMATS)}, whose metadata names "
            f"holocell; a {fmt!r} file cannot carry it. Use e.g. {path.with_suffix('.png').name!r}, or write {fmt!r} "
            "yourself with ax.figure.savefig(path)."
        )
    target = path
    if path.is_symlink():  # keep the link, write the file it points to (as the command line does)
        target = path.resolve()
        if not target.exists():
            raise FileExistsError(
                f"save={text!r}: {path} is a symlink to {os.readlink(path)}, which does not exist; choose "
                "another path, or remove the link yourself."
            )
    existing_folder(target, f"save={text!r}")  # a folder above that links to nothing: before any work
    if target.is_dir():
        raise FileExistsError(
            f"save={text!r}: {target} is a directory; holocell never writes over it. Choose another path, or "
            "move or remove it yourself."
        )
    manifest = target.parent / FIGURES_MANIFEST
    _read_manifest(manifest)  # one that is not holocell's is refused before anything is written
    if os.path.lexists(target) and not _unchanged(target, manifest):
        raise _refusal(save, target, manifest)
    return path, target, fmt


def _read_manifest(manifest: Path) -> dict[str, str]:
    """The figures recorded in ``manifest`` (none when it is absent); ``FileExistsError`` when something that is
    not holocell's record is there (it is never written over)."""
    if not os.path.lexists(manifest):
        return {}
    fix = f"{manifest} is not the record of figures holocell writes; move or remove it yourself, or save elsewhere."
    try:
        if manifest.is_symlink() or not manifest.is_file() or manifest.stat().st_size > _MAX_MANIFEST_BYTES:
            raise FileExistsError(fix)
        recorded = json.loads(manifest.read_bytes())
    except (OSError, ValueError) as err:
        if isinstance(err, FileExistsError):
            raise
        raise FileExistsError(f"{fix} ({type(err).__name__}: {err})") from None
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise FileExistsError(fix)
    return recorded


def _unchanged(path: Path, manifest: Path) -> bool:
    """Whether ``path`` is a regular file whose SHA-256 is the one recorded when holocell saved it."""
    if path.is_symlink() or not path.is_file():
        return False
    recorded = _read_manifest(manifest).get(path.name)
    return recorded is not None and recorded == sha256sum(path)


def _refusal(save, path: Path, manifest: Path) -> FileExistsError:
    recorded = _read_manifest(manifest).get(path.name) if path.is_file() and not path.is_symlink() else None
    what = (
        "a figure holocell saved, but it has changed since (its SHA-256 is not the one recorded in "
        f"{manifest.name})"
        if recorded is not None
        else f"a file holocell did not write (not recorded in {manifest.name} beside it)"
    )
    return FileExistsError(
        f"save={str(save)!r}: {path} is {what}; holocell never writes over it. Choose another path, or move or "
        "remove it yourself."
    )


def _record(manifest: Path, name: str, digest: str) -> None:
    """Add ``name``'s SHA-256 to ``manifest``, atomically; entries of figures no longer there are dropped."""
    from ..model._safe_write import write_beside

    def ours(p: Path) -> bool:
        _read_manifest(p)  # raises for a file that is not holocell's record
        return True

    recorded = {k: v for k, v in _read_manifest(manifest).items() if (manifest.parent / k).exists()}
    recorded[name] = digest
    with write_beside(
        manifest, ours, lambda p: FileExistsError(f"{p} is not holocell's record of figures.")
    ) as tmp:
        tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True))
