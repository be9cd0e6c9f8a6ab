"""Torch components: the gene-anchored transformer, the masked-diffusion objective and the sampler."""

from ._diffusion import (
    LossOutput,
    NoisedTokens,
    ObjectiveConfig,
    add_noise,
    diffusion_loss,
    objective,
    sample_times,
)
from ._module import HoloCellModule
from ._noise import RowNoise
from ._perturb import PerturbedBatch, SlotEdit, apply_edits, perturb_staged, perturb_tokens
from ._sampler import Generated, Sampled, sample
from ._sampler import generate_modality as generate_modality  # deprecated, not in __all__
from .transformer import HoloCellNetwork, NetworkConfig

__all__ = [
    "Generated",
    "HoloCellModule",
    "HoloCellNetwork",
    "LossOutput",
    "NetworkConfig",
    "NoisedTokens",
    "ObjectiveConfig",
    "PerturbedBatch",
    "RowNoise",
    "Sampled",
    "SlotEdit",
    "add_noise",
    "apply_edits",
    "diffusion_loss",
    "objective",
    "perturb_staged",
    "perturb_tokens",
    "sample",
    "sample_times",
]
