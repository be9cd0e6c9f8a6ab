"""Functional API in the style of ``scanpy.tl`` / ``muon.tl``.

Every function has the signature ``(mdata, model, *, ..., key_added=..., copy=False)``: it writes its
results into the MuData in place (the documented ``.obsm`` / ``.mod`` / ``.obs`` / ``.uns[key_added]``
keys) and returns ``None``, or works on and returns a copy when ``copy=True``.
"""

from ._annotate import annotate
from ._embed import embed
from ._fate import fate_shift
from ._generate import generate
from ._grn import grn
from ._perturb import perturb

__all__ = ["annotate", "embed", "fate_shift", "generate", "grn", "perturb"]
