"""Bundled real data, the multi-omics simulator and data plumbing."""

from ._pbmc import pbmc_cite_mosaic
from ._simulate import SimulationTruth, simulate_multiome

__all__ = ["SimulationTruth", "pbmc_cite_mosaic", "simulate_multiome"]
