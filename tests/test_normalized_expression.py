"""scvi-tools' inference API on HoloCell: ``get_normalized_expression`` (the RNA count decoder's mean from each
cell's own cell state, normalised per cell) and ``get_latent_representation``'s ``adata=``, ``give_mean=`` and
``return_dist=``."""

from __future__ import annotations

import hashlib
import warnings

import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc
from holocell.model._build import LEGACY_CELL_STATE

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


def _genes(model) -> pd.Index:
    return pd.Index(model.feature_space.maps["rna"].features.astype(str))


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _digest(mdata: md.MuData) -> str:
    h = hashlib.sha256()
    for name, adata in mdata.mod.items():
        h.update(name.encode() + _dense(adata.X).tobytes() + adata.obs.to_csv().encode() + adata.var.to_csv().encode())
    h.update(mdata.obs.to_csv().encode() + str(sorted(mdata.mod)).encode() + str(sorted(mdata.obsm)).encode())
    return h.hexdigest()


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _ours(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, hc.HoloCellWarning)]


# --- get_normalized_expression ---------------------------------------------------------------------------------------


def test_rows_sum_to_library_size_as_a_cells_by_genes_frame(trained_pbmc):
    mdata, model = trained_pbmc
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every PBMC cell has RNA or protein: no NaN row, no warning
        df = model.get_normalized_expression(progress_bar=False)
    assert isinstance(df, pd.DataFrame) and df.shape == (mdata.n_obs, len(_genes(model)))
    assert df.index.equals(mdata.obs_names) and list(df.columns) == list(_genes(model))
    assert (df.dtypes == np.float32).all() and np.isfinite(df.to_numpy()).all() and (df.to_numpy() > 0).all()
    np.testing.assert_allclose(df.sum(axis=1), 1.0, rtol=1e-5)
    cp10k = model.get_normalized_expression(library_size=1e4, return_numpy=True, progress_bar=False)
    assert isinstance(cp10k, np.ndarray) and cp10k.shape == df.shape
    np.testing.assert_allclose(cp10k.sum(axis=1), 1e4, rtol=1e-4)
    np.testing.assert_allclose(cp10k, df.to_numpy() * 1e4, rtol=1e-5)


def test_equals_the_decoder_mean_that_generate_gives(trained_pbmc):
    """From protein alone both read the same cell state (generate hides the RNA target; here it is not read), so
    generate(target="rna", n_steps=0)'s log1p CP10k is log1p of get_normalized_expression(library_size=1e4)."""
    mdata, model = trained_pbmc
    protein = np.asarray(mdata.obsmap["adt"]) > 0
    ours = model.get_normalized_expression(indices=protein, modality="protein", library_size=1e4, progress_bar=False)
    generated = model.generate(mdata.copy(), target="rna", sources=["protein"], n_steps=0, progress_bar=False)
    np.testing.assert_allclose(np.log1p(ours.to_numpy()), _dense(generated.X)[protein], rtol=1e-4, atol=1e-4)
    # by default the cell's own RNA is read too (nothing hidden): paired cells differ, RNA-only cells do not
    full = model.get_normalized_expression(library_size=1e4, progress_bar=False)
    rna = np.asarray(mdata.obsmap["rna"]) > 0
    assert not np.allclose(full.loc[ours.index[rna[protein]]], ours[rna[protein]], rtol=1e-3)
    rna_only = model.get_normalized_expression(indices=rna & ~protein, modality="rna", library_size=1e4,
                                               progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(rna_only, full[rna & ~protein], rtol=1e-4)


def test_quality_floor_against_the_cells_own_counts(trained_pbmc8):
    """Each RNA cell's denoised expression agrees with its own normalised counts far better than with another
    cell's. Pearson over genes of log1p CP10k, each gene centred over the cells (without centring every cell looks
    like the average profile and a shuffle scores as high). Measured when written (8 epochs, seed 0): 0.186 against
    0.010 for shuffled cells; at 2 epochs the state carried nothing (0.003)."""
    mdata, model = trained_pbmc8
    cells = mdata["rna"].obs_names
    x = _dense(mdata["rna"][:, _genes(model)].X).astype(np.float64)
    observed = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    denoised = np.log1p(model.get_normalized_expression(library_size=1e4, progress_bar=False).loc[cells].to_numpy())
    observed, denoised = observed - observed.mean(0), denoised - denoised.mean(0)
    own = _row_pearson(denoised, observed).mean()
    shuffled = _row_pearson(denoised[np.random.default_rng(0).permutation(len(cells))], observed).mean()
    assert own >= shuffled + 0.1, (own, shuffled)


def test_gene_list_picks_columns_in_its_order(trained_pbmc):
    _, model = trained_pbmc
    genes = _genes(model)
    full = model.get_normalized_expression(library_size=1e4, progress_bar=False)
    pick = [genes[7], genes[2], genes[40]]
    part = model.get_normalized_expression(gene_list=pick, library_size=1e4, progress_bar=False)
    assert list(part.columns) == pick
    np.testing.assert_allclose(part, full[pick], rtol=1e-6)
    with pytest.raises(KeyError, match=r"not RNA features.*NOT_A_GENE"):
        model.get_normalized_expression(gene_list=[genes[0], "NOT_A_GENE"], progress_bar=False)
    with pytest.raises(KeyError, match="cd39"):  # a protein's name is not an RNA feature
        model.get_normalized_expression(gene_list=["cd39"], progress_bar=False)
    with pytest.raises(ValueError, match="empty"):
        model.get_normalized_expression(gene_list=[], progress_bar=False)


def test_transform_batch_decodes_as_another_batch(trained_pbmc8):
    mdata, model = trained_pbmc8
    own = model.get_normalized_expression(progress_bar=False)
    as_p2 = model.get_normalized_expression(transform_batch="p2_0", progress_bar=False)
    np.testing.assert_allclose(as_p2.sum(axis=1), 1.0, rtol=1e-5)
    batch = mdata.obs["batch"].astype(str).to_numpy()
    np.testing.assert_allclose(as_p2[batch == "p2_0"], own[batch == "p2_0"], rtol=1e-5)  # already p2
    moved = np.abs(as_p2[batch == "p1_0"].to_numpy() - own[batch == "p1_0"].to_numpy()).max()
    assert moved > 1e-4 * own.to_numpy().max(), moved
    with pytest.raises(ValueError, match=r"'p9_0' is not a training batch.*p1_0"):
        model.get_normalized_expression(transform_batch="p9_0", progress_bar=False)


def test_indices_select_and_order_the_cells(trained_pbmc):
    mdata, model = trained_pbmc
    full = model.get_normalized_expression(progress_bar=False)
    some = model.get_normalized_expression(indices=[5, 2, 1500], batch_size=2, progress_bar=False)
    assert list(some.index) == list(mdata.obs_names[[5, 2, 1500]])
    np.testing.assert_allclose(some, full.iloc[[5, 2, 1500]], rtol=1e-5)
    mask = np.zeros(mdata.n_obs, dtype=bool)
    mask[[3, 900]] = True
    np.testing.assert_allclose(model.get_normalized_expression(indices=mask, progress_bar=False),
                               full.iloc[[3, 900]], rtol=1e-5)  # fmt: skip


def test_n_samples_averages_the_decoder_mean_over_posterior_draws(trained_pbmc8):
    """scvi-tools' ``n_samples`` / ``return_mean``: draws of z from the posterior, seeded, independent of the
    batching; their mean is close to, but not, the mean at the posterior mean."""
    mdata, model = trained_pbmc8
    at_mean = model.get_normalized_expression(library_size=1e4, progress_bar=False)
    averaged = model.get_normalized_expression(library_size=1e4, n_samples=12, seed=3, progress_bar=False)
    assert isinstance(averaged, pd.DataFrame) and averaged.index.equals(at_mean.index)
    np.testing.assert_allclose(averaged.sum(axis=1), 1e4, rtol=1e-4)
    assert not np.allclose(averaged, at_mean, rtol=1e-3)  # the draws differ from the mean
    assert _row_pearson(np.log1p(averaged.to_numpy()), np.log1p(at_mean.to_numpy())).min() > 0.9
    draws = model.get_normalized_expression(library_size=1e4, n_samples=12, seed=3, return_mean=False,
                                            batch_size=37, progress_bar=False)  # fmt: skip
    assert isinstance(draws, np.ndarray) and draws.shape == (12, *at_mean.shape)
    np.testing.assert_allclose(draws.mean(0), averaged.to_numpy(), rtol=1e-4, atol=1e-4)  # batching does not matter
    assert np.abs(draws[0] - draws[1]).max() > 1e-3 * at_mean.to_numpy().max()  # every draw its own
    other = model.get_normalized_expression(library_size=1e4, n_samples=12, seed=4, progress_bar=False)
    assert not np.allclose(other, averaged, rtol=1e-4)
    with pytest.warns(hc.HoloCellWarning, match="returned as a NumPy array"):  # scvi-tools warns the same
        explicit = model.get_normalized_expression(n_samples=2, return_mean=False, return_numpy=False,
                                                   progress_bar=False)  # fmt: skip
    assert isinstance(explicit, np.ndarray) and explicit.shape == (2, *at_mean.shape)
    one = model.get_normalized_expression(library_size=1e4, n_samples=1, seed=4, return_mean=False,
                                          progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(one, at_mean, rtol=1e-6)  # one sample: the posterior mean, seed or not


def test_library_size_latent_gives_each_cells_expected_counts(trained_pbmc):
    """``library_size="latent"``: a row sums to the cell's own RNA count (scVI's observed library); cells
    without RNA take the training cells' typical library, one value for all of them."""
    mdata, model = trained_pbmc
    counts = model.get_normalized_expression(library_size="latent", progress_bar=False)
    rna = np.asarray(mdata.obsmap["rna"]) > 0
    totals = _dense(mdata["rna"].X).sum(1)
    np.testing.assert_allclose(counts[rna].sum(axis=1), totals, rtol=1e-4)
    without = counts[~rna].sum(axis=1).to_numpy()
    assert len(without) == 400 and np.allclose(without, without[0], rtol=1e-4) and without[0] > 1
    scale = model.get_normalized_expression(progress_bar=False)
    np.testing.assert_allclose(counts[rna], scale[rna].to_numpy() * totals[:, None], rtol=1e-4)


def test_cells_measured_in_none_of_the_modalities_read_are_nan(trained_pbmc):
    mdata, model = trained_pbmc
    no_protein = np.asarray(mdata.obsmap["adt"]) == 0
    with pytest.warns(hc.HoloCellWarning) as record:
        df = model.get_normalized_expression(modality="protein", progress_bar=False)
    (message,) = _ours(record)
    for part in ("400 of the 1600 cells", "protein (mdata.mod['adt'])", "NaN", "indices=", "modality="):
        assert part in message, part
    assert df[no_protein].isna().all().all() and np.isfinite(df[~no_protein].to_numpy()).all()


def test_bad_arguments_are_refused_before_any_work(trained_pbmc, monkeypatch):
    mdata, model = trained_pbmc

    def no_work(*args, **kwargs):
        raise AssertionError("the data were read before the arguments were checked")

    monkeypatch.setattr(model, "_arrays", no_work)
    gene = _genes(model)[0]
    bad = [
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_samples": 2.5}, TypeError, "n_samples"),
        ({"library_size": "observed"}, ValueError, "latent"),
        ({"return_mean": "yes"}, TypeError, "return_mean"),
        ({"n_samples": 3, "seed": -1}, ValueError, "seed"),
        ({"library_size": 0}, ValueError, "library_size"),
        ({"library_size": float("nan")}, ValueError, "library_size"),
        ({"library_size": True}, ValueError, "library_size"),
        ({"return_numpy": "yes"}, TypeError, "return_numpy"),
        ({"gene_list": [gene, "NOT_A_GENE"]}, KeyError, "NOT_A_GENE"),
        ({"gene_list": 5}, TypeError, "gene_list"),
        ({"modality": "atac"}, ValueError, "Unknown modality"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"progress_bar": "no"}, ValueError, "progress_bar"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            model.get_normalized_expression(**kwargs)
    with pytest.raises(ValueError, match="both|twice"):
        model.get_normalized_expression(mdata, adata=mdata)
    monkeypatch.undo()

    def no_forward(*args, **kwargs):
        raise AssertionError("the network ran before transform_batch was checked")

    monkeypatch.setattr(model.module, "expression_scale", no_forward)
    with pytest.raises(ValueError, match="not a training batch"):
        model.get_normalized_expression(transform_batch="p9_0")


def test_models_it_cannot_serve_say_what_to_do(pbmc):
    no_state = pbmc.copy()
    hc.HoloCell.setup_mudata(no_state, modalities={"rna": "rna", "protein": "adt"}, batch_key="batch")
    model = hc.HoloCell(no_state, **TINY, cell_state_kwargs=LEGACY_CELL_STATE)
    with pytest.raises(ValueError, match=r"no(ne)? .*cell state.*generate\(target='rna'\)"):
        model.get_normalized_expression()
    with pytest.raises(ValueError, match="give_mean=True and return_dist=False"):
        model.get_latent_representation(return_dist=True)
    with pytest.raises(ValueError, match="give_mean=True and return_dist=False"):
        model.get_latent_representation(give_mean=False)
    protein_only = pbmc.copy()
    hc.HoloCell.setup_mudata(protein_only, modalities={"protein": "adt"}, batch_key="batch")
    with pytest.raises(ValueError, match="no RNA modality"):
        hc.HoloCell(protein_only, **TINY).get_normalized_expression()


def test_the_data_are_not_changed(trained_pbmc, tmp_path):
    mdata, model = trained_pbmc
    work = mdata.copy()
    before = _digest(work)
    model.get_normalized_expression(work, transform_batch="p3_0", gene_list=list(_genes(model)[:5]),
                                    progress_bar=False)  # fmt: skip
    model.get_latent_representation(adata=work, return_dist=True, progress_bar=False)
    assert _digest(work) == before


def test_adata_is_another_name_of_mdata(trained_pbmc, tmp_path):
    mdata, model = trained_pbmc
    work = mdata.copy()
    z = model.get_latent_representation(progress_bar=False)
    np.testing.assert_allclose(model.get_latent_representation(adata=work, progress_bar=False), z, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="adata="):
        model.get_latent_representation(mdata=work, adata=work)
    with pytest.raises(ValueError, match="adata="):
        model.get_latent_representation(work, adata=work)
    expression = model.get_normalized_expression(progress_bar=False)
    np.testing.assert_allclose(model.get_normalized_expression(mdata=work, progress_bar=False), expression, rtol=1e-5)
    # a path given as adata= is read backed and closed again
    path = tmp_path / "pbmc.h5mu"
    work.write(path)
    np.testing.assert_allclose(model.get_latent_representation(adata=path, progress_bar=False), z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.get_normalized_expression(adata=str(path), progress_bar=False), expression,
                               rtol=1e-4)  # fmt: skip
    with h5py.File(path, "r+"):  # no handle left open
        pass


# --- get_latent_representation: return_dist, give_mean ------------------------------------------------------------


def test_return_dist_gives_the_posterior_mean_and_variance(trained_pbmc):
    mdata, model = trained_pbmc
    z = model.get_latent_representation(progress_bar=False)
    mean, var = model.get_latent_representation(return_dist=True, progress_bar=False)
    assert mean.shape == var.shape == (mdata.n_obs, model.config.n_latent) and var.dtype == np.float32
    np.testing.assert_allclose(mean, z, rtol=1e-5, atol=1e-6)
    assert (var > 0).all() and np.isfinite(var).all()
    no_protein = np.asarray(mdata.obsmap["adt"]) == 0
    with pytest.warns(hc.HoloCellWarning, match="400 of the 1600 cells"):
        mean, var = model.get_latent_representation(modality="protein", return_dist=True, progress_bar=False)
    assert np.isnan(mean[no_protein]).all() and np.isnan(var[no_protein]).all()
    assert (var[~no_protein] > 0).all()
    with pytest.raises(TypeError, match="return_dist"):
        model.get_latent_representation(return_dist="yes")


def test_give_mean_false_draws_from_the_posterior(trained_pbmc):
    _, model = trained_pbmc
    mean, var = model.get_latent_representation(return_dist=True, progress_bar=False)
    draw = model.get_latent_representation(give_mean=False, seed=1, progress_bar=False)
    assert draw.shape == mean.shape and draw.dtype == np.float32
    again = model.get_latent_representation(give_mean=False, seed=1, batch_size=7, progress_bar=False)
    np.testing.assert_allclose(again, draw, rtol=1e-4, atol=1e-5)  # a seed's draw does not depend on the batching
    other = model.get_latent_representation(give_mean=False, seed=2, progress_bar=False)
    assert not np.allclose(other, draw)
    standard = (draw - mean) / np.sqrt(var)  # N(0, 1) if the draw is from N(mean, var)
    assert abs(standard.mean()) < 0.02 and abs(standard.std() - 1) < 0.02, (standard.mean(), standard.std())
    with pytest.raises(ValueError, match="seed"):
        model.get_latent_representation(give_mean=False, seed=-1)
    with pytest.raises(TypeError, match="give_mean"):
        model.get_latent_representation(give_mean=None)
