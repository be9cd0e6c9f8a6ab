"""How a backed ``.h5mu`` is stored and held: CSC counts, dense chunk sizes, the file released when dropped."""

from __future__ import annotations

import gc

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell.model._counts import CHUNK_VALUES

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
#: The simulator's genes (SIM1, ...) are not vocabulary genes: setting its data up reports that (issue 20).
SIM_GENES = r"RNA features of modality .* map to a known"
TRAIN = {"max_epochs": 1, "batch_size": 64, "enable_progress_bar": False, "accelerator": "cpu"}


def _simulated(n_cells: int = 200) -> md.MuData:
    mdata, _ = hc.data.simulate_multiome(n_cells, n_genes=40, n_tfs=6, n_proteins=10, peaks_per_gene=3, seed=5)
    return mdata


def _setup(mdata: md.MuData) -> list:
    """``setup_mudata`` as a user would; returns every warning it gave (the simulator's gene report expected)."""
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES) as record:
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return list(record)


def _write(mdata: md.MuData, path, rna_format: str = "csr"):
    rna = mdata.mod["rna"]
    rna.X = sp.csc_matrix(rna.X) if rna_format == "csc" else sp.csr_matrix(rna.X)
    mdata.write(path)
    return path


@pytest.fixture(scope="module")
def csr_and_csc(tmp_path_factory):
    """The same simulated counts written twice, RNA ``.X`` stored as CSR and as CSC."""
    folder = tmp_path_factory.mktemp("storage")
    return _write(_simulated(), folder / "csr.h5mu"), _write(_simulated(), folder / "csc.h5mu", "csc")


def _csc_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, hc.HoloCellWarning) and "stores its counts as CSC" in str(w.message)]


def test_backed_csc_warns_once_per_read_with_the_fix_and_same_results(csr_and_csc):
    csr_path, csc_path = csr_and_csc
    csr = md.read_h5mu(csr_path, backed=True)
    csc = md.read_h5mu(csc_path, backed=True)
    assert csc.mod["rna"].X.format == "csc"
    _setup(csr)
    assert _csc_warnings(_setup(csc)) == []  # setup reads a CSC matrix in chunks: no cost to warn about
    model = hc.HoloCell(csr, **TINY)
    model.train(**TRAIN)
    with pytest.warns(hc.HoloCellWarning, match="stores its counts as CSC") as record:
        z_csc = model.get_latent_representation(csc, batch_size=32)
    assert len(_csc_warnings(record)) == 1  # one warning per call, not one per mini-batch
    message = str(_csc_warnings(record)[0].message)
    assert "'rna'" in message and ".tocsr()" in message and "MB" in message
    np.testing.assert_array_equal(z_csc, model.get_latent_representation(csr, batch_size=32))
    with pytest.warns(hc.HoloCellWarning, match="stores its counts as CSC"):
        csc_model = hc.HoloCell(csc, **TINY)
        csc_model.train(**TRAIN)
    csr.file.close()
    csc.file.close()


def _with_empty_cells(n_cells: int, n_genes: int, empty: np.ndarray) -> md.MuData:
    """RNA-only counts, ``n_genes`` wide (the simulated genes repeated), with the cells ``empty`` all zero."""
    rna = hc.data.simulate_multiome(n_cells, n_genes=40, n_tfs=6, modalities=("rna",), seed=5)[0].mod["rna"]
    x = np.asarray(sp.csr_matrix(rna.X).todense(), dtype=np.float32)
    x[empty] = 0
    reps = -(-n_genes // x.shape[1])  # wide enough that a chunk of 2^19 values holds fewer than all cells
    names = [f"{g}_{i}" if i else g for i in range(reps) for g in rna.var_names][:n_genes]
    mdata = md.MuData({"rna": ad.AnnData(np.tile(x, reps)[:, :n_genes], obs=rna.obs, var=pd.DataFrame(index=names))})
    mdata.obs["batch"] = rna.obs["batch"]
    return mdata


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_backed_empty_cell_check_is_exact_and_reads_chunks(tmp_path, monkeypatch, layout):
    """The setup's empty-cell check counts the same cells backed as in memory, reading at most 2^19 values at a time.

    It read 10,000 rows at a time (10,000 x n_vars values of a dense file), and a backed CSC matrix whole.
    """
    empty = np.array([3, 50, 199])
    mdata = _with_empty_cells(200, 3000, empty)
    x = mdata.mod["rna"].X
    mdata.mod["rna"].X = x if layout == "dense" else (sp.csr_matrix(x) if layout == "csr" else sp.csc_matrix(x))
    if layout != "dense":
        mdata.mod["rna"].X.data[:5] = 0  # explicit stored zeros do not make a cell non-empty
    path = tmp_path / f"{layout}.h5mu"
    mdata.write(path)
    kwargs = {"modalities": {"rna": "rna"}, "batch_key": "batch"}
    expected = "3 of 200 cells in modality 'rna' have no counts"
    with pytest.warns(hc.HoloCellWarning, match=expected), pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(md.read_h5mu(path), **kwargs)
    sizes = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: _record(original(self, key), sizes))
    backed = md.read_h5mu(path, backed=True)
    sizes.clear()  # only the reads of setup
    with pytest.warns(hc.HoloCellWarning, match=expected), pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(backed, **kwargs)
    assert max(sizes) <= CHUNK_VALUES  # was 10,000 rows at a time: the whole 200 x 3000 matrix
    backed.file.close()


def _record(value, sizes: list):
    sizes.append(np.size(value))
    return value


def _opens_for_writing(path) -> bool:
    gc.collect()
    try:
        with h5py.File(path, "r+"):
            return True
    except OSError:
        return False


def test_backed_file_released_when_mudata_and_model_are_dropped(tmp_path):
    """scvi-tools' class-level manager stores held the backed MuData, so its file stayed open for the process."""
    path = tmp_path / "sim.h5mu"
    _simulated().write(path)
    mdata = md.read_h5mu(path, backed=True)
    _setup(mdata)
    del mdata
    assert _opens_for_writing(path)  # set up, then dropped

    mdata = md.read_h5mu(path, backed=True)
    _setup(mdata)
    model = hc.HoloCell(mdata, **TINY)
    model.train(**TRAIN)
    z = model.get_latent_representation()
    del mdata
    assert not _opens_for_writing(path)  # the model still holds its data ...
    np.testing.assert_array_equal(model.get_latent_representation(), z)  # ... and reads it
    del model
    assert _opens_for_writing(path)  # dropped with the model
