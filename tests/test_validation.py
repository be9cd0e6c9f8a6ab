"""Tests for input checks at ``HoloCell.setup_mudata``: clear errors, and the user's data left alone."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from mudata import MuData

from holocell import HoloCell, HoloCellWarning
from holocell.data import simulate_multiome

MODS = {"rna": "rna", "atac": "atac", "protein": "protein"}
#: The simulator's genes (SIM1, SIM2, ...) are synthetic: a setup that gets past the checks reports that few
#: RNA features are vocabulary genes (issue 20); the tests that set such data up expect that report.
SIM_GENES = r"RNA features of modality .* map to a known"


def _sim(**kwargs):
    mdata, _ = simulate_multiome(
        24,
        n_genes=20,
        n_tfs=4,
        n_proteins=5,
        n_distal_peaks=3,
        peaks_per_gene=2,
        missing={"protein": ["batch1"]},
        seed=0,
        **kwargs,
    )
    return mdata


@pytest.fixture()
def mdata():
    return _sim()


def _setup(mdata, **kwargs):
    args = {"modalities": MODS, "batch_key": "batch"} | kwargs
    HoloCell.setup_mudata(mdata, **args)


def _setup_ok(mdata, **kwargs):
    """``_setup`` of a setup that passes: the simulated genes are reported (``SIM_GENES``)."""
    with pytest.warns(HoloCellWarning, match=SIM_GENES):
        _setup(mdata, **kwargs)


def _set_x(mdata, mod, x):
    mdata.mod[mod].X = x


def test_valid_setup_passes(mdata):
    _setup_ok(mdata)
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    assert set(model.modalities_) == set(MODS)


def test_wrong_modality_key(mdata):
    with pytest.raises(KeyError, match="not in mdata.mod") as err:
        _setup(mdata, modalities={"rna": "rna", "protein": "adt"})
    msg = str(err.value)
    assert "available" in msg and "'protein'" in msg and "'atac'" in msg and "modalities" in msg


def test_unknown_holocell_modality(mdata):
    with pytest.raises(ValueError, match="Unknown modality 'adt'") as err:
        _setup(mdata, modalities={"rna": "rna", "adt": "protein"})
    assert "'protein'" in str(err.value)


def test_empty_modalities_argument(mdata):
    with pytest.raises(ValueError, match="needs `modalities`"):
        _setup(mdata, modalities={})


def test_scvi_style_layer_keys_accepted(mdata):
    _setup_ok(mdata, modalities={"rna_layer": "rna", "protein": "protein"})
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    assert set(model.modalities_) == {"rna", "protein"}


def test_non_integer_counts_mention_layer(mdata):
    x = mdata.mod["rna"].X.copy()
    x.data = x.data / 3.7
    _set_x(mdata, "rna", x)
    with pytest.raises(ValueError, match="non-integer") as err:
        _setup(mdata)
    assert "rna_layer='counts'" in str(err.value) and "'rna'" in str(err.value)


def test_raw_counts_in_a_layer_are_used(mdata):
    counts = mdata.mod["protein"].X.copy()
    mdata.mod["protein"].layers["counts"] = counts
    logged = counts.copy()
    logged.data = np.log1p(logged.data)
    _set_x(mdata, "protein", logged)
    with pytest.raises(ValueError, match="protein_layer='counts'"):
        _setup(mdata)
    _setup_ok(mdata, protein_layer="counts")  # fine with the layer


def test_missing_layer(mdata):
    with pytest.raises(KeyError, match="Layer 'counts' not in mdata.mod\\['rna'\\].layers"):
        _setup(mdata, rna_layer="counts")


def test_negative_values(mdata):
    x = mdata.mod["protein"].X.toarray()
    x[0, 0] = -2.0
    _set_x(mdata, "protein", x)
    with pytest.raises(ValueError, match="negative values") as err:
        _setup(mdata)
    assert "protein_layer=" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(mdata, bad):
    x = mdata.mod["atac"].X.copy()
    x.data[0] = bad
    _set_x(mdata, "atac", x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        _setup(mdata)


def test_duplicated_var_names(mdata):
    names = mdata.mod["rna"].var_names.tolist()
    names[1] = names[0]
    mdata.mod["rna"].var_names = names
    with pytest.raises(ValueError, match="(?i)duplicated feature names") as err:
        _setup(mdata)
    assert "var_names_make_unique" in str(err.value)


def test_empty_modality():
    rna = simulate_multiome(10, n_genes=10, n_tfs=2, n_proteins=2, modalities=["rna"], seed=0)[0]["rna"]
    empty = rna[:, []].copy()
    mdata = MuData({"rna": rna, "protein": empty})
    with pytest.raises(ValueError, match="needs cells and features"):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"})


def test_batch_key_missing(mdata):
    with pytest.raises(KeyError, match="batch_key 'donor'"):
        _setup(mdata, batch_key="donor")


def test_batch_key_only_in_a_modality_hints_the_copy(mdata):
    mdata.mod["rna"].obs["donor"] = "d1"
    mdata.update()
    # not "run mdata.pull_obs()": that gives 'rna:donor', and the same error came back (session 8)
    with pytest.raises(KeyError, match=r"mdata\.obs\['donor'\] = mdata\['rna'\]\.obs\['donor'\]"):
        _setup(mdata, batch_key="donor")


def test_batch_key_with_nan(mdata):
    batch = mdata.obs["batch"].astype(object)
    batch.iloc[3] = np.nan
    mdata.obs["batch"] = batch
    with pytest.raises(ValueError, match="missing values") as err:
        _setup(mdata)
    assert "'batch'" in str(err.value)


def test_bad_species(mdata):
    with pytest.raises(ValueError, match="species must be one of") as err:
        _setup(mdata, species="zebrafish")
    assert "'human'" in str(err.value) and "'mouse'" in str(err.value)


def test_anndata_instead_of_mudata(mdata):
    adata = mdata.mod["rna"]
    with pytest.raises(TypeError, match="MuData") as err:
        HoloCell.setup_anndata(adata)
    assert "mudata.MuData({'rna': adata})" in str(err.value)
    with pytest.raises(TypeError, match="needs a MuData, got AnnData"):
        HoloCell.setup_mudata(adata, modalities={"rna": "rna"})


def test_batch_key_nan_names_column_and_fix(mdata):
    batch = mdata.obs["batch"].astype(object)
    batch.iloc[[0, 5]] = np.nan
    mdata.obs["batch"] = batch
    with pytest.raises(ValueError, match="2 missing values") as err:
        _setup(mdata)
    assert "mdata.obs['batch']" in str(err.value) and "fillna" in str(err.value)


def test_duplicated_cell_names_in_a_modality(mdata):
    names = mdata.mod["protein"].obs_names.tolist()
    names[1] = names[0]
    mdata.mod["protein"].obs_names = names
    with pytest.warns(UserWarning):  # mudata itself warns about the duplicates
        mdata.update()
    with pytest.raises(ValueError, match="(?i)duplicated cell names") as err:
        _setup(mdata)
    # the fix keeps each cell's modalities together (obs_names_make_unique per modality can pair them wrongly)
    assert "index_unique='_'" in str(err.value) and "Not obs_names_make_unique()" in str(err.value)


def test_duplicated_cell_names_across_samples_name_a_fix_that_runs(mdata):
    """Two samples with colliding barcodes: the suggested prefix runs on a MuData (obs_names_make_unique() on an
    axis-0 MuData raises TypeError) and keeps each cell's RNA with its own protein."""
    import anndata as ad

    samples = {}
    for i, s in enumerate(["s1", "s2"]):  # the same barcodes in both samples
        part = mdata[mdata.obs_names[i::2]].copy()
        barcode = dict(zip(part.obs_names, [f"cell{j}" for j in range(part.n_obs)], strict=True))
        samples[s] = {k: a.copy() for k, a in part.mod.items()}
        for a in samples[s].values():
            a.obs["batch"] = part.obs.loc[a.obs_names, "batch"].to_numpy()
            a.obs_names = [barcode[c] for c in a.obs_names]
    both = MuData({k: ad.concat({s: samples[s][k] for s in samples}, index_unique="_", merge="same") for k in mdata.mod})
    both.obs["batch"] = pd.concat([a.obs["batch"] for a in both.mod.values()]).groupby(level=0).first()
    assert both.obs_names.is_unique and both.n_obs == mdata.n_obs
    # each cell keeps its own protein: the same values as before, under the prefixed name
    orig = {f"cell{j}_{s}": c for s, i in (("s1", 0), ("s2", 1)) for j, c in enumerate(mdata.obs_names[i::2])}
    names = both["protein"].obs_names
    expected = mdata["protein"][[orig[n] for n in names]].X
    assert (abs(both["protein"].X - expected)).sum() == 0
    _setup_ok(both)


def test_zero_features_names_fix():
    rna = simulate_multiome(10, n_genes=10, n_tfs=2, n_proteins=2, modalities=["rna"], seed=0)[0]["rna"]
    mdata = MuData({"rna": rna, "protein": rna[:, []].copy()})
    with pytest.raises(ValueError, match=r"shape \(10, 0\)") as err:
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"})
    assert "Leave it out of `modalities`" in str(err.value)


def test_zero_cells():
    rna = simulate_multiome(10, n_genes=10, n_tfs=2, n_proteins=2, modalities=["rna"], seed=0)[0]["rna"]
    mdata = MuData({"rna": rna, "protein": rna[[], :].copy()})
    with pytest.raises(ValueError, match=r"shape \(0, 10\)"):
        HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "protein": "protein"})


def test_nan_message_names_layer_fix(mdata):
    x = mdata.mod["rna"].X.copy()
    x.data[2] = np.nan
    _set_x(mdata, "rna", x)
    with pytest.raises(ValueError, match="NaN or Inf") as err:
        _setup(mdata)
    assert "rna_layer='counts'" in str(err.value)


def test_all_zero_cells_warn_and_train(mdata):
    x = mdata.mod["rna"].X.toarray()
    x[[0, 1]] = 0
    _set_x(mdata, "rna", sp.csr_matrix(x))
    with pytest.warns(UserWarning, match="2 of 24 cells in modality 'rna' have no counts") as rec:
        _setup_ok(mdata)
    assert any("filter_cells" in str(w.message) for w in rec)
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    model.train(max_epochs=1, enable_progress_bar=False, batch_size=8)
    assert np.isfinite(model.get_latent_representation()).all()


def test_dense_and_csc_accepted(mdata):
    _set_x(mdata, "rna", mdata.mod["rna"].X.toarray())
    _set_x(mdata, "atac", sp.csc_matrix(mdata.mod["atac"].X))
    _setup_ok(mdata)
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    assert model.get_latent_representation().shape == (mdata.n_obs, model.config.n_latent)


@pytest.mark.parametrize("fmt", ["coo", "lil", "dok"])
def test_other_sparse_formats(mdata, fmt):
    x = mdata.mod["rna"].X.asformat(fmt)
    # anndata refuses them on assignment ...
    with pytest.raises(ValueError, match="Only CSR and CSC"):
        mdata.mod["rna"].X = x
    # ... and holocell's own check (used on every matrix it reads) names the fix
    from holocell.model._validate import check_counts

    with pytest.raises(TypeError, match=f"{fmt.upper()} sparse matrix") as err:
        check_counts(x, "rna", "rna")
    assert ".tocsr()" in str(err.value)


def test_h5mu_path_instead_of_mudata(tmp_path):
    missing = tmp_path / "nope.h5mu"
    with pytest.raises(TypeError, match="does not exist") as err:
        HoloCell.setup_mudata(str(missing), modalities={"rna": "rna"})
    assert "mudata.read_h5mu(path)" in str(err.value)


def test_atac_chromosomes_match_no_gene(mdata):
    var = mdata.mod["atac"].var.copy()
    var["chrom"] = var["chrom"].str.replace("chr", "", regex=False)
    mdata.mod["atac"].var = var
    with pytest.raises(ValueError, match="No ATAC peak lies on a chromosome") as err:
        _setup(mdata)
    assert "genome=" in str(err.value) and "'1' -> 'chr1'" in str(err.value)


def test_rna_names_match_no_gene_of_the_genome_table(mdata):
    var = mdata.mod["rna"].var
    table = var.assign(gene_name=var.index)[["gene_name", "chrom", "tss", "strand"]].reset_index(drop=True)
    mdata.mod["rna"].var_names = var["gene_id"].astype(str).to_numpy()  # Ensembl-style ids, not symbols
    mdata.update()
    with pytest.raises(ValueError, match="No RNA feature name") as err:
        _setup(mdata, genome=table)
    assert "var_names" in str(err.value)


@pytest.mark.parametrize(
    "genome, error, words",
    [
        ("/nonexistent/genes.bed", FileNotFoundError, "looks like a file path, but no such file exists"),
        ("", ValueError, "Unknown genome ''"),  # was IsADirectoryError: '' is the current folder
        ("hg99", ValueError, "Unknown genome 'hg99'"),
    ],
)
def test_a_bad_genome_is_named(mdata, genome, error, words):
    _setup_ok(mdata, genome=genome)  # the checkpoint's saved feature space may not need it: checked at build
    with pytest.raises(error, match=words):
        HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    # without ATAC the TSS table is never read, but a typo is refused all the same (it was accepted and recorded)
    _setup_ok(mdata, genome=genome, modalities={"rna": "rna", "protein": "protein"})
    with pytest.raises(error, match=words):
        HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)


def test_unmapped_antibodies_are_reported_not_fatal(mdata):
    prot = mdata.mod["protein"]
    prot.var = prot.var.drop(columns="gene")
    prot.var_names = [f"zz_unknown_{i}" for i in range(prot.n_vars)]
    mdata.update()
    with pytest.warns(UserWarning, match="No antibody of modality 'protein'"):
        _setup_ok(mdata)
    model = HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    report = model.feature_space.maps["protein"].report
    assert (report["how"] == "unmapped").all()
    assert report["anchor"].str.startswith("protein:").all()


# ----------------------------------------------------------------------------- no side effects
def _digest(x) -> str:
    h = hashlib.sha256()
    if sp.issparse(x):
        x = x.tocsr()
        for a in (x.data, x.indices, x.indptr):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(str((x.shape, x.dtype, type(x).__name__)).encode())
    else:
        a = np.asarray(x)
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str((a.shape, a.dtype)).encode())
    return h.hexdigest()


def _frame_digest(df: pd.DataFrame) -> str:
    return hashlib.sha256(
        pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()
        + str(list(df.columns)).encode()
        + str(list(df.dtypes)).encode()
    ).hexdigest()


def _snapshot(mdata):
    snap = {}
    for name, adata in mdata.mod.items():
        snap[name] = {
            "X": _digest(adata.X),
            "layers": {k: _digest(v) for k, v in adata.layers.items()},
            "var": _frame_digest(adata.var),
            "obs": _frame_digest(adata.obs),
            "uns": sorted(adata.uns),
            "obsm": sorted(adata.obsm),
            "shape": adata.shape,
        }
    snap["global_var"] = _frame_digest(mdata.var)
    return snap


def test_setup_never_changes_user_data(mdata):
    mdata.mod["rna"].layers["counts"] = mdata.mod["rna"].X.copy()
    before = _snapshot(mdata)
    obs_before = mdata.obs.copy()
    uns_before = set(mdata.uns)
    _setup_ok(mdata, rna_layer="counts")
    HoloCell(mdata, d_model=16, n_layers=1, n_heads=2, n_latents=4)
    assert _snapshot(mdata) == before
    assert set(mdata.uns) - uns_before == {"_scvi_uuid", "_scvi_manager_uuid"}
    assert set(mdata.obs.columns) - set(obs_before.columns) == {"_scvi_batch"}
    assert set(obs_before.columns) <= set(mdata.obs.columns)
    pd.testing.assert_frame_equal(mdata.obs[obs_before.columns], obs_before)
    codes = mdata.obs["_scvi_batch"].to_numpy()
    assert set(codes) == {0, 1}


def test_failed_setup_writes_nothing(mdata):
    before = _snapshot(mdata)
    obs_cols, uns = list(mdata.obs.columns), set(mdata.uns)
    with pytest.raises(ValueError):
        _setup(mdata, species="zebrafish")
    assert _snapshot(mdata) == before
    assert list(mdata.obs.columns) == obs_cols and set(mdata.uns) == uns


def test_a_modality_named_twice_is_refused(mdata):
    """`{"rna": "rna", "rna_layer": "atac"}` kept the last one, and the user saw a gene-matching error about peaks."""
    before = _snapshot(mdata)
    with pytest.raises(ValueError, match="`modalities` names 'rna' twice"):
        _setup(mdata, modalities={"rna": "rna", "rna_layer": "atac"})
    assert _snapshot(mdata) == before


def test_counts_kept_in_raw_get_a_fix_that_runs(mdata):
    """scanpy's layout (counts in .raw, normalised .X): both errors name .raw and how to use it, and the fix runs."""
    rna = mdata["rna"]
    rna.raw = rna.copy()
    rna.X = sp.csr_matrix(np.log1p(rna.X.toarray() / np.maximum(rna.X.sum(axis=1), 1) * 1e4))
    with pytest.raises(ValueError, match="looks normalised") as err:
        _setup(mdata)
    assert "mdata['rna'].raw[:, mdata['rna'].var_names].X" in str(err.value)
    with pytest.raises(KeyError, match="not in mdata.mod") as err:
        _setup(mdata, rna_layer="counts")
    assert ".raw go to a layer first" in str(err.value)
    mdata["rna"].layers["counts"] = mdata["rna"].raw[:, mdata["rna"].var_names].X
    _setup_ok(mdata, rna_layer="counts")
