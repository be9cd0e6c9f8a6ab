"""Masked discrete diffusion: the forward (masking) process and the training loss.

Per cell a time ``t ~ U(eps, 1)`` is drawn (stratified over the batch); each observed slot is hidden
with probability ``t``. With probability ``p_drop_modality`` a cell that has at least two observed
modalities is instead a cross-modal example: one modality is hidden (entirely, or at rate ``t``)
while the others stay visible, which is what teaches cross-modal generation. The loss is the
cross-entropy over value bins on hidden observed slots, weighted by ``1 / t`` (MDLM / LLaDA; a
whole-modality mask counts as ``t = 1``), plus a regression loss on the continuous value and a
Bernoulli loss on each hidden peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tokenize import Tokens
from ..vocab import MODALITIES


@dataclass
class LossOutput:
    """Named parts of the diffusion loss (all scalars)."""

    loss: torch.Tensor
    per_modality: dict[str, torch.Tensor]
    regression: torch.Tensor


@dataclass
class NoisedTokens:
    """Tokens after the forward process, with what the loss needs to know about the masking."""

    tokens: Tokens
    target: dict[str, torch.Tensor]  # modality -> (B, G) bool: hidden and observed -> scored
    weight: dict[str, torch.Tensor]  # modality -> (B,) loss weight of the cell


def sample_times(n: int, eps: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """Stratified ``t`` in ``[eps, 1)``: one draw per equal-width stratum, shuffled (low variance)."""
    u = (torch.arange(n, device=device) + torch.rand(n, generator=generator, device=device)) / n
    u = u[torch.randperm(n, generator=generator, device=device)]
    return eps + (1 - eps) * u


def add_noise(
    tokens: Tokens,
    exists: dict[str, torch.Tensor],
    *,
    eps: float = 0.02,
    p_drop_modality: float = 0.5,
    p_whole: float = 0.5,
    p_hide_library: float = 0.25,
    generator: torch.Generator | None = None,
) -> NoisedTokens:
    """Forward process: hide slots at random, or hide one modality given the others.

    Each cell is noised in one of two ways:

    - *joint*: every observed slot is hidden with probability ``t``;
    - *cross-modal* (probability ``p_drop_modality``, cells with >= 2 observed modalities): one
      observed modality is the target. With probability ``p_whole`` it is hidden entirely
      (``t = 1``, the first step of generation), otherwise each of its slots with probability
      ``t``; its library size is hidden; the other modalities stay fully visible. This is
      exactly the state iterative generation of that modality passes through (sources clean,
      target partly committed), as in conditional masked-diffusion fine-tuning (LLaDA).

    Parameters
    ----------
    tokens
        Clean tokens (absent modalities already masked).
    exists
        Modality -> ``(G,)`` anchors with a slot for it.
    eps
        Smallest masking rate.
    p_drop_modality
        Probability of a cross-modal example for a cell with >= 2 observed modalities.
    p_whole
        Probability that a cross-modal target is hidden entirely.
    p_hide_library
        Joint examples: probability that a modality's library size is hidden as well.
    generator
        Random generator (for reproducible validation losses).
    """
    device = tokens.present.device
    B = tokens.present.shape[0]
    modalities = list(exists)
    present = tokens.present[:, [MODALITIES.index(m) for m in modalities]]  # (B, M)
    t = sample_times(B, eps, generator, device)
    n_present = present.sum(1)
    cross = (torch.rand(B, generator=generator, device=device) < p_drop_modality) & (n_present >= 2)
    scores = torch.rand(B, len(modalities), generator=generator, device=device).masked_fill(~present, -1.0)
    is_target = F.one_hot(scores.argmax(1), len(modalities)).bool() & cross[:, None]  # (B, M)
    whole = cross & (torch.rand(B, generator=generator, device=device) < p_whole)
    t_cell = torch.where(whole, torch.ones_like(t), t)

    noised = tokens.clone()
    target, weight = {}, {}
    for j, m in enumerate(modalities):
        G = exists[m].shape[0]
        random_mask = torch.rand(B, G, generator=generator, device=device) < t_cell[:, None]
        # cross-modal cells: only the target modality is noised
        noised_here = ~cross | is_target[:, j]
        hide = random_mask & noised_here[:, None] & exists[m][None, :]
        noised.mask[m] = tokens.mask[m] | hide
        target[m] = hide & ~tokens.mask[m]  # observed slots only: not an absent modality or unmeasured feature
        weight[m] = 1.0 / t_cell
        k = MODALITIES.index(m)
        random_library = ~cross & (torch.rand(B, generator=generator, device=device) < p_hide_library)
        hide_library = is_target[:, j] | random_library
        noised.library[:, k] = torch.where(hide_library, 0.0, noised.library[:, k])
        noised.present[:, k] &= ~hide_library
    return NoisedTokens(noised, target, weight)


def diffusion_loss(
    outputs: dict[str, torch.Tensor],
    clean: Tokens,
    noised: NoisedTokens,
    exists: dict[str, torch.Tensor],
    peak_anchor: torch.Tensor | None = None,
    regression_weight: float = 1.0,
) -> LossOutput:
    """Weighted loss on the hidden observed slots.

    Each modality's loss is a per-cell sum over scored slots divided by the number of the
    modality's slots (so a cell's loss is an estimate of its per-token negative ELBO), averaged
    over cells that observe the modality.
    """
    per_modality, regression = {}, clean.library.new_zeros(())
    total = clean.library.new_zeros(())
    for m, tgt in noised.target.items():
        n_slots = exists[m].sum().clamp(min=1)
        observed = clean.present[:, MODALITIES.index(m)]
        if not observed.any():
            continue
        if m == "atac":
            peak_target = tgt[:, peak_anchor]  # (B, P)
            if clean.peak_measured is not None:  # peaks the cell's data set did not measure are not scored
                peak_target = peak_target & clean.peak_measured
            bce = F.binary_cross_entropy_with_logits(outputs["atac_logits"], clean.peaks, reduction="none")
            per_cell = (bce * peak_target).sum(1) / peak_anchor.shape[0]
        else:
            ce = F.cross_entropy(outputs[f"{m}_logits"].transpose(1, 2), clean.bins[m], reduction="none")
            per_cell = (ce * tgt).sum(1) / n_slots
            sq = (outputs[f"{m}_value"] - clean.values[m]) ** 2
            reg = ((sq * tgt).sum(1) / n_slots * noised.weight[m])[observed].mean()
            regression = regression + reg
            total = total + regression_weight * reg
        loss_m = (per_cell * noised.weight[m])[observed].mean()
        per_modality[m] = loss_m.detach()
        total = total + loss_m
    return LossOutput(total, per_modality, regression.detach())
