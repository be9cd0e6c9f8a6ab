"""Gene names -> canonical human gene anchors, for human and mouse data.

Anchors are named by the canonical human symbol of the shipped hg38 table (Ensembl 93), keyed
underneath by the human Ensembl id. Human var names may be symbols, NCBI symbols, aliases,
previous symbols or Ensembl ids; mouse var names (symbols or Ensembl ids) reach a human anchor
through HCOP orthologs when the pair is one-to-one (reciprocal best by supporting databases).
Other mouse genes keep an anchor of their own, ``mouse:<symbol>``; nothing is dropped, and the
report says how every name was placed. Tables: ``_files/human_genes.tsv.gz`` and
``_files/orthologs_mouse_human.tsv.gz``, built by ``scripts/build_prior_tables.py``.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .._warnings import HoloCellWarning
from ._constants import MOUSE_ANCHOR_PREFIX, SPECIES

__all__ = [
    "GENE_ID_TYPES",
    "detect_gene_id_type",
    "load_human_genes",
    "load_orthologs",
    "map_genes",
    "rename_to_anchors",
]

GeneIdType = Literal["auto", "symbol", "ensembl"]
#: Accepted values of ``gene_id_type``.
GENE_ID_TYPES: tuple[str, ...] = ("auto", "symbol", "ensembl")

_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def _files_dir() -> Path:
    return Path(__file__).resolve().parent / "_files"


@functools.cache
def _human_cached() -> pd.DataFrame:
    return pd.read_csv(_files_dir() / "human_genes.tsv.gz", sep="\t", dtype=str, keep_default_na=False)


@functools.cache
def _orthologs_cached() -> pd.DataFrame:
    df = pd.read_csv(_files_dir() / "orthologs_mouse_human.tsv.gz", sep="\t", dtype=str, keep_default_na=False)
    return df.assign(support=df["support"].astype(int))


def load_human_genes() -> pd.DataFrame:
    """The shipped human gene-name table.

    Returns
    -------
    pandas.DataFrame
        One row per (name, gene): ``name`` (as written in data), ``ensembl_id``, ``symbol``
        (canonical anchor name, Ensembl 93) and ``kind`` (``"symbol"``, ``"ncbi_symbol"`` or
        ``"alias"``; aliases include previous symbols). A fresh copy.
    """
    return _human_cached().copy()


def load_orthologs() -> pd.DataFrame:
    """The shipped mouse -> human ortholog table (HCOP, best-supported pairs per mouse gene).

    Returns
    -------
    pandas.DataFrame
        ``mouse_ensembl_id``, ``mouse_symbol``, ``human_ensembl_id``, ``human_symbol`` (canonical),
        ``type`` (``"one2one"``, ``"one2many"``, ``"many2one"``, ``"many2many"``) and ``support``
        (number of HCOP databases). A fresh copy.
    """
    return _orthologs_cached().copy()


def detect_gene_id_type(names: Sequence[str]) -> Literal["symbol", "ensembl"]:
    """``"ensembl"`` when most names look like Ensembl gene ids (``ENSG...``, ``ENSMUSG...``), else ``"symbol"``.

    Parameters
    ----------
    names
        Feature names, e.g. ``adata.var_names``.
    """
    names = _names(names, "detect_gene_id_type")
    if not names:
        return "symbol"
    hits = sum(bool(_ENSEMBL_RE.match(n)) for n in names)
    return "ensembl" if hits >= 0.5 * len(names) else "symbol"


#: Row kinds of the human table, most trusted first: the case-insensitive fallback takes the first kind that has rows.
_KIND_ORDER: tuple[str, ...] = ("symbol", "ncbi_symbol", "alias")


@functools.cache
def _human_lookup() -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, tuple[str, str] | None]]:
    """(Ensembl id -> symbol, name -> (symbol, kind) for unambiguous names, upper-case name -> fallback hit).

    A mixed- or lower-case alias that is another case of a canonical symbol (``"Fli1"``, alias of
    FLII) is left to the fallback, which reads it as that symbol (FLI1). The fallback of an
    upper-case key is the one gene that the most trusted kind of rows written that way names (canonical symbols first, so ``"alb"`` is ALB, not FBF1's alias ``Alb``), or
    None when that kind names several genes (then the name stays unmapped, as ambiguous names do).
    """
    tab = _human_cached()
    sym = tab[tab["kind"] == "symbol"]
    ens = dict(zip(sym["ensembl_id"], sym["symbol"], strict=True))
    n = tab.groupby("name")["symbol"].nunique()
    first = tab[tab["name"].map(n) == 1].drop_duplicates("name")
    by_name = dict(zip(first["name"], zip(first["symbol"], first["kind"], strict=True), strict=True))
    canonical = set(sym["symbol"])
    # "Fli1", "elk3": another case of a canonical symbol reads as that symbol (by the fallback), not as the alias
    other_case = [k for k, (s, _) in by_name.items() if k != k.upper() and k.upper() in canonical and s != k.upper()]
    for name in other_case:
        del by_name[name]
    return ens, by_name, _upper_fallback(tab)


def _upper_fallback(tab: pd.DataFrame) -> dict[str, tuple[str, str] | None]:
    rank = tab["kind"].map({k: i for i, k in enumerate(_KIND_ORDER)}).fillna(len(_KIND_ORDER))
    tab = tab.assign(key=tab["name"].str.upper(), rank=rank)
    best = tab[tab["rank"] == tab.groupby("key")["rank"].transform("min")]
    n_genes = best.groupby("key")["symbol"].nunique()
    one = best[best["key"].map(n_genes) == 1].drop_duplicates("key")
    upper: dict[str, tuple[str, str] | None] = dict.fromkeys(n_genes.index[n_genes > 1])
    upper.update(zip(one["key"], zip(one["symbol"], one["kind"], strict=True), strict=True))
    return upper


@functools.cache
def _ambiguous_names() -> frozenset[str]:
    """Names (as written) that the table gives to several genes: never guessed, not even by case."""
    tab = _human_cached()
    n = tab.groupby("name")["symbol"].nunique()
    return frozenset(n.index[n > 1])


@functools.cache
def _mouse_lookup() -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]:
    """(mouse key -> (human symbol or "", type), mouse symbol -> key, key -> symbol).

    A mouse gene's key is its Ensembl id, or ``"symbol:<symbol>"`` where HCOP has no id.
    """
    tab = _orthologs_cached()
    key = tab["mouse_ensembl_id"].where(tab["mouse_ensembl_id"] != "", "symbol:" + tab["mouse_symbol"])
    by_key: dict[str, tuple[str, str]] = {}
    for k, hsym, typ in zip(key, tab["human_symbol"], tab["type"], strict=True):
        by_key[k] = (hsym if typ == "one2one" else "", typ)
    first = tab.assign(key=key).drop_duplicates("key")
    named = first[first["mouse_symbol"] != ""]
    sym_to_key = dict(zip(named["mouse_symbol"], named["key"], strict=False))
    key_to_sym = dict(zip(named["key"], named["mouse_symbol"], strict=True))
    return by_key, sym_to_key, key_to_sym


def _strip_version(name: str) -> str:
    return name.split(".", 1)[0] if _ENSEMBL_RE.match(name) else name


MISSING_NAMES: frozenset[str] = frozenset({"nan", "na", "<na>", "none", "null", ""})
"""What a missing value becomes as text (pandas' ``nan``, R's ``NA``, ``None``, an empty cell), compared in lower
case: such a name is left unmapped (``"nan"`` was SCN11A through its alias ``NaN``, ``"NA"`` XK)."""


def _names(names: Sequence[str], what: str) -> list[str]:
    """``names`` as a list of text; ``TypeError`` for one string (it would be read letter by letter)."""
    if isinstance(names, str | bytes):
        raise TypeError(f"{what} takes a list of names, got the single string {names!r}: pass [{names!r}].")
    return [str(n) for n in names]


def _map_human(name: str, id_type: str) -> tuple[str | None, str]:
    ens, by_name, upper = _human_lookup()
    if name.strip().lower() in MISSING_NAMES:
        return None, "unmapped"
    if id_type == "ensembl":
        sym = ens.get(_strip_version(name))
        return (sym, "ensembl") if sym else (None, "unmapped")
    hit = by_name.get(name)
    if hit is None and name not in _ambiguous_names():
        hit = upper.get(name.upper())  # a different case; None where the upper-case name is ambiguous
    if hit is None:
        return None, "unmapped"
    sym, kind = hit
    return sym, ("symbol" if kind == "symbol" and sym == name else "alias")


def _map_mouse(name: str, id_type: str) -> tuple[str | None, str, str]:
    """(human symbol or None, how, mouse label for an own anchor)."""
    by_key, sym_to_key, key_to_sym = _mouse_lookup()
    if name.strip().lower() in MISSING_NAMES:
        return None, "unmapped", name
    if id_type == "ensembl":
        key = _strip_version(name)
        label = key_to_sym.get(key, key)
    else:
        key = sym_to_key.get(name) or sym_to_key.get(name[:1].upper() + name[1:].lower(), "")
        label = name
    if key not in by_key:
        return None, "unmapped", label
    hsym, typ = by_key[key]
    return (hsym or None), typ, label


def map_genes(
    names: Sequence[str],
    species: Literal["human", "mouse"] = "human",
    gene_id_type: GeneIdType = "auto",
) -> pd.DataFrame:
    """Place gene names on canonical human gene anchors, reporting how each name was placed.

    Parameters
    ----------
    names
        Gene names of one species, e.g. ``adata.var_names``: symbols (aliases and previous
        symbols accepted for human) or Ensembl gene ids (a version suffix is ignored).
    species
        ``"human"`` or ``"mouse"``.
    gene_id_type
        ``"symbol"``, ``"ensembl"`` or ``"auto"`` (each name that looks like an Ensembl gene id,
        ``ENSG...``/``ENSMUSG...``, is read as one; the others as symbols).

    Returns
    -------
    pandas.DataFrame
        One row per name, in input order (index = the names): ``anchor`` (the anchor name),
        ``symbol`` (canonical human symbol, or None), ``ensembl_id`` (human Ensembl id, or None)
        and ``how``. Human: ``"symbol"``, ``"alias"`` (alias, previous or NCBI symbol, or a
        different case), ``"ensembl"``, ``"unmapped"`` (anchor = the name itself). Mouse:
        ``"one2one"`` (anchor = the human ortholog's symbol), ``"one2many"``, ``"many2one"``,
        ``"many2many"`` or ``"unmapped"`` (anchor ``"mouse:<symbol>"``). Two names of one list may land on one
        anchor (e.g. a symbol and its Ensembl id); :func:`rename_to_anchors` and ``setup_mudata`` give the second
        its own anchor and ``how="duplicate"``. A missing value as text (``"nan"``, ``"NA"``, ``""``) is unmapped.

    Examples
    --------
    >>> from holocell.vocab import map_genes
    >>> map_genes(["Cd4", "ENSMUSG00000023274"], species="mouse")["anchor"].tolist()
    ['CD4', 'CD4']
    """
    if species not in SPECIES:
        raise ValueError(f"species must be one of {list(SPECIES)}, got {species!r}.")
    if gene_id_type not in GENE_ID_TYPES:
        raise ValueError(f"gene_id_type must be one of {list(GENE_ID_TYPES)}, got {gene_id_type!r}.")
    names = _names(names, "map_genes")
    ens_of = {s: e for e, s in _human_lookup()[0].items()}
    rows = []
    for name in names:
        id_type = gene_id_type
        if gene_id_type == "auto":  # per name, so a list mixing ids and symbols works too
            id_type = "ensembl" if _ENSEMBL_RE.match(name) else "symbol"
        if species == "human":
            sym, how = _map_human(name, id_type)
            own = name
        else:
            sym, how, label = _map_mouse(name, id_type)
            own = MOUSE_ANCHOR_PREFIX + label
        rows.append((sym if sym is not None else own, sym, ens_of.get(sym) if sym else None, how))
    df = pd.DataFrame(rows, columns=["anchor", "symbol", "ensembl_id", "how"], index=pd.Index(names))
    return df.astype(object).where(df.notna(), None)


#: ``how`` values of a weaker match: when such a name and an exact one land on one anchor, the exact one keeps it.
_WEAK_HOW: frozenset[str] = frozenset({"alias"})


def mark_duplicates(report: pd.DataFrame, taken: set[str] | None = None) -> pd.DataFrame:
    """Give a name whose anchor is already taken (in ``taken``, or by another name of ``report``) its own anchor.

    Used for modalities with one feature per anchor slot (RNA); ``how`` becomes ``"duplicate"``.
    Of several names on one anchor, an exact match (symbol, Ensembl id, ortholog) keeps it before
    an alias or a different case (``["P53", "TP53"]``: ``TP53`` keeps TP53); otherwise the first one.
    """
    report = report.copy()
    seen = set() if taken is None else set(taken)
    anchors = report["anchor"].tolist()
    how = report["how"].tolist()
    # exact matches first; sorted() is stable, so input order decides within each rank
    order = sorted(range(len(anchors)), key=lambda i: how[i] in _WEAK_HOW)
    names = report.index.tolist()
    for i in order:
        if anchors[i] in seen:
            anchors[i], how[i] = names[i] if names[i] not in seen else f"rna:{names[i]}", "duplicate"
        seen.add(anchors[i])
    report["anchor"], report["how"] = anchors, how
    return report


def shared_fraction(report: pd.DataFrame, expressed: np.ndarray | None = None) -> float:
    """Fraction of (expressed) genes of a :func:`map_genes` report that sit on a human gene anchor."""
    on_human = report["symbol"].notna().to_numpy() & (report["how"] != "duplicate").to_numpy()
    if expressed is not None:
        on_human = on_human[np.asarray(expressed, dtype=bool)]
    return float(on_human.mean()) if len(on_human) else 0.0


#: Fewer symbol-like names than this are not judged by :func:`other_species_case`.
MIN_CASE_NAMES = 10


def mouse_case(name: str) -> bool:
    """Whether ``name`` is written as a mouse symbol (title case: ``Cd4``, not ``CD4``)."""
    return name[:1].isupper() and name[1:] == name[1:].lower() and name != name.upper()


def other_species_case(names: Sequence[str], species: str) -> tuple[list[str], int, str, str] | None:
    """Whether most symbols are written in the other species' case: human symbols are all capitals (``CD4``), mouse
    symbols title case (``Cd4``). Only names that start with a letter and are not Ensembl ids count; fewer than
    :data:`MIN_CASE_NAMES` of them are not judged.

    Returns
    -------
    ``None``, or ``(names in the other species' case, names counted, the other species, its case in words)``.
    """
    names = [n for n in map(str, names) if n[:1].isalpha() and not _ENSEMBL_RE.match(n)]
    if len(names) < MIN_CASE_NAMES:
        return None
    if species == "human":
        hits = [n for n in names if mouse_case(n)]
        other, style = "mouse", "title case, e.g. 'Cd4'"
    else:
        hits = [n for n in names if n == n.upper()]
        other, style = "human", "all capitals, e.g. 'CD4'"
    return (hits, len(names), other, style) if len(hits) / len(names) > 0.5 else None


def _warn_other_species_case(names: Sequence[str], species: str) -> None:
    """Warn when :func:`rename_to_anchors` reads names written in the other species' case."""
    found = other_species_case(names, species)
    if found is None:
        return
    hits, n, other, style = found
    warnings.warn(
        f"{len(hits)} of {n} var_names (e.g. {hits[:3]}) are written like {other} gene symbols ({style}), "
        f"but rename_to_anchors reads them as {species} genes (species={species!r}; the default is 'mouse'). "
        f"If the genes are {other}, pass species={other!r}: reading one species' symbols as the other's puts "
        "genes on the wrong anchors (e.g. human CXCL1 on CXCL2 through the mouse orthologs).",
        HoloCellWarning,
        stacklevel=3,
    )


def rename_to_anchors(adata, species: Literal["human", "mouse"] = "mouse", gene_id_type: GeneIdType = "auto"):
    """A copy of ``adata`` whose ``var_names`` are the gene anchors of :func:`map_genes`.

    Use it to put data sets of several species on one anchor vocabulary before concatenating
    them (then set them up with ``species_key``). The input is never modified.

    Parameters
    ----------
    adata
        AnnData with genes as ``var_names``.
    species
        ``"human"`` or ``"mouse"``. The default is ``"mouse"`` (unlike :func:`map_genes`): pass
        ``species="human"`` for human data. A :class:`~holocell.HoloCellWarning` is raised when
        most symbols are written in the other species' case (``CD4`` read as mouse, ``Cd4`` as human).
    gene_id_type
        See :func:`map_genes`.

    Returns
    -------
    anndata.AnnData
        Copy with ``var_names`` = anchors (unique: a second gene on an anchor keeps its own name,
        ``how="duplicate"``), and ``var["original_name"]``, ``var["how"]`` from the report.
    """
    names = list(adata.var_names.astype(str))
    report = mark_duplicates(map_genes(names, species, gene_id_type))
    if gene_id_type != "ensembl":
        _warn_other_species_case(names, species)
    out = adata.copy()
    out.var["original_name"] = report.index.to_numpy()
    out.var["how"] = report["how"].to_numpy()
    out.var_names = pd.Index(report["anchor"].astype(str).to_numpy())
    return out
