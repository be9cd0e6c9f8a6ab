"""The names by which data sets commonly call holocell's modalities (``adt`` for protein, ``gex`` for RNA, ...).

One table for every place that reads a MuData without being told its modalities: the command line (when
``--modalities`` is not given) and :func:`holocell.data.merge_datasets` (when ``modalities=`` is not given).
"""

from __future__ import annotations

from collections.abc import Iterable

#: holocell modality -> the ``mdata.mod`` keys (lower-cased) read as it when no mapping is given
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "rna": ("rna", "gex", "expression", "genes"),
    "atac": ("atac", "peaks", "chromatin"),
    "protein": ("protein", "prot", "adt", "cite"),
}


def recognised_modalities(names: Iterable[str]) -> dict[str, str]:
    """holocell modality -> the first of ``names`` (``mdata.mod`` keys) that is one of its aliases (any case)."""
    names = list(names)
    found = {}
    for m, aliases in MODALITY_ALIASES.items():
        for name in names:
            if str(name).lower() in aliases:
                found[m] = name
                break
    return found


__all__ = ["MODALITY_ALIASES", "recognised_modalities"]
