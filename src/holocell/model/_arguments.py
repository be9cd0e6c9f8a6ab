"""Checks of the arguments a user passes to :class:`~holocell.HoloCell`, before anything is built from them.

The same rules as a checkpoint's config (:mod:`._config_check`): a size that is not an integer, a weight that is
a string, NaN or infinite, or a probability outside [0, 1] is refused with a message that names the argument,
instead of failing deep inside torch or silently training on NaN. numpy scalars count as Python numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ._config_check import INIT_PARAMS, OBJECTIVE, check_section

_HINT = "Pass a value of that type and range to HoloCell(...) (see its docstring)."
#: Constructor arguments checked here (the others have checks of their own: priors, feature space, batches).
_CHECKED = ("d_model", "n_layers", "n_heads", "n_latents", "n_bins", "dropout", "p_drop_modality", "align_weight",
            "read_in_tokens", "n_latent", "seed")  # fmt: skip


def _plain(value):
    """numpy scalars as Python numbers; anything else unchanged."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def check_arguments(arguments: Mapping, objective_kwargs: Mapping) -> dict:
    """Check the constructor's ``arguments`` and the ``objective_kwargs`` it forwards to
    :class:`~holocell.nn.ObjectiveConfig`; raise a ``ValueError`` naming the first bad one.

    Returns the objective keyword arguments with numpy scalars turned into Python numbers (unknown keys are
    left for :meth:`~holocell.nn.ObjectiveConfig.from_dict` to refuse).
    """
    init = {k: _plain(arguments[k]) for k in _CHECKED if k in arguments}
    check_section(init, [r for r in INIT_PARAMS if r.key in _CHECKED], "HoloCell()", partial=True, hint=_HINT)
    # types and finiteness here; ranges and choices by ObjectiveConfig, whose messages say what each field is
    types_only = [replace(r, low=None, high=None, choices=()) for r in OBJECTIVE]
    known = {r.key for r in OBJECTIVE}
    objective = {k: _plain(v) for k, v in objective_kwargs.items()}
    check_section({k: v for k, v in objective.items() if k in known}, types_only, "HoloCell()", partial=True,
                  hint=_HINT)  # fmt: skip
    return objective


__all__ = ["check_arguments"]
