"""``hc.data.merge_datasets``: data sets of two species in one MuData whose unmeasured genes are masked, not zeros.

The documented recipe used to be ``ad.concat(..., join="outer", fill_value=0)``, which made every gene one data set
lacks a measured zero count in its cells (probe of 2026-12-06)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

MOUSE_GENES = ["Cd8a", "Ms4a1", "Nkg7", "Cd4", "Gm1992"]  # Gm1992: no human ortholog


def _mouse(n: int = 60) -> ad.AnnData:
    rng = np.random.default_rng(1)
    x = sp.csr_matrix(rng.poisson(2.0, size=(n, len(MOUSE_GENES))).astype(np.float32))
    obs = pd.DataFrame({"celltype": rng.choice(["T", "B"], n)}, index=[f"m{i}" for i in range(n)])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=MOUSE_GENES))


def _human(pbmc, n: int = 80) -> ad.AnnData:
    return pbmc["rna"][pbmc["rna"].obs_names[:n]].copy()


def test_genes_one_data_set_lacks_are_masked_in_its_cells(pbmc):
    human, mouse = _human(pbmc), _mouse()
    before = (human.X.copy(), mouse.X.copy(), human.var_names.copy(), mouse.var_names.copy())
    merged = hc.data.merge_datasets({"human": human, "mouse": mouse}, species={"human": "human", "mouse": "mouse"},
                                    obs_columns=["celltype"])  # fmt: skip
    assert (human.X != before[0]).nnz == 0 and (mouse.X != before[1]).nnz == 0  # the inputs are only read
    assert human.var_names.equals(before[2]) and mouse.var_names.equals(before[3])
    rna = merged["rna"]
    measured = rna.varm["holocell_measured"]
    assert rna.uns["holocell_measured_by"] == "source" and list(measured.columns) == ["human", "mouse"]
    assert measured.loc["CD8A"].all()  # Cd8a renamed onto its human ortholog's anchor: one feature, both measured
    assert measured.loc["CD4", "mouse"] and not measured.loc["CD4", "human"]  # the PBMC panel lacks CD4
    assert measured.loc["mouse:Gm1992", "mouse"] and not measured.loc["mouse:Gm1992", "human"]
    human_only = [g for g in human.var_names if g not in {"CD8A", "MS4A1", "NKG7"}][0]
    assert measured.loc[human_only, "human"] and not measured.loc[human_only, "mouse"]
    assert set(merged.obs["species"]) == {"human", "mouse"}
    assert merged.obs.loc["mouse:m0", "celltype"] == mouse.obs.loc["m0", "celltype"]

    hc.HoloCell.setup_mudata(merged, modalities={"rna": "rna"}, batch_key="batch", species="human",
                             species_key="species", gene_id_type="symbol")  # fmt: skip
    model = hc.HoloCell(merged, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    _, arrays = model._arrays(None)
    codes, table = arrays.measured["rna"]  # what training masks: the human-only gene in mouse cells
    column = list(model.feature_space.maps["rna"].features).index(human_only)
    mouse_cells = (merged.obs["species"] == "mouse").to_numpy()
    assert not table[codes[mouse_cells], column].any() and table[codes[~mouse_cells], column].all()
    assert np.isfinite(model.get_latent_representation(progress_bar=False)).all()


def test_one_species_and_argument_errors(pbmc):
    human = _human(pbmc, 40)
    merged = hc.data.merge_datasets({"a": human, "b": human.copy()})
    assert "species" not in merged.obs and set(merged.obs["batch"]) == {"a", "b"}
    assert "holocell_measured" not in merged["rna"].varm  # both measured every gene: nothing to mask
    with pytest.raises(KeyError, match=r"species has no entry for data set\(s\) \['b'\]"):
        hc.data.merge_datasets({"a": human, "b": human}, species={"a": "human"})
    with pytest.raises(KeyError, match="obs has no column 'nope' to copy .* in any data set"):
        hc.data.merge_datasets({"a": human}, obs_columns=["nope"])
    # docs/own_data.md: a labelled reference beside cells without the column, whose labels are then missing
    unlabelled = human.copy()
    del unlabelled.obs["celltype"]
    merged = hc.data.merge_datasets({"ref": human, "mine": unlabelled}, obs_columns=["celltype"])
    labels = merged.obs["celltype"]
    assert labels[merged.obs["source"] == "mine"].isna().all()
    assert (labels[merged.obs["source"] == "ref"].to_numpy() == human.obs["celltype"].to_numpy()).all()
