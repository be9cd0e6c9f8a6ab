"""Functional API in the style of ``muon.tl`` / ``scanpy.tl``: in place by default, ``copy=True`` returns a copy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mudata import MuData

    from .model import HoloCell


def embed(
    mdata: MuData,
    model: HoloCell,
    *,
    modality: str | Sequence[str] | None = None,
    key_added: str = "X_holocell",
    batch_size: int | None = None,
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
        ``.obsm`` key.
    batch_size
        Cells per forward pass (default: chosen from the model size).
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``mdata.obsm[key_added]`` and
    ``mdata.uns["holocell"]["embed"]["params"]``.
    """
    mdata = mdata.copy() if copy else mdata
    mdata.obsm[key_added] = model.get_latent_representation(mdata, modality=modality, batch_size=batch_size)
    params = {"key_added": key_added, "modality": modality, "batch_size": batch_size}
    mdata.uns.setdefault("holocell", {})["embed"] = {"params": params}
    return mdata if copy else None


def generate(
    mdata: MuData,
    model: HoloCell,
    *,
    target: Literal["rna", "atac", "protein"] = "protein",
    n_steps: int = 8,
    key_added: str | None = None,
    sources: Sequence[str] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> MuData | None:
    """Generate a modality for every cell and add it to ``mdata.mod[key_added]``.

    Parameters
    ----------
    mdata
        MuData with the model's source modalities.
    model
        Trained :class:`~holocell.HoloCell`.
    target
        Modality to generate.
    n_steps
        Denoising steps.
    key_added
        New modality name (default ``"<modality name>_generated"``).
    sources
        Modalities to condition on (default: all others).
    batch_size
        Cells per forward pass (default: chosen from the model size).
    overwrite
        Replace an existing modality named ``key_added``.
    copy
        Work on and return a copy instead of modifying ``mdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. See :meth:`HoloCell.generate` for the
    contents of the new modality.
    """
    mdata = mdata.copy() if copy else mdata
    model.generate(
        mdata,
        target=target,
        n_steps=n_steps,
        key_added=key_added,
        sources=sources,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    return mdata if copy else None


# Downstream tools (issue 6): in-silico perturbation, GRN, label transfer, cell fate.
from .tools import annotate, fate_shift, grn, perturb  # noqa: E402

__all__ = ["annotate", "embed", "fate_shift", "generate", "grn", "perturb"]
