"""The bundled human PBMC mosaic CITE-seq data set."""

from __future__ import annotations

import warnings
from pathlib import Path

import mudata as md

_FILE = Path(__file__).resolve().parent / "_files" / "pbmc_cite_mosaic.h5mu"


def pbmc_cite_mosaic() -> md.MuData:
    """Real human PBMC CITE-seq in a mosaic layout (1,600 cells), shipped with holocell.

    Four batches of 400 cells: ``p1_0`` RNA only, ``p2_0`` protein only, ``p3_0`` and ``p4_0``
    paired. Modalities ``rna`` (500 highly variable genes, symbols) and ``adt`` (224 antibodies),
    raw integer counts in ``.X``; the modalities really lack the cells they lack
    (``mdata.obsm["rna"]`` / ``["adt"]`` say which). ``obs["celltype"]`` holds 8 cell types and
    ``obs["batch"]`` the batch, in the global ``obs`` and in each modality.

    Source: the ``quickstart_pbmc_mosaic.h5mu`` example of the MIT-licensed ``scmidas`` 0.3.0
    package (MIDAS, He et al. 2024); see ``holocell/data/_files/README.md``.

    Returns
    -------
    A new MuData read from the package (each call returns a fresh object).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.read_h5mu(_FILE)
