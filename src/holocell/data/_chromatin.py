"""Real single-cell chromatin data sets, fetched through the registry and read like a user's own file.

Each loader calls :func:`holocell.data.fetch`: a converted copy in ``$HOLOCELL_DATA_DIR`` (checked
against its sha256), else the conversion cached earlier, else the original public files (pinned
commits of the source repositories) are downloaded with pooch, checked against their sha256 and
converted to ``.h5mu`` / ``.h5ad`` once into the cache. The loader then reads that file with
``mudata``/``anndata``, nothing else: what you get is what ``mudata.read_h5mu(path)`` gives for the
same file. Provenance and licences are in each object's ``.uns["provenance"]`` and in ``docs/data.md``.
"""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md

from ._registry import fetch

__all__ = ["granja2019_bmmc", "pbmc_multiome_1k", "snareseq2_mop"]


def _read_h5mu(name: str, progressbar: bool) -> md.MuData:
    path = fetch(name, progressbar=progressbar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mudata 0.3: pull-on-update notice
        return md.read_h5mu(path)


def snareseq2_mop(*, progressbar: bool = True) -> md.MuData:
    """Mouse primary motor cortex SNARE-seq2 (mm10): paired RNA + ATAC of 10,309 cells.

    Modalities ``rna`` (1,677 marker genes, mouse symbols, raw counts in ``.X``) and ``atac``
    (25,734 peaks named ``chr:start-end`` with ``var`` columns ``chrom``, ``start``, ``end``;
    counts 1-5 in ``.X``). Global ``obs``: ``batch`` (12 libraries ``09A``-``09L``), ``cell_type``
    (15 types) and ``cell_type_fine`` (23 types). Every cell has both modalities.

    Set it up with ``genome="mm10"`` and ``species="mouse"``::

        mdata = hc.data.snareseq2_mop()
        hc.HoloCell.setup_mudata(mdata, modalities={"rna": "rna", "atac": "atac"},
                                 batch_key="batch", species="mouse", genome="mm10")

    Source: BICCN SNARE-seq2 (Bakken et al. 2021) as distributed by scMoMaT (GitHub PeterZZQ/scMoMaT,
    ``data/real/MOp_5batches``, MIT licence): the files ``RxC1.npz``, ``GxC1.npz``, ``meta_c1.csv``,
    ``genes.txt`` and ``regions.txt`` at commit ``dbd954de``, about 5.8 MB, converted to h5mu once.

    Parameters
    ----------
    progressbar
        Show a progress bar if the original files have to be downloaded.

    Returns
    -------
    A new :class:`~mudata.MuData` (each call reads the file again).
    """
    return _read_h5mu("snareseq2_mop", progressbar)


def granja2019_bmmc(*, progressbar: bool = True) -> ad.AnnData:
    """Human bone-marrow scATAC (hg19, Granja et al. 2019): 14,125 cells x 10,000 peaks, two donors.

    Returned as an :class:`~anndata.AnnData` (the file holds one modality): raw counts in ``.X``,
    peaks named ``chr:start-end`` (500 bp) with ``var`` columns ``chrom``, ``start``, ``end``;
    ``obs["batch"]`` is the donor (``BMMC_D5T1``, ``BMMC_D6T1``) and ``obs["cell_type"]`` one of 16
    cluster labels of the original study. Wrap it for holocell with
    ``mudata.MuData({"atac": adata})`` and set it up with ``genome="hg19"``.

    Source: the ``hemato.rda`` data of epiCHAOS (GitHub CompEpigen/epiCHAOS at commit ``6a299c5e``, MIT
    licence, 3.4 MB), derived from the 10x scATAC of healthy bone marrow in Granja et al., Nat.
    Biotechnol. 2019; read with the pure-Python ``rdata`` package (no R needed) and converted to h5ad once.

    Parameters
    ----------
    progressbar
        Show a progress bar if the original files have to be downloaded.

    Returns
    -------
    A new :class:`~anndata.AnnData`.
    """
    path = fetch("granja2019_bmmc", progressbar=progressbar)
    return ad.read_h5ad(path)


def pbmc_multiome_1k(*, progressbar: bool = True) -> md.MuData:
    """Tiny human PBMC 10x Multiome fixture (GRCh38): 1,000 cells, 45 genes + 174 peaks, no labels.

    Modalities ``rna`` (gene symbols as names, Ensembl ids in ``var["gene_ids"]``) and ``atac``
    (peaks named ``chr:start-end``), raw counts in ``.X``. Meant for quick checks and examples; set
    it up with ``genome="hg38"``.

    Source: muon's test data (GitHub scverse/muon at commit ``03c762e5``,
    ``tests/data/atac/test_rna_atac.h5mu``, BSD-3 licence), stored once with its provenance.

    Parameters
    ----------
    progressbar
        Show a progress bar if the original files have to be downloaded.

    Returns
    -------
    A new :class:`~mudata.MuData`.
    """
    return _read_h5mu("pbmc_multiome_1k", progressbar)
