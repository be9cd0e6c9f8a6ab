"""The error a failed download is reported with: an HTTP status the server answered, or no connection.

A server that answers 404 or 500 is reachable, so its answer is not reported as a network problem: the
message names the status, the URL and what to do (check the URL or the name; retry later).
"""

from __future__ import annotations


def download_error(err: OSError, url: str, filename: str) -> OSError:
    """The exception to raise for the ``requests`` error ``err`` of a download of ``url``.

    Parameters
    ----------
    err
        A ``requests.RequestException``.
    url
        The URL that was requested.
    filename
        The file's name in the cache and in ``$HOLOCELL_DATA_DIR`` (the messages say how to work offline).

    Returns
    -------
    ``requests.HTTPError`` when the server answered with an error status (naming the status and, for 4xx, to
    check the URL; for 5xx, to retry later); ``ConnectionError`` otherwise (no answer: the network, a refused
    connection, a timeout).
    """
    import requests

    from ._registry import DATA_DIR_ENV

    offline = f"put {filename!r} in a directory listed in ${DATA_DIR_ENV} to work offline"
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(err, requests.HTTPError) or status is None:
        return ConnectionError(
            f"Could not download {url} ({type(err).__name__}: {err}). Check the network, or {offline}."
        )
    answer = f"{status} {response.reason}" if getattr(response, "reason", None) else str(status)
    final = getattr(response, "url", None) or url
    where = url if final == url else f"{url} (redirected to {final})"
    if 500 <= status < 600:
        advice = "The server failed, not holocell or the network: retry later"
    elif status in (404, 410):
        advice = (
            "There is no file at that address: check the URL (for a registered name, its entry's url: "
            "holocell.data.REGISTRY[name].url)"
        )
    else:
        advice = "The server refused the request: check the URL and that the file is public"
    message = f"The server answered {answer} for {where}. {advice}, or {offline}."
    return requests.HTTPError(message, response=response)


__all__ = ["download_error"]
