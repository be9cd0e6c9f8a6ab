"""Converters from the real data sets' original public files to ``.h5mu`` / ``.h5ad``.

Each function reads the original files exactly as their authors published them (numpy ``.npz``
sparse matrices and text tables of scMoMaT, the R data file of epiCHAOS, muon's ``.h5mu``) and
returns the AnnData / MuData that :mod:`holocell.data` caches and the loaders return. The result is
the same object as the copies in ``../shared/data`` that the benchmarks were run on
(``tests/test_data_sources.py`` compares them).

``hemato.rda`` is read with ``rdata`` (pure Python, a dependency of holocell); nothing here runs R.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["convert_epichaos_hemato", "convert_muon_multiome", "convert_scmomat_mop"]

#: Bumped whenever a converter's output changes, so cached conversions are redone.
CONVERTER_VERSION = 1

PROVENANCE = {
    "snareseq2_mop": (
        "PeterZZQ/scMoMaT data/real/MOp_5batches/{RxC1,GxC1}.npz + meta_c1.csv + regions.txt + genes.txt (MIT). "
        "Batch 1 of MOp: SNARE-seq2 paired RNA+ATAC, mouse primary motor cortex (BICCN; Bakken et al. 2021), "
        "mm10; 12 libraries 09A-09L; RNA restricted to 1,677 marker genes; raw counts."
    ),
    "granja2019_bmmc": (
        "CompEpigen/epiCHAOS data/hemato.rda (MIT). Subset of Granja et al. 2019 (Nat Biotech) healthy BMMC 10x "
        "scATAC (donors BMMC_D5T1, BMMC_D6T1), hg19, 10,000 random 500bp peaks, raw counts, ArchR-style "
        "BioClassification labels."
    ),
    "pbmc_multiome_1k": (
        "scverse/muon git history tests/data/atac/test_rna_atac.h5mu (blob 6e43e19b, 2020-12-17, BSD-3). 1,000 "
        "cells from 10x PBMC 10k Multiome (GRCh38), 174 peaks + 45 genes, raw counts; fragments file "
        "tests/data/atac/test_rna_atac_fragments.tsv.gz (blob a97d4752) copied alongside."
    ),
}


def _load_npz_csr(path: Path) -> sp.csr_matrix:
    """A scipy sparse matrix saved with ``scipy.sparse.save_npz`` (read without unpickling)."""
    with np.load(path, allow_pickle=False) as z:
        fmt = z["format"].item().decode() if z["format"].dtype.kind == "S" else str(z["format"])
        shape = tuple(int(n) for n in z["shape"])
        parts = (z["data"], z["indices"], z["indptr"])
    if fmt == "csr":
        return sp.csr_matrix(parts, shape=shape)
    if fmt == "csc":
        return sp.csc_matrix(parts, shape=shape).tocsr()
    raise ValueError(f"{path.name}: expected a CSR or CSC matrix saved by scipy, found format {fmt!r}.")


def _natural(chroms: pd.Series) -> list[str]:
    """Chromosome names in natural order (chr1, chr2, ..., chr10, ..., chrX)."""

    def key(name: str) -> tuple[int, int, str]:
        rest = name.removeprefix("chr")
        return (0, int(rest), "") if rest.isdigit() else (1, 0, rest)

    return sorted(pd.unique(chroms), key=key)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def convert_scmomat_mop(paths: Mapping[str, Path]) -> md.MuData:
    """SNARE-seq2 of mouse motor cortex from scMoMaT's ``data/real/MOp_5batches`` files.

    Parameters
    ----------
    paths
        Local paths of ``RxC1.npz`` (peaks x cells), ``GxC1.npz`` (genes x cells), ``meta_c1.csv``,
        ``genes.txt`` and ``regions.txt``, keyed by those file names.

    Returns
    -------
    MuData with ``rna`` (raw counts, float32 CSR) and ``atac`` (peaks ``chr:start-end`` with ``var``
    columns ``chrom``, ``start``, ``end``); ``obs`` ``batch``, ``cell_type`` and ``cell_type_fine``.
    """
    meta = pd.read_csv(paths["meta_c1.csv"], index_col=0)
    genes, regions = _lines(paths["genes.txt"]), _lines(paths["regions.txt"])
    rna = _load_npz_csr(paths["GxC1.npz"]).T.tocsr().astype(np.float32)
    atac = _load_npz_csr(paths["RxC1.npz"]).T.tocsr().astype(np.float32)
    if rna.shape != (len(meta), len(genes)) or atac.shape != (len(meta), len(regions)):
        raise ValueError(
            f"scMoMaT files disagree: {len(meta)} cells in meta_c1.csv, {len(genes)} genes, {len(regions)} "
            f"regions, GxC1 {rna.shape[::-1]}, RxC1 {atac.shape[::-1]} (features x cells)."
        )
    obs = pd.DataFrame(
        {
            "batch": meta["Batch"].astype(str).to_numpy(),
            "Barcode": meta["Barcode"].astype(str).to_numpy(),
            "cell_type_fine": meta["Ident"].astype(str).to_numpy(),
            "cell_type": meta["cluster (remapped)"].astype(str).to_numpy(),
        },
        index=pd.Index(meta.index.astype(str), name=None),
    ).astype("category")
    parts = pd.Series(regions).str.rsplit("_", n=2, expand=True)
    peak_var = pd.DataFrame(
        {
            "chrom": pd.Categorical(parts[0], categories=_natural(parts[0])),
            "start": parts[1].astype(np.int64),
            "end": parts[2].astype(np.int64),
        }
    )
    peak_var.index = pd.Index((parts[0] + ":" + parts[1] + "-" + parts[2]).to_numpy(), name=None)
    mods = {
        "rna": ad.AnnData(rna, obs=obs.copy(), var=pd.DataFrame(index=pd.Index(genes, name=None))),
        "atac": ad.AnnData(atac, obs=obs.copy(), var=peak_var),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
        for key in ("batch", "cell_type", "cell_type_fine"):
            mdata.obs[key] = obs[key].to_numpy()
            mdata.obs[key] = mdata.obs[key].astype("category")
    mdata.uns["provenance"] = PROVENANCE["snareseq2_mop"]
    return mdata


def _rle(rle) -> np.ndarray:
    """Expand an S4Vectors ``Rle`` read by rdata (``values``, ``lengths``)."""
    return np.repeat(np.asarray(rle.values, dtype=object), np.asarray(rle.lengths, dtype=np.int64))


def _r_text(values) -> np.ndarray:
    """Doubles as written by R (15 significant digits) and read back by pandas' CSV parser.

    The benchmark copies in ``../shared/data`` were made through that text form; reading the same
    text the same way gives the identical doubles (pandas' default parser is not always the nearest
    double, so ``float(text)`` would differ in the last bit for a few values).
    """
    text = "\n".join(f"{v:.15g}" for v in np.asarray(values, dtype=np.float64))
    return pd.read_csv(io.StringIO(text), header=None, dtype=np.float64)[0].to_numpy()


def _strings(values) -> np.ndarray:
    return np.asarray(values).astype(str).astype(object)


def convert_epichaos_hemato(path: Path) -> ad.AnnData:
    """Granja et al. 2019 bone-marrow scATAC from epiCHAOS's ``data/hemato.rda``.

    The R list ``hemato`` holds ``counts`` (a ``dgCMatrix``, peaks x cells), ``meta`` (an S4Vectors
    ``DataFrame`` of the cells) and ``ranges`` (a ``GRanges`` of the peaks).

    Parameters
    ----------
    path
        Local path of ``hemato.rda``.

    Returns
    -------
    AnnData of raw counts (float32 CSR), peaks named ``chr:start-end`` with the ``GRanges`` columns
    in ``var``, ``obs["batch"]`` (donor) and ``obs["cell_type"]`` (BioClassification), and the
    study's UMAP in ``obsm["X_umap_orig"]``.
    """
    import rdata

    with warnings.catch_warnings():
        # "Missing constructor for R class ...": S4 objects come back as namespaces, as wanted
        warnings.simplefilter("ignore")
        hemato = rdata.read_rda(path)["hemato"]
    counts, meta, ranges = hemato["counts"], hemato["meta"], hemato["ranges"]
    n_peaks, n_cells = (int(n) for n in counts.Dim)
    x = sp.csc_matrix(
        (np.asarray(counts.x, dtype=np.float32), np.asarray(counts.i), np.asarray(counts.p)),
        shape=(n_peaks, n_cells),
    )
    columns = {str(k): np.asarray(v) for k, v in meta.listData.items()}
    obs = pd.DataFrame(index=pd.Index(_strings(meta.rownames), name=None))
    renamed = {"Group": "batch", "BioClassification": "cell_type"}
    for key, values in columns.items():
        if values.dtype.kind in "US":
            obs[renamed.get(key, key)] = pd.Categorical(_strings(values))
        elif values.dtype.kind == "i":
            obs[renamed.get(key, key)] = values.astype(np.int64)
        else:
            obs[renamed.get(key, key)] = _r_text(values)
    starts = np.asarray(ranges.ranges.start, dtype=np.int64)
    ends = starts + np.asarray(ranges.ranges.width, dtype=np.int64) - 1
    chrom = _rle(ranges.seqnames).astype(str)
    var = pd.DataFrame(
        {"name": pd.Categorical(_strings(ranges.ranges.NAMES)), "chrom": pd.Categorical(chrom)},
        index=pd.Index([f"{c}:{s}-{e}" for c, s, e in zip(chrom, starts, ends, strict=True)], name=None),
    )
    var["start"], var["end"] = starts, ends
    for key, values in ranges.elementMetadata.listData.items():
        values = np.asarray(values)
        key = "name.1" if str(key) == "name" else str(key)
        var[key] = pd.Categorical(_strings(values)) if values.dtype.kind in "US" else _r_text(values)
    adata = ad.AnnData(x.T.tocsr(), obs=obs, var=var)
    adata.obsm["X_umap_orig"] = np.column_stack([obs["UMAP1"].to_numpy(), obs["UMAP2"].to_numpy()])
    adata.uns["provenance"] = PROVENANCE["granja2019_bmmc"]
    return adata


def convert_muon_multiome(path: Path) -> md.MuData:
    """muon's 10x PBMC multiome test file, read with mudata and labelled with its provenance.

    Parameters
    ----------
    path
        Local path of muon's ``tests/data/atac/test_rna_atac.h5mu``.

    Returns
    -------
    The file's MuData (``rna`` + ``atac``, raw counts) with ``uns["provenance"]``; the fragments path
    in ``atac.uns["files"]`` is made relative to muon's ``tests`` folder, where the file lives.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # muon's own test file, written before mudata stamped its files: expected, not the user's concern
        warnings.filterwarnings("ignore", message="The HDF5 file was not created by muon", category=UserWarning)
        mdata = md.read_h5mu(path)
    files = mdata["atac"].uns.get("files", {}) if "atac" in mdata.mod else {}
    if isinstance(files.get("fragments"), str):
        files["fragments"] = files["fragments"].removeprefix("tests/")
    mdata.uns["provenance"] = PROVENANCE["pbmc_multiome_1k"]
    return mdata
