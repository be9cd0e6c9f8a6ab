"""Bundled real data, the multi-omics simulator, the download registry and data plumbing."""

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
    "pbmc_cite_mosaic",
    "register",
    "simulate_multiome",
]
