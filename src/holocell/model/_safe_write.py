"""Writing files without losing the user's: what may be replaced, atomic renames, fsync.

holocell replaces an existing path only when it recognises it as its own output (a checkpoint
directory, a checkpoint archive) and the caller asked for it (``overwrite=True``). Anything else
(a user's folder, a plain file where a folder is expected, a link to something else) is refused
with ``FileExistsError`` naming the path and the fix. A symlink to one of holocell's outputs is
followed: the output it points to is replaced and the link is kept. New content is written to a
temporary sibling, fsynced (files, then the directory), and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a directory's entries, to disk (a no-op where the OS cannot fsync it)."""
    flags = os.O_RDONLY if os.path.isdir(path) else os.O_RDWR
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file of a directory written by holocell, then the directory itself."""
    for entry in Path(path).iterdir():
        if entry.is_file() and not entry.is_symlink():
            fsync_path(entry)
    fsync_path(path)


def describe(path: Path) -> str:
    """A few words on what is at ``path`` (for messages)."""
    if path.is_symlink():
        return f"a symlink to {os.readlink(path)}"
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        return (
            f"a directory holding {len(names)} entries (e.g. {names[:4]})" if names else "an empty directory"
        )
    if path.is_file():
        return f"a file of {path.stat().st_size:,} bytes"
    return "not a regular file or directory"


def replaceable_target(path: Path, overwrite: bool, is_ours: Callable[[Path], bool], what: str) -> Path:
    """The path to write ``what`` to at ``path``, or ``FileExistsError`` when that would lose data.

    Parameters
    ----------
    path
        Where the caller wants to write.
    overwrite
        Whether replacing an existing ``what`` was asked for.
    is_ours
        Recognises an existing ``what`` that may be replaced.
    what
        ``"holocell checkpoint directory"``, ``"holocell checkpoint archive"``, ...

    Returns
    -------
    ``path``, or, for a symlink to an existing ``what``, the resolved target (the link is kept).
    """
    fix = (
        f"Choose a path that does not exist yet, or move or remove {path} yourself if you mean to replace it; "
        f"holocell replaces only a {what} it wrote."
    )
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise FileExistsError(f"{path} is a symlink to {os.readlink(path)}, which does not exist. {fix}")
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists ({describe(path)}); pass overwrite=True to replace it."
            )
        if not is_ours(target):
            raise FileExistsError(f"{path} is a symlink to {target}, {describe(target)}, not a {what}. {fix}")
        return target
    if not path.exists():
        return path
    if not overwrite:
        raise FileExistsError(f"{path} already exists ({describe(path)}); pass overwrite=True to replace it.")
    if not is_ours(path):
        raise FileExistsError(f"{path} exists and is {describe(path)}, not a {what}. {fix}")
    return path


@contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Context manager giving a temporary path beside ``path``; on success it is fsynced and renamed
    onto ``path`` (``os.replace``), on error removed. ``path`` is never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be read by others too
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def remove_tree(path: Path) -> None:
    """``shutil.rmtree`` that does not follow a symlink at ``path``."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


__all__ = ["atomic_file", "describe", "fsync_path", "fsync_tree", "remove_tree", "replaceable_target"]
