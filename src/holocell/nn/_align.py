"""Alignment terms of the training objective: they tie together the cell states a cell gets from different subsets
of its modalities (see :class:`~holocell.nn.ObjectiveConfig` ``align_mode``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..tokenize import Tokens
from ..vocab import MODALITIES

if TYPE_CHECKING:
    from ._diffusion import NoisedTokens
    from .transformer import HoloCellNetwork

ALIGN_MODES = ("contrastive", "distill", "joint_contrastive", "distill_cross")


def only(tokens: Tokens, keep: Sequence[str] | None, modalities: Sequence[str]) -> Tokens:
    """``tokens`` with every one of ``modalities`` not in ``keep`` hidden (``None`` keeps all)."""
    if keep is None:
        return tokens
    for m in modalities:
        if m not in keep:
            tokens = tokens.hide(m)
    return tokens


def alignment_loss(
    network: HoloCellNetwork, clean: Tokens, modalities: Sequence[str], temperature: float, mode: str = "contrastive"
) -> torch.Tensor:
    """Alignment of the single-modality embeddings of the cells measured with several modalities.

    ``"contrastive"``: InfoNCE between the two embeddings of each pair of modalities. ``"distill"``: the mean
    squared distance of each single-modality embedding to the cell's joint embedding, computed without gradient.
    """
    total = clean.library.new_zeros(())
    present = clean.present
    if mode == "distill":
        n_present = present[:, [MODALITIES.index(m) for m in modalities]].sum(1)
        multi = (n_present >= 2).nonzero().squeeze(1)
        if len(multi) == 0:
            return total
        cells = clean.select(multi)
        with torch.no_grad():
            joint = network.embedding(cells)
        for m in modalities:
            has = cells.present[:, MODALITIES.index(m)]
            if has.any():
                single = network.embedding(only(cells, [m], modalities))
                total = total + ((single - joint) ** 2).mean(1)[has].mean()
        return total
    if mode == "joint_contrastive":
        n_present = present[:, [MODALITIES.index(m) for m in modalities]].sum(1)
        multi = (n_present >= 2).nonzero().squeeze(1)
        if len(multi) < 2:
            return total
        cells = clean.select(multi)
        with torch.no_grad():
            joint = F.normalize(network.embedding(cells), dim=-1)
        for m in modalities:
            has = cells.present[:, MODALITIES.index(m)].nonzero().squeeze(1)
            if len(has) < 2:
                continue
            single = F.normalize(network.embedding(only(cells.select(has), [m], modalities)), dim=-1)
            logits = single @ joint[has].T / temperature
            total = total + F.cross_entropy(logits, torch.arange(len(has), device=logits.device))
        return total
    for i, a in enumerate(modalities):
        for b in modalities[i + 1 :]:
            both = (present[:, MODALITIES.index(a)] & present[:, MODALITIES.index(b)]).nonzero().squeeze(1)
            if len(both) < 2:
                continue
            cells = clean.select(both)
            z_a = F.normalize(network.embedding(only(cells, [a], modalities)), dim=-1)
            z_b = F.normalize(network.embedding(only(cells, [b], modalities)), dim=-1)
            logits = z_a @ z_b.T / temperature
            labels = torch.arange(len(both), device=logits.device)
            total = total + 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    return total


def cross_distill_loss(network: HoloCellNetwork, clean: Tokens, noised: NoisedTokens, qz_mu: torch.Tensor) -> torch.Tensor:
    """Squared distance of the cross-modal examples' cell states (``qz_mu``, inferred with one modality hidden) to
    the cells' joint states (all modalities visible, no gradient): the alignment at the price of one forward pass
    without gradient over those cells."""
    cross = torch.zeros_like(clean.present[:, 0])
    for target in (noised.cross_target or {}).values():
        cross |= target
    cells = cross.nonzero().squeeze(1)
    if len(cells) == 0:
        return qz_mu.new_zeros(())
    with torch.no_grad():
        joint = network.embedding(clean.select(cells))
    return ((qz_mu[cells] - joint) ** 2).mean()
