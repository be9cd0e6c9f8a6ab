"""Ground-truth multiome simulator (RNA + ATAC + protein) with known regulatory links.

Generative story (all vectorised, driven by ``np.random.default_rng(seed)``)::

    cell type -> TF activity (per type, lognormal, some TFs type-specific, small per-cell noise)
              -> CRE accessibility probability p = sigmoid(bias + sum_{TF->CRE} w * activity)
              -> chromatin state x ~ Bernoulli(p); observed ATAC = x * Bernoulli(per-cell capture)
              -> gene log-rate = base + sum_{CRE->gene} w * x + sum_{TF->gene} w * activity + batch effect
                 (the first ``n_tfs`` genes are the TFs: log-rate = base + log(activity) + CRE terms + batch)
              -> RNA counts ~ NB(library size * rate)
              -> protein rate = background + scale * (coding gene rate / its mean rate)
              -> ADT counts ~ NB(ADT library size * protein rate)

The deterministic expected-value part of the model (``E[rate]`` given TF activities, with the chromatin state
integrated out exactly, since ``E[exp(w x)] = 1 - p + p e^w`` for a Bernoulli ``x``) is kept in
:class:`SimulationTruth` so that the true effect of knocking out a CRE or a gene can be recomputed.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import anndata as ad
import mudata
import numpy as np
import pandas as pd
from scipy import sparse

from ._simulate_truth import ADT_SCALE, SimulationTruth, _Model

__all__ = ["SimulationTruth", "simulate_multiome"]

_CHROMS = [f"chr{i}" for i in range(1, 6)]
_PEAK_WIDTH = 500
_LINK_WINDOW = 100_000  # linked CREs lie within +-100 kb of their gene's TSS
_GENE_SPACING = 300_000
_VALID_MODS = ("rna", "atac", "protein")


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Negative binomial draws with mean ``mu`` and inverse dispersion ``theta`` (gamma-Poisson)."""
    theta = np.broadcast_to(theta, mu.shape)
    lam = rng.gamma(theta, np.maximum(mu, 0.0) / theta)
    return rng.poisson(lam)


def _to_csr(a: np.ndarray) -> sparse.csr_matrix:
    return sparse.csr_matrix(a.astype(np.float32))


def simulate_multiome(
    n_cells: int = 1000,
    *,
    n_cell_types: int = 5,
    n_genes: int = 200,
    n_tfs: int = 20,
    peaks_per_gene: int = 4,
    n_distal_peaks: int = 50,
    n_proteins: int = 30,
    n_batches: int = 2,
    species: Literal["human", "mouse"] = "human",
    missing: dict[str, Sequence[str]] | None = None,
    modalities: Sequence[str] = ("rna", "atac", "protein"),
    batch_effect: float = 0.3,
    seed: int = 0,
) -> tuple[mudata.MuData, SimulationTruth]:
    """Simulate a paired RNA + ATAC + protein (multiome / TEA-seq-like) dataset with known ground truth.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_cell_types
        Number of cell types (``"type0"``, ...), assigned uniformly at random.
    n_genes
        Number of genes; the first ``n_tfs`` are transcription factors.
    n_tfs
        Number of TF genes (their expression follows their activity).
    peaks_per_gene
        Linked CREs per gene, placed within +-100 kb of the gene's TSS.
    n_distal_peaks
        Extra peaks more than 200 kb from any TSS that regulate nothing.
    n_proteins
        Number of ADT proteins, coded by the first ``n_proteins`` non-TF genes.
    n_batches
        Number of batches (``"batch0"``, ...), assigned uniformly at random.
    species
        ``"human"`` (uppercase symbols ``SIM1``, ids ``ENSGSIM...``) or ``"mouse"`` (``Sim1``,
        ``ENSMUSGSIM...``).
    missing
        Modality -> batches lacking that modality, e.g. ``{"protein": ["batch1"]}``. Those cells are removed
        from that modality's AnnData (a true mosaic) but kept in the global ``obs``.
    modalities
        Modalities to return, a subset of ``("rna", "atac", "protein")``.
    batch_effect
        Standard deviation of the per-gene, per-batch log-rate shift.
    seed
        Random seed; equal seeds give identical output.

    Returns
    -------
    ``(mdata, truth)``: a :class:`mudata.MuData` with raw integer counts (float32 CSR) in each modality's
    ``.X``, ``batch`` and ``cell_type`` in every ``obs`` and the global ``obs`` (categorical), gene coordinates
    (``chrom``, ``tss``, ``strand``, ``gene_id``) in ``rna.var``, peak coordinates (``chrom``, ``start``,
    ``end``) in ``atac.var`` and the coding gene in ``protein.var["gene"]``; and the :class:`SimulationTruth`.
    """
    modalities = list(modalities)
    bad = [m for m in modalities if m not in _VALID_MODS]
    if bad or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"`modalities` must be distinct values from {_VALID_MODS}, got {modalities}.")
    if species not in ("human", "mouse"):
        raise ValueError(f"`species` must be 'human' or 'mouse', got {species!r}.")
    sizes = {"n_cells": n_cells, "n_genes": n_genes, "n_tfs": n_tfs, "n_proteins": n_proteins, "n_cell_types": n_cell_types,
             "n_batches": n_batches, "peaks_per_gene": peaks_per_gene, "n_distal_peaks": n_distal_peaks}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}.")
    if (
        n_cells < 1
        or n_cell_types < 1
        or n_batches < 1
        or n_tfs < 1
        or peaks_per_gene < 0
        or n_distal_peaks < 0
    ):
        raise ValueError("n_cells, n_cell_types, n_batches and n_tfs must be >= 1; peak counts >= 0.")
    if n_genes <= n_tfs:
        raise ValueError("`n_genes` must exceed `n_tfs`.")
    if not 0 <= n_proteins <= n_genes - n_tfs:
        raise ValueError("`n_proteins` must be between 0 and n_genes - n_tfs.")
    if peaks_per_gene > 190:
        raise ValueError("`peaks_per_gene` must be <= 190 (500 bp peaks on a 1 kb grid within +-100 kb).")

    rng = np.random.default_rng(seed)
    batches = [f"batch{i}" for i in range(n_batches)]
    types = [f"type{i}" for i in range(n_cell_types)]
    missing = {k: list(v) for k, v in (missing or {}).items()}
    for mod, bs in missing.items():
        if mod not in modalities:
            raise ValueError(f"`missing` names modality {mod!r}, which is not in `modalities`.")
        unknown = [b for b in bs if b not in batches]
        if unknown:
            raise ValueError(f"`missing[{mod!r}]` names unknown batches {unknown}; batches are {batches}.")
    if any(all(b in missing.get(m, []) for m in modalities) for b in batches):
        raise ValueError("Every batch must keep at least one modality.")

    # ---- names -------------------------------------------------------------------------------------------
    if species == "human":
        genes = pd.Index([f"SIM{i + 1}" for i in range(n_genes)])
        gene_ids = [f"ENSGSIM{i + 1:011d}" for i in range(n_genes)]
    else:
        genes = pd.Index([f"Sim{i + 1}" for i in range(n_genes)])
        gene_ids = [f"ENSMUSGSIM{i + 1:011d}" for i in range(n_genes)]
    tf_names = list(genes[:n_tfs])

    # ---- genomics ----------------------------------------------------------------------------------------
    # genes in a random genomic order, split evenly over chr1..chr5, ~300 kb apart
    order = rng.permutation(n_genes)
    chrom_of_slot = np.concatenate(
        [np.full(len(c), i) for i, c in enumerate(np.array_split(np.arange(n_genes), len(_CHROMS)))]
    )
    gaps = _GENE_SPACING + rng.integers(-40_000, 40_001, n_genes)
    tss_slot = np.empty(n_genes, dtype=np.int64)
    for c in range(len(_CHROMS)):
        idx = np.flatnonzero(chrom_of_slot == c)
        if idx.size:
            tss_slot[idx] = 1_000_000 + np.cumsum(gaps[idx]) - gaps[idx[0]]
    gene_chrom = np.empty(n_genes, dtype=int)
    gene_tss = np.empty(n_genes, dtype=np.int64)
    gene_chrom[order] = chrom_of_slot
    gene_tss[order] = tss_slot
    strand = rng.choice(np.array(["+", "-"]), n_genes)

    # linked CREs: offsets on a 1 kb grid within +-99 kb of the TSS, distinct per gene (no overlaps)
    grid = np.arange(-95, 96) * 1000
    pick = np.argsort(rng.random((n_genes, grid.size)), axis=1)[:, :peaks_per_gene]
    centre = gene_tss[:, None] + grid[pick]
    link_gene = np.repeat(np.arange(n_genes), peaks_per_gene)
    link_start = (centre - _PEAK_WIDTH // 2).ravel()
    link_chrom = np.repeat(gene_chrom, peaks_per_gene)

    # distal peaks: beyond the last gene of a chromosome (> 200 kb from any TSS)
    dist_chrom = rng.integers(0, len(_CHROMS), n_distal_peaks)
    last_tss = np.array([gene_tss[gene_chrom == c].max(initial=0) for c in range(len(_CHROMS))])
    dist_slot = rng.choice(2000, size=n_distal_peaks, replace=False) if n_distal_peaks <= 2000 else None
    if dist_slot is None:
        raise ValueError("`n_distal_peaks` must be <= 2000.")
    dist_start = last_tss[dist_chrom] + 250_000 + dist_slot * 1000

    peak_chrom = np.concatenate([link_chrom, dist_chrom])
    peak_start = np.concatenate([link_start, dist_start]).astype(np.int64)
    peak_gene = np.concatenate([link_gene, np.full(n_distal_peaks, -1)])
    porder = np.lexsort((peak_start, peak_chrom))  # genomic order
    peak_chrom, peak_start, peak_gene = peak_chrom[porder], peak_start[porder], peak_gene[porder]
    peak_end = peak_start + _PEAK_WIDTH
    chrom_names = np.array(_CHROMS)[peak_chrom]
    peaks = pd.Index([f"{c}:{s}-{e}" for c, s, e in zip(chrom_names, peak_start, peak_end, strict=True)])
    n_peaks = len(peaks)
    linked = peak_gene >= 0

    # ---- cells -------------------------------------------------------------------------------------------
    cell_type = rng.integers(0, n_cell_types, n_cells)
    batch = rng.integers(0, n_batches, n_cells)

    # TF activity per type: lognormal, about half the TFs type-specific (high in one type, low elsewhere)
    type_act = np.exp(rng.normal(-0.5, 0.5, (n_cell_types, n_tfs)))
    specific = rng.random(n_tfs) < 0.5
    home = rng.integers(0, n_cell_types, n_tfs)
    type_act[:, specific] *= 0.2
    type_act[home[specific], np.flatnonzero(specific)] = np.exp(rng.normal(1.0, 0.3, specific.sum()))
    activity = type_act[cell_type] * np.exp(rng.normal(0.0, 0.2, (n_cells, n_tfs)))

    # TF -> CRE edges: 1-2 TFs per peak (distal peaks too, so they are cell-type specific), mostly activating
    n_reg = rng.integers(1, 3, n_peaks)
    e_peak = np.repeat(np.arange(n_peaks), n_reg)
    e_tf = rng.integers(0, n_tfs, e_peak.size)
    e_w = rng.uniform(0.8, 2.0, e_peak.size) * np.where(rng.random(e_peak.size) < 0.85, 1.0, -1.0)
    tf_cre_w = np.zeros((n_tfs, n_peaks))
    np.add.at(tf_cre_w, (e_tf, e_peak), e_w)
    keep = tf_cre_w != 0
    cre_bias = rng.normal(-2.0, 0.5, n_peaks)

    # CRE -> gene weights (log-rate increase when open), mostly enhancers
    cre_w = np.zeros(n_peaks)
    cre_w[linked] = rng.uniform(0.3, 1.0, linked.sum()) * np.where(rng.random(linked.sum()) < 0.8, 1.0, -1.0)

    # TF -> gene direct edges: 0-2 TFs per non-TF gene
    n_tg = rng.integers(0, 3, n_genes - n_tfs)
    g_target = n_tfs + np.repeat(np.arange(n_genes - n_tfs), n_tg)
    g_tf = rng.integers(0, n_tfs, g_target.size)
    g_w = rng.uniform(0.2, 0.8, g_target.size) * np.where(rng.random(g_target.size) < 0.75, 1.0, -1.0)
    tf_gene_w = np.zeros((n_tfs, n_genes))
    np.add.at(tf_gene_w, (g_tf, g_target), g_w)

    gene_base = rng.normal(0.0, 0.8, n_genes)
    beff = (
        rng.normal(0.0, batch_effect, (n_batches, n_genes))
        if batch_effect > 0
        else np.zeros((n_batches, n_genes))
    )

    protein_gene_idx = np.arange(n_tfs, n_tfs + n_proteins)
    model = _Model(
        cell_type=cell_type,
        batch=batch,
        tf_activity=activity,
        tf_cre_w=tf_cre_w,
        cre_bias=cre_bias,
        cre_gene_idx=peak_gene,
        cre_w=cre_w,
        tf_gene_w=tf_gene_w,
        gene_base=gene_base,
        batch_effect=beff,
        log_offset=0.0,
        protein_gene_idx=protein_gene_idx,
        protein_bg=rng.uniform(0.2, 0.5, n_proteins),
        protein_scale=np.exp(rng.normal(0.0, 0.3, n_proteins)),
        gene_mean_rate=np.ones(n_genes),
    )
    # normalise so that the expected rates of a cell sum to ~1 on average, and fix the protein reference
    _, rate0, _ = model.expected()
    log_offset = float(np.log(rate0.sum(axis=1).mean()))
    gene_mean_rate = rate0.mean(axis=0) / np.exp(log_offset)
    model = replace(model, log_offset=log_offset, gene_mean_rate=gene_mean_rate)

    # ---- sampling ----------------------------------------------------------------------------------------
    p = model.accessibility(activity)
    state = (rng.random((n_cells, n_peaks)) < p).astype(float)  # true chromatin state
    capture = 1.0 / (1.0 + np.exp(-rng.normal(-0.6, 0.5, n_cells)))  # per-cell ATAC capture (~0.35)
    atac = state * (rng.random((n_cells, n_peaks)) < capture[:, None])

    rate = np.exp(model.log_rate(activity, model.cre_term_sampled(state)) - log_offset)
    lib = np.exp(rng.normal(np.log(2000.0), 0.4, n_cells))
    theta_rna = np.exp(rng.normal(np.log(4.0), 0.5, n_genes))
    rna = _nb(rng, lib[:, None] * rate, theta_rna[None, :])

    adt_lib = ADT_SCALE * np.exp(rng.normal(0.0, 0.3, n_cells))
    theta_adt = np.exp(rng.normal(np.log(8.0), 0.3, n_proteins))
    adt = _nb(rng, adt_lib[:, None] * model.protein_rate(rate), theta_adt[None, :])

    # ---- AnnData / MuData --------------------------------------------------------------------------------
    obs_names = pd.Index([f"cell{i}" for i in range(n_cells)])
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical.from_codes(batch, categories=batches),
            "cell_type": pd.Categorical.from_codes(cell_type, categories=types),
        },
        index=obs_names,
    )
    rna_var = pd.DataFrame(
        {
            "gene_id": gene_ids,
            "chrom": pd.Categorical(np.array(_CHROMS)[gene_chrom], categories=_CHROMS),
            "tss": gene_tss,
            "strand": strand,
            "is_tf": np.arange(n_genes) < n_tfs,
        },
        index=genes,
    )
    atac_var = pd.DataFrame(
        {
            "chrom": pd.Categorical(chrom_names, categories=_CHROMS),
            "start": peak_start,
            "end": peak_end,
        },
        index=peaks,
    )
    proteins = pd.Index([g.lower() for g in genes[protein_gene_idx]])
    prot_var = pd.DataFrame({"gene": list(genes[protein_gene_idx])}, index=proteins)

    data = {"rna": (rna, rna_var), "atac": (atac, atac_var), "protein": (adt, prot_var)}
    # modalities with no missing batches first, so the global obs keeps the original cell order when possible
    ordered = sorted(modalities, key=lambda m: len(missing.get(m, [])))
    mods: dict[str, ad.AnnData] = {}
    for mod in ordered:
        x, var = data[mod]
        keep_cells = ~obs["batch"].isin(missing.get(mod, [])).to_numpy()
        mods[mod] = ad.AnnData(X=_to_csr(x[keep_cells]), obs=obs.loc[keep_cells].copy(), var=var.copy())
    with warnings.catch_warnings():  # mudata 0.3 warns about its future `pull_on_update` default
        warnings.simplefilter("ignore", FutureWarning)
        mdata = mudata.MuData(mods)
        mdata.obs["batch"] = obs["batch"].reindex(mdata.obs_names)
        mdata.obs["cell_type"] = obs["cell_type"].reindex(mdata.obs_names)
        mdata.update()

    # ---- truth -------------------------------------------------------------------------------------------
    ti, pi = np.nonzero(keep)
    truth = SimulationTruth(
        cre_gene=pd.DataFrame(
            {"peak": peaks[linked], "gene": genes[peak_gene[linked]], "weight": cre_w[linked]}
        ).reset_index(drop=True),
        tf_target=pd.DataFrame(
            {
                "tf": [tf_names[t] for t in np.nonzero(tf_gene_w)[0]],
                "target": genes[np.nonzero(tf_gene_w)[1]],
                "weight": tf_gene_w[np.nonzero(tf_gene_w)],
            }
        ),
        tf_cre=pd.DataFrame({"tf": [tf_names[t] for t in ti], "peak": peaks[pi], "weight": tf_cre_w[ti, pi]}),
        gene_protein=pd.DataFrame({"gene": list(genes[protein_gene_idx]), "protein": list(proteins)}),
        cell_type_tf_activity=pd.DataFrame(
            type_act, index=pd.Index(types, name="cell_type"), columns=tf_names
        ),
        genes=genes,
        peaks=peaks,
        proteins=proteins,
        cell_types=pd.Index(types),
        _model=model,
    )
    return mdata, truth
