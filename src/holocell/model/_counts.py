"""Count checks on every stored value, read in chunks so memory stays flat.

A matrix holocell reads must hold finite, non-negative integer counts. Every stored value is
checked: the ``.data`` of a CSR/CSC matrix, every entry of a dense array, and the same for
matrices of a backed ``.h5mu`` (read from disk chunk by chunk). A value counts as an integer when
``|x - round(x)| <= INTEGER_TOLERANCE`` (absolute, so ``100000.4`` is refused however large the
value). ATAC is modelled as binary accessibility, so non-negative non-integer ATAC values (e.g.
half-counts of some public releases) are accepted with a warning, and a bool (binarised) ATAC
matrix is read as 0/1; RNA and protein need counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from .._warnings import HoloCellWarning

#: Largest ``|x - round(x)|`` of a value still read as an integer count.
INTEGER_TOLERANCE = 1e-6
#: Values checked per chunk (4 MB of float64): the memory bound of the check.
CHUNK_VALUES = 1 << 19


def _is_backed_sparse(x) -> bool:
    return hasattr(x, "group") and hasattr(x, "format") and hasattr(x, "shape") and not sp.issparse(x)


def _is_backed_dense(x) -> bool:
    # an h5py / zarr dataset: sliceable, with a shape and dtype, but not a numpy array
    return not isinstance(x, np.ndarray) and hasattr(x, "shape") and hasattr(x, "dtype") and len(x.shape) == 2


def value_chunks(x, name: str, chunk: int = CHUNK_VALUES) -> Iterator[np.ndarray]:
    """The stored values of ``x`` as 1-D arrays of at most about ``chunk`` values each.

    Parameters
    ----------
    x
        A dense array, a CSR/CSC matrix, a backed sparse dataset (anndata) or a backed dense
        dataset (h5py / zarr).
    name
        Modality name in ``mdata.mod`` (for the message).
    chunk
        Values per chunk.
    """
    _check_format(x, name)
    if sp.issparse(x):
        data = x.data
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]
    elif isinstance(x, np.ndarray):
        x = np.asarray(x)  # a plain array (np.matrix and anndata views are subclasses)
        if x.flags.c_contiguous or x.flags.f_contiguous:
            flat = x.reshape(
                -1, order="F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
            )  # a view
            for i in range(0, flat.size, chunk):
                yield flat[i : i + chunk]
        else:
            step = max(1, chunk // max(1, x.shape[-1]))
            for i in range(0, x.shape[0], step):
                yield np.ravel(x[i : i + step])
    elif _is_backed_sparse(x):
        data = x.group["data"]  # the stored non-zeros on disk
        for i in range(0, data.shape[0], chunk):
            yield np.asarray(data[i : i + chunk])
    else:  # backed dense
        step = max(1, chunk // max(1, x.shape[1]))
        for i in range(0, x.shape[0], step):
            yield np.ravel(np.asarray(x[i : i + step]))


def _check_format(x, name: str) -> None:
    if sp.issparse(x):
        if x.format not in ("csr", "csc"):
            raise TypeError(
                f"Modality {name!r} holds a {x.format.upper()} sparse matrix; holocell reads CSR or CSC. "
                f"Convert it with .tocsr() (e.g. mdata.mod[{name!r}].X = mdata.mod[{name!r}].X.tocsr())."
            )
    elif not (isinstance(x, np.ndarray) or _is_backed_sparse(x) or _is_backed_dense(x)):
        raise TypeError(
            f"Modality {name!r} holds a {type(x).__name__}; holocell reads numpy arrays and CSR/CSC "
            f"matrices. Load it into memory first, e.g. mdata.mod[{name!r}].X = "
            f"scipy.sparse.csr_matrix(mdata.mod[{name!r}].X)."
        )


def _dtype_of(x) -> np.dtype:
    if _is_backed_sparse(x):
        return np.dtype(x.group["data"].dtype)
    return np.dtype(x.dtype)


def check_counts(x, name: str, m: str, *, chunk: int = CHUNK_VALUES, fix: str | None = None) -> None:
    """Raise unless every stored value of ``x`` is a finite, non-negative integer count.

    Parameters
    ----------
    x
        ``.X`` or a layer of modality ``name``: dense, CSR/CSC, or backed.
    name
        Modality name in ``mdata.mod`` (for the message).
    m
        holocell modality (``"rna"``, ``"atac"``, ``"protein"``), for the ``<m>_layer=`` hint. For
        ``"atac"``, non-negative non-integer values are accepted with a :class:`~holocell.HoloCellWarning`,
        and bool values (binarised peaks) as 0/1.
    chunk
        Values checked at a time (memory stays flat).
    fix
        The fix the messages give (default: pass ``<m>_layer=`` to ``setup_mudata``). A model's inference calls,
        which read where the model was set up to read, give their own.

    Raises
    ------
    ValueError
        NaN / Inf, negative or (RNA, protein) non-integer values anywhere, naming the fix.
    TypeError
        A matrix format or dtype holocell cannot read (bool for RNA or protein: not counts).
    """
    setup_fix = f"pass the layer that holds them ({m}_layer='counts')"
    if x is None:
        raise ValueError(f"Modality {name!r} has no .X; {fix or setup_fix.replace('them', 'the counts')}.")
    _check_format(x, name)
    dtype = _dtype_of(x)
    if dtype == np.bool_:
        if m == "atac":
            return  # binarised peaks (True = open): read as 0/1, which is how holocell models ATAC
        raise TypeError(
            f"Modality {name!r} has bool values (True/False), e.g. binarised or a mask, not counts; holocell "
            f"needs raw counts for {m}; "
            + (fix or f"{setup_fix}, or put the counts in .X (mdata.mod[{name!r}].X = counts)") + "."
        )
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"Modality {name!r} has {dtype} values; holocell needs numeric raw counts.")
    if np.issubdtype(dtype, np.unsignedinteger):
        return  # unsigned integers are always counts
    is_float = np.issubdtype(dtype, np.floating)
    layer_hint = fix or (
        f"{setup_fix}; counts kept in .raw go to a layer first: "
        f"mdata[{name!r}].layers['counts'] = mdata[{name!r}].raw[:, mdata[{name!r}].var_names].X"
    )
    fractional = 0
    for values in value_chunks(x, name, chunk):
        if values.size == 0:
            continue
        if is_float:
            with np.errstate(invalid="ignore"):  # one temporary per chunk, computed in place
                frac = np.rint(values)
                np.subtract(values, frac, out=frac)
                np.abs(frac, out=frac)  # NaN for NaN and +-Inf
            bad = ~(frac <= INTEGER_TOLERANCE)
            if bad.any():
                finite = np.isfinite(values)
                if not finite.all():
                    raise ValueError(
                        f"Modality {name!r} contains NaN or Inf; holocell needs raw counts. "
                        f"{layer_hint[0].upper()}{layer_hint[1:]}, or replace them (e.g. np.nan_to_num) if "
                        "they stand for zero counts."
                    )
                if m != "atac":
                    example = values[bad][0]
                    _check_negative(values, name, layer_hint, dtype)
                    raise ValueError(
                        f"Modality {name!r} has non-integer values (e.g. {float(example)!r}): it looks normalised. "
                        f"holocell needs raw counts; {layer_hint}."
                    )
                fractional += int(bad.sum())
        _check_negative(values, name, layer_hint, dtype)
    if fractional:
        warnings.warn(
            f"Modality {name!r} (ATAC) has {fractional} non-integer values (e.g. half-counts). holocell "
            "models ATAC as binary accessibility (a peak with any value > 0 is open), so they are used "
            f"as they are; pass {m}_layer= to read integer counts from a layer instead.",
            HoloCellWarning,
            stacklevel=4,
        )


def _check_negative(values: np.ndarray, name: str, layer_hint: str, dtype: np.dtype) -> None:
    if values.min() < 0:
        if np.issubdtype(dtype, np.signedinteger) and dtype.itemsize <= 2:
            raise ValueError(
                f"Modality {name!r} has negative values in a {dtype} matrix: counts above "
                f"{np.iinfo(dtype).max} wrap around to negative numbers in {dtype}. Store the counts as a wider "
                f"integer type (e.g. .astype(np.int32)) before casting them, or {layer_hint}."
            )
        raise ValueError(
            f"Modality {name!r} has negative values: it looks normalised or scaled. holocell needs raw "
            f"counts; {layer_hint}."
        )


__all__ = ["CHUNK_VALUES", "INTEGER_TOLERANCE", "check_counts", "value_chunks"]
