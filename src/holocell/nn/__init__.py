"""Torch components: the gene-anchored transformer, the masked-diffusion objective and sampler."""

from ._diffusion import LossOutput, NoisedTokens, add_noise, diffusion_loss, sample_times
from ._module import HoloCellModule
from ._sampler import Generated, generate_modality
from .transformer import HoloCellNetwork, NetworkConfig

__all__ = [
    "Generated",
    "HoloCellModule",
    "HoloCellNetwork",
    "LossOutput",
    "NetworkConfig",
    "NoisedTokens",
    "add_noise",
    "diffusion_loss",
    "generate_modality",
    "sample_times",
]
