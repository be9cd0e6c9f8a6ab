"""The HTTP(S) downloader behind the registry: a size cap, and redirects only to http(s).

pooch calls it with a temporary file in the cache folder (and moves that file into place only after
the sha256 matched). It streams the response and stops as soon as the size cap is passed (checked
first against ``Content-Length`` when the server sends one), and it follows redirects itself so that
a redirect to another scheme (``file://``, ``ftp://``, ...) is refused with that reason instead of
surfacing as a network error.
"""

from __future__ import annotations

import os
from urllib.parse import urljoin, urlparse

#: Default cap on one download (override with ``$HOLOCELL_MAX_DOWNLOAD_BYTES``).
MAX_DOWNLOAD_BYTES = 32 << 30
MAX_DOWNLOAD_ENV = "HOLOCELL_MAX_DOWNLOAD_BYTES"
#: Default cap on a checkpoint archive (also the most its members may unpack to).
MAX_CHECKPOINT_BYTES = 4 << 30
_MAX_REDIRECTS = 10
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


__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "MAX_DOWNLOAD_ENV",
    "CappedDownloader",
    "DownloadRefused",
    "max_download_bytes",
]
