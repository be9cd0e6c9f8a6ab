"""In-silico perturbation on tokens: edit some values, then regenerate other slots around them.

A perturbation sets chosen values (RNA / protein slots of some anchors, or ATAC peaks) and
regenerates the slots of the ``targets`` modalities by the same iterative denoising as
:func:`~holocell.nn.generate_modality`, except that the edited slots of a target modality stay
visible (clamped) while the rest of it is generated. Several targets (RNA and protein) are generated
jointly: every step predicts all of their masked slots and commits the most confident ones of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..tokenize import Tokens
from ..vocab import MODALITIES
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


@torch.no_grad()
def regenerate_slots(
    network: HoloCellNetwork,
    tokens: Tokens,
    targets: Sequence[str],
    keep: dict[str, torch.Tensor] | None = None,
    *,
    n_steps: int = 8,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tokens:
    """Regenerate the RNA / protein slots of ``targets``, keeping the ``keep`` anchors visible.

    Parameters
    ----------
    network
        Trained network in eval mode.
    tokens
        Cells to regenerate (edited or not); not modified.
    targets
        Slot modalities to regenerate (``"rna"``, ``"protein"``).
    keep
        Modality -> ``(G,)`` bool anchors whose slot keeps its current value and stays visible.
    n_steps
        Denoising steps; each commits ``1 / n_steps`` of every target's slots (low confidence
        remasking).
    temperature
        0 takes the most likely bin; > 0 samples bins from the tempered distribution.
    generator
        Random generator (used when ``temperature > 0``).

    Returns
    -------
    The final state: every target slot committed, ``values[m]`` holding the regression head's value
    at commit time (kept anchors: their given value); the targets' library sizes stay hidden.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    bad = [m for m in targets if m not in ("rna", "protein") or m not in network.modalities]
    if bad:
        raise ValueError(f"Cannot regenerate {bad}: only the model's RNA / protein slots can be regenerated.")
    keep = keep or {}
    state = tokens.clone()
    slots = {}
    for m in targets:
        exists = network.exists(m)
        kept = keep.get(m, torch.zeros_like(exists))
        k = MODALITIES.index(m)
        state.present[:, k] = False
        state.library[:, k] = 0.0
        free = exists & ~kept
        state.mask[m] = state.mask[m] & ~kept[None, :] | free[None, :]
        slots[m] = free.nonzero().squeeze(1)  # (G_m,) anchors to generate
    for step in range(1, n_steps + 1):
        todo = [m for m in targets if len(slots[m])]
        if not todo:
            break
        out = network(state, targets=todo)
        for m in todo:
            idx = slots[m]
            masked = state.mask[m][:, idx]  # (B, G_m)
            n_commit = int(masked[0].sum()) - int(round(len(idx) * (1 - step / n_steps)))
            if n_commit <= 0:
                continue
            logits = out[f"{m}_logits"][:, idx]  # (B, G_m, nb)
            confidence = torch.softmax(logits, dim=-1).max(-1).values.masked_fill(~masked, -1.0)
            chosen = torch.zeros_like(masked)
            chosen.scatter_(1, confidence.topk(n_commit, dim=1).indices, True)
            chosen &= masked
            if temperature > 0:
                flat = torch.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])
                bins = torch.multinomial(flat, 1, generator=generator).view(logits.shape[:2])
            else:
                bins = logits.argmax(-1)
            state.bins[m][:, idx] = torch.where(chosen, bins, state.bins[m][:, idx])
            state.values[m][:, idx] = torch.where(chosen, out[f"{m}_value"][:, idx], state.values[m][:, idx])
            state.mask[m][:, idx] = masked & ~chosen
    return state


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
        final = regenerate_slots(
            network, state, targets, keep, n_steps=n_steps, temperature=temperature, generator=gen
        )
        results.append((final, network.pool(network.encode(final))))
    (c, zc), (p, zp) = results
    return PerturbedBatch(
        {m: c.values[m] for m in targets}, {m: p.values[m] for m in targets}, zc, zp
    )


__all__ = ["PerturbedBatch", "SlotEdit", "apply_edits", "perturb_tokens", "regenerate_slots"]
