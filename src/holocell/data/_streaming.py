"""Streaming from a backed ``.h5mu``: count rows are read from disk in chunks, never all at once.

A MuData opened with ``mudata.read_h5mu(path, backed=True)`` keeps its count matrices on disk.
:class:`BackedMosaicArrays` has the interface of :class:`~holocell.data._mosaic.MosaicArrays`
(``n_cells``, ``present``, ``batch``, ``species``, ``take``) but reads the rows it is asked for when
asked: sorted (h5py wants increasing indices) and grouped into contiguous runs, one slice per run.
Memory then depends on the chunk, not on the number of cells.

Training shuffles by chunk (:func:`make_chunked_loader`): the cells are cut into blocks of
``block_size`` consecutive cells; every epoch the block order is shuffled, ``blocks_per_buffer``
blocks are read into memory together, and the cells of that buffer are shuffled and cut into
mini-batches. Cells left over at the end of a buffer go into the next one, so every cell is seen
exactly once per epoch. A mini-batch therefore mixes cells from a few random places of the file
rather than from anywhere; the buffer (``block_size * blocks_per_buffer`` cells) bounds memory.

With several training processes (DDP), every process draws the same epoch order (same seed) and keeps every
``world_size``-th mini-batch of it, reading only the cells of its own; each process gets the same number of
mini-batches (the last round is completed with the epoch's first mini-batches, as Lightning's distributed sampler
pads the in-memory path).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from mudata import MuData

from .._warnings import HoloCellWarning, user_stacklevel
from ..vocab import MODALITIES
from ._mosaic import MosaicArrays, feature_order, measured_table, rows_or_empty

_MAX_GAP = 64  # rows: sorted rows closer than this are read as one contiguous slice


def is_backed(mdata: MuData) -> bool:
    """Whether ``mdata`` was opened with ``backed=True`` (its matrices stay on disk)."""
    return bool(getattr(mdata, "isbacked", False))


def warn_slow_row_reads(source: Any, mod_name: str) -> None:
    """Warn when rows of ``source`` cannot be read without reading the whole matrix: a backed CSC matrix.

    anndata reads a backed CSC matrix into memory whole to slice rows, so every chunk or mini-batch read from it
    costs the whole matrix in memory and time. The results are the same as from CSR.
    """
    if sp.issparse(source) or getattr(source, "format", None) != "csc" or not hasattr(source, "group"):
        return
    group = source.group
    size = sum(group[k].size * group[k].dtype.itemsize for k in ("data", "indices"))
    warnings.warn(
        f"Modality {mod_name!r} of this backed .h5mu stores its counts as CSC (by column): anndata reads a backed "
        f"CSC matrix whole ({size / 1e6:.1f} MB) to take any rows, so every mini-batch or training buffer reads the "
        "whole matrix from disk (memory is not bounded by the batch; time grows with the number of batches). Results "
        f"are not affected. Rewrite the file with CSR rows once: mdata = mudata.read_h5mu(path); "
        f"mdata.mod[{mod_name!r}].X = mdata.mod[{mod_name!r}].X.tocsr(); mdata.write('counts_csr.h5mu'); then open "
        "that file backed. Or read the file into memory (backed=False).",
        HoloCellWarning,
        stacklevel=user_stacklevel(),
    )


def read_rows(source: Any, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` (sorted, unique) of a backed matrix as float32 CSR, one read per contiguous run.

    ``source`` is anything that slices by row: an anndata backed sparse dataset, an h5py / zarr
    array or an in-memory matrix.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return sp.csr_matrix((0, source.shape[1]), dtype=np.float32)
    breaks = np.flatnonzero(np.diff(rows) > _MAX_GAP) + 1
    parts = []
    for run in np.split(rows, breaks):
        lo, hi = int(run[0]), int(run[-1]) + 1
        block = sp.csr_matrix(source[lo:hi], dtype=np.float32)
        parts.append(block if hi - lo == len(run) else block[run - lo])
    return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")


@dataclass
class BackedModality:
    """One modality on disk.

    Attributes
    ----------
    source
        Row-sliceable matrix (modality cells x modality features), e.g. a backed ``.X``.
    order
        ``(n_features,)`` column of each model feature in ``source``.
    rows
        ``(n_cells,)`` row of each global cell in ``source``; -1 where the cell lacks the modality.
    """

    source: Any
    order: np.ndarray
    rows: np.ndarray


class BackedMosaicArrays:
    """Counts of a backed MuData in global cell order, read from disk on demand.

    Parameters
    ----------
    modalities
        holocell modality -> :class:`BackedModality`.
    batch, species
        ``(n_cells,)`` integer codes.
    """

    def __init__(
        self,
        modalities: dict[str, BackedModality],
        batch: np.ndarray,
        species: np.ndarray,
        measured: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.modalities = modalities
        self.measured = measured or {}
        self.batch = np.asarray(batch, dtype=np.int64)
        self.species = np.asarray(species, dtype=np.int64)
        self.present = np.zeros((len(self.batch), len(MODALITIES)), dtype=bool)
        for m, mod in modalities.items():
            self.present[:, MODALITIES.index(m)] = mod.rows >= 0

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return self.present.shape[0]

    def load(self, idx: np.ndarray) -> MosaicArrays:
        """In-memory :class:`MosaicArrays` of cells ``idx`` (in that order), read from disk."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = {}
        for m, mod in self.modalities.items():
            rows = mod.rows[idx]
            has = rows >= 0
            unique, inverse = np.unique(rows[has], return_inverse=True)
            x = read_rows(mod.source, unique)[:, mod.order]
            position = np.full(len(idx), len(unique), dtype=np.int64)  # the empty row
            position[has] = inverse
            counts[m] = rows_or_empty(x, position)
        measured = {m: (codes[idx], table) for m, (codes, table) in self.measured.items()}
        return MosaicArrays(counts, self.present[idx], self.batch[idx], self.species[idx], measured)

    def take(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Mini-batch dict of dense tensors for cells ``idx``."""
        return self.load(idx).take(np.arange(len(idx)))


def collect_backed_arrays(
    mdata: MuData,
    modalities: Mapping[str, str],
    layers: Mapping[str, str | None],
    features: Mapping[str, np.ndarray],
    batch_codes: np.ndarray,
    species_code: int,
) -> BackedMosaicArrays:
    """:class:`BackedMosaicArrays` of a backed MuData (arguments as in
    :func:`~holocell.data._mosaic.collect_arrays`).

    Only ``.X`` stays on disk: anndata reads the layers of a backed file into memory when it
    opens it, so keep the counts of large files in ``.X``.
    """
    mods, measured = {}, {}
    for m, mod_name in modalities.items():
        if mod_name not in mdata.mod:  # no cell measured in it
            no_rows = np.full(mdata.n_obs, -1, dtype=np.int64)
            mods[m] = BackedModality(sp.csr_matrix((0, len(features[m])), dtype=np.float32), np.arange(len(features[m])), no_rows)
            continue
        adata = mdata.mod[mod_name]
        source = adata.X if layers.get(m) is None else adata.layers[layers[m]]
        warn_slow_row_reads(source, mod_name)
        order = feature_order(adata.var_names, features[m], mod_name)
        rows = np.asarray(mdata.obsmap[mod_name]).astype(np.int64) - 1  # obsmap is 1-based, 0 = absent
        mods[m] = BackedModality(source, order, rows)
        table = measured_table(adata, order, rows)
        if table is not None:
            measured[m] = table
    species = np.full(mdata.n_obs, species_code, dtype=np.int64)
    return BackedMosaicArrays(mods, batch_codes, species, measured)


class ChunkedBatches(torch.utils.data.IterableDataset):
    """Mini-batches over ``indices`` read chunk by chunk; see the module docstring for the shuffling.

    Parameters
    ----------
    arrays
        The backed arrays.
    indices
        Cells to iterate over (read in sorted order).
    batch_size
        Cells per mini-batch.
    shuffle
        Shuffle block order and cells within each buffer, differently every epoch.
    seed
        Seed of epoch 0; epoch ``e`` uses ``seed + e``.
    drop_last
        Drop the final mini-batch when it has fewer than ``batch_size`` cells.
    block_size
        Consecutive cells per contiguous read.
    blocks_per_buffer
        Blocks read and shuffled together (the memory bound is their total cells).
    rank, world_size
        This process's share of a multi-process (DDP) run: mini-batches ``rank``, ``rank + world_size``, ... of the
        epoch's order, which every process draws alike; ``len()`` is the same on every process.
    start_epoch
        The first epoch (a resumed run's): its order is that epoch's, not epoch 0's.
    """

    def __init__(
        self,
        arrays: BackedMosaicArrays,
        indices: np.ndarray | None = None,
        *,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        block_size: int = 1024,
        blocks_per_buffer: int = 8,
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
    ) -> None:
        if batch_size < 1 or block_size < 1 or blocks_per_buffer < 1:
            raise ValueError("batch_size, block_size and blocks_per_buffer must be >= 1.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}.")
        self.arrays = arrays
        self.indices = np.sort(np.arange(arrays.n_cells) if indices is None else np.asarray(indices))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.block_size = block_size
        self.blocks_per_buffer = blocks_per_buffer
        self.rank = rank
        self.world_size = world_size
        self.epoch = start_epoch

    def _n_batches(self) -> int:
        """Mini-batches of an epoch over all processes."""
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return -(-self._n_batches() // self.world_size)

    def _buffers(self, rng: np.random.Generator) -> Iterator[list[np.ndarray]]:
        """The epoch's mini-batches as cell ids, one list per buffer (nothing is read here)."""
        blocks = [
            self.indices[i : i + self.block_size] for i in range(0, len(self.indices), self.block_size)
        ]
        if self.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        leftover = np.zeros(0, dtype=np.int64)
        for start in range(0, len(blocks), self.blocks_per_buffer):
            cells = np.sort(np.concatenate([leftover, *blocks[start : start + self.blocks_per_buffer]]))
            order = rng.permutation(len(cells)) if self.shuffle else np.arange(len(cells))
            n_full = len(cells) // self.batch_size * self.batch_size
            yield [cells[order[i : i + self.batch_size]] for i in range(0, n_full, self.batch_size)]
            leftover = cells[order[n_full:]]
        if len(leftover) and not self.drop_last:
            yield [np.sort(leftover)]

    def _read(self, batches: list[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        """Mini-batch dicts of ``batches`` (cell ids), read from disk together (their cells only)."""
        if not batches:
            return
        cells = np.unique(np.concatenate(batches))
        buffer = self.arrays.load(cells)
        for ids in batches:
            yield buffer.take(np.searchsorted(cells, ids))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        first: list[np.ndarray] = []  # the epoch's first mini-batches: they complete the last round if needed
        seen = 0
        for group in self._buffers(rng):
            first.extend(group[: max(0, self.world_size - len(first))])
            yield from self._read([ids for j, ids in enumerate(group, seen) if j % self.world_size == self.rank])
            seen += len(group)
        taken = max(0, -(-(seen - self.rank) // self.world_size))
        for k in range(taken, len(self)):  # this process's share of the last round lies past the epoch's end
            yield from self._read([first[(self.rank + k * self.world_size) % seen]])


def make_chunked_loader(arrays: BackedMosaicArrays, indices: np.ndarray | None = None, **kwargs):
    """A DataLoader over :class:`ChunkedBatches` (``kwargs`` are its arguments)."""
    return torch.utils.data.DataLoader(ChunkedBatches(arrays, indices, **kwargs), batch_size=None)
