"""The folders above an output, checked before any work.

:func:`existing_folder` checks the folders above any output holocell writes (a saved model, an archive, a figure,
a command line ``--out``, a ``checkpoint_dir``): a folder on the way that is a symlink to nothing (a link to a moved
or unmounted drive) or a file is refused, naming it (``mkdir(parents=True)`` failed there only after the work, with
a bare ``[Errno 17] File exists``, and Lightning created folders at the link's target). It sits at the package's
top level because every layer that writes files (``train``, ``model``, ``pl``, the command line) uses it.
"""

from __future__ import annotations

import os
from pathlib import Path


def dangling_parent(path: Path) -> Path | None:
    """The first folder above ``path`` that is a symlink to nothing, before an existing folder; None if none."""
    for parent in Path(path).absolute().parents:
        if os.path.exists(parent):
            return None
        if os.path.islink(parent):
            return parent
    return None


def existing_folder(path: str | os.PathLike[str], what: str) -> Path:
    """The nearest existing folder above ``path`` (created folders go below it), checked before any work.

    Parameters
    ----------
    path
        An output file or folder.
    what
        How the message names ``path`` (``"save='results/f.png'"``, ``"--out results/x.h5mu"``).

    Raises
    ------
    NotADirectoryError
        A folder above ``path`` is a symlink whose target does not exist (naming both), or is a file.
    """
    link = dangling_parent(path)
    if link is not None:
        raise NotADirectoryError(
            f"{what} cannot be written: {link} is a symlink to {os.readlink(link)}, which does not exist (a moved or "
            "unmounted drive?). Create the folder it points to (or mount the drive), or choose another path; holocell "
            "does not create folders through a link to nothing."
        )
    for parent in Path(path).absolute().parents:
        if os.path.exists(parent):
            if not os.path.isdir(parent):
                raise NotADirectoryError(f"{what} cannot be written: {parent} is a file, not a folder.")
            return parent
    return Path(Path(path).absolute().anchor)  # ``path`` is the root itself


__all__ = ["dangling_parent", "existing_folder"]
