"""The holocell network: token embedding (one encoder path), latent transformer, per-slot heads.

Its building blocks (attention, MLP, read-out, value-slot embedding) are in :mod:`._layers`.

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
from ._cellstate import CellState, sample_z
from ._count_decoder import CountDecoder
from ._layers import Block, PeakEmbedding, ReadOut, SlotEmbedding, init_weights

LIBRARY_SCALE = 10.0
"""A modality's library size enters as ``log1p(total count)`` (about 5 to 12 for real cells); it is divided by
this before its linear embedding so that the input is near unit scale, like the other inputs."""


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
    # the cell state (holocell.nn._cellstate): the defaults are the model, the switches its ablations
    cell_state: bool = True  # a variational cell state z with count decoders (False: the embedding pools latents)
    n_latent: int = 32  # size of z
    n_hidden: int = 128  # hidden width of the count decoders
    peak_factors: bool = True  # every peak has an output vector of its own in the ATAC count decoder
    peak_embeddings: bool = True  # every peak has an input vector of its own in the encoder's anchor tokens
    value_path: bool = True  # q(z | x) reads a linear map of the visible values
    latents_in_posterior: bool = True  # q(z | x) reads the pooled latents of the encoder
    tie_peaks_to_genes: bool = False  # q(z | x) reads an open peak through its gene's RNA weights + its own
    tie_peak_decoder_to_genes: bool = False  # a peak's decoder weights include its gene's RNA output row
    z_in_denoiser: bool = True  # the token read-out attends to z as well as to the latents
    z_grad_from_denoiser: bool = True  # the denoiser's loss trains q(z | x) too (False: it reads z detached)
    batch_after_norm: bool = False  # count decoders add the batch after normalising z's projection
    batch_in_encoder: bool = False  # the encoder reads the batch (True: the model before the cell state)
    library_in_encoder: bool = False  # the encoder reads the library sizes (else only the decoders do)

    def __post_init__(self) -> None:
        if self.read_in_tokens not in ("all", "values"):
            raise ValueError(f"read_in_tokens must be 'all' or 'values', got {self.read_in_tokens!r}.")
        if self.cell_state and not (self.value_path or self.latents_in_posterior):
            raise ValueError("The cell state needs an input: set value_path and/or latents_in_posterior.")

    @property
    def embedding_dim(self) -> int:
        """Width of the cell embedding: ``n_latent`` with a cell state, ``d_model`` without one."""
        return self.n_latent if self.cell_state else self.d_model

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


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
    feature_anchor
        ``"rna"`` / ``"protein"`` -> ``(F,)`` anchor of each feature (the count decoders' features).
    """

    def __init__(
        self,
        config: NetworkConfig,
        slot_exists: dict[str, torch.Tensor],
        peak_anchor: torch.Tensor | None = None,
        peak_bucket: torch.Tensor | None = None,
        priors: dict[str, torch.Tensor] | None = None,
        feature_anchor: dict[str, torch.Tensor] | None = None,
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
            self.peak_embedding = PeakEmbedding(len(peak_anchor), d) if c.peak_embeddings else None
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
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.mlp_ratio, c.dropout, cross=False) for _ in range(c.n_layers))
        self.ln_latent = nn.LayerNorm(d)
        self.read_out = ReadOut(d, c.n_heads)
        if c.cell_state:
            slot_modalities = [m for m in self.modalities if m != "atac"]
            self.cell = CellState(
                d, c.n_latent, c.n_anchors, slot_modalities, peak_anchor, **{k: getattr(c, k) for k in CellState.SWITCHES}
            )
            self.counts = CountDecoder(
                c.n_latent, c.n_hidden, c.n_batches, c.n_anchors,
                {m: torch.as_tensor(feature_anchor[m]) for m in slot_modalities},
                peak_anchor, peak_bucket, c.n_buckets, c.peak_factors, c.batch_after_norm, c.tie_peak_decoder_to_genes,
            )
        if self.prior_names:  # anchor embedding = identity + sum_p gate_p * W_p prior_p
            for name, matrix in priors.items():
                self.register_buffer(f"prior_{name}", torch.as_tensor(matrix, dtype=torch.float32).clone())
            self.prior_proj = nn.ModuleDict(
                {name: nn.Linear(m.shape[1], d, bias=False) for name, m in priors.items()}
            )
            self.prior_gate = nn.Parameter(torch.zeros(len(self.prior_names)))
        self.apply(init_weights)

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
    @property
    def n_context(self) -> int:
        """Prefix tokens before the anchors in the read-in: species, plus the batch and one library size per
        modality where the config puts them in the encoder."""
        c = self.config
        return 1 + int(c.batch_in_encoder) + len(MODALITIES) * int(c.library_in_encoder)

    def _library_tokens(self, tokens: Tokens) -> torch.Tensor:
        """``(B, 3, d)`` library size of each modality (a learned "missing" token where it is hidden)."""
        lib = self.library(tokens.library.unsqueeze(-1) / LIBRARY_SCALE) + self.library_modality
        return torch.where(tokens.present.unsqueeze(-1), lib, self.library_missing)

    def _batch_token(self, tokens: Tokens) -> torch.Tensor:
        """``(B, 1, d)`` batch embedding (the last row stands for a batch unseen in training)."""
        return self.batch(tokens.batch.clamp(max=self.config.n_batches))[:, None]

    def context_tokens(self, tokens: Tokens) -> torch.Tensor:
        """``(B, C, d)`` prefix tokens the encoder reads: species, and the batch and the library sizes only where
        the config puts them there (by default they go to the decoders, so that ``z`` is free of them)."""
        parts = [self.species(tokens.species)[:, None]]
        if self.config.batch_in_encoder:
            parts.append(self._batch_token(tokens))
        if self.config.library_in_encoder:
            parts.append(self._library_tokens(tokens))
        return torch.cat(parts, dim=1)

    def decoder_context(self, tokens: Tokens, z: torch.Tensor | None) -> torch.Tensor | None:
        """``(B, C', d)`` extra keys of the token read-out: ``z``, and the batch and library sizes the encoder
        does not read; ``None`` when there are none."""
        parts = []
        if z is not None and self.cell.z_token is not None:
            parts.append(self.cell.z_token(z if self.config.z_grad_from_denoiser else z.detach())[:, None])
        if not self.config.batch_in_encoder:
            parts.append(self._batch_token(tokens))
        if not self.config.library_in_encoder:
            parts.append(self._library_tokens(tokens))
        return torch.cat(parts, dim=1) if parts else None

    def embed_at(
        self,
        tokens: Tokens,
        b: torch.Tensor,
        g: torch.Tensor,
        per_bucket: torch.Tensor | None = None,
        anchor_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, d)`` embeddings of the tokens of cells ``b`` at anchors ``g`` (two ``(N,)`` long tensors).

        A token is its anchor's identity embedding, plus for every value slot the row of its bin (or of
        [MASK], or of "no such slot") and its continuous value along the slot's direction, plus the
        anchor's accessible peaks pooled with their position embedding and their own vectors (ATAC). This is
        the one place a token is computed in full: :meth:`encoder_inputs` uses it for the tokens that carry a value,
        and iterative generation for the tokens it has just committed. Rows are gathered with
        :func:`~torch.nn.functional.embedding`, whose backward is deterministic on CPU (plain indexing
        accumulates in a thread-dependent order). ``per_bucket`` (:meth:`_peaks_per_bucket`) and
        ``anchor_emb`` (:meth:`anchor_embedding`): pass them when known already.
        """
        emb = F.embedding(g, self.anchor_embedding() if anchor_emb is None else anchor_emb)
        for m, slot in self.slots.items():
            exists, mask = self.exists(m)[g], tokens.mask[m][b, g]
            ids = slot.ids(tokens.bins[m][b, g], mask, exists)
            emb = emb + F.embedding(ids, slot.table())
            emb = emb + slot.scaled_values(tokens.values[m][b, g], mask, exists).unsqueeze(-1) * slot.direction(g)
        if "atac" in self.modalities:  # (anchors without peaks pool nothing: per_bucket is 0 there)
            per_bucket = self._peaks_per_bucket(tokens) if per_bucket is None else per_bucket
            masked = tokens.mask["atac"][b, g] & self.exists("atac")[g]
            pooled = torch.log1p(per_bucket[b, g]) @ self.peak_position
            if self.peak_embedding is not None:
                pooled = pooled + self.peak_embedding(tokens.peaks, self.peak_anchor, self.config.n_anchors, b, g)
            emb = emb + torch.where(masked.unsqueeze(-1), self.atac_mask, pooled)
        return emb

    def encoder_inputs(
        self, tokens: Tokens, with_embeddings: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Token embeddings ``(B, G, d)`` and read-in key/values ``(B, C + G, 2d)`` of a batch.

        Anchor ``g`` is row ``C + g`` of the key/values (``C`` = :attr:`n_context` prefix tokens). A token
        whose slots are all zero, [MASK] or absent, and whose anchor has no open peak, is the same in
        every cell that holds it. The embeddings and key/value projections of these *constant* tokens
        (``3`` states per value slot, ``2`` for ATAC, per anchor) are computed once per call and looked
        up; only the tokens that carry a value (expressed genes, measured proteins, anchors with open
        peaks) are computed in full by :meth:`embed_at`. A batch smaller than the number of states is
        computed in full throughout. With ``with_embeddings=False`` the embeddings are not returned
        (``None``): encoding needs only the key/values. The tests check values and gradients against a
        plain implementation (every token computed in full).
        """
        B, G, C = tokens.present.shape[0], self.config.n_anchors, self.n_context
        device = tokens.present.device
        anchor_emb = self.anchor_embedding()  # (G, d)
        varying, per_bucket = self._carries_value(tokens)
        state = torch.zeros(B, G, dtype=torch.long, device=device)  # constant state of each token
        state_emb = anchor_emb.new_zeros(1, anchor_emb.shape[1])  # (n_states, d) slot part of each state
        for m, slot in self.slots.items():
            ids = slot.ids(tokens.bins[m], tokens.mask[m], self.exists(m)[None, :])
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
        if B < n_states:  # a tiny batch: computing every token in full is cheaper than the tables
            b, g = torch.ones(B, G, dtype=torch.bool, device=device).nonzero(as_tuple=True)
            token_emb = self.embed_at(tokens, b, g, per_bucket, anchor_emb).view(B, G, -1)
            kv = self.read_in.project_context(torch.cat([self.context_tokens(tokens), token_emb], dim=1))
            return (token_emb if with_embeddings else None), kv

        # one row table per output: constant tokens, then the N tokens that carry a value, then (key/values
        # only) the B x C prefix tokens; each (cell, position) looks up its row. One lookup, no in-place
        # writes: their backward would copy the whole (B, C + G, 2d) gradient.
        const_emb = (anchor_emb[:, None, :] + state_emb[None, :, :]).flatten(0, 1)  # (G * n_states, d)
        b, g = varying.nonzero(as_tuple=True)  # the N tokens that carry a value, computed in full:
        emb_rows = torch.cat([const_emb, self.embed_at(tokens, b, g, per_bucket, anchor_emb)])
        row = torch.arange(G, device=device) * n_states + state  # (B, G) row of each token
        row[b, g] = len(const_emb) + torch.arange(len(b), device=device)
        prefix_kv = self.read_in.project_context(self.context_tokens(tokens)).flatten(0, 1)  # (B * C, 2d)
        kv_rows = torch.cat([self.read_in.project_context(emb_rows), prefix_kv])
        prefix_row = len(emb_rows) + torch.arange(B * C, device=device).view(B, C)
        kv = F.embedding(torch.cat([prefix_row, row], dim=1), kv_rows)  # (B, C + G, 2d)
        token_emb = F.embedding(row, emb_rows) if with_embeddings else None
        return token_emb, kv

    def _peaks_per_bucket(self, tokens: Tokens) -> torch.Tensor:
        """``(B, G, K)`` number of open peaks of each anchor in each distance bucket."""
        G, K = self.config.n_anchors, self.config.n_buckets
        flat = self.peak_anchor * K + self.peak_bucket  # (P,)
        per_bucket = tokens.peaks.new_zeros(tokens.peaks.shape[0], G * K)
        return per_bucket.index_add_(1, flat, tokens.peaks).view(-1, G, K)

    def _carries_value(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`carries_value`, and the ATAC peaks per anchor and bucket ``(B, G, K)`` (``None`` without ATAC)."""
        varying = torch.zeros(tokens.present.shape[0], self.config.n_anchors, dtype=torch.bool,
                              device=tokens.present.device)
        for m, slot in self.slots.items():
            exists = self.exists(m)[None, :]
            ids = slot.ids(tokens.bins[m], tokens.mask[m], exists)
            varying |= slot.carries_value(ids, slot.scaled_values(tokens.values[m], tokens.mask[m], exists))
        per_bucket = None
        if "atac" in self.modalities:
            per_bucket = self._peaks_per_bucket(tokens)
            varying |= self.exists("atac")[None, :] & ~tokens.mask["atac"] & (per_bucket.sum(-1) > 0)
        return varying, per_bucket

    def carries_value(self, tokens: Tokens) -> torch.Tensor:
        """``(B, G)`` bool: tokens with a value in some slot (a non-zero bin or continuous value, or an
        open peak that is not masked); the others are zero, [MASK] or absent in every slot."""
        return self._carries_value(tokens)[0]

    def read_in_mask(self, tokens: Tokens) -> torch.Tensor | None:
        """``(B, C + G)`` read-in key mask: with ``read_in_tokens="values"`` the prefix and the tokens that
        carry a value (:meth:`carries_value`); ``None`` (every token) with ``"all"``."""
        if self.config.read_in_tokens == "all":
            return None
        prefix = torch.ones(tokens.present.shape[0], self.n_context, dtype=torch.bool, device=tokens.present.device)
        return torch.cat([prefix, self.carries_value(tokens)], dim=1)

    def encode(self, tokens: Tokens, context_kv: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, d)`` latent states of the cells (``context_kv``: the key/values of :meth:`encoder_inputs`,
        when the caller has them already)."""
        if context_kv is None:
            _, context_kv = self.encoder_inputs(tokens, with_embeddings=False)
        z = self.latents.unsqueeze(0).expand(context_kv.shape[0], -1, -1)
        z = self.read_in(z, context_kv=context_kv, key_mask=self.read_in_mask(tokens))
        for block in self.blocks:
            z = block(z)
        return self.ln_latent(z)

    @staticmethod
    def pool(latents: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` mean of the latent states."""
        return latents.mean(dim=1)

    def cell_posterior(
        self, tokens: Tokens, latents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, n_latent)`` of the cell state ``q(z | x)`` of the visible tokens
        (``latents``: their encoding, computed here when the posterior reads it and it is not given)."""
        pooled = None
        if self.config.latents_in_posterior:
            pooled = self.pool(self.encode(tokens) if latents is None else latents)
        exists = {m: self.exists(m) for m in self.modalities if m != "atac"}
        return self.cell(tokens, pooled, exists, getattr(self, "peak_anchor", None))

    def embedding(self, tokens: Tokens, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Cell embedding of the visible tokens: the posterior mean of ``z`` (without a cell state: the mean of
        the latents)."""
        if self.config.cell_state:
            return self.cell_posterior(tokens, latents)[0]
        return self.pool(self.encode(tokens) if latents is None else latents)

    # ----------------------------------------------------------------------------- decoder
    def decode(
        self,
        tokens: Tokens,
        latents: torch.Tensor,
        token_emb: torch.Tensor,
        targets: list[str],
        anchors: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict the slots of ``targets``.

        Parameters
        ----------
        anchors
            Decode only these anchors (RNA / protein targets only): ``(G',)`` indices shared by all
            cells, or ``(B, k)`` indices, each cell's own; default all.
        z
            ``(B, n_latent)`` cell state the read-out attends to (with a cell state); default the
            posterior mean of the visible tokens.

        Returns
        -------
        ``"{m}_logits"`` ``(B, G', nb)`` and ``"{m}_value"`` ``(B, G')`` for RNA/protein targets
        (``G'`` = number of decoded anchors), ``"atac_logits"`` ``(B, P)`` for ATAC.
        """
        if anchors is not None and "atac" in targets:
            raise ValueError("ATAC is decoded over all anchors; do not pass `anchors` with an ATAC target.")
        anchor_emb = self.anchor_embedding()
        if z is None and self.config.cell_state:
            z = self.cell_posterior(tokens, latents)[0]
        extra = self.decoder_context(tokens, z)
        memory = latents if extra is None else torch.cat([latents, extra], dim=1)  # (B, L + C', d)
        if anchors is None:
            h = self.read_out(anchor_emb, memory, token_emb)  # (B, G, d)
        elif anchors.dim() == 1:
            h = self.read_out(anchor_emb[anchors], memory, token_emb[:, anchors])  # (B, G', d)
        else:  # (B, k): each cell's own anchors
            emb = torch.gather(token_emb, 1, anchors.unsqueeze(-1).expand(-1, -1, token_emb.shape[-1]))
            h = self.read_out(anchor_emb, memory, emb, index=anchors)  # (B, k, d)
        out = {}
        if "atac" in targets:
            per_bucket = self.atac_head(h)  # (B, G, K)
            out["atac_logits"] = per_bucket[:, self.peak_anchor, self.peak_bucket]  # (B, P)
        valued = [m for m in targets if m != "atac"]
        if valued:  # the heads as one product: faster than one narrow product per modality
            heads = [self.heads[m] for m in valued]
            y = F.linear(h, torch.cat([p.weight for p in heads]), torch.cat([p.bias for p in heads]))
            for m, y_m in zip(valued, y.split(self.config.n_bins + 1, dim=-1), strict=True):
                out[f"{m}_logits"], out[f"{m}_value"] = y_m[..., :-1], y_m[..., -1]
        return out

    def forward(
        self, tokens: Tokens, targets: list[str] | None = None, anchors: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode, then decode ``targets`` (all modalities by default).

        Adds ``"embedding"`` and, with a cell state, ``"qz_mu"``, ``"qz_logvar"`` and ``"z"`` (a draw from the
        posterior in training mode, its mean in eval mode), on which the read-out is conditioned.
        """
        token_emb, context_kv = self.encoder_inputs(tokens)
        latents = self.encode(tokens, context_kv=context_kv)
        targets = self.modalities if targets is None else targets
        if not self.config.cell_state:
            out = self.decode(tokens, latents, token_emb, targets, anchors)
            out["embedding"] = self.pool(latents)
            return out
        mu, logvar = self.cell_posterior(tokens, latents)
        z = sample_z(mu, logvar) if self.training else mu
        out = self.decode(tokens, latents, token_emb, targets, anchors, z=z)
        out.update(embedding=mu, qz_mu=mu, qz_logvar=logvar, z=z)
        return out
