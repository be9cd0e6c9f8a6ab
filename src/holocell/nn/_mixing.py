"""Batch mixing: an optional MMD penalty between the cell states of different batches
(:class:`~holocell.nn.ObjectiveConfig` ``batch_mmd_weight``, off by default).

The cell state already keeps the batch out of its inputs (the batch goes to the decoders). For strong batch
effects that the encoder still picks up from the values, the penalty pulls each batch's cell states towards
those of the other batches in the mini-batch. It assumes the batches hold similar cell types: with very different
compositions it mixes what should stay apart, which is why it is off unless asked for. Experimental: on PBMC and
SNARE-seq2 it collapsed the cell state at weights 0.1-10 (``docs/design.md``, "Batch mixing term").
"""

from __future__ import annotations

import torch

BANDWIDTHS = (0.25, 1.0, 4.0)
"""Gaussian kernel widths (squared), as multiples of the median squared distance between the pooled cell states."""


def kernel(z: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` sum of Gaussian kernels between the cell states ``z``, with widths that are multiples
    (:data:`BANDWIDTHS`) of their median squared distance, taken without gradient: the penalty cannot be lowered by
    shrinking the cell states, only by mixing them."""
    d2 = torch.cdist(z, z).pow(2)
    scale = d2.detach().median().clamp(min=1e-6)
    return sum(torch.exp(-d2 / (s * scale)) for s in BANDWIDTHS)


def batch_mmd(z: torch.Tensor, batch: torch.Tensor, min_cells: int = 2) -> torch.Tensor:
    """Mean over the batches in a mini-batch of the squared MMD (biased estimate) between that batch's cell states
    and the others'; one kernel matrix over the mini-batch serves every batch.

    Parameters
    ----------
    z
        ``(B, k)`` cell states.
    batch
        ``(B,)`` batch code of each cell.
    min_cells
        Batches (and complements) with fewer cells are skipped.

    Returns
    -------
    Scalar; 0 when the mini-batch holds fewer than two batches with ``min_cells`` cells each.
    """
    k = None
    terms = []
    for b in torch.unique(batch):
        inside = batch == b
        if int(inside.sum()) < min_cells or int((~inside).sum()) < min_cells:
            continue
        k = kernel(z) if k is None else k
        terms.append(k[inside][:, inside].mean() + k[~inside][:, ~inside].mean() - 2.0 * k[inside][:, ~inside].mean())
    if not terms:
        return z.new_zeros(())
    return torch.stack(terms).mean()


__all__ = ["BANDWIDTHS", "batch_mmd", "kernel"]
