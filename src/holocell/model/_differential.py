"""The arithmetic of :meth:`HoloCell.differential_expression`: which cells each comparison takes, and the
Bayesian statistics of two groups' posterior draws of normalised expression (scvi-tools' ``"change"`` and
``"vanilla"`` modes: the same columns and rules, computed here from holocell's cell-state draws)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ._args import cell_indices

EPS = 1e-8
"""Added inside the logarithms of the Bayes factor (as scvi-tools does)."""

GENE_CHUNK = 512
"""Genes per block of the log-fold-change draws (``m_permutation x GENE_CHUNK`` floats at a time)."""


def _mask(cells, obs: pd.DataFrame, name: str) -> np.ndarray:
    """Boolean mask over the cells from a mask, integer positions, cell names or a query of ``obs`` (a string, as
    scvi-tools reads it: ``"celltype == 'B'"``)."""
    n_cells = len(obs)
    if isinstance(cells, str):
        try:
            return obs.index.isin(obs.query(cells).index)
        except Exception as err:  # pandas raises many kinds for a bad expression
            raise ValueError(
                f"{name}={cells!r} is read as a query of mdata.obs, as scvi-tools reads a string (e.g. \"celltype == "
                f"'B'\"), and it failed: {err}. Pass a mask, positions or a list of cell names instead."
            ) from err
    values = np.asarray(cells)
    if values.dtype == object and values.ndim == 1 and all(isinstance(v, bool | np.bool_) or pd.isna(v) for v in values):
        if any(pd.isna(v) for v in values):
            raise ValueError(f"{name} is a boolean mask with {int(pd.isna(values).sum())} missing value(s); fill them.")
        values = values.astype(bool)
    if values.dtype == bool:
        if values.shape != (n_cells,):
            raise ValueError(f"{name} as a boolean mask needs one value per cell ({n_cells}), got {values.shape}.")
        return values.copy()
    mask = np.zeros(n_cells, dtype=bool)
    if values.dtype.kind in "iu":  # positions: the same rules as every method's `indices`
        mask[cell_indices(values, n_cells, name)] = True
        return mask
    positions = obs.index.get_indexer(values.astype(str).ravel())
    if (positions < 0).any():
        missing = list(values.ravel()[positions < 0][:5])
        raise KeyError(f"{name} names cells that are not in the data: {missing}.")
    mask[positions] = True
    return mask


def _groups(values, name: str) -> list:
    """``group1`` as a list of distinct values (a single value, as scvi-tools takes it, becomes a list of one)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        values = [values]
    values = list(dict.fromkeys(values))
    if not values:
        raise ValueError(f"{name} is empty; name at least one value, or None for every value.")
    return values


def comparisons(
    obs: pd.DataFrame,
    groupby: str | None,
    group1,
    group2,
    idx1,
    idx2,
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(group1, group2, mask1, mask2)`` of every comparison asked for, as scvi-tools chooses them: ``idx1``
    against ``idx2`` (default: the other cells); or with ``groupby``, each of ``group1`` (default: every value, in
    category order) against ``group2`` (default: every other labelled cell, ``"Rest"``). Values are compared with
    ``==``, so ``0`` matches a float label ``0.0``."""
    if groupby is None:
        if idx1 is None:
            raise ValueError("Pass groupby= (a column of mdata.obs) or idx1= (the cells of the first group).")
        mask1 = _mask(idx1, obs, "idx1")
        mask2 = _mask(idx2, obs, "idx2") if idx2 is not None else ~mask1
        pairs = [("group1", "group2" if idx2 is not None else "Rest", mask1, mask2)]
    else:
        if idx1 is not None or idx2 is not None:
            raise ValueError("Pass either groupby= (with group1= / group2=) or idx1= / idx2=, not both.")
        if not isinstance(groupby, str) or groupby not in obs.columns:
            raise KeyError(f"groupby={groupby!r} is not a column of mdata.obs; columns: {list(obs.columns)[:20]}.")
        if group2 is not None and not isinstance(group2, str) and isinstance(group2, Iterable):
            raise ValueError(f"group2 must be one value of mdata.obs[{groupby!r}] (or None: the rest), got {group2!r}.")
        labels = obs[groupby]
        labelled = labels.notna().to_numpy()
        present = [c for c in labels.astype("category").cat.categories if (labels == c).any()]
        firsts = present if group1 is None else _groups(group1, "group1")
        for name, value in (("group1", firsts), ("group2", [] if group2 is None else [group2])):
            unknown = [g for g in value if not (labels == g).any()]
            if unknown:
                raise ValueError(f"{name} names {unknown}, not a value of mdata.obs[{groupby!r}]: {present[:20]}.")
        pairs = []
        for g in firsts:
            mask1 = labelled & (labels == g).to_numpy()
            mask2 = labelled & ((labels == group2).to_numpy() if group2 is not None else ~mask1)
            pairs.append((str(g), "Rest" if group2 is None else str(group2), mask1, mask2))
    for g1, g2, mask1, mask2 in pairs:
        if not mask1.any() or not mask2.any():
            raise ValueError(f"The comparison {g1} vs {g2} has a group without cells.")
        if (mask1 & mask2).any():
            raise ValueError(f"{int((mask1 & mask2).sum())} cells are in both groups of {g1} vs {g2}.")
    return pairs


def draw_plan(cells: np.ndarray, n_samples_overall: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The cells to draw from and the draws per cell, for about ``n_samples_overall`` draws of a group."""
    if len(cells) >= n_samples_overall:
        return np.sort(rng.choice(cells, n_samples_overall, replace=False)), 1
    return cells, int(np.ceil(n_samples_overall / len(cells)))


def bayes_statistics(
    draws1: np.ndarray,
    draws2: np.ndarray,
    *,
    mode: str,
    delta: float,
    pseudocounts: float,
    m_permutation: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Per-gene statistics of two groups' draws ``(n1, G)`` / ``(n2, G)`` of normalised expression, compared
    over ``m_permutation`` random pairs of draws. ``"change"``: the log2 fold change's distribution and
    ``P(|lfc| >= delta)``; ``"vanilla"``: ``P(draw1 > draw2)``. Both: the Bayes factor of that probability."""
    first = rng.integers(0, len(draws1), m_permutation)
    second = rng.integers(0, len(draws2), m_permutation)
    n_genes = draws1.shape[1]
    out = {"scale1": draws1.mean(0), "scale2": draws2.mean(0)}
    if mode == "vanilla":
        p = np.concatenate([
            (draws1[first, s : s + GENE_CHUNK] > draws2[second, s : s + GENE_CHUNK]).mean(0)
            for s in range(0, n_genes, GENE_CHUNK)
        ])
        return {"proba_m1": p, "proba_m2": 1.0 - p, "bayes_factor": np.log(p + EPS) - np.log(1.0 - p + EPS), **out}
    stats = {k: np.empty(n_genes) for k in ("proba_de", "lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max")}
    for s in range(0, n_genes, GENE_CHUNK):
        a = draws1[first, s : s + GENE_CHUNK].astype(np.float64) + pseudocounts
        b = draws2[second, s : s + GENE_CHUNK].astype(np.float64) + pseudocounts
        lfc = np.log2(np.maximum(a, 1e-30)) - np.log2(np.maximum(b, 1e-30))
        block = slice(s, s + lfc.shape[1])
        stats["proba_de"][block] = (np.abs(lfc) >= delta).mean(0)
        stats["lfc_mean"][block], stats["lfc_median"][block] = lfc.mean(0), np.median(lfc, 0)
        stats["lfc_std"][block], stats["lfc_min"][block], stats["lfc_max"][block] = lfc.std(0), lfc.min(0), lfc.max(0)
    p = stats["proba_de"]
    return {
        "proba_de": p, "proba_not_de": 1.0 - p, "bayes_factor": np.log(p + EPS) - np.log(1.0 - p + EPS),
        **out, "pseudocounts": np.full(n_genes, pseudocounts), "delta": np.full(n_genes, delta),
        **{k: v for k, v in stats.items() if k != "proba_de"},
    }


def fdr_calls(proba_de: np.ndarray, fdr_target: float) -> np.ndarray:
    """Genes called differentially expressed at the posterior expected false discovery rate ``fdr_target``: the
    most probable genes, as many as keep the mean of their ``1 - proba_de`` at or below it."""
    order = np.argsort(-proba_de, kind="stable")
    expected_fdr = np.cumsum(1.0 - proba_de[order]) / np.arange(1, len(order) + 1)
    called = np.zeros(len(proba_de), dtype=bool)
    called[order[: int((expected_fdr <= fdr_target).sum())]] = True
    return called


def raw_statistics(sums: dict[str, np.ndarray], n_cells: int, suffix: str) -> dict[str, np.ndarray]:
    """Mean count, share of cells with a count and mean counts per 10k of one group's RNA cells."""
    n = max(n_cells, 1)
    values = {
        "raw_mean": sums["counts"] / n,
        "non_zeros_proportion": sums["nonzero"] / n,
        "raw_normalized_mean": sums["normalized"] / n,
    }
    if n_cells == 0:
        values = {k: np.full_like(v, np.nan) for k, v in values.items()}
    return {f"{k}{suffix}": v for k, v in values.items()}


__all__ = ["bayes_statistics", "comparisons", "draw_plan", "fdr_calls", "raw_statistics"]
