"""HoloCell: the scvi-tools style user class (setup, construct; the rest from its mixins).

Each mixin is one job in one file: ``train`` in :mod:`._training_mixin` (the Lightning run itself is
:func:`holocell.train.fit`), embedding and generation in :mod:`._inference`, in-silico perturbation in
:mod:`._perturb_mixin`, save / load in :mod:`._save_mixin`, pretrained models, transfer and freezing in
:mod:`._transfer_mixin`. Reading a MuData (checked, in the model's feature order) is :mod:`._data_mixin`, through
:mod:`holocell.data.arrays`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anndata as ad
import pandas as pd
import torch
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManagerValidationCheck
from scvi.data.fields import MuDataCategoricalObsField
from scvi.model.base import BaseModelClass

from ..data.arrays import species_codes
from ..nn import HoloCellModule, NetworkConfig, ObjectiveConfig
from ..priors import check_prior_names
from ..train import TrainingConfig
from ..vocab import FeatureSpace
from ._arguments import check_arguments, check_setup_kwargs, check_training
from ._build import cell_state_settings, feature_space_for, prior_inputs, restore_reports
from ._data_mixin import DataMixin
from ._differential_mixin import DifferentialMixin
from ._expression import ExpressionMixin
from ._inference import InferenceMixin
from ._perturb_mixin import PerturbMixin
from ._save_mixin import SaveLoadMixin
from ._training_mixin import TrainingMixin
from ._transfer import kept_modalities
from ._transfer_mixin import TransferMixin
from ._validate import (
    data_fingerprint,
    data_manager,
    normalise_modalities,
    require_mudata,
    validate_setup,
)
from ._validate_obs import batches_with_cells, check_batch_unchanged


class HoloCell(DataMixin, TrainingMixin, InferenceMixin, ExpressionMixin, DifferentialMixin, PerturbMixin, SaveLoadMixin,
               TransferMixin, BaseModelClass):  # fmt: skip
    """Generative multi-omics transformer over gene-anchored tokens (RNA, ATAC, protein).

    Each cell is a sequence of gene-anchor tokens whose value slots hold the accessibility of
    the gene's linked peaks, its RNA and its protein. The model is trained by masked discrete
    diffusion (random slots and whole modalities hidden), embeds cells from any subset of
    modalities and generates a missing modality by iterative denoising with remasking.

    Parameters
    ----------
    mdata
        MuData registered with :meth:`setup_mudata`. Cells may lack modalities (mosaic data).
    d_model
        Width of tokens and latents.
    n_layers
        Transformer blocks over the latents.
    n_heads
        Attention heads.
    n_latents
        Latent vectors the tokens are read into (cost grows linearly with tokens).
    n_bins
        Value bins of the diffusion process (bin 0 = zero).
    dropout
        Dropout in attention and MLPs, in [0, 1).
    p_drop_modality
        Training: probability that a cell with several modalities is a cross-modal example (one
        modality hidden, entirely or in part, while the others stay visible).
    align_weight
        Training: weight of the term aligning the single-modality embeddings of cells measured with
        several modalities (0 = off). By default (``align_mode="distill_cross_nce_hidden"``) the cell
        state inferred for a cross-modal training example (one modality hidden) regresses onto the
        cell's joint state, held fixed, so that cells measured with one modality land where their
        paired counterparts are, and an RNA-only or protein-only view must also pick out, among the
        mini-batch's cells, its own cell's state from the other of the two alone (weight
        ``align_contrast_weight``, default 5); ``"distill_cross"`` is the regression alone,
        ``"distill"`` does it for every single modality (one more encoder pass each),
        ``"contrastive"`` is InfoNCE between the modalities.
    read_in_tokens
        Which anchor tokens the latents read: ``"all"`` (default), or only the ``"values"``: tokens
        that carry a value (expressed genes, measured proteins, anchors with open peaks), as
        Geneformer / scGPT read only expressed genes. Zero, [MASK] and absent tokens are then left
        out of the encoder (the decoder still predicts every slot).
    n_latent
        Size of the cell state ``z``, the embedding :meth:`get_latent_representation` returns.
    cell_state_kwargs
        Switches of the cell state (:class:`~holocell.nn.NetworkConfig` fields, for ablations): ``n_hidden``
        (count decoders' width), ``peak_factors``, ``peak_embeddings`` (each peak's own input vector), ``value_path``,
        ``latents_in_posterior``, ``tie_peaks_to_genes`` (an open peak reaches the state through its gene's RNA
        weights), ``tie_peak_decoder_to_genes`` (a peak's decoder weights include its gene's RNA row),
        ``z_in_denoiser``, ``z_grad_from_denoiser`` (False: the denoiser reads ``z``
        detached), ``batch_after_norm`` (count decoders add the batch after the norm), ``batch_in_encoder``,
        ``library_in_encoder``, and ``cell_state=False`` for the model without one.
    seed
        Seeds the initial weights (the global random state is left untouched).
    priors
        Prior knowledge added to the gene-anchor embeddings, any of ``"grn"`` (Pathway Commons
        TF -> target graph), ``"family"`` (Pfam domains, TF families), ``"position"`` (TSS
        position, hg38) and ``"coexpression"`` (from the registered RNA counts); ``"all"`` for all
        four, ``None`` for none. Each prior has its own projection and a gate that starts at 0.
        Mouse genes on a human anchor use the human gene's priors.
    grn_edges
        Your own TF -> target edges (DataFrame with columns ``tf``, ``target``) replacing the shipped
        GRN of the ``"grn"`` prior. Name the genes like the RNA var_names (they go to their features'
        anchors), like the anchors (``feature_space.anchors``), or as symbols / Ensembl ids of the setup's
        species (with ``species_key``, mouse symbols such as ``Cxcl1`` go to their human orthologs' anchors);
        a warning names edges of unknown genes. Other columns (weight, sign) are ignored.
    feature_space
        Anchors and feature maps to reuse (set by :meth:`load`); built from ``mdata`` when None.
    batch_categories
        Batch names in code order (set by :meth:`load`); default: the registered batch categories that have
        cells (an unused category, left by subsetting a categorical column, is no training batch: its cells
        elsewhere are read as a new batch, e.g. by :meth:`load_query_data`).
    train_config
        Optimiser and schedule settings of :meth:`train` (:class:`~holocell.train.TrainingConfig`, or a
        dict of its fields); default ``TrainingConfig()``.
    **objective_kwargs
        Further fields of :class:`~holocell.nn.ObjectiveConfig`, the training objective's settings:
        ``p_whole``, ``p_hide_library``, ``eps``, ``regression_weight``, ``align_mode``, ``align_temperature``,
        ``align_contrast_weight``, ``diffusion_weight``, ``elbo_weight``, ``kl_weight``, ``kl_warmup``,
        ``batch_mmd_weight`` (an MMD penalty between the batches' cell states, off by default; experimental: in the
        ablation it collapsed the cell state at weights 0.1-10, see ``docs/design.md``), ``batch_adversary_weight``
        (a batch classifier on the cell state that the encoder learns to defeat, off by default),
        ``batch_adversary_mode`` (its form, ``"confusion"`` or ``"reverse"``; see ``docs/design.md``) and
        ``gene_activity_weight`` (ATAC-only cells also reconstruct their open peaks summed per gene through the
        RNA decoder; off by default).

    Attributes
    ----------
    modalities_
        holocell modality -> modality name in ``mdata.mod``.
    feature_space
        Gene anchors and the map of every feature onto them (``feature_space.maps[m].report``).
    batch_categories_
        Training batch names in code order; other batches embed as "unseen".
    config
        Network sizes (:class:`~holocell.nn.NetworkConfig`).
    objective_config
        Diffusion objective settings (:class:`~holocell.nn.ObjectiveConfig`); saved with the model.
    train_config
        Training settings (:class:`~holocell.train.TrainingConfig`); saved with the model.
    priors_, prior_report_
        Prior names in use; per prior, its columns and the anchors it knows (``None`` after load; after a transfer
        also ``n_new_unknown``, the anchors new to the reference it does not know).
    module
        The torch module (:class:`~holocell.nn.HoloCellModule`).
    is_trained_, history_, train_indices_, validation_indices_
        Set by :meth:`train`: trained flag, one row of losses per epoch, the cells of each split.
    transfer_report_
        Set by :meth:`load_pretrained` / :meth:`load_query_data`: how much of the data the reference knows.
    init_params_
        The constructor's arguments (scvi-tools convention).

    Examples
    --------
    >>> import holocell as hc
    >>> mdata = hc.data.pbmc_cite_mosaic()
    >>> hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    >>> model = hc.HoloCell(mdata)
    >>> model.train(max_epochs=20)
    >>> mdata.obsm["X_holocell"] = model.get_latent_representation()
    >>> model.generate(mdata, target="protein", key_added="adt_generated")
    """

    def __init__(
        self,
        mdata: MuData,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        n_latents: int = 32,
        n_bins: int = 16,
        dropout: float = 0.0,
        p_drop_modality: float = 0.5,
        align_weight: float = 1.0,
        read_in_tokens: str = "all",
        n_latent: int = 32,
        cell_state_kwargs: dict | None = None,
        seed: int = 0,
        priors: str | Sequence[str] | None = None,
        grn_edges: pd.DataFrame | None = None,
        feature_space: dict | None = None,
        *,
        batch_categories: Sequence[str] | None = None,
        train_config: TrainingConfig | dict | None = None,
        **objective_kwargs,
    ) -> None:
        require_mudata(mdata, ", set it up with HoloCell.setup_mudata, then pass it")
        objective_kwargs = check_arguments(locals(), objective_kwargs)
        try:
            super().__init__(mdata)
        except ValueError as err:  # scvi-tools' "Did you make a copy?" names no fix
            if "make a copy" not in str(err):
                raise
            raise ValueError(
                "This MuData was set up earlier as another object: a copy (e.g. mdata[cells].copy()) or the same "
                "data written and read back from a file. The set-up does not carry over to a copy or a file: run "
                "HoloCell.setup_mudata on it (with the same arguments), then create the model."
            ) from err
        loading = feature_space is not None
        setup = self._setup_args
        kept = kept_modalities()  # a query model: the reference's modalities its data lack (load_query_data)
        self.modalities_: dict[str, str] = dict(setup["modalities"]) | {m: name for m, (name, _) in kept.items()}
        space = (FeatureSpace.from_dict(feature_space) if loading
                 else feature_space_for(mdata, self.modalities_, setup, {m: f for m, (_, f) in kept.items()}))  # fmt: skip
        if loading:  # a checkpoint holds the anchors, not the reports: rebuilt from the data and the setup
            restore_reports(space, mdata, dict(setup["modalities"]), setup)
            self.modalities_ |= {m: m for m in space.maps if m not in self.modalities_}  # named by restore_transfer
        self.feature_space = space
        if batch_categories is None:
            check_batch_unchanged(self.adata_manager, mdata)
            batch_categories = batches_with_cells(self.adata_manager, mdata)
        self.batch_categories_: list[str] = [str(c) for c in batch_categories]
        self.config = NetworkConfig(
            n_anchors=space.n_anchors,
            n_bins=n_bins,
            n_batches=len(self.batch_categories_),
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            n_latents=n_latents,
            dropout=dropout,
            read_in_tokens=read_in_tokens,
            n_latent=n_latent,
            **cell_state_settings(cell_state_kwargs),
        )
        self.objective_config = ObjectiveConfig.from_dict(
            {"p_drop_modality": p_drop_modality, "align_weight": align_weight, **objective_kwargs}
        )
        if isinstance(train_config, dict):
            train_config = TrainingConfig.from_dict(check_training(train_config, "HoloCell(train_config=...)"))
        self.train_config: TrainingConfig = train_config or TrainingConfig()
        self._fingerprint = data_fingerprint(mdata, setup["modalities"], setup.get("batch_key"))
        self.priors_: list[str] = check_prior_names(priors)
        if grn_edges is not None and "grn" not in self.priors_:
            raise ValueError(
                f"grn_edges feed the 'grn' prior, which priors={priors!r} does not include; pass priors=['grn', ...] "
                "too, or leave grn_edges out."
            )
        coexpression = "coexpression" in self.priors_ and "rna" in self.modalities_ and not loading
        priors_in, self.prior_report_ = prior_inputs(
            space, self.priors_, grn_edges=grn_edges, arrays=self._arrays(None)[1] if coexpression else None,
            loading=loading, species=setup.get("species", "human"), gene_id_type=setup.get("gene_id_type", "auto"),
            mixed_species=setup.get("species_key") is not None,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = HoloCellModule(
                self.config,
                {m: space.maps[m].anchor for m in self.modalities_},
                space.maps["atac"].bucket if "atac" in space.maps else None,
                objective=self.objective_config,
                priors=priors_in,
            )
        n_params = sum(p.numel() for p in self.module.parameters())
        self._model_summary_string = (
            f"HoloCell model: modalities {self.modalities_}, {space.n_anchors} gene anchors, "
            f"d_model={d_model}, n_layers={n_layers}, n_latents={n_latents}, priors {self.priors_ or None}, "
            f"{n_params:,} parameters."
        )
        self.init_params_ = self._get_init_params(locals())
        for saved_apart in ("feature_space", "grn_edges", "batch_categories", "train_config"):
            self.init_params_["non_kwargs"].pop(saved_apart, None)  # JSON of their own, or in the weights

    @property
    def device(self) -> torch.device:
        """The device that holds the model's weights (scvi-tools' ``model.device``)."""
        return next(self.module.parameters()).device

    def view_anndata_setup(self, adata: MuData | None = None, hide_state_registries: bool = False) -> None:
        """Print how the model's data are set up: the ``setup_mudata`` call, the modalities and the batches.

        Replaces scvi-tools' method, which names ``setup_anndata`` (holocell registers MuData) and fails
        on scvi-tools 1.4 (``rich.pretty`` is not imported there). ``adata``: unused, the setup is the
        model's; ``hide_state_registries``: leave out the batch names.
        """
        args = ", ".join(f"{k}={v!r}" for k, v in self._setup_args.items())
        print(f"{type(self).__name__}.setup_mudata(mdata, {args})")
        sizes = {m: len(fmap.features) for m, fmap in self.feature_space.maps.items()}
        print(f"modalities {self.modalities_}, features per modality {sizes}")
        if not hide_state_registries:
            print(f"{len(self.batch_categories_)} training batches: {self.batch_categories_}")

    # ------------------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(cls, adata: ad.AnnData, **kwargs) -> None:
        """Not used: holocell registers MuData. Wrap a single modality first.

        Raises
        ------
        TypeError
            Always, with the one-line fix.
        """
        raise TypeError(
            "HoloCell works on MuData. Wrap your AnnData, e.g. mdata = mudata.MuData({'rna': adata}), "
            "then call HoloCell.setup_mudata(mdata, modalities={'rna': 'rna'}, ...)."
        )

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        modalities: dict[str, str],
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        protein_layer: str | None = None,
        batch_key: str | None = None,
        species: Literal["human", "mouse"] = "human",
        genome: str | None = None,
        gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
        species_key: str | None = None,
        allow_unmatched_genes: bool = False,
        **kwargs,
    ) -> None:
        """Register a (possibly mosaic) MuData for holocell.

        Parameters
        ----------
        mdata
            MuData with any non-empty subset of RNA, ATAC and protein modalities. Cells may be
            missing from any modality: their slots are masked, never zero-filled.
        modalities
            holocell modality -> modality name in ``mdata.mod``, e.g.
            ``{"rna": "rna", "protein": "adt"}``. Keys: ``"rna"``, ``"atac"``, ``"protein"``
            (scvi-style ``"rna_layer"`` etc. are accepted too).
        rna_layer, atac_layer, protein_layer
            Layer holding raw counts (``None`` = ``.X``).
        batch_key
            Column of the global ``mdata.obs`` with the batch of every cell.
        species
            ``"human"`` or ``"mouse"``: the species of the feature names. Genes are placed on
            canonical human gene anchors (mouse genes through one-to-one HCOP orthologs; others
            keep an anchor ``mouse:<symbol>``); see ``model.feature_space.maps["rna"].report``.
            It is also every cell's species token unless ``species_key`` is given (then it must be ``"human"``).
        genome
            Genome build for peak -> gene links: ``"hg38"``, ``"hg19"``, ``"mm10"`` or a BED/GTF
            path. Without it, ATAC needs ``chrom``/``tss``/``strand`` columns in the RNA ``.var``.
        gene_id_type
            RNA var names are gene symbols (``"symbol"``), Ensembl ids (``"ensembl"``), or
            ``"auto"`` (each name that looks like an Ensembl gene id is read as one).
        species_key
            Column of the global ``mdata.obs`` with ``"human"`` / ``"mouse"`` per cell (the species
            token), for data sets that combine species on one anchor vocabulary: RNA names are human anchors
            (mouse genes renamed with :func:`holocell.vocab.rename_to_anchors`, or data sets merged with
            :func:`holocell.data.merge_datasets`, which also masks genes a species did not measure).
            Default: ``species`` for every cell.
        allow_unmatched_genes
            When no RNA feature name is a known gene of the vocabulary (wrong species, ids of
            another kind), train anyway on dataset-only anchors (no gene identity, priors or
            transfer by gene) instead of raising. Below 50% matched, setup warns either way.
            Recorded in the setup arguments, so :meth:`load` replays it.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`. scvi-tools' set-up arguments that holocell
            does not take (``layer``, ``labels_key``, ``categorical_covariate_keys``, ...) raise ``TypeError``
            naming holocell's way.

        Notes
        -----
        Writes only what scvi-tools writes for registration: ``mdata.uns["_scvi_uuid"]``,
        ``mdata.uns["_scvi_manager_uuid"]`` and ``mdata.obs["_scvi_batch"]``.
        """
        check_setup_kwargs(kwargs)  # scvi-tools' layer=, labels_key=, ...: holocell's way, before any work
        modalities = normalise_modalities(modalities)
        setup_method_args = cls._get_setup_method_args(**locals())
        setup_method_args["setup_args"]["modalities"] = modalities
        if gene_id_type not in ("auto", "symbol", "ensembl"):
            raise ValueError(f"gene_id_type must be 'auto', 'symbol' or 'ensembl', got {gene_id_type!r}.")
        layers = {"rna": rna_layer, "atac": atac_layer, "protein": protein_layer}
        validate_setup(
            mdata, modalities, layers, batch_key, species, genome, gene_id_type, allow_unmatched_genes, species_key
        )
        if species_key is not None:  # validate_setup checked the column and the names (_validate_species)
            species_codes(mdata, species_key)  # raises on values other than human / mouse
        manager = data_manager(  # holds a backed MuData weakly: scvi's stores would keep its file open
            mdata,
            fields=[MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=None)],
            setup_method_args=setup_method_args,
            validation_checks=AnnDataManagerValidationCheck(check_fully_paired_mudata=False),
        )
        manager.register_fields(mdata, **kwargs)
        cls.register_manager(manager)


__all__ = ["HoloCell"]

