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
        self, x: torch.Tensor, context: torch.Tensor | None, kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x`` over ``context``, or over its precomputed projections ``kv = self.kv(context)``."""
        B, T, d = x.shape
        kv = self.kv(context) if kv is None else kv  # (B, S, 2d)
        S = kv.shape[1]
        h = self.n_heads
        q = self.q(x).view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, hs)
        k, v = kv.view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, S, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
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

    def forward(self, anchors: torch.Tensor, latents: torch.Tensor, token_emb: torch.Tensor) -> torch.Tensor:
        B, L, d = latents.shape
        G = anchors.shape[0]
        h = self.n_heads
        q = self.q(self.ln_q(anchors)).view(G, h, d // h).transpose(0, 1)  # (h, G, hs)
        k, v = self.kv(latents).view(B, L, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, L, hs)
        y = F.scaled_dot_product_attention(q.unsqueeze(0).expand(B, -1, -1, -1), k, v)  # (B, h, G, hs)
        return self.ln_out(token_emb + self.out(y.transpose(1, 2).reshape(B, G, d)))


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
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``context_kv`` (cross blocks): the context's key/value projections from :meth:`project_context`."""
        q = self.ln_q(x)
        if context_kv is None:
            context_kv = self.project_context(q if self.ln_kv is None else context)
        x = x + self.attn(q, None, context_kv)
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
        self.bin = nn.Embedding(n_bins + 2, d, padding_idx=self.none_id)
        self.value = nn.Parameter(torch.zeros(d))
        self.anchor_value = nn.Parameter(torch.zeros(n_anchors, d))

    def forward(
        self,
        bins: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        exists: torch.Tensor,
        anchors: torch.Tensor | slice = slice(None),
    ):
        """Embed ``(B, G')`` slots; ``anchors`` names the anchors the columns belong to (default all)."""
        hidden = mask | ~exists[None, :]
        ids = torch.where(mask, self.mask_id, bins)
        ids = torch.where(exists[None, :], ids, self.none_id)
        direction = self.value + self.anchor_value[anchors]  # (G', d)
        return self.bin(ids) + values.masked_fill(hidden, 0.0).unsqueeze(-1) * direction  # (B, G', d)


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

        With ``anchors``, only those anchors' tokens ``(B, G', d)`` (generation refreshes the
        tokens whose slots it has just committed).
        """
        B = tokens.present.shape[0]
        idx = slice(None) if anchors is None else anchors
        x = self.anchor_embedding()[idx].unsqueeze(0).expand(B, -1, -1)
        for m, slot in self.slots.items():
            x = x + slot(tokens.bins[m][:, idx], tokens.values[m][:, idx], tokens.mask[m][:, idx],
                         self.exists(m)[idx], idx)
        if "atac" in self.modalities:
            x = x + self._embed_peaks(tokens)[:, idx]
        return x

    def _embed_peaks(self, tokens: Tokens) -> torch.Tensor:
        """Pool each anchor's accessible peaks with their position embedding: ``(B, G, d)``."""
        G, K = self.config.n_anchors, self.config.n_buckets
        flat = self.peak_anchor * K + self.peak_bucket  # (P,)
        per_bucket = tokens.peaks.new_zeros(tokens.peaks.shape[0], G * K)
        per_bucket.index_add_(1, flat, tokens.peaks)
        pooled = torch.log1p(per_bucket.view(-1, G, K)) @ self.peak_position  # (B, G, d)
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

    n_context = 2 + len(MODALITIES)
    """Prefix tokens before the anchors: batch, species, one library size per modality."""

    def encode(
        self, tokens: Tokens, token_emb: torch.Tensor | None = None, context_kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, L, d)`` latent states of the cells (``context_kv``: cached :meth:`context_kv`)."""
        if context_kv is None:
            if token_emb is None:
                token_emb = self.embed_tokens(tokens)
            context_kv = self.context_kv(tokens, token_emb)
        z = self.latents.unsqueeze(0).expand(context_kv.shape[0], -1, -1)
        z = self.read_in(z, context_kv=context_kv)
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
            Decode only these anchor indices (RNA / protein targets only); default all.

        Returns
        -------
        ``"{m}_logits"`` ``(B, G', nb)`` and ``"{m}_value"`` ``(B, G')`` for RNA/protein targets
        (``G'`` = number of decoded anchors), ``"atac_logits"`` ``(B, P)`` for ATAC.
        """
        if anchors is not None and "atac" in targets:
            raise ValueError("ATAC is decoded over all anchors; do not pass `anchors` with an ATAC target.")
        anchor_emb = self.anchor_embedding()
        anchor_emb = anchor_emb if anchors is None else anchor_emb[anchors]
        emb = token_emb if anchors is None else token_emb[:, anchors]
        h = self.read_out(anchor_emb, latents, emb)  # (B, G', d)
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
        token_emb = self.embed_tokens(tokens)
        latents = self.encode(tokens, token_emb)
        targets = self.modalities if targets is None else targets
        out = self.decode(tokens, latents, token_emb, targets, anchors)
        out["embedding"] = self.pool(latents)
        return out
