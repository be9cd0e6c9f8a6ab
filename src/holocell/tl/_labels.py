"""The reference labels of ``holocell.tl.annotate``: their values with their own type, the checks on them, and the
predicted column built from them."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._warnings import HoloCellWarning

UNKNOWN = "unknown"
"""Label of query cells whose confidence is below ``unknown_threshold`` (text labels; other labels get NaN)."""
MISSING_SPELLINGS = ("nan", "NaN", "None", "", "<NA>")
"""Texts that ``.astype(str)`` makes of missing values (NaN, None, ``pd.NA``) or that stand for no label."""


def label_values(labels: pd.Series) -> np.ndarray:
    """The values of labelled cells (``labels`` without missing values) as one array of a single type.

    Integers, bools and floats keep their dtype (a categorical column: its categories' dtype; a nullable one, e.g.
    ``Int64``: its numpy dtype); text is an object array of ``str``. Values of mixed types, or of other types
    (dates, ...), fall back to their text (``str``), as they were read before.
    """
    values = labels
    if isinstance(labels.dtype, pd.CategoricalDtype):
        values = labels.cat.categories.take(labels.cat.codes.to_numpy())
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return np.asarray(values)
    if isinstance(dtype, np.dtype) and dtype.kind in "US":
        return np.asarray(values).astype(str).astype(object)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # pandas' nullable Int64 / boolean / Float64
    if numpy_dtype is not None and np.dtype(numpy_dtype).kind in "biuf":
        return np.asarray(values.to_numpy(dtype=numpy_dtype))
    kind = pd.api.types.infer_dtype(values, skipna=False)  # of object values: one type, or mixed
    if kind == "string":
        return np.asarray(values.astype(str), dtype=object)
    if kind in ("boolean", "integer", "floating", "mixed-integer-float"):
        return np.asarray(list(values), dtype={"boolean": bool, "integer": np.int64}.get(kind, np.float64))
    return np.asarray(pd.Series(np.asarray(values, dtype=object)).astype(str), dtype=object)


def is_text(values: np.ndarray) -> bool:
    """Whether label values are text (an object array of ``str``), where ``"unknown"`` can flag a cell."""
    return values.dtype == object


def _missing_fix(labels: pd.Series, labels_key: str, found: list[str]) -> str:
    column = f"mdata.obs[{labels_key!r}]"
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return f"{column} = {column}.cat.remove_categories({found!r})"
    return f"{column} = {column}.replace({{{', '.join(f'{s!r}: np.nan' for s in found)}}})"


def missing_spellings_hint(labels: pd.Series, labelled: np.ndarray, labels_key: str) -> str:
    """For the "no query cells" error: a sentence on labelled cells whose label spells a missing value, or ``""``."""
    text = labels[labelled].astype(str)
    hit = text.isin(MISSING_SPELLINGS).to_numpy()
    if not hit.any():
        return ""
    found = sorted(set(text[hit]))
    return (
        f" {int(hit.sum())} cells have the label {' or '.join(map(repr, found))}, what .astype(str) makes of a "
        f"missing value: they count as labelled, not as cells to label. If they have no label, make it missing, e.g. "
        f"{_missing_fix(labels, labels_key, found)}; or pass query=."
    )


def require_reference_and_query(
    labels: pd.Series, labelled: np.ndarray, ref: np.ndarray, q: np.ndarray, labels_key: str, *, query_given: bool
) -> None:
    """``ValueError`` naming the fix when there are no reference cells (``ref``) or no query cells (``q``)."""
    if ref.sum() and q.sum():
        return
    if q.sum() == 0:  # the spelling hint, when there is one, gives the fix for its case
        hint = "" if query_given else missing_spellings_hint(labels, labelled, labels_key)
        fix = "" if hint else " Pass query= (the cells to label), or make their labels missing (NaN)."
    else:
        fix, hint = f" Pass reference= (labelled cells), or give cells a label in mdata.obs[{labels_key!r}].", ""
    raise ValueError(f"Need reference and query cells; got {int(ref.sum())} and {int(q.sum())}.{fix}{hint}")


def reference_labels(
    labels: pd.Series, ref: np.ndarray, labels_key: str, unknown_threshold: float | None
) -> np.ndarray:
    """``(n_cells,)`` labels of the reference cells with their own type (valid where ``ref``), after the checks:
    ``ValueError`` when ``unknown_threshold`` is set and a reference class is named ``"unknown"``, and a
    :class:`~holocell.HoloCellWarning` when reference labels spell a missing value (``"nan"``, ``""``, ...)."""
    values = label_values(labels[ref])
    column = f"mdata.obs[{labels_key!r}]"
    if is_text(values) and unknown_threshold is not None and (values == UNKNOWN).any():
        fix = (f"{column}.cat.rename_categories({{{UNKNOWN!r}: 'unknown_type'}})"
               if isinstance(labels.dtype, pd.CategoricalDtype) else
               f"{column}.replace({{{UNKNOWN!r}: 'unknown_type'}})")  # fmt: skip
        raise ValueError(
            f"{int((values == UNKNOWN).sum())} reference cells have the label {UNKNOWN!r}, which is also the label "
            f"unknown_threshold gives to query cells below the confidence threshold: the two could not be told apart. "
            f"Rename that class, e.g. {column} = {fix}, or pass unknown_threshold=None."
        )
    if is_text(values):
        hit = np.isin(values, MISSING_SPELLINGS)
        if hit.any():
            found = sorted(set(values[hit]))
            warnings.warn(
                f"{int(hit.sum())} reference cells have the label {' or '.join(map(repr, found))}, what .astype(str) "
                f"makes of a missing value: it is learned as a class and predicted like one. If these cells have no "
                f"label, make it missing, e.g. {_missing_fix(labels, labels_key, found)}.",
                HoloCellWarning,
                stacklevel=4,
            )
    out = np.empty(len(labels), dtype=values.dtype)
    out[ref] = values
    return out


def label_probabilities(classes: np.ndarray, proba: np.ndarray, q: np.ndarray, obs_names: pd.Index) -> pd.DataFrame:
    """Each query cell's probability of every reference label (one column per label, named by its text, a ``/``
    written as ``_``: see :func:`storable_names`; rows sum to 1), NaN outside ``q``: the best label's probability
    before the distance factor, and the other labels, which ``"unknown"`` hides in the predicted column."""
    table = np.full((len(q), len(classes)), np.nan)
    table[q] = proba
    return pd.DataFrame(table, index=obs_names, columns=pd.Index(storable_names([str(c) for c in classes])))


def storable_names(names: list[str]) -> list[str]:
    """Column names a file can store: ``/`` becomes ``_`` (SNARE-seq2's ``L2/3``; anndata refuses ``/`` in the keys
    of zarr stores, and of h5 files from its 0.13 on, so ``mdata.write()`` would fail), and so do the dots of a
    name ``.`` or ``..`` (a folder to either file); a name the replacement makes
    equal to another gets ``#2``, ``#3``, ... The labels themselves (``obs``, ``uns[...]["classes"]``) keep theirs."""
    out, seen = [], set()
    for name in names:
        safe = "_" * len(name) if name in (".", "..") else name.replace("/", "_")
        candidate, k = safe, 1
        while candidate in seen or (candidate != name and candidate in names):  # another label's own name
            k += 1
            candidate = f"{safe}#{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


def predicted_labels(
    classes: np.ndarray, proba: np.ndarray, q: np.ndarray, unknown_threshold: float | None,
    fit: np.ndarray | None = None,
) -> tuple[pd.Categorical, np.ndarray]:
    """The predicted column (categorical, categories ``classes`` with their type; NaN outside ``q``) and the
    confidence (NaN outside ``q``): the best label's probability, times ``fit`` (a factor per query cell for its
    distance to the reference) when given. Below ``unknown_threshold`` text labels become ``"unknown"`` (an extra
    category), other labels (numbers, bools) NaN, so the categories keep one type."""
    pred = np.full(len(q), np.nan, dtype=object)
    conf = np.full(len(q), np.nan)
    pred[q] = classes[proba.argmax(1)]
    conf[q] = proba.max(1) * (1.0 if fit is None else fit)
    categories = list(classes)
    if unknown_threshold is not None:
        low = q & (conf < float(unknown_threshold))
        if is_text(classes):
            pred[low] = UNKNOWN
            categories.append(UNKNOWN)
        else:
            pred[low] = np.nan
    return pd.Categorical(pred, categories=pd.Index(categories, dtype=classes.dtype)), conf
