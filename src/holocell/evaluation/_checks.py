"""Input checks shared by the embedding metrics: one place for the messages, no change to valid input.

Labels and batches are compared as strings (``np.asarray(x).astype(str)``, as before these checks),
except that a float which holds a whole number is written as that integer, so ``0`` and ``0.0`` are
the same label; string labels are left exactly as they are (a string ``"nan"`` is a label like any other).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from holocell.evaluation._transforms import to_dense

__all__ = ["check_embedding", "check_labels", "check_n_neighbors", "label_keys"]


def check_embedding(embedding: ArrayLike, name: str = "embedding") -> np.ndarray:
    """``embedding`` as a dense float64 cells x dims matrix; refuses NaN / inf entries and zero cells."""
    emb = to_dense(embedding)
    if emb.shape[0] == 0:
        raise ValueError(f"{name} has no cells; pass at least one cell (one row per cell).")
    bad = ~np.isfinite(emb)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite values (NaN or inf) in {rows} of {emb.shape[0]} cells; "
            "drop those cells (or fix the embedding) before scoring."
        )
    return emb


def label_keys(values: np.ndarray) -> np.ndarray:
    """Strings to compare labels by: ``astype(str)``, with whole-number floats written as integers."""
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2**53)
        if whole.any():  # other floats keep numpy's spelling (float32 0.1 stays "0.1")
            keys = values.astype(str).astype(object)
            keys[whole] = values[whole].astype(np.int64).astype(str)
            return keys.astype(str)
    elif values.dtype.kind == "O":
        floats = [
            i for i, v in enumerate(values)
            if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)
            and float(v).is_integer() and abs(float(v)) < 2**53
        ]
        if floats:
            values = values.copy()
            values[floats] = [int(values[i]) for i in floats]
    return values.astype(str)


def check_labels(values: ArrayLike, n_cells: int, name: str = "labels", what: str = "label") -> np.ndarray:
    """One ``what`` per cell as comparable strings (see :func:`label_keys`); refuses missing values.

    ``n_cells`` is the number of embedding rows ``values`` must match.
    """
    # a list keeps its elements (np.asarray would turn [nan, "a"] into the string "nan")
    arr = np.asarray(values, dtype=object) if isinstance(values, (list, tuple)) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one {what} per cell (1-D), got shape {arr.shape}.")
    if arr.shape[0] != n_cells:
        raise ValueError(
            f"the embedding has {n_cells} cells but {name} has {arr.shape[0]}; pass one {what} per embedding row."
        )
    missing = int(np.count_nonzero(pd.isna(arr))) if arr.dtype.kind in "fcOmM" else 0
    if missing:
        raise ValueError(
            f"{name} has {missing} missing values (None/NaN) out of {n_cells}; a missing {what} is not a {what}: "
            f"drop those cells (or give them a {what}) before scoring."
        )
    return label_keys(arr)


def check_n_neighbors(n_neighbors: int, minimum: int, name: str = "n_neighbors", why: str = "") -> int:
    """``n_neighbors`` as an int of at least ``minimum``; ``why`` is added to the message."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {n_neighbors!r}.")
    if n_neighbors < minimum:
        raise ValueError(f"{name} must be at least {minimum}{why}, got {n_neighbors}; pass {name}>={minimum}.")
    return int(n_neighbors)
