"""The torch module the model class drives: tokenizer + network + diffusion objective + sampler.

It takes plain tensors (a dict per mini-batch) and never sees AnnData.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize import Tokenizer, Tokens
from ..vocab import MODALITIES
from ._diffusion import LossOutput, add_noise, diffusion_loss
from ._sampler import Generated, generate_modality
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
    p_drop_modality, p_hide_library, eps, regression_weight
        Diffusion objective settings, see :func:`holocell.nn.add_noise`.
    priors
        Prior name -> ``(G, k)`` prior-knowledge matrix for the anchor embedding (see
        :class:`~holocell.nn.HoloCellNetwork`).
    align_weight, align_temperature
        Weight and temperature of a contrastive term that pulls together the single-modality
        embeddings of the same cell (cells with >= 2 modalities; InfoNCE over the mini-batch).
        0 switches it off.
    """

    def __init__(
        self,
        config: NetworkConfig,
        feature_anchor: dict[str, np.ndarray],
        peak_bucket: np.ndarray | None = None,
        *,
        p_drop_modality: float = 0.5,
        p_hide_library: float = 0.25,
        eps: float = 0.02,
        regression_weight: float = 1.0,
        align_weight: float = 0.0,
        align_temperature: float = 0.1,
        priors: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer(config.n_anchors, feature_anchor, config.n_bins)
        exists = {m: self.tokenizer.exists(m) for m in self.tokenizer.modalities}
        peak_anchor = torch.as_tensor(feature_anchor["atac"]) if "atac" in feature_anchor else None
        bucket = torch.as_tensor(peak_bucket) if peak_bucket is not None else None
        prior_tensors = {k: torch.as_tensor(v) for k, v in (priors or {}).items()}
        self.network = HoloCellNetwork(config, exists, peak_anchor, bucket, prior_tensors)
        self.p_drop_modality = p_drop_modality
        self.p_hide_library = p_hide_library
        self.eps = eps
        self.regression_weight = regression_weight
        self.align_weight = align_weight
        self.align_temperature = align_temperature

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

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> LossOutput:
        """Masked-diffusion loss of a mini-batch."""
        clean = self.tokenize(batch)
        exists = {m: self.tokenizer.exists(m) for m in self.modalities}
        noised = add_noise(
            clean,
            exists,
            eps=self.eps,
            p_drop_modality=self.p_drop_modality,
            p_hide_library=self.p_hide_library,
            generator=generator,
        )
        outputs = self.network(noised.tokens)
        peak_anchor = self.network.peak_anchor if "atac" in self.modalities else None
        out = diffusion_loss(outputs, clean, noised, exists, peak_anchor, self.regression_weight)
        if self.align_weight > 0:
            align = self.alignment_loss(clean)
            out.per_modality["align"] = align.detach()
            out.loss = out.loss + self.align_weight * align
        return out

    def alignment_loss(self, clean: Tokens) -> torch.Tensor:
        """InfoNCE between single-modality embeddings of the cells that have both modalities."""
        total = clean.library.new_zeros(())
        present = clean.present
        for i, a in enumerate(self.modalities):
            for b in self.modalities[i + 1 :]:
                both = (
                    (present[:, MODALITIES.index(a)] & present[:, MODALITIES.index(b)]).nonzero().squeeze(1)
                )
                if len(both) < 2:
                    continue
                cells = clean.select(both)
                z_a = F.normalize(self.network.pool(self.network.encode(self.restrict(cells, [a]))), dim=-1)
                z_b = F.normalize(self.network.pool(self.network.encode(self.restrict(cells, [b]))), dim=-1)
                logits = z_a @ z_b.T / self.align_temperature
                labels = torch.arange(len(both), device=logits.device)
                total = total + 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return total

    def restrict(self, tokens: Tokens, keep: Sequence[str] | None) -> Tokens:
        """Hide every modality not in ``keep`` (``None`` keeps all)."""
        if keep is None:
            return tokens
        for m in self.modalities:
            if m not in keep:
                tokens = tokens.hide(m)
        return tokens

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor], modalities: Sequence[str] | None = None) -> torch.Tensor:
        """``(B, d)`` cell embeddings from the given modalities (all observed ones by default)."""
        tokens = self.restrict(self.tokenize(batch), modalities)
        return self.network.pool(self.network.encode(tokens))

    @torch.no_grad()
    def generate(
        self, batch: dict[str, torch.Tensor], target: str, sources: Sequence[str] | None = None, **kwargs
    ) -> Generated:
        """Generate ``target`` from ``sources`` (default: every other modality); see :func:`generate_modality`."""
        tokens = self.restrict(self.tokenize(batch), sources)
        return generate_modality(self.network, tokens, target, **kwargs)

    def to_features(self, modality: str, slot_values: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` slot values -> ``(B, F)`` feature values of ``modality``."""
        return self.tokenizer.from_slots(modality, slot_values)


__all__ = ["HoloCellModule"]
