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
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

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
    names = [str(n) for n in names]
    if not names:
        return "symbol"
    hits = sum(bool(_ENSEMBL_RE.match(n)) for n in names)
    return "ensembl" if hits >= 0.5 * len(names) else "symbol"


@functools.cache
def _human_lookup() -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, str]]:
    """(Ensembl id -> symbol, name -> (symbol, kind) for unambiguous names, upper-case name -> name)."""
    tab = _human_cached()
    sym = tab[tab["kind"] == "symbol"]
    ens = dict(zip(sym["ensembl_id"], sym["symbol"], strict=True))
    n = tab.groupby("name")["symbol"].nunique()
    first = tab[tab["name"].map(n) == 1].drop_duplicates("name")
    by_name = dict(zip(first["name"], zip(first["symbol"], first["kind"], strict=True), strict=True))
    upper = {k.upper(): k for k in by_name}
    return ens, by_name, upper


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


def _map_human(name: str, id_type: str) -> tuple[str | None, str]:
    ens, by_name, upper = _human_lookup()
    if id_type == "ensembl":
        sym = ens.get(_strip_version(name))
        return (sym, "ensembl") if sym else (None, "unmapped")
    hit = by_name.get(name)
    if hit is None and name.upper() in upper:
        hit = by_name[upper[name.upper()]]
    if hit is None:
        return None, "unmapped"
    sym, kind = hit
    return sym, ("symbol" if kind == "symbol" and sym == name else "alias")


def _map_mouse(name: str, id_type: str) -> tuple[str | None, str, str]:
    """(human symbol or None, how, mouse label for an own anchor)."""
    by_key, sym_to_key, key_to_sym = _mouse_lookup()
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
        ``"many2many"`` or ``"unmapped"`` (anchor ``"mouse:<symbol>"``). A second name landing on
        an anchor already taken in this list keeps its own anchor and ``how="duplicate"``.

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
    names = [str(n) for n in names]
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


def mark_duplicates(report: pd.DataFrame, taken: set[str] | None = None) -> pd.DataFrame:
    """Give a name whose anchor is already taken (earlier in ``report`` or in ``taken``) its own anchor.

    Used for modalities with one feature per anchor slot (RNA); ``how`` becomes ``"duplicate"``.
    """
    report = report.copy()
    seen = set() if taken is None else set(taken)
    anchors = report["anchor"].tolist()
    how = report["how"].tolist()
    for i, (name, anchor) in enumerate(zip(report.index, anchors, strict=True)):
        if anchor in seen:
            anchors[i], how[i] = name if name not in seen else f"rna:{name}", "duplicate"
        seen.add(anchors[i])
    report["anchor"], report["how"] = anchors, how
    return report


def shared_fraction(report: pd.DataFrame, expressed: np.ndarray | None = None) -> float:
    """Fraction of (expressed) genes of a :func:`map_genes` report that sit on a human gene anchor."""
    on_human = report["symbol"].notna().to_numpy() & (report["how"] != "duplicate").to_numpy()
    if expressed is not None:
        on_human = on_human[np.asarray(expressed, dtype=bool)]
    return float(on_human.mean()) if len(on_human) else 0.0


def rename_to_anchors(adata, species: Literal["human", "mouse"] = "mouse", gene_id_type: GeneIdType = "auto"):
    """A copy of ``adata`` whose ``var_names`` are the gene anchors of :func:`map_genes`.

    Use it to put data sets of several species on one anchor vocabulary before concatenating
    them (then set them up with ``species_key``). The input is never modified.

    Parameters
    ----------
    adata
        AnnData with genes as ``var_names``.
    species, gene_id_type
        See :func:`map_genes`.

    Returns
    -------
    anndata.AnnData
        Copy with ``var_names`` = anchors (unique: a second gene on an anchor keeps its own name,
        ``how="duplicate"``), and ``var["original_name"]``, ``var["how"]`` from the report.
    """
    report = mark_duplicates(map_genes(list(adata.var_names.astype(str)), species, gene_id_type))
    out = adata.copy()
    out.var["original_name"] = report.index.to_numpy()
    out.var["how"] = report["how"].to_numpy()
    out.var_names = pd.Index(report["anchor"].astype(str).to_numpy())
    return out
