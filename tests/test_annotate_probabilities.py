"""``hc.tl.annotate`` keeps each query cell's probability of every reference label in ``.obsm``: a cell flagged
``"unknown"`` lost its best label, and trying another threshold meant a rerun (calibration probe, 2026-12-06)."""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest

import holocell as hc

pytestmark = pytest.mark.usefixtures("one_thread")


def _annotated(trained_pbmc, **kwargs):
    mdata, model = trained_pbmc
    data = mdata.copy()
    labels_key = "celltype" if "celltype" in data.obs else "cell_type"
    query = (data.obs["batch"] == data.obs["batch"].iloc[-1]).to_numpy()
    data.obs["ref_label"] = data.obs[labels_key].astype(object).where(~query)
    hc.tl.annotate(data, model, labels_key="ref_label", method="knn", progress_bar=False, **kwargs)
    return data, query


def test_probabilities_hold_every_label_and_the_best_one_behind_unknown(trained_pbmc, tmp_path):
    data, query = _annotated(trained_pbmc, unknown_threshold=0.9)
    table = data.obsm["holocell_label_probabilities"]
    assert isinstance(table, pd.DataFrame) and table.index.equals(data.obs_names)
    assert list(table.columns) == [str(c) for c in data.uns["holocell_label"]["classes"]]
    assert table[~query].isna().all(axis=None)  # reference cells: no probabilities
    rows = table[query].to_numpy()
    assert np.allclose(rows.sum(axis=1), 1.0)
    best = table[query].idxmax(axis=1)
    predicted = data.obs["holocell_label"][query].astype(object)
    known = predicted != "unknown"
    assert (predicted[known] == best[known]).all()
    assert (~known).any() and best[~known].notna().all()  # "unknown" cells keep their best label here
    # the confidence is the best probability times the distance factor (<= 1)
    assert (data.obs["holocell_label_confidence"][query] <= rows.max(axis=1) + 1e-9).all()
    path = tmp_path / "annotated.h5mu"
    data.write(path)
    back = md.read_h5mu(path).obsm["holocell_label_probabilities"]
    assert np.allclose(np.asarray(back, dtype=float), rows_all := table.to_numpy(), equal_nan=True)
    assert rows_all.shape == back.shape


def test_a_users_obsm_entry_of_that_name_is_never_replaced(trained_pbmc):
    mdata, model = trained_pbmc
    data = mdata.copy()
    mine = np.arange(data.n_obs, dtype=float)[:, None]
    data.obsm["holocell_label_probabilities"] = mine
    labels_key = "celltype" if "celltype" in data.obs else "cell_type"
    with pytest.raises(ValueError, match=r"mdata.obsm\['holocell_label_probabilities'\] already exists"):
        hc.tl.annotate(data, model, labels_key=labels_key, method="knn", progress_bar=False)
    assert np.array_equal(data.obsm["holocell_label_probabilities"], mine)
    assert "holocell_label" not in data.obs


def test_labels_with_a_slash_are_stored_under_names_files_accept(trained_pbmc, tmp_path):
    """SNARE-seq2's ``L2/3`` became a column name of the probabilities, which zarr refuses now and anndata's h5
    writer from 0.13 on: ``mdata.write()`` after ``tl.annotate`` failed (fourteenth session's false-positive probe)."""
    mdata, model = trained_pbmc
    data = mdata.copy()
    labels_key = "celltype" if "celltype" in data.obs else "cell_type"
    first = str(data.obs[labels_key].astype(str).iloc[0])
    data.obs["slashed"] = data.obs[labels_key].astype(str).replace({first: "L2/3 IT"})
    query = (data.obs["batch"] == data.obs["batch"].iloc[-1]).to_numpy()
    data.obs["ref_label"] = data.obs["slashed"].astype(object).where(~query)
    hc.tl.annotate(data, model, labels_key="ref_label", method="knn", progress_bar=False, key_added="slash")
    table = data.obsm["slash_probabilities"]
    assert "L2_3 IT" in table.columns and not any("/" in c for c in table.columns)
    assert "L2/3 IT" in list(data.uns["slash"]["classes"])  # the labels keep their text
    assert set(data.obs["slash"].dropna().astype(str)) <= {*map(str, data.uns["slash"]["classes"]), "unknown"}
    data.write(tmp_path / "a.h5mu")  # no slash in any key: h5 and zarr stores take it
    data.write_zarr(tmp_path / "a.zarr")
    back = md.read_h5mu(tmp_path / "a.h5mu").obsm["slash_probabilities"]
    assert list(back.columns) == list(table.columns)


def test_storable_names_cover_folder_names_and_keep_every_column_apart():
    from holocell.tl._labels import storable_names

    assert storable_names(["L2/3 IT", ".", "..", "Astro"]) == ["L2_3 IT", "_", "__", "Astro"]
    names = storable_names(["a/b", "a_b", "x"])  # the replacement meets another label: both kept apart
    assert len(set(names)) == 3 and "a_b" in names and not any("/" in n for n in names)

