"""Checks of the downstream API's arguments (feature names, counts, cells), with messages that name the
problem and the fix. Shared by :class:`~holocell.HoloCell`'s perturbation methods and ``holocell.tl``."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch


def as_names(value: str | Iterable[str] | None, what: str) -> list[str]:
    """``value`` (one name or names) as a list of ``str``; ``None`` gives ``[]``.

    Parameters
    ----------
    value
        A name, or an iterable of names (list, tuple, array, ``pd.Index``).
    what
        The argument, for the messages (``"genes"``, ``"tfs"``, ...).

    Raises
    ------
    TypeError
        ``bytes``, a number, or an item that is not a ``str``.
    ValueError
        A name given more than once.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes | bytearray):
        raise TypeError(f"`{what}` must be a name (str) or a list of names, got bytes {value!r}; decode it first.")
    if not isinstance(value, Iterable):
        raise TypeError(
            f"`{what}` must be a name (str) or a list of names, got {type(value).__name__} {value!r}; "
            "feature names are strings such as mdata.mod['rna'].var_names[0]."
        )
    names = list(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(
            f"`{what}` must hold names (str), got {bad[:3]!r} ({type(bad[0]).__name__}); use feature names, "
            "not positions or bytes, e.g. mdata.mod['rna'].var_names[[0, 1]]."
        )
    index = pd.Index(names)
    if index.has_duplicates:
        dups = list(index[index.duplicated()].unique())
        raise ValueError(f"`{what}` names {dups[:5]} more than once; give each name once.")
    return names


def check_count(value, what: str, *, minimum: int = 1, none_ok: bool = False) -> int | None:
    """``value`` as an ``int >= minimum`` (or ``None`` when ``none_ok``); ``TypeError`` / ``ValueError`` otherwise."""
    if value is None and none_ok:
        return None
    allowed = f"an integer >= {minimum}" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be {allowed}, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{what} must be {allowed}, got {value!r}.")
    return int(value)


def check_quantile(value, what: str = "overexpress_quantile") -> float:
    """``value`` as a float in ``(0, 1]``; ``ValueError`` otherwise (NaN, strings, 0, above 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1:
        raise ValueError(f"{what} must be a number in (0, 1] (e.g. 0.99), got {value!r}.")
    return float(value)


def check_weight(value, what: str, *, positive: bool = False, note: str = "") -> float:
    """``value`` as a finite float ``>= 0`` (``> 0`` when ``positive``); ``ValueError`` naming ``what`` otherwise
    (NaN, infinity, a string or a bool)."""
    low_ok = (lambda v: v > 0) if positive else (lambda v: v >= 0)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (low_ok(float(value)) and np.isfinite(value)):
        raise ValueError(f"{what} must be a finite number {'>' if positive else '>='} 0{note}, got {value!r}.")
    return float(value)


def check_temperature(value) -> float:
    """``value`` as a finite float ``>= 0`` (0: the most likely value; > 0: sampling); ``ValueError`` otherwise (NaN
    or a negative number used to mean 0 silently)."""
    return check_weight(value, "temperature", note=" (0: most likely values)")


def modality_cells(mdata, modalities: dict[str, str], modality: str = "rna") -> np.ndarray:
    """``(n_obs,)`` bool: the cells of ``mdata`` that have the model's ``modality`` (``modalities``: the model's
    ``modalities_``); ``KeyError`` naming the modality when ``mdata`` lacks it."""
    name = modalities[modality]
    if name not in mdata.mod:
        raise KeyError(
            f"MuData has no modality {name!r}, the {modality.upper()} the model was set up with; "
            f"available: {list(mdata.mod)}."
        )
    return np.asarray(mdata.obsmap[name]).ravel() > 0


def cell_indices(indices: Sequence[int] | np.ndarray | None, n_cells: int, what: str = "indices") -> np.ndarray:
    """Positions of the cells to use: ``None`` (all), integer positions or a boolean mask over the cells (``what``:
    the argument's name in the messages)."""
    if indices is None:
        return np.arange(n_cells)
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n_cells,):
            raise ValueError(f"A boolean `{what}` needs one entry per cell ({n_cells}), got shape {idx.shape}.")
        idx = np.flatnonzero(idx)
    elif idx.size and (idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(
            f"`{what}` must be integer positions of cells or a boolean mask, got {idx.dtype} of shape {idx.shape}; "
            "for cell names use mdata.obs_names.get_indexer(names)."
        )
    if idx.size == 0:
        raise ValueError(f"`{what}` selects no cell; give at least one (None: every cell).")
    if n_cells > 2 and idx.shape == (n_cells,) and np.isin(idx, (0, 1)).all():
        raise ValueError(
            f"`{what}` has one 0 or 1 per cell: a 0/1 mask read as positions would repeat cells 0 and 1. Pass it as "
            f"a boolean mask (np.asarray({what}, dtype=bool)), or the positions of the cells."
        )
    idx = idx.astype(np.int64)
    out = (idx < -n_cells) | (idx >= n_cells)
    if out.any():
        raise IndexError(f"`{what}` {list(idx[out][:5])} are not cell positions of this MuData (0 to {n_cells - 1}).")
    return np.where(idx < 0, idx + n_cells, idx)


def check_flag(value, what: str) -> bool:
    """``value`` as ``True`` / ``False`` (numpy's bool too); ``TypeError`` naming ``what`` otherwise (``"no"`` or
    ``1`` would read as true)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{what} must be True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


def check_device(device) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a :class:`torch.device`) as a device this
    machine has; ``ValueError`` naming the devices it does have otherwise."""
    if isinstance(device, bool) or not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', or a torch.device, got {device!r}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'mps'.") from err
    if dev.type not in ("cpu", "cuda", "mps"):  # "meta" and the like hold no weights: the model would be lost
        raise ValueError(f"device={device!r} cannot run holocell; use 'cpu', 'cuda', 'cuda:0' or 'mps'.")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.type == "cuda" and (n_gpus == 0 or (dev.index is not None and dev.index >= n_gpus)):
        have = "no CUDA GPU" if n_gpus == 0 else f"{n_gpus} CUDA GPU(s), cuda:0 to cuda:{n_gpus - 1}"
        raise ValueError(f"device={device!r}, but torch sees {have} on this machine; pass device='cpu'.")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"device={device!r}, but torch has no MPS (Apple GPU) here; pass device='cpu'.")
    return dev


def check_key_added(key_added, what: str = "key_added") -> str:
    """``key_added`` as a non-empty ``str`` that ``.h5mu`` and ``.zarr`` files can store (no ``"/"``, HDF5's path
    separator, no NUL, and not ``"."`` or ``".."``)."""
    if not isinstance(key_added, str) or not key_added.strip():
        raise TypeError(f"{what} must be a non-empty string (the name of the keys written), got {key_added!r}.")
    if "/" in key_added:
        raise ValueError(
            f"{what}={key_added!r} holds '/', which .h5mu files read as a folder, so the result could not be read "
            "back; use another name, e.g. with '_'."
        )
    if "\x00" in key_added:
        raise ValueError(f"{what}={key_added!r} holds a NUL character, which .h5mu files cannot store; remove it.")
    if key_added.strip() in (".", ".."):
        raise ValueError(
            f"{what}={key_added!r} is a folder name to .h5mu and .zarr files: written there, the results would "
            "replace the whole .uns on reading (mdata.write() said nothing and the file lost the rest of .uns); use "
            "another name, e.g. 'holocell'."
        )
    return key_added


def check_seed(seed) -> int:
    """A random ``seed`` as an ``int`` in ``[0, 2**63)``: ``TypeError`` / ``ValueError`` naming it otherwise (``None``,
    ``1.5``, ``"3"`` or ``2**70`` failed in ``torch.manual_seed`` after the data were read). NumPy integers pass."""
    if check_count(seed, "seed", minimum=0) >= 2**63:
        raise ValueError(f"seed must be below 2**63, got {seed!r}.")
    return int(seed)


__all__ = ["as_names", "cell_indices", "check_count", "check_device", "check_flag", "check_key_added",
           "check_quantile", "check_seed", "modality_cells"]  # fmt: skip
