"""The cell state ``z``: a small Gaussian posterior computed from whatever modalities a cell shows.

``q(z | x)`` reads two summaries of the visible tokens (either can be switched off for the ablation):

- the encoder's latent vectors, mean-pooled (the transformer's view of the gene-anchored tokens);
- the *value path*: a linear map of the visible values (continuous RNA / protein channel of every anchor,
  open peaks), layer-normed, the input an scVI encoder reads. Hidden and absent values contribute nothing,
  so any subset of modalities gives a state. With ``tie_peaks_to_genes`` an open peak's weights are its gene's
  RNA weights plus a vector of its own, so chromatin reaches the state the way its gene's expression does (the
  hierarchy CRE -> gene, and the idea behind gene-activity scores).

The batch and the library sizes are not inputs of ``q(z | x)``: they go to the count decoders
(:mod:`._count_decoder`) and the denoiser, so nothing rewards ``z`` for carrying them.

Shapes: ``B`` cells, ``G`` anchors, ``P`` peaks, ``d`` model width, ``n`` size of ``z``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import Tokens

LOGVAR_RANGE = (-12.0, 8.0)
"""Clamp of the posterior log-variance (keeps ``exp`` finite early in training)."""


def sample_z(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised draw ``mu + sigma * eps`` from ``N(mu, exp(logvar))``."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``(B,)`` KL divergence of ``N(mu, exp(logvar))`` from ``N(0, I)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


class CellState(nn.Module):
    """Posterior ``q(z | x)`` of the cell state, and the token through which the denoiser reads ``z``.

    Parameters
    ----------
    d
        Model width.
    n_latent
        Size of ``z``.
    n_anchors
        ``G``.
    slot_modalities
        Modalities with a value slot per anchor (``"rna"``, ``"protein"``).
    peak_anchor
        ``(P,)`` anchor of every peak (``None`` without ATAC).
    value_path
        Read the visible values through a linear map.
    latents_in_posterior
        Read the pooled latent vectors of the encoder.
    z_in_denoiser
        Keep a projection of ``z`` to a key of the token read-out (the denoiser is conditioned on ``z``).
    tie_peaks_to_genes
        Value path: an open peak is read through its anchor's RNA weights plus its own vector (needs RNA; without
        it a peak has its own weights only).
    """

    SWITCHES = ("value_path", "latents_in_posterior", "z_in_denoiser", "tie_peaks_to_genes")
    """The :class:`~holocell.nn.NetworkConfig` fields this module takes as keyword arguments."""

    def __init__(
        self,
        d: int,
        n_latent: int,
        n_anchors: int,
        slot_modalities: list[str],
        peak_anchor: torch.Tensor | None,
        *,
        value_path: bool = True,
        latents_in_posterior: bool = True,
        z_in_denoiser: bool = True,
        tie_peaks_to_genes: bool = False,
    ) -> None:
        super().__init__()
        if not (value_path or latents_in_posterior):
            raise ValueError("The cell state needs an input: value_path and/or latents_in_posterior.")
        self.value_path, self.latents_in_posterior = value_path, latents_in_posterior
        if value_path:  # per-anchor input weights of each value slot, per-peak weights of ATAC
            self.value_in = nn.ParameterDict(
                {m: nn.Parameter(torch.randn(n_anchors, d) * 0.02) for m in slot_modalities}
            )
            self.peak_in = nn.Parameter(torch.randn(len(peak_anchor), d) * 0.02) if peak_anchor is not None else None
            self.ln_values = nn.LayerNorm(d)
        self.tie_peaks = bool(value_path and tie_peaks_to_genes and peak_anchor is not None and "rna" in slot_modalities)
        width = d * (int(value_path) + int(latents_in_posterior))
        self.ln = nn.LayerNorm(width)
        self.hidden = nn.Linear(width, d)
        self.out = nn.Linear(d, 2 * n_latent)
        self.z_token = nn.Linear(n_latent, d) if z_in_denoiser else None

    def value_summary(
        self, tokens: Tokens, slot_exists: dict[str, torch.Tensor], peak_anchor: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B, d)`` linear map of the visible values (slots that exist and are not hidden), layer-normed."""
        out = None
        for m, weight in self.value_in.items():
            visible = ~tokens.mask[m] & slot_exists[m][None, :]
            values = torch.where(visible, tokens.values[m], 0.0)  # (B, G); what is hidden is never read
            out = values @ weight if out is None else out + values @ weight
        if self.peak_in is not None:
            visible = ~tokens.mask["atac"][:, peak_anchor]  # (B, P)
            weight = self.peak_in + self.value_in["rna"][peak_anchor] if self.tie_peaks else self.peak_in
            term = torch.where(visible, tokens.peaks, 0.0) @ weight
            out = term if out is None else out + term
        return self.ln_values(out)

    def forward(
        self,
        tokens: Tokens,
        pooled: torch.Tensor | None,
        slot_exists: dict[str, torch.Tensor],
        peak_anchor: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, n)`` of ``q(z | x)`` (``pooled``: mean of the encoder's latents, or
        ``None`` when the posterior does not read them; ``slot_exists``: modality -> ``(G,)`` anchors with a
        slot)."""
        parts = [pooled] if self.latents_in_posterior else []
        if self.value_path:
            parts.append(self.value_summary(tokens, slot_exists, peak_anchor))
        h = F.gelu(self.hidden(self.ln(torch.cat(parts, dim=-1))))
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


__all__ = ["LOGVAR_RANGE", "CellState", "kl_normal", "sample_z"]
