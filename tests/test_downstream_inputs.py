"""The downstream API (``hc.tl.perturb`` / ``grn`` / ``annotate`` / ``fate_shift``, ``HoloCell.predict_perturbation``
/ ``iter_perturbations``) on careless and hostile input: a clear error before any work, never a raw IndexError or
silent NaN, and never a change to data holocell did not write."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

#: The simulator's genes (SIM1, ...) are synthetic: setting its data up reports that few are vocabulary genes.
SIM_GENES = r"RNA features of modality .* map to a known"
FAST = {"n_steps": 1, "progress_bar": False}


@pytest.fixture(scope="module")
def sim():
    """A mosaic of three batches (batch1 lacks ATAC, batch2 lacks RNA) and a tiny model trained 2 epochs (read-only)."""
    mdata, _ = hc.data.simulate_multiome(
        150, n_genes=24, n_tfs=4, n_proteins=6, n_batches=3, missing={"atac": ["batch1"], "rna": ["batch2"]}, seed=0
    )
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(
            mdata, modalities={"rna": "rna", "atac": "atac", "protein": "protein"}, batch_key="batch"
        )
    model = hc.HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    model.train(max_epochs=2, enable_progress_bar=False, seed=0)
    return mdata, model


def fingerprint(mdata) -> tuple:
    """Everything a user owns in ``mdata``: modalities (X, obs, var), global obs, obsm and uns."""
    digest = {}
    for name, adata in mdata.mod.items():
        x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        digest[name] = (hashlib.sha256(x.tobytes()).hexdigest(), adata.obs.to_csv(), adata.var.to_csv())
    obsm = {k: hashlib.sha256(np.asarray(v).tobytes()).hexdigest() for k, v in mdata.obsm.items()}
    return digest, mdata.obs.to_csv(), obsm, repr(sorted(mdata.uns.keys()))


def rna_cells(mdata) -> np.ndarray:
    return np.asarray(mdata.obsmap["rna"]).ravel() > 0


@pytest.fixture
def no_work(sim, monkeypatch):
    """Reading the data or embedding fails the test: the call under test must stop before any work."""
    _, model = sim

    def fail(*args, **kwargs):
        raise AssertionError("the data were read before the arguments were checked")

    monkeypatch.setattr(model, "_arrays", fail)
    monkeypatch.setattr(model, "get_latent_representation", fail)
    return model


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"genes": b"SIM1"}, TypeError, "got bytes"),
        ({"genes": 5}, TypeError, "got int 5"),
        ({"genes": [5]}, TypeError, "must hold names"),
        ({"genes": ["SIM1", "SIM1"]}, ValueError, "more than once"),
        ({"genes": ["NOPE"]}, KeyError, "Unknown genes"),
        ({"genes": ["sim1"]}, KeyError, "did you mean \\['SIM1'\\]"),
        ({"genes": [], "cres": None}, ValueError, "Give `genes` and/or `cres`"),
        ({"cres": ["chr9:1-2"]}, KeyError, "Unknown CREs"),
        ({"genes": "SIM1", "n_top": 0}, ValueError, "n_top must be an integer >= 1"),
        ({"genes": "SIM1", "n_steps": 0}, ValueError, "n_steps must be an integer >= 1"),
        ({"genes": "SIM1", "batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"genes": "SIM1", "mode": "overexpress", "overexpress_quantile": 1.5}, ValueError, "overexpress_quantile"),
        ({"genes": "SIM1", "mode": "overexpress", "overexpress_quantile": "0.5"}, ValueError, "overexpress_quantile"),
        ({"genes": "SIM1", "key_added": None}, TypeError, "key_added must be a non-empty string"),
    ],
)
def test_perturb_arguments_are_checked_before_any_work(sim, no_work, kwargs, error, words):
    mdata, _ = sim
    work = mdata.copy()
    before = fingerprint(work)
    with pytest.raises(error, match=words):
        hc.tl.perturb(work, no_work, **kwargs)
    assert fingerprint(work) == before


def test_names_may_be_a_string_an_index_or_an_array(sim):
    mdata, model = sim
    cells = np.flatnonzero(rna_cells(mdata))[:8]
    for genes in ("SIM1", pd.Index(["SIM1"]), np.array(["SIM1"])):
        res = model.predict_perturbation(mdata, genes=genes, regenerate="rna", indices=cells, **FAST)
        assert res.params["genes"] == ["SIM1"] and set(res.features) == {"rna"}  # "rna" is one modality
    assert [g for g, _ in model.iter_perturbations(mdata, "SIM2", indices=cells, **FAST)] == ["SIM2"]


def test_iter_perturbations_checks_every_gene_before_the_first(sim, monkeypatch):
    mdata, model = sim
    calls = []
    monkeypatch.setattr(model, "_perturb_arrays", lambda *a, **k: calls.append(a))
    with pytest.raises(KeyError, match="Unknown genes \\['NOPE'\\]"):
        list(model.iter_perturbations(mdata, ["SIM1", "SIM2", "NOPE"]))
    assert calls == []  # formerly SIM1 and SIM2 were regenerated before the bad name was found


# ----------------------------------------------------------------------------- cells
def test_perturbation_cells_as_mask_positions_or_bad_values(sim):
    mdata, model = sim
    mask = np.zeros(mdata.n_obs, dtype=bool)
    mask[np.flatnonzero(rna_cells(mdata))[:5]] = True
    res = model.predict_perturbation(mdata, genes=["SIM1"], indices=mask, **FAST)  # formerly an IndexError
    assert (res.applied == mask).all() and np.isfinite(res.shift("rna")[mask]).all()
    assert np.isnan(res.shift("rna")[~mask]).all()
    with pytest.raises(ValueError, match="selects no cell"):
        model.predict_perturbation(mdata, genes=["SIM1"], indices=[])
    with pytest.raises(IndexError, match="not cell positions"):
        model.predict_perturbation(mdata, genes=["SIM1"], indices=[mdata.n_obs + 5])
    with pytest.raises(TypeError, match="integer positions"):
        model.predict_perturbation(mdata, genes=["SIM1"], indices=[1.5])


def test_embedding_cells_as_mask_positions_or_bad_values(sim):
    """A boolean mask used to be read as positions 0 and 1: the embedding of other cells, with no error."""
    mdata, model = sim
    every = model.get_latent_representation(mdata, progress_bar=False)
    mask = np.zeros(mdata.n_obs, dtype=bool)
    mask[[5, 7, 40]] = True
    np.testing.assert_allclose(model.get_latent_representation(mdata, indices=mask, progress_bar=False), every[mask],
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(model.get_latent_representation(mdata, indices=[40, 5], progress_bar=False),
                               every[[40, 5]], atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="one entry per cell"):
        model.get_latent_representation(mdata, indices=mask[:-1])
    with pytest.raises(IndexError, match="not cell positions"):
        model.get_latent_representation(mdata, indices=[mdata.n_obs])
    with pytest.raises(TypeError, match="integer positions"):
        model.get_latent_representation(mdata, indices=[0.5])
    with pytest.raises(ValueError, match="a 0/1 mask read as positions"):  # an int mask, e.g. from .astype(int)
        model.get_latent_representation(mdata, indices=mask.astype(int))
    with pytest.raises(ValueError, match="a 0/1 mask read as positions"):
        model.predict_perturbation(mdata, genes=["SIM1"], indices=mask.astype(np.int8))


def test_an_edit_that_applies_to_no_cell_is_an_error_not_nan(sim):
    mdata, model = sim
    no_atac = np.flatnonzero((mdata.obs["batch"] == "batch1").to_numpy())
    peak = mdata["atac"].var_names[0]
    with pytest.raises(ValueError, match="None of the .* cells to perturb has ATAC"):
        model.predict_perturbation(mdata, cres=[peak], indices=no_atac, **FAST)
    no_rna = np.flatnonzero(~rna_cells(mdata))
    with pytest.raises(ValueError, match="has RNA"):
        model.predict_perturbation(mdata, genes=["SIM1"], indices=no_rna, **FAST)


def test_other_feature_order_subset_or_missing_modality(sim):
    mdata, model = sim
    cells = np.flatnonzero(rna_cells(mdata))[:6]
    reference = model.predict_perturbation(mdata, genes=["SIM1"], indices=cells, seed=3, **FAST)
    shuffled = mdata.copy()
    shuffled.mod["rna"] = shuffled["rna"][:, shuffled["rna"].var_names[::-1]].copy()
    shuffled.update()
    res = model.predict_perturbation(shuffled, genes=["SIM1"], indices=cells, seed=3, **FAST)
    np.testing.assert_allclose(res.shift("rna")[cells], reference.shift("rna")[cells], atol=1e-5)  # read by name
    subset = mdata.copy()
    subset.mod["rna"] = subset["rna"][:, subset["rna"].var_names[:10]].copy()
    subset.update()
    with pytest.raises(ValueError, match="lacks 14 features"):
        hc.tl.perturb(subset, model, genes=["SIM1"], **FAST)
    without_atac = mdata.copy()
    del without_atac.mod["atac"]
    without_atac.update()
    with pytest.warns(hc.HoloCellWarning, match="mdata has no modality \\['atac'\\]"):  # read as not measured
        hc.tl.perturb(without_atac, model, genes=["SIM1"], **FAST)
    assert "holocell_perturb" not in subset.uns and "holocell_perturb" in without_atac.uns


# ----------------------------------------------------------------------------- grn
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"tfs": ["SIM1", "SIM1"]}, ValueError, "more than once"),
        ({"tfs": b"SIM1"}, TypeError, "got bytes"),
        ({"tfs": ["SIM1"], "targets": ["SIM1"]}, ValueError, "only candidate edge is the self-edge"),
        ({"tfs": ["SIM1"], "n_cells": 0}, ValueError, "n_cells must be an integer >= 1 or None"),
        ({"tfs": ["SIM1"], "n_cells": -3}, ValueError, "n_cells"),
        ({"tfs": ["SIM1"], "n_cells": 1.5}, TypeError, "n_cells"),
        ({"tfs": ["SIM1"], "n_steps": 0}, ValueError, "n_steps"),
    ],
)
def test_grn_arguments_are_checked_before_any_work(sim, no_work, kwargs, error, words):
    mdata, _ = sim
    work = mdata.copy()
    with pytest.raises(error, match=words):
        hc.tl.grn(work, no_work, method="knockout", **kwargs)
    assert "holocell_grn" not in work.uns


def test_grn_target_string_and_is_tf_column(sim):
    mdata, model = sim
    work = mdata.copy()
    hc.tl.grn(work, model, tfs="SIM1", targets="SIM2", method="embedding")
    edges = work.uns["holocell_grn"]
    assert list(edges["target"]) == ["SIM2"]  # formerly read as the targets 'S', 'I', 'M', '2'
    for bad in (np.nan, "False"):  # NaN and the string "False" both made every gene a TF
        work["rna"].var["is_tf"] = bad
        with pytest.raises(ValueError, match=r"is_tf'\] column must be True/False"):
            hc.tl.grn(work, model, method="embedding", key_added="grn_default")
    work["rna"].var["is_tf"] = False
    with pytest.raises(ValueError, match="marks no gene"):
        hc.tl.grn(work, model, method="embedding", key_added="grn_default")
    without_rna = work.copy()
    del without_rna.mod["rna"]
    without_rna.update()
    with pytest.raises(KeyError, match="MuData has no modality 'rna'"):  # formerly a bare KeyError: 'rna'
        hc.tl.grn(without_rna, model, method="embedding")


def test_grn_knockouts_sample_cells_with_rna(sim, monkeypatch):
    mdata, model = sim
    seen = {}
    original = model.iter_perturbations

    def spy(*args, **kwargs):
        seen["indices"] = kwargs["indices"]
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "iter_perturbations", spy)
    work = mdata.copy()
    hc.tl.grn(work, model, tfs=["SIM1"], method="knockout", n_cells=20, **FAST)
    assert len(seen["indices"]) == 20 and rna_cells(mdata)[seen["indices"]].all()
    assert work.uns["holocell_grn"]["knockout_effect"].notna().all()


# ----------------------------------------------------------------------------- fate_shift
def test_fate_shift_groups(sim, no_work):
    mdata, _ = sim
    work = mdata.copy()
    base = {"groupby": "cell_type", "source": "type0", "target": "type1"}
    cases = [
        ({"genes": ["SIM1", "SIM1"]}, ValueError, "more than once"),
        ({"genes": ["NOPE"]}, KeyError, "Unknown genes"),
        ({"genes": b"SIM1"}, TypeError, "got bytes"),
        ({"genes": ["SIM1"], "n_cells": 0}, ValueError, "n_cells must be an integer"),
        ({"genes": ["SIM1"], "n_cells": -1}, ValueError, "n_cells"),
        ({"genes": ["SIM1"], "mode": "ko"}, ValueError, "mode must be"),
        ({"genes": ["SIM1"], "groupby": "batch", "source": "batch2", "target": "batch0"}, ValueError, "has RNA"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            hc.tl.fate_shift(work, no_work, **{**base, **kwargs})
    work.obs["with_nan"] = work.obs["cell_type"].astype(object).where(work.obs["cell_type"] != "type2")
    with pytest.raises(ValueError, match="'nan' is not a value"):  # missing values are no group named "nan"
        hc.tl.fate_shift(work, no_work, groupby="with_nan", source="nan", target="type1", genes=["SIM1"])
    cats = list(work.obs["cell_type"].cat.categories)
    work.obs["with_empty"] = pd.Categorical(work.obs["cell_type"].astype(str), categories=[*cats, "empty"])
    with pytest.raises(ValueError, match="that any cell has"):  # a category without cells
        hc.tl.fate_shift(work, no_work, groupby="with_empty", source="type0", target="empty", genes=["SIM1"])
    with pytest.raises(ValueError, match="must differ"):
        hc.tl.fate_shift(work, no_work, groupby="cell_type", source="type0", target="type0", genes=["SIM1"])
    assert "holocell_fate_shift" not in work.uns


def test_fate_shift_numeric_groupby(sim):
    mdata, model = sim
    work = mdata.copy()
    work.obs["code"] = work.obs["cell_type"].cat.codes.astype(float)  # 0.0, 1.0, ...
    hc.tl.fate_shift(work, model, groupby="code", source=0, target=1, genes=["SIM1"], n_cells=5, n_steps=1)
    assert work.uns["holocell_fate_shift"]["ranking"]["gene"].tolist() == ["SIM1"]  # formerly: "0 is not a value"


# ----------------------------------------------------------------------------- annotate
def test_annotate_never_writes_over_the_labels_or_other_user_columns(sim):
    mdata, model = sim
    work = mdata.copy()
    query = (work.obs["batch"] == "batch1").to_numpy()
    before = fingerprint(work)
    for key in ("cell_type", "batch"):  # formerly the reference labels / the batches became the predictions
        with pytest.raises(ValueError, match="labels|not written by holocell.tl.annotate"):
            hc.tl.annotate(work, model, labels_key="cell_type", query=query, key_added=key)
    assert fingerprint(work) == before
    for _ in range(2):  # its own earlier result is replaced, as documented
        hc.tl.annotate(work, model, labels_key="cell_type", query=query)
    assert work.obs["holocell_label"][query].notna().all()


def test_annotate_arguments(sim):
    mdata, model = sim
    work = mdata.copy()
    query = (work.obs["batch"] == "batch1").to_numpy()
    with pytest.raises(ValueError, match="unknown_threshold"):
        hc.tl.annotate(work, model, labels_key="cell_type", query=query, unknown_threshold="0.5")
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 1"):
        hc.tl.annotate(work, model, labels_key="cell_type", query=query, n_neighbors=0)
    with pytest.raises(TypeError, match="mdata.obs_names\\[positions\\]"):
        hc.tl.annotate(work, model, labels_key="cell_type", query=[0, 1, 2])
    work.obsm["nan_rep"] = np.full((work.n_obs, 3), np.nan)
    with pytest.raises(ValueError, match="NaN or infinite"):
        hc.tl.annotate(work, model, labels_key="cell_type", query=query, use_rep="nan_rep")
    # a boolean Series is aligned by cell name, not by position
    work.obsm["rep"] = np.random.default_rng(0).normal(size=(work.n_obs, 4))
    shuffled = pd.Series(query, index=work.obs_names).iloc[::-1]
    hc.tl.annotate(work, None, labels_key="cell_type", query=shuffled, use_rep="rep", method="knn")
    assert (work.obs["holocell_label"].notna().to_numpy() == query).all()
    # a query that overlaps the reference is labelled from its own labels: said, not refused
    with pytest.warns(hc.HoloCellWarning, match=f"{int(query.sum())} query cells are also reference cells"):
        hc.tl.annotate(work, None, labels_key="cell_type", query=query, reference=np.ones(work.n_obs, bool),
                       use_rep="rep", method="knn", key_added="overlap")  # fmt: skip
    assert work.obs["overlap"].notna().sum() == query.sum()
    work.obs["one_label"] = pd.Series(np.where(query, None, "type0"), index=work.obs_names)  # one reference label
    with pytest.warns(hc.HoloCellWarning, match="The reference cells have one label"):
        hc.tl.annotate(work, None, labels_key="one_label", query=query, use_rep="rep", method="knn", key_added="one")
    before = fingerprint(work)
    for bad in ("Balanced", "", {"type0": 2.0}, True, np.ones(2)):  # a typo; a dict is sklearn's other form
        with pytest.raises(ValueError, match="class_weight must be 'auto', 'balanced' or None"):
            hc.tl.annotate(work, model, labels_key="cell_type", query=query, class_weight=bad, key_added="cw")
    for bad in (0, -1.0, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="classification_weight must be a finite number > 0"):
            hc.tl.annotate(work, model, labels_key="cell_type", query=query, method="finetune",
                           classification_weight=bad, key_added="cw")  # fmt: skip
    for bad in (-0.5, float("nan"), float("inf"), False, "1"):
        with pytest.raises(ValueError, match="consistency_weight must be a finite number >= 0"):
            hc.tl.annotate(work, model, labels_key="cell_type", query=query, method="finetune",
                           consistency_weight=bad, key_added="cw")  # fmt: skip
    for bad in ({"batch_size": 1.5}, {"batch_size": 0}, {"max_epochs": 2.5}, {"max_epochs": 0}):  # were truncated
        with pytest.raises((TypeError, ValueError), match=f"{next(iter(bad))} must be an integer >= 1"):
            hc.tl.annotate(work, model, labels_key="cell_type", query=query, method="finetune", key_added="cw", **bad)
    assert fingerprint(work) == before


# ----------------------------------------------------------------------------- keys the user owns, copies
def test_tl_never_replaces_keys_it_did_not_write(sim):
    mdata, model = sim
    work = mdata.copy()
    work.obs["ko_applied"] = "mine"
    work.obsm["X_ko2_shift"] = np.zeros((work.n_obs, 2))
    work.uns["neighbors"] = {"params": {"n_neighbors": 15}}
    work.obsm["X_pca"] = np.ones((work.n_obs, 3))
    before = fingerprint(work)
    calls = [
        lambda: hc.tl.embed(work, model, key_added="X_pca"),  # formerly replaced the user's PCA without a word
        lambda: hc.tl.embed(work, model, key_added="neighbors"),
        lambda: hc.tl.perturb(work, model, genes=["SIM1"], key_added="ko", **FAST),
        lambda: hc.tl.perturb(work, model, genes=["SIM1"], key_added="ko2", **FAST),
        lambda: hc.tl.grn(work, model, tfs=["SIM1"], method="embedding", key_added="neighbors"),
        lambda: hc.tl.grn(work, model, tfs=["SIM1"], method="embedding", key_added="_scvi_uuid"),
        lambda: hc.tl.fate_shift(work, model, groupby="cell_type", source="type0", target="type1",
                                 genes=["SIM1"], key_added="neighbors"),  # fmt: skip
    ]
    for call in calls:
        with pytest.raises(ValueError, match="not written by holocell"):
            call()
    assert fingerprint(work) == before and work.uns["neighbors"] == {"params": {"n_neighbors": 15}}
    assert (work.obsm["X_pca"] == 1).all()
    for bad in ("", 3):
        with pytest.raises(TypeError, match="key_added must be a non-empty string"):
            hc.tl.embed(work, model, key_added=bad)
    for _ in range(2):  # its own earlier embedding is replaced, as documented
        hc.tl.embed(work, model, key_added="X_mine", progress_bar=False)
    assert work.obsm["X_mine"].shape == (work.n_obs, model.config.embedding_dim)
    work.obsm["X_holocell"] = np.zeros((work.n_obs, 2))  # the README's model.get_latent_representation() step
    hc.tl.embed(work, model, progress_bar=False)  # holocell's own name: replaced
    assert work.obsm["X_holocell"].shape == (work.n_obs, model.config.embedding_dim)
    cells = dict(genes=["SIM1"], **FAST)
    hc.tl.perturb(work, model, key_added="mine", **cells)
    hc.tl.perturb(work, model, key_added="mine", **cells)  # its own earlier result: replaced
    assert work.uns["mine"]["params"]["genes"] == ["SIM1"]


def test_copy_leaves_the_input_untouched(sim):
    mdata, model = sim
    work = mdata.copy()
    before = fingerprint(work)
    query = (work.obs["batch"] == "batch1").to_numpy()
    outs = [
        hc.tl.perturb(work, model, genes=["SIM1"], copy=True, **FAST),
        hc.tl.grn(work, model, tfs=["SIM1"], n_cells=10, copy=True, **FAST),
        hc.tl.annotate(work, model, labels_key="cell_type", query=query, method="knn", copy=True),
        hc.tl.fate_shift(work, model, groupby="cell_type", source="type0", target="type1", genes=["SIM1"],
                         n_cells=5, n_steps=1, copy=True),  # fmt: skip
    ]
    assert all(out is not work for out in outs)
    assert "holocell_perturb" in outs[0].uns and "holocell_grn" in outs[1].uns
    assert fingerprint(work) == before


@pytest.mark.parametrize("key", ["a/b", "p\x00", "  ", ".", ".."])
def test_tl_output_keys_an_h5mu_cannot_hold_are_refused(sim, key):
    """A key with '/' or NUL made the MuData unwritable (or unreadable once written); ``"."`` wrote the results
    over the whole ``.uns`` of the file, silently (fourteenth session's audit of keys from user input)."""
    mdata, model = sim
    work = mdata.copy()
    before = fingerprint(work)
    with pytest.raises((TypeError, ValueError), match="key_added"):
        hc.tl.embed(work, model, key_added=key)
    with pytest.raises((TypeError, ValueError), match="key_added"):
        hc.tl.perturb(work, model, genes=["SIM1"], key_added=key)
    assert fingerprint(work) == before


def test_overexpressing_a_rare_gene_raises_it():
    """The level was the 0.99 quantile over all cells: 0 for a gene seen in fewer than 1% of cells, so
    "overexpress" knocked it out."""
    from holocell.model._overexpression import overexpression_level

    expr = np.zeros((200, 3))
    expr[:, 0] = np.linspace(0, 4, 200)  # common: the quantile over all cells, as before
    expr[0, 1] = 5.0  # rare: one cell of 200
    level = overexpression_level(expr, 0.99)
    assert level[0] == pytest.approx(np.quantile(expr[:, 0], 0.99))
    assert level[1] == pytest.approx(5.0) and level[2] == 0.0  # the rare gene raised; a never-seen one left


def test_grn_warns_before_a_run_of_hours(sim, monkeypatch):
    """Every gene of a 20,000-gene panel as TF and target meant 15 million edges and hours of knockouts, unannounced."""
    from holocell.tl import _grn

    mdata, model = sim
    monkeypatch.setattr(_grn, "LARGE_GRN_PAIRS", 10)  # the sizes, scaled down to the test's model
    with pytest.warns(hc.HoloCellWarning, match="TFs x .* targets = .* edges .* Pass tfs= and targets="):
        hc.tl.grn(mdata.copy(), model, tfs=["SIM1", "SIM2"], method="embedding")
    monkeypatch.setattr(_grn, "LARGE_GRN_PAIRS", 10**9)
    monkeypatch.setattr(_grn, "LARGE_GRN_KNOCKOUTS", 1)
    with pytest.warns(hc.HoloCellWarning, match="2 in-silico knockouts over 20 cells"):
        hc.tl.grn(mdata.copy(), model, tfs=["SIM1", "SIM2"], method="knockout", n_cells=20, n_steps=1)


def test_grn_default_tfs_on_a_loaded_model(trained_pbmc, tmp_path):
    """The README's flow (save, load, then tl.grn without tfs) failed with KeyError 'anchor': a loaded model's
    feature report is empty, and the default TFs read their anchors from it."""
    mdata, model = trained_pbmc
    model.save(tmp_path / "m")
    loaded = hc.HoloCell.load(tmp_path / "m", mdata.copy())
    fresh, again = mdata.copy(), mdata.copy()
    hc.tl.grn(fresh, model, method="embedding")
    hc.tl.grn(again, loaded, method="embedding")
    pd.testing.assert_frame_equal(fresh.uns["holocell_grn"], again.uns["holocell_grn"])
