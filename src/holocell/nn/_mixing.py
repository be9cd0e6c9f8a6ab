"""Batch mixing: two optional terms that push the batch out of the cell state, both off by default.

- An MMD penalty between the cell states of different batches (:class:`~holocell.nn.ObjectiveConfig`
  ``batch_mmd_weight``).
- A batch adversary (``batch_adversary_weight``): a small classifier learns to tell each cell's batch from its
  cell state, and the encoder learns states that leave it guessing (:class:`BatchAdversary`).

The cell state already keeps the batch out of its inputs (the batch goes to the decoders). For strong batch
effects that the encoder still picks up from the values, the penalty pulls each batch's cell states towards
those of the other batches in the mini-batch. It assumes the batches hold similar cell types: with very different
compositions it mixes what should stay apart, which is why it is off unless asked for. Experimental: on PBMC and
SNARE-seq2 it collapsed the cell state at weights 0.1-10 (``docs/design.md``, "Batch mixing term").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient is negated on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, with its gradient negated (a gradient reversal layer)."""
    return _ReverseGradient.apply(x)


#: Forms of the batch adversary (:class:`BatchAdversary`).
ADVERSARY_MODES = ("confusion", "reverse")


class BatchAdversary(nn.Module):
    """A classifier of each cell's batch from its cell state, and a term that makes the encoder defeat it.

    Two forms (``mode``):

    - ``"confusion"`` (default): the classifier learns the batch from the states held fixed (cross-entropy), and
      the encoder, with the classifier held fixed, moves the states so that the classifier's prediction is
      uniform over the training batches (the KL divergence from uniform to it): its best is a state that says
      nothing about the batch.
    - ``"reverse"``: one cross-entropy behind a gradient reversal layer (domain-adversarial training): the
      encoder maximises the classifier's loss, which a confidently *wrong* classifier also satisfies, so the
      batches can stay apart. In the ablation it did (``docs/design.md``, "Batch adversary").

    Training-only: nothing else reads it.

    Parameters
    ----------
    n_latent
        Size of ``z``.
    n_batches
        Training batches (one more output stands for a batch unseen in training, as in the decoders).
    n_hidden
        Width of the classifier's hidden layers.
    mode
        ``"confusion"`` or ``"reverse"``.
    """

    def __init__(self, n_latent: int, n_batches: int, n_hidden: int = 64, mode: str = "confusion") -> None:
        super().__init__()
        if mode not in ADVERSARY_MODES:
            raise ValueError(f"mode must be one of {ADVERSARY_MODES}, got {mode!r}.")
        self.mode = mode
        self.n_batches = n_batches
        self.n_classes = n_batches + 1
        self.classifier = nn.Sequential(
            nn.Linear(n_latent, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_hidden), nn.ReLU(),
            nn.Linear(n_hidden, self.n_classes),
        )

    def forward(self, z: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Scalar loss of the cell states ``z`` ``(B, n)`` of batches ``batch`` ``(B,)``: the classifier's
        cross-entropy plus (``"confusion"``) the encoder's divergence from a uniform prediction."""
        target = batch.clamp(max=self.n_classes - 1)
        if self.mode == "reverse":
            return F.cross_entropy(self.classifier(reverse_gradient(z)), target)
        fit = F.cross_entropy(self.classifier(z.detach()), target)
        fixed = {name: p.detach() for name, p in self.classifier.named_parameters()}
        log_p = F.log_softmax(torch.func.functional_call(self.classifier, fixed, (z,)), dim=-1)
        confusion = -log_p[:, : self.n_batches].mean(-1) - math.log(self.n_batches)  # KL(uniform || p) >= 0
        return fit + confusion.mean()


__all__ = ["ADVERSARY_MODES", "BANDWIDTHS", "BatchAdversary", "batch_mmd", "kernel", "reverse_gradient"]
