"""Real chromatin data: loaders, genome builds, peak parsing, and a tiny model on real SNARE-seq2 cells.

The converted files come from ``$HOLOCELL_DATA_DIR``, which the fixtures here point at ``../shared/data`` for
the tests of this module only (``tests/conftest.py::shared_data_env``). Without them, with
``HOLOCELL_TEST_DOWNLOADS=1`` (set by the GitHub workflow, which caches ``$HOLOCELL_CACHE_DIR``) the loaders
download the original public files, check them and convert them; otherwise these tests skip with a message
(``require_real_data`` in ``conftest.py``).
"""

from __future__ import annotations

import hashlib

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell.data._registry import REGISTRY, _local_copy
from holocell.vocab import link_peaks_to_genes, load_gene_table, parse_peaks

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_latents": 8}


#: sha256 of each data set's content (matrices, obs, var; see ``_digest``), computed from the benchmark
#: copies in ../shared/data: a download converted on another machine must give the same.
DIGESTS = {
    "snareseq2_mop": "44ae9f95d07a347b716b05f08f1425c87a981c082d0300b8d242cf372cd438f3",
    "granja2019_bmmc": "c409cf8c5ce790938532c10588b28d80465ff4dbdb6ad24322103674e3be1a96",
    "pbmc_multiome_1k": "5da00c4186d9061e2bab39e5f4a1a74f9ac6ed74c8db62f13f2763f3d92a56a7",
}


def _digest(data) -> str:
    h = hashlib.sha256()
    for adata in [data[k] for k in sorted(data.mod)] if isinstance(data, md.MuData) else [data]:
        x = adata.X.tocsr()
        for part in (x.indptr.astype(np.int64), x.indices.astype(np.int64), x.data.astype(np.float32)):
            h.update(part.tobytes())
        h.update(adata.obs.to_csv().encode())
        h.update(adata.var.to_csv().encode())
    return h.hexdigest()


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir):
    """Every test of this module reads the shared data folder."""
    return shared_data_dir


@pytest.fixture(scope="module")
def snare(shared_data_module, require_real_data) -> md.MuData:
    require_real_data("snareseq2_mop")
    return hc.data.snareseq2_mop(progressbar=False)


@pytest.fixture(scope="module")
def snare_small(snare) -> md.MuData:
    """120 cells (10 per library), the peaks of chr19 and the RNA genes of chr17-chr19: a seconds-long model."""
    rng = np.random.default_rng(0)
    libraries = sorted(set(snare.obs["batch"]))
    peaks = (snare["atac"].var["chrom"] == "chr19").to_numpy()
    # cells with at least one chr19 count: a cell with none would be a measured-but-empty ATAC profile,
    # which holocell rightly warns about (the suite turns holocell's warnings into errors)
    has_atac = np.asarray(snare["atac"].X[:, peaks].sum(axis=1)).ravel() > 0
    cells = np.concatenate(
        [rng.choice(np.flatnonzero((snare.obs["batch"] == b).to_numpy() & has_atac), 10, replace=False)
         for b in libraries]
    )
    table = load_gene_table("mm10")
    near = set(table.loc[table["chrom"].isin(["chr17", "chr18", "chr19"]), "gene_name"])
    genes = snare["rna"].var_names.isin(list(near))
    small = md.MuData(
        {"rna": snare["rna"][cells][:, genes].copy(), "atac": snare["atac"][cells][:, peaks].copy()}
    )
    small.obs["batch"] = snare.obs["batch"].iloc[cells].to_numpy()
    small.obs["cell_type"] = snare.obs["cell_type"].iloc[cells].to_numpy()
    return small


# ----------------------------------------------------------------------------- loaders
def test_snareseq2_loader_shapes(snare):
    assert isinstance(snare, md.MuData)
    assert snare.shape[0] == 10_309
    assert snare["rna"].shape == (10_309, 1_677) and snare["atac"].shape == (10_309, 25_734)
    assert {"batch", "cell_type", "cell_type_fine"} <= set(snare.obs.columns)
    assert sorted(set(snare.obs["batch"])) == [f"09{c}" for c in "ABCDEFGHIJKL"]
    assert snare.obs["cell_type"].nunique() == 15 and snare.obs["cell_type_fine"].nunique() == 23
    assert {"chrom", "start", "end"} <= set(snare["atac"].var.columns)
    assert bool(snare.obsm["rna"].all()) and bool(snare.obsm["atac"].all())  # fully paired
    x = snare["atac"].X
    assert sp.issparse(x) and np.allclose(x.data, np.round(x.data)) and x.data.min() >= 1


def test_granja_loader_shapes(require_real_data):
    require_real_data("granja2019_bmmc")
    adata = hc.data.granja2019_bmmc(progressbar=False)
    assert isinstance(adata, ad.AnnData)
    assert adata.shape == (14_125, 10_000)
    assert sorted(set(adata.obs["batch"])) == ["BMMC_D5T1", "BMMC_D6T1"]
    assert adata.obs["cell_type"].nunique() == 16
    assert {"chrom", "start", "end"} <= set(adata.var.columns)


def test_pbmc_multiome_loader_is_the_users_read(require_real_data):
    require_real_data("pbmc_multiome_1k")
    mdata = hc.data.pbmc_multiome_1k(progressbar=False)
    assert mdata["rna"].shape == (1_000, 45) and mdata["atac"].shape == (1_000, 174)
    # same file, same reader: what a user gets from mudata.read_h5mu
    own = md.read_h5mu(hc.data.fetch("pbmc_multiome_1k"))
    assert (own["atac"].X != mdata["atac"].X).nnz == 0
    assert own["rna"].var_names.equals(mdata["rna"].var_names)


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_loader_content_equals_the_benchmark_copies(name, require_real_data):
    """From a local copy or converted from a fresh download, the content is that of ../shared/data."""
    require_real_data(name)
    assert _digest(getattr(hc.data, name)(progressbar=False)) == DIGESTS[name]


def test_fetch_refuses_a_tampered_local_copy(tmp_path, monkeypatch, require_real_data):
    require_real_data("pbmc_multiome_1k")
    entry = REGISTRY["pbmc_multiome_1k"]
    if _local_copy(entry) is None:
        pytest.skip("needs the reference copy in $HOLOCELL_DATA_DIR (a conversion made here has other bytes)")
    good = _local_copy(entry).read_bytes()
    (tmp_path / entry.filename).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    monkeypatch.setenv("HOLOCELL_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        hc.data.pbmc_multiome_1k(progressbar=False)


# ----------------------------------------------------------------------------- peaks and genome builds
def test_peak_name_forms_give_the_var_coordinates(require_real_data):
    require_real_data("granja2019_bmmc")
    var = hc.data.granja2019_bmmc(progressbar=False).var
    from_columns = parse_peaks(var)
    # index "chr5:180470204-180470704"; var["name"] "chr5_180470204_180470704"; and the dash form
    for names in (var.index, var["name"], var.index.str.replace(":", "-")):
        parsed = parse_peaks(pd.DataFrame(index=pd.Index(names)))
        assert parsed.to_numpy().tolist() == from_columns.to_numpy().tolist()


@pytest.mark.parametrize(
    ("name", "genome"), [("snareseq2_mop", "mm10"), ("granja2019_bmmc", "hg19"), ("pbmc_multiome_1k", "hg38")]
)
def test_right_build_puts_peaks_on_promoters(name, genome, require_real_data):
    """With the data's own build most peaks link to a gene, and >= 2x more sit within 1 kb of a TSS."""
    require_real_data(name)
    data = getattr(hc.data, name)(progressbar=False)
    peaks = parse_peaks((data["atac"] if isinstance(data, md.MuData) else data).var)
    promoter, linked = {}, {}
    for build in ("hg38", "hg19", "mm10"):
        links = link_peaks_to_genes(peaks, load_gene_table(build))
        promoter[build] = float((links["distance"].abs() <= 1_000).mean())
        linked[build] = float(links["distance"].notna().mean())
    assert linked[genome] > 0.6
    others = [v for b, v in promoter.items() if b != genome]
    assert promoter[genome] > 2 * max(others), promoter


def test_setup_mm10_links_snare_peaks_to_mouse_genes(snare_small):
    hc.HoloCell.setup_mudata(
        snare_small,
        modalities={"rna": "rna", "atac": "atac"},
        batch_key="batch",
        species="mouse",
        genome="mm10",
    )
    model = hc.HoloCell(snare_small, **TINY)
    report = model.feature_space.maps["atac"].report
    assert (report["how"] == "tss_window").mean() > 0.6
    gene_anchors = set(report.loc[report["how"] == "tss_window", "anchor"])
    # mm10 genes sit on the canonical anchors of the cross-species vocabulary (human ortholog
    # symbol for one-to-one orthologs, "mouse:<symbol>" otherwise)
    mm10_anchors = set(hc.vocab.map_genes(list(load_gene_table("mm10")["gene_name"]), "mouse")["anchor"])
    assert gene_anchors <= mm10_anchors
    # RNA genes and the peaks near them share anchors
    rna_anchors = set(model.feature_space.maps["rna"].report["anchor"])
    assert len(gene_anchors & rna_anchors) > 40


def test_benchmark_gene_activity_joins_peaks_to_genes_by_anchor(snare_small):
    """The gene-activity peer of ``chromatin.py``'s unpaired task: a mouse gene's anchor carries its human ortholog's
    name (or ``mouse:<symbol>``), so joining peaks to genes by anchor name links nearly nothing (the bug that made the
    peer give every cell one label); the benchmark joins them by anchor index."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from chromatin import peak_gene_links

    mdata = snare_small.copy()
    hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch", species="mouse",
                             genome="mm10")  # fmt: skip
    model = hc.HoloCell(mdata, **TINY)
    maps = model.feature_space.maps
    by_name = pd.Index(mdata["rna"].var_names).get_indexer(maps["atac"].report["anchor"].astype(str))
    assert (by_name >= 0).mean() < 0.05
    links = peak_gene_links(model, mdata).tocoo()
    assert len(np.unique(links.col)) > 40  # genes with at least one linked peak
    np.testing.assert_array_equal(maps["atac"].anchor[links.row], maps["rna"].anchor[links.col])


# ----------------------------------------------------------------------------- a tiny model on real cells
def test_tiny_train_embed_generate_on_snare(snare_small):
    mdata = snare_small.copy()
    hc.HoloCell.setup_mudata(
        mdata, modalities={"rna": "rna", "atac": "atac"}, batch_key="batch", species="mouse", genome="mm10"
    )
    model = hc.HoloCell(mdata, **TINY)
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False, seed=0)
    assert np.isfinite(model.history_["train_loss_atac"]).all()
    z = model.get_latent_representation(modality="rna", progress_bar=False)
    assert z.shape == (mdata.n_obs, TINY["d_model"]) and np.isfinite(z).all()
    gen = model.generate(mdata, target="atac", n_steps=2, key_added="atac_gen", progress_bar=False)
    assert mdata["atac_gen"] is gen and gen.shape == mdata["atac"].shape
    assert gen.var["measured_name"].tolist() == mdata["atac"].var_names.tolist()
    assert np.isfinite(gen.X).all() and gen.X.min() >= 0 and gen.X.max() <= 1
    assert gen.uns["holocell"]["params"]["sources"] == ["rna"]
