"""Value encodings of one modality's counts: discrete bins for diffusion, continuous channel, library size.

All functions take a dense ``(cells, features)`` count tensor of one modality.
"""

from __future__ import annotations

import torch


def quantile_bins(counts: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Per-cell quantile bins of the non-zero values; bin 0 is exactly zero.

    Parameters
    ----------
    counts
        ``(B, F)`` non-negative values.
    n_bins
        Total number of bins including the zero bin; non-zero values go to ``1 .. n_bins - 1``
        by their rank among the cell's non-zero values (ties share the lower rank).

    Returns
    -------
    ``(B, F)`` long tensor of bins.
    """
    nonzero = counts > 0
    # rank of each value among the cell's values (ties -> lowest rank), then shift out the zeros
    order = torch.argsort(counts, dim=1, stable=True)
    sorted_vals = torch.gather(counts, 1, order)
    first_of_tie = torch.searchsorted(sorted_vals.contiguous(), counts.contiguous(), right=False)
    n_zero = (~nonzero).sum(dim=1, keepdim=True)
    n_nonzero = nonzero.sum(dim=1, keepdim=True).clamp(min=1)
    rank_frac = (first_of_tie - n_zero).clamp(min=0).float() / n_nonzero.float()
    bins = 1 + torch.floor(rank_frac * (n_bins - 1)).long().clamp(max=n_bins - 2)
    return torch.where(nonzero, bins, torch.zeros_like(bins))


def log_normalized(counts: torch.Tensor, target_sum: float = 1e4) -> torch.Tensor:
    """``log1p(counts / library * target_sum)`` per cell (absolute expression, GeneCompass-style)."""
    lib = counts.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.log1p(counts / lib * target_sum)


def clr(counts: torch.Tensor) -> torch.Tensor:
    """Centred log-ratio per cell: ``log1p(x) - mean(log1p(x))`` (the usual ADT transform)."""
    logged = torch.log1p(counts)
    return logged - logged.mean(dim=1, keepdim=True)


def binarize(counts: torch.Tensor) -> torch.Tensor:
    """Accessibility as 0/1 (any fragment in the peak)."""
    return (counts > 0).float()


def log_library(counts: torch.Tensor) -> torch.Tensor:
    """``log1p`` of the total count per cell, ``(B,)``."""
    return torch.log1p(counts.sum(dim=1))


CONTINUOUS = {"rna": log_normalized, "protein": clr, "atac": binarize}
"""The continuous value channel of each modality."""
