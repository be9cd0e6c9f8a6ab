"""MuData -> count arrays in a model's feature order: batch and species codes, backed files.

The model class validates the data (``holocell.model._validate``); these functions only read it.
"""

from __future__ import annotations

import functools
import numbers
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import mudata
import numpy as np
import pandas as pd
from mudata import MuData

from ..vocab import SPECIES
from ._mosaic import MosaicArrays, collect_arrays
from ._stores import zarr_store
from ._streaming import BackedMosaicArrays, collect_backed_arrays, is_backed


def read_backed(path: str | Path) -> MuData:
    """Open an ``.h5mu`` file backed (its matrices stay on disk).

    Parameters
    ----------
    path
        Path of the ``.h5mu`` file (``~`` is expanded).

    Raises
    ------
    TypeError
        ``path`` is a zarr store (read it with ``mudata.read_zarr``) or an ``.h5ad`` file.
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not an ``.h5mu`` file mudata can read.
    """
    path = Path(path).expanduser()
    store = zarr_store(path)
    if store is not None:
        kind, call = store
        raise TypeError(
            f"{str(path)!r} is {kind}, not an .h5mu file; read it first, mdata = {call}, and pass that MuData."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"No such .h5mu file: {str(path)!r}. Pass a MuData or the path of an .h5mu file."
        )
    if Path(path).suffix.lower() == ".h5ad":
        raise TypeError(
            f"{str(path)!r} is an .h5ad file (one AnnData), not an .h5mu; read it with anndata.read_h5ad and wrap it "
            "with mudata.MuData({name: adata}), or save that MuData as .h5mu."
        )
    try:
        return mudata.read_h5mu(str(path), backed=True)
    except OSError as err:  # h5py: "file signature not found" for a file that is not HDF5
        raise ValueError(
            f"{str(path)!r} is not a readable .h5mu file (an HDF5 file written by mudata): {err}. Check the path, "
            "or write the data with mdata.write(path)."
        ) from err


_F = TypeVar("_F", bound=Callable[..., Any])


def closes_backed_path(method: _F) -> _F:
    """Decorator for a model method whose first argument is ``mdata``: a path given there is opened
    backed (:func:`read_backed`) and closed again before the method returns or raises, so the caller
    can rewrite the file straight away. A MuData (backed or not) is passed through untouched.

    Parameters
    ----------
    method
        The method to wrap.
    """

    @functools.wraps(method)
    def wrapper(self, mdata=None, *args, **kwargs):
        if not isinstance(mdata, str | os.PathLike):
            return method(self, mdata, *args, **kwargs)
        opened = read_backed(mdata)
        try:
            return method(self, opened, *args, **kwargs)
        finally:
            opened.file.close()

    return wrapper  # type: ignore[return-value]


def batch_codes(
    mdata: MuData, batch_key: str | None, categories: Sequence[str], transform_batch: str | None = None
) -> np.ndarray:
    """``(n_cells,)`` batch code of every cell: its index in ``categories``.

    Parameters
    ----------
    mdata
        The cells.
    batch_key
        Column of ``mdata.obs`` with the batch names (``None``: every cell is batch 0).
    categories
        The training batches, in code order. A batch not among them gets ``len(categories)``, the
        "unseen batch" code.
    transform_batch
        Give every cell this training batch's code (counterfactual batch).
    """
    lookup = {str(c): i for i, c in enumerate(categories)}
    if transform_batch is not None:
        if batch_key is None and len(categories) == 1:
            raise ValueError(
                f"transform_batch={transform_batch!r}, but this model knows one batch only (its data were set up "
                "without batch_key), so there is no other batch to move the cells to: leave transform_batch out. "
                "To correct batch effects, set the data up with batch_key='<obs column of the batches>' and train."
            )
        if isinstance(transform_batch, list | tuple | set | np.ndarray | pd.Index | pd.Series):
            raise ValueError(
                f"transform_batch takes one training batch, got {type(transform_batch).__name__} "
                f"{list(transform_batch)[:5]}: scvi-tools' average over several batches is not implemented. Call "
                "once per batch and average the outputs (training batches: "
                f"{list(categories)[:10]})."
            )
        if str(transform_batch) not in lookup:
            raise ValueError(
                f"transform_batch {transform_batch!r} is not a training batch; choose from {list(categories)}."
            )
        return np.full(mdata.n_obs, lookup[str(transform_batch)], dtype=np.int64)
    if batch_key is None:
        return np.zeros(mdata.n_obs, dtype=np.int64)
    unseen = len(categories)
    numeric = _numeric_lookup(categories)
    return np.array([_batch_code(b, lookup, numeric, unseen) for b in mdata.obs[batch_key]], dtype=np.int64)


def _numeric_lookup(categories: Sequence[str]) -> dict[float, int]:
    """Training batches whose names are numbers, by value: a batch trained as ``1`` is found from ``1.0`` (a column
    that pandas turned to float, e.g. after a merge with NaN). Names that share a value (``"01"``, ``"1"``) are
    left out, so they are matched by name only."""
    values: dict[float, list[int]] = {}
    for i, c in enumerate(categories):
        try:
            values.setdefault(float(c), []).append(i)
        except (TypeError, ValueError):
            continue
    return {v: codes[0] for v, codes in values.items() if len(codes) == 1}


def _batch_code(value, lookup: dict[str, int], numeric: dict[float, int], unseen: int) -> int:
    """Code of one cell's batch: by name, or, for a number (not a bool), by value."""
    code = lookup.get(str(value))
    if code is None and isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        code = numeric.get(float(value))
    return unseen if code is None else code


def match_batches(names: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    """Index of each batch name in a model's training batches ``categories`` (``-1``: not one of them).

    By name; a name that pandas wrote from a float (``"1.0"``, a column turned to float, e.g. by a merge with NaN)
    also finds a training batch named by the same number (``"1"``), as :func:`batch_codes` finds the cells of a
    float column. Used when a model is transferred onto new data (batch embeddings are matched by batch).

    Parameters
    ----------
    names
        Batch names of the new data.
    categories
        The model's training batches.
    """
    lookup = {str(c): i for i, c in enumerate(categories)}
    numeric = _numeric_lookup([str(c) for c in categories])
    out = []
    for name in map(str, names):
        code = lookup.get(name)
        if code is None and ("." in name or "e" in name.lower()):
            try:
                code = numeric.get(float(name))
            except ValueError:
                code = None
        out.append(-1 if code is None else code)
    return np.asarray(out, dtype=np.int64)


def species_codes(mdata: MuData, species_key: str) -> np.ndarray:
    """``(n_cells,)`` species code (index in :data:`holocell.vocab.SPECIES`) from ``mdata.obs[species_key]``.

    Parameters
    ----------
    mdata
        The cells.
    species_key
        Column of ``mdata.obs`` with ``"human"`` / ``"mouse"`` per cell.
    """
    column = mdata.obs[species_key]
    missing = pd.isna(column).to_numpy()
    if missing.any():
        raise ValueError(
            f"mdata.obs[{species_key!r}] has {int(missing.sum())} missing values (NaN) in {len(column)} cells; every "
            f"cell needs its species, one of {list(SPECIES)}. Fill them with the cells' species, e.g. "
            f"mdata.obs[{species_key!r}] = mdata.obs[{species_key!r}].astype(object).fillna('human').astype(str), "
            f"or drop those cells: mdata = mdata[mdata.obs[{species_key!r}].notna()].copy()."
        )
    values = column.astype(object).map(str)
    bad = values[~values.isin(SPECIES)]
    if len(bad):
        shown = sorted(set(bad))[:5]
        raise ValueError(
            f"mdata.obs[{species_key!r}] has {len(bad)} cells with values other than {list(SPECIES)} (e.g. "
            f"{shown}); every cell needs one of them, spelled exactly so. Map them, e.g. mdata.obs[{species_key!r}] = "
            f"mdata.obs[{species_key!r}].astype(str).replace({_species_guess(shown)}), or drop cells of other "
            f"species: mdata = mdata[mdata.obs[{species_key!r}].isin({list(SPECIES)})].copy()."
        )
    return values.map({s: i for i, s in enumerate(SPECIES)}).to_numpy(dtype=np.int64)


_SPECIES_WORDS = {"human": ("human", "homo", "sapiens", "hs", "hsa", "grch"), "mouse": ("mouse", "mus", "musculus",
                                                                                       "mm", "mmu", "grcm")}


def _species_guess(values: list[str]) -> str:
    """A ``replace`` mapping for species spelled otherwise (``"Human"``, ``"Mus musculus"``): each value to the species
    its words name, ``'<human or mouse>'`` where none does (never a guess that could swap the species)."""
    def guess(value: str) -> str:
        words = set(value.lower().replace("_", " ").replace(".", " ").split())
        hits = [s for s, names in _SPECIES_WORDS.items() if words & set(names)]
        return hits[0] if len(hits) == 1 else "<human or mouse>"

    return "{" + ", ".join(f"{v!r}: {guess(v)!r}" for v in values) + "}"


def mudata_arrays(
    mdata: MuData,
    modalities: Mapping[str, str],
    layers: Mapping[str, str | None],
    features: Mapping[str, np.ndarray],
    *,
    batch_key: str | None,
    batch_categories: Sequence[str],
    species: str = "human",
    species_key: str | None = None,
    transform_batch: str | None = None,
) -> MosaicArrays | BackedMosaicArrays:
    """Counts of ``mdata`` in a model's feature order, in memory or (a backed MuData) read from disk on demand.

    Parameters
    ----------
    mdata
        The MuData (mosaic allowed), in memory or opened backed.
    modalities
        holocell modality -> modality name in ``mdata.mod``.
    layers
        holocell modality -> layer holding counts (``None`` = ``.X``).
    features
        holocell modality -> feature names in the model's order (looked up by name).
    batch_key, batch_categories, transform_batch
        See :func:`batch_codes`.
    species
        Species of every cell, unless ``species_key`` names an ``mdata.obs`` column with it.
    species_key
        See :func:`species_codes`.
    """
    codes = batch_codes(mdata, batch_key, batch_categories, transform_batch)
    collect = collect_backed_arrays if is_backed(mdata) else collect_arrays
    arrays = collect(mdata, modalities, layers, features, codes, SPECIES.index(species))
    if species_key is not None:
        arrays.species = species_codes(mdata, species_key)
    return arrays


__all__ = ["batch_codes", "closes_backed_path", "match_batches", "mudata_arrays", "read_backed", "species_codes"]


def update_axes(mdata: MuData) -> None:
    """``mdata.update()`` after holocell added or removed a modality, without pulling the modalities' ``.obs``
    columns into the global ``.obs`` (mudata's default in 0.3 copies every modality-only column, e.g. ``rna:qc``)
    or re-typing the user's global ``.var`` columns: only the cell and feature axes and their maps change.

    The option is set and put back without ``with mudata.set_options(...)``: entering that context calls the
    module-level ``logging.info``, which gives the root logger a handler (``logging.basicConfig``) when it has
    none, so that the user's own ``logging.basicConfig`` later does nothing. Python's ``random`` state is put back
    too: ``update`` draws temporary column names from it."""
    previous = mudata.set_options(pull_on_update=False).opts  # the values it replaced
    state = random.getstate()
    try:
        mdata.update()
    finally:
        mudata.set_options(**previous)
        random.setstate(state)
