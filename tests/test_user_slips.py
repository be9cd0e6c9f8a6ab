"""Slips a user makes with real data, each caught with the fix named (thirteenth session's probe of careless input):
a model passed to ``tl.annotate`` beside an older stored embedding, a batch column edited after setup, cells named
differently per modality, count errors at inference, peak columns that contradict the peak names, a subset of
set-up data, narrow integer counts, rounded normalised counts, a cell-id column as ``batch_key``, near-miss names."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell import HoloCellWarning

MODS = {"rna": "rna", "protein": "adt"}
TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


def _small(pbmc: md.MuData, per_batch: int = 40) -> md.MuData:
    keep = np.concatenate([np.flatnonzero(pbmc.obs["batch"].to_numpy() == b)[:per_batch]
                           for b in pbmc.obs["batch"].cat.categories])  # fmt: skip
    sub = pbmc[np.sort(keep)].copy()
    sub.update()
    return sub


# ------------------------------------------------------------------------------------- annotate and a stale embedding
def test_a_model_passed_to_annotate_is_the_model_used(trained_pbmc):
    mdata, model = trained_pbmc
    query = (mdata.obs["batch"] == "p4_0").to_numpy()
    fresh = mdata.copy()
    hc.tl.annotate(fresh, model, labels_key="celltype", query=query, method="knn")
    stale = mdata.copy()  # an embedding of another model (here: noise) under holocell's default key
    stale.obsm["X_holocell"] = np.random.default_rng(0).normal(size=(stale.n_obs, 8)).astype(np.float32)
    hc.tl.annotate(stale, model, labels_key="celltype", query=query, method="knn")
    pd.testing.assert_series_equal(stale.obs["holocell_label"], fresh.obs["holocell_label"])
    assert "modality" in stale.uns["holocell_label"]["params"]  # computed by the model, not read from obsm
    # the stored embedding is read when asked for by name, or when no model is passed
    hc.tl.annotate(stale, model, labels_key="celltype", query=query, method="knn", use_rep="X_holocell",
                   key_added="stored")  # fmt: skip
    assert stale.uns["stored"]["params"]["use_rep"] == "X_holocell"
    assert (stale.obs["stored"][query] != fresh.obs["holocell_label"][query]).mean() > 0.2


def test_annotate_without_query_cells_names_the_fix(trained_pbmc):
    mdata, model = trained_pbmc
    with pytest.raises(ValueError, match="got 1600 and 0. Pass query="):
        hc.tl.annotate(mdata.copy(), model, labels_key="celltype", method="knn")


# ------------------------------------------------------------------------------- the batch column after setup
def test_a_batch_column_edited_after_setup_is_refused(pbmc):
    mdata = _small(pbmc)
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    mdata.obs["batch"] = mdata.obs["batch"].astype(str).replace({"p1_0": "donor1"})  # renamed after setup
    with pytest.raises(ValueError, match=r"obs\['batch'\] changed after setup_mudata: 40 of 160 cells") as err:
        hc.HoloCell(mdata, **TINY)
    assert "['donor1']" in str(err.value) and "setup_mudata(mdata, ..., batch_key='batch') again" in str(err.value)
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")  # the fix
    model = hc.HoloCell(mdata, **TINY)
    assert model.batch_categories_ == ["donor1", "p2_0", "p3_0", "p4_0"]
    # after the model is built: the registered data may not change their batches under it either
    mdata.obs["batch"] = "one batch"
    with pytest.raises(ValueError, match=r"the batch column mdata.obs\['batch'\] changed"):
        model.get_latent_representation()


def test_a_cell_id_column_as_batch_key_is_warned_about(pbmc):
    mdata = _small(pbmc)
    mdata.obs["barcode"] = mdata.obs_names.to_numpy()
    with pytest.warns(HoloCellWarning, match="160 different values for 160 cells"):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="barcode")


# ------------------------------------------------------------------------------- cell names per modality
def test_cells_named_by_one_barcode_in_other_spellings_are_warned_about(pbmc):
    paired = pbmc[(pbmc.obs["batch"] == "p4_0").to_numpy()].copy()
    rng = np.random.default_rng(0)
    barcodes = ["".join(rng.choice(list("ACGT"), 16)) for _ in range(paired.n_obs)]
    rna, adt = paired["rna"].copy(), paired["adt"].copy()
    rna.obs_names = [f"{b}-1" for b in barcodes]
    adt.obs_names = [f"sample1_{b.lower()}.1" for b in barcodes]  # a prefix, R's make.names, another case
    mdata = md.MuData({"rna": rna, "adt": adt})
    with pytest.warns(HoloCellWarning, match="meet one of 'rna' by their 16-base barcode"):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS)
    # unpaired cells of other barcodes: nothing to say
    adt.obs_names = [f"sample1_{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in barcodes]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)
        hc.HoloCell.setup_mudata(md.MuData({"rna": rna, "adt": adt}), modalities=MODS)


def test_unpaired_samples_whose_names_share_a_prefix_or_a_number_are_not_paired(pbmc):
    """Fourteenth session's false-positive probe: an RNA-only and a protein-only sample named ``D1-rna0`` /
    ``D1-adt0`` (one prefix for every cell) or ``0-rna`` / ``0-adt`` (anndata's ``index_unique`` on integer ids)
    got "400 of the 400 cell names meet", whose advice would pair unrelated cells."""
    rna = pbmc["rna"][(pbmc["rna"].obs["batch"] == "p1_0").to_numpy()].copy()
    adt = pbmc["adt"][(pbmc["adt"].obs["batch"] == "p2_0").to_numpy()].copy()
    for rna_names, adt_names in (
        ([f"D1-rna{i}" for i in range(rna.n_obs)], [f"D1-adt{i}" for i in range(adt.n_obs)]),
        ([f"{i}-rna" for i in range(rna.n_obs)], [f"{i}-adt" for i in range(adt.n_obs)]),
    ):
        rna.obs_names, adt.obs_names = rna_names, adt_names
        with warnings.catch_warnings():
            warnings.simplefilter("error", HoloCellWarning)
            hc.HoloCell.setup_mudata(md.MuData({"rna": rna.copy(), "adt": adt.copy()}), modalities=MODS)


# ------------------------------------------------------------------------------- counts at inference
def test_count_errors_of_new_data_give_a_fix_the_call_can_follow(trained_pbmc, pbmc):
    mdata, model = trained_pbmc
    new = mdata.copy()
    counts = new["rna"].X.copy()
    new["rna"].layers["counts"] = counts
    new["rna"].X = counts.multiply(1e4 / counts.sum(axis=1)).log1p().tocsr()  # scanpy's layout
    with pytest.raises(ValueError, match="looks normalised") as err:
        model.get_latent_representation(new)
    assert "mdata.mod['rna'].X = mdata.mod['rna'].layers['counts']" in str(err.value)
    assert "rna_layer" not in str(err.value)  # setup's argument, which the call does not take

    data = _small(pbmc)
    data["rna"].layers["counts"] = data["rna"].X.copy()
    hc.HoloCell.setup_mudata(data, modalities=MODS, batch_key="batch", rna_layer="counts")
    layered = hc.HoloCell(data, **TINY)
    lacking = data.copy()
    del lacking["rna"].layers["counts"]
    with pytest.raises(KeyError, match="set up to read counts") as err:
        layered.get_latent_representation(lacking)
    assert "mdata.mod['rna'].layers['counts'] = mdata.mod['rna'].X.copy()" in str(err.value)


def test_narrow_integers_that_wrapped_are_named_as_such(pbmc):
    mdata = _small(pbmc)
    mdata["rna"].X = sp.csr_matrix(mdata["rna"].X.toarray().astype(np.int8))  # counts above 127 wrap
    assert mdata["rna"].X.min() < 0
    with pytest.raises(ValueError, match="negative values in a int8 matrix: counts above 127 wrap around"):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")


def test_rounded_normalised_counts_are_warned_about(pbmc):
    mdata = _small(pbmc)
    x = mdata["rna"].X.toarray()
    mdata["rna"].X = sp.csr_matrix(np.round(x / x.sum(1, keepdims=True) * 1e4))  # normalize_total, then rounded
    with pytest.warns(HoloCellWarning, match="modality 'rna' has about the same total count"):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")


def test_counts_downsampled_to_one_depth_are_raw_counts(pbmc):
    """``sc.pp.downsample_counts`` gives every cell exactly one total: raw counts, which the rounding check took for
    normalised ones (fourteenth session's false-positive probe)."""
    mdata = _small(pbmc)
    x = mdata["rna"].X.toarray().astype(np.int64)
    rng = np.random.default_rng(0)
    depth = int(x.sum(1).min())
    down = np.stack([rng.multivariate_hypergeometric(row, depth) for row in x])  # what downsample_counts draws
    mdata["rna"].X = sp.csr_matrix(down.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")


# ------------------------------------------------------------------------------- peaks
@pytest.mark.filterwarnings("ignore:Only 2 of 20 RNA features")  # the simulator's genes are not human genes
def test_peak_columns_that_contradict_the_peak_names_are_refused():
    mdata, _ = hc.data.simulate_multiome(80, n_genes=20, n_tfs=4, n_proteins=4, seed=0)
    mdata["atac"].var["start"] = mdata["atac"].var["start"].to_numpy() + 1  # 1-based starts: the same peaks
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"})
    order = np.random.default_rng(0).permutation(mdata["atac"].n_vars)
    for column in ("chrom", "start", "end"):  # assigned from a table in another order
        mdata["atac"].var[column] = mdata["atac"].var[column].to_numpy()[order]
    with pytest.raises(ValueError, match="named by coordinates that disagree with their 'chrom'/'start'/'end'"):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"})


# ------------------------------------------------------------------------------- set-up data, copied
def test_a_copy_of_set_up_data_names_the_setup_again(pbmc, tmp_path):
    mdata = _small(pbmc)
    hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    sub = mdata[mdata.obs_names[:100]].copy()
    with pytest.raises(ValueError, match="set up earlier as another object: a copy.*run HoloCell.setup_mudata on it"):
        hc.HoloCell(sub, **TINY)
    mdata.write(tmp_path / "set_up.h5mu")  # read back from a file: the same fix, in words that fit a file
    with pytest.raises(ValueError, match="written and read back from a file.*run HoloCell.setup_mudata on it"):
        hc.HoloCell(md.read_h5mu(tmp_path / "set_up.h5mu"), **TINY)


# ------------------------------------------------------------------------------- near-miss names
def test_grn_names_close_model_genes(trained_pbmc):
    mdata, model = trained_pbmc
    gene = str(mdata["rna"].var_names[0])
    with pytest.raises(KeyError, match=rf"Unknown TFs \['{gene.lower()}'\].*did you mean \['{gene}'\]"):
        hc.tl.grn(mdata.copy(), model, tfs=[gene.lower()], method="embedding")
    with pytest.raises(KeyError, match=rf"did you mean \['{gene}'\]"):
        model.predict_perturbation(mdata, genes=[f"{gene} "], n_steps=1)


# ------------------------------------------------------------------------------- transfer
def test_the_transfer_report_counts_the_query_s_own_anchors(trained_pbmc, pbmc, tmp_path):
    _, reference = trained_pbmc
    reference.save_pretrained(tmp_path / "ref.zip")
    rna_only = md.MuData({"rna": _small(pbmc)["rna"].copy()})  # the model keeps the reference's protein
    hc.HoloCell.setup_mudata(rna_only, modalities={"rna": "rna"})
    model = hc.HoloCell.load_pretrained(tmp_path / "ref.zip", rna_only)
    assert "protein" in model.modalities_
    anchors = model.transfer_report_.loc["anchors"]
    own = len(np.unique(model.feature_space.maps["rna"].anchor))  # the kept antibodies' anchors were counted too
    assert anchors["n_query"] == own and anchors["n_shared"] <= own


def test_a_frozen_query_model_keeps_the_reference_s_prediction_depth(trained_pbmc, pbmc):
    _, reference = trained_pbmc
    query = _small(pbmc)
    query.obs["batch"] = "new_" + query.obs["batch"].astype(str)  # batches new to the reference: they train
    hc.HoloCell.setup_mudata(query, modalities=MODS, batch_key="batch")
    model = hc.HoloCell.load_query_data(query, reference)  # frozen by default
    before = model.module.network.counts.typical_library.clone()
    model.train(max_epochs=1, enable_progress_bar=False)
    np.testing.assert_array_equal(model.module.network.counts.typical_library.numpy(), before.numpy())
    model.unfreeze()  # trained as a whole, it follows the new data's depth again
    model.train(max_epochs=1, enable_progress_bar=False)
    assert not np.array_equal(model.module.network.counts.typical_library.numpy(), before.numpy())


def test_fate_groups_are_found_by_the_number_a_command_line_passes():
    """``fate_shift(groupby=<float column>, target="1")`` did not find 1.0 (the CLI passes text)."""
    from holocell.tl._fate import _group_mask

    column = pd.Series([0.0, 1.0, np.nan, 1.0])
    assert _group_mask(column, "1", "target", "cluster").tolist() == [False, True, False, True]
    assert _group_mask(column, 0, "source", "cluster").tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match=r"target 'nan' is not a value"):
        _group_mask(column, "nan", "target", "cluster")  # a missing value is in no group
