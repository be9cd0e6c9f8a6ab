"""Mosaic MuData -> per-modality count matrices aligned to the global cell order, and a torch dataset.

Cells a modality lacks get an empty row and ``present = False``; the row is never read as data.
The user's MuData is only read.

**Features measured in some cells only.** A modality's AnnData may carry a presence table
``varm["holocell_measured"]`` (features x groups, bool) with ``uns["holocell_measured_by"]`` naming the
column of its ``obs`` that gives each cell's group (``merge_for_pretraining`` writes both: the groups are
the merged data sets). A feature whose entry is False for a cell's group was not measured in that cell:
its count is not data, and the tokenizer masks its slot (``<modality>_measured`` in each mini-batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from mudata import MuData

from ..vocab import MODALITIES

MEASURED_KEY = "holocell_measured"  # modality .varm: features x groups, bool
MEASURED_BY_KEY = "holocell_measured_by"  # modality .uns: the obs column holding each cell's group


@dataclass
class MosaicArrays:
    """Counts of every registered modality in global ``mdata.obs`` order.

    Attributes
    ----------
    counts
        Modality (``"rna"``/``"atac"``/``"protein"``) -> CSR ``(n_cells, n_features)``.
    present
        ``(n_cells, 3)`` bool, modality observed (order of :data:`~holocell.vocab.MODALITIES`).
    batch, species
        ``(n_cells,)`` integer codes.
    measured
        Modality -> ``(group code per cell, groups x features bool table)`` for modalities whose
        features were measured in some cells only (see the module docstring); empty otherwise.
    """

    counts: dict[str, sp.csr_matrix]
    present: np.ndarray
    batch: np.ndarray
    species: np.ndarray
    measured: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return self.present.shape[0]

    def take(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Mini-batch dict of dense tensors for cells ``idx``."""
        out = {m: torch.from_numpy(x[idx].toarray().astype(np.float32)) for m, x in self.counts.items()}
        out["present"] = torch.from_numpy(self.present[idx])
        out["batch"] = torch.from_numpy(self.batch[idx].astype(np.int64))
        out["species"] = torch.from_numpy(self.species[idx].astype(np.int64))
        for m, (codes, table) in self.measured.items():
            out[f"{m}_measured"] = torch.from_numpy(table[codes[idx]])
        return out


class MosaicDataset(torch.utils.data.Dataset):
    """Torch dataset whose items are whole mini-batches (use with :class:`IndexBatchSampler`)."""

    def __init__(self, arrays: MosaicArrays, indices: np.ndarray | None = None) -> None:
        self.arrays = arrays
        self.indices = np.arange(arrays.n_cells) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.arrays.take(self.indices[np.asarray(positions)])


def make_loader(
    arrays: MosaicArrays,
    indices: np.ndarray | None = None,
    *,
    batch_size: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    keep_global_stream: bool = True,
    start_epoch: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``indices`` that slices sparse rows once per mini-batch.

    ``keep_global_stream=False`` leaves torch's global random state alone (inference outside training).
    ``start_epoch``: a resumed run's first epoch; the shuffle continues with that epoch's order (not epoch 0's).

    ``arrays`` may also be backed (:class:`~holocell.data._streaming.BackedMosaicArrays`): each
    mini-batch is then read from disk, which suits sequential passes (embedding, generation).
    """
    dataset = MosaicDataset(arrays, indices)
    if shuffle:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(start_epoch):  # the orders of the epochs already trained (RandomSampler: one per epoch)
            torch.randperm(len(dataset), generator=generator)
        sampler: torch.utils.data.Sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    batches = torch.utils.data.BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    # inference: a generator of its own, since iterating a loader draws its base seed from the global torch stream
    # (the user's); training keeps drawing from the global stream, which train(seed=) seeds and restores
    generator = None if keep_global_stream else torch.Generator()
    return torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None, generator=generator)


def collect_arrays(
    mdata: MuData,
    modalities: Mapping[str, str],
    layers: Mapping[str, str | None],
    features: Mapping[str, np.ndarray],
    batch_codes: np.ndarray,
    species_code: int,
) -> MosaicArrays:
    """Read the registered modalities of ``mdata`` into :class:`MosaicArrays`.

    Parameters
    ----------
    mdata
        The MuData (mosaic allowed).
    modalities
        holocell modality -> modality name in ``mdata.mod``; a name ``mdata`` lacks is read as a modality
        no cell was measured in.
    layers
        holocell modality -> layer holding counts (``None`` = ``.X``).
    features
        holocell modality -> feature names in the order the model expects. Features are
        looked up by name, so the MuData may order them differently.
    batch_codes
        ``(n_cells,)`` batch code of every cell in ``mdata.obs`` order.
    species_code
        Species index of all cells.
    """
    n = mdata.n_obs
    present = np.zeros((n, len(MODALITIES)), dtype=bool)
    counts, measured = {}, {}
    for m, mod_name in modalities.items():
        if mod_name not in mdata.mod:  # no cell measured in it (a new data set without this modality)
            counts[m] = sp.csr_matrix((n, len(features[m])), dtype=np.float32)
            continue
        adata = mdata.mod[mod_name]
        x = adata.X if layers.get(m) is None else adata.layers[layers[m]]
        x = sp.csr_matrix(x, dtype=np.float32)
        order = feature_order(adata.var_names, features[m], mod_name)
        x = x[:, order]
        rows = np.asarray(mdata.obsmap[mod_name]).astype(np.int64)  # 1-based, 0 = absent
        present[:, MODALITIES.index(m)] = rows > 0
        counts[m] = rows_or_empty(x, np.where(rows > 0, rows - 1, x.shape[0]))
        table = measured_table(adata, order, np.where(rows > 0, rows - 1, -1))
        if table is not None:
            measured[m] = table
    species = np.full(n, species_code, dtype=np.int64)
    return MosaicArrays(counts, present, np.asarray(batch_codes, dtype=np.int64), species, measured)


def measured_table(adata, order: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The presence table of a modality in model feature order, and each global cell's group code.

    Parameters
    ----------
    adata
        The modality (in memory or backed; only ``obs``, ``varm`` and ``uns`` are read).
    order
        Column of each model feature in ``adata``.
    rows
        ``(n_cells,)`` row of each global cell in ``adata``, -1 where the cell lacks the modality.

    Returns
    -------
    ``(codes, table)`` with ``table[codes[i]]`` the features measured in global cell ``i``, or None when
    the modality has no presence table (every feature measured in every cell).
    """
    if MEASURED_KEY not in adata.varm or MEASURED_BY_KEY not in adata.uns:
        return None
    frame = adata.varm[MEASURED_KEY]
    columns = [str(c) for c in frame.columns]
    table = np.asarray(frame, dtype=bool)[order].T  # (groups, features)
    group = adata.obs[str(adata.uns[MEASURED_BY_KEY])].astype(str).to_numpy()
    lookup = {c: i for i, c in enumerate(columns)}
    unknown = sorted(set(group) - set(lookup))
    if unknown:
        raise ValueError(f"Cells of groups {unknown[:3]} have no column in varm[{MEASURED_KEY!r}] ({columns[:3]}...).")
    codes = np.zeros(len(rows), dtype=np.int64)  # cells without the modality: any group (their slots are masked)
    has = rows >= 0
    codes[has] = [lookup[g] for g in group[rows[has]]]
    return codes, np.ascontiguousarray(table)


def rows_or_empty(x: sp.csr_matrix, positions: np.ndarray) -> sp.csr_matrix:
    """Rows ``positions`` of ``x``; a position equal to ``x.shape[0]`` gives an empty row (absent cell)."""
    padded = sp.vstack([x, sp.csr_matrix((1, x.shape[1]), dtype=np.float32)], format="csr")
    return padded[positions]


def feature_order(var_names, features: np.ndarray, mod_name: str) -> np.ndarray:
    """Column of each of ``features`` in ``var_names``; a clear error when some are missing or names repeat."""
    if not var_names.is_unique:
        repeated = var_names[var_names.duplicated()][:3].tolist()
        raise ValueError(
            f"Duplicated feature names in modality {mod_name!r} (e.g. {repeated}); make them unique with "
            f"mdata.mod[{mod_name!r}].var_names_make_unique(), then mdata.update()."
        )
    order = var_names.get_indexer(features)
    missing = order < 0
    if missing.any():
        names = ", ".join(map(str, np.asarray(features)[missing][:5]))
        raise ValueError(
            f"Modality {mod_name!r} lacks {int(missing.sum())} features the model was set up with "
            f"(e.g. {names}). Use the same features as at setup, or set up a new model."
        )
    return order
