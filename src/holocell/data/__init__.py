"""Bundled real data, the multi-omics simulator, the download registry and data plumbing."""

from ._chromatin import granja2019_bmmc, pbmc_multiome_1k, snareseq2_mop
from ._holdout import hold_out
from ._merge import merge_datasets
from ._pbmc import pbmc_cite_mosaic
from ._registry import REGISTRY, available, cache_dir, fetch, fetch_url, register
from ._simulate import SimulationTruth, simulate_multiome

__all__ = [
    "REGISTRY",
    "SimulationTruth",
    "available",
    "cache_dir",
    "fetch",
    "fetch_url",
    "granja2019_bmmc",
    "hold_out",
    "merge_datasets",
    "pbmc_cite_mosaic",
    "pbmc_multiome_1k",
    "register",
    "simulate_multiome",
    "snareseq2_mop",
]
