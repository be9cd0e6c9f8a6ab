"""What :meth:`~holocell.HoloCell.get_latent_representation` and :meth:`~holocell.HoloCell.get_normalized_expression`
share: scvi-tools' ``adata=`` name of the data argument, the cells the model has no data of, and the posterior's
arguments (``give_mean``, ``return_dist``, ``seed``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from ..vocab._constants import MODALITIES
from ._args import check_flag, check_seed

_F = TypeVar("_F", bound=Callable)


def without_modalities(present: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
    """Mask of the cells (rows of the ``(n_cells, 3)`` ``present`` table) measured in none of ``modalities``."""
    return ~present[:, [MODALITIES.index(m) for m in modalities]].any(axis=1)


def modality_names(model, modalities: Sequence[str]) -> str:
    """``"rna (mdata.mod['rna']), protein (mdata.mod['adt'])"``: holocell's and the MuData's name of each."""
    return ", ".join(f"{m} (mdata.mod[{model.modalities_[m]!r}])" for m in modalities)


def cells_with(model, modalities: Sequence[str]) -> str:
    """The expression of a mask of the cells measured in any of ``modalities``, for messages."""
    return " | ".join(f"(mdata.obsmap[{model.modalities_[m]!r}] > 0)" for m in modalities)


def no_data_message(model, empty: np.ndarray, read: list[str], modality, what: str, not_a: str, verb: str) -> str:
    """Warning text for the ``empty`` cells (measured in none of the modalities ``read``; ``modality``: the caller's
    argument) of a call that gives each cell a row: ``what`` the rows are (``"embedded"``), ``not_a`` what a NaN row
    is not (``"a position in the embedding"``), ``verb`` what the call does from a modality (``"embed from"``)."""
    fix = (f"or {verb} another modality= that they have" if modality is not None
           else "or drop the cells measured in none of them from mdata")  # fmt: skip
    advice = (f"No cell of this MuData has them: {fix.removeprefix('or ')}." if empty.all()
              else f"Pass indices= of the cells that have them (e.g. indices={cells_with(model, read)}), {fix}.")
    return (
        f"{int(empty.sum())} of the {len(empty)} cells {what} have none of the modalities read "
        f"({modality_names(model, read)}), so the model has no data for them: their rows are NaN (not {not_a}). "
        f"{advice}"
    )


def no_source_message(model, target: str, read: list[str], unmeasured: np.ndarray) -> str:
    """Warning text of :meth:`~holocell.HoloCell.generate` for the cells measured in none of the source modalities
    and not in the target either (``unmeasured``): the call has no data of them at all."""
    fix = "" if len(read) == len(model.modalities_) - 1 else ", or pass sources= with modalities they have"
    return (
        f"{int(unmeasured.sum())} of the {len(unmeasured)} cells are measured in none of the source modalities "
        f"({modality_names(model, read)}) nor in {target}, so there is nothing to generate {target} from: their rows "
        f"of X are NaN (and of layers['bins'] -1), not a generated profile. Generate for the cells that have a "
        f"source, e.g. model.generate(mdata[{cells_with(model, read)}].copy(), ...){fix}."
    )


def check_has_source(model, target: str, sources) -> None:
    """``ValueError`` when the model has no modality but ``target``: :meth:`~holocell.HoloCell.generate` makes the
    target from the cells' other modalities, and there are none."""
    if sources is None and set(model.modalities_) == {target}:
        raise ValueError(
            f"This model has only the {target} modality ({model.modalities_[target]!r}), so there is nothing to "
            f"generate {target} from: generate makes a modality from the cells' other ones. Train a model with a "
            f"second modality (e.g. RNA with the {target}) to generate {target} from it; this model's own view of "
            "the cells is get_latent_representation()."
        )


def all_sources_missing_message(model, target: str, read: list[str], n_cells: int) -> str:
    """Warning text of :meth:`~holocell.HoloCell.generate` when none of the cells has a source modality."""
    return (
        f"None of the {n_cells} cells is measured in a source modality ({modality_names(model, read)}), so "
        f"there is nothing to generate {target} from: every row of X is NaN (and of layers['bins'] -1). Pass "
        f"cells that have {' or '.join(read)} (e.g. mdata[{cells_with(model, read)}].copy())."
    )


def scvi_data_alias(method: _F) -> _F:
    """Let a model method whose first argument is its data take it under scvi-tools' name too: ``mdata=`` and
    ``adata=`` are one argument (a MuData, a backed MuData or the path of an ``.h5mu``); giving both is a
    ``ValueError``. Put it above :func:`~holocell.data.arrays.closes_backed_path`, so a path given as ``adata=`` is
    closed again too."""
    signature = inspect.signature(method)
    params = list(signature.parameters.values())
    first = params[1].name
    other = "adata" if first == "mdata" else "mdata"

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        given = [*args[:1], *(kwargs.pop(k) for k in ("mdata", "adata") if k in kwargs)]
        named = [value for value in given if value is not None]
        if len(named) > 1:
            raise ValueError(
                f"{method.__name__}() got its data twice (mdata= and adata=, or one of them and a positional "
                "argument): they are one argument, adata= being scvi-tools' name of it; pass the data once."
            )
        return method(self, named[0] if named else None, *args[1:], **kwargs)

    keyword = inspect.Parameter(other, inspect.Parameter.KEYWORD_ONLY, default=None)
    wrapper.__signature__ = signature.replace(parameters=[*params, keyword])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def check_posterior(model, give_mean, return_dist, seed) -> bool:
    """Check ``get_latent_representation``'s posterior arguments; return whether the call needs the posterior's
    variance (``give_mean=False`` or ``return_dist=True``)."""
    check_flag(give_mean, "give_mean")
    check_flag(return_dist, "return_dist")
    check_seed(seed)
    needs = not give_mean or bool(return_dist)
    if needs and not model.config.cell_state:
        what = "give_mean=False draws from" if not give_mean else "return_dist=True returns"
        raise ValueError(
            f"{what} the posterior of the cell state z, and this model has none (a model saved before the cell state, "
            "or cell_state=False): its embedding is the mean of the pooled latents, with no distribution. Call "
            "get_latent_representation() with give_mean=True and return_dist=False."
        )
    return needs


def draw_posterior(mean: np.ndarray, variance: np.ndarray, seed: int) -> np.ndarray:
    """One draw per cell from ``N(mean, variance)`` (diagonal), from a generator seeded with ``seed``; it depends on
    the cell's row, not on the batching or the device (NaN rows stay NaN)."""
    noise = np.random.default_rng(seed).standard_normal(mean.shape, dtype=np.float32)
    return (mean + np.sqrt(variance) * noise).astype(np.float32)


NOISE_BLOCK = 1024
"""Rows of output per seeded block of :func:`posterior_noise`."""


def posterior_noise(seed: int, start: int, stop: int, n_samples: int, n_latent: int) -> np.ndarray:
    """``(n_samples, stop - start, n_latent)`` standard normal draws for the output rows ``start .. stop - 1``: a
    row's draws come from its block of :data:`NOISE_BLOCK` rows, seeded with ``(seed, block)``, so they do not
    depend on the batching or the device."""
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    blocks = [
        np.random.default_rng([seed, block]).standard_normal((n_samples, NOISE_BLOCK, n_latent), dtype=np.float32)
        for block in range(first, last + 1)
    ]
    offset = start - first * NOISE_BLOCK
    return np.concatenate(blocks, axis=1)[:, offset : offset + stop - start]


__all__ = [
    "NOISE_BLOCK",
    "cells_with",
    "check_posterior",
    "draw_posterior",
    "modality_names",
    "no_data_message",
    "no_source_message",
    "posterior_noise",
    "scvi_data_alias",
    "without_modalities",
]
