"""Gene-family prior: Pfam domains (org.Hs.eg.db) and TF families (CIS-BP / JASPAR via pypando).

A gene's row is its spectral embedding in the gene x family membership matrix (families weighted
by 1 / sqrt(size), so large families do not dominate): genes sharing domains or a TF family end up
close.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._matrix import PriorMatrix, align, spectral

#: Columns of the family prior.
FAMILY_RANK = 32


def load_gene_families() -> pd.DataFrame:
    """The shipped gene -> family table: ``symbol``, ``family`` (Pfam id or ``TF:<family>``), ``source``."""
    return _families_cached().copy()


@functools.cache
def _families_cached() -> pd.DataFrame:
    path = Path(__file__).resolve().parent / "_files" / "gene_families.tsv.gz"
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


@functools.cache
def _embedding() -> tuple[list[str], np.ndarray]:
    tab = _families_cached()
    genes = sorted(set(tab["symbol"]))
    fams = sorted(set(tab["family"]))
    gi = tab["symbol"].map({g: i for i, g in enumerate(genes)}).to_numpy()
    fi = tab["family"].map({f: i for i, f in enumerate(fams)}).to_numpy()
    size = np.bincount(fi, minlength=len(fams)).astype(np.float64)
    member = sp.csr_matrix((1.0 / np.sqrt(size[fi]), (gi, fi)), shape=(len(genes), len(fams)))
    u, s, _ = spectral(member, FAMILY_RANK)
    return genes, (u * np.sqrt(s)).astype(np.float32)


def family_prior(anchors: Sequence[str]) -> PriorMatrix:
    """Gene-family prior aligned to ``anchors`` (``FAMILY_RANK`` columns)."""
    genes, table = _embedding()
    return align(anchors, genes, table, "family", [f"family_{i}" for i in range(FAMILY_RANK)])
