"""Feature-space reports after loading, the protein .var['gene'] column, and own GRN edges named like the data."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import holocell as hc
from holocell.priors import grn_prior, load_grn_edges

SMALL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}


def _mudata(rna_names: list[str], adt_names: list[str] | None = None, gene: list | None = None) -> md.MuData:
    rng = np.random.default_rng(0)
    n = 200
    mods = {"rna": ad.AnnData(sp.csr_matrix(rng.poisson(5, (n, len(rna_names))).astype(np.float32)))}
    mods["rna"].var_names = rna_names
    if adt_names is not None:
        mods["adt"] = ad.AnnData(sp.csr_matrix(rng.poisson(20, (n, len(adt_names))).astype(np.float32)))
        mods["adt"].var_names = adt_names
        if gene is not None:
            mods["adt"].var["gene"] = gene
    for a in mods.values():
        a.obs_names = [f"c{i}" for i in range(n)]
    return md.MuData(mods)


def test_reports_are_rebuilt_on_load(pbmc, tmp_path):
    """After save / load and load_pretrained the reports were empty (0, 0) frames."""
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(pbmc, **SMALL)
    model.train(max_epochs=1, batch_size=256)
    model.save(tmp_path / "m", save_mudata=True)
    archive = model.save_pretrained(tmp_path / "m.zip")
    for loaded in (hc.HoloCell.load(tmp_path / "m"), hc.HoloCell.load_pretrained(archive)):
        for m in ("rna", "protein"):
            pd.testing.assert_frame_equal(loaded.feature_space.maps[m].report, model.feature_space.maps[m].report)


def test_report_marks_rows_the_load_cannot_rebuild(tmp_path):
    """A protein map made from a .var['gene'] column is not what the placeholder data (no columns) rebuild."""
    mdata = _mudata(["CD4", "CD8A", "MS4A1"], ["ab_a", "ab_b", "ab_c"], ["CD4", "CD8A", "MS4A1"])
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"})
    model = hc.HoloCell(mdata, **SMALL)
    loaded = hc.HoloCell.load_pretrained(model.save_pretrained(tmp_path / "m.zip"))
    report = loaded.feature_space.maps["protein"].report
    saved = [model.feature_space.anchors[i] for i in model.feature_space.maps["protein"].anchor]
    assert report["anchor"].tolist() == saved == ["CD4", "CD8A", "MS4A1"]
    assert report["how"].tolist() == ["checkpoint"] * 3
    pd.testing.assert_frame_equal(loaded.feature_space.maps["rna"].report, model.feature_space.maps["rna"].report)


def test_protein_gene_column_reads_ensembl_ids_and_flags_non_genes():
    rna = ["CD4", "CD3E", "PTPRC", "CD8A", "MS4A1", "CD14"]
    gene = ["ENSG00000010610", "CD3D,CD3E,CD3G", "ENSG00000081237.20", "IgG1 isotype", "CD8A", None]
    mdata = _mudata(rna, ["CD4_ab", "CD3_ab", "CD45_ab", "IgG1_ctrl", "CD8_ab", "CD14_ab"], gene)
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"})
    space = hc.HoloCell(mdata, **SMALL).feature_space
    report = space.maps["protein"].report
    assert report["anchor"].tolist() == ["CD4", "protein:CD3_ab", "PTPRC", "protein:IgG1_ctrl", "CD8A", "protein:CD14_ab"]
    assert report["how"].tolist() == ["var_column", "unmapped", "var_column", "unmapped", "var_column", "unmapped"]
    rna_anchor = dict(zip(space.maps["rna"].features, space.maps["rna"].anchor, strict=True))
    assert space.maps["protein"].anchor[0] == rna_anchor["CD4"]
    assert space.maps["protein"].anchor[2] == rna_anchor["PTPRC"]


def test_protein_gene_column_that_names_no_gene_warns():
    mdata = _mudata(["CD4", "CD8A"], ["ab1", "ab2"], ["IgG1 isotype", "hashtag 1"])
    with pytest.warns(hc.HoloCellWarning, match="No value of the 'gene' column"):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"})


def _grn(model: hc.HoloCell) -> torch.Tensor:
    return model.module.state_dict()["network.prior_grn"]


def test_grn_edges_named_like_mouse_var_names_reach_anchors():
    genes = ["Spi1", "Cebpa", "Cd14", "Lyz2", "Cd4", "Cd8a", "Gata3", "Tbx21", "Ptprc", "Ms4a1"]
    mdata = _mudata(genes)
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, species="mouse")
    edges = pd.DataFrame({"tf": ["Spi1", "Spi1", "Cebpa", "Gata3", "Tbx21"], "target": ["Cd14", "Lyz2", "Cd14", "Cd4", "Cd8a"]})
    model = hc.HoloCell(mdata, priors="grn", grn_edges=edges, **SMALL)
    assert model.prior_report_.loc["grn", "n_known"] > 0
    report = model.feature_space.maps["rna"].report
    anchor = dict(zip(report.index, report["anchor"], strict=True))
    by_hand = edges.assign(tf=edges["tf"].map(anchor), target=edges["target"].map(anchor))
    assert torch.equal(_grn(model), _grn(hc.HoloCell(mdata, priors="grn", grn_edges=by_hand, **SMALL)))


def test_grn_edges_with_current_hgnc_names_and_ensembl_ids():
    mdata = _mudata(["MARCHF1", "SEPTIN7", "SPI1", "CD14"])
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"})
    edges = pd.DataFrame({"tf": ["SPI1", "SPI1", "SPI1"], "target": ["CD14", "MARCHF1", "SEPTIN7"]})
    model = hc.HoloCell(mdata, priors="grn", grn_edges=edges, **SMALL)
    by_anchor = edges.replace({"MARCHF1": "MARCH1", "SEPTIN7": "SEPT7"})
    assert torch.equal(_grn(model), _grn(hc.HoloCell(mdata, priors="grn", grn_edges=by_anchor, **SMALL)))
    assert model.prior_report_.loc["grn", "n_known"] == 4
    by_id = edges.replace({"SPI1": "ENSG00000066336", "CD14": "ENSG00000170458.15"})
    assert torch.equal(_grn(model), _grn(hc.HoloCell(mdata, priors="grn", grn_edges=by_id, **SMALL)))


def test_grn_edges_named_like_anchors_give_the_same_prior(pbmc):
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    genes = list(pbmc["rna"].var_names)
    edges = load_grn_edges()
    edges = edges[edges["tf"].isin(genes) | edges["target"].isin(genes)].head(3000)
    model = hc.HoloCell(pbmc, priors="grn", grn_edges=edges, **SMALL)
    expected = grn_prior(model.feature_space.anchors, edges).network_input()
    assert np.array_equal(_grn(model).numpy(), expected)


def test_grn_edges_of_unknown_genes_warn():
    mdata = _mudata(["SPI1", "CD14", "CD4", "GATA3"])
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"})
    edges = pd.DataFrame({"tf": ["SPI1", "GATA3", "NOTAGENE1", "NOTAGENE2"], "target": ["CD14", "CD4", "CD4", "CD14"]})
    with pytest.warns(hc.HoloCellWarning, match=r"2 of 4 grn_edges \(50%\) name a tf or target"):
        hc.HoloCell(mdata, priors="grn", grn_edges=edges, **SMALL)
