"""holocell's outputs as scanpy / mudata consume them: the perturbation heatmap pairs cells by name, an output
modality added again under a removed name can be subset, a modality name never replaces an ``.obsm`` entry of the
user's, repeated generated feature names are flagged, and the documented follow-up calls (drop the NaN rows before
scanpy, ``push_obs(columns=..., mods=...)``, comparing predicted with categorical labels) work as written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

GENE = "MS4A1"


@pytest.fixture(scope="module")
def trained():
    """240 cells of the bundled mosaic (60 per batch: RNA-only, protein-only, two paired), a tiny model, one epoch."""
    mdata = hc.data.pbmc_cite_mosaic()
    rng = np.random.default_rng(0)
    batches = mdata.obs["batch"].cat.categories
    keep = np.concatenate([rng.choice(np.flatnonzero(mdata.obs["batch"] == b), 60, replace=False) for b in batches])
    mdata = mdata[np.sort(keep)].copy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    return mdata, model


def _heatmap(mdata) -> pd.DataFrame:
    import matplotlib.pyplot as plt

    ax = hc.pl.perturbation(mdata, modality="rna", kind="heatmap", groupby="celltype", n_top=5, show=False)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    drawn = pd.DataFrame(np.asarray(ax.images[0].get_array()), index=rows, columns=cols)
    plt.close(ax.figure)
    return drawn


def test_perturbation_heatmap_groups_each_cell_by_its_name(trained):
    mdata, model = trained
    work = mdata.copy()
    hc.tl.perturb(work, model, genes=[GENE], n_steps=1, progress_bar=False)
    in_order = _heatmap(work)
    # the user reorders the cells by name (a barcode list, sorted by a score): mudata keeps the global obs order
    # and the shift modality's row order apart, which the heatmap paired by position
    names = work.obs_names[np.random.default_rng(1).permutation(work.n_obs)]
    sub = work[names].copy()
    assert not sub.obs_names.equals(sub["holocell_perturb_rna"].obs_names)
    reordered = _heatmap(sub)
    assert reordered.index.tolist() == in_order.index.tolist() and reordered.columns.tolist() == in_order.columns.tolist()
    assert np.abs(in_order.to_numpy()).max() > 0
    np.testing.assert_allclose(reordered.to_numpy(), in_order.to_numpy(), rtol=1e-4, atol=1e-9)


def _can_subset(mdata, key: str) -> None:
    assert key in mdata.obsmap and set(mdata[key].var_names) <= set(mdata.var_names)
    part = mdata[mdata.obs_names[:10]].copy()  # raised KeyError: the key had no obsmap entry
    assert part[key].n_obs == 10


def test_an_output_added_again_under_a_removed_name_gets_its_axes(trained):
    mdata, model = trained
    work = mdata.copy()
    hc.tl.generate(work, model, target="protein", progress_bar=False)
    del work.mod["adt_generated"]  # the user removes it the mudata way ...
    work.update()
    hc.tl.generate(work, model, target="protein", progress_bar=False)  # ... and generates it again later
    _can_subset(work, "adt_generated")
    # holocell alone: a rerun regenerating RNA only removes the protein shift, the next run writes it again
    work = mdata.copy()
    for regenerate in (None, ["rna"], None):
        hc.tl.perturb(work, model, genes=[GENE], n_steps=1, regenerate=regenerate, progress_bar=False)
    _can_subset(work, "holocell_perturb_protein")
    _can_subset(work, "holocell_perturb_rna")


def test_a_modality_name_that_is_an_obsm_key_of_other_data_is_refused(trained):
    mdata, model = trained
    work = mdata.copy()
    umap = np.random.default_rng(0).normal(size=(work.n_obs, 2))
    work.obsm["X_umap"] = umap.copy()
    with pytest.raises(ValueError, match=r"\['X_umap'\] are keys of mdata\.obsm.*Pass another key_added"):
        hc.tl.generate(work, model, target="protein", key_added="X_umap", progress_bar=False)
    with pytest.raises(ValueError, match="X_umap"):
        model.generate(work, target="protein", key_added="X_umap", overwrite=True, progress_bar=False)
    work.obsm["mine_protein"] = umap.copy()
    with pytest.raises(ValueError, match="mine_protein"):
        hc.tl.perturb(work, model, genes=[GENE], n_steps=1, key_added="mine", progress_bar=False)
    # also on a rerun of perturb, whose record lets it replace its own outputs
    hc.tl.perturb(work, model, genes=[GENE], n_steps=1, regenerate=["rna"], key_added="p", progress_bar=False)
    work.obsm["p_protein"] = umap.copy()
    with pytest.raises(ValueError, match="p_protein"):
        hc.tl.perturb(work, model, genes=[GENE], n_steps=1, key_added="p", progress_bar=False)
    for key in ("X_umap", "mine_protein", "p_protein"):
        np.testing.assert_array_equal(work.obsm[key], umap)
        assert key not in work.mod
    assert "mine" not in work.uns


def test_generated_names_that_repeat_another_modality_s_are_flagged(trained):
    mdata, model = trained
    work = mdata.copy()
    hc.tl.generate(work, model, target="protein", progress_bar=False)
    hc.tl.generate(work, model, target="protein", overwrite=True, progress_bar=False)  # the README's flow: silent
    with pytest.warns(hc.HoloCellWarning, match=r"""repeat those of mdata\.mod\['adt_generated'\].*var_suffix=f"_\{key_added\}" \(here '_adt_denoised'\)"""):
        hc.tl.generate(work, model, target="protein", key_added="adt_denoised", n_steps=2, progress_bar=False)
    measured = work["adt"].var_names
    assert work["adt_denoised"].var_names.tolist() == [f"{name}_generated" for name in measured]  # names kept
    assert not work.var_names.is_unique
    hc.tl.generate(work, model, target="protein", key_added="adt_own", var_suffix="_adt_own", progress_bar=False)
    assert not work["adt_own"].var_names.isin(work["adt_generated"].var_names).any()
    model.generate(work, target="protein", key_added="same", var_suffix=None, progress_bar=False)  # asked for: silent


def test_the_documented_scanpy_calls_on_a_generated_modality_work(trained):
    mdata, model = trained
    work = mdata.copy()
    hc.tl.generate(work, model, target="protein", progress_bar=False)
    key = "adt_generated"
    nan_rows = np.isnan(work[key].X).any(axis=1)
    assert nan_rows.sum() == 60 and list(work[key].obs.columns) == []  # the protein-only cells have no source
    assert "~np.isnan(mdata[key_added].X).any(axis=1)].copy()" in hc.HoloCell.generate.__doc__
    assert "~np.isnan(mdata[key].X).any(axis=1)].copy()" in hc.tl.generate.__doc__
    assert "~np.isnan(mdata[k].X).any(axis=1)].copy()" in hc.tl.perturb.__doc__
    assert 'push_obs(columns=["celltype"], mods=[key_added])' in hc.HoloCell.generate.__doc__
    work.push_obs(columns=["celltype"], mods=[key])  # the documented call, on the bundled data's layout
    pd.testing.assert_series_equal(
        work[key].obs["celltype"], work.obs["celltype"].reindex(work[key].obs_names), check_names=False
    )
    g = work[key][~np.isnan(work[key].X).any(axis=1)].copy()
    assert g.n_obs == work.n_obs - 60 and np.isfinite(g.X).all()
    sc.tl.rank_genes_groups(g, "celltype", groups=["B", "CD4 T"], reference="rest")
    scores = pd.DataFrame(g.uns["rank_genes_groups"]["scores"]).to_numpy().astype(float)
    assert np.isfinite(scores).all() and np.abs(scores).max() > 0  # every score was 0 with the NaN rows
    sc.pp.pca(g, n_comps=5)
    # tl.perturb's shift modalities: the cells without RNA are NaN rows, dropped the same way
    hc.tl.perturb(work, model, genes=[GENE], n_steps=1, progress_bar=False)
    k = "holocell_perturb_rna"
    s = work[k][~np.isnan(work[k].X).any(axis=1)].copy()
    assert s.n_obs == int((np.asarray(work.obsmap["rna"]) > 0).sum()) and np.isfinite(s.X).all()


def test_the_documented_label_comparison_works_with_categorical_labels(trained):
    mdata, model = trained
    work = mdata.copy()
    hc.tl.embed(work, model, progress_bar=False)
    query = (work.obs["batch"] == work.obs["batch"].cat.categories[-1]).to_numpy()
    reference = ~query & (work.obs["celltype"] != "other").to_numpy()  # the reference lacks one of the types
    hc.tl.annotate(work, model, labels_key="celltype", query=query, reference=reference, method="knn",
                   unknown_threshold=0.5)  # fmt: skip
    pred, truth = work.obs["holocell_label"], work.obs["celltype"]
    assert isinstance(truth.dtype, pd.CategoricalDtype) and list(pred.cat.categories) != list(truth.cat.categories)
    assert ".astype(object) == mdata.obs[labels_key].astype(object))[query].mean()" in hc.tl.annotate.__doc__
    accuracy = (work.obs["holocell_label"].astype(object) == work.obs["celltype"].astype(object))[query].mean()
    expected = np.mean([str(p) == str(t) for p, t in zip(pred[query], truth[query], strict=True)])
    assert accuracy == pytest.approx(expected)


def test_perturbation_heatmap_refuses_repeated_cell_names(trained):
    """Repeated cell names (two samples joined without a suffix) failed inside pandas ("cannot reindex on an axis
    with duplicate labels"); the heatmap pairs cells with their groups by name, so it names the fix."""
    mdata, model = trained
    work = mdata.copy()
    hc.tl.perturb(work, model, genes=[GENE], n_steps=1, progress_bar=False)
    first, second = work.obs_names[:2]
    for adata in [*work.mod.values(), work]:  # the second cell renamed as the first, in every table
        adata.obs_names = [first if n == second else n for n in adata.obs_names]
    with pytest.raises(ValueError, match=r"Repeated names in mdata \(its cells, obs_names\).*obs_names_make_unique"):
        hc.pl.perturbation(work, modality="rna", kind="heatmap", groupby="celltype", n_top=5, show=False)
