"""``holocell.tl.generate``: a generated modality into ``.mod``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from ..model._validate_obs import check_not_view_output
from ._keys import check_mudata, working_copy

if TYPE_CHECKING:
    from mudata import MuData

    from ..model import HoloCell


def generate(
    mdata: MuData,
    model: HoloCell,
    *,
    target: Literal["rna", "atac", "protein"] = "protein",
    n_steps: int | None = None,
    key_added: str | None = None,
    sources: Sequence[str] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    progress_bar: bool | None = None,
    var_suffix: str | None = "_generated",
    remasking: Literal["low_confidence", "random"] = "low_confidence",
    temperature: float = 0.0,
    transform_batch: str | None = None,
    device: str | None = None,
    seed: int = 0,
    copy: bool = False,
) -> MuData | None:
    """Generate a modality for every cell and add it to ``mdata.mod[key_added]``.

    Parameters
    ----------
    mdata
        MuData with the model's source modalities. A view (``mdata[mask]``) is refused before any work
        (``ValueError``): mudata cannot add a modality to it; pass ``mdata[mask].copy()``, or ``copy=True``.
    model
        Trained :class:`~holocell.HoloCell`.
    target
        Modality to generate.
    n_steps
        Denoising steps (``0``: the cell state's likelihood mean in one shot); default as
        :meth:`~holocell.HoloCell.generate`.
    key_added
        New modality name (default ``"<modality name>_generated"``); not an ``mdata.obsm`` key of other data such
        as ``"X_umap"`` (``ValueError``: mudata keeps each modality's mask of cells in ``mdata.obsm[<name>]``).
    sources
        Modalities to condition on (default: all others).
    batch_size
        Cells per forward pass (default: chosen from the model size).
    overwrite
        Replace an existing modality named ``key_added``.
    progress_bar
        Show a progress bar (``None``: follow ``holocell.settings.progress_bar``).
    var_suffix
        Appended to the generated features' names (``cd14`` -> ``cd14_generated``; ``var["measured_name"]`` keeps
        the measured name). The default does not depend on ``key_added``: a second ``generate`` of the same target
        under another ``key_added`` repeats the first one's names, so ``mdata.var_names`` are no longer unique, and
        a :class:`~holocell.HoloCellWarning` says so; pass ``var_suffix=f"_{key_added}"`` to keep them unique.
        ``None`` keeps the measured names (``mdata.var_names`` are then not unique; no warning).
    remasking, temperature, transform_batch, device, seed
        As :meth:`~holocell.HoloCell.generate`: which slots are remasked between steps, sampling temperature
        (``0``: the most likely values), the training batch to generate as if from, where to run, the seed.
    copy
        Work on and return a copy instead of modifying ``mdata`` (also of a view).

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.mod[key_added]``, whose ``X``,
    ``layers["bins"]`` and ``uns["holocell"]`` are described in :meth:`HoloCell.generate`. Rows of cells without
    a source modality are NaN, which scanpy reads as data (``sc.tl.rank_genes_groups`` scores of 0, ``sc.pp.pca``:
    "Input X contains NaN"); drop them first, with ``key`` the new modality's name:
    ``g = mdata[key][~np.isnan(mdata[key].X).any(axis=1)].copy()``. Its ``.obs`` is empty:
    ``mdata.push_obs(columns=["celltype"], mods=[key])`` copies annotations to it.
    """
    check_mudata(mdata, "generate")
    if not copy:  # copy=True works on a copy of its own, to which the new modality can be added
        check_not_view_output(mdata, "hc.tl.generate", copy_ok=True)
    mdata = working_copy(mdata, copy)
    model.generate(
        mdata,
        target=target,
        n_steps=n_steps,
        key_added=key_added,
        sources=sources,
        batch_size=batch_size,
        overwrite=overwrite,
        progress_bar=progress_bar,
        var_suffix=var_suffix,
        remasking=remasking,
        temperature=temperature,
        transform_batch=transform_batch,
        device=device,
        seed=seed,
    )
    return mdata if copy else None
