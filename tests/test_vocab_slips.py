"""The gene vocabulary with careless input (thirteenth session's probe of the priors and species features): missing
values as text, one string for a list, modern GFF3 and BED files with a header, the species column's fix, and
``priors=True``."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell import HoloCellWarning
from holocell.vocab import detect_gene_id_type, map_genes, read_tss_file


def test_missing_values_as_text_are_no_genes():
    table = map_genes(["MS4A1", np.nan, "NA", "na", "", "CD3E"])  # a marker CSV with empty cells; R's NA
    assert table["how"].tolist() == ["symbol", "unmapped", "unmapped", "unmapped", "unmapped", "symbol"]
    assert "SCN11A" not in table["anchor"].tolist() and "XK" not in table["anchor"].tolist()  # their aliases
    assert map_genes(["nan"], species="mouse")["how"].tolist() == ["unmapped"]


def test_one_string_is_not_read_letter_by_letter():
    with pytest.raises(TypeError, match=r"single string 'CD4': pass \['CD4'\]"):
        map_genes("CD4")
    with pytest.raises(TypeError, match="single string"):
        detect_gene_id_type("ENSG00000010610")


def test_gff3_and_bed_with_a_header_are_read(tmp_path):
    gff3 = tmp_path / "genes.gff3"
    gff3.write_text(
        "##gff-version 3\n"
        "chr1\tensembl\tgene\t1000\t2000\t.\t+\t.\tID=gene:ENSG01;Name=AAA;biotype=protein_coding\n"
        "chr1\tensembl\tgene\t5000\t6000\t.\t-\t.\tID=gene:ENSG02;Name=BBB;biotype=lncRNA\n"
        "chr1\tensembl\tmRNA\t1000\t2000\t.\t+\t.\tID=transcript:T1;Parent=gene:ENSG01\n"
    )
    (tmp_path / "genes.gff").write_text(gff3.read_text())  # GFF3 is what most .gff files hold today
    for path in (gff3, tmp_path / "genes.gff"):
        table = read_tss_file(path)
        assert table["gene_name"].tolist() == ["AAA", "BBB"] and table["gene_id"].tolist() == ["ENSG01", "ENSG02"]
        assert table["tss"].tolist() == [999, 5999]
    bed = tmp_path / "genes.bed"
    pd.DataFrame({"chrom": ["chr1"], "start": [10], "end": [20], "name": ["CCC"], "score": [0], "strand": ["+"]}).to_csv(
        bed, sep="\t", index=False)  # fmt: skip
    assert read_tss_file(bed)["gene_name"].tolist() == ["CCC"]


def test_the_species_column_fix_maps_each_value_to_its_own_species(pbmc):
    human = pbmc.copy()
    human.obs["organism"] = np.where(np.arange(human.n_obs) % 2 == 0, "Human", "Homo sapiens")
    with pytest.raises(ValueError) as err:
        hc.HoloCell.setup_mudata(human, modalities={"rna": "rna", "protein": "adt"}, species_key="organism")
    assert "replace({'Homo sapiens': 'human', 'Human': 'human'})" in str(err.value)  # it offered {'Human': 'mouse'}


def test_priors_true_names_the_choices(pbmc):
    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    with pytest.raises(TypeError, match="priors takes a prior name, a list of them, 'all' or None, got bool True"):
        hc.HoloCell(pbmc, priors=True)


def test_gene_embeddings_carry_the_priors(pbmc):
    import torch

    hc.HoloCell.setup_mudata(pbmc, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(pbmc, d_model=32, n_layers=1, n_heads=2, n_latents=8, priors=["grn", "family"])
    closed = model.get_gene_embeddings()
    with torch.no_grad():
        model.module.network.prior_gate.fill_(1.0)  # the gates open as the model learns to use the priors
    opened = model.get_gene_embeddings()
    d = model.config.d_model
    assert not np.allclose(opened.iloc[:, :d], closed.iloc[:, :d])  # it read the identity weights only
    np.testing.assert_array_equal(opened.iloc[:, d:], closed.iloc[:, d:])  # the value direction has no prior


MOUSE_PANEL = ["Cd8a", "Ms4a1", "Nkg7", "Cd4", "Cd3e", "Cd19", "Lyz2", "Gzma", "Klrb1c", "Itgam", "Cd14", "Ptprc"]


def _mouse_cells(n: int = 30) -> ad.AnnData:
    x = sp.csr_matrix(np.random.default_rng(2).poisson(2.0, size=(n, len(MOUSE_PANEL))).astype(np.float32))
    return ad.AnnData(x, obs=pd.DataFrame(index=[f"m{i}" for i in range(n)]), var=pd.DataFrame(index=MOUSE_PANEL))


def test_merging_mouse_symbols_as_human_names_the_data_set_and_the_species_mapping(pbmc):
    """Mouse data merged under the default species="human" kept Cd4 beside CD4 without a word until setup."""
    human = pbmc["rna"][pbmc["rna"].obs_names[:40]].copy()
    with pytest.warns(HoloCellWarning, match=r"data set 'lab_b'.*written like mouse.*species=\{'lab_b': 'mouse'"):
        merged = hc.data.merge_datasets({"lab_a": human, "lab_b": _mouse_cells()})
    assert "Cd4" in merged["rna"].var_names  # the merge itself is unchanged: a warning, not a guess
    with warnings.catch_warnings():
        warnings.simplefilter("error", HoloCellWarning)  # the mapping the message names merges without it
        merged = hc.data.merge_datasets({"lab_a": human, "lab_b": _mouse_cells()},
                                        species={"lab_a": "human", "lab_b": "mouse"})  # fmt: skip
    assert "CD4" in merged["rna"].var_names and "Cd4" not in merged["rna"].var_names


def test_mouse_grn_edges_of_a_two_species_model_go_through_the_orthologs(pbmc):
    """Mouse symbols in own GRN edges of a human + mouse model were read as human spellings: mouse Cxcl1 landed on
    human CXCL1, not on its ortholog CXCL2 (113 one-to-one mouse symbols land on another gene that way)."""
    from holocell.model._build import grn_edges_on_anchors

    human = pbmc["rna"][pbmc["rna"].obs_names[:40]].copy()
    merged = hc.data.merge_datasets({"h": human, "m": _mouse_cells()}, species={"h": "human", "m": "mouse"})
    hc.HoloCell.setup_mudata(merged, modalities={"rna": "rna"}, batch_key="batch", species="human",
                             species_key="species", gene_id_type="symbol")  # fmt: skip
    edges = pd.DataFrame({"tf": ["Cd4", "CD4", "C1orf112"], "target": ["Cxcl1", "CXCL1", "Cd14"]})
    model = hc.HoloCell(merged, **{"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}, priors=["grn"],
                        grn_edges=edges)  # fmt: skip
    out, _, unknown = grn_edges_on_anchors(edges, model.feature_space, "human", "symbol", mixed_species=True)
    assert out["target"].tolist() == ["CXCL2", "CXCL1", "CD14"]  # the mouse gene's ortholog; human names stay human
    assert out["tf"].tolist() == ["CD4", "CD4", "C1orf112"] and unknown == []  # a human C1orf name is not mouse
    alone, _, _ = grn_edges_on_anchors(edges, model.feature_space, "human", "symbol")
    assert alone["target"].tolist()[0] == "CXCL1"  # one species: names are read as the setup's species


@pytest.mark.parametrize("name", ["10x/v3", ".", ".."])
def test_data_set_names_a_file_cannot_store_are_refused_before_merging(pbmc, name):
    """A data set's name becomes a column of varm["holocell_measured"]: "10x/v3" made mdata.write_zarr() fail after
    the merge, "." both writes (fourteenth session's audit of keys from user input)."""
    human = pbmc["rna"][pbmc["rna"].obs_names[:20]].copy()
    with pytest.raises(ValueError, match=r"cannot be stored.*varm\['holocell_measured'\]"):
        hc.data.merge_datasets({name: human, "b": human.copy()})

