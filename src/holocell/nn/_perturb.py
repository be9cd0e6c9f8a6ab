"""In-silico perturbation on tokens: edit some values, then regenerate other slots around them.

A perturbation sets chosen values (RNA / protein slots of some anchors, or ATAC peaks) and
regenerates the slots of the ``targets`` modalities with the sampler (:func:`~holocell.nn.sample`),
keeping the edited slots of a target modality visible (its ``keep`` mask) while the rest of it is
generated. Several targets (RNA and protein) are generated jointly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..tokenize import Tokens
from ._sampler import sample
from .transformer import HoloCellNetwork


@dataclass
class SlotEdit:
    """Values to set in one modality.

    Attributes
    ----------
    modality
        ``"rna"`` / ``"protein"`` (``index`` are anchors) or ``"atac"`` (``index`` are peaks).
    index
        ``(k,)`` long anchor or peak indices.
    values
        ``(k,)`` continuous value (RNA / protein) or 0/1 accessibility (ATAC).
    bins
        ``(k,)`` value bins (RNA / protein only).
    """

    modality: str
    index: torch.Tensor
    values: torch.Tensor
    bins: torch.Tensor | None = None


def apply_edits(tokens: Tokens, edits: Sequence[SlotEdit]) -> Tokens:
    """Copy of ``tokens`` with the edited values set (and, for RNA / protein, made visible)."""
    out = tokens.clone()
    for e in edits:
        if e.modality == "atac":
            out.peaks[:, e.index] = e.values.to(out.peaks.dtype)
        else:
            out.values[e.modality][:, e.index] = e.values.to(out.values[e.modality].dtype)
            out.bins[e.modality][:, e.index] = e.bins.to(out.bins[e.modality].dtype)
            out.mask[e.modality][:, e.index] = False
    return out


@dataclass
class PerturbedBatch:
    """Control and perturbed states of a batch of cells (see :func:`perturb_tokens`).

    Attributes
    ----------
    control, perturbed
        Modality -> ``(B, G)`` slot values after regeneration.
    embedding_control, embedding_perturbed
        ``(B, d)`` cell embeddings of the final states.
    """

    control: dict[str, torch.Tensor]
    perturbed: dict[str, torch.Tensor]
    embedding_control: torch.Tensor
    embedding_perturbed: torch.Tensor


@torch.no_grad()
def perturb_tokens(
    network: HoloCellNetwork,
    tokens: Tokens,
    edits: Sequence[SlotEdit],
    targets: Sequence[str],
    sources: Sequence[str],
    *,
    n_steps: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
) -> PerturbedBatch:
    """Regenerate ``targets`` with and without ``edits`` (same hidden slots, same seed).

    Modalities in neither ``sources`` nor ``targets`` are hidden. Edited RNA / protein anchors of a
    target modality are clamped in both runs: to the edited value in the perturbed run and to the
    cell's own value in the control run, so that the difference is the effect of the edit alone.
    """
    for m in network.modalities:
        if m not in sources and m not in targets:
            tokens = tokens.hide(m)
    keep = {}
    for e in edits:
        if e.modality in targets:
            kept = keep.get(e.modality, torch.zeros_like(network.exists(e.modality)))
            kept[e.index] = True
            keep[e.modality] = kept
    results = []
    for state in (tokens, apply_edits(tokens, edits)):
        gen = torch.Generator(device=state.present.device).manual_seed(seed)
        res = sample(network, state, targets, keep, n_steps=n_steps, temperature=temperature, generator=gen)
        results.append((res.values, network.embedding(res.tokens)))
    (c, zc), (p, zp) = results
    return PerturbedBatch({m: c[m] for m in targets}, {m: p[m] for m in targets}, zc, zp)


__all__ = ["PerturbedBatch", "SlotEdit", "apply_edits", "perturb_tokens"]
