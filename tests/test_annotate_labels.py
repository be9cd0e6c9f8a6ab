"""``hc.tl.annotate``: labels keep their type, the "unknown" flag and missing-value spellings, where the embeddings come
from (``modality=``), fine-tuning a frozen model, and the user's global torch random state."""

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
SIM = {"n_genes": 40, "n_tfs": 5, "n_proteins": 8, "modalities": ("rna", "protein")}
#: The simulator's genes are synthetic: setting its data up reports that few RNA features are vocabulary genes.
SIM_GENES = r"RNA features of modality .* map to a known"


def _setup(mdata: md.MuData) -> None:
    with pytest.warns(hc.HoloCellWarning, match=SIM_GENES):
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"}, batch_key="batch")


@pytest.fixture(scope="module")
def tiny():
    """A tiny RNA + protein model, 1 epoch, and its data (first 40 cells unlabelled); treat as read-only."""
    mdata, _ = hc.data.simulate_multiome(150, seed=0, **SIM)
    _setup(mdata)
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, enable_progress_bar=False, seed=0)
    query = np.arange(mdata.n_obs) < 40
    mdata.obs["lab"] = pd.Categorical(np.where(query, None, mdata.obs["cell_type"].astype(str)))
    return mdata, model


def _separable(n: int = 120, seed: int = 0) -> tuple[md.MuData, np.ndarray, np.ndarray]:
    """Stored embeddings with three well-separated groups; the first 30 cells are the query."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    mdata = md.MuData({"x": ad.AnnData(np.zeros((n, 1), np.float32))})
    mdata.obsm["rep"] = np.eye(3)[group] * 5 + rng.normal(0, 0.3, (n, 3))
    return mdata, group, np.arange(n) < 30


# ----------------------------------------------------------------------------- labels keep their type
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda g: pd.Series(g, dtype=np.int64), "i"),  # Leiden-style integer clusters
        (lambda g: pd.Series(g == 0), "b"),  # bools
        (lambda g: pd.Series(g.astype(float)), "f"),  # integers stored as floats (a column that had NaN)
        (lambda g: pd.Series(pd.Categorical(g * 10)), "i"),  # a categorical of integers: its categories' type
        (lambda g: pd.Series(g, dtype="Int64"), "i"),  # pandas' nullable integers
        (lambda g: pd.Series(np.array(["T", "B", "NK"], dtype=object)[g]), "O"),  # text, as before
    ],
    ids=["int", "bool", "float", "categorical-int", "Int64", "str"],
)
def test_predictions_keep_the_type_of_the_labels_and_survive_writing(make, kind, tmp_path):
    mdata, group, query = _separable()
    labels = make(group)
    labels.index = mdata.obs_names
    mdata.obs["truth"] = labels
    hc.tl.annotate(mdata, None, labels_key="truth", query=query, use_rep="rep", method="both")
    pred = mdata.obs["holocell_label"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert (pred[query] == mdata.obs["truth"][query]).all()  # compared by value, as the user compares them
    expected = np.unique(np.asarray(labels[~query].dropna().tolist()))
    assert pred.cat.categories.tolist() == expected.tolist()
    assert mdata.uns["holocell_label"]["classes"] == expected.tolist()
    assert pred.cat.categories.dtype.kind == kind
    mdata.write(tmp_path / "a.h5mu")
    back = md.read_h5mu(tmp_path / "a.h5mu")
    assert back.obs["holocell_label"].cat.categories.dtype == pred.cat.categories.dtype
    assert (back.obs["holocell_label"][query] == mdata.obs["truth"][query]).all()
    assert back.obs["holocell_label"][~query].isna().all()
    assert np.asarray(back.uns["holocell_label"]["classes"]).tolist() == expected.tolist()


def test_labels_of_mixed_types_are_read_as_their_text():
    mdata, group, query = _separable()
    mdata.obs["truth"] = np.array([1, "B", 2.5], dtype=object)[group]
    hc.tl.annotate(mdata, None, labels_key="truth", query=query, use_rep="rep", method="knn")
    assert mdata.obs["holocell_label"].cat.categories.tolist() == ["1", "2.5", "B"]


def test_below_the_threshold_labels_that_are_not_text_get_nan_not_unknown(tmp_path):
    mdata, group, query = _separable()
    mdata.obsm["rep"] = mdata.obsm["rep"] + np.random.default_rng(1).normal(0, 3.0, mdata.obsm["rep"].shape)
    mdata.obs["cluster"] = group
    hc.tl.annotate(mdata, None, labels_key="cluster", query=query, use_rep="rep", method="both", unknown_threshold=0.8)
    pred, conf = mdata.obs["holocell_label"], mdata.obs["holocell_label_confidence"]
    low = query & (conf < 0.8).to_numpy()
    assert 0 < low.sum() < query.sum()  # the noise leaves some query cells below the threshold, not all
    assert pred[low].isna().all() and pred[query & ~low].notna().all()
    assert pred.cat.categories.tolist() == [0, 1, 2]  # no "unknown" mixed into the integers
    assert conf[low].notna().all()  # their confidence tells them from the cells outside the query
    mdata.write(tmp_path / "a.h5mu")
    assert md.read_h5mu(tmp_path / "a.h5mu").obs["holocell_label"][low].isna().all()


# ----------------------------------------------------------------------------- "unknown" and missing-value spellings
def test_a_reference_class_named_unknown_is_refused_with_unknown_threshold():
    mdata, group, query = _separable()
    mdata.obs["celltype"] = pd.Categorical(np.array(["T", "B", "unknown"], dtype=object)[group])
    with pytest.raises(ValueError, match=r"label 'unknown'.*rename_categories\(\{'unknown'"):
        hc.tl.annotate(mdata, None, labels_key="celltype", query=query, use_rep="rep", unknown_threshold=0.8)
    assert "holocell_label" not in mdata.obs
    hc.tl.annotate(mdata, None, labels_key="celltype", query=query, use_rep="rep")  # without the flag: a class
    assert (mdata.obs["holocell_label"][query] == mdata.obs["celltype"][query].astype(str)).all()
    mdata.obs["celltype"] = mdata.obs["celltype"].cat.rename_categories({"unknown": "other"})  # the fix given
    hc.tl.annotate(mdata, None, labels_key="celltype", query=query, use_rep="rep", unknown_threshold=0.8)
    assert set(mdata.obs["holocell_label"].cat.categories) == {"B", "T", "other", "unknown"}


def test_labels_that_spell_a_missing_value_are_a_class_with_a_warning():
    mdata, group, query = _separable()
    labels = np.array(["T", "B", "NK"], dtype=object)[group]
    labels[query] = np.nan
    labels[30:40] = np.nan
    mdata.obs["celltype"] = pd.Series(labels, index=mdata.obs_names).astype(str)  # NaN -> "nan"
    with pytest.raises(ValueError, match=r"got 120 and 0\. 40 cells have the label 'nan'.*replace\(\{'nan': np\.nan\}\)"):
        hc.tl.annotate(mdata, None, labels_key="celltype", use_rep="rep")
    with pytest.warns(hc.HoloCellWarning, match=r"^10 reference cells have the label 'nan'.*replace"):
        hc.tl.annotate(mdata, None, labels_key="celltype", query=query, use_rep="rep", method="knn")
    assert "nan" in mdata.uns["holocell_label"]["classes"]  # the user's data is not reinterpreted
    mdata.obs["celltype"] = mdata.obs["celltype"].replace({"nan": np.nan})  # the fix given
    hc.tl.annotate(mdata, None, labels_key="celltype", use_rep="rep", method="knn")
    assert mdata.obs["holocell_label"].notna().sum() == 40
    labels = np.array(["T", "B", "NK"], dtype=object)[group]
    labels[30:40] = ""
    mdata.obs["celltype"] = pd.Categorical(np.where(query, None, labels))  # a categorical with a category ""
    with pytest.warns(hc.HoloCellWarning, match=r"^10 reference cells have the label ''.*remove_categories\(\[''\]\)"):
        hc.tl.annotate(mdata, None, labels_key="celltype", use_rep="rep")


# ----------------------------------------------------------------------------- modality=
def test_modality_with_a_model_embeds_from_that_modality_even_after_embed(tiny):
    mdata, model = tiny
    fresh = mdata.copy()
    hc.tl.annotate(fresh, model, labels_key="lab", modality="protein", method="classifier")
    embedded = mdata.copy()
    hc.tl.embed(embedded, model, progress_bar=False)  # the README's order: X_holocell from every modality
    hc.tl.annotate(embedded, model, labels_key="lab", modality="protein", method="classifier")
    for key in ("holocell_label", "holocell_label_confidence"):
        pd.testing.assert_series_equal(embedded.obs[key], fresh.obs[key])
    params = embedded.uns["holocell_label"]["params"]
    assert params["modality"] == ["protein"] and "use_rep" not in params
    hc.tl.annotate(embedded, model, labels_key="lab", method="classifier", key_added="passed")
    assert embedded.uns["passed"]["params"]["modality"] == "all"  # a model passed is the model used
    hc.tl.annotate(embedded, model, labels_key="lab", method="classifier", key_added="stored", use_rep="X_holocell")
    assert embedded.uns["stored"]["params"]["use_rep"] == "X_holocell" and "modality" not in embedded.uns["stored"]["params"]
    with pytest.raises(ValueError, match="pass only one of them"):
        hc.tl.annotate(embedded, model, labels_key="lab", modality="protein", use_rep="X_holocell", key_added="both")
    with pytest.raises(ValueError, match="no model was passed"):
        hc.tl.annotate(embedded, None, labels_key="lab", modality="protein", key_added="none")


# ----------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def frozen_query(tiny):
    """A query model mapped onto the tiny reference by load_query_data (frozen, its default), and its data."""
    _, reference = tiny
    query, _ = hc.data.simulate_multiome(120, seed=7, **SIM)
    _setup(query)
    model = hc.HoloCell.load_query_data(query, reference)
    query.obs["lab"] = pd.Categorical(np.where(np.arange(query.n_obs) < 40, None, query.obs["cell_type"].astype(str)))
    return query, model


def _finetune(mdata: md.MuData, model: hc.HoloCell, key: str) -> None:
    hc.tl.annotate(mdata, model, labels_key="lab", method="finetune", max_epochs=2, key_added=key, progress_bar=False)


def test_finetune_trains_the_copy_of_a_frozen_model_and_leaves_the_model_frozen(tiny, frozen_query):
    _, reference = tiny
    original, model = frozen_query
    mdata = original.copy()
    assert not any(p.requires_grad for p in model.module.parameters())  # load_query_data froze it
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    _finetune(mdata, model, "frozen")
    assert not any(p.requires_grad for p in model.module.parameters())  # still frozen
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert mdata.uns["frozen"]["params"]["best_epoch"] >= 1  # an epoch of fine-tuning was kept, not the warm start
    unfrozen = hc.HoloCell.load_query_data(original, reference, freeze=False)  # the same weights, all trainable
    assert all(p.requires_grad for p in unfrozen.module.parameters())
    _finetune(mdata, unfrozen, "unfrozen")
    # freezing the user's model does not change what is fine-tuned: the encoder is trained in both
    pd.testing.assert_series_equal(mdata.obs["frozen"], mdata.obs["unfrozen"], check_names=False)
    np.testing.assert_allclose(mdata.obs["frozen_confidence"], mdata.obs["unfrozen_confidence"], rtol=0, atol=1e-7)


def test_finetune_leaves_the_global_torch_random_state_to_the_user(frozen_query):
    mdata, model = frozen_query
    mdata = mdata.copy()
    draws, results = [], []
    for user_seed in (1, 2, 1):
        torch.manual_seed(user_seed)
        _finetune(mdata, model, "ft")
        draws.append(float(torch.rand(1)))
        results.append((mdata.obs["ft"].copy(), mdata.obs["ft_confidence"].to_numpy().copy()))
    assert draws[0] != draws[1] and draws[0] == draws[2]  # the user's seed decides the draws after annotate
    for labels, confidence in results[1:]:  # the result depends on seed=, not on the user's global seed
        pd.testing.assert_series_equal(labels, results[0][0])
        np.testing.assert_array_equal(confidence, results[0][1])


def test_finetune_temperature_only_softens_an_overconfident_head():
    """The fine-tuned head's calibration: on held-out cells it classifies without error the cross-entropy keeps
    falling as the temperature falls, and a grid reaching below 1 sharpened the head (0.25 seen, with query accuracy
    0.87 at confidence 0.99); now such a head keeps temperature 1, and an overconfident one is softened."""
    import torch

    from holocell.model._classifier import fit_temperature

    right = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]] * 5)
    target = torch.tensor([0, 1, 2] * 5)
    assert fit_temperature(right, target) == 1.0
    wrong = right.clone()
    wrong[:5] = torch.tensor([0.0, 8.0, 0.0])  # a third of the cells confidently wrong
    assert fit_temperature(wrong * 3, target) > 1.5


def test_a_type_the_reference_lacks_gets_a_low_confidence_and_unknown():
    """A query type the reference lacks is still given its nearest reference label, with a high class
    probability (a probe: 31 B cells all labelled DC at 0.93, above the known types' 0.85). Its distance to the
    reference marks it: with ``novelty_level`` (default) its confidence falls and ``unknown_threshold`` flags it,
    while the query cells of known types keep their class probability."""
    rng = np.random.default_rng(0)
    group = np.r_[rng.integers(0, 3, 300), np.full(20, 3)]  # type 3: query only
    query = np.r_[np.arange(300) < 60, np.ones(20, bool)]
    mdata = md.MuData({"x": ad.AnnData(np.zeros((len(group), 1), np.float32))})
    centres = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [3.5, 0, 0, 3.5]])  # type 3 nearest type 0
    mdata.obsm["rep"] = centres[group] + rng.normal(0, 0.3, (len(group), 4))
    mdata.obs["truth"] = np.array(["a", "b", "c", "new"], dtype=object)[group]
    novel, known = group[query] == 3, group[query] < 3
    confidence = {}
    for level in (None, hc.tl._annotate.NOVELTY_LEVEL):
        out = hc.tl.annotate(mdata, None, labels_key="truth", query=query, use_rep="rep", method="both",
                             novelty_level=level, unknown_threshold=0.5, copy=True)  # fmt: skip
        pred = out.obs["holocell_label"].astype(object).to_numpy()[query]
        confidence[level] = out.obs["holocell_label_confidence"].to_numpy()[query]
        assert (pred[known] == out.obs["truth"].to_numpy()[query][known]).all()
    assert (confidence[None][novel] > 0.9).all()  # the class probability alone: confidently "a"
    assert (pred[novel] == "unknown").all() and (confidence[0.01][novel] < 0.5).all()
    assert np.mean(confidence[0.01][known] == confidence[None][known]) > 0.9  # known cells keep theirs
    assert out.uns["holocell_label"]["params"]["novelty_level"] == 0.01
    with pytest.raises(ValueError, match="novelty_level"):
        hc.tl.annotate(mdata, None, labels_key="truth", query=query, use_rep="rep", novelty_level=0, copy=True)
