"""Deprecated: the tools moved to :mod:`holocell.tl` (this module forwards to it, with a DeprecationWarning)."""

from __future__ import annotations

import warnings

_MOVED = {
    "annotate": "holocell.tl._annotate",
    "transfer_labels": "holocell.tl._annotate",
    "fate_shift": "holocell.tl._fate",
    "grn": "holocell.tl._grn",
    "default_tfs": "holocell.tl._grn",
    "perturb": "holocell.tl._perturb",
    "summarize_shifts": "holocell.tl._perturb",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'holocell.tools' has no attribute {name!r}")
    import importlib

    warnings.warn(
        f"holocell.tools is deprecated; use {_MOVED[name]}.{name} (the tools are holocell.tl).",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
