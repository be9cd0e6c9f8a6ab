"""The holocell network in one file: token embedding, latent transformer, per-slot heads.

Shapes: ``B`` cells, ``G`` gene anchors, ``P`` peaks, ``L`` latents, ``d`` model width,
``K`` peak-position buckets, ``nb`` value bins.

Cells are sequences of gene-anchor tokens. Tokens are read into a few dozen latent vectors by
cross-attention (Perceiver-style, so cost grows linearly with the number of tokens), the latents
are mixed by a bidirectional pre-LN transformer, and every anchor then reads the latents back
(one cross-attention with anchor-identity queries) to predict its hidden slots. Attention is
:func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import Tokens
from ..vocab import MODALITIES, N_BUCKETS


@dataclass
class NetworkConfig:
    """Hyper-parameters of :class:`HoloCellNetwork`; stored in checkpoints as JSON."""

    n_anchors: int
    n_bins: int = 16  # value bins incl. the zero bin
    n_batches: int = 1  # one more embedding is kept for batches unseen in training
    n_species: int = 2
    n_buckets: int = N_BUCKETS  # peak distance-to-TSS buckets
    d_model: int = 128
    n_layers: int = 2  # transformer blocks over the latents
    n_heads: int = 4
    n_latents: int = 32
    mlp_ratio: int = 4
    dropout: float = 0.0
    read_in_tokens: str = "all"  # "all" anchor tokens, or only the "values": tokens that carry a value

    def __post_init__(self) -> None:
        if self.read_in_tokens not in ("all", "values"):
            raise ValueError(f"read_in_tokens must be 'all' or 'values', got {self.read_in_tokens!r}.")

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


class MLP(nn.Module):
    """Two-layer GELU feed-forward block."""

    def __init__(self, d: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d, ratio * d)
        self.proj = nn.Linear(ratio * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


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
        S = kv.shape[1]
        h = self.n_heads
        q = self.q(x).view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, hs)
        k, v = kv.view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, S, hs)
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
            q = q.view(-1, h, d // h).transpose(0, 1).unsqueeze(0).expand(B, -1, -1, -1)  # (B, h, G', hs)
        else:
            q = q[index].view(B, index.shape[1], h, d // h).transpose(1, 2)  # (B, h, k, hs)
        k, v = self.kv(latents).view(B, L, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, L, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, G', hs)
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

    def direction(self, anchors: torch.Tensor | slice) -> torch.Tensor:
        """Value direction of the given anchors: ``(G', d)`` or ``(B, G', d)``."""
        return self.value + self.anchor_value[anchors]


class HoloCellNetwork(nn.Module):
    """Gene-anchored multi-omics transformer.

    Parameters
    ----------
    config
        Sizes, see :class:`NetworkConfig`.
    slot_exists
        Modality -> ``(G,)`` bool, anchors with a slot for that modality.
    peak_anchor, peak_bucket
        ``(P,)`` anchor and distance bucket of every peak (``None`` without ATAC).
    priors
        Prior name -> ``(G, k)`` prior-knowledge matrix (values and a known flag). Each has its own
        linear projection added to the anchor identity embedding through a learnable gate that
        starts at 0, so training begins from the plain model and opens a prior only where it helps.
    """

    def __init__(
        self,
        config: NetworkConfig,
        slot_exists: dict[str, torch.Tensor],
        peak_anchor: torch.Tensor | None = None,
        peak_bucket: torch.Tensor | None = None,
        priors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.config = c = config
        d = c.d_model
        self.prior_names = list(priors or {})
        self.modalities = [m for m in MODALITIES if m in slot_exists]
        for m in self.modalities:
            self.register_buffer(f"{m}_exists", slot_exists[m].bool().clone())
        self.anchor = nn.Embedding(c.n_anchors, d)
        self.slots = nn.ModuleDict(
            {m: SlotEmbedding(c.n_bins, d, c.n_anchors) for m in self.modalities if m != "atac"}
        )
        for slot in self.slots.values():
            nn.init.normal_(slot.value, std=0.02)
            nn.init.normal_(slot.anchor_value, std=0.02)
        self.heads = nn.ModuleDict({m: nn.Linear(d, c.n_bins + 1) for m in self.modalities if m != "atac"})
        if "atac" in self.modalities:
            assert peak_anchor is not None and peak_bucket is not None
            self.register_buffer("peak_anchor", peak_anchor.long().clone())
            self.register_buffer("peak_bucket", peak_bucket.long().clone())
            self.peak_position = nn.Parameter(torch.randn(c.n_buckets, d) * 0.02)  # encoder side
            self.atac_mask = nn.Parameter(torch.zeros(d))
            self.atac_head = nn.Linear(d, c.n_buckets)  # decoder: a logit per (anchor, bucket)
        # prefix context: batch, species, library size of each modality
        self.batch = nn.Embedding(c.n_batches + 1, d)
        self.species = nn.Embedding(c.n_species, d)
        self.library = nn.Linear(1, d)
        self.library_modality = nn.Parameter(torch.randn(len(MODALITIES), d) * 0.02)
        self.library_missing = nn.Parameter(torch.zeros(len(MODALITIES), d))
        self.latents = nn.Parameter(torch.randn(c.n_latents, d) * 0.02)
        self.read_in = Block(d, c.n_heads, c.mlp_ratio, c.dropout, cross=True)
        self.blocks = nn.ModuleList(
            Block(d, c.n_heads, c.mlp_ratio, c.dropout, cross=False) for _ in range(c.n_layers)
        )
        self.ln_latent = nn.LayerNorm(d)
        self.read_out = ReadOut(d, c.n_heads)
        if self.prior_names:  # anchor embedding = identity + sum_p gate_p * W_p prior_p
            for name, matrix in priors.items():
                self.register_buffer(f"prior_{name}", torch.as_tensor(matrix, dtype=torch.float32).clone())
            self.prior_proj = nn.ModuleDict(
                {name: nn.Linear(m.shape[1], d, bias=False) for name, m in priors.items()}
            )
            self.prior_gate = nn.Parameter(torch.zeros(len(self.prior_names)))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def exists(self, modality: str) -> torch.Tensor:
        """``(G,)`` anchors with a slot for ``modality``."""
        return getattr(self, f"{modality}_exists")

    def anchor_embedding(self) -> torch.Tensor:
        """``(G, d)`` anchor identity embeddings, with the gated prior projections added."""
        emb = self.anchor.weight
        for i, name in enumerate(self.prior_names):
            emb = emb + self.prior_gate[i] * self.prior_proj[name](getattr(self, f"prior_{name}"))
        return emb

    # ----------------------------------------------------------------------------- encoder
    def embed_tokens(self, tokens: Tokens, anchors: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, G, d)`` token embeddings: anchor identity + every slot's value or [MASK].

        With ``anchors``, only those anchors' tokens: ``(G',)`` indices give ``(B, G', d)`` (generation
        refreshes the tokens whose slots it has just committed), ``(B, k)`` indices give each cell's own
        ``k`` anchors, ``(B, k, d)``.

        All slot bins of a token are looked up in one combined table (``n_ids ** n_slots`` rows, built
        per call) and the continuous values are added in place, so the ``(B, G, d)`` tensor is written a
        few times rather than once per term: on a CPU this per-token work is most of the cost of encoding.
        """
        per_cell = anchors is not None and anchors.dim() == 2
        idx = slice(None) if anchors is None else anchors

        def columns(t: torch.Tensor) -> torch.Tensor:  # (B, G) -> the requested anchors' columns
            return torch.gather(t, 1, anchors) if per_cell else t[:, idx]

        def slot_exists(m: str) -> torch.Tensor:  # (B, k) or (1, G')
            exists = self.exists(m)[idx]
            return exists if per_cell else exists[None, :]

        ids, table = None, None  # combined row of every slot's bin, and the combined table
        for m, slot in self.slots.items():
            slot_ids = slot.ids(columns(tokens.bins[m]), columns(tokens.mask[m]), slot_exists(m))
            if ids is None:
                ids, table = slot_ids, slot.table()
            else:
                ids = ids * slot.n_ids + slot_ids
                table = (table[:, None, :] + slot.table()[None, :, :]).flatten(0, 1)
        anchor_emb = self.anchor_embedding()[idx]
        if ids is None:  # no RNA / protein slot: an ATAC-only model
            x = anchor_emb.expand(tokens.present.shape[0], *anchor_emb.shape[-2:]).clone()
        else:
            x = F.embedding(ids, table).add_(anchor_emb)
        for m, slot in self.slots.items():
            values = slot.scaled_values(columns(tokens.values[m]), columns(tokens.mask[m]), slot_exists(m))
            x.addcmul_(values.unsqueeze(-1), slot.direction(idx))
        if "atac" in self.modalities:
            peaks = self._embed_peaks(tokens)
            x.add_(torch.gather(peaks, 1, anchors.unsqueeze(-1).expand(-1, -1, peaks.shape[-1])) if per_cell
                   else peaks[:, idx])
        return x

    def _peaks_per_bucket(self, tokens: Tokens) -> torch.Tensor:
        """``(B, G, K)`` number of open peaks of each anchor in each distance bucket."""
        G, K = self.config.n_anchors, self.config.n_buckets
        flat = self.peak_anchor * K + self.peak_bucket  # (P,)
        per_bucket = tokens.peaks.new_zeros(tokens.peaks.shape[0], G * K)
        return per_bucket.index_add_(1, flat, tokens.peaks).view(-1, G, K)

    def _embed_peaks(self, tokens: Tokens) -> torch.Tensor:
        """Pool each anchor's accessible peaks with their position embedding: ``(B, G, d)``."""
        pooled = torch.log1p(self._peaks_per_bucket(tokens)) @ self.peak_position  # (B, G, d)
        masked = tokens.mask["atac"].unsqueeze(-1)
        return torch.where(masked, self.atac_mask, pooled) * self.exists("atac")[None, :, None]

    def context_tokens(self, tokens: Tokens) -> torch.Tensor:
        """``(B, 2 + 3, d)`` prefix tokens: batch, species, library size per modality."""
        batch = self.batch(tokens.batch.clamp(max=self.config.n_batches))
        species = self.species(tokens.species)
        lib = self.library(tokens.library.unsqueeze(-1) / 10.0) + self.library_modality  # (B, 3, d)
        lib = torch.where(tokens.present.unsqueeze(-1), lib, self.library_missing)
        return torch.cat([batch[:, None], species[:, None], lib], dim=1)

    def context_kv(self, tokens: Tokens, token_emb: torch.Tensor) -> torch.Tensor:
        """Read-in key/value projections ``(B, C + G, 2d)`` of the prefix and the anchor tokens.

        The projection is per token, so a caller that changes a few tokens (iterative generation)
        can refresh just their rows: anchor ``g`` is row ``C + g``, ``C = n_context``.
        """
        return self.read_in.project_context(torch.cat([self.context_tokens(tokens), token_emb], dim=1))

    def encoder_inputs(
        self, tokens: Tokens, with_embeddings: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Token embeddings ``(B, G, d)`` and read-in key/values ``(B, C + G, 2d)`` of a batch.

        The same as :meth:`embed_tokens` followed by :meth:`context_kv` (up to float rounding), but
        cheaper. A token whose slots are all zero, [MASK] or absent, and whose anchor has no open peak,
        is the same in every cell that holds it. The embeddings and key/value projections of these
        *constant* tokens (``3`` states per value slot, ``2`` for ATAC, per anchor) are computed once per
        call and looked up; only the tokens that carry a value (expressed genes, measured proteins,
        anchors with open peaks) go through the embedding, layer norm and projection. With
        ``with_embeddings=False`` the embeddings are not returned (``None``): encoding needs only the
        key/values.
        """
        B, G, C = tokens.present.shape[0], self.config.n_anchors, self.n_context
        device = tokens.present.device
        anchor_emb = self.anchor_embedding()  # (G, d)
        slot_inputs, varying, per_bucket = self._token_values(tokens)
        state = torch.zeros(B, G, dtype=torch.long, device=device)  # constant state of each token
        state_emb = anchor_emb.new_zeros(1, anchor_emb.shape[1])  # (n_states, d) slot part of each state
        for m, slot in self.slots.items():
            ids, _ = slot_inputs[m]
            code = (ids == slot.mask_id).long() + 2 * (ids == slot.none_id).long()  # 0 zero, 1 mask, 2 none
            state = state + code * len(state_emb)
            rows = slot.table()[[0, slot.mask_id, slot.none_id]]  # (3, d)
            state_emb = (rows[:, None, :] + state_emb[None, :, :]).flatten(0, 1)
        if "atac" in self.modalities:
            masked = tokens.mask["atac"] & self.exists("atac")[None, :]
            state = state + masked.long() * len(state_emb)
            rows = torch.stack([torch.zeros_like(self.atac_mask), self.atac_mask])
            state_emb = (rows[:, None, :] + state_emb[None, :, :]).flatten(0, 1)
        n_states = len(state_emb)
        if B < n_states:  # a tiny batch: computing every token directly is cheaper than the tables
            token_emb = self.embed_tokens(tokens)
            return token_emb, self.context_kv(tokens, token_emb)

        const_emb = (anchor_emb[:, None, :] + state_emb[None, :, :]).flatten(0, 1)  # (G * n_states, d)
        const_kv = self.read_in.project_context(const_emb)
        lookup = torch.arange(G, device=device) * n_states + state  # (B, G) row of each constant token
        b, g = varying.nonzero(as_tuple=True)
        # (N, d) the tokens that carry a value, computed in full. Rows are gathered with F.embedding,
        # whose backward is deterministic on CPU (plain indexing accumulates in a thread-dependent order).
        emb_var = F.embedding(g, anchor_emb)
        for m, slot in self.slots.items():
            ids, values = slot_inputs[m]
            emb_var = emb_var + F.embedding(ids[b, g], slot.table())
            emb_var = emb_var + values[b, g].unsqueeze(-1) * (slot.value + F.embedding(g, slot.anchor_value))
        if "atac" in self.modalities:  # (anchors without peaks pool nothing: per_bucket is 0 there)
            pooled = torch.log1p(per_bucket[b, g]) @ self.peak_position
            emb_var = emb_var + torch.where(masked[b, g].unsqueeze(-1), self.atac_mask, pooled)
        kv_rows = torch.cat([const_kv, const_kv.new_zeros(1, const_kv.shape[1])])  # last: prefix placeholder
        placeholder = torch.full((B, C), len(const_kv), dtype=torch.long, device=device)
        kv = F.embedding(torch.cat([placeholder, lookup], dim=1), kv_rows)  # (B, C + G, 2d)
        kv[:, :C] = self.read_in.project_context(self.context_tokens(tokens))
        kv.index_put_((b, g + C), self.read_in.project_context(emb_var))
        token_emb = None
        if with_embeddings:
            token_emb = F.embedding(lookup, const_emb)
            token_emb.index_put_((b, g), emb_var)
        return token_emb, kv

    def carries_value(self, tokens: Tokens) -> torch.Tensor:
        """``(B, G)`` bool: tokens with a value in some slot (a non-zero bin or continuous value, or an
        open peak that is not masked); the others are zero, [MASK] or absent in every slot."""
        return self._token_values(tokens)[1]

    def _token_values(
        self, tokens: Tokens
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor | None]:
        """Each RNA / protein slot's ``(ids, scaled values)`` ``(B, G)``, the ``(B, G)`` tokens that carry a
        value, and the ATAC peaks per anchor and bucket ``(B, G, K)`` (``None`` without ATAC)."""
        slot_inputs = {}
        varying = torch.zeros(tokens.present.shape[0], self.config.n_anchors, dtype=torch.bool,
                              device=tokens.present.device)
        for m, slot in self.slots.items():
            exists = self.exists(m)[None, :]
            ids = slot.ids(tokens.bins[m], tokens.mask[m], exists)
            values = slot.scaled_values(tokens.values[m], tokens.mask[m], exists)
            varying |= slot.carries_value(ids, values)
            slot_inputs[m] = (ids, values)
        per_bucket = None
        if "atac" in self.modalities:
            per_bucket = self._peaks_per_bucket(tokens)
            varying |= self.exists("atac")[None, :] & ~tokens.mask["atac"] & (per_bucket.sum(-1) > 0)
        return slot_inputs, varying, per_bucket

    def read_in_mask(self, tokens: Tokens) -> torch.Tensor | None:
        """``(B, C + G)`` read-in key mask: with ``read_in_tokens="values"`` the prefix and the tokens that
        carry a value (:meth:`carries_value`); ``None`` (every token) with ``"all"``."""
        if self.config.read_in_tokens == "all":
            return None
        prefix = torch.ones(tokens.present.shape[0], self.n_context, dtype=torch.bool, device=tokens.present.device)
        return torch.cat([prefix, self.carries_value(tokens)], dim=1)

    n_context = 2 + len(MODALITIES)
    """Prefix tokens before the anchors: batch, species, one library size per modality."""

    def encode(
        self, tokens: Tokens, token_emb: torch.Tensor | None = None, context_kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, L, d)`` latent states of the cells (``context_kv``: cached :meth:`context_kv`)."""
        if context_kv is None:
            if token_emb is None:
                _, context_kv = self.encoder_inputs(tokens, with_embeddings=False)
            else:
                context_kv = self.context_kv(tokens, token_emb)
        z = self.latents.unsqueeze(0).expand(context_kv.shape[0], -1, -1)
        z = self.read_in(z, context_kv=context_kv, key_mask=self.read_in_mask(tokens))
        for block in self.blocks:
            z = block(z)
        return self.ln_latent(z)

    @staticmethod
    def pool(latents: torch.Tensor) -> torch.Tensor:
        """Cell embedding ``(B, d)``: mean of the latent states."""
        return latents.mean(dim=1)

    # ----------------------------------------------------------------------------- decoder
    def decode(
        self,
        tokens: Tokens,
        latents: torch.Tensor,
        token_emb: torch.Tensor,
        targets: list[str],
        anchors: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict the slots of ``targets``.

        Parameters
        ----------
        anchors
            Decode only these anchors (RNA / protein targets only): ``(G',)`` indices shared by all
            cells, or ``(B, k)`` indices, each cell's own; default all.

        Returns
        -------
        ``"{m}_logits"`` ``(B, G', nb)`` and ``"{m}_value"`` ``(B, G')`` for RNA/protein targets
        (``G'`` = number of decoded anchors), ``"atac_logits"`` ``(B, P)`` for ATAC.
        """
        if anchors is not None and "atac" in targets:
            raise ValueError("ATAC is decoded over all anchors; do not pass `anchors` with an ATAC target.")
        anchor_emb = self.anchor_embedding()
        if anchors is None:
            h = self.read_out(anchor_emb, latents, token_emb)  # (B, G, d)
        elif anchors.dim() == 1:
            h = self.read_out(anchor_emb[anchors], latents, token_emb[:, anchors])  # (B, G', d)
        else:  # (B, k): each cell's own anchors
            emb = torch.gather(token_emb, 1, anchors.unsqueeze(-1).expand(-1, -1, token_emb.shape[-1]))
            h = self.read_out(anchor_emb, latents, emb, index=anchors)  # (B, k, d)
        out = {}
        for m in targets:
            if m == "atac":
                per_bucket = self.atac_head(h)  # (B, G, K)
                out["atac_logits"] = per_bucket[:, self.peak_anchor, self.peak_bucket]  # (B, P)
            else:
                y = self.heads[m](h)
                out[f"{m}_logits"], out[f"{m}_value"] = y[..., :-1], y[..., -1]
        return out

    def forward(
        self, tokens: Tokens, targets: list[str] | None = None, anchors: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode, then decode ``targets`` (all modalities by default); adds ``"embedding"``."""
        token_emb, context_kv = self.encoder_inputs(tokens)
        latents = self.encode(tokens, context_kv=context_kv)
        targets = self.modalities if targets is None else targets
        out = self.decode(tokens, latents, token_emb, targets, anchors)
        out["embedding"] = self.pool(latents)
        return out
