"""Reading the user's MuData for a trained model (mixed into :class:`~holocell.HoloCell`): the checks that new data
get, and the counts in the model's feature order, in memory or streamed from a backed file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mudata import MuData

from ..data.arrays import BackedMosaicArrays, MosaicArrays, mudata_arrays, read_backed
from ._obs_copy import obs_copy_fix
from ._validate import check_mudata, check_unchanged, require_mudata
from ._validate_obs import absent_modalities, warn_unseen_batches


class DataMixin:
    """``_arrays`` (the checked counts of a MuData) and the checks of ``modality=`` arguments."""

    @property
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    def _arrays(
        self, mdata: MuData | str | Path | None, transform_batch: str | None = None, decodes: bool = True
    ) -> tuple[MuData, MosaicArrays | BackedMosaicArrays]:
        """Checked counts of ``mdata`` (default: the registered one) in the model's feature order.

        ``transform_batch`` gives every cell that batch's code (counterfactual batch). A backed
        MuData (or a path to an ``.h5mu``, opened backed) is streamed from disk, not loaded. New data are warned
        about when they hold empty cells or (``decodes``: the caller reads the batch) batches not trained on.
        """
        mdata = read_backed(mdata) if isinstance(mdata, str | Path) else (self.adata if mdata is None else mdata)
        if mdata is self.adata and getattr(self, "_placeholder_data", False):
            raise ValueError(
                "This model was loaded without data (load_pretrained(name) holds one empty placeholder cell per "
                "batch): pass your cells, mdata=..., or load it onto them with HoloCell.load_pretrained(name, mdata) "
                "to train."
            )
        setup = self._setup_args
        require_mudata(mdata, f", naming each modality as the model was set up: {self.modalities_}")
        batch_key = setup.get("batch_key")
        if batch_key is not None and transform_batch is None and batch_key not in mdata.obs:
            raise KeyError(
                f"mdata.obs has no column {batch_key!r}, the batch_key the model was set up with. "
                f"{obs_copy_fix(mdata, batch_key) or 'Add it'} (a batch not seen in training is read as a new batch; "
                f"training batches: {list(self.batch_categories_)[:5]}). generate also takes transform_batch=."
            )
        species_key = setup.get("species_key")
        if species_key is not None and species_key not in mdata.obs:
            raise KeyError(
                f"mdata.obs has no column {species_key!r}, the species_key the model was set up with. "
                f"{obs_copy_fix(mdata, species_key) or 'Add it'} (each cell's 'human' or 'mouse')."
            )
        # the model's modalities mdata has; others: no cell (no warning for those kept from a reference)
        read = absent_modalities(mdata, self.modalities_, set(self.modalities_) - set(setup["modalities"]))
        layers = {m: setup.get(f"{m}_layer") for m in self.modalities_}
        if mdata is self.adata:
            check_unchanged(mdata, setup["modalities"], self._fingerprint)
        new_data = mdata is not self.adata
        check_mudata(mdata, read, layers, warn_empty=new_data)
        arrays = mudata_arrays(
            mdata,
            self.modalities_,
            layers,
            {m: self.feature_space.maps[m].features for m in self.modalities_},
            batch_key=batch_key,
            batch_categories=self.batch_categories_,
            species=setup.get("species", "human"),
            species_key=setup.get("species_key"),
            transform_batch=transform_batch,
        )
        if new_data and decodes and transform_batch is None:
            warn_unseen_batches(mdata, batch_key, self.batch_categories_, arrays.batch)
        return mdata, arrays

    def _check_modalities(self, names: str | Sequence[str] | None) -> list[str] | None:
        if names is None:
            return None
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError(f"An empty list names no modality; pass None for all of {list(self.modalities_)}.")
        bad = [m for m in names if m not in self.modalities_]
        if bad:
            raise ValueError(f"Unknown modality {bad}; this model has {list(self.modalities_)}.")
        return names


__all__ = ["DataMixin"]
