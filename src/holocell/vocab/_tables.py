"""Shipped gene tables (TSS per gene, antibody -> gene aliases) and their loaders.

The tables live in ``holocell/vocab/_files`` and are rebuilt by ``scripts/build_gene_tables.py``;
provenance, licences and versions are in ``_files/README.md``.
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import pandas as pd

__all__ = [
    "GENE_TABLE_COLUMNS",
    "GENOME_SPECIES",
    "SUPPORTED_GENOMES",
    "alias_key",
    "clean_antibody_name",
    "load_gene_table",
    "load_protein_alias_table",
    "map_proteins_to_genes",
    "read_tss_file",
]

GENE_TABLE_COLUMNS: tuple[str, ...] = ("gene_name", "gene_id", "chrom", "tss", "strand", "biotype")

_GENOME_FILES: dict[str, str] = {
    "hg38": "genes_hg38.tsv.gz",
    "hg19": "genes_hg19.tsv.gz",
    "mm10": "genes_mm10.tsv.gz",
}
_GENOME_ALIASES: dict[str, str] = {
    "hg38": "hg38",
    "grch38": "hg38",
    "hg19": "hg19",
    "grch37": "hg19",
    "mm10": "mm10",
    "grcm38": "mm10",
}
SUPPORTED_GENOMES: tuple[str, ...] = ("hg38", "hg19", "mm10")
#: The species of each shipped build.
GENOME_SPECIES: dict[str, str] = {"hg38": "human", "hg19": "human", "mm10": "mouse"}

_PROTEIN_ALIAS_FILE = "protein_aliases_human.tsv.gz"


def _files_dir() -> Path:
    return Path(__file__).resolve().parent / "_files"


def normalise_genome(genome: str) -> str:
    key = str(genome).strip().lower()
    if key not in _GENOME_ALIASES and any(c in str(genome) for c in "/\\.") and str(genome).strip():
        raise FileNotFoundError(
            f"genome={genome!r} looks like a file path, but no such file exists. Pass the path of a BED/GTF TSS "
            f"file that exists, a gene table DataFrame, or a shipped genome ({', '.join(SUPPORTED_GENOMES)})."
        )
    if key not in _GENOME_ALIASES:
        raise ValueError(
            f"Unknown genome {genome!r}. Shipped gene tables: {', '.join(SUPPORTED_GENOMES)} "
            "(aliases: GRCh38, GRCh37, GRCm38). For any other genome or annotation, pass your own "
            "gene table as a DataFrame with columns "
            f"{list(GENE_TABLE_COLUMNS)}, or a BED/GTF file read with `read_tss_file`."
        )
    return _GENOME_ALIASES[key]


@functools.cache
def _load_gene_table_cached(genome: str) -> pd.DataFrame:
    path = _files_dir() / _GENOME_FILES[genome]
    df = pd.read_csv(
        path,
        sep="\t",
        dtype={"gene_name": str, "gene_id": str, "chrom": str, "strand": str, "biotype": str},
        keep_default_na=False,
    )
    df["tss"] = df["tss"].astype("int64")
    return df.loc[:, list(GENE_TABLE_COLUMNS)]


def load_gene_table(genome: str) -> pd.DataFrame:
    """Load the shipped one-row-per-gene TSS table of a genome build.

    Parameters
    ----------
    genome
        ``"hg38"`` (alias ``"GRCh38"``, Ensembl 93), ``"hg19"`` (``"GRCh37"``) or ``"mm10"``
        (``"GRCm38"``); case-insensitive.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_name``, ``gene_id`` (Ensembl id for hg38, Entrez id for hg19/mm10), ``chrom``
        (``"chr"`` prefix, main chromosomes only), ``tss`` (0-based), ``strand`` (``"+"``/``"-"``) and
        ``biotype`` (``"unknown"`` where the source lacks it). A fresh copy on every call.

    Raises
    ------
    ValueError
        If the genome is not shipped; pass your own table or use :func:`read_tss_file` instead.
    """
    return _load_gene_table_cached(normalise_genome(genome)).copy()


def _parse_gtf_attributes(text: str) -> dict[str, str]:
    """GTF / GFF2 attributes (``gene_id "X"; gene_name "Y";``), or GFF3's (``ID=gene:X;Name=Y;gene_id=X``), with
    GFF3's ``Name`` / ``ID`` also under GTF's ``gene_name`` / ``gene_id`` when those are absent."""
    out: dict[str, str] = {}
    for m in re.finditer(r'(\S+)\s+"([^"]*)"', text):
        out.setdefault(m.group(1), m.group(2))
    if not out and "=" in text:  # GFF3
        for part in text.strip().strip(";").split(";"):
            key, _, value = part.strip().partition("=")
            out.setdefault(key, value)
        out.setdefault("gene_id", out.get("ID", "").removeprefix("gene:"))
        out.setdefault("gene_name", out.get("Name", out["gene_id"]))
        out.setdefault("gene_biotype", out.get("biotype", "unknown"))
    return out


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    return open(path)


def _finish_table(df: pd.DataFrame) -> pd.DataFrame:
    chrom = df["chrom"].astype(str)
    no_prefix = ~chrom.str.startswith("chr")
    chrom = chrom.where(~no_prefix, "chr" + chrom.str.replace("^MT$", "M", regex=True))
    df = df.assign(chrom=chrom, tss=df["tss"].astype("int64"))
    return df.loc[:, list(GENE_TABLE_COLUMNS)].reset_index(drop=True)


def read_tss_file(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a user gene annotation (BED or GTF) into the gene-table format.

    Parameters
    ----------
    path
        A BED file (optionally gzipped; columns chrom, start, end, name, score, strand, further
        columns ignored; 0-based half-open; the TSS is ``start`` on ``+`` and ``end - 1`` on ``-``,
        ``+`` when the strand is missing; a header line before the first row is skipped) or a GTF / GFF file
        (``.gtf``, ``.gff``, ``.gff2``, ``.gff3``, optionally gzipped; ``gene`` features, 1-based; name from the
        ``gene_name`` attribute, falling back to ``gene_id``; GFF3's ``Name`` / ``ID=gene:...``).
        ``~`` is expanded.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_name``, ``gene_id``, ``chrom``, ``tss`` (0-based), ``strand``, ``biotype``,
        like :func:`load_gene_table`. Chromosome names get a ``"chr"`` prefix if they lack one.
    """
    path = Path(path).expanduser()
    name = path.name.lower()
    is_gtf = name.removesuffix(".gz").endswith((".gtf", ".gff", ".gff2", ".gff3"))
    rows: list[tuple[str, str, str, int, str, str]] = []
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.rstrip("\n").split("\t")
            if is_gtf:
                if len(fields) < 9 or fields[2] != "gene":
                    continue
                attrs = _parse_gtf_attributes(fields[8])
                start, end, strand = int(fields[3]) - 1, int(fields[4]), fields[6]
                tss = end - 1 if strand == "-" else start
                gene_id = attrs.get("gene_id", "")
                gene_name = attrs.get("gene_name", gene_id)
                biotype = attrs.get("gene_biotype", attrs.get("gene_type", "unknown"))
                rows.append((gene_name, gene_id, fields[0], tss, strand, biotype))
            else:
                if len(fields) < 3:
                    fields = line.split()
                if len(fields) < 3:
                    raise ValueError(f"{path}: BED lines need at least chrom, start, end: {line!r}")
                if not (fields[1].strip().isdigit() and fields[2].strip().isdigit()):
                    if not rows:  # a header line (chrom, start, end, ... as DataFrame.to_csv writes it)
                        continue
                    raise ValueError(f"{path}: BED start and end must be integers: {line!r}")
                chrom, start, end = fields[0], int(fields[1]), int(fields[2])
                gname = fields[3] if len(fields) > 3 else f"{chrom}:{start}-{end}"
                strand = fields[5] if len(fields) > 5 and fields[5] in ("+", "-") else "+"
                tss = end - 1 if strand == "-" else start
                rows.append((gname, gname, chrom, tss, strand, "unknown"))
    df = pd.DataFrame(rows, columns=list(GENE_TABLE_COLUMNS))
    if df.empty:
        raise ValueError(f"No genes read from {path} (GTF needs 'gene' features; BED needs >= 3 columns).")
    return _finish_table(df)


# --------------------------------------------------------------------------------------------------
# Antibody (ADT) names -> genes
# --------------------------------------------------------------------------------------------------

_PREFIX_RE = re.compile(
    r"^(?:adt|ab|antibody|prot|protein|cite|anti|human|hu|hs|mouse|mu|mm|rat)[._\-\s]+", re.IGNORECASE
)
_SUFFIX_RE = re.compile(
    r"[._\-\s]+(?:totalseq[abc]?|tsa|tsb|tsc|adt|prot|protein|antibody|ab|isotype[._\-\s]*ctrl)$",
    re.IGNORECASE,
)
_CLONE_SUFFIX_RE = re.compile(r"[._\-\s]*\((?:[^()]*)\)$")
_DUP_SUFFIX_RE = re.compile(r"\.(\d{1,2})$")


def alias_key(name: str) -> str:
    """Compact lookup key shared by the alias table and queries: lowercase ASCII letters and digits only.

    Parameters
    ----------
    name
        A gene symbol, alias or already cleaned antibody name.

    Returns
    -------
    str
        E.g. ``"HLA-DRA"`` -> ``"hladra"``, ``"siglec.8"`` -> ``"siglec8"``.
    """
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


#: Greek letters as antibody names write them in ASCII (``TCR α/β`` = ``TCRab``, ``IL-1β`` = ``IL1b``).
_GREEK = str.maketrans(
    {
        **dict(zip("αβγδεζηθικλμνξοπρσςτυφχψω", "abgdezhqiklmnxoprsstufcyw", strict=True)),
        **dict(zip("ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", "ABGDEZHQIKLMNXOPRSTUFCYW", strict=True)),
        "µ": "m",  # the micro sign, often typed for mu
    }
)

#: Alias-table keys this short (``gr``, ``nk1``) name too many things: a plain ``"alias"`` hit is not taken for them.
MAX_SHORT_ALIAS_KEY = 3


def _strip_affixes(name: str) -> str:
    s = str(name).strip().translate(_GREEK)
    s = _CLONE_SUFFIX_RE.sub("", s)
    prev = None
    while prev != s:
        prev = s
        s = _PREFIX_RE.sub("", s)
        s = _SUFFIX_RE.sub("", s)
    s = s.lower()
    s = re.sub(r"[^a-z0-9]+", ".", s).strip(".")
    return s


def clean_antibody_name(name: str) -> str:
    """Normalise an ADT / CITE-seq antibody name to a canonical dotted lowercase form.

    Rules, in order: write Greek letters in ASCII (``α`` -> ``a``, ``β`` -> ``b``, ``γ`` -> ``g``,
    ``δ`` -> ``d``, ``κ`` -> ``k``, ``λ`` -> ``l``, as in HGNC symbols); drop a trailing clone in parentheses; strip prefixes such as ``adt_``,
    ``anti-``, ``hu.``, ``human_``/``mouse_`` and suffixes such as ``_totalseqb``, ``_adt``; lowercase;
    turn every run of non-alphanumeric characters into one ``"."``; then remove a trailing duplicate tag
    ``.1``/``.2`` (also written ``_1``/``-1``) when the rest is one token containing a digit (``cd4.1``
    -> ``cd4``, ``cd11b.2`` -> ``cd11b``; never read as ``cd41``), or when the full name is not a known
    alias key but the rest is (``hla.dr.1`` -> ``hla.dr``). ``tcr.v.7.2``, ``siglec.8`` and ``lox.1``
    are kept, their digit being part of the name. The lookup key used by :func:`map_proteins_to_genes` is
    :func:`alias_key` of the result (dots removed).

    Parameters
    ----------
    name
        Raw antibody name, e.g. ``"CD4.1"``, ``"ADT_CD8a_TotalSeqB"``, ``"HLA-DR"``.

    Returns
    -------
    str
        E.g. ``"cd4.1"`` -> ``"cd4"``, ``"CD8a"`` -> ``"cd8a"``, ``"HLA-DR"`` -> ``"hla.dr"``.
    """
    s = _strip_affixes(name)
    m = _DUP_SUFFIX_RE.search(s)
    if m is not None:
        rest = s[: m.start()]
        if "." not in rest and re.search(r"\d", rest):
            return rest  # "cd4.1" -> "cd4" (never "cd41")
        known = _known_keys()
        if alias_key(s) not in known and alias_key(rest) in known:
            return rest  # "hla.dr.1" -> "hla.dr"; "tcr.v.7.2" and "siglec.8" are kept
    return s


@functools.lru_cache(maxsize=1)
def _load_alias_cached() -> pd.DataFrame:
    path = _files_dir() / _PROTEIN_ALIAS_FILE
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def load_protein_alias_table() -> pd.DataFrame:
    """Load the shipped human antibody/alias -> gene symbol table.

    Returns
    -------
    pandas.DataFrame
        Columns ``key`` (see :func:`alias_key`), ``symbol`` (official HGNC/NCBI symbol), ``source``
        (``"override"``, ``"symbol"`` or ``"alias"``) and ``rank`` (candidate order within a key; for
        ambiguous aliases, genes with more PubMed references come first). A fresh copy.
    """
    return _load_alias_cached().copy()


@functools.lru_cache(maxsize=1)
def _known_keys() -> frozenset[str]:
    try:
        tab = _load_alias_cached()
    except FileNotFoundError:  # pragma: no cover - only while the tables are being rebuilt
        return frozenset()
    return frozenset(tab["key"])


@functools.lru_cache(maxsize=1)
def _alias_lookup() -> dict[str, dict[str, list[str]]]:
    tab = _load_alias_cached()
    tab = tab.assign(rank=tab["rank"].astype(int)).sort_values(["source", "key", "rank"], kind="stable")
    out: dict[str, dict[str, list[str]]] = {"override": {}, "symbol": {}, "alias": {}}
    for source, key, symbol in zip(tab["source"], tab["key"], tab["symbol"], strict=True):
        out[source].setdefault(key, []).append(symbol)
    return out


def _sources(key: str, species: str) -> tuple[str, ...]:
    """Which parts of the alias table a cleaned key may be looked up in."""
    if species == "mouse" or len(key) <= MAX_SHORT_ALIAS_KEY:
        # human aliases misread mouse markers (Sca-1 -> CASP3) and short keys (gr -> NR3C1)
        return ("override", "symbol")
    return ("override", "symbol", "alias")


def map_proteins_to_genes(
    names: Sequence[str], gene_universe: set[str] | None = None, *, species: str = "human"
) -> pd.DataFrame:
    """Map antibody (ADT) names to human gene symbols, reporting how every name was (not) mapped.

    Each name is cleaned with :func:`clean_antibody_name` (Greek letters written in ASCII first:
    ``TCR α/β`` reads as ``TCRab``) and looked up, in this order, in the hand-curated antibody
    overrides (``"override"``), the official symbols (``"symbol"``) and the NCBI/org.Hs.eg.db aliases
    of protein-coding genes (``"alias"``). Aliases are not used for keys of
    :data:`MAX_SHORT_ALIAS_KEY` characters or fewer (``Gr-1`` -> ``gr``, ``NK-1.1`` -> ``nk1`` name
    unrelated human genes) nor for mouse panels. Nothing is dropped: unmapped names get
    ``gene=None`` and ``how="unmapped"``.

    Parameters
    ----------
    names
        Antibody names, e.g. ``mdata["adt"].var_names``.
    gene_universe
        Optional set of gene symbols (e.g. the RNA ``var_names``). When given, only candidate genes in
        it are accepted; a name whose candidates are all outside the universe is ``"unmapped"``.
    species
        ``"human"`` (default) or ``"mouse"``: the species the antibodies target. The alias table is
        human; for ``"mouse"`` only overrides and official symbols are taken (``Sca-1`` stays unmapped
        instead of landing on CASP3).

    Returns
    -------
    pandas.DataFrame
        One row per input name, in input order, with columns ``protein`` (the input name), ``gene``
        (symbol or None) and ``how`` (``"override"``, ``"symbol"``, ``"alias"`` or ``"unmapped"``).
    """
    if species not in ("human", "mouse"):
        raise ValueError(f"species must be 'human' or 'mouse', got {species!r}.")
    lookup = _alias_lookup()
    rows: list[tuple[str, str | None, str]] = []
    for raw in names:
        key = alias_key(clean_antibody_name(raw))
        gene: str | None = None
        how = "unmapped"
        for source in _sources(key, species):
            cands = lookup[source].get(key, [])
            if gene_universe is not None:
                cands = [c for c in cands if c in gene_universe]
            if cands:
                gene, how = cands[0], source
                break
        rows.append((str(raw), gene, how))
    df = pd.DataFrame(rows, columns=["protein", "gene", "how"])
    df["gene"] = df["gene"].astype(object).where(df["gene"].notna(), None)
    return df
