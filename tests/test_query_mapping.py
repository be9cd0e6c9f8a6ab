"""Query mapping (``load_query_data`` / ``load_pretrained(name, mdata)``) reads the reference by identity, not by
position: antibodies keep the reference's anchors whatever the panel's order, per-peak rows follow the peaks'
coordinates, and the query model keeps the reference's batches (as scvi-tools' ``load_query_data``)."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MODS = {"rna": "rna", "protein": "adt"}
#: the simulator's genes (SIM1, ...) are synthetic: setting its data up reports that few are vocabulary genes
SIM_GENES = r"RNA features of modality .* map to a known"
PER_PEAK = ("network.counts.peak_factor", "network.counts.peak_bias", "network.cell.peak_in",
            "network.peak_embedding.weight")  # fmt: skip


def _cells(mdata: md.MuData, batches: list[str], n: int) -> md.MuData:
    """``n`` cells of each of ``batches`` (the first ones), with a string batch column."""
    names = [c for b in batches for c in mdata.obs_names[(mdata.obs["batch"] == b).to_numpy()][:n]]
    out = mdata[names].copy()
    out.obs["batch"] = out.obs["batch"].astype(str)
    return out


@pytest.fixture(scope="module")
def pbmc_reference(_pbmc_session):
    """A tiny model trained 1 epoch on 100 cells of each of PBMC p1-p3, and 120 p4 cells as the query (read-only)."""
    ref_data = _cells(_pbmc_session, ["p1_0", "p2_0", "p3_0"], 100)
    hc.HoloCell.setup_mudata(ref_data, modalities=MODS, batch_key="batch")
    reference = hc.HoloCell(ref_data, **TINY)
    reference.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False, seed=0)
    return ref_data, _cells(_pbmc_session, ["p4_0"], 120), reference


def _query(cells: md.MuData, antibodies: list[str], batch: str = "query_donor") -> md.MuData:
    query = md.MuData({"rna": cells["rna"].copy(), "adt": cells["adt"][:, antibodies].copy()})
    query.obs["batch"] = batch
    hc.HoloCell.setup_mudata(query, modalities=MODS, batch_key="batch")
    return query


def _anchors(model: hc.HoloCell, modality: str) -> pd.Series:
    fmap = model.feature_space.maps[modality]
    return pd.Series([model.feature_space.anchors[i] for i in fmap.anchor], index=fmap.features.astype(str))


def _protein(model: hc.HoloCell, query: md.MuData, key: str) -> pd.DataFrame:
    out = model.generate(query, target="protein", key_added=key, var_suffix=f"_{key}", n_steps=0, progress_bar=False)
    return pd.DataFrame(np.asarray(out.X), index=out.obs_names, columns=out.var["measured_name"].astype(str))


# ------------------------------------------------------------------------------------ antibody order (finding 1)
def test_a_permuted_antibody_panel_keeps_the_reference_anchors_and_outputs(pbmc_reference):
    """Of two antibodies against one gene the first in .var order took the gene's anchor, so a query listing them
    in another order read the other antibody's frozen reference rows (cd45.1 got CD45RB's PTPRC rows)."""
    _, cells, reference = pbmc_reference
    names = list(cells["adt"].var_names)
    same, permuted = _query(cells, names), _query(cells, names[::-1])
    model_same = hc.HoloCell.load_query_data(same, reference)
    model_perm = hc.HoloCell.load_query_data(permuted, reference)
    ref_anchor = _anchors(reference, "protein")
    pd.testing.assert_series_equal(_anchors(model_perm, "protein")[names], ref_anchor[names])
    pd.testing.assert_series_equal(_anchors(model_perm, "rna"), _anchors(reference, "rna"))
    assert model_perm.transfer_report_.loc["protein", "n_shared"] == len(names)
    np.testing.assert_allclose(model_perm.get_latent_representation(progress_bar=False),
                               model_same.get_latent_representation(progress_bar=False), atol=1e-6)  # fmt: skip
    with pytest.warns(hc.HoloCellWarning, match="batches the model was not trained on"):  # the query's own batches
        expected = _protein(reference, same, "by_reference")
    pd.testing.assert_frame_equal(_protein(model_perm, permuted, "by_query")[names], expected[names], atol=1e-5)
    # a new model (no reference) still gives a gene's anchor to the first of its antibodies in .var order
    assert ref_anchor["cd4.2"] == "CD4" and ref_anchor["cd4.1"] == "protein:cd4.1"
    fresh = _anchors(hc.HoloCell(permuted, **TINY), "protein")
    assert fresh["cd4.1"] == "CD4" and fresh["cd4.2"] == "protein:cd4.2"


def test_the_shipped_model_maps_the_bundled_panel_in_any_order(_pbmc_session):
    """The reference-mapping tutorial (holocell-small on the bundled PBMC) read 18 antibodies onto another clone's
    pretrained anchor: holocell-small's merged panel is sorted, the bundled data lists cd4.2 before cd4.1."""
    small = hc.HoloCell.load_pretrained("holocell-small")
    cells = _cells(_pbmc_session, ["p4_0"], 48)
    names = list(cells["adt"].var_names)
    shipped = _anchors(small, "protein")
    shared = [n for n in names if n in shipped.index]
    embeddings = []
    for order in (names, sorted(names)):
        query = _query(cells, order, batch="p4_0")
        model = hc.HoloCell.load_query_data(query, small)
        pd.testing.assert_series_equal(_anchors(model, "protein")[shared], shipped[shared])
        assert model.transfer_report_.loc["protein", "n_shared"] == len(shared)
        embeddings.append(model.get_latent_representation(progress_bar=False))
    np.testing.assert_allclose(embeddings[1], embeddings[0], atol=1e-6)


# ------------------------------------------------------------------------------------ peaks (finding 5)
@pytest.fixture(scope="module")
def atac_reference(tmp_path_factory):
    """Simulated RNA + ATAC cells with peaks named ``peak_<i>`` (coordinates in .var), a tiny model trained on
    them, and its checkpoint (which keeps peak names only)."""
    mdata, _ = hc.data.simulate_multiome(150, n_genes=30, n_tfs=4, n_proteins=0, n_distal_peaks=6,
                                         modalities=("rna", "atac"), seed=0)  # fmt: skip
    reference = _atac_data(mdata, np.arange(mdata["atac"].n_vars), index_names=True)
    model = hc.HoloCell(reference, **TINY)
    model.train(max_epochs=2, batch_size=32, accelerator="cpu", enable_progress_bar=False, seed=0)
    assert model.module.state_dict()["network.peak_embedding.weight"].abs().sum() > 0
    return mdata, model, model.save_pretrained(tmp_path_factory.mktemp("atac") / "ref.zip")


def _atac_data(mdata: md.MuData, peaks: np.ndarray, index_names: bool, shift: int = 0, setup: bool = True) -> md.MuData:
    """The cells of ``mdata`` with its peaks ``peaks`` (in that order; the last ``shift`` bp later); named
    ``peak_0 ...`` in this order (coordinates in .var) or by their coordinates."""
    atac = mdata["atac"][:, peaks].copy()
    if shift:
        atac.var["start"] = atac.var["start"] + shift
        atac.var["end"] = atac.var["end"] + shift
    atac.var_names = ([f"peak_{i}" for i in range(atac.n_vars)] if index_names else
                      [f"{c}:{s}-{e}" for c, s, e in zip(atac.var["chrom"], atac.var["start"], atac.var["end"], strict=True)])  # fmt: skip
    out = md.MuData({"rna": mdata["rna"].copy(), "atac": atac})
    out.obs["batch"] = mdata.obs["batch"].astype(str).to_numpy()
    if setup:
        with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
            hc.HoloCell.setup_mudata(out, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch")
    return out


def _coords(mdata: md.MuData) -> list[tuple]:
    var = mdata["atac"].var
    return list(zip(var["chrom"].astype(str), var["start"].astype(int), var["end"].astype(int), strict=True))


def test_peaks_named_by_index_take_the_rows_of_their_own_coordinates(atac_reference):
    """Per-peak rows were copied by position whenever the peak names matched: a query numbering the same peaks in
    another order read other peaks' rows (its ATAC embedding moved by 8 times its scale)."""
    mdata, reference, archive = atac_reference
    n = mdata["atac"].n_vars
    renumbered = _atac_data(mdata, np.arange(n)[::-1], index_names=True)
    model = hc.HoloCell.load_query_data(renumbered, reference)
    ref_row = {c: i for i, c in enumerate(_coords(reference.adata))}
    rows = np.array([ref_row[c] for c in _coords(renumbered)])
    ref_state, state = reference.module.state_dict(), model.module.state_dict()
    for key in PER_PEAK:
        torch.testing.assert_close(state[key], ref_state[key][rows], rtol=0, atol=0)
    assert not any(k in model._transfer_state.new_rows or k in model._transfer_state.fresh for k in PER_PEAK)
    numbered = _atac_data(mdata, np.arange(n), index_names=True)  # the reference reads peaks by name
    expected = reference.get_latent_representation(numbered, modality="atac", progress_bar=False)
    np.testing.assert_allclose(model.get_latent_representation(modality="atac", progress_bar=False), expected,
                               atol=1e-6)  # fmt: skip
    # a checkpoint keeps the names, not the coordinates: rows only for the very same list (names, anchors, buckets)
    fresh = hc.HoloCell.load_query_data(renumbered, archive)
    assert set(PER_PEAK) <= set(fresh._transfer_state.fresh)
    assert (fresh.module.state_dict()["network.peak_embedding.weight"] == 0).all()
    same = hc.HoloCell.load_query_data(numbered, archive)
    for key in PER_PEAK:
        torch.testing.assert_close(same.module.state_dict()[key], ref_state[key], rtol=0, atol=0)


def test_another_order_or_subset_of_the_reference_peaks_keeps_the_shared_rows(atac_reference, tmp_path):
    """Peaks named by coordinates: a query with some of the reference's peaks, in another order, plus peaks it
    lacks, keeps the rows of the shared peaks (frozen) and trains the others."""
    mdata, _, _ = atac_reference
    n = mdata["atac"].n_vars
    reference = hc.HoloCell(_atac_data(mdata, np.arange(n), index_names=False), **TINY)
    reference.train(max_epochs=1, batch_size=32, accelerator="cpu", enable_progress_bar=False, seed=0)
    archive = reference.save_pretrained(tmp_path / "named.zip")
    query = _atac_data(mdata, np.arange(n - 5)[::-1], index_names=False)  # shared peaks, reversed
    moved = _atac_data(mdata, np.arange(3), index_names=False, shift=7_777_777, setup=False)  # peaks the reference lacks
    mixed = md.MuData({"rna": query["rna"].copy(), "atac": _hstack(query["atac"], moved["atac"])})
    mixed.obs["batch"] = query.obs["batch"].to_numpy()
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mixed, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch")
    model = hc.HoloCell.load_query_data(mixed, archive)
    ref_state, state = reference.module.state_dict(), model.module.state_dict()
    rows = np.arange(n - 5)[::-1].copy()
    for key in PER_PEAK:
        torch.testing.assert_close(state[key][: n - 5], ref_state[key][rows], rtol=0, atol=0)
        np.testing.assert_array_equal(model._transfer_state.new_rows[key], np.arange(n - 2) >= n - 5)
    before = {k: state[k].clone() for k in PER_PEAK}
    model.train(max_epochs=1, batch_size=32, accelerator="cpu", enable_progress_bar=False, validation_size=0.0)
    after = model.module.state_dict()
    for key in PER_PEAK:
        torch.testing.assert_close(after[key][: n - 5], before[key][: n - 5], rtol=0, atol=0)  # frozen
    assert not torch.equal(after["network.cell.peak_in"][n - 5:], before["network.cell.peak_in"][n - 5:])


def _hstack(a: ad.AnnData, b: ad.AnnData) -> ad.AnnData:
    """Two ATAC AnnData of the same cells side by side (features of both)."""
    out = ad.concat([a, b], axis=1, merge="same")
    out.var = pd.concat([a.var, b.var])
    return out


# ------------------------------------------------------------------------------------ batches (finding 6)
def test_the_query_model_keeps_the_reference_batches(pbmc_reference, tmp_path):
    """The query model had only the query's batches: reference cells were decoded as an unseen batch and
    transform_batch could not name a reference batch."""
    ref_data, cells, reference = pbmc_reference
    query = _query(cells, list(cells["adt"].var_names))
    model = hc.HoloCell.load_query_data(query, reference)
    assert model.batch_categories_ == [*reference.batch_categories_, "query_donor"]
    assert model.transfer_report_.loc["batches"].tolist()[:3] == [1, 3, 0]
    ref_w, w = reference.module.network.batch.weight.detach(), model.module.network.batch.weight.detach().clone()
    torch.testing.assert_close(w[:3], ref_w[:3], rtol=0, atol=0)
    torch.testing.assert_close(w[3:], ref_w[[3, 3]], rtol=0, atol=0)  # the new batch and "unseen" start as unseen
    z = model.get_latent_representation(progress_bar=False)
    np.testing.assert_allclose(z, reference.get_latent_representation(query, progress_bar=False), atol=1e-6)
    paired = ref_data[(ref_data.obs["batch"] == "p3_0").to_numpy()].copy()
    pd.testing.assert_frame_equal(_protein(model, paired.copy(), "by_query"), _protein(reference, paired.copy(), "r"),
                                  atol=1e-5)  # fmt: skip
    as_p3 = [m.generate(query.copy(), target="protein", transform_batch="p3_0", n_steps=0, progress_bar=False).X
             for m in (model, reference)]  # fmt: skip
    np.testing.assert_allclose(np.asarray(as_p3[0]), np.asarray(as_p3[1]), atol=1e-5)
    # frozen: the reference's batch rows stay, the query's row trains
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False, validation_size=0.0)
    after = model.module.network.batch.weight.detach()
    torch.testing.assert_close(after[[0, 1, 2, 4]], w[[0, 1, 2, 4]], rtol=0, atol=0)
    assert not torch.equal(after[3], w[3])
    model.save(tmp_path / "query_model")
    loaded = hc.HoloCell.load(tmp_path / "query_model", query)
    assert loaded.batch_categories_ == model.batch_categories_
    # zero-shot onto a checkpoint: the same batches, the query's embedding is the reference's
    zero_shot = hc.HoloCell.load_pretrained(reference.save_pretrained(tmp_path / "ref.zip"), query)
    assert zero_shot.batch_categories_ == model.batch_categories_
    np.testing.assert_allclose(zero_shot.get_latent_representation(progress_bar=False), z, atol=1e-6)


def test_data_without_one_of_the_models_modalities_reads_as_cells_not_measured_in_it(trained_pbmc):
    """An RNA + protein model given RNA-only data (a 10x query) raised KeyError "MuData has no modality ['adt']"
    with no fix, although a mosaic model reads cells without protein. Such data now read as cells not measured in
    protein, with a warning (a modality under another name would read the same)."""
    mdata, model = trained_pbmc
    cells = mdata.obs_names[(mdata.obs["batch"] == "p4_0").to_numpy()][:40]
    rna_only = md.MuData({"rna": mdata["rna"][cells].copy()})
    rna_only.obs["batch"] = mdata.obs.loc[cells, "batch"].to_numpy()
    with pytest.warns(hc.HoloCellWarning, match=r"mdata has no modality \['adt'\] \(the model's \['protein'\]\).*rename"):
        z = model.get_latent_representation(rna_only, progress_bar=False)
    positions = mdata.obs_names.get_indexer(cells)
    expected = model.get_latent_representation(mdata, modality="rna", indices=positions, progress_bar=False)
    np.testing.assert_allclose(z, expected, atol=1e-5)
    with pytest.warns(hc.HoloCellWarning, match="no modality"):
        model.generate(rna_only, target="protein", n_steps=1, progress_bar=False)
    assert np.isfinite(rna_only["adt_generated"].X).all()  # every cell had RNA
    other = md.MuData({"gex": mdata["rna"][cells].copy()})
    other.obs["batch"] = rna_only.obs["batch"].to_numpy()
    with pytest.raises(KeyError, match=r"none of the model's modalities.*mdata.mod\['rna'\] = mdata.mod.pop\('gex'\)"):
        model.get_latent_representation(other)
