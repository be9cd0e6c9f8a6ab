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
        Keep the token embeddings and read-in key/value projections between steps and refresh
        only the tokens the previous step committed (the only ones a step changes). Exact:
        ``False`` re-runs the whole network each step and gives the same result, slower.
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
        token_emb, context_kv = network.encoder_inputs(state)
    committed = None  # (B, k) anchors committed by the previous step, the same number in every cell
    for step in range(1, n_steps + 1):
        masked = state.mask[target][:, slots]  # (B, G'); every cell has the same number masked
        n_commit = int(masked[0].sum()) - int(round(len(slots) * (1 - step / n_steps)))
        if n_commit <= 0:
            continue
        # RNA / protein: decode only each cell's still-masked slots; ATAC: every anchor (peaks share them)
        pending = None if target == "atac" else slots[masked.nonzero()[:, 1].view(B, -1)]  # (B, n_masked)
        if cache:
            if committed is not None:  # refresh the tokens the last step committed, the only ones it changed
                fresh = network.embed_tokens(state, committed)  # (B, k, d)
                _scatter_rows(token_emb, committed, fresh)
                _scatter_rows(context_kv, network.n_context + committed, network.read_in.project_context(fresh))
            latents = network.encode(state, context_kv=context_kv)
            out = network.decode(state, latents, token_emb, [target], pending)
        else:
            out = network(state, targets=[target], anchors=pending)
        if target == "atac":
            p = torch.sigmoid(out["atac_logits"])  # (B, P)
            confidence = _anchor_mean(network, torch.maximum(p, 1 - p))[:, slots]
            if remasking == "random":
                confidence = torch.rand(confidence.shape, generator=generator, device=device)
            top = confidence.masked_fill(~masked, -1.0).topk(n_commit, dim=1).indices  # all still masked
            committed = slots[top]
            chosen = torch.zeros_like(state.mask[target]).scatter_(1, committed, True)
            peaks_chosen = chosen[:, network.peak_anchor]  # (B, P)
            draw = torch.bernoulli(p, generator=generator) if temperature > 0 else (p > 0.5).float()
            state.peaks = torch.where(peaks_chosen, draw, state.peaks)
            peak_prob = torch.where(peaks_chosen, p, peak_prob)
        else:
            logits = out[f"{target}_logits"]  # (B, n_masked, nb)
            confidence = torch.softmax(logits, dim=-1).max(-1).values
            if remasking == "random":
                confidence = torch.rand(confidence.shape, generator=generator, device=device)
            top = confidence.topk(n_commit, dim=1).indices  # (B, n_commit) positions in `pending`
            committed = pending.gather(1, top)
            if temperature > 0:
                flat = torch.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])
                bins = torch.multinomial(flat, 1, generator=generator).view(B, -1)
            else:
                bins = logits.argmax(-1)
            value = out[f"{target}_value"].gather(1, top)
            state.bins[target].scatter_(1, committed, bins.gather(1, top))
            state.values[target].scatter_(1, committed, value)
            token_values.scatter_(1, committed, value)
        state.mask[target] = state.mask[target].scatter(1, committed, False)
    if target == "atac":
        return Generated(None, peak_prob)
    return Generated(state.bins[target], token_values)


def _scatter_rows(dest: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``dest[b, index[b, j]] = rows[b, j]`` for ``(B, S, D)`` ``dest`` and ``(B, k)`` ``index``."""
    dest.scatter_(1, index.unsqueeze(-1).expand(-1, -1, dest.shape[-1]), rows)


def _anchor_mean(network: HoloCellNetwork, per_peak: torch.Tensor) -> torch.Tensor:
    """Mean of a ``(B, P)`` peak quantity over each anchor's peaks: ``(B, G)``."""
    G = network.config.n_anchors
    total = per_peak.new_zeros(per_peak.shape[0], G).index_add_(1, network.peak_anchor, per_peak)
    count = per_peak.new_zeros(G).index_add_(0, network.peak_anchor, torch.ones_like(per_peak[0]))
    return total / count.clamp(min=1)
