"""The HTTP(S) downloader behind the registry: a size cap, and redirects only to http(s).

pooch calls it with a temporary file in the cache folder (and moves that file into place only after
the sha256 matched). It streams the response and stops as soon as the size cap is passed (checked
first against ``Content-Length`` when the server sends one), and it follows redirects itself so that
a redirect to another scheme (``file://``, ``ftp://``, ...) is refused with that reason instead of
surfacing as a network error.

Cached files and their stamps are put into place with :func:`holocell.model._safe_write.write_beside`.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import urljoin, urlparse

#: Default cap on one download (override with ``$HOLOCELL_MAX_DOWNLOAD_BYTES``).
MAX_DOWNLOAD_BYTES = 32 << 30
MAX_DOWNLOAD_ENV = "HOLOCELL_MAX_DOWNLOAD_BYTES"
#: Default cap on a checkpoint archive (also the most its members may unpack to).
MAX_CHECKPOINT_BYTES = 4 << 30
_MAX_REDIRECTS = 10
_MAX_STAMP_BYTES = 1 << 20
_TIMEOUT_S = 60


class DownloadRefused(Exception):
    """holocell refused a download (too large, redirect to another scheme); the message says why.

    Deliberately not a ``ValueError`` or a ``requests`` error, which pooch would read as a hash
    mismatch or a network failure.
    """


def max_download_bytes(default: int | None = None) -> int:
    """The download cap: ``$HOLOCELL_MAX_DOWNLOAD_BYTES`` when set, else ``default`` (or the module default)."""
    env = os.environ.get(MAX_DOWNLOAD_ENV)
    if env:
        try:
            return int(env)
        except ValueError:
            raise ValueError(f"${MAX_DOWNLOAD_ENV} must be a number of bytes, got {env!r}.") from None
    return MAX_DOWNLOAD_BYTES if default is None else default


class CappedDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) with a size cap.

    Parameters
    ----------
    max_bytes
        Largest accepted download.
    progressbar
        Show a tqdm progress bar.
    """

    def __init__(self, max_bytes: int, progressbar: bool = False) -> None:
        self.max_bytes = int(max_bytes)
        self.progressbar = progressbar

    def __call__(self, url: str, output_file, pooch=None, check_only: bool = False):
        import requests

        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            scheme = urlparse(current).scheme
            if scheme not in ("http", "https"):
                raise DownloadRefused(
                    f"{url} redirected to {current}; holocell follows redirects only to http(s) URLs "
                    f"(a {scheme or 'relative'}:// target could read local files). Refusing the download."
                )
            response = requests.get(current, stream=True, allow_redirects=False, timeout=_TIMEOUT_S)
            if response.is_redirect:
                current = urljoin(current, response.headers["Location"])
                response.close()
                continue
            try:
                response.raise_for_status()
                if check_only:
                    return True
                self._write(response, url, output_file)
            finally:
                response.close()
            return None
        raise DownloadRefused(f"{url} redirected more than {_MAX_REDIRECTS} times; refusing the download.")

    def _write(self, response, url: str, output_file) -> None:
        from tqdm.auto import tqdm

        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise DownloadRefused(self._too_large(url, f"the server announces {int(length):,} bytes"))
        total = int(length) if length is not None and length.isdigit() else None
        written = 0
        with (
            open(output_file, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, disable=not self.progressbar, leave=False) as bar,
        ):
            for chunk in response.iter_content(chunk_size=1 << 20):
                written += len(chunk)
                if written > self.max_bytes:
                    raise DownloadRefused(self._too_large(url, f"more than {self.max_bytes:,} bytes arrived"))
                out.write(chunk)
                bar.update(len(chunk))

    def _too_large(self, url: str, what: str) -> str:
        return (
            f"Refusing {url}: {what}, above the cap of {self.max_bytes:,} bytes. Nothing was cached. If the file "
            f"is meant to be that large, raise the cap with ${MAX_DOWNLOAD_ENV}."
        )


def read_stamp(path: Path) -> dict | None:
    """The record holocell wrote at ``path`` (``<file>.json`` beside a cached file), or None when there is none
    there or the file is not one of holocell's (a link, a large file, not the JSON holocell writes)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_STAMP_BYTES or os.path.islink(path):
                return None
            record = json.loads(f.read(_MAX_STAMP_BYTES + 1))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return None
    ours = record.get("written_by") == "holocell" or {"converter_version", "sources"} <= set(record)
    return record if ours else None


def write_stamp(path: Path, record: dict) -> None:
    """Write holocell's ``record`` to ``path`` (see :func:`holocell.model._safe_write.write_beside`); ``FileExistsError`` when a file that is
    not one of holocell's records is there."""

    def refusal(p: Path) -> Exception:
        return FileExistsError(
            f"{p} exists and is not a record holocell wrote; holocell never writes over it. Move or rename it, or "
            "set $HOLOCELL_CACHE_DIR to another folder."
        )

    from ..model._safe_write import write_beside

    with write_beside(path, lambda p: read_stamp(p) is not None, refusal, ".json") as tmp:
        tmp.write_text(json.dumps({"written_by": "holocell", **record}, indent=1))


__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "MAX_DOWNLOAD_ENV",
    "CappedDownloader",
    "DownloadRefused",
    "max_download_bytes",
    "read_stamp",
    "write_stamp",
]
