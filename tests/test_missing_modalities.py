"""Cells without the modalities a call reads: NaN rows and a warning, never the model's prior as a result.

Also generate's overwrite of its own earlier output of another target, and a one-feature target.
"""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
#: The simulator's genes are synthetic: setting its data up reports that few RNA features are vocabulary genes.
SIM_GENES = r"RNA features of modality .* map to a known"
SIM = {"n_genes": 40, "n_tfs": 5, "n_proteins": 8, "peaks_per_gene": 2, "n_distal_peaks": 5, "seed": 0}
N_GHOST = 30


def _train(mdata: md.MuData, modalities: dict[str, str]) -> hc.HoloCell:
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    return model


@pytest.fixture(scope="module")
def ghost():
    """RNA + ATAC + protein (batch1 lacks protein) and 30 cells only in an unregistered ``hto`` modality."""
    sim, _ = hc.data.simulate_multiome(120, missing={"protein": ["batch1"]}, **SIM)
    names = [f"hto_only{i}" for i in range(N_GHOST)]
    hto = ad.AnnData(
        sp.csr_matrix(np.ones((N_GHOST, 2), np.float32)),
        obs=pd.DataFrame(index=names),
        var=pd.DataFrame(index=["hto1", "hto2"]),
    )
    mdata = md.MuData({"rna": sim["rna"], "atac": sim["atac"], "protein": sim["protein"], "hto": hto})
    mdata.obs["batch"] = sim.obs["batch"].reindex(mdata.obs_names).fillna("batch0").astype(str).to_numpy()
    mdata.obs["cell_type"] = sim.obs["cell_type"].reindex(mdata.obs_names).astype(object).to_numpy()
    model = _train(mdata, {"rna": "rna", "atac": "atac", "protein": "protein"})
    return mdata, model


def _ours(record) -> list[str]:
    """The texts of holocell's warnings in a ``pytest.warns`` record (mudata may add its own FutureWarnings)."""
    return [str(w.message) for w in record if issubclass(w.category, hc.HoloCellWarning)]


def _ghosts(mdata: md.MuData) -> np.ndarray:
    return mdata.obs_names.str.startswith("hto_only")


def _measured(mdata: md.MuData) -> dict[str, np.ndarray]:
    return {name: mdata[name].X.toarray() if sp.issparse(mdata[name].X) else np.array(mdata[name].X)
            for name in ("rna", "atac", "protein", "hto") if name in mdata.mod}  # fmt: skip


# --- get_latent_representation / tl.embed ------------------------------------------------------------------------


def test_default_embedding_of_pbmc_mosaic_has_no_warning(trained_pbmc):
    """RNA-only, protein-only and paired cells each have a registered modality: nothing is NaN, nothing is said."""
    mdata, model = trained_pbmc
    work = mdata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = model.get_latent_representation()
        hc.tl.embed(work, model)
        model.get_latent_representation(modality="protein", indices=np.asarray(mdata.obsmap["adt"]) > 0)
    assert np.isfinite(z).all()
    assert np.isfinite(work.obsm["X_holocell"]).all()


def test_embedding_from_a_modality_some_cells_lack(trained_pbmc):
    mdata, model = trained_pbmc
    no_protein = np.asarray(mdata.obsmap["adt"]) == 0
    assert no_protein.sum() == 400  # the RNA-only batch
    with pytest.warns(hc.HoloCellWarning) as record:
        z = model.get_latent_representation(modality="protein")
    (message,) = _ours(record)
    for part in ("400 of the 1600 cells", "protein (mdata.mod['adt'])", "NaN", "indices=", "modality="):
        assert part in message, part
    assert np.isnan(z[no_protein]).all()
    assert np.isfinite(z[~no_protein]).all()
    # tl.embed writes the NaN rows, and says so once (get_latent_representation's warning, passed through)
    work = mdata.copy()
    with pytest.warns(hc.HoloCellWarning, match="400 of the 1600 cells") as record:
        hc.tl.embed(work, model, modality="protein")
    assert len(_ours(record)) == 1
    assert np.isnan(work.obsm["X_holocell"][no_protein]).all()
    assert np.isfinite(work.obsm["X_holocell"][~no_protein]).all()


def test_cells_in_no_registered_modality(ghost):
    mdata, model = ghost
    before = _measured(mdata)
    gone = _ghosts(mdata)
    with pytest.warns(hc.HoloCellWarning) as record:
        z = model.get_latent_representation()
    (message,) = _ours(record)
    for part in (f"{N_GHOST} of the {mdata.n_obs} cells", "rna (mdata.mod['rna'])", "atac", "protein", "indices="):
        assert part in message, part
    assert np.isnan(z[gone]).all() and np.isfinite(z[~gone]).all()
    # embedding only the cells that have data: no NaN, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = model.get_latent_representation(indices=~gone)
    np.testing.assert_allclose(kept, z[~gone], rtol=1e-5, atol=1e-6)
    for name, x in _measured(mdata).items():  # the user's data are not touched
        np.testing.assert_array_equal(x, before[name])


# --- generate -------------------------------------------------------------------------------------------------------


def test_generate_for_cells_without_a_source(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    with pytest.warns(hc.HoloCellWarning) as record:
        gen = model.generate(work, target="protein", key_added="prot", progress_bar=False)
    (message,) = _ours(record)
    for part in (f"{N_GHOST} of the {work.n_obs} cells", "rna (mdata.mod['rna'])", "atac", "NaN", "-1", "generate("):
        assert part in message, part
    assert np.isnan(gen.X[gone]).all() and np.isfinite(gen.X[~gone]).all()
    bins = gen.layers["bins"]
    assert (bins[gone] == -1).all() and (bins[~gone] >= 0).all() and (bins[~gone] < model.config.n_bins).all()
    # the fix the warning gives: generate for the cells with a source
    keep = (np.asarray(work.obsmap["rna"]) > 0) | (np.asarray(work.obsmap["atac"]) > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hc.HoloCellWarning)
        sub = model.generate(work[keep].copy(), target="protein", key_added="prot2", var_suffix="_prot2", progress_bar=False)
    assert np.isfinite(sub.X).all()


def test_generate_atac_for_cells_without_a_source(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    with pytest.warns(hc.HoloCellWarning, match=f"{N_GHOST} of the {work.n_obs} cells are measured in none of the "):
        gen = model.generate(work, target="atac", sources=["rna"], key_added="acc", progress_bar=False)
    assert "bins" not in gen.layers
    assert np.isnan(gen.X[gone]).all() and np.isfinite(gen.X[~gone]).all()


def test_generate_on_pbmc_cells_measured_in_the_target_only(trained_pbmc):
    """Protein-only cells have no RNA to generate protein from (and RNA-only cells no protein to generate RNA from):
    NaN rows and bins -1, without a word; they are measured in the target itself, ordinary mosaic data."""
    mdata, model = trained_pbmc
    work = mdata.copy()
    has_rna, has_prot = np.asarray(work.obsmap["rna"]) > 0, np.asarray(work.obsmap["adt"]) > 0
    assert (~has_rna).sum() == 400 and (~has_prot).sum() == 400 and (has_rna | has_prot).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prot = model.generate(work, target="protein", n_steps=0, key_added="adt_mean", progress_bar=False)
        rna = model.generate(work, target="rna", n_steps=1, key_added="rna_gen", progress_bar=False)
    for gen, has_source in ((prot, has_rna), (rna, has_prot)):
        assert np.isnan(gen.X[~has_source]).all() and np.isfinite(gen.X[has_source]).all()
        assert (gen.layers["bins"][~has_source] == -1).all() and (gen.layers["bins"][has_source] >= 0).all()
    assert set(work.mod) == {"rna", "adt", "adt_mean", "rna_gen"}


# --- tl.annotate -----------------------------------------------------------------------------------------------------


def test_annotate_leaves_out_cells_without_an_embedding(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    query = (work.obs["batch"] == "batch1").to_numpy() | gone
    work.obs["ct"] = work.obs["cell_type"].astype(object).where(~query, None)
    with pytest.warns(hc.HoloCellWarning) as record:
        hc.tl.annotate(work, model, labels_key="ct")
    (message,) = _ours(record)  # one warning, not get_latent_representation's as well
    for part in (f"{N_GHOST} query cells get a missing label (NaN)", "rna (mdata.mod['rna'])", "query="):
        assert part in message, part
    assert "reference cells are left out" not in message
    assert work.obs["holocell_label"][gone].isna().all()
    assert work.obs["holocell_label_confidence"][gone].isna().all()
    assert work.obs["holocell_label"][query & ~gone].notna().all()
    assert np.isfinite(work.obs["holocell_label_confidence"][query & ~gone]).all()
    assert isinstance(work.obs["holocell_label"].dtype, pd.CategoricalDtype)


def test_annotate_drops_reference_cells_without_an_embedding(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    labels = work.obs["cell_type"].astype(object).to_numpy()
    labels[gone] = "type0"
    query = (work.obs["batch"] == "batch1").to_numpy()
    labels[query] = None
    work.obs["ct"] = pd.Series(labels, index=work.obs_names, dtype=object)
    with pytest.warns(hc.HoloCellWarning, match=f"{N_GHOST} reference cells are left out of the reference"):
        hc.tl.annotate(work, model, labels_key="ct", query=query, method="knn")
    assert work.uns["holocell_label"]["params"]["n_reference"] == int((~query & ~gone).sum())
    assert work.obs["holocell_label"][query].notna().all()


def test_annotate_with_stored_embeddings_with_nan_rows(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    with pytest.warns(hc.HoloCellWarning, match=f"{N_GHOST} of the"):
        hc.tl.embed(work, model)
    query = (work.obs["batch"] == "batch1").to_numpy() | gone
    work.obs["ct"] = work.obs["cell_type"].astype(object).where(~query, None)
    with pytest.warns(hc.HoloCellWarning, match=r"NaN rows of mdata.obsm\['X_holocell'\].*hc.tl.embed"):
        hc.tl.annotate(work, None, labels_key="ct", method="knn")
    assert work.obs["holocell_label"][gone].isna().all()
    assert work.obs["holocell_label"][query & ~gone].notna().all()
    # no reference cell left: refused, with the count and the fix
    work.obsm["X_holocell"][~query] = np.nan
    with pytest.raises(ValueError, match=f"every one of the {int((~query).sum())} reference cells.*reference="):
        hc.tl.annotate(work, None, labels_key="ct", method="knn")


def test_annotate_finetune_labels_no_cell_without_data(ghost):
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    query = (work.obs["batch"] == "batch1").to_numpy() | gone
    work.obs["ct"] = work.obs["cell_type"].astype(object).where(~query, None)
    with pytest.warns(hc.HoloCellWarning, match=f"{N_GHOST} query cells get a missing label"):
        hc.tl.annotate(work, model, labels_key="ct", method="finetune", max_epochs=1, progress_bar=False)
    assert work.obs["holocell_label"][gone].isna().all()
    assert work.obs["holocell_label_confidence"][gone].isna().all()
    assert work.obs["holocell_label"][query & ~gone].notna().all()


# --- tl.fate_shift ---------------------------------------------------------------------------------------------------


def test_fate_shift_centroids_leave_out_cells_without_an_embedding(ghost):
    """Cells in no registered modality have NaN embeddings: they do not make a population's centroid NaN."""
    mdata, model = ghost
    work = mdata.copy()
    gone = _ghosts(work)
    types = work.obs["cell_type"].astype(object).to_numpy()
    types[gone] = "type1"  # in the target population, without data
    work.obs["ct"] = pd.Series(types, index=work.obs_names, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hc.HoloCellWarning)
        hc.tl.fate_shift(work, model, groupby="ct", source="type0", target="type1", genes=["SIM1", "SIM2"], n_cells=10,
                         n_steps=1, progress_bar=False)  # fmt: skip
    table = work.uns["holocell_fate_shift"]["ranking"]
    assert np.isfinite(table[["score", "cosine", "distance_before", "distance_after"]].to_numpy()).all()
    # a target population of cells without data only: refused, not a NaN ranking
    types[gone] = "ghosts"
    work.obs["ct"] = pd.Series(types, index=work.obs_names, dtype=object)
    with pytest.raises(ValueError, match="No 'ghosts' cell is measured in a modality of the model"):
        hc.tl.fate_shift(work, model, groupby="ct", source="type0", target="ghosts", genes=["SIM1"], n_cells=10,
                         n_steps=1, progress_bar=False)  # fmt: skip


# --- generate: overwrite of its own output of another target (D03) ---------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [("rna", "protein"), ("atac", "rna"), ("atac", "protein")])
def test_generate_overwrites_its_output_of_another_target(ghost, first, second, tmp_path):
    mdata, model = ghost
    work = md.MuData({name: mdata[name].copy() for name in ("rna", "atac", "protein")})  # no cell without data
    work.obs["batch"] = mdata.obs["batch"].reindex(work.obs_names).to_numpy()
    before = _measured(work)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hc.HoloCellWarning)
        model.generate(work, target=first, key_added="gen", progress_bar=False)
        new = model.generate(work, target=second, key_added="gen", overwrite=True, progress_bar=False)
    assert work.mod["gen"] is new
    assert new.uns["holocell"]["params"]["target"] == second
    assert new.n_vars == work[{"rna": "rna", "protein": "protein", "atac": "atac"}[second]].n_vars
    assert work.n_vars == sum(a.n_vars for a in work.mod.values())
    assert len(work.varmap["gen"]) == work.n_vars
    work.write(tmp_path / "gen.h5mu")
    assert md.read_h5mu(tmp_path / "gen.h5mu")["gen"].shape == new.shape
    for name, x in _measured(work).items():
        np.testing.assert_array_equal(x, before[name])


# --- generate: a target with one feature (D12) ----------------------------------------------------------------------


def test_generate_one_antibody_says_x_is_constant():
    sim, _ = hc.data.simulate_multiome(60, **SIM)
    sim.mod["protein"] = sim["protein"][:, :1].copy()
    sim.update()
    model = _train(sim, {"rna": "rna", "protein": "protein"})
    with pytest.warns(hc.HoloCellWarning) as record:
        gen = model.generate(sim, target="protein", progress_bar=False)
    (message,) = _ours(record)
    for part in ("protein (mdata.mod['protein']) has 1 feature", "same for every cell", "two or more"):
        assert part in message, part
    assert np.unique(gen.X).size == 1
    with warnings.catch_warnings():  # generating the other modality, with many features, says nothing
        warnings.simplefilter("error", hc.HoloCellWarning)
        model.generate(sim, target="rna", key_added="rna_gen", progress_bar=False)
