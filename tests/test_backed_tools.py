"""Tools that read RNA counts of many cells (overexpression levels, fate_shift, the co-expression prior) on a backed
MuData: the same results as on the same file read into memory, the file left unchanged (defect D02)."""

from __future__ import annotations

import hashlib

import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import holocell as hc
import holocell.data._rna_rows as rna_rows_module
import holocell.model._overexpression as overexpression_module
import holocell.model._perturb_mixin as perturb_module
from holocell.data._rna_rows import iter_rna_rows
from holocell.data.arrays import BackedMosaicArrays, MosaicArrays
from holocell.priors import _coexpression

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
SIM_GENES = r"RNA features of modality .* map to a known"
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _setup(mdata: md.MuData) -> md.MuData:
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities=MODS, batch_key="batch")
    return mdata


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    """``(path, sha256)`` of a simulated mosaic (batch1 lacks RNA, so RNA rows differ from the global rows)."""
    mdata, _ = hc.data.simulate_multiome(
        150, n_genes=30, n_tfs=5, n_proteins=8, peaks_per_gene=4, n_distal_peaks=20, missing={"rna": ["batch1"]}, seed=3
    )
    path = tmp_path_factory.mktemp("backed_tools") / "sim.h5mu"
    mdata.write(path)
    return path, _sha256(path)


@pytest.fixture(scope="module")
def pair(h5mu):
    """The file read into memory and read backed (both set up), and a tiny model trained on the in-memory copy."""
    path, _ = h5mu
    memory = _setup(md.read_h5mu(path))
    backed = _setup(md.read_h5mu(path, backed=True))
    model = hc.HoloCell(memory, **TINY)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False, accelerator="cpu", seed=0)
    yield memory, backed, model
    backed.file.close()


@pytest.fixture
def unchanged(h5mu):
    """Asserts after the test that the file on disk is byte-identical."""
    path, digest = h5mu
    yield
    assert _sha256(path) == digest, "the backed .h5mu file was modified"


def _genes(model, n=3) -> list[str]:
    return list(model.feature_space.maps["rna"].features.astype(str)[:n])


def test_iter_rna_rows_backed_equals_memory(pair, unchanged):
    memory, backed, model = pair
    mem_arrays, backed_arrays = model._arrays(memory)[1], model._arrays(backed)[1]
    assert isinstance(mem_arrays, MosaicArrays) and isinstance(backed_arrays, BackedMosaicArrays)
    rna = np.flatnonzero(mem_arrays.present[:, 0])
    assert 0 < len(rna) < mem_arrays.n_cells  # a mosaic: some cells lack RNA
    cells = np.random.default_rng(0).permutation(rna)  # any order, several chunks
    got = list(iter_rna_rows(backed_arrays, cells, chunk_size=7))
    assert len(got) == -(-len(cells) // 7) and all(len(p) <= 7 for p, _ in got)
    np.testing.assert_array_equal(np.concatenate([p for p, _ in got]), cells)
    backed_x = np.vstack([x.toarray() for _, x in got])
    np.testing.assert_array_equal(backed_x, mem_arrays.counts["rna"][cells].toarray())
    memory_x = np.vstack([x.toarray() for _, x in iter_rna_rows(mem_arrays, cells, chunk_size=7)])
    np.testing.assert_array_equal(memory_x, backed_x)
    with pytest.raises(ValueError, match="RNA only"):
        next(iter_rna_rows(backed_arrays, np.setdiff1d(np.arange(mem_arrays.n_cells), rna)[:1]))


def test_predict_perturbation_overexpress_backed_equals_memory(pair, h5mu, unchanged, monkeypatch):
    memory, backed, model = pair
    monkeypatch.setattr(rna_rows_module, "CHUNK_CELLS", 16)  # several chunks per pass
    kwargs = {"genes": _genes(model), "mode": "overexpress", "n_steps": 2, "seed": 0}
    ref = model.predict_perturbation(memory, **kwargs)
    for data in (backed, h5mu[0]):  # the backed MuData, and a path (opened backed)
        res = model.predict_perturbation(data, **kwargs)
        np.testing.assert_array_equal(res.applied, ref.applied)
        for m in ref.control:
            np.testing.assert_allclose(res.control[m], ref.control[m], equal_nan=True, **TOL)
            np.testing.assert_allclose(res.perturbed[m], ref.perturbed[m], equal_nan=True, **TOL)
        np.testing.assert_allclose(res.embedding_perturbed, ref.embedding_perturbed, equal_nan=True, **TOL)
    arrays = model._arrays(backed)[1]
    gidx = model._feature_index("rna", kwargs["genes"], "genes")
    levels = overexpression_module.overexpression_levels(arrays, gidx, 0.99, {})
    expected = overexpression_module.overexpression_levels(model._arrays(memory)[1], gidx, 0.99, {})
    np.testing.assert_array_equal(levels, expected)
    assert (levels > 0).all()


def test_tl_perturb_overexpress_backed_equals_memory(pair, unchanged):
    memory, backed, model = pair
    kwargs = {"genes": _genes(model, 2), "mode": "overexpress", "n_steps": 2, "key_added": "oe"}
    hc.tl.perturb(memory, model, **kwargs)
    hc.tl.perturb(backed, model, **kwargs)
    for m in ("rna", "protein"):
        for layer in ("control", "perturbed"):
            np.testing.assert_allclose(
                backed.mod[f"oe_{m}"].layers[layer], memory.mod[f"oe_{m}"].layers[layer], equal_nan=True, **TOL
            )
    np.testing.assert_allclose(backed.obsm["X_oe_shift"], memory.obsm["X_oe_shift"], equal_nan=True, **TOL)
    pd.testing.assert_frame_equal(backed.uns["oe"]["summary"], memory.uns["oe"]["summary"], rtol=1e-5)


def test_fate_shift_backed_equals_memory_one_pass_per_block(pair, unchanged, monkeypatch):
    memory, backed, model = pair
    genes = _genes(model, 5)
    n_rna = int(model._arrays(backed)[1].present[:, 0].sum())
    monkeypatch.setattr(perturb_module, "_LEVEL_BLOCK_VALUES", 2 * n_rna)  # levels of 2 genes per pass
    passes = []
    real = overexpression_module.iter_rna_rows
    monkeypatch.setattr(overexpression_module, "iter_rna_rows", lambda *a, **k: passes.append(1) or real(*a, **k))
    kwargs = {"groupby": "cell_type", "source": "type0", "target": "type1", "genes": genes, "n_cells": 20, "n_steps": 2}
    hc.tl.fate_shift(memory, model, **kwargs)
    assert not passes  # in memory: the counts are already there
    hc.tl.fate_shift(backed, model, **kwargs)
    assert len(passes) == 3  # 5 genes, 2 per pass over the file
    ranking, ref = backed.uns["holocell_fate_shift"]["ranking"], memory.uns["holocell_fate_shift"]["ranking"]
    pd.testing.assert_frame_equal(ranking, ref, rtol=1e-5)


@pytest.mark.parametrize("max_cells", [None, 40])
def test_coexpression_prior_backed_equals_memory(pair, unchanged, monkeypatch, max_cells):
    memory, backed, _ = pair
    if max_cells is not None:  # more RNA cells than the prior uses: the same seeded subsample
        monkeypatch.setattr(_coexpression, "MAX_CELLS", max_cells)
    monkeypatch.setattr(rna_rows_module, "CHUNK_CELLS", 16)
    models = [hc.HoloCell(data, priors=("coexpression",), **TINY) for data in (memory, backed)]
    pd.testing.assert_frame_equal(models[1].prior_report_, models[0].prior_report_)
    buffers = [dict(m.module.named_buffers()) for m in models]
    names = [n for n in buffers[0] if "prior_coexpression" in n]
    assert names
    for name in names:
        torch.testing.assert_close(buffers[1][name], buffers[0][name], rtol=1e-5, atol=1e-5)


def test_all_priors_on_backed_data(pair, unchanged):
    memory, backed, _ = pair
    models = [hc.HoloCell(data, priors="all", **TINY) for data in (memory, backed)]
    assert "coexpression" in models[1].prior_report_.index
    pd.testing.assert_frame_equal(models[1].prior_report_, models[0].prior_report_)
    assert all(backed.mod[name].isbacked for name in MODS.values())
