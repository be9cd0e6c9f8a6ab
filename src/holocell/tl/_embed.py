"""``holocell.tl.embed``: cell embeddings into ``.obsm``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._keys import check_mudata, check_outputs, working_copy

DEFAULT_KEY = "X_holocell"
"""holocell's own ``.obsm`` name, which the docs also fill with ``model.get_latent_representation()``."""

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell


def embed(
    mdata: MuData,
    model: HoloCell,
    *,
    modality: str | Sequence[str] | None = None,
    key_added: str = DEFAULT_KEY,
    batch_size: int | None = None,
    device: str | None = None,
    progress_bar: bool | None = None,
    copy: bool = False,
) -> MuData | None:
    """Write holocell cell embeddings to ``mdata.obsm[key_added]``.

    Parameters
    ----------
    mdata
        MuData with the modalities the model was set up with.
    model
        Trained :class:`~holocell.HoloCell`.
    modality
        Embed from this modality (or list) only; default: all modalities each cell has.
    key_added
        ``.obsm`` and ``.uns`` key. ``"X_holocell"`` (holocell's own name, also what
        ``mdata.obsm["X_holocell"] = model.get_latent_representation()`` fills) is always replaced, and so is the
        embedding of an earlier ``embed`` with the same ``key_added``; any other existing entry (the user's data,
        e.g. ``"X_pca"``) is never replaced: ``ValueError``. ``mdata.uns["X_holocell"]`` is replaced only when it
        is holocell's record (``{"params": ...}``).
    batch_size
        Cells per forward pass (default: chosen from the model size).
    device
        Device to run on, e.g. ``"cuda"`` (default: where the model is).
    progress_bar
        Show a progress bar (``None``: follow ``holocell.settings.progress_bar``).
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.obsm[key_added]``
    (``(n_cells, n_latent)``, the cell state's posterior mean) and ``mdata.uns[key_added]["params"]`` (``modality``: the modalities embedded
    from, ``"all"`` for every modality each cell has). Cells measured in none of the modalities read get a row of
    NaN, with a :class:`~holocell.HoloCellWarning` (from :meth:`~holocell.HoloCell.get_latent_representation`).
    """
    check_mudata(mdata, "embed")
    if key_added != DEFAULT_KEY:  # holocell's own name is always its embedding (see key_added)
        check_outputs(mdata, key_added, "embed", obsm=[key_added])  # also refuses a key that is no name
    else:
        _check_own_record(mdata)
    mdata = working_copy(mdata, copy)
    mdata.obsm[key_added] = model.get_latent_representation(
        mdata, modality=modality, batch_size=batch_size, device=device, progress_bar=progress_bar
    )
    params = {"modality": "all" if modality is None else modality if isinstance(modality, str) else list(modality)}
    if batch_size is not None:
        params["batch_size"] = batch_size
    mdata.uns[key_added] = {"params": params}
    return mdata if copy else None


def _check_own_record(mdata: MuData) -> None:
    """``ValueError`` when ``mdata.uns["X_holocell"]`` holds something other than holocell's ``{"params": ...}``."""
    record = mdata.uns.get(DEFAULT_KEY)
    if record is not None and not (isinstance(record, dict) and set(record) <= {"params"}):
        what = f"keys {list(record)[:5]}" if isinstance(record, dict) else f"a {type(record).__name__}"
        raise ValueError(
            f"mdata.uns[{DEFAULT_KEY!r}] holds data holocell did not write ({what}); "
            f"embed writes its record there. Move it (mdata.uns['my_key'] = mdata.uns.pop({DEFAULT_KEY!r})), or "
            "pass another key_added."
        )
