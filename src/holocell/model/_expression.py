"""scvi-tools' :meth:`get_normalized_expression` for :class:`HoloCell`: each cell's denoised RNA expression,
decoded from its cell state (mixed into :class:`HoloCell`)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .._settings import settings
from .._warnings import HoloCellWarning, user_stacklevel
from ..data.arrays import closes_backed_path
from ..vocab import MODALITIES
from ._args import as_names, cell_indices, check_count, check_device, check_flag, check_seed
from ._latent import no_data_message, posterior_noise, scvi_data_alias, without_modalities

if TYPE_CHECKING:
    from mudata import MuData


def check_library_size(library_size) -> float | str:
    """``library_size`` as a finite float > 0, or ``"latent"`` (each cell's observed RNA library)."""
    if isinstance(library_size, str) and library_size == "latent":
        return library_size
    if isinstance(library_size, bool) or not isinstance(library_size, numbers.Real) or not (
        np.isfinite(library_size) and library_size > 0
    ):
        raise ValueError(
            f'library_size must be a finite number > 0 (e.g. 1 or 1e4) or "latent", got {library_size!r}.'
        )
    return float(library_size)


def check_gene_list(gene_list, features: pd.Index, name: str) -> np.ndarray | None:
    """Positions in the model's RNA ``features`` of ``gene_list``'s names, in its order (``None``: all)."""
    if gene_list is None:
        return None
    genes = as_names(gene_list, "gene_list")
    if not genes:
        raise ValueError("gene_list is empty; pass RNA feature names, or None for all of them.")
    missing = [g for g in genes if g not in features]
    if missing:
        raise KeyError(
            f"gene_list names {len(missing)} feature(s) that are not RNA features of the model "
            f"(mdata.mod[{name!r}]): {missing[:10]}. Pick names from model.feature_space.maps['rna'].features."
        )
    return features.get_indexer(genes)


class ExpressionMixin:
    """:meth:`get_normalized_expression`."""

    def _check_expression_model(self, method: str = "get_normalized_expression") -> None:
        if not self.config.cell_state:
            raise ValueError(
                f"{method} decodes the cell state z, and this model has none (a model saved before "
                "the cell state, or cell_state=False). Use model.generate(target='rna') for its expression instead."
            )
        if "rna" not in self.modalities_:
            raise ValueError(
                f"{method} works on RNA expression, and this model has no RNA modality (it reads "
                f"{list(self.modalities_)}); set a model up with modalities={{'rna': ...}}."
            )

    @scvi_data_alias
    @closes_backed_path
    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: MuData | str | Path | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | str = 1,
        n_samples: int = 1,
        batch_size: int | None = None,
        return_numpy: bool | None = None,
        *,
        return_mean: bool = True,
        seed: int = 0,
        modality: str | Sequence[str] | None = None,
        device: str | torch.device | None = None,
        progress_bar: bool | None = None,
    ) -> pd.DataFrame | np.ndarray:
        """Denoised RNA expression of each cell, as scvi-tools' ``get_normalized_expression``.

        Each cell's cell state ``z`` (its posterior mean) is computed from the cell's own modalities (all of
        them by default, its RNA too: nothing is hidden), and the RNA count decoder's mean given ``z`` and the
        cell's batch is normalised to sum to ``library_size`` per cell. It is a denoised version of the cell's
        normalised counts; :meth:`generate` instead predicts a modality from the *other* ones.

        Parameters
        ----------
        adata
            MuData (default: the registered one), a backed MuData or the path of an ``.h5mu`` file (streamed
            from disk; a file opened from a path is closed again before this returns). ``mdata=`` is another
            name of it (both given: ``ValueError``). It is not changed.
        indices
            Cells, in this order: integer positions or a boolean mask over the cells (default: all).
        transform_batch
            Decode every cell as if it came from this training batch (as :meth:`generate`'s argument);
            default: each cell's own batch. Not a training batch: ``ValueError``.
        gene_list
            RNA feature names to return, in this order (default: every RNA feature of the model). A name that is
            not one: ``KeyError`` naming it.
        library_size
            Each cell's row sums to this over all RNA features (before ``gene_list`` picks columns): 1 (the
            default) gives proportions, scvi-tools' "scale"; ``1e4`` counts per 10k. ``"latent"``: the cell's own
            observed RNA library (its total RNA count), as scVI with its default observed library size, so a row
            is the cell's expected counts; cells without RNA get the training cells' typical RNA library.
        n_samples
            1 (the default): the decoder's mean at the posterior mean of ``z``, deterministic (scvi-tools decodes
            one draw). More: the decoder's mean at ``n_samples`` draws of ``z`` from the posterior, seeded with
            ``seed``: a cell's draws follow from its row in the output, not from ``batch_size`` or the device.
        batch_size
            Cells per forward pass (default: as :meth:`get_latent_representation`, and fewer for many genes).
        return_numpy
            Return a NumPy array instead of a DataFrame (default: a DataFrame, but a NumPy array when
            ``n_samples > 1`` and ``return_mean=False``, whose result is three-dimensional, as in scvi-tools).
        return_mean
            With ``n_samples > 1``: average over the draws (``True``, the default), or return every draw.
        seed
            Random seed of the draws (an integer >= 0); not used when ``n_samples=1``.
        modality
            Compute ``z`` from this modality (or list) only, as :meth:`get_latent_representation`; default: every
            modality each cell has.
        device
            Device to run on (default: where the model is; the model moves there and stays, as after
            ``model.module.to(device)``).
        progress_bar
            Show a progress bar (``None``: follow :data:`holocell.settings` ``.progress_bar``).

        Returns
        -------
        ``(n_cells, n_genes)`` float32 DataFrame, indexed by the cells' ``obs_names``, with the RNA feature names
        as columns (``gene_list``'s order), or its values with ``return_numpy=True``; with ``n_samples > 1`` and
        ``return_mean=False`` an ``(n_samples, n_cells, n_genes)`` array. Cells measured in none of the modalities
        read get NaN and a :class:`~holocell.HoloCellWarning` with their count.

        Raises
        ------
        ValueError
            A model without a cell state or without RNA; a bad argument value.
        TypeError
            ``return_numpy`` or ``return_mean`` that is not ``True`` / ``False``.
        KeyError
            ``gene_list`` names that are not RNA features.
        """
        self._check_expression_model()
        n_samples = check_count(n_samples, "n_samples")
        library_size = check_library_size(library_size)
        if return_numpy is not None:
            check_flag(return_numpy, "return_numpy")
        check_flag(return_mean, "return_mean")
        check_seed(seed)
        features = pd.Index(self.feature_space.maps["rna"].features.astype(str))
        columns = check_gene_list(gene_list, features, self.modalities_["rna"])
        keep = self._check_modalities(modality)
        size = self._inference_batch_size(batch_size, len(features) * n_samples)  # n_samples decodes at once
        settings.show_progress(progress_bar)  # checks it
        if device is not None:
            check_device(device)
        mdata, arrays = self._arrays(adata, transform_batch)  # checks transform_batch and the data
        idx = cell_indices(indices, arrays.n_cells)
        out = self._scale_rows(arrays, idx, keep, columns, library_size, (n_samples, return_mean, seed), size, device,
                               progress_bar)  # fmt: skip
        read = keep or list(self.modalities_)
        empty = without_modalities(arrays.present[idx], read)
        if empty.any():
            out[:, empty] = np.nan  # the model's prior: no data of these cells
            message = no_data_message(self, empty, read, modality, "asked for", "an expression profile", "read")
            warnings.warn(message, HoloCellWarning, stacklevel=user_stacklevel())
        if len(out) > 1:
            if return_numpy is False:
                warnings.warn(
                    "return_numpy=False with n_samples > 1 and return_mean=False: the draws are three-dimensional, so "
                    "they are returned as a NumPy array (n_samples, n_cells, n_genes), as scvi-tools does.",
                    HoloCellWarning,
                    stacklevel=user_stacklevel(),
                )
            return out
        if return_numpy:
            return out[0]
        names = features if columns is None else features[columns]
        return pd.DataFrame(out[0], index=pd.Index(mdata.obs_names[idx]), columns=names)

    def _scale_rows(
        self, arrays, idx, keep, columns, library_size, sampling: tuple[int, bool, int], size, device, progress_bar
    ) -> np.ndarray:
        """``(draws, len(idx), genes)`` the RNA decoder's normalised mean of cells ``idx`` (checked arguments;
        ``sampling``: ``n_samples``, ``return_mean``, ``seed``; one draw, the posterior mean, when ``n_samples``
        is 1, the mean of the draws with ``return_mean``)."""
        n_samples, return_mean, seed = sampling
        draws = n_samples if n_samples > 1 and not return_mean else 1
        n_genes = len(self.feature_space.maps["rna"].features) if columns is None else len(columns)
        device = self._device(device)
        self.module.eval()
        out = np.zeros((draws, len(idx), n_genes), dtype=np.float32)
        start = 0
        for batch in self._batches(arrays, idx, size, device, "normalized expression", progress_bar):
            n = len(batch["batch"])
            noise = None
            if n_samples > 1:
                noise = torch.from_numpy(posterior_noise(seed, start, start + n, n_samples, self.config.n_latent))
                noise = noise.to(device)
            scale = self.module.expression_scale(batch, keep, noise=noise)
            if noise is not None and return_mean:
                scale = scale.mean(0)
            scale = scale.reshape(-1, *scale.shape[-2:]).float() * self._library(batch, library_size)[:, None]
            scale = scale.cpu().numpy()
            out[:, start : start + n] = scale if columns is None else scale[..., columns]
            start += n
        return out

    def _library(self, batch: dict[str, torch.Tensor], library_size: float | str) -> torch.Tensor:
        """``(B,)`` each cell's row sum: ``library_size``, or with ``"latent"`` its observed RNA library (the
        training cells' typical one for cells without RNA)."""
        n = len(batch["batch"])
        device = batch["batch"].device
        if library_size != "latent":
            return torch.full((n,), float(library_size), device=device)
        k = MODALITIES.index("rna")
        typical = self.module.network.counts.typical_library[k].float()
        measured = batch["present"][:, k].bool()
        return torch.where(measured, batch["rna"].float().sum(1), typical)


__all__ = ["ExpressionMixin"]
