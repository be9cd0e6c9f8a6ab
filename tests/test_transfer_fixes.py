"""A generated modality written over (``overwrite=True``) leaves a valid MuData, and a transferred model keeps the
reference's learned library sizes, so that it generates what the reference does on the reference's data."""

from __future__ import annotations

import mudata as md
import numpy as np
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_latents": 8, "n_latent": 8}
#: the simulator's genes (SIM1, ...) are synthetic: setting its data up reports that few are vocabulary genes
SIM_GENES = r"RNA features of modality .* map to a known"
KEY = "protein_generated"


@pytest.fixture(scope="module")
def sim():
    """150 simulated RNA + protein cells and a tiny model trained 2 epochs on them (read-only)."""
    mdata, _ = hc.data.simulate_multiome(150, n_genes=40, n_tfs=5, n_proteins=8, modalities=("rna", "protein"), seed=0)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    return mdata, model


def _check_valid(mdata: md.MuData) -> None:
    """Every modality is in obsmap / varmap, and the axes are those of a MuData built afresh from the modalities."""
    assert set(mdata.obsmap) == set(mdata.mod) == set(mdata.varmap)
    fresh = md.MuData(dict(mdata.mod.items()))
    assert list(mdata.obs_names) == list(fresh.obs_names) and list(mdata.var_names) == list(fresh.var_names)
    for key in mdata.mod:
        np.testing.assert_array_equal(mdata.obsmap[key], fresh.obsmap[key])
        np.testing.assert_array_equal(mdata.varmap[key], fresh.varmap[key])


def test_generate_overwrite_leaves_a_mudata_that_can_be_subset_and_saved(sim, tmp_path):
    """The README's flow, ``model.generate`` then ``hc.tl.generate(..., overwrite=True)``, left ``mdata.obsmap``
    without the replaced modality, so ``mdata[cells]`` raised ``KeyError``."""
    mdata, model = sim
    work = mdata.copy()
    model.generate(work, target="protein", progress_bar=False)
    hc.tl.generate(work, model, target="protein", overwrite=True, progress_bar=False)
    _check_valid(work)
    part = work[:10].copy()
    assert part[KEY].n_obs == 10
    np.testing.assert_array_equal(part[KEY].X, work[KEY].X[:10])
    work.write(tmp_path / "generated.h5mu")
    back = md.read_h5mu(tmp_path / "generated.h5mu")
    assert set(back.obsmap) == set(work.mod)
    np.testing.assert_array_equal(back[KEY].X, work[KEY].X)

    # written over again with other feature names (another var_suffix): the old names leave mdata.var
    model.generate(work, target="protein", overwrite=True, var_suffix="_again", progress_bar=False)
    _check_valid(work)
    assert work.n_vars == sum(a.n_vars for a in work.mod.values())
    assert not any(str(v).endswith("_generated") for v in work.var_names)
    assert work[5:20].copy()[KEY].var_names.str.endswith("_again").all()


def test_a_model_transferred_onto_its_own_data_generates_as_the_reference(sim, tmp_path):
    """Transfer reset the count decoder's learned typical library sizes (``typical_library``, ``library_batches``)
    to their initial values, so ``generate`` (at the training cells' typical library size) differed from the
    reference's even on the reference's own data."""
    mdata, model = sim
    counts = model.module.network.counts
    assert counts.library_batches.sum() > 0  # learned in training, away from the start values
    expected = model.generate(mdata.copy(), target="protein", progress_bar=False).X
    model.save_pretrained(tmp_path / "model.zip")
    # onto the very MuData the reference was trained on (a copy of it is refused as another object)
    pretrained = hc.HoloCell.load_pretrained(tmp_path / "model.zip", mdata)
    query = hc.HoloCell.load_query_data(mdata, model, freeze=False)
    for name, transferred in (("pretrained", pretrained), ("query", query)):
        assert not transferred.is_trained_
        moved = transferred.module.network.counts
        np.testing.assert_array_equal(moved.typical_library.numpy(), counts.typical_library.numpy())
        np.testing.assert_array_equal(moved.library_batches.numpy(), counts.library_batches.numpy())
        out = transferred.generate(mdata, target="protein", key_added=f"by_{name}", var_suffix=f"_{name}", progress_bar=False).X
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_batch_trained_as_an_integer_is_the_same_batch_read_back_as_a_float(tmp_path):
    """Inference matches a batch trained as ``1`` from a float column's ``1.0``; transfer (load_query_data,
    transfer_report_) treated it as a new batch and gave its cells the unseen-batch embedding."""
    ref_data, _ = hc.data.simulate_multiome(120, n_genes=40, n_tfs=5, n_proteins=8, modalities=("rna", "protein"),
                                            seed=0)  # fmt: skip
    ref_data.obs["batch"] = ref_data.obs["batch"].astype(str).map({"batch0": 1, "batch1": 2}).astype(int)
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(ref_data, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    ref = hc.HoloCell(ref_data, **TINY)
    ref.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    query = ref_data.copy()
    query.obs["batch"] = query.obs["batch"].astype(float)  # what a merge with missing values makes of the column
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(query, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    mapped = hc.HoloCell.load_query_data(query, ref, freeze=False)
    assert list(mapped.batch_categories_) == ["1", "2"]  # the reference's names
    assert mapped.transfer_report_.loc["batches", "n_shared"] == 2
    # the batch reaches the decoders: the same cells generate as under the reference, batch rows and all
    expected = ref.generate(ref_data.copy(), target="protein", n_steps=0, progress_bar=False).X
    np.testing.assert_allclose(mapped.generate(query, target="protein", n_steps=0, progress_bar=False).X, expected,
                               atol=1e-5)  # fmt: skip
    # "01" is not read as 1: only a float's text ("1.0") is matched by value
    np.testing.assert_array_equal(hc.data.arrays.match_batches(["1.0", "01", "2", "x"], ["1", "2"]), [0, -1, 1, -1])
