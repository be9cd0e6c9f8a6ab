"""Prior-knowledge matrices (gene x k, aligned to the model's anchors): GRN, gene family, TSS position, co-expression."""

from ._coexpression import coexpression_prior
from ._family import family_prior, load_gene_families
from ._grn import grn_prior, load_grn_edges
from ._loader import PRIOR_INPUT_DIMS, PRIORS, check_prior_names, load_priors
from ._matrix import PriorMatrix
from ._position import position_prior

__all__ = [
    "PRIORS",
    "PRIOR_INPUT_DIMS",
    "PriorMatrix",
    "check_prior_names",
    "coexpression_prior",
    "family_prior",
    "grn_prior",
    "load_gene_families",
    "load_grn_edges",
    "load_priors",
    "position_prior",
]
