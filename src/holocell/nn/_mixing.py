"""Batch mixing: an optional MMD penalty between the cell states of different batches
(:class:`~holocell.nn.ObjectiveConfig` ``batch_mmd_weight``, off by default).

The cell state already keeps the batch out of its inputs (the batch goes to the decoders). For strong batch
effects that the encoder still picks up from the values, the penalty pulls each batch's cell states towards
those of the other batches in the mini-batch. It assumes the batches hold similar cell types: with very different
compositions it mixes what should stay apart, which is why it is off unless asked for.
"""

from __future__ import annotations

import torch

BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)
"""Gaussian kernel widths, in units of the cell state (whose prior is ``N(0, I)``)."""


def _kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` sum over :data:`BANDWIDTHS` of ``exp(-|x - y|^2 / (2 s^2))``."""
    d2 = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-d2 / (2.0 * s * s)) for s in BANDWIDTHS)


def mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared maximum mean discrepancy between two samples ``(n, k)`` and ``(m, k)`` (biased estimate)."""
    return _kernel(x, x).mean() + _kernel(y, y).mean() - 2.0 * _kernel(x, y).mean()


def batch_mmd(z: torch.Tensor, batch: torch.Tensor, min_cells: int = 2) -> torch.Tensor:
    """Mean over the batches in a mini-batch of the MMD between that batch's cell states and the others'.

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
    terms = []
    for b in torch.unique(batch):
        inside = batch == b
        if int(inside.sum()) >= min_cells and int((~inside).sum()) >= min_cells:
            terms.append(mmd(z[inside], z[~inside]))
    if not terms:
        return z.new_zeros(())
    return torch.stack(terms).mean()


__all__ = ["BANDWIDTHS", "batch_mmd", "mmd"]
