"""Iterative masked-diffusion generation of one modality, with remasking.

The target modality starts fully masked. Each of ``n_steps`` steps predicts every masked slot,
commits a growing fraction of them (linear schedule) and leaves the rest masked for the next
step. Which slots are committed is chosen by confidence (``"low_confidence"`` remasking: the
least confident predictions are remasked) or at random (``"random"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..tokenize import Tokens
from .transformer import HoloCellNetwork


@dataclass
class Generated:
    """Result of :func:`generate_modality` for a batch of cells.

    Attributes
    ----------
    bins
        ``(B, G)`` committed value bins (RNA / protein; ``None`` for ATAC).
    values
        ``(B, G)`` continuous value predicted when each slot was committed (RNA / protein), or
        ``(B, P)`` accessibility probability of every peak (ATAC).
    """

    bins: torch.Tensor | None
    values: torch.Tensor


@torch.no_grad()
def generate_modality(
    network: HoloCellNetwork,
    tokens: Tokens,
    target: str,
    *,
    n_steps: int = 8,
    remasking: Literal["low_confidence", "random"] = "low_confidence",
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    cache: bool = True,
) -> Generated:
    """Generate ``target`` for every cell in ``tokens`` from its other modalities.

    Parameters
    ----------
    network
        Trained network (in eval mode).
    tokens
        Tokenized cells; their own ``target`` values, if any, are hidden first.
    target
        Modality to generate.
    n_steps
        Denoising steps (1 = one-shot prediction).
    remasking
        Which predictions are kept masked for later steps.
    temperature
        0 takes the most likely bin (and thresholds peaks at 0.5); > 0 samples bins from the
        tempered distribution (and peaks from their Bernoulli) when they are committed.
    generator
        Random generator for sampling and random remasking.
    cache
        Keep the read-in key/value projections of the tokens between steps and refresh only
        the tokens of ``target`` anchors (the only ones a step changes). Exact: ``False`` re-runs
        the whole network each step and gives the same result, slower.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    state = tokens.hide(target)
    if target != "atac":  # written in place below: copy so that the caller's tokens stay untouched
        state.bins = {**state.bins, target: state.bins[target].clone()}
        state.values = {**state.values, target: state.values[target].clone()}
    exists = network.exists(target)
    slots = exists.nonzero().squeeze(1)  # (G',) anchors that carry a `target` slot
    B = state.present.shape[0]
    device = state.present.device
    if target == "atac":
        state.peaks = torch.zeros(B, network.peak_anchor.shape[0], device=device)
        peak_prob = torch.zeros_like(state.peaks)
    else:
        token_values = torch.zeros(B, exists.shape[0], device=device)
    token_emb = context_kv = None
    if cache:
        token_emb = network.embed_tokens(state)
        context_kv = network.context_kv(state, token_emb)
    for step in range(1, n_steps + 1):
        masked = state.mask[target][:, slots]  # (B, G')
        n_commit = int(masked[0].sum()) - int(round(len(slots) * (1 - step / n_steps)))
        if n_commit <= 0:
            continue
        decode_anchors = None if target == "atac" else slots
        if cache:
            if step > 1:  # refresh the tokens of `target` anchors, the only ones a step changes
                fresh = network.embed_tokens(state, slots)
                token_emb[:, slots] = fresh
                context_kv[:, network.n_context + slots] = network.read_in.project_context(fresh)
            latents = network.encode(state, context_kv=context_kv)
            out = network.decode(state, latents, token_emb, [target], decode_anchors)
        else:
            out = network(state, targets=[target], anchors=decode_anchors)
        if target == "atac":
            p = torch.sigmoid(out["atac_logits"])  # (B, P)
            confidence = _anchor_mean(network, torch.maximum(p, 1 - p))[:, slots]
        else:
            logits = out[f"{target}_logits"]  # (B, G', nb)
            confidence = torch.softmax(logits, dim=-1).max(-1).values
        if remasking == "random":
            confidence = torch.rand(confidence.shape, generator=generator, device=device)
        confidence = confidence.masked_fill(~masked, -1.0)
        chosen_sub = torch.zeros_like(masked)
        chosen_sub.scatter_(1, confidence.topk(n_commit, dim=1).indices, True)
        chosen_sub &= masked
        chosen = torch.zeros_like(state.mask[target])
        chosen[:, slots] = chosen_sub
        if target == "atac":
            peaks_chosen = chosen[:, network.peak_anchor]  # (B, P)
            draw = torch.bernoulli(p, generator=generator) if temperature > 0 else (p > 0.5).float()
            state.peaks = torch.where(peaks_chosen, draw, state.peaks)
            peak_prob = torch.where(peaks_chosen, p, peak_prob)
        else:
            if temperature > 0:
                flat = torch.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])
                bins = torch.multinomial(flat, 1, generator=generator).view(B, -1)
            else:
                bins = logits.argmax(-1)
            state.bins[target][:, slots] = torch.where(chosen_sub, bins, state.bins[target][:, slots])
            state.values[target][:, slots] = torch.where(
                chosen_sub, out[f"{target}_value"], state.values[target][:, slots]
            )
            token_values[:, slots] = torch.where(chosen_sub, out[f"{target}_value"], token_values[:, slots])
        state.mask[target] = state.mask[target] & ~chosen
    if target == "atac":
        return Generated(None, peak_prob)
    return Generated(state.bins[target], token_values)


def _anchor_mean(network: HoloCellNetwork, per_peak: torch.Tensor) -> torch.Tensor:
    """Mean of a ``(B, P)`` peak quantity over each anchor's peaks: ``(B, G)``."""
    G = network.config.n_anchors
    total = per_peak.new_zeros(per_peak.shape[0], G).index_add_(1, network.peak_anchor, per_peak)
    count = per_peak.new_zeros(G).index_add_(0, network.peak_anchor, torch.ones_like(per_peak[0]))
    return total / count.clamp(min=1)
