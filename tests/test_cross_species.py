"""Cross-species vocabulary: id-type detection, human name canonicalisation, mouse -> human orthologs."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc
from holocell.vocab import detect_gene_id_type, load_orthologs, map_genes, rename_to_anchors
from holocell.vocab._genes import shared_fraction

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
MOUSE = Path(__file__).parent / "data" / "mouse_10x_300cells.h5ad"


@pytest.fixture(scope="module")
def mouse() -> ad.AnnData:
    """300 real mouse cells x 1,000 genes (Ensembl ids), raw counts (see tests/data/README.md)."""
    return ad.read_h5ad(MOUSE)


def test_detect_gene_id_type():
    assert detect_gene_id_type(["ENSG00000010610", "ENSG00000204287.14", "CD4"]) == "ensembl"
    assert detect_gene_id_type(["ENSMUSG00000023274", "ENSMUSG00000000001"]) == "ensembl"
    assert detect_gene_id_type(["CD4", "Cd8a", "ENSG00000010610"]) == "symbol"
    assert detect_gene_id_type([]) == "symbol"


def test_human_names_reach_canonical_anchor():
    rep = map_genes(["CD4", "MLL", "ENSG00000010610.5", "not_a_gene"], species="human")
    assert rep["anchor"].tolist() == ["CD4", "KMT2A", "CD4", "not_a_gene"]
    assert rep["how"].tolist() == ["symbol", "alias", "ensembl", "unmapped"]
    assert rep.loc["CD4", "ensembl_id"] == "ENSG00000010610"
    assert rep.loc["not_a_gene", "symbol"] is None
    # forcing the id type overrides detection: an Ensembl id read as a symbol is unknown
    forced = map_genes(["ENSG00000010610"], species="human", gene_id_type="symbol")
    assert forced["how"].tolist() == ["unmapped"]
    with pytest.raises(ValueError, match="gene_id_type"):
        map_genes(["CD4"], gene_id_type="entrez")


def test_mouse_genes_map_one_to_one_and_report_the_rest():
    ortho = load_orthologs()
    assert set(ortho["type"]) == {"one2one", "one2many", "many2one", "many2many"}
    # a one-to-one gene by symbol and by Ensembl id lands on the human anchor
    one = ortho[(ortho["type"] == "one2one") & (ortho["mouse_ensembl_id"] != "")].iloc[0]
    rep = map_genes([one["mouse_symbol"], one["mouse_ensembl_id"]], species="mouse")
    assert rep["anchor"].tolist() == [one["human_symbol"]] * 2
    assert (rep["how"] == "one2one").all()
    # one-to-many / many-to-one genes keep an anchor of their own, with their type reported
    for typ in ("one2many", "many2one"):
        row = ortho[(ortho["type"] == typ) & (ortho["mouse_ensembl_id"] != "") & (ortho["mouse_symbol"] != "")].iloc[0]
        r = map_genes([row["mouse_ensembl_id"]], species="mouse").iloc[0]
        assert r["how"] == typ and r["anchor"] == f"mouse:{row['mouse_symbol']}" and r["symbol"] is None
    unk = map_genes(["Notagene1"], species="mouse").iloc[0]
    assert unk["how"] == "unmapped" and unk["anchor"] == "mouse:Notagene1"


def test_mouse_data_shares_human_anchors(mouse):
    before = mouse.copy()
    rep = map_genes(mouse.var_names, species="mouse")
    expressed = np.asarray((mouse.X > 0).sum(axis=0)).ravel() > 0
    assert shared_fraction(rep, expressed) > 0.8  # of the expressed genes of this subset
    renamed = rename_to_anchors(mouse, species="mouse")
    assert renamed.var_names.is_unique and (renamed.var["original_name"] == mouse.var_names).all()
    assert (mouse.var_names == before.var_names).all()  # input untouched


def test_setup_mouse_ensembl_ids_and_report(mouse):
    mdata = md.MuData({"rna": mouse.copy()})
    mdata.obs["batch"] = "b"
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, batch_key="batch", species="mouse")
    model = hc.HoloCell(mdata, **TINY)
    report = model.feature_space.maps["rna"].report
    assert list(report.index) == list(mouse.var_names)
    assert {"anchor", "how"} <= set(report.columns)
    assert model.feature_space.n_anchors == mouse.n_vars
    assert "CD4" not in model.feature_space.anchors or report.loc[report["anchor"] == "CD4", "how"].eq("one2one").all()
    one = report["how"] == "one2one"
    assert not report.loc[one, "anchor"].str.startswith("mouse:").any()
    assert report.loc[~one, "anchor"].str.startswith("mouse:").all()


def test_gene_id_type_argument_is_checked(mouse):
    mdata = md.MuData({"rna": mouse.copy()})
    with pytest.raises(ValueError, match="gene_id_type"):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"}, gene_id_type="entrez")


def test_one_model_two_species(pbmc, mouse, tmp_path):
    human = pbmc["rna"][pbmc["rna"].obs["batch"].isin(["p3_0"])][:60].copy()
    assert human.n_obs == 60
    mm = rename_to_anchors(mouse[:60], species="mouse")
    shared = set(human.var_names) & set(mm.var_names)
    assert len(shared) > 0
    padded = ad.concat({"human": human, "mouse": mm}, join="outer", label="species", fill_value=0)
    padded.obs_names_make_unique()
    padded.var = pd.DataFrame(index=padded.var_names)
    zero_filled = md.MuData({"rna": padded})  # the recipe docs gave before merge_datasets: warned
    zero_filled.obs["species"] = zero_filled.obs["batch"] = padded.obs["species"].astype(str).to_numpy()
    with pytest.warns(hc.HoloCellWarning, match="padded with zeros"):
        hc.HoloCell.setup_mudata(zero_filled, modalities={"rna": "rna"}, batch_key="batch", species_key="species",
                                 gene_id_type="symbol")  # fmt: skip
    mdata = hc.data.merge_datasets({"human": human, "mouse": mouse[:60]}, species={"human": "human", "mouse": "mouse"})
    assert set(mdata["rna"].var_names) == set(padded.var_names)
    hc.HoloCell.setup_mudata(
        mdata, modalities={"rna": "rna"}, batch_key="batch", species_key="species", gene_id_type="symbol"
    )
    model = hc.HoloCell(mdata, priors=("position",), **TINY)
    _, arrays = model._arrays(None)
    assert (arrays.species == (mdata.obs["species"] == "mouse").to_numpy()).all()
    model.train(max_epochs=1, enable_progress_bar=False)
    for sp in ("human", "mouse"):
        idx = np.flatnonzero(mdata.obs["species"] == sp)
        z = model.get_latent_representation(indices=idx)
        assert z.shape == (len(idx), TINY["d_model"]) and np.isfinite(z).all()
    # a two-species checkpoint loads without data (the placeholder carries the species column)
    archive = model.save_pretrained(tmp_path / "two_species.zip")
    loaded = hc.HoloCell.load_pretrained(archive)
    assert loaded.adata_manager.registry["setup_args"]["species_key"] == "species"
    assert loaded.feature_space.anchors == model.feature_space.anchors
    new = mdata.copy()
    del new.obs["species"]  # new cells without the column: named, not pandas' bare KeyError
    with pytest.raises(KeyError, match="no column 'species', the species_key the model was set up with"):
        model.get_latent_representation(new)
    bad = mdata.copy()
    bad.obs["species"] = "zebrafish"
    with pytest.raises(ValueError, match="zebrafish"):
        hc.HoloCell.setup_mudata(bad, modalities={"rna": "rna"}, species_key="species")
