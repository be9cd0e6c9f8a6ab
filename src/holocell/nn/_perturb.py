"""In-silico perturbation on tokens: edit some values, then regenerate other slots around them.

A perturbation sets chosen values (RNA / protein slots of some anchors, or ATAC peaks) and regenerates the
slots of the ``targets`` modalities with the sampler (:func:`~holocell.nn.sample`), keeping the edited slots
of a target modality visible (its ``keep`` mask) while the rest of it is generated.

Two flows:

- :func:`perturb_staged` (the default of :meth:`~holocell.HoloCell.predict_perturbation`) follows the
  information flow CRE accessibility -> RNA -> protein: RNA is regenerated from the (edited) chromatin, then
  protein from that RNA. With a cell state, each stage adds the shift of the likelihood mean decoded from the
  cell state of the edited cell (its trans effect) to the denoiser's shift (its cis effect, read through the
  gene-anchored tokens).
- :func:`perturb_tokens` regenerates every target jointly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..tokenize import Tokens
from ..tokenize._values import CONTINUOUS
from ._align import only
from ._count_decoder import state_mean
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
    tokens = only(tokens, [*sources, *targets], network.modalities)
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


def _state_mean(network: HoloCellNetwork, tokens: Tokens, target: str) -> torch.Tensor:
    """``(B, G)`` slot values of the count decoder's mean of ``target`` from the cell state of ``tokens``."""
    return _to_slots(network, target, CONTINUOUS[target](state_mean(network, tokens, target)))


def _to_slots(network: HoloCellNetwork, modality: str, features: torch.Tensor) -> torch.Tensor:
    """``(B, F)`` feature values -> ``(B, G)`` slot values (mean over the features of an anchor; 0 elsewhere)."""
    anchor = getattr(network.counts, f"{modality}_feature_anchor")
    G = network.config.n_anchors
    total = features.new_zeros(features.shape[0], G).index_add_(1, anchor, features)
    count = features.new_zeros(G).index_add_(0, anchor, torch.ones_like(features[0]))
    return total / count.clamp(min=1)


@torch.no_grad()
def perturb_staged(
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
    """Regenerate ``targets`` with and without ``edits``, stage after stage: RNA from the chromatin, then protein
    from that RNA.

    Stage RNA (when ``"rna"`` is a target): the RNA is denoised from the ``sources`` (ATAC, with its edited
    peaks) and the edited genes, which stay clamped; the rest of the cell's RNA is hidden. With a cell state, the
    perturbed run adds the shift of the RNA likelihood mean decoded from the state of the whole observed cell
    (sources and its own RNA, edited vs not): the denoiser carries the cis effects, the state the trans ones.

    Stage protein (when ``"protein"`` is a target): the protein is denoised from the RNA alone (the RNA stage's
    output; when RNA is not a target, the cell's own RNA with the edits if ``"rna"`` is among the ``sources``, else
    the edited genes alone), and, with a cell state, the perturbed run adds the shift of the protein mean decoded
    from the state of that RNA. Other sources do not reach the protein stage.

    The embeddings are those of the final states: the RNA stage's (its sources and generated RNA) when RNA is a
    target, else the protein stage's (the RNA it read and the generated protein).

    Control and perturbed runs share the hidden slots and the random seed, so the difference is the edit's.
    """
    targets = list(targets)
    states = {"control": tokens, "perturbed": apply_edits(tokens, edits)}
    with_state = network.config.cell_state
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in states}
    rna_view = dict(states)  # what the protein stage reads
    if "rna" in targets:
        conds = {n: only(t, [*sources, "rna"], network.modalities) for n, t in states.items()}
        shift = 0.0
        if with_state:  # trans effect: the state of the whole observed cell, edited vs not
            shift = _state_mean(network, conds["perturbed"], "rna") - _state_mean(network, conds["control"], "rna")
        keep = {"rna": _edit_mask(network, edits, "rna")}
        for name, cond in conds.items():
            gen = torch.Generator(device=cond.present.device).manual_seed(seed)
            res = sample(network, cond, ["rna"], keep, n_steps=n_steps, temperature=temperature, generator=gen)
            values, bins = res.values["rna"].clone(), res.tokens.bins["rna"].clone()
            if name == "perturbed":  # the edited (kept) slots stay at their set values
                values = values + torch.where(keep["rna"], 0.0, shift)
            out[name]["rna"] = values
            view = res.tokens.clone()
            view.values["rna"], view.bins["rna"] = values.to(view.values["rna"].dtype), bins
            rna_view[name] = view
    final = {}  # the protein stage's tokens: what it read and the protein it generated
    if "protein" in targets:
        views = {n: only(t, ["rna"], network.modalities) for n, t in rna_view.items()}
        if "rna" not in targets and "rna" not in sources:  # the edited genes alone: the rest of the RNA hidden
            shown = _edit_mask(network, edits, "rna")
            views = {n: _show_only(v, "rna", shown) for n, v in views.items()}
        shift = 0.0
        if with_state:
            shift = _state_mean(network, views["perturbed"], "protein") - _state_mean(network, views["control"], "protein")
        edited = _edit_mask(network, edits, "protein")
        for name, view in views.items():
            gen = torch.Generator(device=view.present.device).manual_seed(seed + 1)
            res = sample(network, view, ["protein"], {"protein": edited} if edited.any() else None, n_steps=n_steps,
                         temperature=temperature, generator=gen)
            values = res.values["protein"].clone()
            if name == "perturbed":
                values = values + torch.where(edited, 0.0, shift)
            out[name]["protein"] = values
            final[name] = res.tokens.clone()
            final[name].values["protein"] = values.to(final[name].values["protein"].dtype)
    z = {n: network.embedding(rna_view[n] if "rna" in targets else final[n]) for n in states}
    return PerturbedBatch(out["control"], out["perturbed"], z["control"], z["perturbed"])


def _show_only(tokens: Tokens, modality: str, shown: torch.Tensor) -> Tokens:
    """Copy of ``tokens`` with every slot of ``modality`` hidden but the ``shown`` anchors ``(G,)``."""
    out = tokens.clone()
    out.mask[modality] = (~shown)[None, :].expand_as(out.mask[modality]).clone()
    return out


def _edit_mask(network: HoloCellNetwork, edits: Sequence[SlotEdit], modality: str) -> torch.Tensor:
    keep = torch.zeros_like(network.exists(modality))
    for e in edits:
        if e.modality == modality:
            keep[e.index] = True
    return keep


__all__ = ["PerturbedBatch", "SlotEdit", "apply_edits", "perturb_staged", "perturb_tokens"]
