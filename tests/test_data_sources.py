"""The real data sets' loaders: original public files downloaded, checked and converted once.

A real HTTP server on 127.0.0.1 serves the files in their original formats, so the whole path runs:
pooch download through the capped downloader, sha256 of the original bytes, conversion (numpy
``.npz`` + text tables, an R ``.rda`` read by ``rdata``, muon's ``.h5mu``), the cached result and its
stamp. ``tests/data/sources`` holds small slices of each original (``scripts/make_source_slices.py``);
the real originals in ``../shared/data/originals`` are converted and compared with the benchmark
copies beside them when that folder is there (``.ci/run`` has it; the GitHub workflow downloads the
originals from their public URLs instead, in ``tests/test_chromatin_data.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import holocell as hc
from holocell.data import _registry
from holocell.data._registry import DATA_DIR_ENV, REGISTRY

SLICES = Path(__file__).parent / "data" / "sources"
#: The benchmark copies and their originals: a folder of $HOLOCELL_DATA_DIR with originals/, else ../shared/data.
SHARED = next(
    (
        Path(d)
        for d in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep)
        if d and (Path(d) / "originals").is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared" / "data",
)
ORIGINALS = SHARED / "originals"
#: dataset -> folder of its originals (under tests/data/sources and ../shared/data/originals)
FOLDERS = {"snareseq2_mop": "scmomat_mop", "granja2019_bmmc": "epichaos", "pbmc_multiome_1k": "muon"}


def _serve(server, dataset: str, source_root: Path, *, use_registered_hash: bool = False) -> list[str]:
    """Put ``dataset``'s originals behind the 127.0.0.1 server and point its source entries there."""
    url, root, requests = server
    folder = FOLDERS[dataset]
    (root / folder).symlink_to(source_root / folder, target_is_directory=True)
    for source in _registry.REGISTRY[dataset].sources:
        original = source.split(":", 1)[1]
        entry = _registry.REGISTRY[source]
        sha = (
            entry.sha256
            if use_registered_hash
            else hashlib.sha256((source_root / folder / original).read_bytes()).hexdigest()
        )
        hc.data.register(source, entry.filename, sha, url=f"{url}{folder}/{original}", kind="source")
    return requests


def _load(dataset: str):
    return getattr(hc.data, dataset)(progressbar=False)


def assert_same_data(left, right) -> None:
    """Same modalities, matrices (values, dtype, sparse format), obs / var tables, obsm and provenance."""
    pairs = [(left[k], right[k]) for k in right.mod] if isinstance(right, md.MuData) else [(left, right)]
    if isinstance(right, md.MuData):
        assert list(left.mod) == list(right.mod)
        pd.testing.assert_frame_equal(left.obs, right.obs, check_exact=True)
    for a, b in pairs:
        assert a.shape == b.shape and type(a.X) is type(b.X) and a.X.dtype == b.X.dtype
        assert (a.X != b.X).nnz == 0
        pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
        pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
        assert set(a.obsm) == set(b.obsm)
        for key in b.obsm:
            np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    assert left.uns["provenance"] == right.uns["provenance"]


# ------------------------------------------------------------------------- slices in tests/data
@pytest.mark.parametrize("dataset", sorted(FOLDERS))
def test_loader_downloads_checks_converts_and_caches(dataset, server, cache):
    requests = _serve(server, dataset, SLICES)
    data = _load(dataset)
    sources = _registry.REGISTRY[dataset].sources
    assert sorted(requests) == sorted(f"/{FOLDERS[dataset]}/{s.split(':', 1)[1]}" for s in sources)
    converted = cache / _registry.REGISTRY[dataset].filename
    stamp = json.loads((cache / f"{converted.name}.json").read_text())
    assert stamp["sha256"] == hc.data._registry.sha256sum(converted)
    assert stamp["sources"] == {s: _registry.REGISTRY[s].sha256 for s in sources}
    # what the loader returns is what reading the cached file gives
    reread = md.read_h5mu(converted) if converted.suffix == ".h5mu" else ad.read_h5ad(converted)
    assert_same_data(data, reread)
    # the second call reads the cache: no request, same data
    assert_same_data(_load(dataset), data)
    assert len(requests) == len(sources)


def test_snareseq2_slice_converted_as_published(server, cache):
    _serve(server, "snareseq2_mop", SLICES)
    mdata = _load("snareseq2_mop")
    meta = pd.read_csv(SLICES / "scmomat_mop" / "meta_c1.csv", index_col=0)
    genes = (SLICES / "scmomat_mop" / "genes.txt").read_text().split()
    regions = (SLICES / "scmomat_mop" / "regions.txt").read_text().split()
    assert mdata.obs_names.tolist() == meta.index.tolist()
    assert mdata["rna"].var_names.tolist() == genes
    # peaks: chr_start_end -> chr:start-end with the coordinates in var
    atac_var = mdata["atac"].var
    assert [
        f"{c}_{s}_{e}" for c, s, e in zip(atac_var["chrom"], atac_var["start"], atac_var["end"], strict=True)
    ] == regions
    assert atac_var.index[0] == regions[0].replace("_", ":", 1).replace("_", "-")
    # counts: the published features x cells matrices, transposed, as float32 CSR
    gxc = sp.load_npz(SLICES / "scmomat_mop" / "GxC1.npz")
    assert mdata["rna"].X.dtype == np.float32 and sp.isspmatrix_csr(mdata["rna"].X)
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), gxc.T.toarray())
    assert mdata.obs["batch"].tolist() == meta["Batch"].tolist()
    assert mdata.obs["cell_type"].tolist() == meta["cluster (remapped)"].tolist()
    assert mdata.obs["cell_type_fine"].tolist() == meta["Ident"].tolist()


def test_granja_slice_read_from_r_data(server, cache):
    _serve(server, "granja2019_bmmc", SLICES)
    adata = _load("granja2019_bmmc")
    assert adata.shape == (40, 200)
    assert sorted(set(adata.obs["batch"])) == ["BMMC_D5T1", "BMMC_D6T1"]
    assert (adata.obs["batch"].value_counts() == 20).all()
    assert adata.var_names[0] == "chr5:180470204-180470704"  # GRanges start and end (start + width - 1)
    assert (adata.var["end"] - adata.var["start"] == 500).all()
    assert adata.var["name"].astype(str).str.count("_").eq(2).all()
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32 and adata.X.nnz > 0
    assert np.allclose(adata.X.data, np.round(adata.X.data))
    np.testing.assert_array_equal(adata.obsm["X_umap_orig"][:, 0], adata.obs["UMAP1"].to_numpy())


def test_tampered_original_is_refused_and_nothing_is_converted(server, cache, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(SLICES / "epichaos", tampered / "epichaos")
    requests = _serve(server, "granja2019_bmmc", SLICES)  # registered: hash of the true slice
    (server[1] / "epichaos").unlink()
    (server[1] / "epichaos").symlink_to(tampered / "epichaos", target_is_directory=True)
    data = bytearray((tampered / "epichaos" / "hemato.rda").read_bytes())
    data[-1] ^= 1
    (tampered / "epichaos" / "hemato.rda").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 does not match"):
        _load("granja2019_bmmc")
    assert requests == ["/epichaos/hemato.rda"]
    assert not cache.exists() or not [p for p in cache.iterdir() if p.suffix in (".h5ad", ".json")]


def test_damaged_or_stale_conversion_is_redone_from_cached_originals(server, cache):
    requests = _serve(server, "pbmc_multiome_1k", SLICES)
    first = _load("pbmc_multiome_1k")
    converted = cache / _registry.REGISTRY["pbmc_multiome_1k"].filename
    stamp = cache / f"{converted.name}.json"
    converted.write_bytes(b"damaged")
    assert_same_data(_load("pbmc_multiome_1k"), first)
    record = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**record, "converter_version": -1}))
    assert_same_data(_load("pbmc_multiome_1k"), first)
    assert json.loads(stamp.read_text())["converter_version"] == record["converter_version"]
    assert len(requests) == 1  # the original was downloaded once; reconversions read the cache


def test_local_converted_copy_wins_and_sends_no_request(server, cache, tmp_path, monkeypatch):
    requests = _serve(server, "pbmc_multiome_1k", SLICES)
    data = _load("pbmc_multiome_1k")
    local = tmp_path / "local"
    local.mkdir()
    entry = _registry.REGISTRY["pbmc_multiome_1k"]
    shutil.copy(cache / entry.filename, local / entry.filename)
    # this conversion's bytes stand in for the reference copy (the registered hash is the reference's)
    _registry.REGISTRY["pbmc_multiome_1k"] = replace(
        entry, sha256=hc.data._registry.sha256sum(local / entry.filename)
    )
    shutil.rmtree(cache)
    monkeypatch.setenv(DATA_DIR_ENV, str(local))
    assert hc.data.fetch("pbmc_multiome_1k") == local / entry.filename
    assert_same_data(_load("pbmc_multiome_1k"), data)
    assert len(requests) == 1 and not cache.exists()


def test_sources_are_pinned_public_urls_and_not_listed_as_datasets():
    for dataset in FOLDERS:
        entry = REGISTRY[dataset]
        assert entry.sources and entry.kind == "dataset"
        for source in entry.sources:
            url = REGISTRY[source].url
            assert url.startswith("https://raw.githubusercontent.com/") and REGISTRY[source].kind == "source"
            commit = url.split("/")[5]
            assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    assert not set(hc.data.available()) & set(hc.data.available("source"))
    assert set(FOLDERS) <= set(hc.data.available("dataset"))


# ------------------------------------------------------------------------- the real originals
@pytest.mark.skipif(
    not ORIGINALS.is_dir(),
    reason=f"{ORIGINALS} is not here (with HOLOCELL_TEST_DOWNLOADS=1, test_chromatin_data.py compares downloads)",
)
@pytest.mark.parametrize("dataset", sorted(FOLDERS))
def test_real_originals_convert_to_the_benchmark_copies(dataset, server, cache):
    """The public originals (served from 127.0.0.1) convert to exactly the copies in ../shared/data."""
    requests = _serve(server, dataset, ORIGINALS, use_registered_hash=True)
    data = _load(dataset)
    assert len(requests) == len(_registry.REGISTRY[dataset].sources)
    reference = SHARED / _registry.REGISTRY[dataset].filename
    assert_same_data(
        data, md.read_h5mu(reference) if reference.suffix == ".h5mu" else ad.read_h5ad(reference)
    )
