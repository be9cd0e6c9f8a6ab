"""Streaming from backed .h5mu files: the same results as in memory, every cell once per epoch."""

from __future__ import annotations

import h5py
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell.data._streaming import BackedModality, BackedMosaicArrays, ChunkedBatches, read_rows

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up reports that few RNA features are
#: vocabulary genes (issue 20); the tests here expect that report.
SIM_GENES = r"RNA features of modality .* map to a known"


@pytest.fixture(scope="module")
def h5mu_path(tmp_path_factory):
    """A simulated RNA + ATAC + protein mosaic (batch1 lacks protein) written to disk."""
    mdata, _ = hc.data.simulate_multiome(
        240, n_genes=40, n_tfs=6, n_proteins=10, peaks_per_gene=3, missing={"protein": ["batch1"]}, seed=5
    )
    path = tmp_path_factory.mktemp("stream") / "sim.h5mu"
    mdata.write(path)
    return path


@pytest.fixture(scope="module")
def backed_model(h5mu_path):
    """A tiny model trained for 1 epoch on the backed file (shared, read-only)."""
    mdata = md.read_h5mu(h5mu_path, backed=True)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False, accelerator="cpu")
    return mdata, model


def _in_memory(path):
    mdata = md.read_h5mu(path)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


def test_backed_train_then_embed_equals_in_memory(backed_model, h5mu_path):
    mdata, model = backed_model
    assert model.is_trained_ and np.isfinite(model.history_["train_loss"]).all()
    # setup, training and embedding left the counts on disk
    assert all(mdata.mod[name].isbacked for name in MODS.values())
    assert not sp.issparse(mdata.mod["atac"].X) and not isinstance(mdata.mod["atac"].X, np.ndarray)
    assert isinstance(model._arrays(None)[1], BackedMosaicArrays)
    z_backed = model.get_latent_representation()
    z_memory = model.get_latent_representation(_in_memory(h5mu_path))
    assert z_backed.shape == (mdata.n_obs, TINY["d_model"])
    np.testing.assert_allclose(z_backed, z_memory, atol=1e-5)
    # a path is opened backed; indices in any order
    idx = np.array([200, 3, 150, 4, 77])
    z_idx = model.get_latent_representation(h5mu_path, indices=idx)
    np.testing.assert_allclose(z_idx, z_memory[idx], atol=1e-5)
    z_rna = model.get_latent_representation(modality="rna", batch_size=50)
    z_rna_memory = model.get_latent_representation(_in_memory(h5mu_path), modality="rna")
    np.testing.assert_allclose(z_rna, z_rna_memory, atol=1e-5)


@pytest.mark.parametrize("target", ["atac", "protein"])
def test_generate_on_backed_data(backed_model, h5mu_path, target):
    mdata, model = backed_model
    new = model.generate(mdata, target=target, n_steps=2, key_added=f"{target}_gen", overwrite=True)
    assert f"{target}_gen" in mdata.mod and mdata.obsm[f"{target}_gen"].all()
    assert new.shape == (mdata.n_obs, mdata[target].n_vars)
    reference = model.generate(_in_memory(h5mu_path), target=target, n_steps=2, key_added="ref")
    np.testing.assert_allclose(new.X, reference.X, atol=1e-5)
    if target == "atac":
        assert ((new.X >= 0) & (new.X <= 1)).all()


def test_backed_setup_checks_counts(tmp_path):
    mdata, _ = hc.data.simulate_multiome(50, n_genes=30, n_tfs=5, n_proteins=5, modalities=("rna",), seed=1)
    mdata.mod["rna"].X = mdata.mod["rna"].X * 0.5  # not counts
    path = tmp_path / "normalised.h5mu"
    mdata.write(path)
    with pytest.raises(ValueError, match="non-integer"):
        hc.HoloCell.setup_mudata(md.read_h5mu(path, backed=True), modalities={"rna": "rna"})


def _id_arrays(tmp_path, n_cells: int, absent: np.ndarray) -> BackedMosaicArrays:
    """Backed arrays over an h5py matrix whose single column is the (1-based) cell id."""
    rows = np.where(absent, -1, np.cumsum(~absent) - 1)
    with h5py.File(tmp_path / "ids.h5", "w") as f:
        f["x"] = (np.flatnonzero(~absent) + 1).astype(np.float32)[:, None]
    source = h5py.File(tmp_path / "ids.h5", "r")["x"]
    return BackedMosaicArrays(
        {"rna": BackedModality(source, np.array([0]), rows)}, np.zeros(n_cells), np.zeros(n_cells)
    )


def test_streaming_loader_yields_every_cell_once_per_epoch(tmp_path):
    n = 103
    absent = np.zeros(n, dtype=bool)
    arrays = _id_arrays(tmp_path, n, absent)
    indices = np.setdiff1d(np.arange(n), [5, 50, 51])  # e.g. a training split
    batches = ChunkedBatches(arrays, indices, batch_size=8, block_size=7, blocks_per_buffer=3, seed=0)
    assert len(batches) == -(-len(indices) // 8)
    epochs = []
    for _ in range(2):
        ids = [b["rna"][:, 0].numpy().astype(int) - 1 for b in batches]
        assert all(len(i) == 8 for i in ids[:-1]) and len(ids) == len(batches)
        seen = np.concatenate(ids)
        np.testing.assert_array_equal(np.sort(seen), indices)  # each cell exactly once
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    assert not np.array_equal(epochs[0], indices)  # shuffled at all
    in_order = ChunkedBatches(arrays, indices, batch_size=8, block_size=7, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([b["rna"][:, 0].numpy() - 1 for b in in_order]), indices)
    dropped = ChunkedBatches(arrays, indices, batch_size=8, block_size=7, drop_last=True)
    assert len(dropped) == len(indices) // 8 == sum(1 for _ in dropped)


def test_backed_rows_absent_cells_and_gaps(tmp_path):
    n = 300
    absent = np.zeros(n, dtype=bool)
    absent[::4] = True
    arrays = _id_arrays(tmp_path, n, absent)
    idx = np.array([299, 0, 1, 2, 150, 151, 7, 298])  # unsorted, with gaps and absent cells
    batch = arrays.take(idx)
    expected = np.where(absent[idx], 0, idx + 1)
    np.testing.assert_array_equal(batch["rna"][:, 0].numpy(), expected)
    np.testing.assert_array_equal(batch["present"][:, 0].numpy(), ~absent[idx])
    x = sp.random(500, 20, density=0.2, format="csr", random_state=0, dtype=np.float32)
    rows = np.array([0, 1, 3, 200, 201, 499])
    assert (read_rows(x, rows) != x[rows]).nnz == 0


def test_tl_copy_of_a_backed_mudata_is_refused_with_the_fix(backed_model, h5mu_path, tmp_path):
    """copy=True on a backed MuData raised mudata's "pass a filename", which the tl functions do not take."""
    import hashlib
    import shutil

    _, model = backed_model
    path = tmp_path / "mine.h5mu"
    shutil.copy(h5mu_path, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    mine = md.read_h5mu(path, backed=True)
    with pytest.raises(ValueError, match=r"this one is backed .* \(mudata.read_h5mu\(path\)\)"):
        hc.tl.embed(mine, model, copy=True)
    hc.tl.embed(mine, model, key_added="X_hc")  # without copy: added in memory
    assert mine.obsm["X_hc"].shape[0] == mine.n_obs
    mine.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the file on disk is not changed
