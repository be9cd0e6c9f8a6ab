"""HoloCell: the scvi-tools style user class (setup, train, embed, generate, save/load)."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import lightning.pytorch as pl
import mudata
import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, AnnDataManagerValidationCheck
from scvi.data.fields import MuDataCategoricalObsField
from scvi.model.base import BaseModelClass
from tqdm.auto import tqdm

from .._warnings import HoloCellWarning
from ..data._mosaic import MosaicArrays, collect_arrays, make_loader
from ..data._streaming import BackedMosaicArrays, collect_backed_arrays, is_backed
from ..nn import HoloCellModule, NetworkConfig
from ..priors import PRIOR_INPUT_DIMS, check_prior_names, load_priors
from ..train import MosaicDataModule, TrainingPlan, split_indices
from ..vocab import MODALITIES, SPECIES, FeatureSpace, build_feature_space, map_proteins_to_genes
from . import _checkpoint, _pretrained, _transfer
from ._perturb_mixin import PerturbMixin
from ._validate import (
    check_mudata,
    check_unchanged,
    data_fingerprint,
    gene_table_for,
    normalise_modalities,
    validate_setup,
)

_GENERATED_TRANSFORM = {
    "rna": "log1p(counts / library * 1e4)",
    "protein": "CLR: log1p(counts) - mean over antibodies of log1p(counts)",
    "atac": "probability that the peak is accessible",
}


class HoloCell(PerturbMixin, BaseModelClass):
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
        Dropout in attention and MLPs.
    p_drop_modality
        Training: probability that a cell with several modalities is a cross-modal example (one
        modality hidden, entirely or in part, while the others stay visible).
    align_weight
        Training: weight of a contrastive term pulling together the single-modality embeddings of
        cells measured with several modalities (0 = off).
    read_in_tokens
        Which anchor tokens the latents read: ``"all"`` (default), or only the ``"values"``: tokens
        that carry a value (expressed genes, measured proteins, anchors with open peaks), as
        Geneformer / scGPT read only expressed genes. Zero, [MASK] and absent tokens are then left
        out of the encoder (the decoder still predicts every slot).
    seed
        Seeds the initial weights (the global random state is left untouched).
    priors
        Prior knowledge added to the gene-anchor embeddings, any of ``"grn"`` (Pathway Commons
        TF -> target graph), ``"family"`` (Pfam domains, TF families), ``"position"`` (TSS
        position, hg38) and ``"coexpression"`` (from the registered RNA counts); ``"all"`` for all
        four, ``None`` for none. Each prior has its own projection and a gate that starts at 0.
        Mouse genes on a human anchor use the human gene's priors.
    grn_edges
        Your own TF -> target edges (DataFrame with columns ``tf``, ``target``, named like the
        anchors) replacing the shipped GRN of the ``"grn"`` prior.
    feature_space
        Anchors and feature maps to reuse (set by :meth:`load`); built from ``mdata`` when None.

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
        align_weight: float = 0.0,
        read_in_tokens: str = "all",
        seed: int = 0,
        priors: str | Sequence[str] | None = None,
        grn_edges: pd.DataFrame | None = None,
        feature_space: dict | None = None,
    ) -> None:
        super().__init__(mdata)
        loading = feature_space is not None
        setup = self.adata_manager.registry["setup_args"]
        self.modalities_: dict[str, str] = dict(setup["modalities"])
        if feature_space is None:
            var = {m: mdata.mod[name].var for m, name in self.modalities_.items()}
            gene_table = (
                gene_table_for(mdata, self.modalities_, setup.get("genome")) if "atac" in var else None
            )
            space = build_feature_space(
                var,
                map_proteins=map_proteins_to_genes,
                gene_table=gene_table,
                species=setup.get("species", "human"),
                gene_id_type=setup.get("gene_id_type", "auto"),
            )
        else:
            space = FeatureSpace.from_dict(feature_space)
        self.feature_space = space
        self.batch_categories_: list[str] = [
            str(c) for c in self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        ]
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
        )
        feature_anchor = {m: space.maps[m].anchor for m in self.modalities_}
        peak_bucket = space.maps["atac"].bucket if "atac" in space.maps else None
        self._fingerprint = data_fingerprint(mdata, self.modalities_)
        self.priors_: list[str] = check_prior_names(priors)
        prior_inputs = self._prior_inputs(space, grn_edges, zeros=loading)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = HoloCellModule(
                self.config,
                feature_anchor,
                peak_bucket,
                p_drop_modality=p_drop_modality,
                align_weight=align_weight,
                priors=prior_inputs,
            )
        n_params = sum(p.numel() for p in self.module.parameters())
        self._model_summary_string = (
            f"HoloCell model: modalities {self.modalities_}, {space.n_anchors} gene anchors, "
            f"d_model={d_model}, n_layers={n_layers}, n_latents={n_latents}, priors {self.priors_ or None}, "
            f"{n_params:,} parameters."
        )
        self.init_params_ = self._get_init_params(locals())
        self.init_params_["non_kwargs"].pop("feature_space", None)  # saved separately, as JSON
        self.init_params_["non_kwargs"].pop("grn_edges", None)  # the prior matrices are in the weights

    def _prior_inputs(self, space: FeatureSpace, grn_edges, zeros: bool) -> dict[str, np.ndarray]:
        """Prior matrices (values + known flag) for the network; zeros when the weights will be loaded."""
        self.prior_report_: pd.DataFrame | None = None
        if zeros:  # load(): the matrices are buffers in the saved weights
            return {p: np.zeros((space.n_anchors, PRIOR_INPUT_DIMS[p]), np.float32) for p in self.priors_}
        rna = {}
        if "coexpression" in self.priors_ and "rna" in self.modalities_:
            _, arrays = self._arrays(None)
            rna = {
                "rna_counts": arrays.counts["rna"],
                "rna_anchor": space.maps["rna"].anchor,
                "rna_present": arrays.present[:, MODALITIES.index("rna")],
            }
        mats = load_priors(space.anchors, self.priors_, grn_edges=grn_edges, **rna)
        self.prior_report_ = pd.DataFrame(
            {"n_columns": [m.values.shape[1] for m in mats.values()], "n_known": [m.n_known for m in mats.values()]},
            index=pd.Index(list(mats), name="prior"),
        )
        return {p: m.network_input() for p, m in mats.items()}

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
            It is also every cell's species token unless ``species_key`` is given.
        genome
            Genome build for peak -> gene links: ``"hg38"``, ``"hg19"``, ``"mm10"`` or a BED/GTF
            path. Without it, ATAC needs ``chrom``/``tss``/``strand`` columns in the RNA ``.var``.
        gene_id_type
            RNA var names are gene symbols (``"symbol"``), Ensembl ids (``"ensembl"``), or
            ``"auto"`` (each name that looks like an Ensembl gene id is read as one).
        species_key
            Column of the global ``mdata.obs`` with ``"human"`` / ``"mouse"`` per cell (the species
            token), for data sets that combine species on one anchor vocabulary (e.g. mouse genes
            renamed with :func:`holocell.vocab.rename_to_anchors`). Default: ``species`` for every cell.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Notes
        -----
        Writes only what scvi-tools writes for registration: ``mdata.uns["_scvi_uuid"]``,
        ``mdata.uns["_scvi_manager_uuid"]`` and ``mdata.obs["_scvi_batch"]``.
        """
        modalities = normalise_modalities(modalities)
        setup_method_args = cls._get_setup_method_args(**locals())
        setup_method_args["setup_args"]["modalities"] = modalities
        validate_setup(
            mdata,
            modalities,
            {"rna": rna_layer, "atac": atac_layer, "protein": protein_layer},
            batch_key,
            species,
            genome,
        )
        _validate_species_args(mdata, gene_id_type, species_key)
        fields = [MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=None)]
        manager = AnnDataManager(
            fields=fields,
            setup_method_args=setup_method_args,
            validation_checks=AnnDataManagerValidationCheck(check_fully_paired_mudata=False),
        )
        manager.register_fields(mdata, **kwargs)
        cls.register_manager(manager)

    # ------------------------------------------------------------------------------ data
    @property
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    def _arrays(
        self, mdata: MuData | str | Path | None, transform_batch: str | None = None
    ) -> tuple[MuData, MosaicArrays | BackedMosaicArrays]:
        """Counts of ``mdata`` (default: the registered one) in the model's feature order.

        ``transform_batch`` gives every cell that batch's code (counterfactual batch). A backed
        MuData (or a path to an ``.h5mu``, opened backed) is streamed from disk, not loaded.
        """
        if isinstance(mdata, str | Path):
            mdata = _read_backed(mdata)
        mdata = self.adata if mdata is None else mdata
        setup = self._setup_args
        missing = [name for name in self.modalities_.values() if name not in mdata.mod]
        if missing:
            raise KeyError(
                f"MuData has no modality {missing}; the model was set up with {self.modalities_}. "
                f"Available: {list(mdata.mod)}."
            )
        layers = {m: setup.get(f"{m}_layer") for m in self.modalities_}
        if mdata is self.adata:
            check_unchanged(mdata, self.modalities_, self._fingerprint)
        check_mudata(mdata, self.modalities_, layers)
        features = {m: self.feature_space.maps[m].features for m in self.modalities_}
        batch_key = setup.get("batch_key")
        lookup = {c: i for i, c in enumerate(self.batch_categories_)}
        if transform_batch is not None:
            if str(transform_batch) not in lookup:
                raise ValueError(
                    f"transform_batch {transform_batch!r} is not a training batch; choose from {self.batch_categories_}."
                )
            codes = np.full(mdata.n_obs, lookup[str(transform_batch)], dtype=np.int64)
        elif batch_key is None:
            codes = np.zeros(mdata.n_obs, dtype=np.int64)
        else:
            unknown = len(self.batch_categories_)  # the "unseen batch" embedding
            codes = np.array([lookup.get(str(b), unknown) for b in mdata.obs[batch_key]], dtype=np.int64)
        species = SPECIES.index(setup.get("species", "human"))
        collect = collect_backed_arrays if is_backed(mdata) else collect_arrays
        arrays = collect(mdata, self.modalities_, layers, features, codes, species)
        if setup.get("species_key") is not None:
            arrays.species = _species_codes(mdata, setup["species_key"])
        return mdata, arrays

    def _inference_batch_size(self, batch_size: int | None, n_outputs: int = 0) -> int:
        """``batch_size``, or one that keeps a ``(cells, anchors, d_model)`` float tensor near 64 MB
        and a ``(cells, n_outputs)`` one (e.g. every peak, when generating ATAC) near 16 MB."""
        if batch_size is not None:
            return int(batch_size)
        per_cell = self.config.n_anchors * self.config.d_model
        size = min(256, 2**24 // per_cell)
        if n_outputs:
            size = min(size, 2**22 // n_outputs)
        return int(max(8, size))

    def _device(self, device: str | torch.device | None) -> torch.device:
        if device is not None:
            self.module.to(device)
        return next(self.module.parameters()).device

    # ------------------------------------------------------------------------------ train
    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        batch_size: int = 32,
        validation_size: float = 0.1,
        early_stopping: bool = True,
        early_stopping_patience: int = 20,
        lr: float = 1e-3,
        ema_decay: float | None = 0.995,
        seed: int = 0,
        enable_progress_bar: bool = True,
        plan_kwargs: dict | None = None,
        *,
        strategy: str | pl.strategies.Strategy = "auto",
        precision: str | int | None = None,
        num_nodes: int = 1,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        **trainer_kwargs,
    ) -> None:
        """Train by masked discrete diffusion with Lightning.

        Parameters
        ----------
        max_epochs
            Epochs; by default about 1,500 optimiser steps, between 20 and 400 epochs.
        accelerator, devices
            Lightning device selection (``"cpu"``, ``"gpu"``, ``"auto"``; ``devices=8`` or ``[0, 1]``).
        batch_size
            Cells per mini-batch (per device).
        validation_size
            Fraction of cells held out to monitor the loss (and for early stopping).
        early_stopping
            Stop when the validation loss has not improved for ``early_stopping_patience`` epochs.
        lr
            Peak learning rate (AdamW, warm-up, cosine decay).
        ema_decay
            Decay of the exponential moving average of the weights that the model keeps at the
            end of training (``None``: keep the last weights).
        seed
            Seeds the train/validation split, the shuffling and the diffusion masks of this run.
        enable_progress_bar
            Show Lightning's progress bar.
        plan_kwargs
            More :class:`~holocell.train.TrainingPlan` arguments.
        strategy
            Lightning strategy: ``"auto"``, ``"ddp"`` (several devices or nodes; the trained
            weights end up in the process that called ``train``), ``"ddp_spawn"``, ...
        precision
            Lightning precision, e.g. ``"bf16-mixed"`` (GPU, or CPU autocast); ``None``: 32-bit.
        num_nodes
            Machines for multi-node DDP (launched by ``torchrun`` or SLURM, see the scaling docs).
        checkpoint_dir
            Write a Lightning checkpoint (``last.ckpt``) there at the end of every epoch.
        resume
            Continue from ``checkpoint_dir/last.ckpt`` (weights, optimiser, schedule, epoch and
            step) when it exists; start afresh, with a warning, when it does not. Lightning
            checkpoints are loaded with ``weights_only=True``; resume only from checkpoints you
            wrote yourself.
        **trainer_kwargs
            Passed to :class:`lightning.pytorch.Trainer`.

        Raises
        ------
        FloatingPointError
            When the training loss becomes NaN or infinite (naming the step).
        """
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir, the directory train() wrote checkpoints to.")
        pl.seed_everything(seed, verbose=False)
        _, arrays = self._arrays(None)
        train_idx, val_idx = split_indices(arrays.n_cells, validation_size, seed)
        steps_per_epoch = max(1, len(train_idx) // batch_size)
        if max_epochs is None:
            max_epochs = int(min(400, max(20, math.ceil(1500 / steps_per_epoch))))
        history = _HistoryCallback()
        callbacks: list[pl.Callback] = [history]
        if early_stopping and len(val_idx) > 0:
            callbacks.append(
                pl.callbacks.EarlyStopping("validation_loss", patience=early_stopping_patience, mode="min")
            )
        ckpt_path = None
        if checkpoint_dir is not None:
            checkpoint_dir = Path(checkpoint_dir)
            callbacks.append(
                pl.callbacks.ModelCheckpoint(
                    dirpath=checkpoint_dir, filename="{epoch}-{step}", save_top_k=1, save_last=True
                )
            )
            last = checkpoint_dir / "last.ckpt"
            if resume and last.exists():
                ckpt_path = str(last)
            elif resume:
                warnings.warn(f"No checkpoint at {last}; training starts from scratch.", HoloCellWarning, stacklevel=2)
        if precision is not None:
            trainer_kwargs["precision"] = precision
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            callbacks=callbacks,
            enable_progress_bar=enable_progress_bar,
            enable_model_summary=False,
            enable_checkpointing=checkpoint_dir is not None,
            logger=False,
            gradient_clip_val=1.0,
            num_sanity_val_steps=0,
            **trainer_kwargs,
        )
        # each device sees 1/world_size of the mini-batches
        steps_per_device = max(1, math.ceil(steps_per_epoch / trainer.world_size))
        plan_kwargs = {"lr": lr, "ema_decay": ema_decay, **(plan_kwargs or {})}
        plan = TrainingPlan(self.module, total_steps=max_epochs * steps_per_device, **plan_kwargs)
        datamodule = MosaicDataModule(arrays, train_idx, val_idx, batch_size, seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__`.*")  # streaming
            trainer.fit(plan, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.world_size == 1:  # Lightning hands the module back on the CPU; inference stays where training ran
            self.module.to(trainer.strategy.root_device)
        self.module.eval()
        self.is_trained_ = True
        self.train_indices_, self.validation_indices_ = train_idx, val_idx
        self.history_ = history.frame()

    # ------------------------------------------------------------------------------ inference
    def _check_modalities(self, names: str | Sequence[str] | None) -> list[str] | None:
        if names is None:
            return None
        names = [names] if isinstance(names, str) else list(names)
        bad = [m for m in names if m not in self.modalities_]
        if bad:
            raise ValueError(f"Unknown modality {bad}; this model has {list(self.modalities_)}.")
        return names

    @torch.inference_mode()
    def get_latent_representation(
        self,
        mdata: MuData | str | Path | None = None,
        indices: Sequence[int] | None = None,
        modality: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Cell embeddings (the pooled latent states).

        Parameters
        ----------
        mdata
            MuData to embed (default: the registered one); needs the registered modalities' names.
            A backed MuData (``mudata.read_h5mu(path, backed=True)``) or the path of an ``.h5mu``
            file is streamed from disk in mini-batches, so memory does not grow with the cells.
        indices
            Cells to embed (default: all).
        modality
            Embed from this modality (or list) only; default: every modality each cell has.
        batch_size
            Cells per forward pass; default: as many as keep one activation tensor near 64 MB
            (256 for a few hundred anchors, fewer for large ATAC feature sets).
        device
            Device to run on (default: where the model is).
        progress_bar
            Show a progress bar (``None``: only on a terminal).

        Returns
        -------
        ``(n_cells, d_model)`` float32 array.
        """
        keep = self._check_modalities(modality)
        mdata, arrays = self._arrays(mdata)
        device = self._device(device)
        self.module.eval()
        idx = np.arange(arrays.n_cells) if indices is None else np.asarray(indices)
        out = np.zeros((len(idx), self.config.d_model), dtype=np.float32)
        start = 0
        loader = make_loader(arrays, idx, batch_size=self._inference_batch_size(batch_size))
        for batch in tqdm(loader, desc="embedding", disable=_disable(progress_bar)):
            batch = {k: v.to(device) for k, v in batch.items()}
            z = self.module.embed(batch, keep).float().cpu().numpy()
            out[start : start + len(z)] = z
            start += len(z)
        return out

    @torch.inference_mode()
    def generate(
        self,
        mdata: MuData | str | Path | None = None,
        target: Literal["rna", "atac", "protein"] = "protein",
        n_steps: int = 8,
        key_added: str | None = None,
        *,
        sources: Sequence[str] | None = None,
        remasking: Literal["low_confidence", "random"] = "low_confidence",
        temperature: float = 0.0,
        transform_batch: str | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        overwrite: bool = False,
        progress_bar: bool | None = None,
    ) -> ad.AnnData:
        """Generate ``target`` for every cell from its other modalities and add it to ``mdata``.

        Observed cells are generated too (from their other modalities, their own target values
        hidden), so generated and measured values can be compared.

        Parameters
        ----------
        mdata
            MuData (default: the registered one). It gets a new modality ``key_added`` (in memory,
            also for a backed MuData, whose inputs are streamed from disk; a path is opened backed).
        target
            Modality to generate.
        n_steps
            Denoising steps.
        key_added
            Name of the new modality; default ``"<modality name>_generated"``.
        sources
            Modalities to condition on; default: all others.
        remasking
            ``"low_confidence"`` (commit the most confident predictions first) or ``"random"``.
        temperature
            0 for the most likely values; > 0 samples bins and peaks.
        transform_batch
            Generate every cell as if it came from this training batch (e.g. one where the target
            modality was measured); default: each cell's own batch.
        batch_size, device, seed, progress_bar
            Batching, device, random seed and progress display.
        overwrite
            Replace an existing modality named ``key_added``.

        Returns
        -------
        The new AnnData (also stored in ``mdata.mod[key_added]``): ``X`` holds the continuous
        values (log1p CP10k for RNA, CLR for protein, accessibility probability for ATAC),
        ``layers["bins"]`` the committed value bins (RNA/protein), ``uns["holocell"]`` the settings.
        """
        if target not in self.modalities_:
            raise ValueError(f"Unknown target {target!r}; this model has {list(self.modalities_)}.")
        sources = self._check_modalities(sources)
        if sources is not None and target in sources:
            raise ValueError("The target modality cannot also be a source.")
        mdata, arrays = self._arrays(mdata, transform_batch)
        key_added = key_added or f"{self.modalities_[target]}_generated"
        if key_added in mdata.mod and not overwrite:
            raise ValueError(
                f"mdata.mod already has {key_added!r}; pass overwrite=True or another key_added."
            )
        device = self._device(device)
        self.module.eval()
        generator = torch.Generator(device=device).manual_seed(seed)
        # outputs are filled in place, batch by batch: no second copy of a (cells, features) matrix
        n_features = len(self.feature_space.maps[target].features)
        values = np.zeros((arrays.n_cells, n_features), dtype=np.float32)
        bins = np.zeros((arrays.n_cells, n_features), dtype=np.int16) if target != "atac" else None
        start = 0
        size = self._inference_batch_size(batch_size, n_features if target == "atac" else 0)
        loader = make_loader(arrays, batch_size=size)
        for batch in tqdm(loader, desc=f"generating {target}", disable=_disable(progress_bar)):
            batch = {k: v.to(device) for k, v in batch.items()}
            res = self.module.generate(
                batch,
                target,
                sources,
                n_steps=n_steps,
                remasking=remasking,
                temperature=temperature,
                generator=generator,
            )
            stop = start + len(batch["present"])
            if target == "atac":
                values[start:stop] = res.values.float().cpu().numpy()
            else:
                values[start:stop] = self.module.to_features(target, res.values).float().cpu().numpy()
                bins[start:stop] = self.module.to_features(target, res.bins).cpu().numpy()
            start = stop
        var = pd.DataFrame(index=pd.Index(self.feature_space.maps[target].features.astype(str)))
        generated = ad.AnnData(X=values, obs=pd.DataFrame(index=mdata.obs_names), var=var)
        if bins is not None:
            generated.layers["bins"] = bins
        generated.uns["holocell"] = {
            "params": {
                "target": target,
                "sources": list(sources) if sources else [m for m in self.modalities_ if m != target],
                "n_steps": n_steps,
                "remasking": remasking,
                "temperature": temperature,
                "transform_batch": transform_batch,
                "seed": seed,
            },
            "X": _GENERATED_TRANSFORM[target],
        }
        mdata.mod[key_added] = generated
        with warnings.catch_warnings():
            # the generated modality shares its feature names with the measured one, by design
            warnings.filterwarnings("ignore", message="Cannot join columns with the same name")
            mdata.update()
        return generated

    # ------------------------------------------------------------------------------ save / load
    def save(self, dir_path: str | Path, overwrite: bool = False, save_mudata: bool = False) -> None:
        """Save weights (safetensors) and a JSON config atomically into ``dir_path``.

        Parameters
        ----------
        dir_path
            Directory to create. Written to a temporary sibling first and renamed into place,
            so an interrupted save never leaves a half-written model.
        overwrite
            Replace an existing directory.
        save_mudata
            Also write the registered MuData as ``mdata.h5mu``.
        """
        _checkpoint.save_model(self, Path(dir_path), overwrite=overwrite, save_mudata=save_mudata)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        mdata: MuData | None = None,
        accelerator: str = "auto",
        device: str | torch.device | None = None,
    ) -> HoloCell:
        """Load a model saved with :meth:`save` onto ``mdata``.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        mdata
            MuData with the same modality names and features; set up with the saved setup
            arguments. Default: ``dir_path/mdata.h5mu`` when it was saved.
        accelerator
            Unused placeholder for scvi-tools signature compatibility.
        device
            Device to place the weights on (default CPU).
        """
        return _checkpoint.load_model(cls, Path(dir_path), mdata, device=device)

    # ------------------------------------------------------------------------------ pretrained / transfer
    #: Overlap of a transferred model's data with its pretrained reference (see :meth:`load_pretrained`).
    transfer_report_: pd.DataFrame | None = None

    @classmethod
    def load_pretrained(
        cls,
        name_or_path_or_url: str | Path,
        mdata: MuData | None = None,
        *,
        sha256: str | None = None,
        device: str | torch.device | None = None,
    ) -> HoloCell:
        """Load a pretrained checkpoint, optionally transferred onto new data.

        Parameters
        ----------
        name_or_path_or_url
            A registered checkpoint name (``"holocell-small"`` ships with the package, see
            :func:`holocell.data.available`), a checkpoint directory or ``.zip`` archive, or an
            ``http(s)://`` URL of an archive (downloaded once into the cache, see
            :func:`holocell.data.cache_dir`). Nothing is unpickled.
        mdata
            New data, already registered with :meth:`setup_mudata`. Its features may only partly
            overlap the checkpoint's: anchors are matched by name, known ones reuse the pretrained
            parameters, new ones start at the mean of the pretrained ones, and the overlap is in
            ``model.transfer_report_`` (and logged). Without ``mdata``, the model sits on a
            placeholder MuData with the checkpoint's own features: use it to inspect, to embed data
            with the very same features, or as the reference of :meth:`load_query_data`.
        sha256
            Expected sha256 of the file; required with a URL.
        device
            Device to put the weights on (default CPU).

        Returns
        -------
        The model (``is_trained_`` is False after a transfer: it has not seen ``mdata`` yet, but
        it can embed and generate zero-shot, or be fine-tuned with :meth:`train`).
        """
        return _pretrained.load_pretrained(cls, name_or_path_or_url, mdata, sha256=sha256, device=device)

    def save_pretrained(self, archive_path: str | Path, overwrite: bool = False) -> Path:
        """Save the model as one ``.zip`` file (weights + JSON config with the vocabulary).

        Parameters
        ----------
        archive_path
            Output path ending in ``.zip``; :meth:`load_pretrained` reads it.
        overwrite
            Replace an existing file.

        Returns
        -------
        The archive path.
        """
        archive_path = Path(archive_path)
        if archive_path.exists() and not overwrite:
            raise FileExistsError(f"{archive_path} already exists; pass overwrite=True to replace it.")
        with tempfile.TemporaryDirectory(prefix="holocell-save-") as tmp:
            self.save(Path(tmp) / "model")
            return _pretrained.pack_checkpoint(Path(tmp) / "model", archive_path)

    @classmethod
    def load_query_data(
        cls,
        mdata: MuData,
        reference: HoloCell | str | Path,
        *,
        freeze: bool = True,
        sha256: str | None = None,
        device: str | torch.device | None = None,
    ) -> HoloCell:
        """scArches-style query mapping: a model of ``mdata`` initialised from a reference model.

        Parameters
        ----------
        mdata
            Query data, registered with :meth:`setup_mudata`; its features may only partly overlap
            the reference's.
        reference
            A trained :class:`HoloCell`, or anything :meth:`load_pretrained` accepts.
        freeze
            Freeze the pretrained parameters (:meth:`freeze`), so that :meth:`train` fits only the
            parameters of anchors and batches new to the reference.
        sha256, device
            As in :meth:`load_pretrained`; with a :class:`HoloCell` reference the query model goes
            to the reference's device unless ``device`` says otherwise.

        Returns
        -------
        The query model; ``model.transfer_report_`` says how much of the query the reference knows.
        """
        if isinstance(reference, HoloCell):
            state = {k: v.detach().cpu() for k, v in reference.module.state_dict().items()}
            model = _transfer.transfer(cls, mdata, state, _checkpoint.model_config(reference))
            model.module.to(device if device is not None else next(reference.module.parameters()).device)
        else:
            model = cls.load_pretrained(reference, mdata, sha256=sha256, device=device)
        if freeze:
            model.freeze()
        return model

    def freeze(self, except_new: bool = True) -> pd.DataFrame:
        """Freeze the pretrained parameters of a transferred model before :meth:`train`.

        Parameters
        ----------
        except_new
            Keep trainable what the reference did not have: rows of anchors and batches new to it,
            and whole modules it lacked. False: only new batches' embeddings stay trainable.

        Returns
        -------
        Per parameter: its size and how many of its values stay trainable. Frozen rows get no
        gradient and are restored after every optimiser step, so they stay exactly as loaded.
        """
        return _transfer.freeze(self, except_new=except_new)

    def unfreeze(self) -> None:
        """Make every parameter trainable again (undo :meth:`freeze`)."""
        _transfer.unfreeze(self)


def _read_backed(path: str | Path) -> MuData:
    """Open an ``.h5mu`` file backed (matrices stay on disk)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"No such .h5mu file: {str(path)!r}. Pass a MuData or the path of an .h5mu file."
        )
    return mudata.read_h5mu(str(path), backed=True)


def _validate_species_args(mdata: MuData, gene_id_type: str, species_key: str | None) -> None:
    if gene_id_type not in ("auto", "symbol", "ensembl"):
        raise ValueError(f"gene_id_type must be 'auto', 'symbol' or 'ensembl', got {gene_id_type!r}.")
    if species_key is not None:
        if species_key not in mdata.obs:
            raise KeyError(f"species_key {species_key!r} is not a column of the global mdata.obs.")
        _species_codes(mdata, species_key)


def _species_codes(mdata: MuData, species_key: str) -> np.ndarray:
    values = mdata.obs[species_key].astype(str)
    bad = sorted(set(values) - set(SPECIES))
    if bad:
        raise ValueError(
            f"mdata.obs[{species_key!r}] has values {bad[:5]}; every cell needs one of {list(SPECIES)}."
        )
    return values.map({s: i for i, s in enumerate(SPECIES)}).to_numpy(dtype=np.int64)


def _disable(progress_bar: bool | None) -> bool | None:
    return None if progress_bar is None else not progress_bar


class _HistoryCallback(pl.Callback):
    """Collects epoch-level losses into a DataFrame (``model.history_``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows).set_index("epoch") if self.rows else pd.DataFrame()


__all__ = ["HoloCell"]
