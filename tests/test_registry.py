"""The download registry against a real HTTP server on 127.0.0.1 (started inside the test)."""

from __future__ import annotations

import hashlib
import socket

import pytest
import requests

from holocell.data import _registry
from holocell.data._registry import CACHE_DIR_ENV, DATA_DIR_ENV, fetch, fetch_url, register

PAYLOAD = b"holocell registry test payload\n" * 100


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    return folder


@pytest.fixture
def entry_name(monkeypatch):
    """A registry name that is removed again after the test."""
    monkeypatch.setattr(_registry, "REGISTRY", dict(_registry.REGISTRY))
    return "test-file"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_file_is_downloaded_verified_and_cached(server, cache, entry_name):
    url, root, requests = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register(entry_name, "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    path = fetch(entry_name, progressbar=False)
    assert path.parent == cache and path.read_bytes() == PAYLOAD
    assert requests == ["/good.bin"]


def test_cache_hit_sends_no_second_request(server, cache, entry_name):
    url, root, requests = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register(entry_name, "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    first = fetch(entry_name, progressbar=False)
    (root / "good.bin").unlink()  # a second request would now fail
    second = fetch(entry_name, progressbar=False)
    assert first == second and second.read_bytes() == PAYLOAD
    assert len(requests) == 1


def test_wrong_hash_is_refused_and_nothing_cached(server, cache, entry_name):
    url, root, requests = server
    (root / "bad.bin").write_bytes(PAYLOAD + b"tampered")
    register(entry_name, "bad.bin", _sha(PAYLOAD), url=url + "bad.bin")
    with pytest.raises(ValueError, match="sha256 does not match"):
        fetch(entry_name, progressbar=False)
    assert requests == ["/bad.bin"]
    assert not cache.exists() or list(cache.iterdir()) == []


def test_corrupted_cache_file_is_downloaded_again(server, cache, entry_name):
    """A download holocell recorded that was damaged since is downloaded again; a file of the same name that
    holocell did not write is the user's, and is refused (tests/test_cache_and_figures.py)."""
    url, root, requests = server
    (root / "good.bin").write_bytes(PAYLOAD)
    register(entry_name, "good.bin", _sha(PAYLOAD), url=url + "good.bin")
    assert fetch(entry_name, progressbar=False).read_bytes() == PAYLOAD
    (cache / "good.bin").write_bytes(b"truncated")
    assert fetch(entry_name, progressbar=False).read_bytes() == PAYLOAD
    assert len(requests) == 2


def test_missing_file_and_server_down_raise_connection_error(server, cache, entry_name):
    """A missing file is the server's answer (404, ``requests.HTTPError``), not a network problem; a server that
    cannot be reached is a ``ConnectionError`` (tests/test_api_round9.py)."""
    url, _, _ = server
    with pytest.raises(requests.HTTPError, match="answered 404 .* check the URL"):
        fetch_url(url + "absent.bin", _sha(PAYLOAD), "absent.bin", progressbar=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    register(entry_name, "down.bin", _sha(PAYLOAD), url=f"http://127.0.0.1:{port}/down.bin")
    with pytest.raises(ConnectionError, match=DATA_DIR_ENV):
        fetch(entry_name, progressbar=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_local_data_dir_is_used_without_network(tmp_path, cache, entry_name, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    (local / "offline.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv(DATA_DIR_ENV, str(local))
    register(entry_name, "offline.bin", _sha(PAYLOAD), url="http://127.0.0.1:9/never-contacted")
    assert fetch(entry_name, progressbar=False) == local / "offline.bin"
    (local / "offline.bin").write_bytes(PAYLOAD[:-1])  # corrupted local copy
    with pytest.raises(ValueError, match="corrupted or a different version"):
        fetch(entry_name, progressbar=False)


def test_shipped_copy_is_checked(tmp_path, cache, entry_name):
    shipped = tmp_path / "shipped.bin"
    shipped.write_bytes(PAYLOAD)
    register(entry_name, "shipped.bin", _sha(PAYLOAD), url="http://127.0.0.1:9/x", shipped=shipped)
    assert fetch(entry_name) == shipped
    shipped.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="Reinstall holocell"):
        fetch(entry_name)


def test_bad_registrations_are_explained(entry_name):
    with pytest.raises(ValueError, match="64 hex"):
        register(entry_name, "x.bin", "abc")
    with pytest.raises(ValueError, match="kind"):
        register(entry_name, "x.bin", _sha(b""), kind="model")
    with pytest.raises(KeyError, match="not in the holocell registry"):
        fetch("no-such-entry")


def test_checkpoint_descriptions_say_what_the_shipped_model_was_trained_on():
    """holocell-small (v3): 5,800 cells, 4,000 of them mouse; v2 (the same cells, the previous alignment) and v1
    (15,800 cells, 14,000 mouse) keep their names and bytes; the misleading PBMC alias of v1 warns."""
    from holocell import HoloCellDeprecationWarning

    entry = _registry.REGISTRY["holocell-small"]
    assert "5,800" in entry.description and "4,000 mouse" in entry.description and "1,800 human" in entry.description
    assert _registry.REGISTRY["holocell-small-v3"].sha256 == entry.sha256
    v2 = _registry.REGISTRY["holocell-small-v2"]
    assert v2.sha256 != entry.sha256 and "5,800" in v2.description and "distill_cross" in v2.description
    assert fetch("holocell-small-v2", progressbar=False).name == "holocell-small-v2.zip"
    v1 = _registry.REGISTRY["holocell-small-v1"]
    assert v1.sha256 != entry.sha256 and "14,000" in v1.description
    with pytest.warns(HoloCellDeprecationWarning, match="holocell-pbmc-small.*deprecated"):
        assert fetch("holocell-pbmc-small", progressbar=False) == fetch("holocell-small-v1", progressbar=False)
