"""Building blocks of :class:`~holocell.nn.HoloCellNetwork`: attention, MLP, read-out and value-slot embedding.

Shapes: ``B`` cells, ``G`` gene anchors, ``L`` latents, ``d`` model width, ``h`` heads, ``hs = d / h``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_weights(module: nn.Module) -> None:
    """Small normal initial weights (std 0.02) for linear and embedding layers, zero biases and padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()


class MLP(nn.Module):
    """Two-layer GELU feed-forward block."""

    def __init__(self, d: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d, ratio * d)
        self.proj = nn.Linear(ratio * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


def split_kv(kv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``2 x (B, h, S, hs)`` of key/value projections ``kv`` ``(B, S, 2d)``, as views.

    Split along the key/value axis first, then move the heads: the backward then stacks the two gradients straight
    into ``kv``'s token-major layout (splitting after a permute made it copy them back, 16 ms per PBMC step).
    """
    B, S, two_d = kv.shape
    k, v = kv.view(B, S, 2, n_heads, two_d // (2 * n_heads)).unbind(2)
    return k.transpose(1, 2), v.transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over a context (self-attention when ``context is x``)."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        assert d % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        kv: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` over ``context``, or over its precomputed projections ``kv = self.kv(context)``;
        ``key_mask`` ``(B, S)``: the context tokens that may be attended to (default all)."""
        B, T, d = x.shape
        kv = self.kv(context) if kv is None else kv  # (B, S, 2d)
        h = self.n_heads
        q = self.q(x).view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, hs)
        k, v = split_kv(kv, h)  # 2 x (B, h, S, hs)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class ReadOut(nn.Module):
    """Each anchor reads the cell's latents: queries come from the anchor identity alone.

    The query projection is computed once per anchor (``(G, d)``), not per cell, and there is no
    per-token MLP, so decoding costs little more than the attention itself. The token's own
    embedding (its other observed slots) is added back before the output norm.
    """

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_q = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.ln_out = nn.LayerNorm(d)

    def forward(
        self,
        anchors: torch.Tensor,
        latents: torch.Tensor,
        token_emb: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Read out ``(B, G', d)`` states of the anchors whose embeddings ``anchors`` ``(G', d)`` are given,
        or, with ``index`` ``(B, k)``, of each cell's own ``k`` anchors (``anchors`` then holds all ``G``;
        ``token_emb`` is ``(B, G', d)`` or ``(B, k, d)``)."""
        B, L, d = latents.shape
        h = self.n_heads
        q = self.q(self.ln_q(anchors))  # per anchor, not per cell
        if index is None:
            q = q.view(-1, h, d // h).transpose(0, 1).unsqueeze(0)  # (1, h, G', hs), broadcast over cells
        else:
            q = q[index].view(B, index.shape[1], h, d // h).transpose(1, 2)  # (B, h, k, hs)
        k, v = split_kv(self.kv(latents), h)  # 2 x (B, h, L, hs)
        # Plain softmax attention: with few keys (the latents) and many queries (the anchors) it is faster than
        # fused SDPA on a CPU (forward + backward), and the (B, h, G', L) scores are smaller than the outputs.
        y = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1) @ v  # (B, h, G', hs)
        return self.ln_out(token_emb + self.out(y.transpose(1, 2).reshape(B, -1, d)))


class Block(nn.Module):
    """Pre-LN block: (cross- or self-) attention then MLP, both residual."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d) if cross else None
        self.attn = Attention(d, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = MLP(d, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_kv: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``context_kv`` (cross blocks): the context's key/value projections from :meth:`project_context`;
        ``key_mask`` ``(B, S)``: the context tokens that may be attended to."""
        q = self.ln_q(x)
        if context_kv is None:
            context_kv = self.project_context(q if self.ln_kv is None else context)
        x = x + self.attn(q, None, context_kv, key_mask)
        return x + self.mlp(self.ln_mlp(x))

    def project_context(self, context: torch.Tensor) -> torch.Tensor:
        """Key/value projections ``(B, S, 2d)`` of a context; per token, so they can be cached and
        updated token by token."""
        return self.attn.kv(context if self.ln_kv is None else self.ln_kv(context))


class SlotEmbedding(nn.Module):
    """Embedding of one value slot: bin embedding + the continuous value along a direction of its own
    anchor.

    The value direction is shared plus anchor-specific (``value + anchor_value[g]``): without the
    anchor-specific part, identity and value would only add up, and pooling tokens would lose which
    genes are high. Two extra rows of the bin table stand for [MASK] and for "this anchor has no such
    slot" (kept at zero), so masking costs an index change, not a tensor blend.
    """

    def __init__(self, n_bins: int, d: int, n_anchors: int) -> None:
        super().__init__()
        self.mask_id, self.none_id = n_bins, n_bins + 1
        self.n_ids = n_bins + 2
        self.bin = nn.Embedding(n_bins + 2, d, padding_idx=self.none_id)
        self.value = nn.Parameter(torch.zeros(d))
        self.anchor_value = nn.Parameter(torch.zeros(n_anchors, d))

    def ids(self, bins: torch.Tensor, mask: torch.Tensor, exists: torch.Tensor) -> torch.Tensor:
        """Rows of the bin table: the bin, [MASK] where hidden, "no slot" where the anchor has none."""
        return torch.where(exists, torch.where(mask, self.mask_id, bins), self.none_id)

    def table(self) -> torch.Tensor:
        """``(n_bins + 2, d)`` bin table with the "no slot" row held at zero (no gradient reaches it)."""
        return self.bin.weight.index_fill(0, torch.tensor(self.none_id, device=self.bin.weight.device), 0.0)

    def scaled_values(self, values: torch.Tensor, mask: torch.Tensor, exists: torch.Tensor) -> torch.Tensor:
        """``(B, G')`` continuous values, 0 where hidden or where the anchor has no such slot."""
        return values.masked_fill(mask | ~exists, 0.0)

    def carries_value(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Slots with a value: a non-zero bin (not [MASK] / "no slot") or a non-zero continuous value."""
        return ((ids != 0) & (ids != self.mask_id) & (ids != self.none_id)) | (values != 0)

    def direction(self, anchors: torch.Tensor) -> torch.Tensor:
        """Value direction of the given anchors (long tensor of any shape ``S``): ``(*S, d)``."""
        return self.value + F.embedding(anchors, self.anchor_value)


class PeakEmbedding(nn.Module):
    """An input vector of each peak's own, so that peaks in one distance bucket of an anchor can differ.

    An anchor token receives the sum of the vectors of its open peaks, divided by the square root of their
    number. The vectors start at zero: a fresh model reads only the bucket-pooled positions, as one without them.
    """

    def __init__(self, n_peaks: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_peaks, d))

    def forward(
        self, peaks: torch.Tensor, peak_anchor: torch.Tensor, n_anchors: int, b: torch.Tensor, g: torch.Tensor
    ) -> torch.Tensor:
        """``(N, d)`` pooled peak vectors of the (cell, anchor) pairs ``(b, g)`` (two ``(N,)`` long tensors; a pair
        may repeat), read from the ``(B, P)`` accessibility ``peaks``; only the open peaks are touched.

        One :func:`~torch.nn.functional.embedding_bag` sums the vectors, a bag per requested pair: on 50k peaks it
        was 3x faster than an ``index_add`` of gathered rows (forward and backward, CPU).
        """
        cell, peak = peaks.nonzero(as_tuple=True)
        ranked, pair_bag = torch.unique(b * n_anchors + g, return_inverse=True)  # one bag per distinct pair
        if len(ranked) == 0:
            return self.weight.new_zeros(0, self.weight.shape[1])
        key = cell * n_anchors + peak_anchor[peak]
        bag = torch.searchsorted(ranked, key).clamp(max=len(ranked) - 1)
        hit = ranked[bag] == key
        bag, cell, peak = bag[hit], cell[hit], peak[hit]
        by_bag = torch.argsort(bag, stable=True)
        bag, cell, peak = bag[by_bag], cell[by_bag], peak[by_bag]
        weight = peaks[cell, peak].to(self.weight.dtype)
        offsets = torch.searchsorted(bag, torch.arange(len(ranked), device=bag.device))
        pooled = F.embedding_bag(peak, self.weight, offsets, mode="sum", per_sample_weights=weight)
        n_open = torch.bincount(bag, weights=weight, minlength=len(ranked)).to(pooled.dtype)
        pooled = pooled / n_open.clamp(min=1.0).sqrt().unsqueeze(-1)
        return pooled[pair_bag]
