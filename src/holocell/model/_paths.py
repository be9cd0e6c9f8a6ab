"""Output paths as given by the user, made safe to write to: absolute, their folders checked before any work.

- :func:`output_path`: ``~`` expanded and the path made absolute, so ``"."`` (the current folder) has a name and a
  parent like any other path; an empty path is refused (it is usually an unset variable, not a choice).
- the folders above an output are checked by :func:`holocell._folders.existing_folder` (every layer uses it).
- :func:`check_backing`: a save would delete the file the model's data are backed on.
- :func:`keeping_cwd`: a save that renames a folder over the current working directory leaves the process in the
  deleted folder; this goes back to the path, now the new folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mudata import MuData


def output_path(path: str | os.PathLike[str], what: str = "dir_path") -> Path:
    """``path`` with ``~`` expanded, made absolute (``".."`` resolved), or ``ValueError`` for an empty path.

    Parameters
    ----------
    path
        An output path as the user gave it.
    what
        Its name, for the message (``"dir_path"``, ``"--model"``).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a path (str or pathlib.Path), got {type(path).__name__}.")
    if os.fspath(path) in ("", b""):
        raise ValueError(
            f"{what} is an empty path (an unset variable?); give the path to write to, e.g. 'my_model' ('.' is the "
            "current folder). Nothing was written."
        )
    absolute = Path(path).expanduser().absolute()
    return absolute.resolve() if absolute.name == ".." else absolute


def check_backing(mdata: MuData, target: Path) -> None:
    """``FileExistsError`` when ``mdata`` is backed on a file in ``target``, which the save would delete."""
    backing = {Path(a.filename) for a in [mdata, *mdata.mod.values()] if a.isbacked and a.filename is not None}
    for member, file in ((m, f) for m in (target.iterdir() if target.is_dir() else ()) for f in backing):
        if file.exists() and os.path.samefile(member, file):
            raise FileExistsError(
                f"The model's MuData is backed on {file}, which is {member}, inside {target}: this save would "
                "replace the folder and delete the file while it is open. Read the data into memory "
                f"(mudata.read_h5mu({str(member)!r}) without backed=), load the model onto them "
                "(HoloCell.load(path, mdata)) and save that, or save to another path."
            )


@contextmanager
def keeping_cwd(folder: Path) -> Iterator[None]:
    """Around a save that replaces ``folder`` by renames: when ``folder`` is the current working directory, go back
    to its path afterwards (the process would otherwise stay in the replaced, deleted folder)."""
    try:
        here = os.path.samefile(os.getcwd(), folder)
    except OSError:
        here = False
    try:
        yield
    finally:
        if here and os.path.isdir(folder):
            os.chdir(folder)


def not_a_model_folder(path: Path) -> str:
    """What ``path`` is, when ``load`` found no ``config.json`` there because it is a file, and what to call instead
    (``""`` for anything else)."""
    if not path.is_file():
        return ""
    if path.suffix.lower() == ".zip":
        return (f" {path} is a file, not the folder save() writes: for an archive from save_pretrained, call "
                "HoloCell.load_pretrained(path, mdata).")
    if path.suffix.lower() in (".h5mu", ".h5ad", ".zarr"):
        return (f" {path} is a data file: load takes the model folder first, then the data: "
                "HoloCell.load(model_dir, mdata).")
    return f" {path} is a file, not the folder save() writes."


__all__ = ["check_backing", "keeping_cwd", "not_a_model_folder", "output_path"]
