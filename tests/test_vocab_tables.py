"""Tests for the shipped gene tables and their loaders (``holocell.vocab._tables``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from holocell.vocab._tables import (
    GENE_TABLE_COLUMNS,
    clean_antibody_name,
    load_gene_table,
    load_protein_alias_table,
    map_proteins_to_genes,
    read_tss_file,
)

PBMC = Path(__file__).resolve().parents[1] / "src" / "holocell" / "data" / "_files" / "pbmc_cite_mosaic.h5mu"


def _gene(df: pd.DataFrame, name: str) -> pd.Series:
    hit = df[df["gene_name"] == name]
    assert len(hit) == 1, f"{name}: {len(hit)} rows"
    return hit.iloc[0]


@pytest.mark.parametrize("genome", ["hg38", "GRCh38", "hg19", "mm10"])
def test_gene_table_shape(genome):
    df = load_gene_table(genome)
    assert list(df.columns) == list(GENE_TABLE_COLUMNS)
    assert len(df) > 20_000
    assert df["gene_name"].is_unique
    assert df["chrom"].str.startswith("chr").all()
    assert set(df["strand"]) <= {"+", "-"}
    assert (df["tss"] >= 0).all()
    assert df["tss"].dtype.kind == "i"


def test_gene_table_is_a_copy():
    a = load_gene_table("hg38")
    a.loc[:, "tss"] = -1
    assert (load_gene_table("hg38")["tss"] >= 0).all()


def test_hg38_known_tss():
    df = load_gene_table("hg38")
    g = _gene(df, "GAPDH")
    assert g["chrom"] == "chr12" and g["strand"] == "+"
    assert 6_520_000 < g["tss"] < 6_540_000
    assert g["gene_id"] == "ENSG00000111640" and g["biotype"] == "protein_coding"
    a = _gene(df, "ACTB")  # canonical promoter, not the far-upstream read-through start at 5.56 Mb
    assert a["chrom"] == "chr7" and a["strand"] == "-"
    assert 5_530_000 < a["tss"] < 5_531_000
    assert (df["biotype"] == "lncRNA").sum() > 5_000


def test_hg19_known_tss():
    df = load_gene_table("hg19")
    g = _gene(df, "GAPDH")
    assert (g["chrom"], g["strand"]) == ("chr12", "+")
    assert abs(g["tss"] - 6_643_584) <= 1
    a = _gene(df, "ACTB")
    assert (a["chrom"], a["strand"]) == ("chr7", "-")
    assert 5_566_779 - 1 <= a["tss"] <= 5_570_232


def test_mm10_known_tss():
    df = load_gene_table("mm10")
    g = _gene(df, "Gapdh")
    assert (g["chrom"], g["strand"]) == ("chr6", "-")
    assert 125_161_700 <= g["tss"] <= 125_166_467
    a = _gene(df, "Actb")
    assert (a["chrom"], a["strand"]) == ("chr5", "-")
    assert 142_903_115 - 1 <= a["tss"] <= 142_906_754


def test_unknown_genome():
    with pytest.raises(ValueError, match="hg38") as err:
        load_gene_table("dm6")
    assert "DataFrame" in str(err.value) and "read_tss_file" in str(err.value)


def test_read_bed(tmp_path):
    bed = tmp_path / "genes.bed"
    bed.write_text(
        "# comment\nchr1\t100\t200\tGENEA\t0\t+\nchr2\t1000\t5000\tGENEB\t0\t-\n3\t10\t20\tGENEC\n"
    )
    df = read_tss_file(bed)
    assert list(df.columns) == list(GENE_TABLE_COLUMNS)
    assert df["gene_name"].tolist() == ["GENEA", "GENEB", "GENEC"]
    assert df["tss"].tolist() == [100, 4999, 10]
    assert df["strand"].tolist() == ["+", "-", "+"]
    assert df["chrom"].tolist() == ["chr1", "chr2", "chr3"]


def test_read_gtf(tmp_path):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        '1\tens\tgene\t11\t20\t.\t+\t.\tgene_id "G1"; gene_name "ONE"; gene_biotype "protein_coding";\n'
        '1\tens\ttranscript\t11\t20\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n'
        'chrX\tens\tgene\t101\t300\t.\t-\t.\tgene_id "G2"; gene_type "lncRNA";\n'
    )
    df = read_tss_file(gtf)
    assert df["gene_name"].tolist() == ["ONE", "G2"]
    assert df["gene_id"].tolist() == ["G1", "G2"]
    assert df["tss"].tolist() == [10, 299]
    assert df["chrom"].tolist() == ["chr1", "chrX"]
    assert df["biotype"].tolist() == ["protein_coding", "lncRNA"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("cd4.1", "cd4"),
        ("CD4_2", "cd4"),
        ("CD8a", "cd8a"),
        ("HLA-DR", "hla.dr"),
        ("ADT_CD3_TotalSeqB", "cd3"),
        ("anti-CD19", "cd19"),
        ("Hu.CD14", "cd14"),
        ("human_CD56", "cd56"),
        ("tcr.v.7.2", "tcr.v.7.2"),
        ("siglec.8", "siglec.8"),
        ("cd11b.2", "cd11b"),
    ],
)
def test_clean_antibody_name(raw, clean):
    assert clean_antibody_name(raw) == clean


def test_map_known_antibodies():
    names = [
        "cd4.1",
        "cd39",
        "hla.dr",
        "cd8",
        "CD45RA",
        "cd16",
        "cd11c",
        "cd56.2",
        "tcrab",
        "igm",
        "CD19",
        "zzz9",
    ]
    res = map_proteins_to_genes(names)
    assert list(res.columns) == ["protein", "gene", "how"]
    assert res["protein"].tolist() == names
    got = dict(zip(res["protein"], res["gene"], strict=True))
    assert got["cd4.1"] == "CD4"  # duplicate tag, not CD41 (ITGA2B)
    assert got["cd39"] == "ENTPD1"
    assert got["hla.dr"] == "HLA-DRA"
    assert got["cd8"] == "CD8A"
    assert got["CD45RA"] == "PTPRC"
    assert got["cd16"] == "FCGR3A"
    assert got["cd11c"] == "ITGAX"
    assert got["cd56.2"] == "NCAM1"
    assert got["tcrab"] == "TRAC"
    assert got["igm"] == "IGHM"  # not CD40LG, whose NCBI alias is "IGM"
    assert got["CD19"] == "CD19"
    assert got["zzz9"] is None
    assert res.set_index("protein").loc["zzz9", "how"] == "unmapped"
    assert set(res["how"]) <= {"override", "symbol", "alias", "unmapped"}


def test_map_alias_path():
    # no override for these: NCBI aliases (NKG2A -> KLRC1, CD94 -> KLRD1) and symbols (ICAM-1, Siglec-7)
    res = map_proteins_to_genes(["NKG2A", "CD94", "ICAM-1", "Siglec-7"]).set_index("protein")
    assert res["gene"].tolist() == ["KLRC1", "KLRD1", "ICAM1", "SIGLEC7"]
    assert res["how"].tolist() == ["alias", "alias", "symbol", "symbol"]


def test_map_gene_universe():
    res = map_proteins_to_genes(["cd4.1", "cd8", "cd3"], gene_universe={"CD4", "CD3E"})
    assert res["gene"].tolist() == ["CD4", None, "CD3E"]
    assert res["how"].tolist()[1] == "unmapped"


def test_alias_table_small_and_clean():
    tab = load_protein_alias_table()
    assert set(tab["source"]) == {"override", "symbol", "alias"}
    assert tab["key"].str.fullmatch(r"[a-z0-9]+").all()
    syms = set(tab.loc[tab["source"] == "symbol", "symbol"])
    assert set(tab.loc[tab["source"] == "override", "symbol"]) <= syms


def test_pbmc_panel_mapping_fraction():
    import mudata

    assert PBMC.exists(), "the bundled PBMC mosaic file is part of the package"
    names = list(mudata.read_h5mu(PBMC)["adt"].var_names)
    assert len(names) == 224
    res = map_proteins_to_genes(names)
    assert len(res) == len(names)
    assert (res["how"] != "unmapped").mean() > 0.95
    got = dict(zip(res["protein"], res["gene"], strict=True))
    for protein, gene in {
        "cd4.2": "CD4",
        "cd3.1": "CD3E",
        "cd45ro": "PTPRC",
        "cd11b.1": "ITGAM",
        "cd49d": "ITGA4",
        "cd158e1": "KIR3DL1",
        "cd307c.fcrl3": "FCRL3",
        "tcr.v.7.2": "TRAV1-2",
        "galectin.9": "LGALS9",
        "cd41": "ITGA2B",
        "cd62p": "SELP",
        "cd138.2": "SDC1",
        "cd66a.c.e": "CEACAM1",
        "b7.h4": "VTCN1",
    }.items():
        assert got[protein] == gene, protein
