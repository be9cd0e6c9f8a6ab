"""AnnData/MuData-side logic of the downstream tools (perturbation, GRN, annotation, cell fate).

Each function lives in a module of its own and is re-exported by :mod:`holocell.tl`.
"""

from ._annotate import annotate, transfer_labels
from ._fate import fate_shift
from ._grn import grn
from ._perturb import perturb, summarize_shifts

__all__ = ["annotate", "fate_shift", "grn", "perturb", "summarize_shifts", "transfer_labels"]
