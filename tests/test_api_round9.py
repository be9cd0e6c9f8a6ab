"""Session 9 probe findings on the public API: one-shot iterables as perturbation settings, the perturbation
``seed``, ``train(progress_bar=)`` and the HTTP status of a failed ``load_pretrained`` download."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
import requests

import holocell as hc
from holocell.data import _registry

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"n_steps": 1, "progress_bar": False}
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
CELLS = np.arange(0, 400, 10)


class DataWasRead(RuntimeError):
    """Raised by the patched data access: a check came after the data were read."""


@pytest.fixture
def no_data_reads(monkeypatch):
    """Any read of a model's data (``_arrays``, and ``_latent`` for fate_shift) raises :class:`DataWasRead`."""

    def boom(*args, **kwargs):
        raise DataWasRead("the data were read before the arguments were checked")

    monkeypatch.setattr(hc.HoloCell, "_arrays", boom)
    monkeypatch.setattr(hc.HoloCell, "_latent", boom)


# ---------------------------------------------------------------- finding 2: one-shot iterables in iter_perturbations
def _shifts(model, mdata, **kwargs):
    out = {}
    for gene, res in model.iter_perturbations(mdata, genes=["PPBP", "PF4"], indices=CELLS, **FAST, **kwargs):
        out[gene] = {m: np.stack([res.control[m], res.perturbed[m]]) for m in res.perturbed}
    return out


def test_iter_perturbations_takes_generators_of_sources_and_regenerate(trained_pbmc):
    mdata, model = trained_pbmc
    listed = _shifts(model, mdata, regenerate=["protein"], sources=["rna"])
    from_generator = _shifts(model, mdata, regenerate=["protein"], sources=(m for m in ["rna"]))
    without_rna = _shifts(model, mdata, regenerate=["protein"], sources=[])
    for gene in listed:
        np.testing.assert_array_equal(from_generator[gene]["protein"], listed[gene]["protein"])
        assert not np.allclose(without_rna[gene]["protein"], listed[gene]["protein"], equal_nan=True)
    # regenerate as a generator: the same as the list (it failed with "... modalities, got []")
    both = _shifts(model, mdata, regenerate=["rna", "protein"])
    both_generator = _shifts(model, mdata, regenerate=iter(["rna", "protein"]))
    for gene in both:
        for m in ("rna", "protein"):
            np.testing.assert_array_equal(both_generator[gene][m], both[gene][m])


def test_iter_perturbations_reports_the_settings_it_used(trained_pbmc):
    mdata, model = trained_pbmc
    gene, res = next(model.iter_perturbations(mdata, "PPBP", regenerate=iter(["protein"]),
                                              sources=map(str, ["rna"]), indices=CELLS, **FAST))  # fmt: skip
    assert gene == "PPBP"
    assert res.params["regenerate"] == ["protein"] and res.params["sources"] == ["rna"]


# ------------------------------------------------------------------------ finding 5: the perturbation seed is checked
BAD_SEEDS = [
    (None, TypeError, "seed must be an integer >= 0, got NoneType None"),
    (1.5, TypeError, "seed must be an integer >= 0, got float 1.5"),
    ("3", TypeError, "seed must be an integer >= 0, got str '3'"),
    (np.float64(2.0), TypeError, "seed must be an integer >= 0"),
    (True, TypeError, "seed must be an integer >= 0"),
    (-1, ValueError, "seed must be an integer >= 0, got -1"),
    (2**70, ValueError, "seed must be below 2\\*\\*63"),
]


@pytest.mark.parametrize(("seed", "error", "message"), BAD_SEEDS)
def test_perturbation_seed_is_checked_before_the_data_are_read(trained_pbmc, no_data_reads, seed, error, message):
    mdata, model = trained_pbmc
    with pytest.raises(error, match=message):
        model.predict_perturbation(mdata, genes=["PPBP"], seed=seed, **FAST)
    with pytest.raises(error, match=message):
        next(model.iter_perturbations(mdata, genes=["PPBP"], seed=seed, **FAST))


@pytest.mark.parametrize(("seed", "error", "message"), [BAD_SEEDS[0], BAD_SEEDS[1], BAD_SEEDS[5], BAD_SEEDS[6]])
def test_tools_check_the_perturbation_seed_first(trained_pbmc, no_data_reads, seed, error, message):
    mdata, model = trained_pbmc
    mdata = mdata.copy()
    with pytest.raises(error, match=message):
        hc.tl.perturb(mdata, model, genes=["PPBP"], seed=seed, **FAST)
    with pytest.raises(error, match=message):
        hc.tl.perturb(mdata, model, genes=["PPBP"], seed=seed, copy=True, **FAST)
    with pytest.raises(error, match=message):
        hc.tl.grn(mdata, model, tfs=["PPBP"], targets=["PF4", "MS4A1"], method="knockout", seed=seed, **FAST)
    with pytest.raises(error, match=message):
        hc.tl.fate_shift(mdata, model, groupby="batch", source="p1_0", target="p2_0", genes=["PPBP"], seed=seed,
                         **FAST)  # fmt: skip
    assert "holocell_perturb" not in mdata.uns and "holocell_grn" not in mdata.uns
    assert "holocell_fate_shift" not in mdata.uns


def test_numpy_integer_seed_is_the_same_seed(trained_pbmc):
    mdata, model = trained_pbmc
    plain = model.predict_perturbation(mdata, genes=["PPBP"], indices=CELLS, seed=3, **FAST)
    numpy = model.predict_perturbation(mdata, genes=["PPBP"], indices=CELLS, seed=np.int64(3), **FAST)
    assert type(numpy.params["seed"]) is int and numpy.params["seed"] == 3
    for m in plain.perturbed:
        np.testing.assert_array_equal(numpy.perturbed[m], plain.perturbed[m])


# ------------------------------------------------------------------------------ finding 10: train(progress_bar=...)
@pytest.fixture
def small_model(pbmc):
    mdata = pbmc[pbmc.obs_names[::8]].copy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    return hc.HoloCell(mdata, **TINY)


def test_train_takes_progress_bar_as_the_other_methods_do(small_model, monkeypatch):
    from holocell.model import _training_mixin

    seen = []
    real_fit = _training_mixin.fit

    def spy(*args, **kwargs):
        seen.append(kwargs["enable_progress_bar"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(_training_mixin, "fit", spy)
    small_model.train(max_epochs=1, progress_bar=False, early_stopping=False, seed=0)
    assert small_model.is_trained_ and seen == [False]
    small_model.train(max_epochs=1, progress_bar=False, enable_progress_bar=False, early_stopping=False, seed=0)
    assert seen == [False, False]


def test_train_refuses_two_different_progress_switches_before_the_data(small_model, no_data_reads):
    with pytest.raises(ValueError, match="enable_progress_bar=True and progress_bar=False: two names of the same"):
        small_model.train(max_epochs=1, enable_progress_bar=True, progress_bar=False)
    with pytest.raises(ValueError, match="progress_bar must be True, False, 'auto' or None"):
        small_model.train(max_epochs=1, progress_bar="no")
    assert not small_model.is_trained_


# ------------------------------------------------------------------- finding 11: HTTP status of a failed download
class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``/<status>/<anything>`` with that HTTP status; the body is ``b"payload"`` for 200, else empty."""

    def do_GET(self) -> None:
        status = int(self.path.strip("/").split("/")[0])
        body = b"payload" if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def status_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


SHA = hashlib.sha256(b"not served").hexdigest()


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (404, "There is no file at that address: check the URL"),
        (410, "There is no file at that address: check the URL"),
        (403, "The server refused the request: check the URL and that the file is public"),
        (500, "The server failed, not holocell or the network: retry later"),
        (503, "The server failed, not holocell or the network: retry later"),
    ],
)
def test_load_pretrained_names_the_http_status(status_server, cache, status, advice):
    url = f"{status_server}{status}/model.zip"
    with pytest.raises(requests.HTTPError, match=f"The server answered {status} .* for {url}\\. {advice}") as info:
        hc.HoloCell.load_pretrained(url, sha256=SHA)
    assert not isinstance(info.value, ConnectionError)  # the network works: the server answered
    assert info.value.response.status_code == status
    assert _registry.DATA_DIR_ENV in str(info.value)  # how to work offline, as before
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == []


def test_registered_checkpoint_at_a_missing_url_names_the_entry(status_server, cache):
    _registry.register("round9-missing", "missing.zip", SHA, url=status_server + "404/missing.zip", kind="checkpoint")
    with pytest.raises(requests.HTTPError, match=r"answered 404 .*REGISTRY\[name\]\.url"):
        hc.HoloCell.load_pretrained("round9-missing")


def test_a_wrong_hash_of_a_url_is_the_hash_passed_not_a_registered_one(status_server, cache):
    with pytest.raises(ValueError, match=f"does not match the expected {SHA} \\(registered, or passed as sha256=\\)"):
        hc.HoloCell.load_pretrained(status_server + "200/model.zip", sha256=SHA)


def test_no_network_is_still_a_connection_error(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="Check the network") as info:
        hc.HoloCell.load_pretrained(f"http://127.0.0.1:{port}/model.zip", sha256=SHA)
    assert not isinstance(info.value, requests.HTTPError)


# ------------------------------------------------------- scvi-tools' set-up and train() arguments holocell does not take
@pytest.mark.parametrize(
    ("argument", "value", "fix"),
    [
        ("layer", "counts", "pass rna_layer="),
        ("labels_key", "celltype", r"hc.tl.annotate\(mdata, model, labels_key=...\)"),
        ("categorical_covariate_keys", ["batch"], "batch_key= is the one categorical covariate"),
        ("continuous_covariate_keys", ["n_counts"], "no continuous covariates"),
        ("size_factor_key", "sf", "library size is read from its counts"),
    ],
)
def test_setup_names_holocells_way_for_scvi_setup_arguments(pbmc, argument, value, fix):
    """They reached scvi-tools' ``register_fields``: "unexpected keyword arguments ... passed without a
    source_registry", which named no holocell argument. Refused before anything is registered."""
    mdata = pbmc.copy()
    with pytest.raises(TypeError, match=rf"setup_mudata\(\) got {argument}=.*of scvi-tools' set-up.*{fix}"):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch",
                                 **{argument: value})  # fmt: skip
    assert "_scvi_uuid" not in mdata.uns and "_scvi_batch" not in mdata.obs


def test_train_names_accelerator_for_scvis_use_gpu(trained_pbmc, no_data_reads):
    _, model = trained_pbmc
    with pytest.raises(TypeError, match=r"use_gpu: pass accelerator='gpu' \(or 'cpu'\)"):
        model.train(max_epochs=1, use_gpu=False)


def test_fate_shift_checks_its_perturbation_settings_before_the_embedding(trained_pbmc, no_data_reads):
    """A wrong ``sources`` / ``regenerate`` was refused only when the perturbations started, after the embedding
    pass over every cell."""
    mdata, model = trained_pbmc
    for bad in ({"sources": ["adt_typo"]}, {"regenerate": ["atac"]}, {"n_steps": -1}, {"mode": "delete"}):
        with pytest.raises((ValueError, TypeError)) as err:
            hc.tl.fate_shift(mdata, model, groupby="batch", source="p1_0", target="p2_0", genes=["PPBP"], **bad)
        assert not isinstance(err.value, DataWasRead), bad


def test_fate_shift_reads_a_generator_of_sources_once(trained_pbmc):
    mdata, model = trained_pbmc
    common = {"groupby": "batch", "source": "p3_0", "target": "p2_0", "genes": ["PPBP", "PF4"], "n_cells": 20,
              "n_steps": 1, "regenerate": ["protein"], "progress_bar": False, "copy": True}  # fmt: skip
    listed = hc.tl.fate_shift(mdata, model, sources=["rna"], **common).uns["holocell_fate_shift"]["ranking"]
    generated = hc.tl.fate_shift(mdata, model, sources=iter(["rna"]), **common).uns["holocell_fate_shift"]["ranking"]
    assert listed.equals(generated)
