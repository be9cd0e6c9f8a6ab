"""Alignment terms of the training objective: they tie together the cell states a cell gets from different subsets
of its modalities (see :class:`~holocell.nn.ObjectiveConfig` ``align_mode``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import Tokens
from ..vocab import MODALITIES

if TYPE_CHECKING:
    from ._diffusion import NoisedTokens
    from .transformer import HoloCellNetwork

ALIGN_MODES = (
    "contrastive", "distill", "joint_contrastive", "distill_cross", "distill_cross_scaled", "distill_cross_symmetric",
    "distill_cross_nce", "distill_cross_nce_hidden",
)
CONTRAST_MODALITIES = ("rna", "protein")
"""``align_mode="distill_cross_nce_hidden"`` contrasts a cross-modal view with its hidden modality's own state only
when that modality is one of these and the view shows nothing else (RNA <-> protein): with an ATAC-only state as the
target, or an ATAC-only view, the term lost SNARE-seq2's cell state on the ablation's validation data, and with
ATAC in the view it mixed the simulator's batches less."""


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


class AlignmentScale(nn.Module):
    """A learnt noise scale of the cross-modal alignment, one per hidden modality (``align_mode=
    "distill_cross_scaled"``).

    The joint state is modelled as the cross-modal state plus Gaussian noise of variance ``sigma_m^2``, ``m`` the
    hidden modality: the term is ``d / (2 sigma_m^2) + log(sigma_m^2) / 2`` per cell, ``d`` the mean squared
    distance. At its optimum ``sigma_m^2`` is the mean distance, so a view that predicts the joint state well is
    pulled hard and one that cannot (ATAC alone, say) is pulled softly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(len(MODALITIES)))

    def forward(self, distance: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Mean term over cells of their ``distance`` ``(n,)`` with modality ``hidden`` ``(n,)`` (index) hidden."""
        log_var = self.log_var[hidden]
        return (0.5 * distance * torch.exp(-log_var) + 0.5 * log_var).mean()


def cross_distill_loss(
    network: HoloCellNetwork,
    clean: Tokens,
    noised: NoisedTokens,
    qz_mu: torch.Tensor,
    scale: AlignmentScale | None = None,
    symmetric: bool = False,
    contrast: tuple[float, float] | None = None,
    contrast_to_hidden: bool = False,
) -> torch.Tensor:
    """Squared distance of the cross-modal examples' cell states (``qz_mu``, inferred with one modality hidden) to
    the cells' joint states (all modalities visible, no gradient): the alignment at the price of one forward pass
    without gradient over those cells. With ``scale``, each cell's distance is weighed by its hidden modality's
    learnt noise scale (:class:`AlignmentScale`). ``symmetric``: the joint states are computed with gradient, so
    the pull goes both ways (MultiVI's penalty between its modalities' states): the joint state also moves towards
    what the cell's other modalities alone give, at the price of a backward pass over those cells. With
    ``contrast`` (temperature, weight), each cross-modal state must also pick out its own joint state among the
    mini-batch's (:func:`contrastive_part`, ``align_mode="distill_cross_nce"``), or with ``contrast_to_hidden``
    the state of its hidden modality alone (:func:`hidden_states`, ``"distill_cross_nce_hidden"``; only the views
    :data:`CONTRAST_MODALITIES` allows)."""
    cross = torch.zeros_like(clean.present[:, 0])
    hidden = torch.zeros(cross.shape, dtype=torch.long, device=cross.device)
    for m, target in (noised.cross_target or {}).items():
        hidden = torch.where(target & ~cross, MODALITIES.index(m), hidden)
        cross |= target
    cells = cross.nonzero().squeeze(1)
    if len(cells) == 0:
        return qz_mu.new_zeros(())
    with torch.set_grad_enabled(symmetric and torch.is_grad_enabled()):
        joint = network.embedding(clean.select(cells))
    distance = ((qz_mu[cells] - joint) ** 2).mean(1)
    loss = distance.mean() if scale is None else scale(distance, hidden[cells])
    if contrast is None:
        return loss
    if not contrast_to_hidden:
        return loss + contrastive_part(qz_mu[cells], joint, *contrast)
    views = cells[contrast_views(clean.present[cells], hidden[cells])]
    if len(views) < 2:
        return loss
    target = hidden_states(network, clean.select(views), hidden[views])
    return loss + contrastive_part(qz_mu[views], target, *contrast)


def contrast_views(present: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``(n,)`` bool: the cross-modal views ``"distill_cross_nce_hidden"`` contrasts. ``present`` ``(n, M)``: the
    cells' observed modalities; ``hidden`` ``(n,)``: index of the modality each view hides. A view qualifies when
    its hidden modality is one of :data:`CONTRAST_MODALITIES` and it shows another of them and nothing else."""
    allowed = torch.zeros(len(MODALITIES), dtype=torch.bool, device=present.device)
    allowed[[MODALITIES.index(m) for m in CONTRAST_MODALITIES]] = True
    shown = present.clone()
    shown[torch.arange(len(hidden), device=present.device), hidden] = False
    return allowed[hidden] & (shown & allowed).any(1) & ~(shown & ~allowed).any(1)


@torch.no_grad()
def hidden_states(network: HoloCellNetwork, cells: Tokens, hidden: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` each cell's state from its ``hidden`` modality alone (index per cell; no gradient): the target of
    ``"distill_cross_nce_hidden"``, which shares no input with the view it is matched to, so the view cannot pick
    it out by the noise of a modality both read."""
    out = None
    for k, m in enumerate(MODALITIES):
        rows = (hidden == k).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        state = network.embedding(only(cells.select(rows), [m], list(cells.mask)))
        out = state.new_zeros((len(hidden), state.shape[1])) if out is None else out
        out[rows] = state
    return out


def contrastive_part(cross: torch.Tensor, joint: torch.Tensor, temperature: float, weight: float = 1.0) -> torch.Tensor:
    """The contrastive term of the ``"distill_cross_nce"`` modes, added to the distillation: ``weight x tau / n``
    times the cross-entropy of picking each cell's own target (``joint``: its joint state, or its hidden modality's
    state for ``"distill_cross_nce_hidden"``) among the mini-batch's by squared distance ``D_ij`` (``tau`` =
    ``temperature`` x the median ``D_ij``, held fixed; ``n`` = size of the state). The distillation pulls a
    cross-modal state to its joint state; this term asks it to be nearer its own target than its neighbours', so it
    cannot settle at the centre of its cluster (the conditional mean a regression alone learns).
    Its gradient per distance is at most ``weight / n`` (the distillation's is ``1 / n``), whatever the states'
    scale; 0 for fewer than two cells."""
    if len(cross) < 2 or weight == 0:
        return cross.new_zeros(())
    squared = (cross[:, None, :] - joint[None, :, :]).pow(2).sum(-1)  # (c, c): D_ij (cdist's gradient is NaN at 0)
    tau = (temperature * squared.detach().median()).clamp(min=1e-8)
    labels = torch.arange(len(cross), device=cross.device)
    return weight * tau / cross.shape[1] * F.cross_entropy(-squared / tau, labels)
