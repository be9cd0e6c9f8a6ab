"""``hc.tl`` findings of the eighth round of probes: tools that add modalities refuse a view before any work, a
rerun knows its own ``.uns`` record by more than its key names (grn's table carries a mark), a perturb rerun that
drops a modality drops mudata's masks of it too, and ``annotate(query=<one name>)`` reads one cell."""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"n_steps": 1, "progress_bar": False}


@pytest.fixture
def small(trained_pbmc):
    """200 cells of two batches of the PBMC mosaic (RNA-only and RNA+protein cells), a MuData of its own."""
    mdata, model = trained_pbmc
    keep = mdata.obs["batch"].isin(["p1_0", "p4_0"]).to_numpy() & (np.arange(mdata.n_obs) % 4 == 0)
    return mdata[keep].copy(), model


def _boom(*args, **kwargs):
    raise AssertionError("the work started")


# ----------------------------------------------------------------------------- a view is refused before any work


FIX = r"mdata = mdata\[mask\]\.copy\(\)"
VIEW_CALLS = {
    "tl.generate": (lambda v, m: hc.tl.generate(v, m, n_steps=0, progress_bar=False), FIX + ", or pass copy=True"),
    "tl.perturb": (lambda v, m: hc.tl.perturb(v, m, genes=["MS4A1"], **FAST), FIX + ", or pass copy=True"),
    "model.generate": (lambda v, m: m.generate(v, n_steps=0, progress_bar=False), FIX + r"\.$"),
}


@pytest.mark.parametrize("call", list(VIEW_CALLS))
def test_tools_that_add_modalities_refuse_a_view_before_any_work(small, monkeypatch, call):
    """The whole run used to finish, then fail inside anndata and leave the view half written."""
    mdata, model = small
    view = mdata[mdata.obs["batch"] == "p4_0"]
    mods, parent_mods = list(view.mod), list(mdata.mod)
    monkeypatch.setattr(model, "_arrays", _boom)  # the first step of model.generate's work
    monkeypatch.setattr(model, "predict_perturbation", _boom)
    run, fix = VIEW_CALLS[call]
    name = call if call.startswith("model") else f"hc.{call}"
    with pytest.raises(ValueError, match=rf"mdata is a view of another MuData.*{name} adds new modalities.*{fix}"):
        run(view, model)
    assert view.is_view and list(view.mod) == mods and list(mdata.mod) == parent_mods
    assert not set(view.uns) - set(mdata.uns) and list(view.obs.columns) == list(mdata.obs.columns)


def test_copy_true_on_a_view_still_works(small):
    mdata, model = small
    view = mdata[mdata.obs["batch"] == "p4_0"]
    generated = hc.tl.generate(view, model, n_steps=0, progress_bar=False, copy=True)
    assert "adt_generated" in generated.mod and generated.n_obs == view.n_obs
    perturbed = hc.tl.perturb(view, model, genes=["MS4A1"], copy=True, **FAST)
    assert {"holocell_perturb_rna", "holocell_perturb_protein"} <= set(perturbed.mod)
    assert "adt_generated" not in mdata.mod and "holocell_perturb" not in mdata.uns  # the parent is untouched


def test_model_generate_on_an_actual_subset_is_unchanged(small):
    mdata, model = small
    subset = mdata[mdata.obs["batch"] == "p4_0"].copy()
    out = model.generate(subset, n_steps=0, progress_bar=False)
    assert subset.mod["adt_generated"] is out and out.n_obs == subset.n_obs


# ----------------------------------------------------------------------------- grn knows its own table


def _grn(mdata, model, tf, **kwargs):
    targets = [g for g in mdata["rna"].var_names[:6] if g != tf]
    hc.tl.grn(mdata, model, tfs=[tf], targets=targets, method="embedding", **kwargs)


def test_grn_refuses_a_user_table_with_its_column_names(small):
    mdata, model = small
    tf = mdata["rna"].var_names[0]
    four = pd.DataFrame({"tf": ["A"], "target": ["B"], "score": [1.0], "rank": [1]})  # the probe's table
    six = pd.DataFrame({"tf": ["A"], "target": ["B"], "similarity": [0.5], "knockout_effect": [0.1], "score": [1.0],
                        "rank": [1]})  # fmt: skip  (another tool's edges renamed to grn's columns)
    for user in (four, six):
        mdata.uns["mygrn"] = user.copy()
        with pytest.raises(ValueError, match=r"mdata.uns\['mygrn'\] already exists and was not written by holocell.tl.grn"):
            _grn(mdata, model, tf, key_added="mygrn")
        pd.testing.assert_frame_equal(mdata.uns["mygrn"], user)
    with pytest.raises(ValueError, match=r"has grn's columns but not grn's mark.*del mdata.uns\['mygrn'\]"):
        _grn(mdata, model, tf, key_added="mygrn")


def test_grn_table_is_marked_and_replaced_on_a_rerun_after_an_h5mu_round_trip(small, tmp_path):
    mdata, model = small
    first, second = mdata["rna"].var_names[:2]
    _grn(mdata, model, first)
    assert mdata.uns["holocell_grn"].index.name == "holocell_grn_edge"
    mdata.write(tmp_path / "grn.h5mu")
    back = md.read_h5mu(tmp_path / "grn.h5mu")
    assert back.uns["holocell_grn"].index.name == "holocell_grn_edge"
    _grn(back, model, second)  # its own table, read back: replaced
    assert set(back.uns["holocell_grn"]["tf"]) == {second}
    filtered = back.uns["holocell_grn"].query("rank <= 2")  # grn's table, filtered by the user: still grn's
    back.uns["holocell_grn"] = filtered
    _grn(back, model, first)
    assert set(back.uns["holocell_grn"]["tf"]) == {first}


# ----------------------------------------------------------------------------- the dict records, tightened


FOREIGN = {  # records of other tools that have the keys of a holocell record
    "perturb": {"params": {"method": "other"}, "summary": pd.DataFrame({"gene": ["A"], "score": [1.0]})},
    "annotate": {"params": {"n_neighbors": 15}, "classes": ["B", "T"]},
    "fate_shift": {"params": {"groupby": "x"}, "ranking": pd.DataFrame({"gene": ["A"]})},
}


@pytest.mark.parametrize("function", list(FOREIGN))
def test_dict_records_of_other_tools_are_not_taken_for_holocell_records(small, function):
    mdata, model = small
    mdata.obsm["X_holocell"] = np.random.default_rng(0).normal(size=(mdata.n_obs, 4))
    calls = {
        "perturb": lambda: hc.tl.perturb(mdata, model, genes=["MS4A1"], key_added="rec", **FAST),
        "annotate": lambda: hc.tl.annotate(mdata, None, labels_key="celltype", query=mdata.obs["batch"] == "p4_0",
                                           method="knn", key_added="rec"),  # fmt: skip
        "fate_shift": lambda: hc.tl.fate_shift(mdata, model, groupby="celltype", source="CD4 T", target="Mono",
                                               genes=["MS4A1"], n_cells=10, key_added="rec", **FAST),  # fmt: skip
    }
    mdata.uns["rec"] = record = FOREIGN[function]
    with pytest.raises(ValueError, match=rf"mdata.uns\['rec'\].*not written by holocell.tl.{function}"):
        calls[function]()
    assert mdata.uns["rec"] is record


def test_own_dict_records_are_replaced_on_a_rerun_after_an_h5mu_round_trip(small, tmp_path):
    mdata, model = small
    mdata.obsm["X_holocell"] = np.random.default_rng(0).normal(size=(mdata.n_obs, 4))
    query = (mdata.obs["batch"] == "p4_0").to_numpy()
    fate = {"groupby": "celltype", "source": "CD4 T", "target": "Mono", "n_cells": 10, **FAST}
    hc.tl.perturb(mdata, model, genes=["MS4A1"], **FAST)
    hc.tl.annotate(mdata, None, labels_key="celltype", query=query, method="knn")
    hc.tl.fate_shift(mdata, model, genes=["MS4A1"], **fate)
    hc.tl.embed(mdata, model, key_added="emb", progress_bar=False)
    mdata.write(tmp_path / "records.h5mu")
    back = md.read_h5mu(tmp_path / "records.h5mu")
    hc.tl.perturb(back, model, genes=["CD79A"], **FAST)
    hc.tl.annotate(back, None, labels_key="celltype", query=query, method="knn", n_neighbors=5)
    hc.tl.fate_shift(back, model, genes=["CD79A"], **fate)
    hc.tl.embed(back, model, key_added="emb", modality="rna", progress_bar=False)
    assert list(back.uns["holocell_perturb"]["params"]["genes"]) == ["CD79A"]
    assert back.uns["holocell_label"]["params"]["n_neighbors"] == 5
    assert list(back.uns["holocell_fate_shift"]["ranking"]["gene"]) == ["CD79A"]
    assert back.uns["emb"]["params"]["modality"] == "rna"


# ----------------------------------------------------------------------------- perturb rerun drops its masks


def test_perturb_rerun_without_protein_removes_the_protein_masks(small, tmp_path):
    mdata, model = small
    hc.tl.perturb(mdata, model, genes=["MS4A1"], **FAST)
    assert "holocell_perturb_protein" in mdata.obsm and "holocell_perturb_protein" in mdata.varm
    hc.tl.perturb(mdata, model, genes=["MS4A1"], regenerate=["rna"], **FAST)
    for axis in (mdata.mod, mdata.obsm, mdata.varm):
        assert "holocell_perturb_protein" not in axis
    assert "holocell_perturb_rna" in mdata.obsm and "holocell_perturb_rna" in mdata.varm
    mdata.write(tmp_path / "rerun.h5mu")
    back = md.read_h5mu(tmp_path / "rerun.h5mu")
    assert "holocell_perturb_protein" not in back.obsm and "holocell_perturb_protein" not in back.varm
    hc.tl.perturb(back, model, genes=["MS4A1"], **FAST)  # protein again: its modality and masks come back
    assert back.obsm["holocell_perturb_protein"].sum() == back["holocell_perturb_protein"].n_obs
    assert back.varm["holocell_perturb_protein"].sum() == back["holocell_perturb_protein"].n_vars


# ----------------------------------------------------------------------------- annotate(query=<one name>)


def test_annotate_reads_a_str_query_as_one_cell(small):
    mdata, _ = small
    mdata.obsm["rep"] = np.random.default_rng(0).normal(size=(mdata.n_obs, 4))
    name = mdata.obs_names[-1]
    one = mdata.copy()
    hc.tl.annotate(one, None, labels_key="celltype", query=name, use_rep="rep", method="knn")
    hc.tl.annotate(mdata, None, labels_key="celltype", query=[name], use_rep="rep", method="knn")
    assert one.obs["holocell_label"].notna().sum() == 1 and one.obs["holocell_label"].notna()[name]
    pd.testing.assert_series_equal(one.obs["holocell_label"], mdata.obs["holocell_label"])
    with pytest.raises(KeyError, match=r"`query` names unknown cells, e.g. \['no-such-cell'\]"):
        hc.tl.annotate(mdata.copy(), None, labels_key="celltype", query="no-such-cell", use_rep="rep", method="knn")
    with pytest.warns(hc.HoloCellWarning, match="reference cells have one label"):  # reference= a str: one cell
        hc.tl.annotate(mdata, None, labels_key="celltype", query=[name], reference=mdata.obs_names[0],
                       use_rep="rep", method="knn", key_added="one_ref")  # fmt: skip
