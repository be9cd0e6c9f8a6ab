"""scvi-tools' :meth:`differential_expression` for :class:`HoloCell` (mixed into it): Bayesian differential
expression between groups of cells from posterior draws of their cell states, decoded by the RNA count decoder."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .._settings import settings
from ..data.arrays import BackedMosaicArrays, closes_backed_path
from ..vocab import MODALITIES
from ._args import check_count, check_device, check_flag, check_seed, check_weight
from ._differential import bayes_statistics, comparisons, draw_plan, fdr_calls, raw_statistics
from ._latent import scvi_data_alias, without_modalities

if TYPE_CHECKING:
    from mudata import MuData

MODES = ("change", "vanilla")
RAW_CHUNK = 4096
"""Cells per read of the raw-count statistics."""
RAW_ORDER = ("raw_mean1", "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2", "raw_normalized_mean1",
             "raw_normalized_mean2")  # fmt: skip
"""scvi-tools' order of the raw-count columns."""


def _check_arguments(mode, delta, fdr_target, pseudocounts, all_stats, silent, batch_correction, batchids) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    for name, value in (("delta", delta), ("pseudocounts", pseudocounts)):
        check_weight(value, name, note=" (scvi-tools estimates it when None; holocell does not)" if value is None else "")
    if isinstance(fdr_target, bool) or not isinstance(fdr_target, numbers.Real) or not 0 <= fdr_target < 1:
        raise ValueError(f"fdr_target must be a number in [0, 1), got {fdr_target!r}.")
    for name, value in (("all_stats", all_stats), ("silent", silent), ("batch_correction", batch_correction)):
        check_flag(value, name)
    if batch_correction or any(b is not None for b in batchids):
        raise ValueError(
            "batch_correction / batchid1 / batchid2 are scvi-tools' way; holocell's is transform_batch=<a training "
            "batch>: every cell's draws are decoded as if from that batch, so the batches' own effects cancel."
        )


def _rna_sums(arrays, cells: np.ndarray, n_genes: int) -> tuple[dict[str, np.ndarray], int]:
    """Column sums of one group's RNA cells (counts, cells with a count, counts per 10k) and their number."""
    cells = cells[arrays.present[cells, MODALITIES.index("rna")]]
    sums = {k: np.zeros(n_genes) for k in ("counts", "nonzero", "normalized")}
    for start in range(0, len(cells), RAW_CHUNK):
        part = cells[start : start + RAW_CHUNK]
        x = arrays.load(part).counts["rna"] if isinstance(arrays, BackedMosaicArrays) else arrays.counts["rna"][part]
        x = sp.csr_matrix(x, dtype=np.float64)
        library = np.asarray(x.sum(1)).ravel()
        normalized = sp.diags(1e4 / np.maximum(library, 1.0)) @ x
        for key, value in (("counts", x.sum(0)), ("nonzero", (x > 0).sum(0)), ("normalized", normalized.sum(0))):
            sums[key] += np.asarray(value, dtype=np.float64).ravel()
    return sums, len(cells)


class DifferentialMixin:
    """:meth:`differential_expression`."""

    @scvi_data_alias
    @closes_backed_path
    @torch.inference_mode()
    def differential_expression(
        self,
        adata: MuData | str | Path | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | Sequence[str] | None = None,
        idx2: Sequence[int] | Sequence[bool] | Sequence[str] | None = None,
        mode: Literal["change", "vanilla"] = "change",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[str] | None = None,
        batchid2: Sequence[str] | None = None,
        fdr_target: float = 0.05,
        silent: bool = False,
        *,
        transform_batch: str | None = None,
        n_samples_overall: int = 5000,
        m_permutation: int = 10000,
        pseudocounts: float = 0.0,
        modality: str | Sequence[str] | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress_bar: bool | None = None,
    ) -> pd.DataFrame:
        """Differential expression between groups of cells, as scvi-tools' ``differential_expression``.

        Each group's cells give about ``n_samples_overall`` draws of normalised RNA expression: a cell state drawn
        from the cell's posterior (read from all of its modalities, or ``modality=``) and decoded by the RNA count
        decoder, normalised to sum to 1 (:meth:`get_normalized_expression` with ``n_samples``). Random pairs of
        draws, one from each group (``m_permutation``), give each gene's statistics. ``mode="change"``: the log2
        fold change of a pair, its mean, median, spread, and ``proba_de = P(|lfc| >= delta)``, with genes called
        at a posterior expected false discovery rate of ``fdr_target``; ``mode="vanilla"``: ``proba_m1 = P(draw 1
        > draw 2)``. Both: the Bayes factor ``log(p) - log(1 - p)``. Cells measured in none of the modalities read
        have no state and are left out.

        Parameters
        ----------
        adata
            MuData (default: the registered one), a backed MuData or an ``.h5mu`` path (``mdata=`` is another name
            of it). It is not changed.
        groupby, group1, group2
            A column of ``mdata.obs``; each of ``group1`` (a value or list of values; default: every value) is
            compared with ``group2`` (default: every other labelled cell, ``"rest"``). Cells without a label are
            left out.
        idx1, idx2
            Instead of ``groupby``: the cells of the two groups (boolean masks, integer positions or cell names;
            ``idx2`` by default every other cell).
        mode, delta, fdr_target
            As in scvi-tools (``delta``: the smallest absolute log2 fold change that counts as a change).
        batch_size, device
            Cells per forward pass, device to run on (default: where the model is; the model moves there and
            stays, as after ``model.module.to(device)``).
        silent, progress_bar
            ``silent=True`` (scvi-tools' name) hides the progress bar; ``progress_bar`` (the other holocell methods'
            name) shows it or not (``None``: follow :data:`holocell.settings` ``.progress_bar``). With several
            comparisons, one bar counts them.
        all_stats
            Add each group's raw count statistics over its cells with RNA (``raw_mean``,
            ``non_zeros_proportion``, ``raw_normalized_mean``: mean counts per 10k).
        batch_correction, batchid1, batchid2
            scvi-tools' batch correction; holocell's is ``transform_batch`` (``ValueError`` naming it).
        transform_batch
            Decode every draw as if from this training batch (default: each cell's own batch).
        n_samples_overall, m_permutation, pseudocounts
            Draws per group, pairs compared, and a count added to both scales inside the log fold change.
        modality
            Read the cell states from this modality (or list) only; default: every modality each cell has.
        seed
            Random seed of the cells drawn, the posterior draws and the pairs.

        Returns
        -------
        One row per RNA feature and comparison, sorted within a comparison by ``proba_de`` (``"change"``) or by
        the Bayes factor (``"vanilla"``), with scvi-tools' columns (``proba_de``, ``proba_not_de``,
        ``bayes_factor``, ``scale1``, ``scale2``, ``lfc_mean`` ..., ``is_de_fdr_<fdr_target>``) and
        ``comparison``, ``group1``, ``group2``.

        Raises
        ------
        KeyError
            ``groupby`` not a column of ``mdata.obs``; cell names not in the data.
        ValueError
            A group without cells, a cell in both groups, a value that is not one of ``groupby``'s, a bad argument;
            a model without a cell state or without RNA.
        """
        self._check_expression_model("differential_expression")
        _check_arguments(mode, delta, fdr_target, pseudocounts, all_stats, silent, batch_correction,
                         (batchid1, batchid2))  # fmt: skip
        n_samples_overall = check_count(n_samples_overall, "n_samples_overall")
        m_permutation = check_count(m_permutation, "m_permutation")
        check_seed(seed)
        keep = self._check_modalities(modality)
        features = pd.Index(self.feature_space.maps["rna"].features.astype(str))
        if batch_size is not None:
            check_count(batch_size, "batch_size")
        if device is not None:
            check_device(device)
        progress = False if silent else progress_bar  # None: holocell.settings.progress_bar
        settings.show_progress(progress)  # a value such as "no" refused before any work
        mdata, arrays = self._arrays(adata, transform_batch)
        pairs = comparisons(mdata.obs, groupby, group1, group2, idx1, idx2)
        has_state = ~without_modalities(arrays.present, keep or list(self.modalities_))
        rng = np.random.default_rng(seed)
        tables = []
        several = len(pairs) > 1  # one bar over the comparisons, not two per comparison
        bar = settings.show_progress(progress) if several else False
        for name1, name2, mask1, mask2 in tqdm(pairs, desc="comparisons", disable=not bar):
            draws, raw = [], {}
            for k, mask in enumerate((mask1, mask2), start=1):
                cells = np.flatnonzero(mask & has_state)
                if not len(cells):
                    raise ValueError(f"No cell of {name1 if k == 1 else name2} has data in the modalities read.")
                chosen, per_cell = draw_plan(cells, n_samples_overall, rng)
                sampling = (max(2, per_cell), False, int(rng.integers(2**31)))
                size = self._inference_batch_size(batch_size, len(features) * sampling[0])
                scales = self._scale_rows(arrays, chosen, keep, None, 1.0, sampling, size, device,
                                          False if several else progress)  # fmt: skip
                draws.append(scales[:per_cell].reshape(-1, len(features)))
                if all_stats:
                    raw.update(raw_statistics(*_rna_sums(arrays, np.flatnonzero(mask), len(features)), suffix=str(k)))
            stats = bayes_statistics(*draws, mode=mode, delta=float(delta), pseudocounts=float(pseudocounts),
                                     m_permutation=m_permutation, rng=rng)  # fmt: skip
            table = pd.DataFrame({**stats, **{k: raw[k] for k in RAW_ORDER if k in raw}}, index=features)
            if mode == "change":
                table[f"is_de_fdr_{fdr_target}"] = fdr_calls(stats["proba_de"], fdr_target)
            table = table.sort_values("proba_de" if mode == "change" else "bayes_factor", ascending=False, kind="stable")
            table["comparison"], table["group1"], table["group2"] = f"{name1} vs {name2}", name1, name2
            tables.append(table)
        return pd.concat(tables)


__all__ = ["DifferentialMixin"]
