"""Peak coordinates and peak -> gene links by distance to the TSS."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ._constants import CHROM_BIN_BP, DISTANCE_EDGES_BP, LINK_WINDOW_BP, UNLINKED_BUCKET

# ``chr1:100-600``, ``chr1-100-600`` or ``chr1_100_600``; the chromosome may itself hold ``_``/``.``
# (``chrUn_KI270728v1:100-600``, ``GL000194.1-100-600``): the shortest name followed by two integers wins.
_PEAK_NAME = re.compile(r"^(?P<chrom>[^:\s]+?)[:\-_](?P<start>\d+)[\-_](?P<end>\d+)$")


def parse_peaks(var: pd.DataFrame) -> pd.DataFrame:
    """Coordinates of peaks from ``var`` columns or from their names.

    Parameters
    ----------
    var
        The ATAC modality's ``.var``. Columns ``chrom``, ``start``, ``end`` are used when present;
        otherwise names of the form ``chr1:100-600`` or ``chr1-100-600`` are parsed.

    Returns
    -------
    DataFrame indexed like ``var`` with columns ``chrom`` (str), ``start``, ``end`` (int).
    """
    if {"chrom", "start", "end"}.issubset(var.columns):
        missing = var[["chrom", "start", "end"]].isna().any(axis=1)
        if missing.any():
            examples = ", ".join(map(repr, var.index[missing][:3]))
            raise ValueError(
                f"{int(missing.sum())} ATAC peaks have no value in the 'chrom'/'start'/'end' columns of "
                f".var (e.g. {examples}); fill them, or drop the columns to parse the peak names instead."
            )
        out = pd.DataFrame(
            {
                "chrom": var["chrom"].astype(str).to_numpy(),
                "start": _coordinates(var["start"], "start"),
                "end": _coordinates(var["end"], "end"),
            },
            index=var.index,
        )
        _check_intervals(out)
        _check_names_agree(out)
        return out
    parsed = var.index.to_series().astype(str).str.extract(_PEAK_NAME)
    bad = parsed["chrom"].isna()
    if bad.any():
        examples = ", ".join(map(repr, var.index[bad][:3]))
        raise ValueError(
            f"{int(bad.sum())} ATAC features are not peaks with coordinates (e.g. {examples}). "
            "Name peaks 'chr1:100-600' or 'chr1-100-600', or add integer columns "
            "'chrom', 'start', 'end' to the ATAC modality's .var."
        )
    out = pd.DataFrame(
        {
            "chrom": parsed["chrom"].to_numpy(dtype=str),
            "start": _coordinates(parsed["start"], "start"),
            "end": _coordinates(parsed["end"], "end"),
        },
        index=var.index,
    )
    _check_intervals(out)
    return out


def _check_names_agree(columns: pd.DataFrame) -> None:
    """``ValueError`` when peak names that are coordinates (``chr1:100-600``) disagree with the ``chrom`` /
    ``start`` / ``end`` columns, e.g. columns assigned from a table in another order. A ``chr`` prefix on one side
    only and one base of difference (0- vs 1-based starts) are not disagreements."""
    parsed = columns.index.to_series().astype(str).str.extract(_PEAK_NAME)
    named = parsed["chrom"].notna().to_numpy()
    if not named.any():
        return
    parsed, cols = parsed[named], columns[named]

    def bare(chrom: pd.Series) -> np.ndarray:
        return chrom.astype(str).str.removeprefix("chr").to_numpy()

    differ = (bare(parsed["chrom"]) != bare(cols["chrom"])) | (
        np.abs(parsed["start"].astype(np.int64).to_numpy() - cols["start"].to_numpy()) > 1
    ) | (np.abs(parsed["end"].astype(np.int64).to_numpy() - cols["end"].to_numpy()) > 1)
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        row = cols.iloc[i]
        raise ValueError(
            f"{int(differ.sum())} of {len(differ)} ATAC peaks are named by coordinates that disagree with their "
            f"'chrom'/'start'/'end' columns in .var, e.g. peak {cols.index[i]!r} has the columns "
            f"{row['chrom']}:{row['start']}-{row['end']} (columns assigned from a table in another order?). "
            "holocell links peaks to genes by these coordinates. If the names are right, fix or drop the columns "
            "(mdata['atac'].var = mdata['atac'].var.drop(columns=['chrom', 'start', 'end']): the names are parsed "
            "instead); if the columns are right, rename the peaks from them."
        )


MAX_COORDINATE = 2**40
"""Largest peak coordinate accepted (bp): far beyond any chromosome, and exact in float64 and int64."""


def _coordinates(values: pd.Series, what: str) -> np.ndarray:
    """``values`` (a column or the parsed names) as int64 base-pair positions; ``ValueError`` naming the peaks
    whose ``what`` is not a whole number from 0 to :data:`MAX_COORDINATE` (negative, fractional, too large)."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers < 0) | (numbers != np.floor(numbers)) | (numbers > MAX_COORDINATE)
    if bad.any():
        examples = ", ".join(f"{name!r} ({value!r})" for name, value in zip(values.index[bad][:3],
                                                                          values.to_numpy()[bad][:3], strict=True))
        raise ValueError(
            f"{int(bad.sum())} ATAC peaks have a {what} that is not a whole number of base pairs from 0 to 2**40 "
            f"(e.g. {examples}); fix the peak names or the '{what}' column of the ATAC modality's .var."
        )
    return numbers.astype(np.int64)


def _check_intervals(peaks: pd.DataFrame) -> None:
    bad = peaks["end"].to_numpy() < peaks["start"].to_numpy()
    if bad.any():
        examples = ", ".join(map(repr, peaks.index[bad][:3]))
        raise ValueError(
            f"{int(bad.sum())} ATAC peaks end before they start (e.g. {examples}); peak names and the "
            "'start'/'end' columns must give start <= end."
        )


def distance_bucket(signed_distance: np.ndarray) -> np.ndarray:
    """Bucket of a peak's signed distance to its gene's TSS (negative = upstream)."""
    edges = np.asarray(DISTANCE_EDGES_BP)
    magnitude = np.searchsorted(edges, np.abs(signed_distance), side="right")
    magnitude = np.minimum(magnitude, len(edges) - 1)
    downstream = signed_distance >= 0
    return np.where(downstream, magnitude + len(edges), magnitude).astype(np.int64)


def link_peaks_to_genes(
    peaks: pd.DataFrame, genes: pd.DataFrame, window: int = LINK_WINDOW_BP
) -> pd.DataFrame:
    """Link each peak to the gene whose TSS is nearest its midpoint, within ``window``.

    Parameters
    ----------
    peaks
        Output of :func:`parse_peaks`.
    genes
        Gene table with columns ``gene_name``, ``chrom``, ``tss`` and ``strand`` ("+" or "-").
    window
        Largest distance (bp) between peak midpoint and TSS for a link.

    Returns
    -------
    DataFrame indexed like ``peaks`` with ``anchor`` (gene name, or a chromosome-bin name such
    as ``chr1:bin12`` when no gene is in range), ``distance`` (signed, strand-aware; NaN when
    unlinked) and ``bucket`` (int, see :mod:`holocell.vocab._constants`).
    """
    mid = ((peaks["start"].to_numpy() + peaks["end"].to_numpy()) // 2).astype(np.int64)
    chrom = peaks["chrom"].to_numpy(dtype=str)
    anchor = np.array([f"{c}:bin{m // CHROM_BIN_BP}" for c, m in zip(chrom, mid, strict=True)], dtype=object)
    distance = np.full(len(peaks), np.nan)
    bucket = np.full(len(peaks), UNLINKED_BUCKET, dtype=np.int64)
    genes = genes.dropna(subset=["chrom", "tss"])
    for c, gene_block in genes.groupby(genes["chrom"].astype(str), sort=False):
        on_chrom = np.flatnonzero(chrom == c)
        if len(on_chrom) == 0:
            continue
        gene_block = gene_block.sort_values("tss")
        tss = gene_block["tss"].to_numpy(dtype=np.int64)
        pos = np.searchsorted(tss, mid[on_chrom])
        left = np.clip(pos - 1, 0, len(tss) - 1)
        right = np.clip(pos, 0, len(tss) - 1)
        d_left = np.abs(mid[on_chrom] - tss[left])
        d_right = np.abs(mid[on_chrom] - tss[right])
        nearest = np.where(d_left <= d_right, left, right)
        d = mid[on_chrom] - tss[nearest]
        linked = np.abs(d) <= window
        strand = gene_block["strand"].astype(str).to_numpy()[nearest]
        signed = np.where(strand == "-", -d, d)
        rows = on_chrom[linked]
        anchor[rows] = gene_block["gene_name"].astype(str).to_numpy()[nearest[linked]]
        distance[rows] = signed[linked]
        bucket[rows] = distance_bucket(signed[linked])
    return pd.DataFrame({"anchor": anchor, "distance": distance, "bucket": bucket}, index=peaks.index)
