"""One training run at a time per ``checkpoint_dir``: the run marker ``.holocell_run``.

Two runs started together with the same ``checkpoint_dir`` (two jobs of a sweep that share an output folder) both
found the folder empty, wrote Lightning's checkpoints under the same names, and one deleted the other's
(``save_top_k=1``); a later ``resume=True`` continued whichever wrote last. While it trains, a run holds a marker
file in the folder, created atomically (``O_CREAT | O_EXCL``) and holding its process id and host; a second run
that finds another live run's marker is refused before it writes anything, and the folder is checked again once
the marker is held (a run that finished in the meantime left its checkpoints there). The marker is removed when
the run ends, however it ends; one left by a killed run (its process gone, on this host) is taken over. Only the
first process of a multi-process run (rank 0) holds it. The folders the run created for ``checkpoint_dir`` are
removed again when the run ends with them still empty (it failed or was interrupted before its first checkpoint).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ._resume import check_checkpoint_dir

#: The marker's file name inside ``checkpoint_dir``.
RUN_MARKER = ".holocell_run"


def _first_process() -> bool:
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _holder(marker: Path) -> dict:
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _claim(marker: Path) -> None:
    here = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(marker)
            if holder.get("host") == here["host"] and not _alive(holder.get("pid")):
                with suppress(FileNotFoundError):  # left by a run that was killed: take it over
                    marker.unlink()
                continue
            who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise ValueError(
                f"checkpoint_dir {str(marker.parent)!r} is in use by another training run ({who}; marker {marker}): "
                "two runs in one folder would overwrite and delete each other's checkpoints. Give each run its own "
                f"checkpoint_dir; if no run is using this one, remove {marker}."
            ) from None
        with os.fdopen(fd, "w") as out:
            json.dump(here, out)
        return
    raise ValueError(f"Could not take the run marker {marker}; remove it if no run is using {marker.parent}.")


@contextmanager
def run_claimed(folder: Path | None, resume: bool) -> Iterator[None]:
    """Hold ``folder``'s run marker while the run trains (nothing without a folder, or on ranks above 0).

    Raises
    ------
    ValueError
        Another live run holds the marker; or, once held, the folder holds checkpoints a fresh run would write
        beside (:func:`~holocell.train._resume.check_checkpoint_dir`).
    """
    if folder is None or not _first_process():
        yield
        return
    created = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    try:
        _claim(marker)
        try:
            check_checkpoint_dir(folder, resume)  # again, now that no other run can write here
            yield
        finally:
            with suppress(FileNotFoundError):
                marker.unlink()
    finally:
        for path in created:  # a run that ended before its first checkpoint leaves no empty folder it made
            try:
                path.rmdir()  # only an empty folder: never anything written into it
            except OSError:
                break


__all__ = ["RUN_MARKER", "run_claimed"]
