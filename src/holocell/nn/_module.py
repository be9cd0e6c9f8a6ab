"""The torch module the model class drives: tokenizer + network + diffusion objective + sampler.

It takes plain tensors (a dict per mini-batch) and never sees AnnData.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..tokenize import Tokenizer, Tokens
from ..tokenize._values import CONTINUOUS, quantile_bins
from ._align import AlignmentScale, only
from ._count_decoder import state_mean
from ._diffusion import LossOutput, ObjectiveConfig, objective
from ._mixing import BatchAdversary
from ._sampler import Generated, sample
from .transformer import HoloCellNetwork, NetworkConfig


class HoloCellModule(nn.Module):
    """Tokenizer, gene-anchored transformer and masked-diffusion objective.

    Parameters
    ----------
    config
        Network sizes.
    feature_anchor
        Modality -> ``(n_features,)`` anchor of each feature.
    peak_bucket
        ``(n_peaks,)`` distance bucket of each peak (with ATAC).
    objective
        Settings of the training objective (default :class:`ObjectiveConfig`).
    priors
        Prior name -> ``(G, k)`` prior-knowledge matrix for the anchor embedding (see
        :class:`~holocell.nn.HoloCellNetwork`).
    """

    def __init__(
        self,
        config: NetworkConfig,
        feature_anchor: dict[str, np.ndarray],
        peak_bucket: np.ndarray | None = None,
        *,
        objective: ObjectiveConfig | None = None,
        priors: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer(config.n_anchors, feature_anchor, config.n_bins)
        exists = {m: self.tokenizer.exists(m) for m in self.tokenizer.modalities}
        peak_anchor = torch.as_tensor(feature_anchor["atac"]) if "atac" in feature_anchor else None
        bucket = torch.as_tensor(peak_bucket) if peak_bucket is not None else None
        prior_tensors = {k: torch.as_tensor(v) for k, v in (priors or {}).items()}
        slot_anchor = {m: self.tokenizer.anchor_of(m) for m in self.tokenizer.modalities if m != "atac"}
        self.network = HoloCellNetwork(config, exists, peak_anchor, bucket, prior_tensors, slot_anchor)
        self.objective = ObjectiveConfig() if objective is None else objective
        for name in ("batch_mmd_weight", "batch_adversary_weight"):
            if getattr(self.objective, name) > 0 and not config.cell_state:
                raise ValueError(f"{name} acts on the cell state; this network has none (cell_state=False).")
        # training-only batch classifier (see holocell.nn._mixing); transfer re-initialises it for new batches
        self.batch_adversary = (
            BatchAdversary(config.n_latent, config.n_batches, mode=self.objective.batch_adversary_mode)
            if self.objective.batch_adversary_weight > 0
            else None
        )
        self.alignment_scale = AlignmentScale() if self.objective.align_mode == "distill_cross_scaled" else None

    @property
    def modalities(self) -> list[str]:
        """Modalities this module was built for."""
        return self.tokenizer.modalities

    def tokenize(self, batch: dict[str, torch.Tensor]) -> Tokens:
        """Tokens of a mini-batch dict (``rna``/``atac``/``protein`` counts, ``present``, ``batch``, ``species``)."""
        counts = {m: batch[m] for m in self.modalities}
        # per-feature presence of merged data sets (``<modality>_measured``, see data/_mosaic.py), if any
        measured = {m: batch[f"{m}_measured"] for m in self.modalities if f"{m}_measured" in batch} or None
        return self.tokenizer(counts, batch["present"], batch["batch"], batch["species"], measured)

    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None, kl_scale: float = 1.0
    ) -> LossOutput:
        """Training loss of a mini-batch (see :func:`holocell.nn.objective`); ``kl_scale``: KL warm-up factor."""
        exists = {m: self.tokenizer.exists(m) for m in self.modalities}
        counts = {m: batch[m] for m in self.modalities if m != "atac"}
        measured = {m: batch[f"{m}_measured"].bool() for m in self.modalities if f"{m}_measured" in batch} or None
        return objective(
            self.network, self.tokenize(batch), exists, self.objective, generator, counts, kl_scale, measured,
            self.batch_adversary, self.alignment_scale,
        )

    def restrict(self, tokens: Tokens, keep: Sequence[str] | None) -> Tokens:
        """Hide every modality not in ``keep`` (``None`` keeps all)."""
        return only(tokens, keep, self.modalities)

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor], modalities: Sequence[str] | None = None) -> torch.Tensor:
        """Cell embeddings from the given modalities (all observed ones by default): ``(B, n_latent)`` posterior
        means of the cell state (``(B, d)`` pooled latents for a model without one)."""
        tokens = self.restrict(self.tokenize(batch), modalities)
        return self.network.embedding(tokens)

    @torch.no_grad()
    def posterior(
        self, batch: dict[str, torch.Tensor], modalities: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, n_latent)`` of the cell state ``q(z | x)`` from the given modalities (all
        observed ones by default); needs a cell state."""
        if not self.network.config.cell_state:
            raise ValueError("The posterior of the cell state needs a cell state; this model has none.")
        return self.network.cell_posterior(self.restrict(self.tokenize(batch), modalities))

    @torch.no_grad()
    def expression_scale(
        self,
        batch: dict[str, torch.Tensor],
        modalities: Sequence[str] | None = None,
        target: str = "rna",
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, F)`` the count decoder's mean of ``target`` from the cell state of the given modalities (all
        observed ones by default; ``target`` is not hidden), normalised to sum to 1 per cell (scvi-tools' "scale").
        With ``noise`` ``(S, B, n_latent)`` (standard normal): ``(S, B, F)``, the same at the draws
        ``z = mean + sd * noise`` of the posterior. Needs a cell state."""
        if not self.network.config.cell_state:
            raise ValueError("The count decoder's mean needs a cell state; this model has none.")
        tokens = self.restrict(self.tokenize(batch), modalities)
        if noise is None:
            mean = state_mean(self.network, tokens, target)
            return mean / mean.sum(-1, keepdim=True)
        mu, logvar = self.network.cell_posterior(tokens)
        decoder, out = self.network.counts, []
        for draw in noise.to(mu.dtype):
            mean = decoder.mean(decoder.hidden_state(mu + torch.exp(0.5 * logvar) * draw, tokens.batch), target, 1.0)
            out.append(mean / mean.sum(-1, keepdim=True))
        return torch.stack(out)

    @torch.no_grad()
    def generate(
        self,
        batch: dict[str, torch.Tensor],
        target: str,
        sources: Sequence[str] | None = None,
        n_steps: int = 8,
        **kwargs,
    ) -> Generated:
        """Generate ``target`` from ``sources`` (default: every other modality).

        ``n_steps >= 1``: iterative masked-diffusion denoising (``kwargs`` go to :func:`holocell.nn.sample`).
        ``n_steps=0``: one-shot decoding of the count likelihood's mean from the cell state
        (:meth:`predict_mean`).
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(
                f"n_steps must be an integer >= 0 (0: decode the cell state's likelihood mean), got {n_steps!r}."
            )
        tokens = self.restrict(self.tokenize(batch), sources)
        if n_steps == 0:
            return self.predict_mean(tokens, target)
        res = sample(self.network, tokens, [target], n_steps=n_steps, **kwargs)
        return Generated(None if target == "atac" else res.tokens.bins[target], res.values[target])

    @torch.no_grad()
    def predict_mean(self, tokens: Tokens, target: str) -> Generated:
        """The count decoder's mean of ``target`` given the cell state of the other visible tokens.

        Values are in the generated modality's units, at the typical library size of the training cells:
        log1p CP10k (RNA), CLR of the expected counts (protein), open probability (ATAC).
        """
        if not self.network.config.cell_state:
            raise ValueError("n_steps=0 decodes the cell state's likelihood mean; this model has no cell state.")
        mean = state_mean(self.network, tokens.hide(target), target)  # (B, F)
        if target == "atac":
            return Generated(None, mean)
        values = CONTINUOUS[target](mean)
        bins = quantile_bins(mean, self.tokenizer.n_bins)
        return Generated(self.tokenizer.to_slots(target, bins), self.tokenizer.to_slots(target, values))

    def to_features(self, modality: str, slot_values: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` slot values -> ``(B, F)`` feature values of ``modality``."""
        return self.tokenizer.from_slots(modality, slot_values)


__all__ = ["HoloCellModule"]
