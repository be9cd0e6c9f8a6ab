"""End-to-end tests of HoloCell on the bundled real PBMC data and on the simulator."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch

import holocell as hc

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: setting its data up reports that few RNA features are
#: vocabulary genes (issue 20); the tests here expect that report.
SIM_GENES = r"RNA features of modality .* map to a known"


def test_pbmc_end_to_end(trained_pbmc):
    mdata, model = trained_pbmc
    assert model.is_trained_
    assert {"train_loss", "validation_loss"} <= set(model.history_.columns)
    assert np.isfinite(model.history_["train_loss"]).all()
    z = model.get_latent_representation()
    assert z.shape == (mdata.n_obs, TINY["d_model"])
    assert np.isfinite(z).all()
    # protein-only and RNA-only cells both embed, and from a single modality (indices=: the cells measured in it)
    has_rna, has_prot = np.asarray(mdata.obsm["rna"]).ravel(), np.asarray(mdata.obsm["adt"]).ravel()
    z_rna = model.get_latent_representation(modality="rna", indices=has_rna)
    z_prot = model.get_latent_representation(modality="protein", indices=has_prot)
    assert z_rna.shape == (has_rna.sum(), TINY["d_model"]) and z_prot.shape == (has_prot.sum(), TINY["d_model"])
    assert np.isfinite(z_rna).all() and np.isfinite(z_prot).all()
    paired = has_rna & has_prot
    assert not np.allclose(z_rna[paired[has_rna]], z_prot[paired[has_prot]])
    # every cell, from a modality some lack: NaN rows for those, with a warning
    with pytest.warns(hc.HoloCellWarning, match=f"{(~has_rna).sum()} of the {mdata.n_obs} cells"):
        z_all_rna = model.get_latent_representation(modality="rna")
    assert np.isnan(z_all_rna[~has_rna]).all()
    np.testing.assert_allclose(z_all_rna[has_rna], z_rna, rtol=1e-5, atol=1e-6)


def test_generate_protein_every_cell(trained_pbmc):
    mdata, model = trained_pbmc
    mdata = mdata.copy()
    new = model.generate(mdata, target="protein", n_steps=4, key_added="adt_gen")
    assert "adt_gen" in mdata.mod
    assert new.shape == (mdata.n_obs, mdata["adt"].n_vars)
    assert list(new.var["measured_name"]) == list(mdata["adt"].var_names)
    assert list(new.var_names) == [f"{name}_generated" for name in mdata["adt"].var_names]
    # every cell with RNA, observed ones included; protein-only cells have no source: NaN rows, bins -1
    has_rna = np.asarray(mdata.obsm["rna"]).ravel()
    assert (~has_rna).any() and has_rna.any()
    assert np.isfinite(new.X[has_rna]).all() and np.isnan(new.X[~has_rna]).all()
    bins = new.layers["bins"]
    assert bins[has_rna].min() >= 0 and bins[has_rna].max() < model.config.n_bins
    assert (bins[~has_rna] == -1).all()
    assert mdata.obsm["adt_gen"].all()  # a row for every cell
    assert new.uns["holocell"]["params"]["n_steps"] == 4
    # never overwrites an existing modality silently
    with pytest.raises(ValueError, match="overwrite=True"):
        model.generate(mdata, target="protein", n_steps=1, key_added="adt")
    model.generate(mdata, target="protein", n_steps=1, key_added="adt_gen", overwrite=True)


def test_generate_rna_from_protein(trained_pbmc):
    mdata, model = trained_pbmc
    mdata = mdata.copy()
    new = model.generate(mdata, target="rna", n_steps=2, key_added="rna_gen")
    assert new.shape == (mdata.n_obs, mdata["rna"].n_vars)
    has_prot = np.asarray(mdata.obsm["adt"]).ravel()  # RNA-only cells have no protein to generate from: NaN
    assert np.isnan(new.X[~has_prot]).all()
    assert (new.X[has_prot] > -1.0).all()  # log-normalised scale


def test_same_seed_same_embedding(pbmc):
    def run():
        m = pbmc.copy()
        hc.HoloCell.setup_mudata(m, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
        model = hc.HoloCell(m, **TINY)
        model.train(max_epochs=1, enable_progress_bar=False, seed=3)
        return model.get_latent_representation()

    first, second = run(), run()
    if torch.cuda.is_available():  # GPU kernels reduce in a nondeterministic order
        np.testing.assert_allclose(first, second, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(first, second)


def test_save_load_round_trip(trained_pbmc, tmp_path):
    mdata, model = trained_pbmc
    model.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "model")
    model.save(tmp_path / "model", overwrite=True)
    fresh = hc.data.pbmc_cite_mosaic()
    loaded = hc.HoloCell.load(tmp_path / "model", fresh)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(mdata), rtol=1e-5, atol=1e-6
    )
    assert loaded.is_trained_


def test_load_rejects_mismatched_features(trained_pbmc, tmp_path):
    _, model = trained_pbmc
    model.save(tmp_path / "model")
    other = hc.data.pbmc_cite_mosaic()
    other.mod["rna"] = other["rna"][:, 10:].copy()
    other.update()
    with pytest.raises(ValueError, match="lacks 10"):
        hc.HoloCell.load(tmp_path / "model", other)


def test_load_rejects_corrupted_weights(trained_pbmc, tmp_path):
    _, model = trained_pbmc
    model.save(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupted"):
        hc.HoloCell.load(tmp_path / "model", hc.data.pbmc_cite_mosaic())


def test_tl_functions(trained_pbmc):
    mdata, model = trained_pbmc
    work = mdata.copy()
    assert hc.tl.embed(work, model) is None
    assert work.obsm["X_holocell"].shape[0] == work.n_obs
    assert work.uns["X_holocell"]["params"]["modality"] == "all"
    copy = hc.tl.generate(work, model, target="protein", n_steps=2, copy=True)
    assert "adt_generated" in copy.mod and "adt_generated" not in work.mod


@pytest.mark.parametrize(
    "modalities",
    [
        {"rna": "rna", "atac": "atac", "protein": "protein"},
        {"rna": "rna"},
        {"atac": "atac"},
        {"protein": "protein"},
    ],
)
def test_simulator_modalities(simulated, modalities):
    mdata, _ = simulated
    mdata = mdata.copy()
    kwargs = {}
    if "atac" in modalities and "rna" not in modalities:
        rna_var = mdata["rna"].var
        kwargs["genome"] = rna_var.assign(gene_name=rna_var.index)[["gene_name", "chrom", "tss", "strand"]]
    expected = pytest.warns(hc.HoloCellWarning, match=SIM_GENES) if "rna" in modalities else nullcontext()
    if modalities == {"protein": "protein"}:  # its gene column names synthetic genes, and no RNA to join
        expected = pytest.warns(hc.HoloCellWarning, match="No value of the 'gene' column of modality 'protein'")
    with expected:
        hc.HoloCell.setup_mudata(mdata, modalities=modalities, batch_key="batch", **kwargs)
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False)
    # cells measured in none of the registered modalities (batch1 lacks protein) have no embedding: NaN rows
    measured = np.any([np.asarray(mdata.obsm[name]).ravel() for name in modalities.values()], axis=0)
    n_none = int((~measured).sum())
    expected = (
        pytest.warns(hc.HoloCellWarning, match=f"{n_none} of the {mdata.n_obs} cells embedded have none")
        if n_none
        else nullcontext()
    )
    with expected:
        z = model.get_latent_representation()
    assert n_none == (144 if modalities == {"protein": "protein"} else 0)
    assert z.shape == (mdata.n_obs, TINY["d_model"])
    assert np.isfinite(z[measured]).all() and np.isnan(z[~measured]).all()
    if len(modalities) > 1:
        gen = model.generate(mdata, target="atac", n_steps=3, key_added="atac_gen")
        assert gen.shape == (mdata.n_obs, mdata["atac"].n_vars)
        assert ((gen.X >= 0) & (gen.X <= 1)).all()


def test_simulator_peaks_link_to_their_genes(simulated):
    mdata, truth = simulated
    mdata = mdata.copy()
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    report = model.feature_space.maps["atac"].report
    linked = truth.cre_gene.drop_duplicates("peak").set_index("peak")["gene"]
    assert (report.loc[linked.index, "anchor"] == linked).mean() > 0.9


def test_every_train_call_trains_in_training_mode(simulated):
    """A second ``train`` (after the first left the network in eval mode) trains with dropout on again."""
    import lightning.pytorch as pl

    class Modes(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[bool] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.seen.append(all(m.training for m in pl_module.modules()))

    mdata, _ = simulated
    mdata = mdata.copy()
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    for _ in range(2):
        modes = Modes()
        model.train(max_epochs=1, enable_progress_bar=False, callbacks=[modes])
        assert modes.seen and all(modes.seen)
        assert not any(m.training for m in model.module.modules())  # inference-ready afterwards
