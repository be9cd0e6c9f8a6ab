"""Checks of the ``hc.pl`` functions' inputs, run before anything is drawn or saved.

Each names what is missing (a modality, an ``obs`` column, a table column), lists what there is, and says how
to make it, instead of the bare ``KeyError`` pandas or mudata would raise half-way through a plot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..model._args import check_count
from ..model._counts import INTEGER_TOLERANCE, value_chunks
from ..model._obs_copy import obs_copy_fix

if TYPE_CHECKING:
    import anndata as ad
    from mudata import MuData

#: how many existing names a message lists
_N_SHOWN = 10


def shown(names: Iterable) -> str:
    """The first few of ``names`` as a list for a message (with ``...`` when there are more)."""
    names = [str(n) for n in names]
    more = ", ..." if len(names) > _N_SHOWN else ""
    return "[" + ", ".join(repr(n) for n in names[:_N_SHOWN]) + more + "]"


def require_modality(mdata: MuData, name: str, *, arg: str, how: str) -> ad.AnnData:
    """``mdata.mod[name]``; ``TypeError`` when ``mdata`` is no MuData or ``name`` no str, ``KeyError`` naming the
    modality, the modalities ``mdata`` has and ``how`` to make it when it is missing.

    Parameters
    ----------
    mdata
        The MuData passed to the plot.
    name
        Name of the modality.
    arg
        The argument(s) that named it (``"generated="``), for the message.
    how
        How to make the modality or what to pass instead, e.g. ``"run model.generate(...) first"``.
    """
    if not hasattr(mdata, "mod"):
        raise TypeError(
            f"mdata must be a MuData (its modality {name!r} is read), got {type(mdata).__name__}."
        )
    if not isinstance(name, str):
        raise TypeError(f"{arg} must name (str) a modality in mdata.mod, got {type(name).__name__}.")
    if name not in mdata.mod:
        raise KeyError(f"mdata.mod has no {name!r} (from {arg}); it has {shown(mdata.mod)}. {how}")
    return mdata.mod[name]


def require_obs_column(mdata: MuData, key: str, *, arg: str) -> None:
    """``KeyError`` naming ``key`` and a few existing columns when ``mdata.obs`` has no column ``key``; when a
    modality's own ``.obs`` holds it (e.g. after ``sc.tl.leiden(mdata["rna"])``), how to reach it instead."""
    if not hasattr(mdata, "obs"):
        raise TypeError(
            f"mdata must be a MuData (its obs column {key!r} is read), got {type(mdata).__name__}."
        )
    obs = mdata.obs
    if not isinstance(key, str) or key not in obs.columns:
        fix = obs_copy_fix(mdata, key, arg, partial_ok=True) if hasattr(mdata, "mod") else ""
        raise KeyError(
            f"mdata.obs has no column {key!r} ({arg}=); its columns include {shown(obs.columns)}. "
            + (f"{fix}." if fix else f"Pass the name of a column of mdata.obs (e.g. the cell type), or {arg}=None.")
        )


def require_unique(names: pd.Index, *, what: str, fix: str) -> None:
    """``ValueError`` naming the repeated entries of ``names`` (``what``: whose names they are, for the message)
    and ``fix`` (e.g. ``"adata.var_names_make_unique()"``): a repeated name pairs values by position wrongly or
    not at all."""
    repeated = names[names.duplicated()]
    if len(repeated):
        raise ValueError(
            f"Repeated names in {what}: {shown(pd.unique(repeated.astype(str)))}. The plot pairs values by name, so "
            f"each name must be unique; make them unique first: {fix}."
        )


def require_table(table, columns: Iterable[str], *, arg: str, what: str) -> pd.DataFrame:
    """``table`` when it is a DataFrame with ``columns``; ``TypeError`` / ``ValueError`` saying what is expected.

    Parameters
    ----------
    table
        The object passed.
    columns
        Columns the plot reads.
    arg
        The argument, for the message.
    what
        The expected table and where it is stored, e.g. ``"the table hc.tl.grn writes to mdata.uns['holocell_grn']"``.
    """
    columns = list(columns)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{arg} must be a DataFrame: {what}; got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{arg} has no columns {missing} (it has {shown(table.columns)}); expected {what}, with columns {columns}."
        )
    return table


def model_table(model, attribute: str, *, fallback: str) -> pd.DataFrame | None:
    """``model`` when it is a DataFrame, else the model's ``attribute`` (``None`` when unset); ``TypeError``
    when ``model`` is neither a DataFrame nor a :class:`~holocell.HoloCell` (``fallback``: what else to pass)."""
    from ..model import HoloCell

    if isinstance(model, pd.DataFrame):
        return model
    if not isinstance(model, HoloCell):
        raise TypeError(f"model must be a HoloCell or {fallback}, got {type(model).__name__}.")
    return getattr(model, attribute, None)


def require_counts(x, *, what: str, target: str) -> None:
    """``ValueError`` unless the measured values ``x`` are raw counts, the rule of
    :meth:`holocell.HoloCell.setup_mudata`: finite, non-negative and (RNA, protein) integers.

    The plots transform the measured counts themselves (CLR, log1p CP10k), so normalised values would be
    transformed a second time. ATAC is binarised (any value > 0 is open), so non-integer ATAC values pass, as in
    setup. The values are read in chunks (memory stays flat).

    Parameters
    ----------
    x
        The measured ``.X`` or layer (dense or CSR/CSC).
    what
        The measured data and its matrix, e.g. ``"measured='adt' (.X)"``, for the message.
    target
        The generated modality (``"rna"``, ``"protein"`` or ``"atac"``).
    """
    fix = (
        "the plot applies CLR (protein) or log1p CP10k (RNA) to the measured counts itself, so normalised values "
        "would be transformed twice. Pass layer='counts' (the layer with raw counts), or measured=<an AnnData "
        "of raw counts>"
    )
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_:
        if target == "atac":
            return
        raise ValueError(f"The measured data ({what}) holds True/False values, not counts: {fix}.")
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"The measured data ({what}) holds {dtype} values, not counts: {fix}.")
    is_float = np.issubdtype(dtype, np.floating)
    for values in value_chunks(x, what):
        if values.size == 0:
            continue
        if is_float and not np.isfinite(values).all():
            raise ValueError(f"The measured data ({what}) contains NaN or inf, not counts: {fix}.")
        if values.min() < 0:
            raise ValueError(
                f"The measured data ({what}) has negative values (e.g. {float(values.min())!r}): it looks "
                f"normalised or scaled; {fix}."
            )
        if is_float and target != "atac":
            frac = np.abs(values - np.rint(values)) > INTEGER_TOLERANCE
            if frac.any():
                raise ValueError(
                    f"The measured data ({what}) has non-integer values (e.g. {float(values[frac][0])!r}): it looks "
                    f"normalised; {fix}."
                )


__all__ = [
    "check_count",
    "model_table",
    "require_counts",
    "require_modality",
    "require_obs_column",
    "require_table",
    "require_unique",
    "shown",
]
