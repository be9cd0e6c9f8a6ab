"""``hc.data.hold_out``: a modality hidden for some batches, the input untouched (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

import holocell as hc


def test_hold_out_hides_one_batch_of_one_modality(pbmc):
    before = pbmc.copy()
    pbmc.obsm["X_test"] = np.arange(pbmc.n_obs, dtype=float)[:, None]
    pbmc.uns["note"] = {"a": 1}
    train, truth = hc.data.hold_out(pbmc, modality="adt", batches="p4_0")
    p4 = pbmc["adt"].obs_names[(pbmc["adt"].obs["batch"] == "p4_0").to_numpy()]
    assert truth.obs_names.tolist() == p4.tolist()
    assert (truth.X != pbmc["adt"][p4].X).nnz == 0  # the measured values, unchanged
    assert not set(p4) & set(train["adt"].obs_names)
    assert train["adt"].n_obs + truth.n_obs == pbmc["adt"].n_obs
    assert train["rna"].obs_names.equals(pbmc["rna"].obs_names)  # the cells keep their RNA
    assert not train.obsm["adt"][train.obs_names.isin(p4)].any()
    # global obs, obsm and uns carried over for the cells that remain
    assert train.obs["celltype"].tolist() == pbmc.obs.loc[train.obs_names, "celltype"].tolist()
    rows = pbmc.obs_names.get_indexer(train.obs_names)
    np.testing.assert_array_equal(train.obsm["X_test"][:, 0], rows)
    assert train.uns["note"] == {"a": 1}
    # the input is not changed
    assert pbmc["adt"].n_obs == before["adt"].n_obs and (pbmc["adt"].X != before["adt"].X).nnz == 0
    assert pbmc.obsm["adt"].sum() == before.obsm["adt"].sum()


def test_hold_out_several_batches_and_a_trainable_result(pbmc):
    train, truth = hc.data.hold_out(pbmc, modality="rna", batches=["p3_0", "p4_0"])
    assert set(truth.obs["batch"]) == {"p3_0", "p4_0"}
    assert set(train["rna"].obs["batch"]) == {"p1_0"}
    hc.HoloCell.setup_mudata(train, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    assert hc.HoloCell(train, d_model=32, n_layers=1, n_heads=2, n_latents=8).adata is train


def test_hold_out_refuses_what_it_cannot_do(pbmc):
    with pytest.raises(KeyError, match="No modality 'atac'"):
        hc.data.hold_out(pbmc, modality="atac", batches="p4_0")
    with pytest.raises(ValueError, match=r"No 'adt' cells in batch\(es\) \['p1_0'\]"):
        hc.data.hold_out(pbmc, modality="adt", batches="p1_0")  # p1 has no protein
    with pytest.raises(KeyError, match="donor"):
        hc.data.hold_out(pbmc, modality="adt", batches="p4_0", batch_key="donor")
    with pytest.raises(ValueError, match="every 'adt' cell"):
        hc.data.hold_out(pbmc, modality="adt", batches=["p2_0", "p3_0", "p4_0"])
    with pytest.raises(TypeError, match="batches must be a batch name or a list of names"):
        hc.data.hold_out(pbmc, modality="adt", batches=0)  # was "'int' object is not iterable"


def test_hold_out_of_set_up_data_is_not_taken_for_set_up(pbmc):
    """The scvi registration keys used to be copied, so HoloCell(train) failed with scvi's "Did you make a copy?"
    and load_pretrained(name, train) took train for set up."""
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    train, _ = hc.data.hold_out(pbmc, modality="adt", batches="p4_0")
    assert not [k for k in train.uns if k.startswith("_scvi_")]
    assert not [c for c in train.obs.columns if str(c).startswith("_scvi_")]
    assert "_scvi_uuid" in pbmc.uns  # the input keeps its own registration
    hc.HoloCell.setup_mudata(train, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    assert hc.HoloCell(train, d_model=16, n_layers=1, n_heads=2, n_latents=4).adata is train
