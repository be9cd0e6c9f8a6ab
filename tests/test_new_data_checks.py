"""New data given to a trained model are checked as setup checks the training data: batches the model was not
trained on (a misspelt batch changes what the decoders read), cells without any count, repeated feature names;
and setup names a ``_scvi_batch`` column it is about to replace."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell import HoloCellWarning

MODS = {"rna": "rna", "protein": "adt"}


def _no_holocell_warning(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)
        return call()


def _with_batches(mdata: md.MuData, values) -> md.MuData:
    new = mdata.copy()
    new.obs["batch"] = values
    return new


def test_batches_the_model_never_saw_are_named_when_decoding(trained_pbmc):
    mdata, model = trained_pbmc
    upper = _with_batches(mdata, mdata.obs["batch"].astype(str).str.upper().to_numpy())
    with pytest.warns(HoloCellWarning, match=r"1600 of 1600 cells are in batches the model was not trained on") as rec:
        model.generate(upper, target="protein", key_added="adt_upper")
    message = str(rec[0].message)
    assert "only by case or spaces" in message and "'P1_0': 'p1_0'" in message and "transform_batch=" in message
    assert "adt_upper" in upper.mod  # a warning, not a refusal: a new donor is a batch the model never saw

    codes = _with_batches(mdata, mdata.obs["batch"].cat.codes.astype(str).to_numpy())
    with pytest.warns(HoloCellWarning, match="category codes") as rec:
        model.get_normalized_expression(codes, gene_list=list(mdata.mod["rna"].var_names[:5]))
    assert "pd.Categorical.from_codes" in str(rec[0].message)

    # the embedding does not read the batch: no warning, and the same cells embed where they did
    z = _no_holocell_warning(lambda: model.get_latent_representation(upper))
    np.testing.assert_allclose(z, model.get_latent_representation(), atol=1e-5)
    # a batch chosen with transform_batch is a training batch
    again = _with_batches(mdata, upper.obs["batch"].to_numpy())
    _no_holocell_warning(lambda: model.generate(again, target="protein", transform_batch="p1_0"))


def test_new_data_of_the_training_batches_and_the_registered_data_are_not_warned_about(trained_pbmc):
    mdata, model = trained_pbmc
    subset = mdata[mdata.obs["batch"].isin(["p1_0", "p3_0"])].copy()
    _no_holocell_warning(lambda: model.generate(subset, target="protein", key_added="adt_again"))
    _no_holocell_warning(lambda: model.get_normalized_expression(gene_list=list(mdata.mod["rna"].var_names[:5])))


def test_cells_without_any_count_in_new_data_are_warned_about(trained_pbmc):
    mdata, model = trained_pbmc
    paired = np.asarray(mdata.obsmap["adt"]) > 0
    paired &= np.asarray(mdata.obsmap["rna"]) > 0
    new = mdata[mdata.obs_names[paired][:40]].copy()
    x = new.mod["adt"].X.tolil()
    x[:20] = 0
    new.mod["adt"].X = sp.csr_matrix(x, dtype=new.mod["adt"].X.dtype)
    with pytest.warns(HoloCellWarning, match=r"20 of 40 cells in modality 'adt' have no counts at all"):
        model.get_latent_representation(new)


def test_repeated_feature_names_in_new_data_get_setups_message(trained_pbmc):
    mdata, model = trained_pbmc
    mods = {k: a.copy() for k, a in mdata.mod.items()}
    adt = mods["adt"]
    extra = ad.AnnData(sp.csr_matrix(np.ones((adt.n_obs, 2), dtype=np.float32)), obs=adt.obs.copy())
    extra.var_names = ["isotype_ctrl", "isotype_ctrl"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's and mudata's own notes on the repeated names
        mods["adt"] = ad.concat([adt, extra], axis=1, merge="first")
        new = md.MuData(mods)
    new.obs["batch"] = mdata.obs.loc[new.obs_names, "batch"].to_numpy()
    for call in (model.get_latent_representation, lambda d: model.generate(d, target="protein")):
        with pytest.raises(ValueError, match=r"Duplicated feature names in modality 'adt' .*var_names_make_unique"):
            call(new)


def test_setup_names_a_scvi_batch_column_it_replaces(pbmc):
    pbmc.obs["_scvi_batch"] = "donor_A"
    with pytest.warns(HoloCellWarning, match=r"mdata.obs\['_scvi_batch'\] exists"):
        hc.HoloCell.setup_mudata(pbmc, modalities=MODS, batch_key="batch")
    # its own column, on a second set-up of the same data: nothing to say
    _no_holocell_warning(lambda: hc.HoloCell.setup_mudata(pbmc, modalities=MODS, batch_key="batch"))


# ------------------------------------------------------------------ perturbations that change nothing
def _silent_gene(mdata, cells):
    """A gene of the model with no count in any of ``cells`` (RNA cell names), and one with counts in all of them."""
    rna = mdata["rna"][cells]
    counts = np.asarray((rna.X > 0).sum(0)).ravel()
    return rna.var_names[counts == 0][0], rna.var_names[np.argmax(counts)]


def test_a_perturbation_that_changes_nothing_says_so(trained_pbmc):
    mdata, model = trained_pbmc
    b_cells = mdata.obs_names[(mdata.obs["celltype"] == "B").to_numpy() & (np.asarray(mdata.obsmap["rna"]) > 0)][:20]
    silent, expressed = _silent_gene(mdata, b_cells)
    rows = np.flatnonzero(mdata.obs_names.isin(b_cells))
    with pytest.warns(HoloCellWarning, match=r"knockout of \[.*\] changed nothing in the 20 cells"):
        result = model.predict_perturbation(mdata, genes=[silent], indices=rows, n_steps=1, progress_bar=False)
    assert result.changed_nothing
    moved = _no_holocell_warning(lambda: model.predict_perturbation(
        mdata, genes=[expressed], indices=rows, n_steps=1, progress_bar=False))  # fmt: skip
    assert not moved.changed_nothing


def test_fate_shift_ranks_genes_that_moved_no_cell_last_and_warns_about_a_long_run(trained_pbmc):
    mdata, model = trained_pbmc
    b_cells = mdata.obs_names[(mdata.obs["celltype"] == "B").to_numpy() & (np.asarray(mdata.obsmap["rna"]) > 0)]
    silent, expressed = _silent_gene(mdata, b_cells)
    with pytest.warns(HoloCellWarning, match=r"1 of 2 candidate genes moved none of the"):
        out = hc.tl.fate_shift(mdata, model, groupby="celltype", source="B", target="CD4 T", mode="knockout",
                               genes=[silent, expressed], n_steps=1, copy=True, progress_bar=False)  # fmt: skip
    ranking = out.uns["holocell_fate_shift"]["ranking"]
    assert list(ranking["gene"]) == [expressed, silent] and ranking["score"].iloc[-1] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)  # the warning comes before any regeneration
        with pytest.raises(HoloCellWarning, match="201 genes"):
            hc.tl.fate_shift(mdata, model, groupby="celltype", source="B", target="CD4 T",
                             genes=list(mdata["rna"].var_names[:201]), copy=True)  # fmt: skip


def test_a_gene_given_by_its_ensembl_id_is_pointed_to_the_models_name(trained_pbmc):
    mdata, model = trained_pbmc
    with pytest.raises(KeyError, match=r"other names: \{'ENSG00000156738': 'MS4A1'\}"):  # MS4A1's Ensembl id
        model.predict_perturbation(mdata, genes=["ENSG00000156738"], n_steps=1)
    with pytest.raises(KeyError, match=r"Unknown genes \['NOT_A_GENE'\][^{]*$"):  # no hint where there is none
        model.predict_perturbation(mdata, genes=["NOT_A_GENE"], n_steps=1)
