"""Iterative masked-diffusion generation with remasking: the one sampler of holocell.

The slots of the ``targets`` modalities start masked, except the ``keep`` anchors, whose slots stay
visible with their current values (clamped: an in-silico edit, or the cell's own value). Each of
``n_steps`` steps predicts every masked slot, commits a growing fraction of each target's slots
(linear schedule) and leaves the rest masked for the next step. Which slots are committed is chosen
by confidence (``"low_confidence"`` remasking: the least confident predictions are remasked) or at
random (``"random"``). Several targets (RNA and protein) are generated jointly: each step predicts
all of them from the same state.

The encoder inputs are cached between steps: a step changes only the tokens the previous step
committed, so only their embeddings and read-in key/values are recomputed
(:meth:`~holocell.nn.HoloCellNetwork.embed_at`), and RNA / protein are decoded only at each cell's
still-masked anchors. The tests compare the result with a plain reference that re-runs the whole
network every step.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from ..tokenize import Tokens
from ..vocab import MODALITIES
from ._noise import RowNoise, uniform
from .transformer import HoloCellNetwork


@dataclass
class Sampled:
    """Result of :func:`sample` for a batch of cells.

    Attributes
    ----------
    tokens
        The final state: every generated slot committed (``bins`` / ``values`` of RNA and protein,
        ``peaks`` of ATAC, thresholded or sampled), the targets' library sizes hidden.
    values
        Target -> for RNA / protein ``(B, G)`` the continuous value predicted when each slot was
        committed (kept anchors: their given value; anchors without the slot: 0); for ATAC
        ``(B, P)`` the accessibility probability of every peak (peaks of kept anchors: their value).
    """

    tokens: Tokens
    values: dict[str, torch.Tensor]


@dataclass
class Generated:
    """One generated modality (:meth:`~holocell.nn.HoloCellModule.generate`).

    Attributes
    ----------
    bins
        ``(B, G)`` committed value bins (RNA / protein; ``None`` for ATAC).
    values
        ``(B, G)`` continuous values (RNA / protein) or ``(B, P)`` peak probabilities (ATAC), as in
        :attr:`Sampled.values`.
    """

    bins: torch.Tensor | None
    values: torch.Tensor


@torch.no_grad()
def sample(
    network: HoloCellNetwork,
    tokens: Tokens,
    targets: Sequence[str],
    keep: Mapping[str, torch.Tensor] | None = None,
    *,
    n_steps: int = 8,
    remasking: Literal["low_confidence", "random"] = "low_confidence",
    temperature: float = 0.0,
    generator: torch.Generator | RowNoise | None = None,
    z: torch.Tensor | None = None,
) -> Sampled:
    """Generate the ``targets`` slots of every cell in ``tokens`` around the visible ones.

    Parameters
    ----------
    network
        Trained network (in eval mode).
    tokens
        Tokenized cells; not modified. Their own values of the generated slots are hidden first.
    targets
        Modalities to generate (``"rna"``, ``"protein"``, ``"atac"``), jointly.
    keep
        Modality -> ``(G,)`` bool anchors whose slots (ATAC: peaks) keep their current values and
        stay visible; the rest of the modality is generated.
    n_steps
        Denoising steps (1 = one-shot prediction).
    remasking
        Which predictions are kept masked for later steps.
    temperature
        0 takes the most likely bin (and thresholds peaks at 0.5); > 0 samples bins from the
        tempered distribution (and peaks from their Bernoulli) when they are committed.
    generator
        Random numbers for sampling and random remasking: a generator (one stream through the batch), a
        :class:`~holocell.nn.RowNoise` (one stream per cell, so that a cell's draws do not depend on the
        other cells of its batch), or ``None`` (torch's global stream).
    z
        ``(B, n_latent)`` cell state the denoiser is conditioned on at every step (models with a cell state);
        default: the posterior mean of the tokens visible at that step.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}.")
    if not 0 <= temperature < float("inf"):  # NaN fails too
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}.")
    targets = list(targets)
    bad = [m for m in targets if m not in network.modalities]
    if bad or len(set(targets)) != len(targets) or not targets:
        raise ValueError(f"targets must be distinct modalities of the network {network.modalities}, got {targets}.")
    keep = dict(keep or {})
    state, values, free = _initial_state(network, tokens, targets, keep)
    B = state.present.shape[0]
    token_emb, context_kv = network.encoder_inputs(state)
    committed = None  # (B, k) anchors committed by the previous step, the same number in every cell
    for step in range(1, n_steps + 1):
        todo = {}
        for m in targets:
            masked = state.mask[m][:, free[m]]  # (B, G_m); every cell has the same number masked
            n_commit = int(masked[0].sum()) - int(round(len(free[m]) * (1 - step / n_steps))) if B else 0
            if n_commit > 0:
                todo[m] = (masked, n_commit)
        if not todo:
            continue
        if committed is not None:  # refresh the tokens the last step committed, the only ones it changed
            _refresh(network, state, token_emb, context_kv, committed)
        latents = network.encode(state, context_kv=context_kv)
        chosen = []
        for m, (masked, n_commit) in todo.items():
            commit = _commit_peaks if m == "atac" else _commit_slots
            chosen.append(
                commit(network, state, values, latents, token_emb, m, free[m], masked, n_commit,
                       remasking=remasking, temperature=temperature, generator=generator, z=z)
            )
        committed = torch.cat(chosen, dim=1)
    return Sampled(state, values)


def _initial_state(
    network: HoloCellNetwork, tokens: Tokens, targets: list[str], keep: dict[str, torch.Tensor]
) -> tuple[Tokens, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The starting state (targets masked but for ``keep``; new tensors wherever the sampler writes), the
    value outputs, and each target's ``(G_m,)`` anchors to generate."""
    state = replace(
        tokens,
        bins=dict(tokens.bins),
        values=dict(tokens.values),
        mask=dict(tokens.mask),
        present=tokens.present.clone(),
        library=tokens.library.clone(),
    )
    values, free = {}, {}
    for m in targets:
        k = MODALITIES.index(m)
        state.present[:, k] = False
        state.library[:, k] = 0.0
        exists = network.exists(m)
        kept = keep.get(m, torch.zeros_like(exists)).to(exists.device) & exists
        state.mask[m] = (tokens.mask[m] & ~kept[None, :]) | (exists & ~kept)[None, :]
        free[m] = (exists & ~kept).nonzero().squeeze(1)
        if m == "atac":
            kept_peaks = kept[network.peak_anchor][None, :]
            state.peaks = torch.where(kept_peaks, tokens.peaks, 0.0)
            values[m] = torch.where(kept_peaks, tokens.peaks, 0.0)
        else:  # written in place below: copies, so that the caller's tokens stay untouched
            state.bins[m] = tokens.bins[m].clone()
            state.values[m] = tokens.values[m].clone()
            values[m] = torch.where(kept[None, :], tokens.values[m], 0.0)
    return state, values, free


def _refresh(
    network: HoloCellNetwork, state: Tokens, token_emb: torch.Tensor, context_kv: torch.Tensor, anchors: torch.Tensor
) -> None:
    """Recompute the cached embeddings and read-in key/values of each cell's ``(B, k)`` ``anchors``."""
    B, k = anchors.shape
    cells = torch.arange(B, device=anchors.device).repeat_interleave(k)
    fresh = network.embed_at(state, cells, anchors.reshape(-1)).view(B, k, -1)  # (B, k, d)
    _scatter_rows(token_emb, anchors, fresh)
    _scatter_rows(context_kv, network.n_context + anchors, network.read_in.project_context(fresh))


def _commit_slots(
    network, state, values, latents, token_emb, m, slots, masked, n_commit, *, remasking, temperature, generator, z=None
) -> torch.Tensor:
    """Decode each cell's still-masked ``m`` slots and commit the ``n_commit`` chosen ones; returns them ``(B, k)``."""
    B = masked.shape[0]
    pending = slots[masked.nonzero()[:, 1].view(B, -1)]  # (B, n_masked) anchors
    out = network.decode(state, latents, token_emb, [m], pending, z=z)
    logits = out[f"{m}_logits"]  # (B, n_masked, nb)
    confidence = torch.softmax(logits, dim=-1).max(-1).values
    if remasking == "random":
        confidence = uniform(generator, confidence.shape, logits.device)
    top = confidence.topk(n_commit, dim=1).indices  # (B, n_commit) positions in `pending`
    committed = pending.gather(1, top)
    if temperature > 0:  # inverse CDF of the tempered bins, one uniform number per slot
        cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
        u = uniform(generator, (*cdf.shape[:-1], 1), logits.device)
        bins = (cdf < u).sum(-1).clamp(max=logits.shape[-1] - 1)
    else:
        bins = logits.argmax(-1)
    value = out[f"{m}_value"].gather(1, top)
    state.bins[m].scatter_(1, committed, bins.gather(1, top))
    state.values[m].scatter_(1, committed, value)
    values[m].scatter_(1, committed, value)
    state.mask[m] = state.mask[m].scatter(1, committed, False)
    return committed


def _commit_peaks(
    network, state, values, latents, token_emb, m, slots, masked, n_commit, *, remasking, temperature, generator, z=None
) -> torch.Tensor:
    """Decode every peak, commit the peaks of the ``n_commit`` most confident masked anchors; returns them ``(B, k)``."""
    p = torch.sigmoid(network.decode(state, latents, token_emb, ["atac"], z=z)["atac_logits"])  # (B, P)
    confidence = _anchor_mean(network, torch.maximum(p, 1 - p))[:, slots]
    if remasking == "random":
        confidence = uniform(generator, confidence.shape, p.device)
    top = confidence.masked_fill(~masked, -1.0).topk(n_commit, dim=1).indices  # all still masked
    committed = slots[top]
    chosen = torch.zeros_like(state.mask[m]).scatter_(1, committed, True)
    peaks_chosen = chosen[:, network.peak_anchor]  # (B, P)
    draw = (uniform(generator, p.shape, p.device) < p).float() if temperature > 0 else (p > 0.5).float()
    state.peaks = torch.where(peaks_chosen, draw, state.peaks)
    values[m] = torch.where(peaks_chosen, p, values[m])
    state.mask[m] = state.mask[m].scatter(1, committed, False)
    return committed


def _scatter_rows(dest: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``dest[b, index[b, j]] = rows[b, j]`` for ``(B, S, D)`` ``dest`` and ``(B, k)`` ``index``."""
    dest.scatter_(1, index.unsqueeze(-1).expand(-1, -1, dest.shape[-1]), rows)


def _anchor_mean(network: HoloCellNetwork, per_peak: torch.Tensor) -> torch.Tensor:
    """Mean of a ``(B, P)`` peak quantity over each anchor's peaks: ``(B, G)``."""
    G = network.config.n_anchors
    total = per_peak.new_zeros(per_peak.shape[0], G).index_add_(1, network.peak_anchor, per_peak)
    count = per_peak.new_zeros(G).index_add_(0, network.peak_anchor, torch.ones_like(per_peak[0]))
    return total / count.clamp(min=1)


def generate_modality(network: HoloCellNetwork, tokens: Tokens, target: str, **kwargs) -> Generated:
    """Deprecated: use :func:`sample` (``sample(network, tokens, [target], ...)``)."""
    warnings.warn(
        "holocell.nn.generate_modality is deprecated; use holocell.nn.sample(network, tokens, [target], ...).",
        DeprecationWarning,
        stacklevel=2,
    )
    kwargs.pop("cache", None)  # the sampler is always cached now
    res = sample(network, tokens, [target], **kwargs)
    return Generated(None if target == "atac" else res.tokens.bins[target], res.values[target])


__all__ = ["Generated", "Sampled", "generate_modality", "sample"]
