"""Pretrained checkpoints: archives, loading by name / path / URL, transfer onto partly new features, freezing."""

from __future__ import annotations

import zipfile

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import holocell as hc
from holocell.data import _registry
from holocell.data._registry import CACHE_DIR_ENV, DATA_DIR_ENV, register, sha256sum

N_NEW_GENES, N_NEW_ANTIBODIES, N_DROPPED_GENES, N_KEPT_ANTIBODIES = 10, 5, 100, 150


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(_registry, "REGISTRY", dict(_registry.REGISTRY))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def archive(trained_pbmc, tmp_path_factory):
    _, model = trained_pbmc
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny.zip")


def _query(pbmc: md.MuData) -> md.MuData:
    """200 paired PBMC cells (p3, p4) with 100 genes dropped, 10 unknown genes, 150 of 224 antibodies plus
    5 unknown ones; p4 renamed to a batch the reference never saw."""
    rng = np.random.default_rng(0)
    batch = pbmc.obs["batch"].astype(str)
    paired = pbmc.obs_names[batch == "p3_0"][:100].append(pbmc.obs_names[batch == "p4_0"][:100])
    rna = pbmc["rna"][paired, N_DROPPED_GENES:]
    adt = pbmc["adt"][paired, :N_KEPT_ANTIBODIES]
    new_rna = sp.csr_matrix(rng.poisson(1.0, (len(paired), N_NEW_GENES)).astype(np.float32))
    new_adt = sp.csr_matrix(rng.poisson(5.0, (len(paired), N_NEW_ANTIBODIES)).astype(np.float32))
    rna = ad.AnnData(
        sp.hstack([sp.csr_matrix(rna.X, dtype=np.float32), new_rna], format="csr"),
        obs=pd.DataFrame(index=paired),
        var=pd.DataFrame(index=list(rna.var_names) + [f"NOVELGENE{i}" for i in range(N_NEW_GENES)]),
    )
    adt = ad.AnnData(
        sp.hstack([sp.csr_matrix(adt.X, dtype=np.float32), new_adt], format="csr"),
        obs=pd.DataFrame(index=paired),
        var=pd.DataFrame(index=list(adt.var_names) + [f"zznovel{i}" for i in range(N_NEW_ANTIBODIES)]),
    )
    query = md.MuData({"rna": rna, "adt": adt})
    query.obs["batch"] = pbmc.obs.loc[paired, "batch"].astype(str).replace({"p4_0": "query_lab"}).values
    hc.HoloCell.setup_mudata(query, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    return query


def test_archive_and_directory_load_the_same_model(trained_pbmc, archive, pbmc, tmp_path):
    mdata, model = trained_pbmc
    cells = np.arange(0, mdata.n_obs, 8)
    expected = model.get_latent_representation(mdata, indices=cells)
    model.save(tmp_path / "dir")
    for source in (archive, tmp_path / "dir"):
        loaded = hc.HoloCell.load_pretrained(source)
        assert loaded.feature_space.anchors == model.feature_space.anchors
        np.testing.assert_allclose(loaded.get_latent_representation(mdata, indices=cells), expected, atol=1e-5)
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["config.json", "model.safetensors"]


def test_load_pretrained_from_registry_name_and_url(trained_pbmc, archive, server, isolated_cache):
    mdata, model = trained_pbmc
    url, root, requests = server
    (root / "tiny.zip").write_bytes(archive.read_bytes())
    sha = sha256sum(archive)
    register("test-tiny", "tiny.zip", sha, url=url + "tiny.zip", kind="checkpoint")
    assert "test-tiny" in hc.data.available("checkpoint")
    first = hc.HoloCell.load_pretrained("test-tiny")
    second = hc.HoloCell.load_pretrained("test-tiny")  # served from the cache
    assert requests == ["/tiny.zip"]
    z = model.get_latent_representation(mdata, indices=np.arange(50))
    for loaded in (first, second):
        np.testing.assert_allclose(loaded.get_latent_representation(mdata, indices=np.arange(50)), z, atol=1e-5)
    with pytest.raises(ValueError, match="needs its sha256"):
        hc.HoloCell.load_pretrained(url + "tiny.zip")
    by_url = hc.HoloCell.load_pretrained(url + "tiny.zip", sha256=sha)
    assert by_url.feature_space.n_anchors == model.feature_space.n_anchors
    with pytest.raises(ValueError, match="sha256 does not match"):
        hc.HoloCell.load_pretrained(url + "tiny.zip", sha256="0" * 64)
    with pytest.raises(ValueError, match="not a registered checkpoint"):
        hc.HoloCell.load_pretrained("no-such-checkpoint")


def test_unsafe_or_foreign_archives_are_refused(archive, tmp_path):
    members = zipfile.ZipFile(archive)
    for bad_name in ("../config.json", "/abs/model.safetensors", "payload.pkl"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            for name in members.namelist():
                zf.writestr(name, members.read(name))
            zf.writestr(bad_name, b"x")
        with pytest.raises(ValueError, match="unexpected member"):
            hc.HoloCell.load_pretrained(bad)
    (tmp_path / "not.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="neither a checkpoint directory"):
        hc.HoloCell.load_pretrained(tmp_path / "not.zip")


def test_transfer_to_partly_overlapping_features(trained_pbmc, archive, pbmc):
    _, reference = trained_pbmc
    query = _query(pbmc)
    model = hc.HoloCell.load_pretrained(archive, query)
    z = model.get_latent_representation(query)
    assert z.shape == (query.n_obs, reference.config.d_model) and np.isfinite(z).all()
    report = model.transfer_report_
    n_genes = pbmc["rna"].n_vars - N_DROPPED_GENES
    assert report.loc["rna"].tolist()[:3] == [n_genes + N_NEW_GENES, pbmc["rna"].n_vars, n_genes]
    assert report.loc["protein"].tolist()[:3] == [
        N_KEPT_ANTIBODIES + N_NEW_ANTIBODIES,
        pbmc["adt"].n_vars,
        N_KEPT_ANTIBODIES,
    ]
    n_anchors = model.feature_space.n_anchors
    assert report.loc["anchors", "n_shared"] == n_anchors - N_NEW_GENES - N_NEW_ANTIBODIES
    assert report.loc["batches"].tolist()[:3] == [2, 4, 1]
    # shared anchors carry the reference's parameters, by name
    ref_w = reference.module.state_dict()["network.anchor.weight"].cpu()  # trained on any device
    new_w = model.module.state_dict()["network.anchor.weight"].cpu()  # loaded on the CPU
    ref_index = {a: i for i, a in enumerate(reference.feature_space.anchors)}
    for i, name in enumerate(model.feature_space.anchors[:20]):
        torch.testing.assert_close(new_w[i], ref_w[ref_index[name]])
    # the unseen batch starts where a zero-shot embedding of an unseen batch would be
    ref_b = reference.module.state_dict()["network.batch.weight"].cpu()
    new_b = model.module.state_dict()["network.batch.weight"]
    torch.testing.assert_close(new_b[model.batch_categories_.index("query_lab")], ref_b[-1])
    torch.testing.assert_close(new_b[model.batch_categories_.index("p3_0")], ref_b[reference.batch_categories_.index("p3_0")])


def test_freeze_keeps_pretrained_values_through_training(trained_pbmc, pbmc):
    _, reference = trained_pbmc
    query = _query(pbmc)
    model = hc.HoloCell.load_query_data(query, reference, freeze=True)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    new_rows = model._transfer_state.new_rows
    model.train(max_epochs=1, enable_progress_bar=False, validation_size=0.0)
    after = model.module.state_dict()
    for key, p in model.module.named_parameters():
        if key in new_rows and new_rows[key].any():
            keep = torch.from_numpy(~new_rows[key])
            torch.testing.assert_close(after[key][keep], before[key][keep], rtol=0, atol=0)
            assert not torch.equal(after[key][~keep], before[key][~keep]), key
        else:
            assert not p.requires_grad, key
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    model.unfreeze()
    assert all(p.requires_grad for p in model.module.parameters())
    with pytest.raises(ValueError, match="no pretrained reference"):
        reference.freeze()


def test_shipped_holocell_small_works_offline(pbmc, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))  # empty cache; there is no server
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert {"holocell-small", "holocell-small-v1", "holocell-pbmc-small"} <= set(hc.data.available("checkpoint"))
    reference = hc.HoloCell.load_pretrained("holocell-small")
    assert {"rna", "atac", "protein"} == set(reference.modalities_)
    held_out = pbmc[pbmc.obs_names[(pbmc.obs["batch"] == "p4_0").to_numpy()][:64]].copy()
    hc.HoloCell.setup_mudata(held_out, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    with pytest.warns(hc.HoloCellDeprecationWarning, match="'holocell-pbmc-small' is deprecated.*mouse"):
        model = hc.HoloCell.load_pretrained("holocell-pbmc-small", held_out)
    report = model.transfer_report_
    assert report.loc["rna", "fraction_shared"] == 1.0 and report.loc["protein", "fraction_shared"] > 0.95
    z = model.get_latent_representation(held_out)
    assert z.shape == (64, model.config.embedding_dim) and np.isfinite(z).all()
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="not a checkpoint"):
        hc.HoloCell.load_pretrained("pbmc_multiome_1k")


def test_transfer_onto_other_peaks_keeps_each_peaks_own_vector(tmp_path):
    """The encoder's per-peak input vectors were copied by position (other peaks in the same number) or refused as
    "an incompatible holocell version" (another number of peaks); they follow each peak's coordinates now."""
    sim_genes = r"RNA features of modality .* map to a known"
    mdata, _ = hc.data.simulate_multiome(120, n_genes=30, n_tfs=4, n_proteins=0, n_distal_peaks=6,
                                         modalities=("rna", "atac"), seed=0)  # fmt: skip
    setup = {"modalities": {"rna": "rna", "atac": "atac"}, "batch_key": "batch"}
    with pytest.warns(hc.HoloCellWarning, match=sim_genes):
        hc.HoloCell.setup_mudata(mdata, **setup)
    reference = hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    reference.train(max_epochs=2, batch_size=32, enable_progress_bar=False)
    trained = reference.module.state_dict()["network.peak_embedding.weight"]
    assert trained.abs().sum() > 0
    reference.save_pretrained(tmp_path / "ref.zip")
    n_peaks = mdata["atac"].n_vars
    for peaks in (np.arange(n_peaks)[::-1], np.arange(n_peaks - 3)):  # reordered; fewer peaks
        query = mdata.copy()
        query.mod["atac"] = mdata["atac"][:, peaks].copy()
        query.update()
        with pytest.warns(hc.HoloCellWarning, match=sim_genes):
            hc.HoloCell.setup_mudata(query, **setup)
        model = hc.HoloCell.load_pretrained(tmp_path / "ref.zip", query)
        ref_row = {n: i for i, n in enumerate(mdata["atac"].var_names)}  # each peak's own row, by coordinates
        rows = [ref_row[n] for n in query["atac"].var_names]
        torch.testing.assert_close(model.module.state_dict()["network.peak_embedding.weight"], trained[rows])
        assert np.isfinite(model.get_latent_representation(query, progress_bar=False)).all()


def test_a_model_loaded_without_data_is_not_trained_on_its_placeholder(tmp_path, trained_pbmc):
    """load_pretrained(name) holds one empty cell per batch: train() used to fit the pretrained weights to it."""
    mdata, model = trained_pbmc
    archive = model.save_pretrained(tmp_path / "m.zip")
    alone = hc.HoloCell.load_pretrained(archive)
    before = {k: v.clone() for k, v in alone.module.state_dict().items()}
    with pytest.raises(ValueError, match="loaded without data"):
        alone.train(max_epochs=1, enable_progress_bar=False)
    with pytest.raises(ValueError, match="loaded without data"):
        alone.get_latent_representation()
    assert all(torch.equal(before[k], v) for k, v in alone.module.state_dict().items())
    z = alone.get_latent_representation(mdata.copy(), progress_bar=False)  # the user's cells: fine
    assert np.isfinite(z).all()
    for bad, words in ((str(tmp_path / "x.h5mu"), "read it with mudata.read_h5mu"),
                       (mdata["rna"], "wrap it with mudata.MuData")):  # fmt: skip
        with pytest.raises(TypeError, match=words):
            hc.HoloCell.load_pretrained(archive, bad)
    for name in ("", " "):
        with pytest.raises(ValueError, match="needs a registered checkpoint name, a path or a URL"):
            hc.HoloCell.load_pretrained(name)
    with pytest.raises(FileNotFoundError, match="No holocell checkpoint at"):  # was "PosixPath('.') has an empty name"
        hc.HoloCell.load_pretrained(".")


def test_transfer_onto_features_the_reference_never_saw_warns(tmp_path, trained_pbmc):
    """A query whose genes the reference knows none of (another species, Ensembl ids) transferred silently."""
    mdata, model = trained_pbmc
    archive = model.save_pretrained(tmp_path / "m.zip")
    rna = mdata["rna"][:60].copy()
    rna.var_names = [f"ZZ{i}" for i in range(rna.n_vars)]
    query = md.MuData({"rna": rna})
    with pytest.warns(hc.HoloCellWarning, match="map to a known"):
        hc.HoloCell.setup_mudata(query, modalities={"rna": "rna"}, allow_unmatched_genes=True)
    with pytest.warns(hc.HoloCellWarning, match=r"knows none of the features of modality \['rna'\]"):
        transferred = hc.HoloCell.load_pretrained(archive, query)
    assert transferred.transfer_report_.loc["rna", "n_shared"] == 0
