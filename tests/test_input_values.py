"""Input checks at set-up: every count value is checked, and gene names are matched to the vocabulary (issue 20).

Real components: simulated and hand-built MuData, real ``.h5mu`` files (backed reads), a real save / load.
"""

from __future__ import annotations

import json

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import holocell as hc

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}
SIM = {"n_genes": 20, "n_tfs": 4, "n_proteins": 5, "n_distal_peaks": 3, "peaks_per_gene": 2,
       "missing": {"protein": ["batch1"]}, "seed": 0}  # fmt: skip
#: the simulator's genes (SIM1, ...) are synthetic: setting its data up reports how few are vocabulary genes
SIM_GENES = r"RNA features of modality .* map to a known"


def _sim():
    return hc.data.simulate_multiome(64, **SIM)[0]


def _sim_genes():
    return pytest.warns(hc.HoloCellWarning, match=SIM_GENES)


# ----------------------------------------------------------------------------- issue 20: every value checked
def _rna_only(x, names=None):
    """A MuData with one RNA modality holding ``x`` (gene names known to the vocabulary by default)."""
    import anndata as ad
    import mudata as md

    genes = names if names is not None else _sim()["rna"].var_names[:2].tolist() + ["CD4", "CD8A", "MS4A1"]
    obs = pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])])
    return md.MuData({"rna": ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes[: x.shape[1]]))})


@pytest.mark.parametrize(("bad", "words"), [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"), (-1.0, "negative"),
                                            (100_000.4, "non-integer"), (7.5, "non-integer")])  # fmt: skip
@pytest.mark.parametrize("kind", ["dense", "csr", "backed"])
def test_every_value_is_checked(tmp_path, bad, words, kind):
    """A bad value after the first 1.2 million stored values (and after the first 10,000 rows)."""
    import mudata as md

    x = np.ones((250_000, 5), dtype=np.float64)  # 1.25 M values, all counts but the last
    x[-1, -1] = bad
    x[-1, 0] = 100_000  # a large count next to it: the tolerance is absolute, not relative
    mdata = _rna_only(sp.csr_matrix(x) if kind != "dense" else x)
    if kind == "backed":
        mdata.write(tmp_path / "d.h5mu")
        mdata = md.read_h5mu(tmp_path / "d.h5mu", backed=True)
    with pytest.raises(ValueError, match=words) as err:
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna"})
    assert "rna_layer='counts'" in str(err.value)


def test_check_is_exact_to_an_absolute_tolerance_with_flat_memory():
    import tracemalloc

    from holocell.model._counts import CHUNK_VALUES, check_counts

    x = np.full((2000, 4000), 3.0)  # 64 MB
    x[0, 0] = 100_000.0 + 5e-7  # float noise within 1e-6 of an integer: a count
    check_counts(x, "rna", "rna")
    x[-1, -1] = 100_000.4
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"non-integer values \(e\.g\. 100000\.4\)"):
        check_counts(x, "rna", "rna")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * CHUNK_VALUES * x.itemsize < x.nbytes / 5  # a few chunks, not a copy of the matrix


# ----------------------------------------------------------------------------- issue 20: vocabulary matching
def test_low_and_zero_gene_matching(tmp_path):
    counts = sp.csr_matrix(np.repeat(np.arange(1, 31, dtype=np.float32)[:, None], 10, axis=1))  # totals vary
    names = ["CD4", "CD8A", "MS4A1"] + [f"ENSG_OTHER_RELEASE_{i}" for i in range(7)]
    with pytest.warns(UserWarning, match=r"Only 3 of 10 RNA features .* \(30%\)") as rec:
        hc.HoloCell.setup_mudata(_rna_only(counts, names), modalities={"rna": "rna"})
    text = str([w.message for w in rec])
    assert "species" in text and "Ensembl" in text and "annotation release" in text
    unmatched = _rna_only(counts, [f"{i}" for i in range(10)])  # integer indices as names
    with pytest.raises(ValueError, match="None of the 10 RNA features") as err:
        hc.HoloCell.setup_mudata(unmatched, modalities={"rna": "rna"})
    assert "allow_unmatched_genes=True" in str(err.value)
    with pytest.warns(UserWarning, match="dataset-only anchor"):
        hc.HoloCell.setup_mudata(unmatched, modalities={"rna": "rna"}, allow_unmatched_genes=True)
    model = hc.HoloCell(unmatched, **TINY)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["setup_args"]["allow_unmatched_genes"]
    with pytest.warns(UserWarning, match="dataset-only anchor"):  # the setup is replayed, allowance included
        loaded = hc.HoloCell.load(tmp_path / "m", _rna_only(counts, [f"{i}" for i in range(10)]))
    assert loaded.adata_manager.registry["setup_args"]["allow_unmatched_genes"] is True


def test_atac_half_counts_are_accepted_rna_and_protein_still_need_counts():
    mdata = _sim()
    mdata.mod["atac"].X = mdata["atac"].X * 0.5  # half-counts, as in some public multiome releases
    mdata.update()
    half = pytest.warns(UserWarning, match=r"'atac' \(ATAC\) has \d+ non-integer values .* binary accessibility")
    # 64 simulated cells: two have no ATAC count at all, and holocell says so at setup
    empty = pytest.warns(hc.HoloCellWarning, match="have no counts at all")
    with half, empty, _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, genome=_table(mdata))
    for m in ("rna", "protein"):
        other = _sim()
        other.mod[m].X = other[m].X * 0.5
        with pytest.raises(ValueError, match=f"'{m}' has non-integer values") as err:
            hc.HoloCell.setup_mudata(other, modalities={m: m})
        assert f"{m}_layer='counts'" in str(err.value)


def _table(mdata):
    var = mdata["rna"].var
    return var.assign(gene_name=var.index)[["gene_name", "chrom", "tss", "strand"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- constructor arguments
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"d_model": "64"}, "'d_model' must be an integer"),
        ({"n_layers": 1.5}, "'n_layers' must be an integer"),
        ({"dropout": 1.5}, r"'dropout' must lie in \[0, 1\)"),
        ({"kl_weight": "a lot"}, "'kl_weight' must be a number"),
        ({"elbo_weight": float("nan")}, "'elbo_weight' must be a finite number"),
        ({"batch_adversary_weight": float("inf")}, "'batch_adversary_weight' must be a finite number"),
        ({"batch_mmd_weight": -1.0}, "batch_mmd_weight must be a number >= 0"),
        ({"p_whole": 1.5}, "p_whole is a probability"),
        ({"align_mode": "both"}, "align_mode must be one of"),
        ({"no_such_setting": 1.0}, "Unknown objective settings"),
        ({"d_modle": 32}, r"not constructor arguments either\. Did you mean 'd_model' for 'd_modle'\?"),
        ({"n_layer": 1}, "Did you mean 'n_layers'"),
        ({"cell_state_kwargs": {"value_path": "False"}}, "'value_path' must be true or false"),
        ({"cell_state_kwargs": {"tie_peaks_to_genes": 1.5}}, "'tie_peaks_to_genes' must be true or false"),
        ({"cell_state_kwargs": {"n_hidden": 0}}, "'n_hidden'"),
        ({"d_model": 15}, "must divide d_model=15"),  # was a bare AssertionError inside torch code
        ({"d_model": 16, "n_heads": 3}, "n_heads=3 must divide d_model=16"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, words):
    """A wrong type, NaN, infinity or an out-of-range value is refused before anything is built, naming the
    argument (it used to fail inside torch, or to train on NaN)."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    with pytest.raises(ValueError, match=words):
        hc.HoloCell(mdata, **{**TINY, **kwargs})


def test_numpy_numbers_are_accepted_as_constructor_arguments():
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, d_model=np.int64(32), n_layers=1, n_heads=2, n_latents=8, kl_weight=np.float32(2.0))
    assert model.objective_config.kl_weight == 2.0 and isinstance(model.objective_config.kl_weight, float)
    model = hc.HoloCell(mdata, **TINY, cell_state_kwargs={"value_path": np.bool_(True), "n_hidden": np.int64(16)})
    assert model.module.network.config.value_path is True and model.module.network.config.n_hidden == 16


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        ({"max_epochs": "2"}, TypeError, "max_epochs must be an integer"),
        ({"max_epochs": 2.5}, TypeError, "max_epochs must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"seed": "a"}, TypeError, "seed must be an integer >= 0"),
        ({"early_stopping_patience": -1}, ValueError, "early_stopping_patience must be an integer >= 0"),
        ({"validation_size": "0.1"}, TypeError, "validation_size must be a number"),
        ({"lr": float("nan")}, ValueError, "'lr' must be a finite number"),
        ({"plan_kwargs": {"warmup_steps": "ten"}}, ValueError, "'warmup_steps' must be an integer"),
    ],
)
def test_bad_train_arguments_are_named_before_training(call, error, words):
    """``train()``'s counts, fractions and learning rate are checked before Lightning starts (they used to fail
    inside it as a ZeroDivisionError or a comparison between str and int)."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(error, match=words):
        model.train(**{"max_epochs": 1, "enable_progress_bar": False, **call})
    assert not model.is_trained_


@pytest.mark.parametrize("train_config", [{"lr": "fast"}, {"lr": float("nan")}, {"min_epochs": 0}])
def test_bad_train_config_is_refused_naming_the_field(train_config):
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    with pytest.raises(ValueError, match=f"'{next(iter(train_config))}'"):
        hc.HoloCell(mdata, **TINY, train_config=train_config)
    model = hc.HoloCell(mdata, **TINY, train_config={"lr": np.float32(1e-3), "betas": (0.9, 0.99)})
    assert model.train_config.lr == pytest.approx(1e-3) and model.train_config.betas == (0.9, 0.99)


@pytest.mark.parametrize("temperature", [float("nan"), -1.0, "hot"])
def test_generation_temperature_must_be_finite_and_non_negative(temperature):
    """A NaN or negative temperature used to mean 0 (greedy) without a word."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        model.generate(mdata, target="protein", n_steps=2, temperature=temperature, progress_bar=False)
    assert "protein_generated" not in mdata.mod


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"batch_size": 1.5}, TypeError, "batch_size must be an integer >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer >= 1"),
        ({"device": "bogus"}, ValueError, "is not a torch device"),
        ({"device": 3.0}, TypeError, "device must be a string"),
    ],
)
def test_inference_batch_size_and_device_are_checked(kwargs, error, words):
    """batch_size=1.5 used to be truncated to 1 without a word, and a bad device gave torch's own error."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(error, match=words):
        model.get_latent_representation(mdata, progress_bar=False, **kwargs)
    with pytest.raises(error, match=words):
        model.generate(mdata, target="protein", progress_bar=False, **kwargs)
    assert "protein_generated" not in mdata.mod
    assert next(model.module.parameters()).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_refused_with_the_fix():
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU on this machine; pass device='cpu'"):
        model.get_latent_representation(mdata, device="cuda", progress_bar=False)
    z = model.get_latent_representation(mdata, device="cpu", batch_size=np.int64(7), progress_bar=False)
    assert z.shape[0] == mdata.n_obs and np.isfinite(z).all()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"n_steps": 0, "temperature": 1.0}, ValueError, "nothing would be sampled; pass n_steps >= 1"),
        ({"temperature": 5.0}, ValueError, "nothing would be sampled"),  # protein's default is the mean (0 steps)
        ({"n_steps": 2, "remasking": "bogus"}, ValueError, "remasking must be 'low_confidence' or 'random'"),
        ({"n_steps": 0, "remasking": "bogus"}, ValueError, "remasking must be"),
        ({"n_steps": 2, "seed": 1.5}, TypeError, "seed must be an integer >= 0"),
        ({"n_steps": 2, "seed": 2**70}, ValueError, "seed must be below 2\\*\\*63"),
        ({"n_steps": 2.0}, TypeError, "n_steps must be an integer >= 0"),
    ],
)
def test_sampling_settings_that_would_be_ignored_are_refused(kwargs, error, words):
    """temperature and remasking were recorded but ignored at n_steps=0; a bad seed failed deep in torch."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(error, match=words):
        model.generate(mdata, target="protein", progress_bar=False, **kwargs)
    assert "protein_generated" not in mdata.mod
    out = model.generate(mdata, target="protein", n_steps=np.int64(2), temperature=1.0, seed=np.int64(3),
                         progress_bar=False)  # fmt: skip
    assert out.uns["holocell"]["params"]["n_steps"] == 2 and np.isfinite(out.X).all()


def test_load_checks_the_device_first(tmp_path):
    """load(device="bogus") gave torch's own error after the whole model was built; load_pretrained checks it
    before any download."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    hc.HoloCell(mdata, **TINY).save(tmp_path / "model")
    for device, words in (("bogus", "is not a torch device"), ("meta", "cannot run holocell")):
        with pytest.raises(ValueError, match=words):
            hc.HoloCell.load(tmp_path / "model", mdata.copy(), device=device)
        with pytest.raises(ValueError, match=words):  # a URL that is never fetched
            hc.HoloCell.load_pretrained("http://127.0.0.1:9/none.zip", device=device)
    with _sim_genes():
        model = hc.HoloCell.load(tmp_path / "model", mdata.copy(), device="cpu")
    with pytest.raises(ValueError, match="cannot run holocell"):  # "meta" would have dropped the weights
        model.get_latent_representation(mdata, device="meta", progress_bar=False)
    assert np.isfinite(model.get_latent_representation(mdata, progress_bar=False)).all()


def test_new_data_of_the_wrong_kind_is_named(tmp_path):
    """An AnnData, an .h5ad path or new cells without the batch column gave pandas' / mudata's own errors."""
    mdata = _sim()
    with _sim_genes():
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(TypeError, match="wrap it with mudata.MuData"):
        model.get_latent_representation(mdata["rna"].copy(), progress_bar=False)
    with pytest.raises(TypeError, match="wrap it with mudata.MuData"):
        model.generate(mdata["rna"].copy(), target="protein", progress_bar=False)
    mdata["rna"].write_h5ad(tmp_path / "rna.h5ad")
    with pytest.raises(TypeError, match="is an .h5ad file"):
        model.get_latent_representation(tmp_path / "rna.h5ad", progress_bar=False)
    (tmp_path / "notes.h5mu").write_text("not hdf5")
    with pytest.raises(ValueError, match="is not a readable .h5mu file"):  # was h5py's "file signature not found"
        model.get_latent_representation(tmp_path / "notes.h5mu", progress_bar=False)
    with pytest.raises(TypeError, match="read it with mudata.read_h5mu"):  # was scvi's "'str' has no attribute 'uns'"
        hc.HoloCell(str(tmp_path / "notes.h5mu"), **TINY)
    new = mdata.copy()
    del new.obs["batch"]
    with pytest.raises(KeyError, match="no column 'batch', the batch_key the model was set up with"):
        model.get_latent_representation(new, progress_bar=False)
    with pytest.raises(ValueError, match="An empty list names no modality"):
        model.get_latent_representation(mdata, modality=[], progress_bar=False)
    out = model.generate(new, target="protein", transform_batch="batch0", progress_bar=False)
    assert np.isfinite(out.X).all()


def test_numeric_batches_are_matched_by_value():
    """A batch trained as 1 (int) was read as a new batch from 1.0 (a float column, e.g. after a merge with NaN)."""
    from holocell.data._access import batch_codes

    cells = md.MuData({"rna": ad.AnnData(np.ones((4, 2)))})
    cells.obs["b"] = np.array([1.0, 2.0, 3.0, np.nan])
    assert batch_codes(cells, "b", ["1", "2"]).tolist() == [0, 1, 2, 2]  # 3 and NaN: unseen (code 2)
    cells.obs["b"] = ["1", "1.0", "01", "x"]  # names are matched by name only
    assert batch_codes(cells, "b", ["1", "01"]).tolist() == [0, 2, 1, 2]
    cells.obs["b"] = [True, 1, 1.0, False]  # a bool is a name, never the number 1
    assert batch_codes(cells, "b", ["1.0", "True"]).tolist() == [1, 0, 0, 2]


def test_perturbing_an_atac_only_model_says_what_is_missing():
    """It said "regenerate must be a non-empty subset ..., got []", an argument the user never passed."""
    mdata, _ = hc.data.simulate_multiome(60, n_genes=20, n_tfs=4, n_proteins=0, modalities=("rna", "atac"), seed=0)
    var = mdata["rna"].var
    tss = var.assign(gene_name=var.index)[["gene_name", "chrom", "tss", "strand"]].reset_index(drop=True)
    mdata = md.MuData({"atac": mdata["atac"].copy()})
    mdata.obs["batch"] = mdata["atac"].obs["batch"].astype(str).to_numpy()
    hc.HoloCell.setup_mudata(mdata, modalities={"atac": "atac"}, batch_key="batch", genome=tss)
    model = hc.HoloCell(mdata, **TINY)
    with pytest.raises(ValueError, match="read on RNA or protein, and this model has only \\['atac'\\]"):
        model.predict_perturbation(mdata, cres=[mdata["atac"].var_names[0]])
