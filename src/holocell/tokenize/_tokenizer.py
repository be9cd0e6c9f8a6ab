"""Cells -> gene-anchored token states (hierarchical, mosaic-aware).

A cell becomes one token per gene anchor. Each token carries up to three value slots: the
accessibility of the anchor's linked peaks (ATAC), its RNA expression and its protein abundance.
A slot whose modality the cell lacks is *masked* (``mask=True``), exactly like a slot hidden by
the diffusion process, and never filled with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from ..vocab import MODALITIES
from ._values import CONTINUOUS, log_library, quantile_bins

SLOT_MODALITIES = ("rna", "protein")
"""Modalities whose values sit directly in the anchor's slot (one feature per anchor)."""


@dataclass
class Tokens:
    """A batch of tokenized cells; every tensor has the cells on its first axis.

    Attributes
    ----------
    bins
        ``"rna"``/``"protein"`` -> ``(B, G)`` long value bins (0 = zero count).
    values
        ``"rna"``/``"protein"`` -> ``(B, G)`` continuous value (log-normalised RNA, CLR protein).
    peaks
        ``(B, P)`` 0/1 accessibility of every peak, or ``None`` without ATAC.
    mask
        modality -> ``(B, G)`` bool, True where the slot's value is hidden (absent modality,
        diffusion mask, or not yet generated).
    present
        ``(B, 3)`` bool, modality observed for the cell (order of :data:`MODALITIES`).
    library
        ``(B, 3)`` log library size per modality (0 where absent).
    batch, species
        ``(B,)`` long codes.
    peak_measured
        ``(B, P)`` bool, the peak was measured in the cell's data set (``None``: every peak of a
        present ATAC modality was). Peaks that were not are never scored by the loss.
    """

    bins: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    peaks: torch.Tensor | None
    mask: dict[str, torch.Tensor]
    present: torch.Tensor
    library: torch.Tensor
    batch: torch.Tensor
    species: torch.Tensor
    peak_measured: torch.Tensor | None = None

    def clone(self) -> Tokens:
        """Copy whose tensors (and dicts) can be changed without touching this one."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict):
                out[f.name] = {k: t.clone() for k, t in v.items()}
            else:
                out[f.name] = None if v is None else v.clone()
        return Tokens(**out)

    def select(self, index: torch.Tensor) -> Tokens:
        """The cells at ``index`` (advanced indexing: new tensors, the original is not affected)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, dict):
                out[f.name] = {k: t[index] for k, t in v.items()}
            else:
                out[f.name] = None if v is None else v[index]
        return Tokens(**out)

    def hide(self, modality: str) -> Tokens:
        """Copy with ``modality`` masked in every cell and its library size unknown."""
        out = replace(self, mask=dict(self.mask), present=self.present.clone(), library=self.library.clone())
        m = MODALITIES.index(modality)
        out.mask[modality] = torch.ones_like(self.mask[modality])
        out.present[:, m] = False
        out.library[:, m] = 0.0
        return out


class Tokenizer(nn.Module):
    """Turns per-modality count matrices into :class:`Tokens`.

    Parameters
    ----------
    n_anchors
        Number of gene anchors ``G``.
    feature_anchor
        Modality -> ``(n_features,)`` anchor index of each feature.
    n_bins
        Number of value bins (bin 0 = zero).
    """

    def __init__(self, n_anchors: int, feature_anchor: dict[str, np.ndarray], n_bins: int) -> None:
        super().__init__()
        self.n_anchors = n_anchors
        self.n_bins = n_bins
        self.modalities = [m for m in MODALITIES if m in feature_anchor]
        for m in self.modalities:
            self.register_buffer(f"{m}_anchor", torch.as_tensor(feature_anchor[m], dtype=torch.long))
            exists = torch.zeros(n_anchors, dtype=torch.bool)
            exists[torch.as_tensor(feature_anchor[m], dtype=torch.long)] = True
            self.register_buffer(f"{m}_exists", exists)

    def anchor_of(self, modality: str) -> torch.Tensor:
        """``(n_features,)`` anchor index of each feature of ``modality``."""
        return getattr(self, f"{modality}_anchor")

    def exists(self, modality: str) -> torch.Tensor:
        """``(G,)`` anchors that have a slot for ``modality``."""
        return getattr(self, f"{modality}_exists")

    def to_slots(self, modality: str, feature_values: torch.Tensor) -> torch.Tensor:
        """Scatter ``(B, F)`` feature values onto ``(B, G)`` anchor slots (0 where no slot)."""
        out = feature_values.new_zeros(feature_values.shape[0], self.n_anchors)
        out[:, self.anchor_of(modality)] = feature_values
        return out

    def from_slots(self, modality: str, slot_values: torch.Tensor) -> torch.Tensor:
        """Gather ``(B, G)`` anchor slots back to ``(B, F)`` features."""
        return slot_values[:, self.anchor_of(modality)]

    def forward(
        self,
        counts: dict[str, torch.Tensor],
        present: torch.Tensor,
        batch: torch.Tensor,
        species: torch.Tensor,
        measured: dict[str, torch.Tensor] | None = None,
    ) -> Tokens:
        """Tokenize a batch of cells.

        Parameters
        ----------
        counts
            Modality -> ``(B, F)`` raw counts (rows of absent cells are ignored).
        present
            ``(B, 3)`` bool, modality observed.
        batch, species
            ``(B,)`` codes.
        measured
            Optional modality -> ``(B, F)`` bool: the feature was measured in the cell's data set
            (merged data sets, :func:`holocell.data.merge_for_pretraining`). A slot of a feature that
            was not is masked, like an absent modality, not read as a zero; an ATAC anchor is masked
            when none of its peaks was measured.
        """
        n_cells = present.shape[0]
        device = present.device
        bins, values, mask = {}, {}, {}
        library = torch.zeros(n_cells, len(MODALITIES), device=device)
        peaks = None
        for m in self.modalities:
            x = counts[m].float()
            is_present = present[:, MODALITIES.index(m)]
            library[:, MODALITIES.index(m)] = torch.where(is_present, log_library(x), 0.0)
            mask[m] = (~is_present)[:, None] & self.exists(m)[None, :]
            if measured is not None and m in measured:
                mask[m] |= self._unmeasured_slots(m, measured[m])
            if m in SLOT_MODALITIES:
                bins[m] = self.to_slots(m, quantile_bins(x, self.n_bins))
                values[m] = self.to_slots(m, CONTINUOUS[m](x))
            else:
                peaks = CONTINUOUS[m](x) * is_present[:, None]
        peak_measured = measured["atac"].bool() if measured is not None and "atac" in measured else None
        return Tokens(bins, values, peaks, mask, present.bool(), library, batch.long(), species.long(), peak_measured)

    def _unmeasured_slots(self, modality: str, measured: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` True on slots none of whose features was measured (slots that exist only)."""
        n_measured = self.to_slots(modality, measured.float()) if modality in SLOT_MODALITIES else (
            measured.float().new_zeros(measured.shape[0], self.n_anchors).index_add_(
                1, self.anchor_of(modality), measured.float()
            )
        )
        return (n_measured == 0) & self.exists(modality)[None, :]
