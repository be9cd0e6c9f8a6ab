"""Tests for the ground-truth multiome simulator."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from holocell.data._simulate import SimulationTruth, simulate_multiome

SMALL = {"n_cells": 300, "n_genes": 60, "n_tfs": 8, "n_proteins": 10, "n_distal_peaks": 20}


@pytest.fixture(scope="module")
def sim():
    return simulate_multiome(**SMALL, n_batches=3, seed=1)


def test_shapes_and_metadata(sim):
    mdata, truth = sim
    assert isinstance(truth, SimulationTruth)
    assert set(mdata.mod) == {"rna", "atac", "protein"}
    assert mdata.n_obs == 300
    assert mdata["rna"].shape == (300, 60)
    assert mdata["atac"].shape == (300, 60 * 4 + 20)
    assert mdata["protein"].shape == (300, 10)
    for mod in ("rna", "atac", "protein"):
        obs = mdata[mod].obs
        assert isinstance(obs["batch"].dtype, pd.CategoricalDtype)
        assert isinstance(obs["cell_type"].dtype, pd.CategoricalDtype)
    assert set(mdata.obs["batch"]) == {"batch0", "batch1", "batch2"}
    assert set(mdata.obs["cell_type"]) <= {f"type{i}" for i in range(5)}
    var = mdata["rna"].var
    assert {"chrom", "tss", "strand", "gene_id"} <= set(var.columns)
    assert set(var["strand"]) <= {"+", "-"}
    assert {"chrom", "start", "end"} <= set(mdata["atac"].var.columns)
    # proteins: first n_proteins non-TF genes, named by the lowercased symbol
    pvar = mdata["protein"].var
    assert list(pvar["gene"]) == list(mdata["rna"].var_names[8:18])
    assert list(pvar.index) == [g.lower() for g in pvar["gene"]]
    assert list(truth.gene_protein["protein"]) == list(pvar.index)
    # truth tables reference existing features
    assert set(truth.cre_gene["peak"]) <= set(mdata["atac"].var_names)
    assert set(truth.cre_gene["gene"]) == set(mdata["rna"].var_names)
    assert (truth.cre_gene.groupby("gene").size() == 4).all()
    assert set(truth.tf_target["tf"]) <= set(mdata["rna"].var_names[:8])
    assert set(truth.tf_cre["tf"]) <= set(mdata["rna"].var_names[:8])
    assert truth.cell_type_tf_activity.shape == (5, 8)


def test_counts_are_raw_integers(sim):
    mdata, _ = sim
    for mod in ("rna", "atac", "protein"):
        x = mdata[mod].X
        assert sparse.issparse(x) and x.format == "csr"
        assert x.dtype == np.float32
        assert (x.data >= 0).all()
        np.testing.assert_array_equal(x.data, np.round(x.data))
        assert x.nnz > 0
    assert set(np.unique(mdata["atac"].X.data)) == {1.0}
    # ADT has background: rarely zero
    adt = mdata["protein"].X.toarray()
    assert (adt == 0).mean() < 0.02


def test_mosaic_missing_cells():
    mdata, _ = simulate_multiome(
        **SMALL, n_batches=3, missing={"protein": ["batch1"], "atac": ["batch0", "batch2"]}, seed=3
    )
    batch = mdata.obs["batch"]
    assert mdata.n_obs == 300 and batch.notna().all() and mdata.obs["cell_type"].notna().all()
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert mdata["rna"].n_obs == 300
    assert set(mdata["protein"].obs["batch"]) == {"batch0", "batch2"}
    assert set(mdata["atac"].obs["batch"]) == {"batch1"}
    # the modality truly lacks those cells, and the global obsm mask says so
    np.testing.assert_array_equal(np.ravel(mdata.obsm["protein"]), (batch != "batch1").to_numpy())
    np.testing.assert_array_equal(np.ravel(mdata.obsm["atac"]), (batch == "batch1").to_numpy())
    prot_cells = set(mdata["protein"].obs_names)
    assert prot_cells == set(batch.index[batch != "batch1"])
    # per-modality obs agree with the global obs
    for mod in mdata.mod:
        obs = mdata[mod].obs
        np.testing.assert_array_equal(obs["batch"].astype(str), mdata.obs.loc[obs.index, "batch"].astype(str))


def test_modalities_subset_and_validation():
    mdata, _ = simulate_multiome(**SMALL, modalities=("rna", "atac"), seed=0)
    assert set(mdata.mod) == {"rna", "atac"}
    with pytest.raises(ValueError, match="modalities"):
        simulate_multiome(**SMALL, modalities=("rna", "hic"))
    with pytest.raises(ValueError, match="unknown batches"):
        simulate_multiome(**SMALL, missing={"rna": ["batch7"]})
    with pytest.raises(ValueError, match="at least one modality"):
        simulate_multiome(**SMALL, modalities=("rna",), missing={"rna": ["batch0"]})
    for bad in ({"n_cells": 1.5}, {"n_genes": "60"}, {"n_batches": True}):  # numpy's own TypeError before
        with pytest.raises(TypeError, match=f"`{next(iter(bad))}` must be an integer"):
            simulate_multiome(**{**SMALL, **bad})
    assert simulate_multiome(**{**SMALL, "n_cells": np.int64(30)})[0].n_obs == 30


def test_determinism():
    a, ta = simulate_multiome(**SMALL, seed=7)
    b, tb = simulate_multiome(**SMALL, seed=7)
    c, _ = simulate_multiome(**SMALL, seed=8)
    for mod in a.mod:
        assert (a[mod].X != b[mod].X).nnz == 0
        pd.testing.assert_frame_equal(a[mod].var, b[mod].var)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(ta.cre_gene, tb.cre_gene)
    pd.testing.assert_frame_equal(ta.tf_target, tb.tf_target)
    assert (a["rna"].X != c["rna"].X).nnz > 0


def test_species_naming():
    human, _ = simulate_multiome(**SMALL, modalities=("rna", "protein"), species="human")
    mouse, mtruth = simulate_multiome(**SMALL, modalities=("rna", "protein"), species="mouse")
    hg, mg = human["rna"].var_names, mouse["rna"].var_names
    assert all(g.isupper() for g in hg)
    assert all(g[0].isupper() and g[1:] == g[1:].lower() for g in mg)
    assert all(i.startswith("ENSGSIM") for i in human["rna"].var["gene_id"])
    assert all(i.startswith("ENSMUSGSIM") for i in mouse["rna"].var["gene_id"])
    assert human["rna"].var["gene_id"].is_unique
    assert list(mouse["protein"].var["gene"]) == list(mg[8:18])
    assert set(mtruth.tf_target["target"]) <= set(mg)
    with pytest.raises(ValueError, match="species"):
        simulate_multiome(**SMALL, species="zebrafish")


def _parse(peak: str) -> tuple[str, int, int]:
    m = re.fullmatch(r"(chr\w+):(\d+)-(\d+)", peak)
    assert m is not None, peak
    return m.group(1), int(m.group(2)), int(m.group(3))


def test_peak_coordinates(sim):
    mdata, truth = sim
    rvar, avar = mdata["rna"].var, mdata["atac"].var
    assert set(rvar["chrom"]) <= {f"chr{i}" for i in range(1, 6)}
    assert avar.index.is_unique
    for peak, row in avar.iterrows():
        chrom, start, end = _parse(peak)
        assert (chrom, start, end) == (row["chrom"], row["start"], row["end"])
        assert end - start == 500
    for peak, gene in zip(truth.cre_gene["peak"], truth.cre_gene["gene"], strict=True):
        chrom, start, end = _parse(peak)
        assert chrom == rvar.loc[gene, "chrom"]
        tss = rvar.loc[gene, "tss"]
        assert abs(start - tss) <= 100_000 and abs(end - tss) <= 100_000
    # distal peaks are > 200 kb from every TSS and regulate nothing
    distal = avar.index.difference(truth.cre_gene["peak"])
    assert len(distal) == 20
    for peak in distal:
        chrom, start, end = _parse(peak)
        tss = rvar.loc[rvar["chrom"] == chrom, "tss"].to_numpy()
        assert tss.size == 0 or np.min(np.abs(tss - (start + end) / 2)) > 200_000
    # genes are ~300 kb apart
    for _, g in rvar.groupby("chrom", observed=True):
        d = np.diff(np.sort(g["tss"].to_numpy()))
        assert (d > 250_000).all() and (d < 350_000).all()


def test_tf_knockout(sim):
    mdata, truth = sim
    tfs = list(mdata["rna"].var_names[:8])
    tf = truth.tf_target["tf"].value_counts().index[0]
    assert tf in tfs
    eff = truth.knockout_effect(gene=tf)
    rna = eff["rna"]
    assert rna.shape == (5, 60) and eff["protein"].shape == (5, 10)
    assert eff["atac"].shape == (5, mdata["atac"].n_vars)
    direct = set(truth.tf_target.loc[truth.tf_target["tf"] == tf, "target"])
    via_cre = set(
        truth.cre_gene.loc[
            truth.cre_gene["peak"].isin(truth.tf_cre.loc[truth.tf_cre["tf"] == tf, "peak"]), "gene"
        ]
    )
    affected = direct | via_cre | {tf}
    # the TF's own expression drops; every target changes
    assert (rna[tf] < -0.5).all()
    for g in direct | via_cre:
        assert rna[g].abs().max() > 1e-3, g
    # unrelated genes are untouched
    unrelated = [g for g in rna.columns if g not in affected]
    assert unrelated
    np.testing.assert_allclose(rna[unrelated].to_numpy(), 0.0, atol=1e-10)
    # proteins follow their coding genes only
    gp = dict(zip(truth.gene_protein["protein"], truth.gene_protein["gene"], strict=True))
    for prot in eff["protein"].columns:
        if gp[prot] in affected:
            assert eff["protein"][prot].abs().max() > 1e-4
        else:
            np.testing.assert_allclose(eff["protein"][prot], 0.0, atol=1e-10)
    # only the TF's CREs change accessibility
    tf_peaks = set(truth.tf_cre.loc[truth.tf_cre["tf"] == tf, "peak"])
    other = [p for p in eff["atac"].columns if p not in tf_peaks]
    np.testing.assert_allclose(eff["atac"][other].to_numpy(), 0.0, atol=1e-12)


def test_cre_knockout_affects_only_its_gene(sim):
    _, truth = sim
    base = truth.expected_expression()
    links = truth.cre_gene.assign(acc=[base["atac"][p].mean() for p in truth.cre_gene["peak"]])
    # a strongly-weighted, fairly open CRE of a protein-coding gene
    coding = links[links["gene"].isin(truth.gene_protein["gene"]) & (links["acc"] > 0.1)]
    row = coding.loc[coding["weight"].abs().idxmax()]
    eff = truth.knockout_effect(cre=row["peak"])
    rna = eff["rna"]
    assert rna[row["gene"]].abs().max() > 1e-2
    assert np.sign(rna[row["gene"]]).eq(-np.sign(row["weight"])).all()
    np.testing.assert_allclose(rna.drop(columns=row["gene"]).to_numpy(), 0.0, atol=1e-12)
    prot = truth.gene_protein.set_index("gene").loc[row["gene"], "protein"]
    assert eff["protein"][prot].abs().max() > 1e-3
    np.testing.assert_allclose(eff["protein"].drop(columns=prot).to_numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(eff["atac"].drop(columns=row["peak"]).to_numpy(), 0.0, atol=1e-12)
    assert (eff["atac"][row["peak"]] < 0).all()


def test_non_tf_gene_knockout(sim):
    _, truth = sim
    gene, prot = truth.gene_protein.iloc[0]
    eff = truth.knockout_effect(gene=gene)
    assert (eff["rna"][gene] < 0).all()
    np.testing.assert_allclose(eff["rna"].drop(columns=gene).to_numpy(), 0.0, atol=1e-12)
    assert (eff["protein"][prot] < 0).all()
    np.testing.assert_allclose(eff["protein"].drop(columns=prot).to_numpy(), 0.0, atol=1e-12)
    with pytest.raises(KeyError):
        truth.knockout_effect(gene="NOTAGENE")
    with pytest.raises(ValueError):
        truth.knockout_effect()


def test_tf_overexpression(sim):
    _, truth = sim
    tf = truth.tf_target["tf"].value_counts().index[0]
    eff = truth.overexpression_effect(gene=tf)
    rna = eff["rna"]
    # the TF goes up (or stays) in every type: its rate is set to the 0.99 quantile over the cells
    assert (rna[tf] > -1e-12).all() and rna[tf].max() > 0.1
    # each direct target moves with the sign of its edge where the TF's activity rose most
    act = truth.cell_type_tf_activity[tf]
    low = act.idxmin()
    edges = truth.tf_target[truth.tf_target["tf"] == tf]
    strong = edges[edges["weight"].abs() > 0.3]
    assert len(strong)
    via_cre = set(truth.cre_gene["gene"][truth.cre_gene["peak"].isin(truth.tf_cre["peak"][truth.tf_cre["tf"] == tf])])
    for _, e in strong.iterrows():
        if e["target"] not in via_cre:  # a CRE path could oppose the direct edge
            assert np.sign(rna.loc[low, e["target"]]) == np.sign(e["weight"]), e["target"]
    affected = set(edges["target"]) | via_cre | {tf}
    unrelated = [g for g in rna.columns if g not in affected]
    np.testing.assert_allclose(rna[unrelated].to_numpy(), 0.0, atol=1e-10)
    # a higher quantile pushes further
    assert truth.overexpression_effect(gene=tf, quantile=1.0)["rna"][tf].sum() > rna[tf].sum()


def test_non_tf_gene_overexpression(sim):
    _, truth = sim
    gene, prot = truth.gene_protein.iloc[0]
    eff = truth.overexpression_effect(gene=gene, quantile=0.9)
    np.testing.assert_allclose(eff["rna"].drop(columns=gene).to_numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(eff["protein"].drop(columns=prot).to_numpy(), 0.0, atol=1e-12)
    assert np.sign(eff["protein"][prot]).eq(np.sign(eff["rna"][gene])).all()
    with pytest.raises(ValueError, match="quantile"):
        truth.overexpression_effect(gene=gene, quantile=0.0)
    with pytest.raises(ValueError, match="at least one gene"):
        truth.overexpression_effect(gene=[])
    with pytest.raises(KeyError):
        truth.overexpression_effect(gene="NOTAGENE")


def test_expected_matches_sampled(sim):
    """The expected-value model used for knockouts is the model the counts were drawn from."""
    mdata, truth = sim
    p, rate, _ = truth._model.expected()
    ct = truth._model.cell_type
    x = mdata["rna"].X.toarray()
    obs = np.log(pd.DataFrame(x / x.sum(1, keepdims=True)).groupby(ct).mean() + 1e-5)
    exp = np.log(pd.DataFrame(rate / rate.sum(1, keepdims=True)).groupby(ct).mean() + 1e-5)
    assert np.corrcoef(obs.to_numpy().ravel(), exp.to_numpy().ravel())[0, 1] > 0.97
    # cell-type differences (centred per gene) are recovered, not just gene means
    a, b = obs - obs.mean(), exp - exp.mean()
    assert np.corrcoef(a.to_numpy().ravel(), b.to_numpy().ravel())[0, 1] > 0.95
    acc = pd.DataFrame(mdata["atac"].X.toarray()).groupby(ct).mean()
    p_type = pd.DataFrame(p).groupby(ct).mean()
    assert np.corrcoef(acc.to_numpy().ravel(), p_type.to_numpy().ravel())[0, 1] > 0.85
    # expected_expression is the per-type summary of the same model
    ee = truth.expected_expression()
    np.testing.assert_allclose(ee["atac"].to_numpy(), p_type.to_numpy())
