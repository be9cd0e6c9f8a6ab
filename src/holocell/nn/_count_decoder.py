"""Count decoders of the cell state: every observed modality reconstructed from ``z`` (scVI's recipe).

``z``, the cell's batch and its observed library size are the decoder's inputs; the batch enters the hidden
layer, the library size is an offset of the rates, so ``z`` need carry neither.

- RNA and protein: negative binomial, mean ``library * softmax(logits)``, one inverse dispersion per feature
  (:class:`scvi.distributions.NegativeBinomial`);
- ATAC: a Bernoulli per peak through a Poisson presence link, ``p = 1 - exp(-lambda)`` with
  ``lambda = n_open * softmax(logits)``: the number of open peaks of the cell is the offset, as the library size
  is for counts. A peak's output weights are its anchor's row plus its distance bucket's row plus a vector of
  its own (the per-peak factor, zero at the start), so two peaks of one (gene, bucket) can differ.

Shapes: ``B`` cells, ``G`` anchors, ``P`` peaks, ``F`` features of a modality, ``n`` size of ``z``, ``h`` hidden.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial
from torch import nn

from ..tokenize import Tokens
from ..vocab import MODALITIES

if TYPE_CHECKING:
    from .transformer import HoloCellNetwork


class CountDecoder(nn.Module):
    """Reconstructs each modality of a cell from ``z``, its batch and its observed library size.

    Parameters
    ----------
    n_latent, n_hidden
        Sizes of ``z`` and of the shared hidden layer.
    n_batches
        Training batches (one more row is kept for a batch not seen in training).
    n_anchors
        ``G``: per-anchor output weights, so that transfer can copy them by anchor name.
    slot_anchor
        ``"rna"`` / ``"protein"`` -> ``(F,)`` anchor of each feature.
    peak_anchor, peak_bucket, n_buckets
        ATAC: anchor and distance bucket of every peak (``None`` without ATAC).
    peak_factors
        Give every peak an output vector of its own (added to its anchor's and bucket's).
    batch_after_norm
        Add the batch embedding after the layer norm of ``z``'s projection, so that a large ``z`` cannot drown
        the batch (default: both are summed, then normalised).
    tie_peaks_to_genes
        A peak's output weights also include its anchor's RNA output row (with RNA), so a state that raises a
        gene's expression opens its peaks too.
    """

    def __init__(
        self,
        n_latent: int,
        n_hidden: int,
        n_batches: int,
        n_anchors: int,
        slot_anchor: dict[str, torch.Tensor],
        peak_anchor: torch.Tensor | None = None,
        peak_bucket: torch.Tensor | None = None,
        n_buckets: int = 0,
        peak_factors: bool = True,
        batch_after_norm: bool = False,
        tie_peaks_to_genes: bool = False,
    ) -> None:
        super().__init__()
        self.batch_after_norm = batch_after_norm
        self.tie_peaks = bool(tie_peaks_to_genes and peak_anchor is not None and "rna" in slot_anchor)
        self.slot_modalities = list(slot_anchor)
        self.modalities = [m for m in MODALITIES if m in slot_anchor or (m == "atac" and peak_anchor is not None)]
        self.hidden = nn.Linear(n_latent, n_hidden)
        self.batch = nn.Embedding(n_batches + 1, n_hidden)
        self.ln = nn.LayerNorm(n_hidden)
        self.weight = nn.ParameterDict()
        self.bias = nn.ParameterDict()
        self.log_theta = nn.ParameterDict()
        for m, anchors in slot_anchor.items():
            self.register_buffer(f"{m}_feature_anchor", anchors.long().clone())
            self.weight[m] = nn.Parameter(torch.randn(n_anchors, n_hidden) * 0.02)  # per anchor
            self.bias[m] = nn.Parameter(torch.zeros(n_anchors))
            self.log_theta[m] = nn.Parameter(torch.zeros(n_anchors))
        # typical (geometric mean) library size of each modality (order of MODALITIES), for predictions at a
        # standard depth; a running average over the training mini-batches (see `track_library`)
        self.register_buffer("typical_library", torch.tensor([1e4, 1e3, 1e3]))
        self.register_buffer("library_batches", torch.zeros(3))
        self.frozen_library: tuple[bool, ...] = (False, False, False)  # set by HoloCell.freeze: kept as loaded
        self.has_atac = peak_anchor is not None
        if self.has_atac:
            assert peak_bucket is not None
            P = peak_anchor.shape[0]
            self.atac_anchor = nn.Parameter(torch.randn(n_anchors, n_hidden) * 0.02)
            self.atac_bucket = nn.Parameter(torch.randn(n_buckets, n_hidden) * 0.02)
            self.peak_factor = nn.Parameter(torch.zeros(P, n_hidden)) if peak_factors else None
            self.peak_bias = nn.Parameter(torch.zeros(P))
            self.register_buffer("atac_peak_anchor", peak_anchor.long().clone())
            self.register_buffer("atac_peak_bucket", peak_bucket.long().clone())

    def hidden_state(self, z: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """``(B, h)`` shared hidden layer; the batch enters here, never the encoder."""
        n_rows = self.batch.num_embeddings
        b = self.batch(batch.clamp(max=n_rows - 1))
        if self.batch_after_norm:
            return F.gelu(self.ln(self.hidden(z)) + b)
        return F.gelu(self.ln(self.hidden(z) + b))

    def logits(self, h: torch.Tensor, modality: str) -> torch.Tensor:
        """``(B, F)`` unnormalised log-rates of every feature of ``modality``."""
        if modality == "atac":
            w = self.atac_anchor[self.atac_peak_anchor] + self.atac_bucket[self.atac_peak_bucket]  # (P, h)
            if self.tie_peaks:
                w = w + self.weight["rna"][self.atac_peak_anchor]
            if self.peak_factor is not None:
                w = w + self.peak_factor
            return h @ w.T + self.peak_bias
        anchors = getattr(self, f"{modality}_feature_anchor")
        return h @ self.weight[modality][anchors].T + self.bias[modality][anchors]

    def log_likelihood(
        self,
        h: torch.Tensor,
        modality: str,
        x: torch.Tensor,
        library: torch.Tensor,
        measured: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B,)`` log-likelihood of the observed ``x`` ``(B, F)`` (counts; 0/1 for ATAC).

        ``library`` ``(B,)``: total count of the modality (number of open peaks for ATAC). ``measured``
        ``(B, F)`` bool: features the cell's data set measured (merged data sets); the others are left out of
        the softmax and of the likelihood (default: all measured).
        """
        logits = self.logits(h, modality)
        if measured is not None:
            logits = logits.masked_fill(~measured, -1e4)
        log_rate = F.log_softmax(logits, dim=-1) + torch.log(library.clamp(min=1.0))[:, None]
        if modality == "atac":
            lam = log_rate.exp()
            # x log(1 - e^-lam) + (1 - x)(-lam)
            log_open = torch.log(-torch.expm1(-lam.clamp(min=1e-8)))
            ll = x * log_open - (1.0 - x) * lam
        else:
            anchors = getattr(self, f"{modality}_feature_anchor")
            theta = self.log_theta[modality][anchors].exp()
            ll = NegativeBinomial(mu=log_rate.exp(), theta=theta).log_prob(x)
        return (ll if measured is None else torch.where(measured, ll, torch.zeros_like(ll))).sum(-1)

    def mean(self, h: torch.Tensor, modality: str, library: torch.Tensor | float) -> torch.Tensor:
        """``(B, F)`` expected counts (RNA / protein) or open probability (ATAC) at the given library size."""
        library = torch.as_tensor(library, dtype=h.dtype, device=h.device)
        rate = F.softmax(self.logits(h, modality), dim=-1) * library.reshape(-1, 1)
        return -torch.expm1(-rate) if modality == "atac" else rate

    def gene_activity(self, peaks: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` gene activity of the RNA features: the number of open peaks anchored on each feature's gene.

        ``peaks`` ``(B, P)``: 0/1 accessibility. Needs RNA and ATAC; a gene with several RNA features counts on one.
        """
        anchors = self.rna_feature_anchor
        feature_of_anchor = torch.full((int(self.bias["rna"].shape[0]),), -1, device=peaks.device, dtype=torch.long)
        feature_of_anchor[anchors] = torch.arange(len(anchors), device=peaks.device)
        feature = feature_of_anchor[self.atac_peak_anchor]  # (P,) -1: no RNA feature on the peak's gene
        keep = feature >= 0
        activity = peaks.new_zeros(peaks.shape[0], len(anchors))
        return activity.index_add_(1, feature[keep], peaks[:, keep].to(activity.dtype))

    @torch.no_grad()
    def track_library(self, k: int, library: torch.Tensor) -> None:
        """Fold a mini-batch's observed library sizes ``(n,)`` of modality ``k`` into ``typical_library``: a running
        mean of the log library over the first 1,000 mini-batches, an exponential average after; not for a modality
        in :attr:`frozen_library` (a frozen transferred model keeps its reference's)."""
        if library.numel() == 0 or self.frozen_library[k]:
            return
        n = self.library_batches[k].clamp(max=999.0)
        log_mean = torch.log(library.clamp(min=1.0)).mean()
        old = torch.log(self.typical_library[k])
        self.typical_library[k] = torch.exp((n * old + log_mean) / (n + 1))
        self.library_batches[k] += 1


def reconstruction_nll(
    decoder: CountDecoder,
    z: torch.Tensor,
    clean: Tokens,
    counts: dict[str, torch.Tensor],
    track: bool = False,
    measured: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(B,)`` negative log-likelihood of every observed modality of each cell given ``z``, its batch and its
    observed library size.

    Parameters
    ----------
    decoder
        The count decoder.
    z
        ``(B, n)`` cell states.
    clean
        The cells' tokens before any masking (``present``, ``batch``; ``peaks`` for ATAC).
    counts
        Modality -> ``(B, F)`` raw counts (RNA / protein).
    track
        Fold the observed library sizes into :attr:`CountDecoder.typical_library` (training).
    measured
        Modality -> ``(B, F)`` bool, the features each cell's data set measured (merged data sets; default all).
    """
    h = decoder.hidden_state(z, clean.batch)
    total = z.new_zeros(z.shape[0])
    for m in decoder.modalities:
        k = MODALITIES.index(m)
        observed = clean.present[:, k]
        if not observed.any():
            continue
        x = clean.peaks if m == "atac" else counts[m].float()
        library = x.sum(1)
        if track:
            decoder.track_library(k, library[observed])
        ll = decoder.log_likelihood(h, m, x, library, None if measured is None else measured.get(m))
        total = total - torch.where(observed, ll, torch.zeros_like(ll))
    return total


def gene_activity_nll(decoder: CountDecoder, z: torch.Tensor, clean: Tokens) -> torch.Tensor:
    """``(B,)`` negative log-likelihood of each ATAC-only cell's gene activity under the RNA decoder (0 elsewhere).

    A cell measured by ATAC but not RNA is given its open peaks summed per gene as RNA-like counts, read by the
    RNA decoder from its ``z``, batch and gene-activity total. This ties the RNA-only and ATAC-only cells of an
    unpaired data set together through the genes, as gene-activity scores do for Seurat's label transfer.
    """
    rna, atac = MODALITIES.index("rna"), MODALITIES.index("atac")
    total = z.new_zeros(z.shape[0])
    if "rna" not in decoder.modalities or not decoder.has_atac or clean.peaks is None:
        return total
    cells = (clean.present[:, atac] & ~clean.present[:, rna]).nonzero().squeeze(1)
    if not len(cells):
        return total
    activity = decoder.gene_activity(clean.peaks[cells].float())
    h = decoder.hidden_state(z[cells], clean.batch[cells])
    ll = decoder.log_likelihood(h, "rna", activity, activity.sum(1))
    return total.index_put((cells,), -ll)


def state_mean(network: HoloCellNetwork, tokens: Tokens, target: str) -> torch.Tensor:
    """``(B, F)`` expected counts (RNA / protein) or open probability (ATAC) of ``target``, decoded from the cell
    state of the visible ``tokens`` at the training cells' typical library size."""
    decoder = network.counts
    h = decoder.hidden_state(network.embedding(tokens), tokens.batch)
    return decoder.mean(h, target, decoder.typical_library[MODALITIES.index(target)])


__all__ = ["CountDecoder", "gene_activity_nll", "reconstruction_nll", "state_mean"]
