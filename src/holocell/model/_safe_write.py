"""Writing files without losing the user's: what may be replaced, atomic renames, fsync.

holocell replaces an existing path only when it recognises it as its own output (a checkpoint
directory, a checkpoint archive) and the caller asked for it (``overwrite=True``). Anything else
(a user's folder, a plain file where a folder is expected, a link to something else) is refused
with ``FileExistsError`` naming the path and the fix. A symlink to one of holocell's outputs is
followed: the output it points to is replaced and the link is kept. New content is written to a
temporary sibling, fsynced (files, then the directory), and renamed into place.

Modes: a new file gets ``0o666 & ~umask`` and a new folder ``0o777 & ~umask``, as ``open`` and ``mkdir`` would
give them; a replaced file or folder keeps its permission bits (:func:`output_mode`). The umask is read at each
write from ``/proc/self/status`` where the kernel reports it (Linux), which changes nothing; elsewhere it is read
by setting a restrictive umask and restoring it (process-wide, so a file another thread creates in that instant
gets the more private mode, never a more open one).

A SIGTERM (a batch system's time limit, ``docker stop``, ``timeout``) that arrives during a write ends the process
only after the write's temporary files are removed (:func:`cleanup_on_sigterm`), as Ctrl-C does.

Files holocell reads from a checkpoint are refused unless they are regular files (not a FIFO, a device such as
``/dev/zero``, a socket or a folder), and are read with a cap (:func:`read_regular`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (see the module docstring)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # restrictive while it is read: a racing thread's new file is only more private
    os.umask(old)
    return old


def output_mode(path: str | os.PathLike[str], directory: bool = False) -> int:
    """Permission bits for an output written at ``path``: those of the file or folder it replaces, else
    ``0o666 & ~umask`` (``0o777 & ~umask`` for a folder), as a plain ``open`` / ``mkdir`` would give."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except (FileNotFoundError, NotADirectoryError):
        return (0o777 if directory else 0o666) & ~current_umask()


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int, label: str | None) -> ValueError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    link = f" (through the symlink {path} -> {os.readlink(path)})" if path.is_symlink() else ""
    return ValueError(
        f"{label or path} is {kind}{link}, not a regular file; holocell reads only regular files there. "
        "The checkpoint is corrupted or not a holocell checkpoint."
    )


def check_regular(path: str | os.PathLike[str], label: str | None = None) -> None:
    """``ValueError`` unless ``path`` (followed through links) is a regular file; ``FileNotFoundError`` if absent."""
    path = Path(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, label)


def read_regular(path: str | os.PathLike[str], limit: int, label: str | None = None) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (a longer result means it exceeds ``limit``).

    The file is opened without blocking (a FIFO would wait for a writer) and checked on the open descriptor, so
    a FIFO or a device (``/dev/zero`` never ends) put in its place is refused, never read without bound.
    """
    path = Path(path)
    check_regular(path, label)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the check and the open
            raise _not_regular(path, mode, label)
        return f.read(limit + 1)


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


#: Longest file name (bytes) of the usual file systems (ext4, XFS, APFS, NTFS in UTF-16 units).
NAME_MAX = 255


def sibling_name(name: str, room: int) -> str:
    """``name``, cut so that ``room`` more bytes still make a legal file name: the temporary siblings of a long name
    (``.<name>.XXXXXXXX.tmp``) would otherwise fail with "File name too long" although ``name`` itself is legal.
    A cut name ends in 8 hex digits of its sha256, so two long names sharing a beginning stay apart."""
    encoded = name.encode()
    if len(encoded) + room <= NAME_MAX:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    return encoded[: NAME_MAX - room - 9].decode(errors="ignore") + "-" + digest


class _Terminated(BaseException):
    """SIGTERM arrived during a write (raised by :func:`cleanup_on_sigterm`'s handler so that cleanup runs)."""


@contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """Around a write that stages temporary files: a SIGTERM that arrives meanwhile first lets the write's own
    ``finally`` blocks remove them, then ends the process as SIGTERM would have (exit status 143, ``-15`` for
    ``subprocess``). Python's default SIGTERM action skips ``finally``, which left full-size hidden copies behind.

    Only when SIGTERM has its default action and only in the main thread (the only one that may set a handler):
    a handler the user, Lightning or an outer write installed is left alone. A second SIGTERM does not cut the
    cleanup short. The default action is restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    received = []

    def terminated(signum, frame) -> None:
        if not received:
            received.append(signum)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise _Terminated

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if received:  # the write cleaned up on its way here: end the process as the SIGTERM would have
            signal.raise_signal(signal.SIGTERM)


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A new private folder beside ``target`` (``.<name>.XXXXXXXX``, mode 0700) to build ``target`` in, removed
    with what is left in it when the block ends, however it ends (also on SIGTERM: :func:`cleanup_on_sigterm`)."""
    with cleanup_on_sigterm():
        tmp = Path(tempfile.mkdtemp(prefix=f".{sibling_name(target.name, 10)}.", dir=target.parent))
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Context manager giving a temporary path beside ``path``; on success it gets the mode of the file it
    replaces (a new file: ``0o666 & ~umask``), is fsynced and renamed onto ``path`` (``os.replace``); on error it
    is removed (also on SIGTERM: :func:`cleanup_on_sigterm`). ``path`` is never half-written."""
    path = Path(path)
    room = len(f"..XXXXXXXX.tmp{suffix}".encode())  # what mkstemp adds around the name
    with cleanup_on_sigterm():
        fd, tmp = tempfile.mkstemp(prefix=f".{sibling_name(path.name, room)}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, output_mode(path))  # mkstemp creates 0600: the mode of the file replaced, or the umask's
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


@contextmanager
def write_beside(
    path: Path,
    may_replace: Callable[[Path], bool],
    refusal: Callable[[Path], Exception],
    suffix: str = "",
) -> Iterator[Path]:
    """A temporary path to write ``path`` to, put into place without writing over what holocell did not write.

    The temporary file is created exclusively (``mkstemp``, in a private folder made by ``mkdtemp`` beside
    ``path``), so a symlink planted at a guessable name is never followed; it is written and fsynced by
    :func:`atomic_file`. Then, when ``path`` does not exist, it is hard-linked there,
    which fails if a file appeared in the meantime; otherwise (or then) ``may_replace(path)`` is asked right before
    ``os.replace``, and when it says no, ``refusal(path)`` is raised and ``path`` is left as it is. A replaced file
    keeps its permission bits. The temporary folder is removed in every case.

    Parameters
    ----------
    path
        Where the file goes (its folder must exist). Not a symlink: callers resolve the links they follow.
    may_replace
        Whether an existing ``path`` is holocell's own, unchanged output (asked again at the rename).
    refusal
        The error to raise (naming the file and the fix) when ``path`` exists and may not be replaced.
    suffix
        Extension of the temporary file (some writers infer the format from it).

    Yields
    ------
    The temporary path to write.
    """
    with cleanup_on_sigterm():
        stage = Path(tempfile.mkdtemp(prefix=f".{sibling_name(path.name, 18)}.", suffix=".partial", dir=path.parent))
        staged = stage / path.name
        try:
            with atomic_file(staged, suffix) as tmp:
                yield tmp
            place_file(staged, path, may_replace, refusal)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def place_file(
    staged: Path, path: Path, may_replace: Callable[[Path], bool], refusal: Callable[[Path], Exception]
) -> None:
    """Move the complete file ``staged`` to ``path`` as :func:`write_beside` does (link if free, else replace
    only what ``may_replace`` accepts, else raise ``refusal(path)``); ``staged`` may stay behind."""
    _place(staged, path, may_replace, refusal)
    fsync_path(path.parent)


def _place(
    staged: Path, path: Path, may_replace: Callable[[Path], bool], refusal: Callable[[Path], Exception]
) -> None:
    if not os.path.lexists(path):
        with suppress(OSError):  # a new file gets the umask's mode, whatever helper created it (pooch's: 0600)
            os.chmod(staged, output_mode(path))
        try:
            os.link(staged, path)  # atomic "create if absent"
            return
        except FileExistsError:
            pass  # a file appeared since the check: judged below
        except OSError:  # a file system without hard links: the narrowest check we have
            if not os.path.lexists(path):
                os.replace(staged, path)
                return
    if path.is_symlink() or not path.is_file() or not may_replace(path):
        raise refusal(path)
    with suppress(OSError):
        shutil.copymode(path, staged)
    os.replace(staged, path)


__all__ = [
    "atomic_file",
    "place_file",
    "check_regular",
    "cleanup_on_sigterm",
    "current_umask",
    "describe",
    "fsync_path",
    "fsync_tree",
    "output_mode",
    "read_regular",
    "remove_tree",
    "replaceable_target",
    "sibling_name",
    "staging_dir",
    "write_beside",
]
