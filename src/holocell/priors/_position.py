"""Promoter / TSS position prior: chromosome, strand and multi-scale position of the gene's TSS.

Positions come from the shipped hg38 table (Ensembl 93); mouse genes on a human anchor use the
human gene's position. Neighbouring genes (which often share regulatory domains) get similar rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ..vocab import load_gene_table
from ._matrix import PriorMatrix, align

CHROMOSOMES: tuple[str, ...] = tuple(f"chr{i}" for i in range(1, 23)) + ("chrX", "chrY")
#: Wavelengths (bp) of the sine/cosine position features.
SCALES_BP: tuple[float, ...] = (1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 3e8)
POSITION_COLUMNS: list[str] = (
    list(CHROMOSOMES)
    + ["strand", "relative_position"]
    + [f"{f}_{int(s)}" for s in SCALES_BP for f in ("sin", "cos")]
)


@functools.cache
def _table() -> tuple[list[str], np.ndarray]:
    genes = load_gene_table("hg38")
    genes = genes[genes["chrom"].isin(CHROMOSOMES)]
    tss = genes["tss"].to_numpy(dtype=np.float64)
    chrom = genes["chrom"].to_numpy()
    onehot = (chrom[:, None] == np.array(CHROMOSOMES)[None, :]).astype(np.float64)
    length = genes.groupby("chrom")["tss"].transform("max").to_numpy(dtype=np.float64)
    strand = np.where(genes["strand"].to_numpy() == "+", 1.0, -1.0)
    waves = [f(2 * np.pi * tss / s) for s in SCALES_BP for f in (np.sin, np.cos)]
    table = np.column_stack([onehot, strand, tss / np.maximum(length, 1.0), *waves]).astype(np.float32)
    return genes["gene_name"].tolist(), table


def position_prior(anchors: Sequence[str]) -> PriorMatrix:
    """TSS-position prior aligned to ``anchors`` (``len(POSITION_COLUMNS)`` columns)."""
    genes, table = _table()
    return align(anchors, genes, table, "position", list(POSITION_COLUMNS))
