"""Generated modalities get their own feature names, so ``mdata.var_names`` stay unique (issue 19)."""

from __future__ import annotations

import mudata
import pytest

import holocell as hc


def test_generated_features_are_renamed_and_var_names_stay_unique(trained_pbmc):
    mdata, model = trained_pbmc
    work = mdata.copy()
    assert work.var_names.is_unique
    gen = model.generate(work, target="protein", n_steps=1, key_added="adt_generated", progress_bar=False)
    measured = work["adt"].var_names.tolist()
    assert gen.var_names.tolist() == [f"{name}_generated" for name in measured]
    assert gen.var["measured_name"].tolist() == measured
    assert work.var_names.is_unique  # measured and generated features side by side in one MuData
    assert gen.uns["holocell"]["params"]["var_suffix"] == "_generated"


def test_var_suffix_chooses_the_names_and_none_keeps_the_measured_ones(trained_pbmc):
    mdata, model = trained_pbmc
    work = mdata.copy()
    gen = model.generate(work, target="protein", n_steps=1, key_added="pred", var_suffix=".pred", progress_bar=False)
    assert gen.var_names[0] == f"{work['adt'].var_names[0]}.pred"
    same = model.generate(work, target="protein", n_steps=1, key_added="same", var_suffix=None, progress_bar=False)
    assert same.var_names.tolist() == work["adt"].var_names.tolist()
    assert not work.var_names.is_unique  # what the user asked for
    with pytest.raises(ValueError, match="var_suffix"):
        model.generate(work, target="protein", n_steps=1, key_added="bad", var_suffix="", progress_bar=False)


def test_tl_generate_uses_the_same_names(trained_pbmc):
    mdata, model = trained_pbmc
    out = hc.tl.generate(mdata, model, target="protein", n_steps=1, progress_bar=False, copy=True)
    assert out["adt_generated"].var_names.tolist() == [f"{n}_generated" for n in mdata["adt"].var_names]
    assert out.var_names.is_unique
    kept = hc.tl.generate(mdata, model, target="protein", n_steps=1, progress_bar=False, var_suffix=None, copy=True)
    assert kept["adt_generated"].var_names.tolist() == mdata["adt"].var_names.tolist()


def test_generated_features_keep_the_measured_features_annotations(trained_pbmc, tmp_path):
    """Gene ids, feature types and the like come along (only ``measured_name`` did), so scverse tools that read
    them (e.g. peak coordinates for muon's ATAC tools) work on the generated modality; the user's data unchanged."""
    mdata, model = trained_pbmc
    work = mdata.copy()
    adt = work["adt"]
    adt.var["feature_types"] = "Antibody Capture"
    adt.var["isotype"] = adt.var_names.str.contains("1")
    adt.var["measured_name"] = "user's own column"
    before = adt.var.copy()
    gen = model.generate(work, target="protein", n_steps=1, key_added="adt_generated", progress_bar=False)
    assert gen.var["measured_name"].tolist() == adt.var_names.tolist()  # holocell's column wins in its output
    assert (gen.var["feature_types"] == "Antibody Capture").all()
    assert gen.var["isotype"].tolist() == adt.var["isotype"].tolist()
    assert work["adt"].var.equals(before)
    out = hc.tl.generate(work, model, target="protein", n_steps=1, progress_bar=False, key_added="again", var_suffix="_again", copy=True)
    out.write(tmp_path / "g.h5mu")
    assert mudata.read_h5mu(tmp_path / "g.h5mu")["again"].var["isotype"].tolist() == adt.var["isotype"].tolist()


def test_tl_generate_takes_what_the_method_takes(trained_pbmc):
    """``device=``, ``seed=``, ``temperature=``, ``remasking=`` and ``transform_batch=`` reach ``HoloCell.generate``
    (``tl.generate(device="cpu")`` was a ``TypeError``)."""
    mdata, model = trained_pbmc
    kwargs = {"target": "protein", "n_steps": 2, "progress_bar": False, "copy": True, "device": "cpu"}
    a = hc.tl.generate(mdata, model, temperature=1.0, seed=1, remasking="random", **kwargs)
    b = hc.tl.generate(mdata, model, temperature=1.0, seed=1, remasking="random", **kwargs)
    c = hc.tl.generate(mdata, model, temperature=1.0, seed=2, remasking="random", **kwargs)
    assert (a["adt_generated"].layers["bins"] == b["adt_generated"].layers["bins"]).all()
    assert (a["adt_generated"].layers["bins"] != c["adt_generated"].layers["bins"]).any()
    params = a["adt_generated"].uns["holocell"]["params"]
    assert params["seed"] == 1 and params["temperature"] == 1.0 and params["remasking"] == "random"
    batch = str(model.batch_categories_[0])
    d = hc.tl.generate(mdata, model, transform_batch=batch, **kwargs)
    assert d["adt_generated"].uns["holocell"]["params"]["transform_batch"] == batch
