"""The simulator's ground truth: the deterministic part of its generative model and what it implies.

:func:`holocell.data.simulate_multiome` draws the data; :class:`SimulationTruth` holds the known links and
recomputes expected expression, with or without a knocked-out CRE or gene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

RNA_SCALE = 1e4  # normalised RNA expression: expected counts per 10k at unit library size
ADT_SCALE = 50.0  # normalised protein expression: expected ADT counts at unit ADT library size


@dataclass(frozen=True)
class _Model:
    """Parameters of the deterministic part of the generative model (internal)."""

    cell_type: np.ndarray  # (n_cells,) int
    batch: np.ndarray  # (n_cells,) int
    tf_activity: np.ndarray  # (n_cells, n_tfs) per-cell TF activity
    tf_cre_w: np.ndarray  # (n_tfs, n_peaks)
    cre_bias: np.ndarray  # (n_peaks,)
    cre_gene_idx: np.ndarray  # (n_peaks,) int, -1 for distal peaks
    cre_w: np.ndarray  # (n_peaks,) CRE -> gene weight (0 for distal)
    tf_gene_w: np.ndarray  # (n_tfs, n_genes), zero columns for TF genes
    gene_base: np.ndarray  # (n_genes,)
    batch_effect: np.ndarray  # (n_batches, n_genes)
    log_offset: float
    protein_gene_idx: np.ndarray  # (n_proteins,) int
    protein_bg: np.ndarray  # (n_proteins,)
    protein_scale: np.ndarray  # (n_proteins,)
    gene_mean_rate: np.ndarray  # (n_genes,) baseline mean of the normalised gene rate

    @property
    def n_tfs(self) -> int:
        return self.tf_activity.shape[1]

    def accessibility(self, activity: np.ndarray) -> np.ndarray:
        """Accessibility probability ``(n_cells, n_peaks)`` given TF activities."""
        logit = self.cre_bias[None, :] + activity @ self.tf_cre_w
        return 1.0 / (1.0 + np.exp(-logit))

    def log_rate(self, activity: np.ndarray, cre_term: np.ndarray) -> np.ndarray:
        """Gene log-rate (before the global offset) given activities and the summed CRE term."""
        eta = self.gene_base[None, :] + cre_term + self.batch_effect[self.batch]
        eta = eta + activity @ self.tf_gene_w
        with np.errstate(divide="ignore"):
            eta[:, : self.n_tfs] += np.log(activity)  # TF genes follow their activity (log 0 = -inf)
        return eta

    def cre_term_expected(self, p: np.ndarray) -> np.ndarray:
        """``sum_c log E[exp(w_c x_c)]`` per gene, with ``x_c ~ Bernoulli(p_c)`` (exact)."""
        return self._sum_to_genes(np.log1p(p * np.expm1(self.cre_w)[None, :]))

    def cre_term_sampled(self, x: np.ndarray) -> np.ndarray:
        """``sum_c w_c x_c`` per gene for a realised chromatin state ``x``."""
        return self._sum_to_genes(x * self.cre_w[None, :])

    def _sum_to_genes(self, per_cre: np.ndarray) -> np.ndarray:
        n_genes = self.gene_base.shape[0]
        linked = np.flatnonzero(self.cre_gene_idx >= 0)
        m = sparse.csr_matrix(
            (np.ones(linked.size), (linked, self.cre_gene_idx[linked])),
            shape=(self.cre_gene_idx.shape[0], n_genes),
        )
        return np.asarray(per_cre @ m)

    def protein_rate(self, gene_rate: np.ndarray) -> np.ndarray:
        """Protein rate per unit ADT library (background + scaled relative gene rate)."""
        rel = gene_rate[:, self.protein_gene_idx] / self.gene_mean_rate[None, self.protein_gene_idx]
        return self.protein_bg[None, :] + self.protein_scale[None, :] * rel

    def expected(
        self,
        cre_ko: np.ndarray | None = None,
        gene_ko: np.ndarray | None = None,
        gene_oe: np.ndarray | None = None,
        oe_quantile: float = 0.99,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected accessibility, normalised gene rate and protein rate, optionally with knockouts and
        overexpressed genes.

        An overexpressed gene's rate is set, in every cell, to its ``oe_quantile`` over the unperturbed cells;
        an overexpressed TF's activity likewise, so that it acts on its CREs and targets.
        """
        activity = self.tf_activity.copy()
        gene_ko = np.asarray([] if gene_ko is None else gene_ko, dtype=int)
        gene_oe = np.asarray([] if gene_oe is None else gene_oe, dtype=int)
        cre_ko = np.asarray([] if cre_ko is None else cre_ko, dtype=int)
        tf_ko = gene_ko[gene_ko < self.n_tfs]
        activity[:, tf_ko] = 0.0  # knocked-out TF genes lose their activity downstream
        tf_oe = gene_oe[gene_oe < self.n_tfs]
        activity[:, tf_oe] = np.quantile(self.tf_activity[:, tf_oe], oe_quantile, axis=0)
        p = self.accessibility(activity)
        p[:, cre_ko] = 0.0
        rate = np.exp(self.log_rate(activity, self.cre_term_expected(p)) - self.log_offset)
        rate[:, gene_ko] = 0.0
        if gene_oe.size:
            rate[:, gene_oe] = np.quantile(self.expected()[1][:, gene_oe], oe_quantile, axis=0)
        return p, rate, self.protein_rate(rate)


@dataclass(frozen=True)
class SimulationTruth:
    """Ground truth of a :func:`simulate_multiome` run.

    Attributes
    ----------
    cre_gene
        CRE -> gene links, columns ``peak``, ``gene``, ``weight`` (log-rate increase when the CRE is open).
    tf_target
        Direct TF -> gene edges, columns ``tf``, ``target``, ``weight`` (log-rate change per unit activity).
    tf_cre
        TF -> CRE edges, columns ``tf``, ``peak``, ``weight`` (accessibility logit change per unit activity).
    gene_protein
        Gene -> protein links, columns ``gene``, ``protein``.
    cell_type_tf_activity
        TF activity per cell type (index cell types, columns TF gene symbols); each cell's activity is this
        times lognormal noise (sd 0.2 on the log scale).
    genes, peaks, proteins, cell_types
        Feature and cell-type names, in the order used by the simulated data.
    """

    cre_gene: pd.DataFrame
    tf_target: pd.DataFrame
    tf_cre: pd.DataFrame
    gene_protein: pd.DataFrame
    cell_type_tf_activity: pd.DataFrame
    genes: pd.Index
    peaks: pd.Index
    proteins: pd.Index
    cell_types: pd.Index
    _model: _Model = field(repr=False, compare=False)

    def expected_expression(self) -> dict[str, pd.DataFrame]:
        """Per-cell-type mean of the true expected (unperturbed) normalised expression.

        Returns
        -------
        Dict with ``"rna"`` and ``"protein"`` (``log1p`` expected normalised expression, see
        :meth:`knockout_effect`) and ``"atac"`` (accessibility probability), each indexed by cell type.
        """
        return self._per_type(*self._model.expected())

    def knockout_effect(
        self, cre: str | Sequence[str] | None = None, gene: str | Sequence[str] | None = None
    ) -> dict[str, pd.DataFrame]:
        """True expected effect of knocking out CREs and/or genes.

        A knocked-out CRE has accessibility 0; a knocked-out gene has expression 0 and, if it is a TF, its
        activity is removed downstream (on its target CREs and genes). The effect is recomputed by re-running
        the deterministic expected-value part of the generative model.

        Parameters
        ----------
        cre
            Peak name(s) (``"chr1:start-end"``) to close.
        gene
            Gene symbol(s) to knock out.

        Returns
        -------
        Dict of DataFrames indexed by cell type (mean over the cells of that type) with one column per feature:
        ``"rna"`` and ``"protein"`` hold the change of ``log1p`` expected normalised expression (RNA: expected
        counts per 10k at unit library size; protein: expected ADT counts at unit ADT library size, so the
        background is included), ``"atac"`` the change of accessibility probability. Positive = up after the
        knockout.
        """
        if cre is None and gene is None:
            raise ValueError("Give at least one of `cre` or `gene`.")
        cre_idx = self._lookup(self.peaks, cre, "peak")
        gene_idx = self._lookup(self.genes, gene, "gene")
        base = self._per_type(*self._model.expected())
        ko = self._per_type(*self._model.expected(cre_ko=cre_idx, gene_ko=gene_idx))
        return {k: ko[k] - base[k] for k in base}

    def overexpression_effect(self, gene: str | Sequence[str], quantile: float = 0.99) -> dict[str, pd.DataFrame]:
        """True expected effect of overexpressing genes.

        An overexpressed gene's expected normalised rate is set, in every cell, to its ``quantile`` over the
        unperturbed cells (as :meth:`~holocell.HoloCell.predict_perturbation` sets the RNA value of an overexpressed
        gene to a quantile of its expression); an overexpressed TF's activity is set to its own ``quantile`` over
        the cells, so that it acts on its target CREs and genes.

        Parameters
        ----------
        gene
            Gene symbol(s) to overexpress.
        quantile
            The quantile, in ``(0, 1]``.

        Returns
        -------
        Dict of DataFrames indexed by cell type, as :meth:`knockout_effect` (positive = up after the
        overexpression).
        """
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}.")
        gene_idx = self._lookup(self.genes, gene, "gene")
        if gene_idx.size == 0:
            raise ValueError("Give at least one gene to overexpress.")
        base = self._per_type(*self._model.expected())
        up = self._per_type(*self._model.expected(gene_oe=gene_idx, oe_quantile=quantile))
        return {k: up[k] - base[k] for k in base}

    @staticmethod
    def _lookup(index: pd.Index, names: str | Sequence[str] | None, what: str) -> np.ndarray:
        if names is None:
            return np.zeros(0, dtype=int)
        names = [names] if isinstance(names, str) else list(names)
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"Unknown {what}(s): {missing}")
        return index.get_indexer(names)

    def _per_type(self, p: np.ndarray, rate: np.ndarray, prot: np.ndarray) -> dict[str, pd.DataFrame]:
        ct = self._model.cell_type
        n_types = len(self.cell_types)
        counts = np.bincount(ct, minlength=n_types).astype(float)
        # one-hot average over the cells of each type (NaN for absent types)
        onehot = sparse.csr_matrix((np.ones(ct.size), (ct, np.arange(ct.size))), shape=(n_types, ct.size))
        with np.errstate(invalid="ignore", divide="ignore"):
            inv = 1.0 / counts[:, None]

            def mean(a: np.ndarray) -> np.ndarray:
                return np.asarray(onehot @ a) * inv

            return {
                "rna": pd.DataFrame(
                    mean(np.log1p(RNA_SCALE * rate)), index=self.cell_types, columns=self.genes
                ),
                "protein": pd.DataFrame(
                    mean(np.log1p(ADT_SCALE * prot)), index=self.cell_types, columns=self.proteins
                ),
                "atac": pd.DataFrame(mean(p), index=self.cell_types, columns=self.peaks),
            }


__all__ = ["SimulationTruth"]
