"""HoloCell pretrained models, transfer onto new data and freezing (mixed into :class:`HoloCell`).

The row-by-row mapping of weights is in :mod:`._transfer`, archives and name resolution in
:mod:`._pretrained`. The state this mixin owns: ``transfer_report_``, ``_transfer_state`` (what the
model took from its reference) and ``_row_freeze`` (the frozen rows); only its methods set them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..data.arrays import match_batches
from ..train import RowFreeze, RowFreezeCallback
from ..vocab import FeatureSpace
from ..vocab._feature_space import preferred_anchors
from . import _checkpoint, _pretrained, _transfer
from ._args import check_device
from ._save_mixin import init_kwargs
from ._validate import require_mudata
from ._validate_obs import batches_with_cells

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from mudata import MuData

    from ._holocell import HoloCell


class TransferMixin:
    """:meth:`load_pretrained`, :meth:`load_query_data`, :meth:`freeze`, :meth:`unfreeze`."""

    transfer_report_: pd.DataFrame | None = None
    """Overlap of a transferred model's data with its pretrained reference (see :meth:`load_pretrained`)."""
    _transfer_state: _transfer.TransferState | None = None
    _row_freeze: RowFreeze | None = None

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
            ``model.transfer_report_`` (and logged). The model keeps the checkpoint's RNA and protein
            modalities that ``mdata`` lacks (no cell is measured in them), so RNA-only data can
            ``generate(target="protein")`` zero-shot. Without ``mdata``, the model sits on a
            placeholder MuData with the checkpoint's own features: use it to inspect, to embed data
            with the very same features, or as the reference of :meth:`load_query_data`.
        sha256
            Expected sha256 (64 hex characters, checked before anything is fetched); required with a
            URL. It is verified for an archive (the file's hash), a checkpoint directory
            (:func:`holocell.model.checkpoint_sha256`) and a registry name (its registered hash) too.
        device
            Device to put the weights on (default CPU).

        Returns
        -------
        The model (``is_trained_`` is False after a transfer: it has not seen ``mdata`` yet, but
        it can embed and generate zero-shot, or be fine-tuned with :meth:`train`).
        """
        return _pretrained.load_pretrained(cls, name_or_path_or_url, mdata, sha256=sha256, device=device)

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
            the reference's. The query model keeps the reference's RNA and protein modalities that
            ``mdata`` lacks, as scvi-tools' query models keep the reference's architecture: an RNA-only
            query of an RNA + protein reference generates protein. It reads them in a MuData that has
            them under the reference's names (a name ``mdata`` uses for other data is not kept).
            ATAC is kept only when the query has it.
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
        The query model; ``model.transfer_report_`` says how much of the query the reference knows. Its prior
        matrices have the reference's rows for the anchors the reference had; anchors new to it get rows of the
        shipped gene family, TSS position and GRN priors, but none (zeros, ``known=False``) of a prior in the basis
        of the reference's own data: co-expression, and a GRN from the reference's own ``grn_edges``.
        ``model.prior_report_`` counts them per prior in ``n_new_unknown`` (anchors new to the reference that the
        prior does not know).

        Raises
        ------
        TypeError
            ``mdata`` is not a MuData (a path: read it with ``mudata.read_h5mu``; an AnnData: wrap it in one).
        """
        require_mudata(mdata, ", set it up with HoloCell.setup_mudata, then pass it")  # before the reference is read
        device = None if device is None else check_device(device)  # before the query model is built
        if isinstance(reference, TransferMixin):
            state = {k: v.detach().cpu() for k, v in reference.module.state_dict().items()}
            model = cls._transferred(mdata, state, _checkpoint.model_config(reference), reference._peak_coordinates())
            model.module.to(device if device is not None else next(reference.module.parameters()).device)
        else:
            model = cls.load_pretrained(reference, mdata, sha256=sha256, device=device)
        if freeze:
            model.freeze()
        return model

    @classmethod
    def _transferred(
        cls, mdata: MuData, ref_state: dict[str, torch.Tensor], ref_config: dict, ref_peaks: pd.DataFrame | None = None
    ) -> HoloCell:
        """A model of ``mdata`` (set up already) with the reference's sizes, settings and weights (by name).

        The query's features that the reference has keep the reference's anchors; its batches are the reference's
        followed by its own new ones (as scvi-tools' ``load_query_data``); its peaks take the reference's per-peak
        rows by coordinates (``ref_peaks``, the reference's peak coordinates; default: read from its peak names).
        """
        if "_scvi_uuid" not in mdata.uns:
            raise ValueError(
                "Set up the new MuData first: HoloCell.setup_mudata(mdata, modalities={...}, batch_key=..., "
                "species=...), then pass it again (HoloCell.load_query_data(mdata, reference) or "
                "HoloCell.load_pretrained(name, mdata))."
            )
        ref_space = FeatureSpace.from_dict(ref_config["feature_space"])
        ref_batches = [str(b) for b in ref_config["batch_categories"]]
        own = cls._own_batches(mdata)
        batches = ref_batches + [b for b, i in zip(own, match_batches(own, ref_batches), strict=True) if i < 0]
        registered = cls._get_most_recent_anndata_manager(mdata, required=True).registry["setup_args"]["modalities"]
        ref_modalities = ref_config["setup_args"]["modalities"] | ref_config.get("transfer", {}).get(
            "reference_modalities", {})  # a query model as the reference: its own kept ones too
        kept = _transfer.reference_only_modalities(ref_modalities, registered, ref_space, set(mdata.mod))
        with preferred_anchors(ref_space), _transfer.keeping(kept):
            model = cls(mdata, **init_kwargs(ref_config), batch_categories=batches)
        if ref_peaks is None and "atac" in ref_space.maps:
            features = ref_space.maps["atac"].features
            ref_peaks = _transfer.peak_coordinates(pd.DataFrame(index=pd.Index(features.astype(str))), features)
        peak_src = _transfer.peak_source(model.feature_space, ref_space, model._peak_coordinates(), ref_peaks)
        state, info = _transfer.map_state(
            model.module, model.feature_space, model.batch_categories_, ref_state, ref_space, ref_batches, peak_src
        )
        model.module.load_state_dict(state)
        model._transfer_state = info
        model.transfer_report_ = _transfer.overlap_report(model.feature_space, ref_space, own, ref_batches, set(kept))
        model.prior_report_ = _transfer.prior_report(model.prior_report_, state, model.feature_space, ref_space)
        model.is_trained_ = False
        model.module.eval()
        _transfer.log_report(model.transfer_report_)
        return model

    @classmethod
    def _own_batches(cls, mdata: MuData) -> list[str]:
        """The batches a new model of ``mdata`` has (those of the registered categories with cells)."""
        return batches_with_cells(cls._get_most_recent_anndata_manager(mdata, required=True), mdata)

    def _peak_coordinates(self: HoloCell) -> pd.DataFrame | None:
        """Coordinates of this model's ATAC peaks, in its feature order, from its data's ``.var`` (None: unknown)."""
        if "atac" not in self.feature_space.maps:
            return None
        var = self.adata.mod[self.modalities_["atac"]].var
        return _transfer.peak_coordinates(var, self.feature_space.maps["atac"].features)

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
        gradient and are restored after every step of the model's own optimiser (only while
        :meth:`train` runs), so they stay exactly as loaded.
        """
        if self._transfer_state is None:
            raise ValueError(
                "freeze() applies to a model made by HoloCell.load_pretrained(name, mdata) or "
                "HoloCell.load_query_data; this model has no pretrained reference."
            )
        self.unfreeze()
        rows, summary = _transfer.frozen_rows(self.module, self._transfer_state, except_new)
        self._row_freeze = RowFreeze(self.module, rows) if rows else None
        counts = getattr(self.module.network, "counts", None)
        if counts is not None:  # the depth predictions are made at, as the reference learned it (modalities it had)
            counts.frozen_library = tuple(bool(n > 0) for n in counts.library_batches.tolist())
        return summary

    def unfreeze(self) -> None:
        """Make every parameter trainable again (undo :meth:`freeze`)."""
        if self._row_freeze is not None:
            self._row_freeze.remove()
        self._row_freeze = None
        for p in self.module.parameters():
            p.requires_grad_(True)
        if getattr(self.module.network, "counts", None) is not None:
            self.module.network.counts.frozen_library = (False, False, False)

    def _train_callbacks(self) -> list[pl.Callback]:
        """Callbacks :meth:`train` adds to the run: the row freeze, if any (it hooks only this run's optimiser)."""
        return [RowFreezeCallback(self._row_freeze)] if self._row_freeze is not None else []


__all__ = ["TransferMixin"]
