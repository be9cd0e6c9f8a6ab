"""Shared fixtures: real data loaded once, copied per test; tiny model sizes for speed."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import mudata as md
import numpy as np
import pytest
import torch

import holocell as hc

#: Real chromatin data (SNARE-seq2, Granja 2019, PBMC multiome): converted copies in ``../shared/data`` beside
#: the clone, when it is there. Only the tests that read it see ``HOLOCELL_DATA_DIR`` (fixture
#: ``shared_data_dir``); a value the caller already set wins.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

#: ``HOLOCELL_TEST_DOWNLOADS=1`` (the GitHub workflow sets it) lets tests download the real originals from
#: their public hosts. Without it, and without a local converted copy, tests of a real data set skip: a clean
#: clone that reaches only the package registries stays green.
DOWNLOADS_ENV = "HOLOCELL_TEST_DOWNLOADS"

#: The loaders of the real data sets (``hc.data.<name>()``), each converted from public originals.
REAL_DATA = ("snareseq2_mop", "granja2019_bmmc", "pbmc_multiome_1k")

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files with the most ``slow`` tests run first, the rest in their usual order.

    ``make test`` sends whole files to its workers in this order (``--dist loadfile --no-loadscope-reorder``: a
    file's module-scoped trained model is built once); the long files first keeps one worker from finishing the
    tutorials alone at the end.
    """
    n_slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -n_slow[item.path])  # a stable sort: the order inside each file stays


@contextmanager
def shared_data_env():
    """``HOLOCELL_DATA_DIR`` pointing at the shared data folder inside the block only."""
    value = os.environ.get("HOLOCELL_DATA_DIR") or str(SHARED_DATA_DIR)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOLOCELL_DATA_DIR", value)
        yield Path(value)


@pytest.fixture
def shared_data_dir():
    """``HOLOCELL_DATA_DIR`` set to the shared data folder for this test only; yields the folder."""
    with shared_data_env() as path:
        yield path


@pytest.fixture(scope="module")
def shared_data_module():
    """As ``shared_data_dir``, for module-scoped fixtures that load the shared files (restored after the module)."""
    with shared_data_env() as path:
        yield path


def _require_real_data(name: str) -> None:
    from holocell.data._registry import REGISTRY, _local_copy

    with warnings.catch_warnings():  # a data folder that does not exist here is a reason to skip, said below
        warnings.simplefilter("ignore", hc.HoloCellWarning)
        found = _local_copy(REGISTRY[name]) is not None
    if found or os.environ.get(DOWNLOADS_ENV) == "1":
        return
    pytest.skip(
        f"{REGISTRY[name].filename!r} ({name}) is not in $HOLOCELL_DATA_DIR="
        f"{os.environ.get('HOLOCELL_DATA_DIR', '')!r}; put the shared data folder beside the clone "
        f"(../shared/data), point HOLOCELL_DATA_DIR at it, or set {DOWNLOADS_ENV}=1 to download the originals."
    )


@pytest.fixture(scope="session")
def require_real_data():
    """``require_real_data(name)``: skip unless real data set ``name`` is local or downloads are allowed."""
    return _require_real_data


@pytest.fixture(scope="session")
def real_data_loaders() -> tuple[str, ...]:
    """Names of the real data sets' loaders (``hc.data.<name>()``)."""
    return REAL_DATA


@pytest.fixture(scope="session")
def _pbmc_session() -> md.MuData:
    return hc.data.pbmc_cite_mosaic()


@pytest.fixture
def pbmc(_pbmc_session) -> md.MuData:
    """A fresh copy of the bundled PBMC mosaic data."""
    return _pbmc_session.copy()


@pytest.fixture(scope="session")
def trained_pbmc():
    """A tiny model trained for 2 epochs on the PBMC mosaic data (shared, treat as read-only)."""
    mdata = hc.data.pbmc_cite_mosaic()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=2, enable_progress_bar=False, seed=0)
    return mdata, model


@pytest.fixture(scope="session")
def trained_pbmc8():
    """The PBMC mosaic and a tiny model trained for 8 epochs (seed 0; shared, treat as read-only): at 2 epochs the
    cell state carries nothing yet, so quality floors of the expression methods use this one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    mdata = hc.data.pbmc_cite_mosaic()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=8, enable_progress_bar=False, seed=0)
    torch.set_num_threads(n)
    return mdata, model


@pytest.fixture(scope="session")
def simulated():
    """A small simulated RNA + ATAC + protein mosaic (batch1 lacks protein), with ground truth."""
    return hc.data.simulate_multiome(
        300, n_genes=60, n_tfs=8, n_proteins=12, missing={"protein": ["batch1"]}, seed=0
    )


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that records every requested path.

    Two marker files change how ``<name>`` is served: ``<name>.redirect`` (its text is the target)
    answers with a 302 redirect there; ``<name>.stream`` serves ``<name>`` without a Content-Length
    (the body ends when the connection closes), as a streaming server would.
    """

    def __init__(self, *args, requests: list[str], **kwargs) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._requests.append(self.path)
        local = Path(self.translate_path(self.path))
        redirect, stream = local.with_name(local.name + ".redirect"), local.with_name(local.name + ".stream")
        if redirect.is_file():
            self.send_response(302)
            self.send_header("Location", redirect.read_text().strip())
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif stream.is_file() and local.is_file():
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(local.read_bytes())
        else:
            super().do_GET()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (base URL, dir, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = partial(_CountingHandler, requests=requests, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder (``$HOLOCELL_CACHE_DIR``), no local data folder, and a copy of the registry that the
    test may change."""
    from holocell.data import _registry

    folder = tmp_path / "cache"
    monkeypatch.setenv(_registry.CACHE_DIR_ENV, str(folder))
    monkeypatch.delenv(_registry.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(_registry, "REGISTRY", dict(_registry.REGISTRY))
    return folder


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (relative path -> sha256 of a file, ``dir``, or ``link -> target``)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snapshot():
    """``snapshot(path)``: the file tree under ``path`` with the sha256 of every file (compare before/after)."""
    return tree_snapshot


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: for tiny tensors it is fastest and immune to oversubscription on a
    busy machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextmanager
def _umask_block(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def umask_block():
    """``with umask_block(0o022): ...``: the process umask set inside the block only."""
    return _umask_block


@pytest.fixture
def cli_fails(capsys):
    """``cli_fails(argv, words, absent=())``: run ``holocell <argv>``, assert exit code 2 and one line
    ``holocell: error: ...`` holding each of ``words`` and none of ``absent``; return the line."""
    from holocell.cli import main

    def fails(argv: list[str], words: list[str], absent: tuple[str, ...] = ()) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("holocell: error: "), err
        for word in words:
            assert word in err, (word, err)
        for word in absent:
            assert word not in err, (word, err)
        return err

    return fails


@pytest.fixture(scope="module")
def pbmc_50_per_batch(_pbmc_session):
    """50 cells of each PBMC batch (paired and mosaic), set up for holocell (one per test module: treat as read-only)."""
    rng = np.random.default_rng(0)
    batches = _pbmc_session.obs["batch"].to_numpy()
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(batches == b), 50, replace=False)
                                   for b in np.unique(batches)]))  # fmt: skip
    mdata = _pbmc_session[keep].copy()
    mdata.update()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    return mdata

