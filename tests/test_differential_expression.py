"""scvi-tools' ``differential_expression`` on HoloCell: Bayesian comparison of two groups' posterior draws of
normalised RNA expression, with scvi-tools' columns, one-vs-rest comparisons, masks and names as groups."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

FAST = {"n_samples_overall": 400, "m_permutation": 2000, "silent": True}
CHANGE_COLUMNS = [
    "proba_de", "proba_not_de", "bayes_factor", "scale1", "scale2", "pseudocounts", "delta", "lfc_mean",
    "lfc_median", "lfc_std", "lfc_min", "lfc_max", "raw_mean1", "raw_mean2", "non_zeros_proportion1",
    "non_zeros_proportion2", "raw_normalized_mean1", "raw_normalized_mean2", "is_de_fdr_0.05", "comparison",
    "group1", "group2",
]  # fmt: skip  (scvi-tools' order)

pytestmark = pytest.mark.usefixtures("one_thread")


def _wilcoxon_top(mdata: md.MuData, group: str, n: int = 20) -> set[str]:
    rna = mdata["rna"].copy()
    rna.obs["celltype"] = mdata.obs.loc[rna.obs_names, "celltype"].astype(str).to_numpy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    sc.tl.rank_genes_groups(rna, "celltype", groups=[group], reference="rest", method="wilcoxon")
    return set(rna.uns["rank_genes_groups"]["names"][group][:n])


def test_quality_floor_b_cells_against_the_rest(trained_pbmc8):
    """B cells against every other cell: the known B-cell markers are called, up, and the top genes overlap
    scanpy's Wilcoxon ranking on the counts. Measured when written (8 epochs, seed 0): MS4A1 / CD79A / BANK1 called
    with lfc_mean 2.3-2.6, 6-8 of the top 20 up genes in Wilcoxon's top 20 (by chance: about 0.8)."""
    mdata, model = trained_pbmc8
    de = model.differential_expression(groupby="celltype", group1="B", **FAST)
    assert list(de.columns) == CHANGE_COLUMNS and (de["comparison"] == "B vs Rest").all()
    assert de.index.is_unique and set(de.index) == set(model.feature_space.maps["rna"].features.astype(str))
    assert (np.diff(de["proba_de"].to_numpy()) <= 0).all()  # sorted as scvi-tools sorts
    for gene in ("MS4A1", "CD79A", "BANK1"):
        assert de.loc[gene, "is_de_fdr_0.05"] and de.loc[gene, "lfc_mean"] > 1.0, de.loc[gene]
    up = de[de["lfc_mean"] > 0].index[:20]
    assert len(set(up) & _wilcoxon_top(mdata, "B")) >= 4
    b = (mdata.obs["celltype"] == "B").to_numpy() & (np.asarray(mdata.obsmap["rna"]) > 0)
    counts = mdata["rna"][mdata.obs_names[b]].X.toarray()
    np.testing.assert_allclose(de.loc[mdata["rna"].var_names, "raw_mean1"], counts.mean(0), rtol=1e-6)
    np.testing.assert_allclose(de.loc[mdata["rna"].var_names, "non_zeros_proportion1"], (counts > 0).mean(0))
    np.testing.assert_allclose(de["proba_de"] + de["proba_not_de"], 1.0)


def test_one_against_the_rest_for_every_group_and_against_a_group(trained_pbmc8):
    mdata, model = trained_pbmc8
    every = model.differential_expression(groupby="celltype", all_stats=False, **FAST)
    types = sorted(mdata.obs["celltype"].astype(str).unique())
    assert list(every["comparison"].unique()) == [f"{t} vs Rest" for t in types]
    assert "raw_mean1" not in every.columns
    pair = model.differential_expression(groupby="celltype", group1=["B", "NK"], group2="Mono", **FAST)
    assert list(pair["comparison"].unique()) == ["B vs Mono", "NK vs Mono"]
    nk = model.differential_expression(groupby="celltype", group1="NK", **FAST)
    for gene in ("NKG7", "GNLY"):  # measured when written: lfc_mean 1.72 / 1.45, proba_de 0.94 / 0.92
        assert nk.loc[gene, "lfc_mean"] > 1.0 and nk.loc[gene, "proba_de"] > 0.85, nk.loc[gene]


def test_masks_positions_and_names_are_groups_and_the_seed_repeats(trained_pbmc8):
    mdata, model = trained_pbmc8
    b = (mdata.obs["celltype"] == "B").to_numpy()
    by_mask = model.differential_expression(idx1=b, seed=1, **FAST)
    by_name = model.differential_expression(idx1=list(mdata.obs_names[b]), seed=1, **FAST)
    by_position = model.differential_expression(idx1=np.flatnonzero(b), idx2=np.flatnonzero(~b), seed=1, **FAST)
    by_group = model.differential_expression(groupby="celltype", group1="B", seed=1, **FAST)
    pd.testing.assert_frame_equal(by_mask, by_name)
    numbers = [c for c in CHANGE_COLUMNS if c not in ("comparison", "group1", "group2")]
    pd.testing.assert_frame_equal(by_mask[numbers], by_position[numbers])
    pd.testing.assert_frame_equal(by_mask[numbers], by_group[numbers])
    assert by_mask["comparison"].iloc[0] == "group1 vs Rest" and by_position["group2"].iloc[0] == "group2"
    by_query = model.differential_expression(idx1="celltype == 'B'", seed=1, **FAST)  # scvi-tools' string
    pd.testing.assert_frame_equal(by_mask, by_query)
    nullable = pd.Series(b, dtype="boolean", index=mdata.obs_names)
    pd.testing.assert_frame_equal(by_mask, model.differential_expression(idx1=nullable, seed=1, **FAST))
    other = model.differential_expression(idx1=b, seed=2, **FAST)
    assert not np.allclose(other.loc[by_mask.index, "lfc_mean"], by_mask["lfc_mean"])


def test_labels_are_matched_by_value_as_scvi_tools_matches_them(trained_pbmc8):
    """A single non-string value is one group; ints match float labels; repeats run once."""
    mdata, model = trained_pbmc8
    work = mdata.copy()
    codes = work.obs["celltype"].astype("category").cat.codes
    work.obs["cluster"] = codes.to_numpy()  # integer labels, as leiden codes
    work.obs["cluster_f"] = np.where(codes.to_numpy() == 0, np.nan, codes.to_numpy()).astype(float)
    one = model.differential_expression(work, groupby="cluster", group1=0, **FAST)
    assert list(one["comparison"].unique()) == ["0 vs Rest"]
    floats = model.differential_expression(work, groupby="cluster_f", group1=[1, 1], group2=2, **FAST)
    assert list(floats["comparison"].unique()) == ["1 vs 2"]  # 1 and 2 matched 1.0 and 2.0; the repeat ran once


def test_vanilla_mode_and_transform_batch(trained_pbmc8):
    mdata, model = trained_pbmc8
    vanilla = model.differential_expression(groupby="celltype", group1="B", mode="vanilla", **FAST)
    assert list(vanilla.columns[:5]) == ["proba_m1", "proba_m2", "bayes_factor", "scale1", "scale2"]
    assert "is_de_fdr_0.05" not in vanilla.columns and (np.diff(vanilla["bayes_factor"].to_numpy()) <= 0).all()
    assert vanilla.loc["MS4A1", "proba_m1"] > 0.9
    own = model.differential_expression(groupby="celltype", group1="B", all_stats=False, **FAST)
    as_p3 = model.differential_expression(groupby="celltype", group1="B", all_stats=False, transform_batch="p3_0",
                                          **FAST)  # fmt: skip
    assert not np.allclose(as_p3.loc[own.index, "scale1"], own["scale1"])
    with pytest.raises(ValueError, match="not a training batch"):
        model.differential_expression(groupby="celltype", group1="B", transform_batch="p9_0", **FAST)


def test_a_backed_file_gives_the_same_table_and_nothing_is_changed(trained_pbmc8, tmp_path):
    mdata, model = trained_pbmc8
    path = tmp_path / "pbmc.h5mu"
    mdata.write(path)
    before = path.read_bytes()
    in_memory = model.differential_expression(groupby="celltype", group1="NK", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from_file = model.differential_expression(adata=str(path), groupby="celltype", group1="NK", **FAST)
    pd.testing.assert_frame_equal(in_memory, from_file, rtol=1e-4, atol=1e-6)
    assert path.read_bytes() == before


def test_bad_arguments_name_the_problem(trained_pbmc8):
    mdata, model = trained_pbmc8
    b = (mdata.obs["celltype"] == "B").to_numpy()
    bad = [
        ({}, ValueError, "groupby="),
        ({"groupby": "cell_type"}, KeyError, "not a column of mdata.obs"),
        ({"groupby": "celltype", "group1": "Bcell"}, ValueError, r"'Bcell'.*not a value"),
        ({"groupby": "celltype", "group2": "T"}, ValueError, r"'T'.*not a value"),
        ({"groupby": "celltype", "idx1": b}, ValueError, "not both"),
        ({"idx1": b, "idx2": b}, ValueError, "in both groups"),
        ({"idx1": b[:10]}, ValueError, "one value per cell"),
        ({"idx1": ["no_such_cell"]}, KeyError, "no_such_cell"),
        ({"idx1": np.zeros(len(b), bool)}, ValueError, "without cells"),
        ({"idx1": b, "mode": "bayes"}, ValueError, "mode"),
        ({"idx1": b, "delta": -1}, ValueError, "delta"),
        ({"idx1": b, "fdr_target": 1.5}, ValueError, "fdr_target"),
        ({"idx1": b, "batch_correction": True}, ValueError, "transform_batch="),
        ({"idx1": b, "batchid1": ["p1_0"]}, ValueError, "transform_batch="),
        ({"idx1": b, "n_samples_overall": 0}, ValueError, "n_samples_overall"),
        ({"idx1": b, "seed": -1}, ValueError, "seed"),
        ({"idx1": b, "silent": "yes"}, TypeError, "silent"),
        ({"idx1": b.astype(int)}, ValueError, "0 or 1 per cell"),
        ({"idx1": "celltype == "}, ValueError, "query of mdata.obs"),
        ({"idx1": pd.array([pd.NA, *b[1:]], dtype="boolean")}, ValueError, "missing value"),
        ({"groupby": "celltype", "group1": []}, ValueError, "group1 is empty"),
        ({"groupby": "celltype", "group1": "B", "group2": ["NK"]}, ValueError, "group2 must be one value"),
        ({"idx1": b, "delta": None}, ValueError, "estimates it when None"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            model.differential_expression(**kwargs)
