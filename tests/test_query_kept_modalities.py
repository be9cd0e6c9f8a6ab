"""A query model keeps the reference's RNA / protein modalities that its data lack (as scvi-tools' query models keep
the reference's architecture): an RNA-only query of an RNA + protein reference generates protein, saves and loads."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 4}
MODS = {"rna": "rna", "protein": "adt"}


def _cells(mdata: md.MuData, batch: str, n: int) -> md.MuData:
    out = mdata[mdata.obs_names[(mdata.obs["batch"] == batch).to_numpy()][:n]].copy()
    out.obs["batch"] = out.obs["batch"].astype(str)
    return out


@pytest.fixture(scope="module")
def reference_and_cells(_pbmc_session):
    """A tiny RNA + protein model trained 1 epoch on 240 cells of PBMC p3 (paired), and 80 p4 cells (read-only)."""
    ref_data = _cells(_pbmc_session, "p3_0", 240)
    hc.HoloCell.setup_mudata(ref_data, modalities=MODS, batch_key="batch")
    reference = hc.HoloCell(ref_data, **TINY)
    reference.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False, seed=0)
    return reference, _cells(_pbmc_session, "p4_0", 80)


def _rna_only(cells: md.MuData) -> md.MuData:
    query = md.MuData({"rna": cells["rna"].copy()})
    query.obs["batch"] = "query_donor"
    hc.HoloCell.setup_mudata(query, modalities={"rna": "rna"}, batch_key="batch")
    return query


def _paired(cells: md.MuData) -> md.MuData:
    query = md.MuData({"rna": cells["rna"].copy(), "adt": cells["adt"].copy()})
    query.obs["batch"] = "query_donor"
    hc.HoloCell.setup_mudata(query, modalities=MODS, batch_key="batch")
    return query


def _protein(model, mdata) -> np.ndarray:
    return np.asarray(model.generate(mdata, target="protein", key_added="p", n_steps=0, overwrite=True, progress_bar=False).X)


def test_rna_only_query_keeps_the_reference_protein_and_generates_it(reference_and_cells):
    reference, cells = reference_and_cells
    rna_only, paired = _rna_only(cells), _paired(cells)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own data lack protein by design: no "mdata has no modality" warning
        query = hc.HoloCell.load_query_data(rna_only, reference)
        generated = _protein(query, rna_only)
    assert query.modalities_ == {"rna": "rna", "protein": "adt"}
    assert "protein" not in query.transfer_report_.index  # a row per modality of the query's data
    assert list(query.feature_space.maps["protein"].features) == list(reference.feature_space.maps["protein"].features)
    assert generated.shape == (cells.n_obs, reference.feature_space.maps["protein"].features.size)
    assert np.isfinite(generated).all()
    # the same network as a query that has the protein: the same prediction (the target is hidden either way)
    np.testing.assert_allclose(generated, _protein(hc.HoloCell.load_query_data(paired, reference), paired), atol=1e-4)
    # and the same cell states as the reference reading these cells' RNA (the batch is not an encoder input)
    np.testing.assert_allclose(
        query.get_latent_representation(rna_only, progress_bar=False),
        reference.get_latent_representation(paired, modality="rna", progress_bar=False),
        atol=1e-5,
    )


def test_kept_modality_survives_save_load_and_training(reference_and_cells, tmp_path):
    reference, cells = reference_and_cells
    rna_only = _rna_only(cells)
    query = hc.HoloCell.load_query_data(rna_only, reference)
    query.train(max_epochs=1, batch_size=40, accelerator="cpu", enable_progress_bar=False, seed=0)
    assert np.isfinite(query.history_.to_numpy(dtype=float)).any()
    before = _protein(query, rna_only)
    query.save(tmp_path / "query", save_mudata=False)
    loaded = hc.HoloCell.load(tmp_path / "query", _rna_only(cells))
    assert loaded.modalities_ == {"rna": "rna", "protein": "adt"}
    np.testing.assert_array_equal(_protein(loaded, rna_only), before)
    # a MuData that has the kept modality under the reference's name is read: its protein counts reach the state
    paired = _paired(cells)
    z_rna = loaded.get_latent_representation(paired, modality="rna", progress_bar=False)
    z_both = loaded.get_latent_representation(paired, progress_bar=False)
    assert not np.allclose(z_rna, z_both)


def test_a_modality_name_the_query_uses_for_other_data_is_not_kept(reference_and_cells):
    reference, cells = reference_and_cells
    query = md.MuData({"rna": cells["rna"].copy(), "adt": cells["rna"][:, :5].copy()})  # 'adt' holds other data
    query.obs["batch"] = "query_donor"
    hc.HoloCell.setup_mudata(query, modalities={"rna": "rna"}, batch_key="batch")
    model = hc.HoloCell.load_query_data(query, reference)
    assert model.modalities_ == {"rna": "rna"}


@pytest.mark.parametrize(
    ("kept", "words"),
    [
        ({"protein": "adt", "atac": "atac"}, "'transfer.reference_modalities' must map some of"),
        ({"protein": ""}, "'transfer.reference_modalities' must map some of"),
        ({}, "'feature_space.maps' has modalities"),  # the protein map with no modality to read it
    ],
)
def test_a_tampered_reference_modalities_entry_is_refused(reference_and_cells, tmp_path, kept, words):
    import json

    reference, cells = reference_and_cells
    query = hc.HoloCell.load_query_data(_rna_only(cells), reference)
    query.save(tmp_path / "q", save_mudata=False)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["transfer"]["reference_modalities"] == {"protein": "adt"}
    config["transfer"]["reference_modalities"] = kept
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=words):
        hc.HoloCell.load(tmp_path / "q", _rna_only(cells))


def test_embedding_from_the_kept_modality_alone_says_no_cell_has_it(reference_and_cells):
    reference, cells = reference_and_cells
    rna_only = _rna_only(cells)
    query = hc.HoloCell.load_query_data(rna_only, reference)
    with pytest.warns(hc.HoloCellWarning, match="No cell of this MuData has them: embed from another modality="):
        z = query.get_latent_representation(rna_only, modality="protein", progress_bar=False)
    assert np.isnan(z).all()


def test_a_query_model_as_the_reference_passes_its_kept_modality_on(reference_and_cells, tmp_path):
    reference, cells = reference_and_cells
    first = hc.HoloCell.load_query_data(_rna_only(cells[:40].copy()), reference)
    first.save(tmp_path / "first", save_mudata=False)
    for ref in (first, str(tmp_path / "first")):
        second = hc.HoloCell.load_query_data(_rna_only(cells[40:].copy()), ref)
        assert second.modalities_ == {"rna": "rna", "protein": "adt"}
        assert np.isfinite(_protein(second, _rna_only(cells[40:].copy()))).all()
