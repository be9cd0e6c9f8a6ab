"""Masked discrete diffusion: the forward (masking) process and the training loss.

Per cell a time ``t ~ U(eps, 1)`` is drawn (stratified over the batch); each observed slot is hidden
with probability ``t``. With probability ``p_drop_modality`` a cell that has at least two observed
modalities is instead a cross-modal example: one modality is hidden (entirely, or at rate ``t``)
while the others stay visible, which is what teaches cross-modal generation. The loss is the
cross-entropy over value bins on hidden observed slots, weighted by ``1 / t`` (MDLM / LLaDA; a
whole-modality mask counts as ``t = 1``), plus a regression loss on the continuous value and a
Bernoulli loss on each hidden peak. An optional contrastive term aligns the single-modality
embeddings of cells measured with several modalities. With a cell state the negative ELBO of every
observed modality's counts given ``z`` (:mod:`._count_decoder`) is added; ``z`` is inferred from the same
noised tokens the denoiser sees, so it learns to summarise a cell from any subset of its modalities and
values. :class:`ObjectiveConfig` holds every knob; :func:`objective` puts the pieces together for a mini-batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..tokenize import Tokens
from ..vocab import MODALITIES
from ._align import ALIGN_MODES, AlignmentScale, alignment_loss, cross_distill_loss
from ._cellstate import kl_normal, sample_z
from ._count_decoder import gene_activity_nll, reconstruction_nll
from ._mixing import ADVERSARY_MODES, BatchAdversary, batch_mmd

if TYPE_CHECKING:
    from .transformer import HoloCellNetwork


@dataclass
class ObjectiveConfig:
    """Settings of the masked-diffusion training objective; saved in checkpoints (``"objective"``).

    Set them from the model, e.g. ``HoloCell(mdata, p_hide_library=0.1)``; a new field with a default
    is all a new term needs (old checkpoints load with the defaults).

    Attributes
    ----------
    p_drop_modality
        Probability that a cell with >= 2 observed modalities is a cross-modal example (one modality
        hidden, the others visible); see :func:`add_noise`.
    p_whole
        Probability that a cross-modal target is hidden entirely (``t = 1``) rather than at rate ``t``.
    p_hide_library
        Joint examples: probability that a modality's library size is hidden as well.
    eps
        Smallest masking rate ``t`` (``t ~ U(eps, 1)``); bounds the ``1 / t`` loss weight by ``1 / eps``.
    regression_weight
        Weight of the squared error of the continuous value (RNA / protein) beside the bin cross-entropy.
    align_weight
        Weight of the alignment term between the single-modality embeddings of a cell with >= 2 modalities.
        0 switches it off.
    align_mode
        ``"contrastive"``: InfoNCE between each pair of single-modality embeddings over the mini-batch.
        ``"distill"``: each single-modality posterior mean regresses onto the cell's joint posterior mean,
        which is held fixed (no gradient), so a weak modality learns the joint state without pulling it.
        ``"distill_cross"``: the same for the state the denoiser already infers for the cross-modal
        examples (one modality hidden); it costs one forward pass without gradient over those cells only.
        ``"distill_cross_scaled"``: as ``"distill_cross"``, each cell's distance weighed by a learnt noise scale
        of its hidden modality (:class:`holocell.nn._align.AlignmentScale`): views that predict the joint
        state well are pulled harder.
        ``"distill_cross_symmetric"``: as ``"distill_cross"``, with gradient through the joint state too, so
        the joint state is also pulled towards the one-modality-hidden state (costs a backward pass over
        those cells).
        ``"distill_cross_nce"``: as ``"distill_cross"``, plus a contrastive term: each cross-modal state must
        pick out its own joint state among the mini-batch's (InfoNCE over squared distances, weight
        ``align_contrast_weight``), so that a view cannot settle at the centre of its cell type.
        ``"distill_cross_nce_hidden"`` (default): as ``"distill_cross_nce"``, but a view must pick out the state of its
        cell's hidden modality alone (one more forward pass without gradient over those views), and only RNA
        <-> protein views take part (``holocell.nn._align.CONTRAST_MODALITIES``; a view that shows ATAC or an
        ATAC target lost SNARE-seq2's cell state or the simulator's batch mixing in the ablation). On data
        without both RNA and protein no view takes part, and it is ``"distill_cross"`` exactly.
        ``"joint_contrastive"``: InfoNCE of each single-modality embedding against the fixed joint one.
    align_temperature
        Softmax temperature of the contrastive terms (for the ``"distill_cross_nce"`` modes, a fraction of the
        median squared distance between the states).
    align_contrast_weight
        The ``"distill_cross_nce"`` modes: weight of the contrastive part beside the distillation (1: the same largest
        gradient per distance). Default 5, chosen with ``"distill_cross_nce_hidden"`` on PBMC validation data
        (``docs/design.md``, "The contrastive target: the other modality alone").
    diffusion_weight
        Weight of the masked-diffusion loss (0 trains the cell state alone, for the ablation).
    elbo_weight
        Weight of the cell state's negative ELBO (reconstruction + KL), per feature of the cell's modalities.
    kl_weight
        Weight of the KL term inside the ELBO (1 is the ELBO).
    kl_warmup
        The KL weight rises linearly from 0 over this fraction of a training run (default 0.1; it was 0.33
        before the schedule ablation, ``docs/design.md``).
    batch_mmd_weight
        Weight of an MMD penalty between the cell states (posterior means) of the batches in each mini-batch
        (:func:`holocell.nn._mixing.batch_mmd`); 0 (default) is off. Experimental: on PBMC and SNARE-seq2 it
        collapsed the cell state at weights 0.1-10 (``docs/design.md``, "Batch mixing term").
    batch_adversary_weight
        Weight of a batch adversary on the cell state (:class:`holocell.nn._mixing.BatchAdversary`: a classifier
        of the batch that the encoder learns to defeat); 0 (default) is off.
    batch_adversary_mode
        Its form: ``"confusion"`` (default; the encoder makes the classifier's prediction uniform) or
        ``"reverse"`` (a gradient reversal layer).
    gene_activity_weight
        Weight of a gene-activity term for cells measured by ATAC but not RNA
        (:func:`holocell.nn._count_decoder.gene_activity_nll`: their open peaks summed per gene, read by the RNA
        decoder); 0 (default) is off.
    elbo_input
        What the cell state of the ELBO is inferred from: ``"noised"``, the denoiser's own input (slots hidden at
        rate ``t``), or ``"clean"``, the cell's clean tokens with only the cross-modal target modality hidden
        (what embedding reads; one more encoder pass when the posterior reads the latents). The denoiser's
        ``z`` always comes from its own input.
    """

    p_drop_modality: float = 0.5
    p_whole: float = 0.5
    p_hide_library: float = 0.25
    eps: float = 0.02
    regression_weight: float = 1.0
    align_weight: float = 1.0
    align_temperature: float = 0.1
    align_contrast_weight: float = 5.0
    align_mode: str = "distill_cross_nce_hidden"
    diffusion_weight: float = 1.0
    elbo_weight: float = 10.0
    kl_weight: float = 1.0
    kl_warmup: float = 0.1
    elbo_input: str = "noised"
    batch_mmd_weight: float = 0.0
    batch_adversary_weight: float = 0.0
    batch_adversary_mode: str = "confusion"
    gene_activity_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_drop_modality", "p_whole", "p_hide_library"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)!r}.")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps!r}.")
        if self.align_mode not in ALIGN_MODES:
            raise ValueError(f"align_mode must be one of {ALIGN_MODES}, got {self.align_mode!r}.")
        if self.batch_adversary_mode not in ADVERSARY_MODES:
            raise ValueError(
                f"batch_adversary_mode must be one of {ADVERSARY_MODES}, got {self.batch_adversary_mode!r}."
            )
        if self.elbo_input not in ("noised", "clean"):
            raise ValueError(f"elbo_input must be 'noised' or 'clean', got {self.elbo_input!r}.")
        if not 0.0 <= self.kl_warmup <= 1.0:
            raise ValueError(f"kl_warmup is a fraction of the run in [0, 1], got {self.kl_warmup!r}.")
        for name in ("regression_weight", "align_weight", "align_contrast_weight", "diffusion_weight",
                     "elbo_weight", "kl_weight", "batch_mmd_weight", "batch_adversary_weight", "gene_activity_weight"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}.")
        if self.align_temperature <= 0:
            raise ValueError(f"align_temperature must be > 0, got {self.align_temperature!r}.")

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ObjectiveConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown objective settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


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
    cross_target: dict[str, torch.Tensor] | None = None  # modality -> (B,) bool: the cell's cross-modal target


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
    cross_target = {m: is_target[:, j] for j, m in enumerate(modalities)}
    return NoisedTokens(noised, target, weight, cross_target)


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


def subset_view(clean: Tokens, noised: NoisedTokens, exists: dict[str, torch.Tensor]) -> Tokens:
    """The clean tokens with each cell's cross-modal target modality hidden (its other slots all visible)."""
    view = clean.clone()
    for m, target in (noised.cross_target or {}).items():
        view.mask[m] = view.mask[m] | (target[:, None] & exists[m][None, :])
        k = MODALITIES.index(m)
        view.library[:, k] = torch.where(target, 0.0, view.library[:, k])
        view.present[:, k] &= ~target
    return view


def objective(
    network: HoloCellNetwork,
    clean: Tokens,
    exists: dict[str, torch.Tensor],
    config: ObjectiveConfig,
    generator: torch.Generator | None = None,
    counts: dict[str, torch.Tensor] | None = None,
    kl_scale: float = 1.0,
    measured: dict[str, torch.Tensor] | None = None,
    adversary: BatchAdversary | None = None,
    align_scale: AlignmentScale | None = None,
) -> LossOutput:
    """The training loss of a mini-batch: noise the clean tokens, predict, score (plus the cell state's
    negative ELBO, the alignment term and, if asked for, the batch-mixing terms).

    Parameters
    ----------
    network
        The network being trained.
    clean
        Tokenized cells (absent modalities masked).
    exists
        Modality -> ``(G,)`` anchors with a slot for it.
    config
        The objective's settings.
    generator
        Random generator of the masks (fixed for reproducible validation losses).
    counts
        Modality -> ``(B, F)`` raw counts of RNA / protein (needed with a cell state).
    kl_scale
        Warm-up factor of the KL weight (the training plan's schedule; 1 for validation).
    measured
        Modality -> ``(B, F)`` bool, features each cell's data set measured (merged data sets; default all).
    adversary
        The batch adversary (with ``config.batch_adversary_weight > 0``).
    align_scale
        The alignment's learnt noise scales (with ``align_mode="distill_cross_scaled"``).
    """
    noised = add_noise(
        clean,
        exists,
        eps=config.eps,
        p_drop_modality=config.p_drop_modality,
        p_whole=config.p_whole,
        p_hide_library=config.p_hide_library,
        generator=generator,
    )
    outputs = network(noised.tokens)
    peak_anchor = network.peak_anchor if "atac" in exists else None
    out = diffusion_loss(outputs, clean, noised, exists, peak_anchor, config.regression_weight)
    out.loss = config.diffusion_weight * out.loss
    if network.config.cell_state:
        mu, logvar, z = outputs["qz_mu"], outputs["qz_logvar"], outputs["z"]
        if config.elbo_input == "clean":
            mu, logvar = network.cell_posterior(subset_view(clean, noised, exists))
            z = sample_z(mu, logvar) if network.training else mu
        nll = reconstruction_nll(network.counts, z, clean, counts or {}, track=network.training, measured=measured)
        if config.gene_activity_weight > 0:
            nll = nll + config.gene_activity_weight * gene_activity_nll(network.counts, z, clean)
        kl = kl_normal(mu, logvar)
        n_features = sum(
            (peak_anchor.shape[0] if m == "atac" else counts[m].shape[1]) * clean.present[:, MODALITIES.index(m)]
            for m in exists
        ).clamp(min=1)  # (B,) features of each cell's observed modalities
        elbo = ((nll + config.kl_weight * kl_scale * kl) / n_features).mean()
        out.per_modality["elbo"] = elbo.detach()
        out.per_modality["kl"] = kl.mean().detach()
        out.loss = out.loss + config.elbo_weight * elbo
        if config.batch_mmd_weight > 0:
            mixing = batch_mmd(mu, clean.batch)
            out.per_modality["batch_mmd"] = mixing.detach()
            out.loss = out.loss + config.batch_mmd_weight * mixing
        if adversary is not None and config.batch_adversary_weight > 0:
            confusion = adversary(mu, clean.batch)
            out.per_modality["batch_adversary"] = confusion.detach()
            out.loss = out.loss + config.batch_adversary_weight * confusion
    if config.align_weight > 0 and config.align_mode.startswith("distill_cross") and network.config.cell_state:
        symmetric = config.align_mode == "distill_cross_symmetric"
        contrast = None
        if config.align_mode.startswith("distill_cross_nce"):
            contrast = (config.align_temperature, config.align_contrast_weight)
        align = cross_distill_loss(network, clean, noised, outputs["qz_mu"], align_scale, symmetric, contrast,
                                   contrast_to_hidden=config.align_mode == "distill_cross_nce_hidden")
        out.per_modality["align"] = align.detach()
        out.loss = out.loss + config.align_weight * align
    elif config.align_weight > 0:
        align = alignment_loss(network, clean, list(exists), config.align_temperature, config.align_mode)
        out.per_modality["align"] = align.detach()
        out.loss = out.loss + config.align_weight * align
    return out
